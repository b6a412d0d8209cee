"""The one training loop every method shares.

A run is a list of :class:`Phase` s (a method and a number of epochs), e.g. plain-VAE pre-training followed by
MCMC training. Parameters carry over from phase to phase; each phase starts its method's state afresh.

The hot path is one jitted function per phase that runs a whole epoch: it permutes the training set on the
device, then ``lax.scan`` s the method's ``step`` over the batches (dynamic binarisation happens inside).
Convolutional models on a CPU are the exception (``loop="auto"``): XLA:CPU runs convolutions inside a loop body
several times slower than the same convolutions outside one (jax-ml/jax#12868; a conv decoder's training step
measured here: 7.3 s for two jitted steps against 37.7 s for a ``lax.scan`` of the same two), so there the epoch
is a Python loop over one jitted step, with the same keys, batches and updates.
With several devices, each batch is sharded along its first axis with ``jax.sharding`` over all the devices of
all processes and parameters are replicated; with one device nothing changes. Under ``jax.distributed`` (several
processes, e.g. one per host; :mod:`mcmcvae.distributed`) every process runs the same trainer on the same images
and seed, XLA's collectives join the gradients, and only process 0 writes ``config.json``, ``metrics.jsonl``, the
checksums and the lock, while every process takes part in Orbax's (collective) checkpoint saves and restores into
the shared ``out_dir``. Python runs only between epochs: metrics to ``metrics.jsonl``, the
progress bar, and an Orbax checkpoint.

Randomness is a pure function of the seed and the position in the run (``fold_in`` of the phase and the epoch
index), so a run resumed from its last checkpoint continues exactly as an uninterrupted one.

Every update is guarded: a step whose new parameters, method state or loss would hold a NaN or an infinity (or
whose optimiser skipped a non-finite gradient) is not taken; the epoch's metrics average only the steps taken and
``nonfinite_updates`` counts the skipped ones exactly. An epoch in which every step is skipped stops the run with
a :class:`FloatingPointError`.

Files in ``out_dir``: ``config.json`` (everything needed to rebuild the model and methods), ``metrics.jsonl``
(one JSON object per epoch), ``checkpoints/`` (Orbax, the last two epochs), ``checkpoint-checksums.json`` (a
SHA-256 of each checkpoint's files, written after its save completes) and ``.lock`` (who is training in the
directory). One process at a time owns a run directory (:class:`RunInUseError` otherwise); a resumed run must ask
for the stored configuration (only epoch counts may grow); on resume a corrupt or unverified newest checkpoint is
set aside into ``corrupt-checkpoints/`` with a :class:`CheckpointWarning` and the run continues from the newest
intact one, and ``metrics.jsonl`` is cut back to that checkpoint's epoch, so a kill at any instant leaves neither
a duplicate nor a missing row.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import hashlib
import json
import math
import numbers
import os
import pathlib
import shutil
import socket
import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mcmcvae import methods as _methods
from mcmcvae import models
from mcmcvae._files import write_atomic as _write_atomic
from mcmcvae.models import VAE, validate_images
from mcmcvae.types import Batch

__all__ = ["Phase", "Trainer", "train", "fit", "fit_seeds", "FitResult", "load_run", "read_metrics", "read_config",
           "BINARIZATIONS", "LOOPS", "RunInUseError", "CheckpointWarning"]

BINARIZATIONS = ("none", "static", "dynamic")
LOOPS = ("auto", "scan", "python")


class RunInUseError(RuntimeError):
    """Another process is training in the run directory (it holds the directory's ``.lock``)."""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read or failed its checksum; an older intact one is used instead."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """``num_epochs`` epochs of one method."""

    method: Any
    num_epochs: int


def _is_primary() -> bool:
    """Whether this process writes a run's files: always on one machine, process 0 under ``jax.distributed``."""
    return jax.process_index() == 0


def _to_host(value) -> np.ndarray:
    """A replicated array's value on this host (``np.asarray`` refuses arrays that span other processes)."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return np.asarray(value.addressable_data(0))
    return np.asarray(value)


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
        Images per step (the global batch, over all processes); must be a multiple of the number of devices.
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
    Two epochs of a plain VAE, then one of MALA-refined training from it, on 200 MNIST images (after
    ``mcmcvae data fetch mnist``; a real run uses all 60,000 and more epochs):

    >>> import mcmcvae as mv
    >>> from mcmcvae.train import Phase, Trainer
    >>> images = mv.data.load_images("mnist", "train", binarize="static", num_images=200)
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> phases = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("gradmala", num_mcmc_steps=2), 1)]
    >>> trainer = Trainer(model, phases, batch_size=100, seed=0, out_dir="runs/demo", progress=False,
    ...                   extra_config={"dataset": "mnist"})
    >>> params, state = trainer.run(images)
    >>> [(row["method"], row["epoch"]) for row in mv.train.read_metrics("runs/demo")]
    [('vae', 1), ('vae', 2), ('gradmala', 1)]
    """

    def __init__(self, model: VAE, phases: Sequence[Phase], *, batch_size: int = 100, seed: int = 0,
                 binarize: str = "none", out_dir=None, extra_config: dict | None = None, progress: bool = True,
                 loop: str = "auto"):
        if binarize not in BINARIZATIONS:
            raise ValueError(f"unknown binarisation {binarize!r}; choose one of {BINARIZATIONS}")
        if loop not in LOOPS:
            raise ValueError(f"unknown loop {loop!r}; choose one of {LOOPS}")
        batch_size = _positive_int(batch_size, "batch_size")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        for index, phase in enumerate(phases):
            if isinstance(phase.num_epochs, bool) or not isinstance(phase.num_epochs, numbers.Integral) \
                    or phase.num_epochs < 0:
                raise ValueError(f"phase {index} ({getattr(phase.method, 'name', phase.method)!r}) has num_epochs="
                                 f"{phase.num_epochs!r}; give a non-negative integer number of epochs")
            _check_learning_rates(phase.method)
        num_devices = jax.device_count()  # of all processes: the batch is sharded over every one
        if batch_size % num_devices:
            where = ("local devices" if jax.process_count() == 1 else
                     f"devices of all {jax.process_count()} processes")
            raise ValueError(f"batch_size {batch_size} must be a multiple of the {num_devices} {where}")
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
    def _epoch_parts(self, phase_index: int, num_images: int):
        """The pure functions of one phase's epoch: ``keys_and_order``, ``step`` and ``epoch(params, state, images,
        rng_key) -> (params, state, metrics)``; :meth:`_epoch_fn` jits them, :func:`fit_seeds` vmaps ``epoch``."""
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
            # the images' training-set indices go with them (vcd's per-image control variates use them); the guard
            # wraps the method's step, whatever it is: a non-finite outcome is not taken
            new_params, new_state, metrics = method.step(jax.random.fold_in(k_step, index), model, params, state,
                                                         Batch(batch, batch_order))
            return _guarded(params, state, new_params, new_state, metrics)

        def epoch(params, state, images, rng_key):
            k_bin, k_step, order = keys_and_order(images, rng_key)

            def body(carry, inputs):
                index, batch_order = inputs
                params, state, metrics, taken = step(*carry, images, index, batch_order, k_bin, k_step)
                return (params, state), (metrics, taken)

            (params, state), (metrics, taken) = jax.lax.scan(body, (params, state),
                                                             (jnp.arange(num_batches), order))
            return params, state, _epoch_metrics(metrics, taken)

        return keys_and_order, step, epoch

    def _epoch_fn(self, phase_index: int, num_images: int):
        if phase_index in self._epoch_fns:
            return self._epoch_fns[phase_index]
        keys_and_order, step, epoch = self._epoch_parts(phase_index, num_images)
        num_batches = num_images // self.batch_size
        if self.loop == "scan":
            fn = jax.jit(epoch, donate_argnums=(0, 1))
        else:
            jit_keys, jit_step = jax.jit(keys_and_order), jax.jit(step, donate_argnums=(0, 1))
            stack = jax.jit(lambda rows: _epoch_metrics(*jax.tree_util.tree_map(lambda *m: jnp.stack(m), *rows)))

            def fn(params, state, images, rng_key):
                k_bin, k_step, order = jit_keys(images, rng_key)
                rows = []
                for index in range(num_batches):
                    params, state, metrics, taken = jit_step(params, state, images, jnp.int32(index), order[index],
                                                             k_bin, k_step)
                    rows.append((metrics, taken))
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

        With ``resume``, continue from the newest intact checkpoint in ``out_dir`` (an error if there is none). The
        stored ``config.json`` must match this trainer's configuration in everything that changes what is computed
        (model, methods and their options, batch size, seed, binarisation, extra config such as the dataset and
        training-set size); only epoch counts of phases not yet finished may grow. ``params`` starts the first
        phase from given parameters (e.g. a pre-trained VAE) instead of the seed.

        Raises
        ------
        ValueError
            Bad images or options, a directory that already holds a run (without ``resume``), or a resumed run
            whose configuration differs (the differing fields are listed).
        FileNotFoundError
            ``resume`` without an intact checkpoint.
        RunInUseError
            Another process is training in ``out_dir``.
        FloatingPointError
            Every update of an epoch was non-finite and skipped.
        """
        images = self._check_images(images)
        if self.out_dir is None:
            if resume:
                raise ValueError("resume=True needs an out_dir to resume from")
            return self._train(images, params, None, 0, 0, None)

        created = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        primary = _is_primary()  # under jax.distributed only process 0 writes files other than checkpoints
        lock = _RunLock(self.out_dir) if primary else None
        ckpt, saved, started = None, [], False
        try:
            ckpt = _Checkpoints(self.out_dir)
            start_phase, start_epoch, state = 0, 0, None
            if resume:
                start_phase, start_epoch, params, state = self._resume(ckpt)
            else:
                if ckpt.steps():
                    raise ValueError(f"{self.out_dir} already holds checkpoints of a run; pass --resume "
                                     "(resume=True) to continue it, or choose a new output directory")
                started = True  # from here on the directory's files are this run's
                if primary:
                    (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)  # rows of a run killed before a save
            if primary:
                _write_atomic(self.out_dir / "config.json", json.dumps(self.config(), indent=2, default=str))
            return self._train(images, params, state, start_phase, start_epoch, ckpt, saved)
        except Exception:
            if primary and (started or created) and not saved:  # a fresh run that failed before a checkpoint
                _remove_fresh_run(self.out_dir, created, own_files=started)  # leaves nothing
            raise
        finally:
            if ckpt is not None:
                ckpt.close()
            if lock is not None:
                lock.release()

    def _check_images(self, images) -> np.ndarray:
        """The training images as float32, checked against the model, the batch size and the methods."""
        images = _host_images(images)
        if self.binarize == "dynamic":  # grey pixels become Bernoulli draws: only shape and range are checked
            validate_images(images, self.model.image_shape, None)
        else:  # the model's own check: vector-data models (linear hierarchical VAEs) accept any real values
            self.model.validate_images(images)
        if images.shape[0] < self.batch_size:
            raise ValueError(f"{images.shape[0]} training images are fewer than one batch of {self.batch_size}; "
                             f"lower batch_size (--batch-size) to at most {images.shape[0]}")
        for phase in self.phases:
            num_data = getattr(phase.method, "num_data", None)  # the size of a method's per-image state
            if num_data is not None and num_data != images.shape[0]:
                raise ValueError(f"method {phase.method.name!r} keeps per-image state for num_data="
                                 f"{phase.method.num_data} training images but is given {images.shape[0]}; build it "
                                 f"with num_data={images.shape[0]}")
        return images

    def _resume(self, ckpt):
        """Check the stored configuration, restore the newest intact checkpoint, cut metrics back to it."""
        if not ckpt.steps():
            raise FileNotFoundError(f"--resume asked for, but {self.out_dir}/checkpoints holds no checkpoint; train "
                                    "without --resume (resume=False) to start the run")
        stored = read_config(self.out_dir)
        requested = json.loads(json.dumps(self.config(), default=str))
        differences = _config_differences(stored, requested)
        if differences:
            raise ValueError(f"cannot resume {self.out_dir}: the requested run differs from the stored one in "
                             f"{'; '.join(differences)}. Resume with the stored options (config.json), or train "
                             "the changed run in a new output directory")

        def templates(phase):
            params = self.init()
            return params, self.init_phase_state(phase, params)

        restored = ckpt.restore_latest(templates, set_aside=True)
        if restored is None:
            raise FileNotFoundError(f"--resume asked for, but {self.out_dir}/checkpoints holds no intact checkpoint; "
                                    "train again without --resume to start the run afresh")
        meta, params, state = restored
        start_phase, start_epoch = meta["phase"], meta["epoch"]
        for index in range(start_phase):
            if stored["phases"][index]["num_epochs"] != self.phases[index].num_epochs:
                raise ValueError(f"cannot resume {self.out_dir}: phase {index} ({self.phases[index].method.name}) "
                                 f"finished after {stored['phases'][index]['num_epochs']} epochs, not the "
                                 f"{self.phases[index].num_epochs} requested; keep its epoch count")
        if self.phases[start_phase].num_epochs < start_epoch:
            raise ValueError(f"cannot resume {self.out_dir}: its checkpoint is at epoch {start_epoch} of phase "
                             f"{start_phase} ({self.phases[start_phase].method.name}), beyond the "
                             f"{self.phases[start_phase].num_epochs} epochs requested; ask for at least {start_epoch}")
        if _is_primary():
            _truncate_metrics(self.out_dir, meta["step"])
        return start_phase, start_epoch, params, state

    def _train(self, images, params, state, start_phase, start_epoch, ckpt, saved=None):
        _, replicated = _data_sharding()
        device_images = jax.device_put(images, replicated)
        if params is None:
            params = self.init()
        else:  # the epoch function donates its carry: never consume the caller's arrays
            params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)

        total_epochs = sum(p.num_epochs for p in self.phases)
        done_epochs = sum(p.num_epochs for p in self.phases[:start_phase]) + start_epoch
        num_batches = images.shape[0] // self.batch_size
        bar = _progress(total_epochs, done_epochs, self.progress)
        try:
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
                    metrics = {k: float(_to_host(v)) for k, v in metrics.items()}  # one host sync per epoch
                    metrics["nonfinite_updates"] = int(metrics["nonfinite_updates"])
                    if metrics["nonfinite_updates"] == num_batches:
                        raise FloatingPointError(
                            f"every one of the {num_batches} updates of epoch {epoch + 1} of phase {phase_index} "
                            f"({phase.method.name}) was non-finite and skipped, so training cannot progress; lower "
                            "the learning rate (--learning-rate) or check the data and the model. The last "
                            "checkpoint holds the parameters before this epoch")
                    seconds = time.perf_counter() - tic
                    done_epochs += 1
                    row = {"phase": phase_index, "method": phase.method.name, "epoch": epoch + 1,
                           "global_epoch": done_epochs, **metrics, "seconds": seconds,
                           "images_per_second": num_batches * self.batch_size / seconds}
                    if ckpt is not None:
                        # Row first, then checkpoint and checksum: a kill in between leaves a row beyond the newest
                        # intact checkpoint, which resuming removes before it trains that epoch again.
                        if _is_primary():
                            with open(self.out_dir / "metrics.jsonl", "a") as f:
                                f.write(json.dumps(row) + "\n")
                        ckpt.save(done_epochs, params, state, phase=phase_index, epoch=epoch + 1)  # every process
                        saved.append(done_epochs)
                    bar.update(row)
        finally:
            bar.close()
        return params, state


def train(model, phases, images, **options):
    """Convenience wrapper: ``Trainer(model, phases, **options).run(images)``."""
    resume = options.pop("resume", False)
    return Trainer(model, phases, **options).run(images, resume=resume)


# ------------------------------------------------------------------------------------------ checkpoints
class _Checkpoints:
    """Orbax checkpoints of ``{params, state}`` with the phase and epoch in a JSON sidecar, each verified by a
    SHA-256 of its files kept in ``run_dir/checkpoint-checksums.json`` (written once the save has completed)."""

    def __init__(self, run_dir: pathlib.Path):
        self.run_dir = pathlib.Path(run_dir).absolute()
        self.directory = self.run_dir / "checkpoints"
        self.checksums_path = self.run_dir / CHECKSUMS
        self.manager = self._manager()

    def _manager(self):
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False),
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _checksums(self) -> dict:
        try:
            return json.loads(self.checksums_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def save(self, step: int, params, state, *, phase: int, epoch: int):
        tree = {"params": params, "state": state}
        self.manager.save(step, args=ocp.args.Composite(
            tree=ocp.args.StandardSave(tree),
            meta=ocp.args.JsonSave({"phase": phase, "epoch": epoch}),
        ))
        self.manager.wait_until_finished()
        if not _is_primary():  # the checksums are process 0's to write, once every process has saved
            return
        kept = {str(s) for s in self.manager.all_steps()}
        checksums = {k: v for k, v in self._checksums().items() if k in kept}
        checksums[str(step)] = _digest(self.directory / str(step))
        _write_atomic(self.checksums_path, json.dumps(checksums, indent=1))

    def restore_latest(self, templates, *, set_aside: bool):
        """``(meta, params, state)`` of the newest checkpoint that reads back and matches its checksum, or
        ``None``. ``templates(phase) -> (params, state)`` gives the structures to restore into. Each newer checkpoint
        that fails is reported by a one-line :class:`CheckpointWarning` and, with ``set_aside``, moved into
        ``run_dir/corrupt-checkpoints/`` (kept for inspection, out of the run's way). A run without any checksum
        file (one written before checkpoints carried checksums) is read unverified, with a warning saying so."""
        checksums = self._checksums()
        legacy = not self.checksums_path.exists() and bool(self.steps())
        if legacy:  # a run written before checkpoints carried checksums: readable, but not verifiable
            warnings.warn(f"{self.run_dir} has no {CHECKSUMS} (a run written before checkpoints were verified, or "
                          "the file was deleted): its checkpoints are read unverified", CheckpointWarning,
                          stacklevel=3)
        for step in reversed(self.steps()):
            expected = checksums.get(str(step))
            if legacy:
                problem = None
            elif expected is None:
                problem = "has no checksum (its save did not complete)"
            elif expected != _digest(self.directory / str(step)):
                problem = "does not match its checksum (corrupt or truncated files)"
            else:
                problem = None
            try:
                if problem is not None:  # checked before Orbax reads a byte of it
                    raise _Unverified
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                params_template, state_template = templates(meta["phase"])
                abstract = jax.tree_util.tree_map(
                    ocp.utils.to_shape_dtype_struct, {"params": params_template, "state": state_template})
                tree = self.manager.restore(
                    step, args=ocp.args.Composite(tree=ocp.args.StandardRestore(abstract)))["tree"]
                return {"step": step, **meta}, tree["params"], tree["state"]
            except _Unverified:
                pass
            except Exception as error:  # any unreadable file: Orbax, TensorStore and JSON errors alike
                first = (str(error).strip().splitlines() or [""])[0][:160]
                problem = f"cannot be read ({type(error).__name__}: {first})"
            action = "falling back to an older one"
            if set_aside:
                aside = self.run_dir / "corrupt-checkpoints" / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
                aside.parent.mkdir(exist_ok=True)
                shutil.move(str(self.directory / str(step)), str(aside))
                self.manager.close()
                self.manager = self._manager()
                action = f"moved to {aside.relative_to(self.run_dir)}, {action}"
            warnings.warn(f"checkpoint {step} of {self.run_dir} {problem}; {action}", CheckpointWarning,
                          stacklevel=3)
        return None

    def close(self):
        self.manager.close()


CHECKSUMS = "checkpoint-checksums.json"


class _Unverified(Exception):
    pass


def _digest(step_dir: pathlib.Path) -> str | None:
    """SHA-256 over the names and bytes of every file of one saved checkpoint (its arrays and metadata), in name
    order; ``None`` if the directory is gone. A flipped byte, a truncated or a missing file changes it."""
    if not step_dir.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(step_dir)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _truncate_metrics(run_dir: pathlib.Path, global_epoch: int) -> None:
    """Keep only the rows of epochs up to ``global_epoch`` (the checkpoint resumed from)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    rows = [r for r in read_metrics(run_dir) if r.get("global_epoch", 0) <= global_epoch]
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def _remove_fresh_run(run_dir: pathlib.Path, created: bool, own_files: bool) -> None:
    """Undo what a fresh run wrote before failing (it saved no checkpoint): no half-made run directory. Files are
    removed only when this run wrote them (``own_files``), never those of a run it refused to overwrite."""
    if own_files:
        for name in ("config.json", "metrics.jsonl", CHECKSUMS):
            (run_dir / name).unlink(missing_ok=True)
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    if created:
        (run_dir / ".lock").unlink(missing_ok=True)
        if not any(run_dir.iterdir()):
            run_dir.rmdir()


class _RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock``; the file names its holder. The OS drops the lock when the
    holding process ends, however it ends, so a killed run never leaves its directory locked."""

    def __init__(self, run_dir: pathlib.Path):
        self.path = run_dir / ".lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that has not named itself yet"
            os.close(fd)
            raise RunInUseError(f"{run_dir} is in use by another training run ({holder}); wait for it to finish "
                                "or stop it, or choose another output directory") from None
        os.ftruncate(fd, 0)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n".encode(), 0)
        self.fd = fd

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def read_metrics(run_dir) -> list[dict]:
    """The per-epoch rows of a run's ``metrics.jsonl``, oldest first (empty if the run has not finished an epoch).

    A last line without its newline (a write cut short by a kill) is not a row and is left out.
    """
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is a row still being written, or empty
    return [json.loads(line) for line in complete if line.strip()]


_CONFIG_KEYS = ("model", "phases", "batch_size", "seed", "binarize")


def read_config(run_dir) -> dict:
    """A run's ``config.json``, checked to be one :class:`Trainer` wrote.

    Raises
    ------
    FileNotFoundError
        If there is no ``config.json``.
    ValueError
        If it is not JSON or lacks the fields of a training run (a foreign file, or one of an older version).
    """
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run: no config.json (train one with 'mcmcvae train')")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); it was not written by 'mcmcvae train'") from None
    missing = [k for k in _CONFIG_KEYS if not isinstance(config, dict) or k not in config]
    if missing or not isinstance(config.get("phases"), list) \
            or not all(isinstance(p, dict) and "method" in p and "num_epochs" in p for p in config["phases"]):
        raise ValueError(f"{path} is not the configuration of an mcmcvae training run (missing or malformed: "
                         f"{', '.join(missing) or 'phases'}); it was written by another program or an incompatible "
                         "version. Train the run again with 'mcmcvae train'")
    return config


def load_run(run_dir):
    """Rebuild ``(model, method, params, state, config)`` of a finished run from its directory.

    The method is the checkpoint's phase's; parameters and state come from the newest intact checkpoint (one
    that reads back and matches its checksum; a newer failing one is reported by a :class:`CheckpointWarning`).
    The returned config is ``config.json`` with one more entry, ``trained``: the checkpoint's ``phase``,
    ``epoch`` (within the phase), ``global_epoch``, the run's ``total_epochs`` and whether it ``finished``.
    """
    run_dir = pathlib.Path(run_dir)
    config = read_config(run_dir)
    model = models.from_config(config["model"])
    phases = [Phase(_methods.from_config(p["method"]), p["num_epochs"]) for p in config["phases"]]
    trainer = Trainer(model, phases, batch_size=config["batch_size"], seed=config["seed"],
                      binarize=config["binarize"], progress=False)
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run_dir}/checkpoints holds no checkpoint; the run did not finish an epoch")

    def templates(phase):
        params = trainer.init()
        return params, trainer.init_phase_state(phase, params)

    ckpt = _Checkpoints(run_dir)
    try:
        restored = ckpt.restore_latest(templates, set_aside=False)  # reading only: nothing is moved
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"{run_dir}/checkpoints holds no intact checkpoint; the run did not finish an epoch")
    meta, params, state = restored
    total = sum(p["num_epochs"] for p in config["phases"])
    config = {**config, "trained": {"phase": meta["phase"], "epoch": meta["epoch"], "global_epoch": meta["step"],
                                    "total_epochs": total, "finished": meta["step"] >= total}}
    return model, phases[meta["phase"]].method, params, state, config


# ------------------------------------------------------------------------------------------------ guards
def _all_finite(tree):
    """Whether every floating-point leaf of ``tree`` is free of NaN and infinity (a traced boolean)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _guarded(params, state, new_params, new_state, metrics):
    """Take a step only if its new parameters, state and loss are finite and its optimisers skipped nothing
    (``nonfinite_updates`` of :func:`mcmcvae.methods.base.nonfinite_count`); otherwise keep the old ones.

    Returns ``(params, state, metrics, taken)``.
    """
    taken = _all_finite((new_params, new_state))
    if "loss" in metrics:
        taken &= jnp.all(jnp.isfinite(metrics["loss"]))
    if "nonfinite_updates" in metrics:
        taken &= jnp.all(metrics["nonfinite_updates"] == 0)
    params, state = jax.tree_util.tree_map(lambda new, old: jnp.where(taken, new, old),
                                           (new_params, new_state), (params, state))
    return params, state, metrics, taken


def _epoch_metrics(metrics, taken):
    """Per-batch metrics ``(num_batches,)`` averaged over the steps taken; ``nonfinite_updates`` is the exact
    number of skipped steps."""
    count = jnp.sum(taken)

    def mean(m):
        m = m.astype(jnp.float32)
        mask = taken.reshape(taken.shape + (1,) * (m.ndim - 1))
        return jnp.sum(jnp.where(mask, m, 0.0), axis=0) / jnp.maximum(count, 1)

    out = {k: mean(v) for k, v in metrics.items() if k != "nonfinite_updates"}
    out["nonfinite_updates"] = taken.shape[0] - count
    return out


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_learning_rates(method) -> None:
    """Every ``*learning_rate`` option of a method's config must be a positive finite number (or ``None``)."""
    config = method.config() if hasattr(method, "config") else {}
    for key, value in config.items():
        if "learning_rate" not in key or value is None or not isinstance(value, numbers.Real):
            continue
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"method {getattr(method, 'name', method)!r} has {key}={value!r}; a learning rate must "
                             "be a positive finite number (e.g. 1e-3)")


def _host_images(images) -> np.ndarray:
    """``images`` as a float32 numpy array, after checking its dtype is numeric."""
    array = np.asarray(images)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"images must be a numeric array (floats in [0, 1]), got dtype {array.dtype}")
    return array.astype(np.float32)


_MISSING = object()


def _config_differences(stored, requested, path: str = "") -> list[str]:
    """``"field (stored X, requested Y)"`` for each difference between two JSON configs that changes what is
    computed; the ``num_epochs`` of phases are left to the caller (they may grow on resume)."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        out = []
        for key in sorted(set(stored) | set(requested), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key == "num_epochs" and path.startswith("phases["):
                continue
            out += _config_differences(stored.get(key, _MISSING), requested.get(key, _MISSING), sub)
        return out
    if isinstance(stored, list) and isinstance(requested, list) and len(stored) == len(requested):
        return [d for i, (a, b) in enumerate(zip(stored, requested)) for d in _config_differences(a, b, f"{path}[{i}]")]
    if stored == requested:
        return []
    show = lambda v: "absent" if v is _MISSING else json.dumps(v)  # noqa: E731
    return [f"{path} (stored {show(stored)}, requested {show(requested)})"]


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


# --------------------------------------------------------------------------------------------------- fit
class FitResult(NamedTuple):
    """What :func:`fit` returns: the trained ``params``, the last phase's method ``state``, and ``train_seconds``,
    the wall time of the run's epochs (compilation included) summed from its ``metrics.jsonl``."""

    params: Any
    state: Any
    train_seconds: float


def fit(model, phases: Sequence[Phase], images, *, run_dir, seed: int, batch_size: int = 100,
        binarize: str = "static", params=None, progress: bool = True, extra_config: dict | None = None) -> FitResult:
    """Train ``phases`` into ``run_dir``, resuming from its checkpoints when an earlier attempt stopped.

    The resumable form of :class:`Trainer` for scripts: call it again after an interruption (or in a script run
    again) and it continues from the last finished epoch, exactly as an uninterrupted run would have (randomness
    depends only on the seed and the epoch); a finished run is restored from its last checkpoint, not retrained.
    A directory that holds a run of another configuration (model, phases, batch size, seed, binarisation or
    ``extra_config``) is refused rather than continued, with the differing fields listed (:meth:`Trainer.run`).

    Parameters
    ----------
    model
        The :class:`mcmcvae.models.VAE` (or any model with the same interface).
    phases
        The :class:`Phase` s to run, in order.
    images
        Training images ``(n, H, W, C)``.
    run_dir
        The run's folder: ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` (see :class:`Trainer`).
    seed
        Everything random in the run derives from it.
    batch_size, binarize
        As for :class:`Trainer`; ``binarize`` defaults to ``"static"`` (images binarised beforehand).
    params
        Parameters the first phase starts from (e.g. a pre-trained VAE's) instead of the seed's; unused when the
        run resumes, whose parameters come from its checkpoint.
    progress
        Show a progress bar over epochs.
    extra_config
        Further fields for ``config.json`` (e.g. the dataset's name); part of the run's identity.

    Returns
    -------
    FitResult
        ``(params, state, train_seconds)``; ``train_seconds`` counts the epochs of every attempt (each once), so
        that a restored or resumed run reports what its training took rather than what this call took.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import mcmcvae as mv
    >>> images = (np.random.default_rng(0).random((40, 4, 4, 1)) < 0.5).astype(np.float32)
    >>> model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    >>> phases = [mv.train.Phase(mv.methods.build("vae"), 2)]
    >>> run_dir = tempfile.mkdtemp()
    >>> params, state, seconds = mv.train.fit(model, phases, images, run_dir=run_dir, seed=0, batch_size=20,
    ...                                       progress=False)
    >>> again = mv.train.fit(model, phases, images, run_dir=run_dir, seed=0, batch_size=20, progress=False)
    >>> again.train_seconds == seconds, len(mv.train.read_metrics(run_dir))  # restored, not retrained
    (True, 2)
    """
    run_dir = pathlib.Path(run_dir)
    trainer = Trainer(model, phases, batch_size=batch_size, seed=seed, binarize=binarize, out_dir=run_dir,
                      progress=progress, extra_config=extra_config)
    checkpoints = run_dir / "checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.iterdir())
    params, state = trainer.run(images, resume=resume, params=None if resume else params)
    seconds = {row["global_epoch"]: row["seconds"] for row in read_metrics(run_dir)}  # an epoch redone counts once
    return FitResult(params, state, float(sum(seconds.values())))


# ---------------------------------------------------------------------------------------------- replicas
def fit_seeds(model, phases: Sequence[Phase], images, *, run_dirs: Sequence, seeds: Sequence[int],
              batch_size: int = 100, binarize: str = "static", params: Sequence | None = None, progress: bool = True,
              extra_config: dict | None = None) -> list[FitResult]:
    """Train one configuration under several seeds at once: the seeds' runs are replicas along a leading axis of
    the parameters, states and keys, and each phase's epoch is one jitted ``vmap`` of the single-run epoch.

    Each replica is exactly the run :func:`fit` would make with its own seed (its data order, binarisation and
    keys are those of that seed), and it is written to its own ``run_dirs[i]`` as :func:`fit` writes it: the same
    ``config.json``, ``metrics.jsonl`` and checkpoints, so every seed is evaluated, restored (:func:`load_run`)
    or resumed (by :func:`fit` or by this function) as a normal run. A seed study then costs one compilation per
    phase and, on an accelerator with room to spare, about the time of one run. Results equal those of separate
    runs up to floating-point reduction order (a batched matrix product may sum in another order than one
    product), not bit for bit.

    Runs already finished are restored, not retrained; the others must stand at the same epoch (all fresh, or
    all resumed from checkpoints of the same epoch), since replicas advance together.
    The epochs run as one ``lax.scan`` whatever the model (a convolutional model on a CPU, which :class:`Trainer`
    runs as a Python loop, is slower here). A metrics row's ``seconds`` is the wall time of the joint epoch and its
    ``replicas`` the number of seeds that shared it.

    Parameters
    ----------
    model, phases, images, batch_size, binarize, progress, extra_config
        As for :func:`fit`.
    run_dirs
        One run folder per seed, all different.
    seeds
        The seeds, all different integers.
    params
        ``None``, or one parameter tree per seed that the first phase starts from (e.g. each seed's pre-trained
        VAE); unused for runs that resume.

    Returns
    -------
    list of FitResult
        One per seed, in the order of ``seeds``.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import mcmcvae as mv
    >>> images = (np.random.default_rng(0).random((40, 4, 4, 1)) < 0.5).astype(np.float32)
    >>> model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    >>> phases = [mv.train.Phase(mv.methods.build("vae"), 2)]
    >>> root = tempfile.mkdtemp()
    >>> results = mv.train.fit_seeds(model, phases, images, run_dirs=[f"{root}/seed0", f"{root}/seed1"],
    ...                              seeds=[0, 1], batch_size=20, progress=False)
    >>> [mv.train.read_config(f"{root}/seed{s}")["seed"] for s in (0, 1)], len(results)
    ([0, 1], 2)
    """
    seeds = list(seeds)
    run_dirs = [pathlib.Path(d) for d in run_dirs]
    if jax.process_count() > 1:
        raise NotImplementedError("fit_seeds runs in one process; under jax.distributed train each seed with "
                                  "mv.train.fit (every process writes only through process 0 there)")
    if not seeds:
        raise ValueError("fit_seeds needs at least one seed")
    if len(run_dirs) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds but {len(run_dirs)} run_dirs; give one run directory per seed")
    if len(set(seeds)) != len(seeds) or len({d.absolute() for d in run_dirs}) != len(run_dirs):
        raise ValueError(f"seeds {seeds} and run_dirs must each be all different (a repeated seed is the same run)")
    if params is not None and len(params) != len(seeds):
        raise ValueError(f"params holds {len(params)} trees for {len(seeds)} seeds; give one per seed (or None)")
    trainers = [Trainer(model, phases, batch_size=batch_size, seed=seed, binarize=binarize, out_dir=run_dir,
                        progress=False, extra_config=extra_config, loop="scan")
                for seed, run_dir in zip(seeds, run_dirs)]
    images = trainers[0]._check_images(images)
    total = sum(p.num_epochs for p in trainers[0].phases)
    opened = []  # (trainer, created, lock, ckpt, started, saved) of each run directory
    try:
        starts = []
        for index, trainer in enumerate(trainers):
            created = not trainer.out_dir.exists()
            trainer.out_dir.mkdir(parents=True, exist_ok=True)
            lock = _RunLock(trainer.out_dir)
            entry = [trainer, created, lock, None, False, []]
            opened.append(entry)
            entry[3] = ckpt = _Checkpoints(trainer.out_dir)
            if ckpt.steps():
                phase, epoch, run_params, state = trainer._resume(ckpt)
            else:
                phase, epoch, run_params, state = 0, 0, None if params is None else params[index], None
                entry[4] = True
                (trainer.out_dir / "metrics.jsonl").unlink(missing_ok=True)
            _write_atomic(trainer.out_dir / "config.json", json.dumps(trainer.config(), indent=2, default=str))
            done = sum(p.num_epochs for p in trainer.phases[:phase]) + epoch
            starts.append((done, phase, epoch, run_params, state))
        pending = [i for i, start in enumerate(starts) if start[0] < total]
        if len({starts[i][0] for i in pending}) > 1:
            where = ", ".join(f"seed {seeds[i]} at epoch {starts[i][0]}" for i in pending)
            raise ValueError(f"the unfinished runs stand at different epochs ({where}); replicas advance together. "
                             "Continue each with mv.train.fit until they meet, or start the lagging ones afresh")
        out = {i: (starts[i][3], starts[i][4]) for i in range(len(seeds)) if i not in pending}
        if pending:
            _, phase, epoch, _, _ = starts[pending[0]]
            trained = _train_replicas([trainers[i] for i in pending], images, [starts[i][3] for i in pending],
                                      [starts[i][4] for i in pending], phase, epoch,
                                      [opened[i][3] for i in pending], [opened[i][5] for i in pending], progress)
            out.update(zip(pending, trained))
    except Exception:
        for trainer, created, _, _, started, saved in opened:
            if (started or created) and not saved:
                _remove_fresh_run(trainer.out_dir, created, own_files=started)
        raise
    finally:
        for _, _, lock, ckpt, _, _ in opened:
            if ckpt is not None:
                ckpt.close()
            lock.release()
    results = []
    for index, run_dir in enumerate(run_dirs):
        seconds = {row["global_epoch"]: row["seconds"] for row in read_metrics(run_dir)}
        results.append(FitResult(*out[index], float(sum(seconds.values()))))
    return results


def _stack(trees):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstack(tree, index: int):
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


def _train_replicas(trainers, images, params, states, start_phase, start_epoch, ckpts, saved, progress):
    """The epochs of :func:`fit_seeds` for replicas standing at the same epoch; returns ``[(params, state)]``."""
    lead, count = trainers[0], len(trainers)
    _, replicated = _data_sharding()
    device_images = jax.device_put(images, replicated)
    params = _stack([t.init() if p is None else jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), p)
                     for t, p in zip(trainers, params)])
    state = None if any(s is None for s in states) else _stack(states)
    total_epochs = sum(p.num_epochs for p in lead.phases)
    done_epochs = sum(p.num_epochs for p in lead.phases[:start_phase]) + start_epoch
    num_batches = images.shape[0] // lead.batch_size
    bar = _progress(total_epochs, done_epochs, progress)
    try:
        for phase_index in range(start_phase, len(lead.phases)):
            phase = lead.phases[phase_index]
            first_epoch = start_epoch if phase_index == start_phase else 0
            if state is None or phase_index != start_phase:
                state = _stack([t.init_phase_state(phase_index, _unstack(params, i)) for i, t in enumerate(trainers)])
            if phase_index not in lead._epoch_fns:  # one vmapped epoch per phase, traced once for every replica
                _, _, epoch_body = lead._epoch_parts(phase_index, images.shape[0])
                lead._epoch_fns[phase_index] = jax.jit(jax.vmap(epoch_body, in_axes=(0, 0, None, 0)),
                                                       donate_argnums=(0, 1))
            epoch_fn = lead._epoch_fns[phase_index]
            params, state = jax.device_put((params, state), replicated)
            for epoch in range(first_epoch, phase.num_epochs):
                tic = time.perf_counter()
                keys = jnp.stack([jax.random.fold_in(t._phase_key(phase_index), epoch) for t in trainers])
                params, state, metrics = epoch_fn(params, state, device_images, keys)
                metrics = jax.tree_util.tree_map(np.asarray, metrics)  # one host sync per epoch
                seconds = time.perf_counter() - tic
                done_epochs += 1
                for i, trainer in enumerate(trainers):
                    row_metrics = {k: float(v[i]) for k, v in metrics.items()}
                    row_metrics["nonfinite_updates"] = int(row_metrics["nonfinite_updates"])
                    if row_metrics["nonfinite_updates"] == num_batches:
                        raise FloatingPointError(
                            f"every one of the {num_batches} updates of epoch {epoch + 1} of phase {phase_index} "
                            f"({phase.method.name}) of seed {trainer.seed} was non-finite and skipped, so training "
                            "cannot progress; lower the learning rate (--learning-rate) or check the data and the "
                            "model. The last checkpoints hold the parameters before this epoch")
                for i, trainer in enumerate(trainers):
                    row = {"phase": phase_index, "method": phase.method.name, "epoch": epoch + 1,
                           "global_epoch": done_epochs,
                           **{k: float(v[i]) for k, v in metrics.items()},
                           "nonfinite_updates": int(metrics["nonfinite_updates"][i]), "seconds": seconds,
                           "images_per_second": num_batches * lead.batch_size / seconds, "replicas": count}
                    with open(trainer.out_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                    ckpts[i].save(done_epochs, _unstack(params, i), _unstack(state, i), phase=phase_index,
                                  epoch=epoch + 1)
                    saved[i].append(done_epochs)
                    if i == 0:
                        bar.update(row)
    finally:
        bar.close()
    return [(_unstack(params, i), _unstack(state, i)) for i in range(count)]
