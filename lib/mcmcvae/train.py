"""The one training loop every method shares.

A run is a list of :class:`Phase` s (a method and a number of epochs), e.g. plain-VAE pre-training followed by
MCMC training. Parameters carry over from phase to phase; each phase starts its method's state afresh.

The hot path is one jitted function per phase that runs a whole epoch: it permutes the training set on the
device, then ``lax.scan`` s the method's ``step`` over the batches (dynamic binarisation happens inside).
Convolutional models on a CPU are the exception (``loop="auto"``): XLA:CPU runs convolutions inside a loop body
several times slower than the same convolutions outside one (jax-ml/jax#12868; a conv decoder's training step
measured here: 7.3 s for two jitted steps against 37.7 s for a ``lax.scan`` of the same two), so there the epoch
is a Python loop over one jitted step, with the same keys, batches and updates.
With several local devices, each batch is sharded along its first axis with ``jax.sharding`` and parameters are
replicated; with one device nothing changes. Python runs only between epochs: metrics to ``metrics.jsonl``, the
progress bar, and an Orbax checkpoint.

Randomness is a pure function of the seed and the position in the run (``fold_in`` of the phase and the epoch
index), so a run resumed from its last checkpoint continues exactly as an uninterrupted one.

Files in ``out_dir``: ``config.json`` (everything needed to rebuild the model and methods), ``metrics.jsonl``
(one JSON object per epoch), ``checkpoints/`` (Orbax, the last two epochs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mcmcvae import methods as _methods
from mcmcvae import models
from mcmcvae.models import VAE, validate_images
from mcmcvae.types import Batch

__all__ = ["Phase", "Trainer", "train", "load_run", "read_metrics", "BINARIZATIONS", "LOOPS"]

BINARIZATIONS = ("none", "static", "dynamic")
LOOPS = ("auto", "scan", "python")


@dataclasses.dataclass(frozen=True)
class Phase:
    """``num_epochs`` epochs of one method."""

    method: Any
    num_epochs: int


def _data_sharding():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    return NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())


class Trainer:
    """Runs the phases of one training run on one model.

    Parameters
    ----------
    model
        The :class:`mcmcvae.models.VAE` (or any model with the same interface).
    phases
        The methods to run, in order, and their epoch counts.
    batch_size
        Images per step; must be a multiple of the number of local devices.
    seed
        Everything random in the run derives from it.
    binarize
        ``"dynamic"`` draws Bernoulli pixels afresh for each batch inside the jitted epoch; ``"static"`` and
        ``"none"`` use the images as given (binarise them beforehand for ``"static"``).
    out_dir
        Where config, metrics and checkpoints go; ``None`` keeps everything in memory (tests, notebooks).
    loop
        How an epoch runs its batches: ``"scan"`` (one jitted ``lax.scan`` per epoch), ``"python"`` (a Python loop
        over one jitted step) or ``"auto"``: ``"python"`` for convolutional models on a CPU, where convolutions
        inside a scan are slow, ``"scan"`` otherwise. Both give the same batches, keys and updates.

    Examples
    --------
    >>> trainer = Trainer(model, [Phase(mv.methods.build("vae"), 10)], batch_size=100, seed=0, out_dir="runs/a")
    >>> params, state = trainer.run(train_images)
    """

    def __init__(self, model: VAE, phases: Sequence[Phase], *, batch_size: int = 100, seed: int = 0,
                 binarize: str = "none", out_dir=None, extra_config: dict | None = None, progress: bool = True,
                 loop: str = "auto"):
        if binarize not in BINARIZATIONS:
            raise ValueError(f"unknown binarisation {binarize!r}; choose one of {BINARIZATIONS}")
        if loop not in LOOPS:
            raise ValueError(f"unknown loop {loop!r}; choose one of {LOOPS}")
        num_devices = jax.local_device_count()
        if batch_size % num_devices:
            raise ValueError(f"batch_size {batch_size} must be a multiple of the {num_devices} local devices")
        self.model = model
        self.phases = list(phases)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.binarize = binarize
        self.out_dir = None if out_dir is None else pathlib.Path(out_dir)
        self.extra_config = dict(extra_config or {})
        self.progress = progress
        if loop == "auto":
            convolutional = getattr(model, "architecture", "mlp") == "conv"
            loop = "python" if convolutional and jax.default_backend() == "cpu" else "scan"
        self.loop = loop
        self.trace_count = 0  # how often an epoch function was traced: once per phase in a healthy run
        self._epoch_fns: dict[int, Any] = {}

    # ------------------------------------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        return {
            "model": self.model.config(),
            "phases": [{"method": p.method.config(), "num_epochs": p.num_epochs} for p in self.phases],
            "batch_size": self.batch_size,
            "seed": self.seed,
            "binarize": self.binarize,
            **self.extra_config,
        }

    # -------------------------------------------------------------------------------------- hot path
    def _epoch_fn(self, phase_index: int, num_images: int):
        if phase_index in self._epoch_fns:
            return self._epoch_fns[phase_index]
        model, method = self.model, self.phases[phase_index].method
        batch_size, binarize = self.batch_size, self.binarize
        num_batches = num_images // batch_size
        batch_sharding, _ = _data_sharding()

        def keys_and_order(images, rng_key):
            k_perm, k_bin, k_step = jax.random.split(rng_key, 3)
            order = jax.random.permutation(k_perm, images.shape[0])[: num_batches * batch_size]
            return k_bin, k_step, order.reshape(num_batches, batch_size)

        def step(params, state, images, index, batch_order, k_bin, k_step):
            self.trace_count += 1  # runs at trace time only (once per epoch function, either loop)
            batch = images[batch_order]
            if binarize == "dynamic":
                batch = jax.random.bernoulli(jax.random.fold_in(k_bin, index), batch).astype(batch.dtype)
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            # the images' training-set indices go with them (vcd's per-image control variates use them)
            return method.step(jax.random.fold_in(k_step, index), model, params, state, Batch(batch, batch_order))

        def mean(metrics):
            return jax.tree_util.tree_map(lambda m: jnp.mean(m.astype(jnp.float32)), metrics)

        def epoch(params, state, images, rng_key):
            k_bin, k_step, order = keys_and_order(images, rng_key)

            def body(carry, inputs):
                index, batch_order = inputs
                params, state, metrics = step(*carry, images, index, batch_order, k_bin, k_step)
                return (params, state), metrics

            (params, state), metrics = jax.lax.scan(body, (params, state), (jnp.arange(num_batches), order))
            return params, state, mean(metrics)

        if self.loop == "scan":
            fn = jax.jit(epoch, donate_argnums=(0, 1))
        else:
            jit_keys, jit_step = jax.jit(keys_and_order), jax.jit(step, donate_argnums=(0, 1))
            stack = jax.jit(lambda rows: mean(jax.tree_util.tree_map(lambda *m: jnp.stack(m), *rows)))

            def fn(params, state, images, rng_key):
                k_bin, k_step, order = jit_keys(images, rng_key)
                rows = []
                for index in range(num_batches):
                    params, state, metrics = jit_step(params, state, images, jnp.int32(index), order[index],
                                                      k_bin, k_step)
                    rows.append(metrics)
                return params, state, stack(rows)

        self._epoch_fns[phase_index] = fn
        return fn

    def _phase_key(self, phase_index: int):
        return jax.random.fold_in(jax.random.key(self.seed), phase_index)

    def init(self):
        """Initial model parameters (from the seed)."""
        return self.model.init(jax.random.fold_in(jax.random.key(self.seed), 1_000_003))

    def init_phase_state(self, phase_index: int, params):
        method = self.phases[phase_index].method
        return method.init(jax.random.fold_in(self._phase_key(phase_index), 1_000_003), self.model, params)

    # ------------------------------------------------------------------------------------------ running
    def run(self, images, *, resume: bool = False, params=None):
        """Train on ``images (n, H, W, C)``; returns the final ``(params, method_state)``.

        With ``resume``, continue from the last checkpoint in ``out_dir`` (an error if there is none).
        ``params`` starts the first phase from given parameters (e.g. a pre-trained VAE) instead of the seed.
        """
        images = np.asarray(images, np.float32)
        if self.binarize == "dynamic":  # grey pixels become Bernoulli draws: only shape and range are checked
            validate_images(images, self.model.image_shape, None)
        else:  # the model's own check: vector-data models (linear hierarchical VAEs) accept any real values
            self.model.validate_images(images)
        if images.shape[0] < self.batch_size:
            raise ValueError(f"{images.shape[0]} training images are fewer than one batch of {self.batch_size}")
        for phase in self.phases:
            num_data = getattr(phase.method, "num_data", None)  # the size of a method's per-image state
            if num_data is not None and num_data != images.shape[0]:
                raise ValueError(f"method {phase.method.name!r} keeps per-image state for num_data="
                                 f"{phase.method.num_data} training images but is given {images.shape[0]}; build it "
                                 f"with num_data={images.shape[0]}")
        _, replicated = _data_sharding()
        device_images = jax.device_put(images, replicated)

        ckpt = None
        start_phase, start_epoch, state = 0, 0, None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt = _Checkpoints(self.out_dir / "checkpoints")
            if not resume and ckpt.latest() is not None:
                raise ValueError(f"{self.out_dir} already holds checkpoints of a run; pass --resume (resume=True) "
                                 "to continue it, or choose a new output directory")
            if resume:
                saved = ckpt.latest()
                if saved is None:
                    raise FileNotFoundError(f"--resume asked for, but {self.out_dir}/checkpoints holds no checkpoint")
                start_phase, start_epoch = saved["phase"], saved["epoch"]
                template_params = self.init()
                template_state = self.init_phase_state(start_phase, template_params)
                params, state = ckpt.restore(saved["step"], template_params, template_state)
            (self.out_dir / "config.json").write_text(json.dumps(self.config(), indent=2, default=str))
        if params is None:
            params = self.init()
        else:  # the epoch function donates its carry: never consume the caller's arrays
            params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)

        total_epochs = sum(p.num_epochs for p in self.phases)
        done_epochs = sum(p.num_epochs for p in self.phases[:start_phase]) + start_epoch
        bar = _progress(total_epochs, done_epochs, self.progress)
        for phase_index in range(start_phase, len(self.phases)):
            phase = self.phases[phase_index]
            first_epoch = start_epoch if phase_index == start_phase else 0
            if state is None or phase_index != start_phase:
                state = self.init_phase_state(phase_index, params)
            epoch_fn = self._epoch_fn(phase_index, images.shape[0])
            # Committing the carry to its final placement up front keeps the epoch function to one trace.
            params, state = jax.device_put((params, state), replicated)
            for epoch in range(first_epoch, phase.num_epochs):
                tic = time.perf_counter()
                key = jax.random.fold_in(self._phase_key(phase_index), epoch)
                params, state, metrics = epoch_fn(params, state, device_images, key)
                metrics = {k: float(v) for k, v in metrics.items()}  # one host sync per epoch
                seconds = time.perf_counter() - tic
                done_epochs += 1
                row = {"phase": phase_index, "method": phase.method.name, "epoch": epoch + 1,
                       "global_epoch": done_epochs, **metrics, "seconds": seconds,
                       "images_per_second": (images.shape[0] // self.batch_size) * self.batch_size / seconds}
                if self.out_dir is not None:
                    with open(self.out_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                    ckpt.save(done_epochs, params, state, phase=phase_index, epoch=epoch + 1)
                bar.update(row)
        bar.close()
        if ckpt is not None:
            ckpt.close()
        return params, state


def train(model, phases, images, **options):
    """Convenience wrapper: ``Trainer(model, phases, **options).run(images)``."""
    resume = options.pop("resume", False)
    return Trainer(model, phases, **options).run(images, resume=resume)


# ------------------------------------------------------------------------------------------ checkpoints
class _Checkpoints:
    """Orbax checkpoints of ``{params, state}`` with the phase and epoch in a JSON sidecar."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory.absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False),
        )

    def save(self, step: int, params, state, *, phase: int, epoch: int):
        self.manager.save(step, args=ocp.args.Composite(
            tree=ocp.args.StandardSave({"params": params, "state": state}),
            meta=ocp.args.JsonSave({"phase": phase, "epoch": epoch}),
        ))
        self.manager.wait_until_finished()

    def latest(self):
        step = self.manager.latest_step()
        if step is None:
            return None
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return {"step": step, **meta}

    def restore(self, step: int, params_template, state_template):
        abstract = jax.tree_util.tree_map(
            ocp.utils.to_shape_dtype_struct, {"params": params_template, "state": state_template})
        tree = self.manager.restore(step, args=ocp.args.Composite(tree=ocp.args.StandardRestore(abstract)))["tree"]
        return tree["params"], tree["state"]

    def close(self):
        self.manager.close()


def read_metrics(run_dir) -> list[dict]:
    """The per-epoch rows of a run's ``metrics.jsonl``, oldest first (empty if the run has not finished an epoch)."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_run(run_dir):
    """Rebuild ``(model, method, params, state, config)`` of a finished run from its directory.

    The method is the last phase's; parameters and state come from the newest checkpoint.
    """
    run_dir = pathlib.Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run: no config.json (train one with 'mcmcvae train')")
    config = json.loads(config_path.read_text())
    model = models.from_config(config["model"])
    phases = [Phase(_methods.from_config(p["method"]), p["num_epochs"]) for p in config["phases"]]
    trainer = Trainer(model, phases, batch_size=config["batch_size"], seed=config["seed"],
                      binarize=config["binarize"], progress=False)
    ckpt = _Checkpoints(run_dir / "checkpoints")
    saved = ckpt.latest()
    if saved is None:
        raise FileNotFoundError(f"{run_dir}/checkpoints holds no checkpoint; the run did not finish an epoch")
    template_params = trainer.init()
    template_state = trainer.init_phase_state(saved["phase"], template_params)
    params, state = ckpt.restore(saved["step"], template_params, template_state)
    ckpt.close()
    return model, phases[saved["phase"]].method, params, state, config


# ---------------------------------------------------------------------------------------------- progress
class _progress:
    """A tqdm bar over epochs with the latest loss and throughput (images/s); tqdm shows the ETA."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)

    def update(self, row: dict):
        if self.bar is None:
            return
        postfix = {"method": row["method"], "img/s": f"{row['images_per_second']:.0f}"}
        for key in ("loss", "acceptance_rate"):
            if key in row and math.isfinite(row[key]):
                postfix[key] = f"{row[key]:.3f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
