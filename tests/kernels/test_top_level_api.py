"""The kernels as BlackJAX ``SamplingAlgorithm``s: BlackJAX's own loop samples a correlated Gaussian correctly.

Each chain starts from an exact draw of the target, so every step's marginal is the target and the time averages
of ``x_i`` and ``(x_i - mu_i)(x_j - mu_j)`` are unbiased for ``mu`` and ``Sigma``. Their Monte Carlo standard errors
are ``sd(f) / sqrt(ESS(f))`` with the effective sample size of each statistic's own series from BlackJAX's
diagnostics (over all chains). Tolerance: 4.5 standard errors for each of 9 checks per kernel.
"""

import blackjax
import blackjax.diagnostics
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.kernels import Preconditioner, hmc, mala

NUM_CHAINS = 8
NUM_STEPS = 2000
NUM_STANDARD_ERRORS = 4.5
MEAN = np.array([1.0, -2.0, 0.5])
COVARIANCE = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.1], [0.2, 0.1, 0.25]])


def logdensity_fn(x):
    r = x - MEAN
    return -0.5 * r @ jnp.linalg.solve(COVARIANCE, r)


def _algorithms():
    # A diagonal C that does not whiten: the kernel must get the correlation right by itself.
    diagonal = Preconditioner.diagonal(3, step_size=0.6, scale=jnp.array([1.0, 1.0, 0.5]))
    dense = Preconditioner.lower_triangular(3, step_size=0.3, scale=jnp.asarray(np.linalg.cholesky(COVARIANCE)))
    return {
        "mala": mala.as_top_level_api(logdensity_fn, diagonal),
        "hmc": hmc.as_top_level_api(logdensity_fn, dense, 5),
    }


@pytest.mark.parametrize("name", ["mala", "hmc"])
def test_blackjax_loop_samples_the_target(name):
    algorithm = _algorithms()[name]
    key_start, key_run = jax.random.split(jax.random.key(20))
    starts = MEAN + jax.random.normal(key_start, (NUM_CHAINS, 3)) @ np.linalg.cholesky(COVARIANCE).T

    def run(key, position):
        _, (states, infos) = blackjax.util.run_inference_algorithm(key, algorithm, NUM_STEPS,
                                                                   initial_position=position)
        return states.position, infos.acceptance_rate

    positions, acceptance = jax.jit(jax.vmap(run))(jax.random.split(key_run, NUM_CHAINS), starts)
    positions = np.asarray(positions, np.float64)  # (chains, steps, 3)
    assert positions.shape == (NUM_CHAINS, NUM_STEPS, 3)
    assert 0.3 < float(np.mean(acceptance)) < 0.99  # moving, not stuck

    centred = positions - MEAN
    statistics = {f"mean[{i}]": (positions[..., i], MEAN[i]) for i in range(3)}
    for i in range(3):
        for j in range(i, 3):
            statistics[f"cov[{i},{j}]"] = (centred[..., i] * centred[..., j], COVARIANCE[i, j])
    for label, (series, expected) in statistics.items():
        ess = float(blackjax.diagnostics.effective_sample_size(jnp.asarray(series)))
        assert ess > 100, (label, ess)
        standard_error = np.std(series) / np.sqrt(ess)
        assert abs(series.mean() - expected) < NUM_STANDARD_ERRORS * standard_error, (label, series.mean(), expected,
                                                                                      standard_error)


@pytest.mark.parametrize("name", ["mala", "hmc"])
def test_step_is_the_kernel_step(name):
    algorithm = _algorithms()[name]
    if name == "mala":
        kernel = mala.build_kernel()
        precond = Preconditioner.diagonal(3, step_size=0.6, scale=jnp.array([1.0, 1.0, 0.5]))
    else:
        kernel = hmc.build_kernel(5)
        precond = Preconditioner.lower_triangular(3, step_size=0.3,
                                                  scale=jnp.asarray(np.linalg.cholesky(COVARIANCE)))
    state = algorithm.init(jnp.array([0.3, -1.0, 0.9]), jax.random.key(3))
    expected_state = mala.init(jnp.array([0.3, -1.0, 0.9]), logdensity_fn)
    jax.tree.map(np.testing.assert_array_equal, state, expected_state)
    for seed in range(3):
        key = jax.random.key(seed)
        got = algorithm.step(key, state)
        expected = kernel(key, state, logdensity_fn, precond)
        jax.tree.map(np.testing.assert_array_equal, got, expected)
        state = got[0]


def test_rejects_a_non_preconditioner():
    with pytest.raises(TypeError, match="Preconditioner"):
        mala.as_top_level_api(logdensity_fn, 0.1)
    with pytest.raises(TypeError, match="Preconditioner"):
        hmc.as_top_level_api(logdensity_fn, jnp.eye(2), 3)
