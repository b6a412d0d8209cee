"""NaN and infinity injected into data, gradients, updates and log densities: a clear error, or training that
skips and counts exactly the bad steps and writes nothing non-finite anywhere."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.train import Phase, Trainer, _Checkpoints, load_run, read_metrics


def _images(n=100):
    rng = np.random.default_rng(0)
    return (rng.random((n, 8, 8, 1)) < 0.5).astype(np.float32)


def _model():
    return mv.models.VAE((8, 8, 1), 2, hidden_sizes=(16,))


def _finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


def _everything_written_is_finite(run_dir, trainer=None):
    """The newest intact checkpoint (read with the trainer's templates when its method is not a built-in one)
    and every metrics value are finite."""
    if (run_dir / "checkpoints").exists() and trainer is None:
        _, _, params, state, _ = load_run(run_dir)
        assert _finite((params, state))
    elif (run_dir / "checkpoints").exists():
        checkpoints = _Checkpoints(run_dir)
        _, params, state = checkpoints.restore_latest(
            lambda phase: (trainer.init(), trainer.init_phase_state(phase, trainer.init())), set_aside=False)
        checkpoints.close()
        assert _finite((params, state))
    for row in read_metrics(run_dir):
        assert all(np.isfinite(v) for v in row.values() if isinstance(v, float))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_non_finite_pixels_are_refused(tmp_path, value, binarize):
    images = _images()
    images[3, 2, 2, 0] = value
    with pytest.raises(ValueError, match="1 NaN or infinite pixels"):
        Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=50, binarize=binarize,
                out_dir=tmp_path / "run", progress=False).run(images)
    assert not (tmp_path / "run").exists()


class _Inject:
    """Wraps a method; on the batches that hold training image 0 it poisons the images it is given (the
    gradients turn NaN) or its new parameters (the update turns NaN)."""

    def __init__(self, inner, num_data, where):
        self.inner, self.num_data, self.where, self.name = inner, num_data, where, f"inject-{where}"

    def init(self, rng_key, model, params):
        return self.inner.init(rng_key, model, params)

    def step(self, rng_key, model, params, state, batch):
        hit = jnp.any(batch.indices == 0)
        if self.where == "gradients":
            batch = batch._replace(images=jnp.where(hit, jnp.nan, batch.images))
        params, state, metrics = self.inner.step(rng_key, model, params, state, batch)
        if self.where == "updates":
            params = jax.tree_util.tree_map(lambda p: jnp.where(hit, jnp.inf, p), params)
        return params, state, metrics

    def config(self):
        return {"name": self.name, "num_data": self.num_data}


@pytest.mark.parametrize("where", ["gradients", "updates"])
@pytest.mark.parametrize("method", ["vae", "gradmala"])
def test_injected_non_finite_steps_are_skipped_and_counted_exactly(tmp_path, where, method):
    inner = mv.methods.build(method, **({"num_mcmc_steps": 2} if method != "vae" else {}))
    trainer = Trainer(_model(), [Phase(_Inject(inner, 100, where), 3)], batch_size=20, seed=1, out_dir=tmp_path,
                      progress=False)
    assert _finite(trainer.run(_images()))
    rows = read_metrics(tmp_path)
    assert [r["nonfinite_updates"] for r in rows] == [1, 1, 1]  # image 0 is in one of 5 batches per epoch
    _everything_written_is_finite(tmp_path, trainer)


@dataclasses.dataclass(frozen=True)
class _NaNRegion(mv.models.VAE):
    """log p(x, z) is NaN where z_0 > 1: chains and their adaptation meet NaN log densities."""

    def log_joint(self, params, x, z):
        return jnp.where(z[0] > 1.0, jnp.nan, super().log_joint(params, x, z))


@pytest.mark.parametrize("method", ["gradmala", "dshmc"])
def test_nan_log_densities_in_the_chains(tmp_path, method):
    model = _NaNRegion((8, 8, 1), 2, hidden_sizes=(16,))
    trainer = Trainer(model, [Phase(mv.methods.build("vae"), 1),
                              Phase(mv.methods.build(method, num_mcmc_steps=2), 2)],
                      batch_size=20, seed=2, out_dir=tmp_path, progress=False)
    try:
        params, state = trainer.run(_images())
    except FloatingPointError as error:  # a clear stop is an acceptable outcome; nothing bad was written
        assert "non-finite and skipped" in str(error)
    else:
        assert _finite((params, state))
    _everything_written_is_finite(tmp_path)


@pytest.mark.parametrize("method", ["vae", "gradmala"])
@pytest.mark.parametrize("learning_rate", [1e4, 1e30])
def test_huge_learning_rates_write_nothing_non_finite(tmp_path, method, learning_rate):
    phases = [Phase(mv.methods.build("vae", learning_rate=learning_rate if method == "vae" else 1e-3), 2)]
    if method != "vae":
        phases.append(Phase(mv.methods.build(method, num_mcmc_steps=2, learning_rate=learning_rate), 2))
    try:
        Trainer(_model(), phases, batch_size=20, seed=0, out_dir=tmp_path, progress=False).run(_images())
    except FloatingPointError as error:
        assert "lower the learning rate" in str(error)
    _everything_written_is_finite(tmp_path)


@pytest.mark.parametrize("learning_rate", [float("nan"), float("inf"), 0.0, -1e-3])
def test_unusable_learning_rates_are_refused(learning_rate):
    with pytest.raises(ValueError, match="learning rate must be a positive finite number"):
        Trainer(_model(), [Phase(mv.methods.build("vae", learning_rate=learning_rate), 1)], progress=False)
    with pytest.raises(ValueError, match="learning_rate must be a positive finite number"):
        mv.methods.base.make_optimizer(learning_rate)
