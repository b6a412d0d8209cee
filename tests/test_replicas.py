"""mv.train.fit_seeds: several seeds of one configuration trained as replicas of one vmapped, jitted epoch."""

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae import train as train_module
from mcmcvae.train import Phase, read_config, read_metrics

IMAGES = (np.random.default_rng(0).random((60, 4, 4, 1)) < 0.5).astype(np.float32)
SEEDS = (0, 3, 7)
# vmap turns each matrix product into a batched one, which XLA may sum in another order; each step's result then
# differs from a separate run's by a few float32 roundings (~1e-7 relative), which a few training steps may grow
# but not beyond ~1e-5. A wrong key, data order or binarisation moves the parameters by ~1e-3 or more.
RTOL, ATOL = 2e-5, 2e-6


def _model():
    return mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))


PHASES = {
    "vae": lambda: [Phase(mv.methods.build("vae"), 2)],
    "gradmala": lambda: [Phase(mv.methods.build("vae"), 1), Phase(mv.methods.build("gradmala", num_mcmc_steps=2), 2)],
}


def _assert_close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(PHASES))
def test_replicas_equal_separate_runs_and_trace_each_phase_once(tmp_path, name, monkeypatch):
    """Three seeds vmapped end with the parameters, state and per-epoch losses of three separate runs (to float
    tolerance), write the same config.json, and trace the epoch once per phase for all seeds together."""
    traces = []
    original = train_module._train_replicas

    def counting(trainers, *args, **kwargs):
        out = original(trainers, *args, **kwargs)
        traces.append(trainers[0].trace_count)
        return out

    monkeypatch.setattr(train_module, "_train_replicas", counting)
    options = dict(batch_size=20, binarize="dynamic", progress=False, extra_config={"dataset": "toy"})
    grey = np.random.default_rng(1).random((60, 4, 4, 1)).astype(np.float32)  # dynamic binarisation is per seed
    together = mv.train.fit_seeds(_model(), PHASES[name](), grey, run_dirs=[tmp_path / f"v{s}" for s in SEEDS],
                                  seeds=SEEDS, **options)
    assert traces == [len(PHASES[name]())]
    for seed, result in zip(SEEDS, together, strict=True):
        alone = mv.train.fit(_model(), PHASES[name](), grey, run_dir=tmp_path / f"s{seed}", seed=seed, **options)
        _assert_close(result.params, alone.params)
        _assert_close(result.state, alone.state)
        assert read_config(tmp_path / f"v{seed}") == read_config(tmp_path / f"s{seed}")
        rows, single = read_metrics(tmp_path / f"v{seed}"), read_metrics(tmp_path / f"s{seed}")
        assert [r["global_epoch"] for r in rows] == [r["global_epoch"] for r in single]
        np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in single], rtol=RTOL)
        assert all(r["replicas"] == len(SEEDS) for r in rows)
        # each seed's directory is a normal run: load_run restores it
        _, _, params, _, config = mv.train.load_run(tmp_path / f"v{seed}")
        assert config["trained"]["finished"]
        _assert_close(params, alone.params)


def test_seeds_differ_and_finished_runs_are_restored(tmp_path):
    """Replicas are different runs (not one run copied), and a second call restores them without training."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    first = mv.train.fit_seeds(_model(), PHASES["vae"](), IMAGES, run_dirs=dirs, seeds=(0, 1), batch_size=20,
                               progress=False)
    a, b = (jax.tree_util.tree_leaves(r.params)[0] for r in first)
    assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-3
    rows = [read_metrics(d) for d in dirs]
    again = mv.train.fit_seeds(_model(), PHASES["vae"](), IMAGES, run_dirs=dirs, seeds=(0, 1), batch_size=20,
                               progress=False)
    assert [read_metrics(d) for d in dirs] == rows
    for x, y in zip(first, again, strict=True):
        _assert_close(x.params, y.params)
        assert x.train_seconds == y.train_seconds


def test_a_resumed_replica_run_continues_like_separate_runs(tmp_path):
    """Replicas trained for one epoch, then asked for two more, end where three-epoch separate runs end."""
    model = _model()
    dirs = [tmp_path / "a", tmp_path / "b"]
    mv.train.fit_seeds(model, [Phase(mv.methods.build("vae"), 1)], IMAGES, run_dirs=dirs, seeds=(0, 1),
                       batch_size=20, progress=False)
    longer = mv.train.fit_seeds(model, [Phase(mv.methods.build("vae"), 3)], IMAGES, run_dirs=dirs, seeds=(0, 1),
                                batch_size=20, progress=False)
    for seed, result in zip((0, 1), longer, strict=True):
        alone = mv.train.fit(model, [Phase(mv.methods.build("vae"), 3)], IMAGES, run_dir=tmp_path / f"s{seed}",
                             seed=seed, batch_size=20, progress=False)
        _assert_close(result.params, alone.params)
        assert [r["global_epoch"] for r in read_metrics(dirs[seed])] == [1, 2, 3]


def test_bad_replica_arguments_are_refused(tmp_path):
    model, phases = _model(), PHASES["vae"]()
    fit = lambda **kw: mv.train.fit_seeds(model, phases, IMAGES, batch_size=20, progress=False, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="one run directory per seed"):
        fit(run_dirs=[tmp_path / "a"], seeds=(0, 1))
    with pytest.raises(ValueError, match="all different"):
        fit(run_dirs=[tmp_path / "a", tmp_path / "b"], seeds=(0, 0))
    with pytest.raises(ValueError, match="at least one seed"):
        fit(run_dirs=[], seeds=())
    with pytest.raises(ValueError, match="one per seed"):
        fit(run_dirs=[tmp_path / "a", tmp_path / "b"], seeds=(0, 1), params=[None])
    assert not (tmp_path / "a").exists()
    # runs standing at different epochs cannot advance together
    mv.train.fit(model, [Phase(mv.methods.build("vae"), 1)], IMAGES, run_dir=tmp_path / "c", seed=0, batch_size=20,
                 progress=False)
    with pytest.raises(ValueError, match="different epochs"):
        fit(run_dirs=[tmp_path / "c", tmp_path / "d"], seeds=(0, 1))
    assert not (tmp_path / "d").exists() and len(read_metrics(tmp_path / "c")) == 1
