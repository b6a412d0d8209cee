"""vcd's per-point control variates are in use for the steps after the wait, as a short run's metrics and state
show, and never when the wait outlasts the run (the cpu budget's bug: a wait of 3000 in a 3000-iteration run)."""

import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.train import Phase, read_metrics

NUM_DATA, BATCH, EPOCHS = 40, 10, 5  # 4 iterations per epoch, 20 in all


def _fit(tmp_path, wait):
    model = mv.models.VAE((4, 1, 1), 2, hidden_sizes=(), likelihood="gaussian", likelihood_scale=0.5)
    images = np.random.default_rng(3).random((NUM_DATA, 4, 1, 1)).astype(np.float32)
    method = mv.methods.build("vcd", num_data=NUM_DATA, control_variate_wait=wait, num_mcmc_steps=2,
                              num_integration_steps=2)
    _, state, _ = mv.train.fit(model, [Phase(method, EPOCHS)], images, run_dir=tmp_path / f"wait{wait}", seed=0,
                               batch_size=BATCH, binarize="none", progress=False)
    rows = read_metrics(tmp_path / f"wait{wait}")
    per_epoch = NUM_DATA // BATCH
    return state, [row["control_variate_per_point"] * per_epoch for row in rows]


def test_per_point_control_variates_are_used_after_a_wait_that_is_a_fraction_of_the_run(tmp_path):
    """Wait 2 of 20 iterations: the first epoch uses the per-point stage in 2 of its 4 steps and every later step
    uses it (18 of 20); each point's control variate has then moved on its own, so they differ between points."""
    state, per_point_steps = _fit(tmp_path, wait=2)
    assert len(per_point_steps) == EPOCHS
    assert per_point_steps == pytest.approx([2.0, 4.0, 4.0, 4.0, 4.0])
    assert sum(per_point_steps) / (EPOCHS * NUM_DATA // BATCH) == pytest.approx(0.9)
    cv = state["control_variate"]
    assert int(cv["iteration"]) == EPOCHS * NUM_DATA // BATCH
    local = np.asarray(cv["local"])
    assert np.unique(local).size == NUM_DATA  # one value per point, not the global one broadcast
    assert not np.allclose(local, float(cv["global"]))


def test_a_wait_longer_than_the_run_keeps_the_control_variate_global(tmp_path):
    """The paper's wait of 3000 in a 20-iteration run: no step is per point and every point holds the global value."""
    state, per_point_steps = _fit(tmp_path, wait=3000)
    assert sum(per_point_steps) == 0.0
    cv = state["control_variate"]
    assert np.allclose(np.asarray(cv["local"]), float(cv["global"]))
