import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.train import Phase, Trainer, load_run


def _images(n=400, seed=0):
    # Two prototype digits-like patterns plus noise: learnable structure, binary pixels.
    rng = np.random.default_rng(seed)
    protos = rng.random((2, 8, 8, 1)) < 0.5
    labels = rng.integers(0, 2, n)
    flips = rng.random((n, 8, 8, 1)) < 0.05
    return (protos[labels] ^ flips).astype(np.float32)


def _model():
    return mv.models.VAE((8, 8, 1), 2, hidden_sizes=(32,))


def test_training_lowers_the_loss_and_traces_the_epoch_once(tmp_path):
    trainer = Trainer(_model(), [Phase(mv.methods.build("vae", learning_rate=3e-3), 5)], batch_size=20, seed=0,
                      out_dir=tmp_path, progress=False)
    trainer.run(_images())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["loss"] < rows[0]["loss"] - 5.0
    assert trainer.trace_count == 1
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["phases"][0]["method"]["name"] == "vae" and config["seed"] == 0


def test_resume_continues_exactly(tmp_path):
    phases = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("iwae", num_samples=3), 2)]
    images = _images()
    straight, _ = Trainer(_model(), phases, batch_size=20, seed=3, progress=False).run(images)

    interrupted = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("iwae", num_samples=3), 1)]
    Trainer(_model(), interrupted, batch_size=20, seed=3, out_dir=tmp_path, progress=False).run(images)
    resumed, _ = Trainer(_model(), phases, batch_size=20, seed=3, out_dir=tmp_path, progress=False).run(
        images, resume=True)
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    model, method, params, _, _ = load_run(tmp_path)
    assert method.name == "iwae" and model == _model()
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_given_parameters_are_not_consumed():
    trainer = Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, progress=False)
    start = trainer.init()
    trained, _ = trainer.run(_images(), params=start)
    again, _ = trainer.run(_images(), params=start)  # would raise "Array has been deleted" if start were donated
    for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, out_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.run(_images(), resume=True)


def test_dynamic_binarisation_accepts_grey_images_and_static_does_not():
    grey = np.random.default_rng(0).random((40, 8, 8, 1)).astype(np.float32)
    Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, binarize="dynamic",
            progress=False).run(grey)
    with pytest.raises(ValueError, match="binar"):
        Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, progress=False).run(grey)


@pytest.mark.parametrize("method", ["vae", "gradmala"])
def test_python_loop_matches_scan(method):
    """``loop="python"`` (one jitted step per batch) trains on the same batches, binarisations and keys as the
    scanned epoch: the same parameters, method state and epoch metrics, up to float reassociation."""
    grey = np.random.default_rng(1).random((100, 8, 8, 1)).astype(np.float32)
    options = mv.methods.select_options(method, {"num_mcmc_steps": 2})
    phases = [Phase(mv.methods.build("vae"), 1), Phase(mv.methods.build(method, **options), 2)]
    results = {}
    for loop in ("scan", "python"):
        trainer = Trainer(_model(), phases, batch_size=20, seed=4, binarize="dynamic", progress=False, loop=loop)
        results[loop] = trainer.run(grey)
        assert trainer.loop == loop and trainer.trace_count == 2  # one trace per phase
    leaves = [jax.tree_util.tree_leaves(results[loop]) for loop in ("scan", "python")]
    assert len(leaves[0]) == len(leaves[1])
    for a, b in zip(*leaves):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-4, atol=2e-5)


def test_auto_loop_avoids_scan_only_for_convolutional_models_on_cpu():
    conv = mv.models.VAE((28, 28, 1), 4, architecture="conv")
    on_cpu = jax.default_backend() == "cpu"
    assert Trainer(conv, [], progress=False).loop == ("python" if on_cpu else "scan")
    assert Trainer(_model(), [], progress=False).loop == "scan"
    assert Trainer(conv, [], progress=False, loop="scan").loop == "scan"


def test_bad_trainer_arguments():
    with pytest.raises(ValueError, match="unknown loop 'while'"):
        Trainer(_model(), [], loop="while")
    with pytest.raises(ValueError, match="binarisation"):
        Trainer(_model(), [], binarize="otsu")
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=100, progress=False).run(_images(50))


def test_two_host_devices_shard_the_batch(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, jax, mcmcvae as mv
        from mcmcvae.train import Phase, Trainer
        assert jax.local_device_count() == 2
        rng = np.random.default_rng(0)
        x = (rng.random((80, 8, 8, 1)) < 0.5).astype(np.float32)
        model = mv.models.VAE((8, 8, 1), 2, hidden_sizes=(16,))
        params, _ = Trainer(model, [Phase(mv.methods.build("vae"), 2)], batch_size=20, progress=False).run(x)
        leaf = jax.tree_util.tree_leaves(params)[0]
        print("DEVICES", len(leaf.sharding.device_set), bool(np.all(np.isfinite(np.asarray(leaf)))))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DEVICES 2 True" in out.stdout
    with pytest.raises(ValueError, match="multiple of the 2 local devices"):
        exec_env = "import jax; from mcmcvae.train import Trainer; import mcmcvae as mv; " \
                   "Trainer(mv.models.VAE((8,8,1),2), [], batch_size=3)"
        res = subprocess.run([sys.executable, "-c", exec_env], env=env, capture_output=True, text=True, timeout=120)
        raise ValueError(res.stderr)


class _RecordIndices:
    """A method that trains nothing and records, per training image, how often it was stepped on and the pixel
    value it saw there: the trainer must hand it each batch's own training-set indices."""

    name = "record"

    def __init__(self, num_data):
        self.num_data = num_data

    def init(self, rng_key, model, params):
        return {"visits": jax.numpy.zeros(self.num_data), "seen": jax.numpy.zeros(self.num_data)}

    def step(self, rng_key, model, params, state, batch):
        images, indices = batch
        return params, {"visits": state["visits"].at[indices].add(1.0),
                        "seen": state["seen"].at[indices].add(images[:, 0, 0, 0])}, {"loss": jax.numpy.zeros(())}

    def config(self):
        return {"name": self.name, "num_data": self.num_data}


def test_methods_with_per_image_state_get_each_batch_s_indices():
    n = 40
    images = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 8, 8, 1)).copy()
    model = mv.models.VAE((8, 8, 1), 2, hidden_sizes=(), likelihood="gaussian")
    _, state = Trainer(model, [Phase(_RecordIndices(n), 3)], batch_size=10, seed=0, progress=False).run(images)
    np.testing.assert_array_equal(np.asarray(state["visits"]), np.full(n, 3.0))  # every image once an epoch
    np.testing.assert_allclose(np.asarray(state["seen"]), 3.0 * np.arange(n) / n, rtol=1e-6)
    with pytest.raises(ValueError, match="num_data=30 training images but is given 40; build it with num_data=40"):
        Trainer(model, [Phase(_RecordIndices(30), 1)], batch_size=10, progress=False).run(images)
