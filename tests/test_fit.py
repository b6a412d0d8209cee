"""mv.train.fit: a training run in a folder that resumes where it stopped and is restored when finished."""

import shutil

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.train import Phase, read_metrics

IMAGES = (np.random.default_rng(0).random((40, 4, 4, 1)) < 0.5).astype(np.float32)


def _setting():
    model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    phases = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("gradmala", num_mcmc_steps=2), 1)]
    return model, phases


def _fit(run_dir, **options):
    model, phases = _setting()
    return mv.train.fit(model, phases, IMAGES, run_dir=run_dir, seed=0, batch_size=20, progress=False, **options)


def _assert_same_tree(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_stopped_run_resumes_to_the_params_of_an_uninterrupted_one(tmp_path):
    """A run stopped after its second epoch (its last checkpoint and metrics row gone, as a run killed then leaves
    it) resumes into the MCMC phase and ends with exactly the parameters and state of an uninterrupted run."""
    whole = _fit(tmp_path / "whole")
    assert isinstance(whole, mv.train.FitResult) and len(read_metrics(tmp_path / "whole")) == 3
    stopped = tmp_path / "stopped"
    _fit(stopped)
    shutil.rmtree(stopped / "checkpoints" / "3")  # Orbax keeps the last two epochs' checkpoints, by global epoch
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    (stopped / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")
    resumed = _fit(stopped)
    rows = read_metrics(stopped)
    assert [r["global_epoch"] for r in rows] == [1, 2, 3] and rows[-1]["method"] == "gradmala"
    _assert_same_tree(resumed.params, whole.params)
    _assert_same_tree(resumed.state, whole.state)
    assert resumed.train_seconds == pytest.approx(sum(r["seconds"] for r in rows))


def test_a_finished_run_is_restored_not_retrained(tmp_path):
    """Calling fit again on a finished run trains no epoch, returns the same parameters, and reports the seconds
    its epochs took (from metrics.jsonl), not the few this call spent restoring it."""
    first = _fit(tmp_path / "run")
    epochs = read_metrics(tmp_path / "run")
    assert len(epochs) == 3 and first.train_seconds == pytest.approx(sum(r["seconds"] for r in epochs))
    again = _fit(tmp_path / "run", params=jax.tree_util.tree_map(np.zeros_like, first.params))  # unused: restored
    assert read_metrics(tmp_path / "run") == epochs and again.train_seconds == first.train_seconds
    _assert_same_tree(again.params, first.params)


def test_a_folder_holding_another_run_is_refused(tmp_path):
    _fit(tmp_path / "run")
    model, phases = _setting()
    with pytest.raises(ValueError, match=r"differs from the stored one in seed \(stored 0, requested 1\)"):
        mv.train.fit(model, phases, IMAGES, run_dir=tmp_path / "run", seed=1, batch_size=20, progress=False)
    with pytest.raises(ValueError, match=r"differs from the stored one in dataset"):
        _fit(tmp_path / "run", extra_config={"dataset": "mnist"})


def test_params_start_a_fresh_run(tmp_path):
    """Given parameters (a pre-trained model's) start the first phase instead of the seed's initialisation."""
    model, phases = _setting()
    start = _fit(tmp_path / "a").params
    plain = mv.train.fit(model, phases[:1], IMAGES, run_dir=tmp_path / "b", seed=0, batch_size=20, progress=False)
    warm = mv.train.fit(model, phases[:1], IMAGES, run_dir=tmp_path / "c", seed=0, batch_size=20, progress=False,
                        params=start)
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(plain.params),
                                                         jax.tree_util.tree_leaves(warm.params)))
