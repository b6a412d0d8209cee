"""Two processes on one machine, joined by jax.distributed over the loopback address, train as one process does."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae import distributed
from mcmcvae.train import Phase, Trainer, read_metrics

# The two processes hold one CPU device each, so each global batch of 20 is split 10 + 10 and its gradient summed
# across processes: the same sum as one process's in another order, a few float32 roundings per step.
RTOL, ATOL = 2e-5, 2e-6

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from mcmcvae import distributed
    port, rank, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=rank, initialization_timeout=120)
    import jax
    import mcmcvae as mv
    from mcmcvae.train import Phase, Trainer, _to_host
    assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
    images = (np.random.default_rng(0).random((40, 4, 4, 1)) < 0.5).astype(np.float32)
    model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    phases = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("gradmala", num_mcmc_steps=2), 1)]
    params, state = Trainer(model, phases, batch_size=20, seed=0, out_dir=out + "/run", progress=False).run(images)
    leaves = [_to_host(leaf) for leaf in jax.tree_util.tree_leaves(params)]
    np.savez(f"{out}/params-{rank}.npz", *leaves)
    print("DONE", rank, flush=True)
""")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setting():
    images = (np.random.default_rng(0).random((40, 4, 4, 1)) < 0.5).astype(np.float32)
    model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    phases = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("gradmala", num_mcmc_steps=2), 1)]
    return images, model, phases


@pytest.mark.slow
def test_two_processes_train_to_the_parameters_of_one(tmp_path):
    """Two loopback processes (one CPU device each, Gloo collectives) sharing each global batch end with the
    parameters of one process training on the whole batches; process 0 alone wrote config and metrics (one row per
    epoch), and the checkpoint both wrote restores with load_run."""
    (tmp_path / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device per process
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    port = _free_port()
    workers = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(port), str(rank), str(tmp_path)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for rank in (0, 1)]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=600))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for rank, (worker, (out, err)) in enumerate(zip(workers, outputs)):
        assert worker.returncode == 0 and f"DONE {rank}" in out, f"process {rank}:\n{err[-4000:]}"

    images, model, phases = _setting()
    alone, _ = Trainer(model, phases, batch_size=20, seed=0, progress=False).run(images)
    expected = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(alone)]
    for rank in (0, 1):
        with np.load(tmp_path / f"params-{rank}.npz") as got:
            for i, leaf in enumerate(expected):
                np.testing.assert_allclose(got[f"arr_{i}"], leaf, rtol=RTOL, atol=ATOL)
    run = tmp_path / "run"
    assert [r["global_epoch"] for r in read_metrics(run)] == [1, 2, 3]  # written once, not once per process
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    _, _, params, _, config = mv.train.load_run(run)
    assert config["trained"]["finished"]
    for got, leaf in zip(jax.tree_util.tree_leaves(params), expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), leaf, rtol=RTOL, atol=ATOL)


def test_initialize_refuses_a_rank_outside_the_job():
    with pytest.raises(ValueError, match="not in 0..1"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=2)
