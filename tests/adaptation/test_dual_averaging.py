"""Dual averaging of the step size (C = I) and BlackJAX's window adaptation as tuned references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv

NUM_CHAINS = 64


def _acceptance_at(algorithm, num_integration_steps, logdensity_fn, precond, states, num_steps, seed):
    """Per-chain mean acceptance of ``num_steps`` kernel steps with a fixed preconditioner."""
    options = {} if num_integration_steps is None else {"num_integration_steps": num_integration_steps}
    kernel = algorithm.build_kernel(**options)

    @jax.jit
    def sample(states):
        def one_step(chains, key):
            keys = jax.random.split(key, NUM_CHAINS)
            chains, info = jax.vmap(kernel, in_axes=(0, 0, None, None))(keys, chains, logdensity_fn, precond)
            return chains, info.acceptance_rate

        _, acceptance = jax.lax.scan(one_step, states, jax.random.split(jax.random.key(seed), num_steps))
        return acceptance.mean(0)

    return np.asarray(sample(states), np.float64)


@pytest.mark.parametrize("algorithm, num_integration_steps", [(mv.kernels.mala, None), (mv.kernels.hmc, 3)])
def test_dual_averaging_reaches_the_target_acceptance(make_gaussian, algorithm, num_integration_steps):
    """After 1000 steps, sampling with the averaged step size accepts at the target rate.

    Tolerance: four standard errors of the measured rate (from the spread of 64 independent per-chain means)
    plus 0.02 for the finite-time error of dual averaging itself: with the mean acceptance over 64 chains the
    iterate ``log h_t`` fluctuates by about ``sqrt(sigma^2 / (2 gamma sqrt(t) |da/dlog h|)) ~ 0.03`` around its
    limit at ``t ~ 1000`` (``sigma ~ 0.04``, ``|da/dlog h| ~ 0.5``), i.e. about 0.015 in acceptance, and the
    average over recent iterates only shrinks that.
    """
    target = make_gaussian(20, 10.0, rotate=True, seed=21)
    logdensity_fn = target.logdensity_fn()
    adapt = mv.adaptation.dual_averaging(algorithm, logdensity_fn, num_integration_steps=num_integration_steps)
    positions = jnp.asarray(target.sample(21, NUM_CHAINS), jnp.float32)
    results, info = jax.jit(adapt.run, static_argnums=2)(jax.random.key(21), positions, 1000)
    assert info.acceptance_rate.shape == (1000, NUM_CHAINS)
    np.testing.assert_array_equal(np.asarray(results.parameters.scale), np.ones(20))
    acceptance = _acceptance_at(
        algorithm, num_integration_steps, logdensity_fn, results.parameters, results.states, 500, seed=22
    )
    standard_error = acceptance.std() / math.sqrt(NUM_CHAINS)
    target_rate = adapt.target_acceptance_rate
    assert abs(acceptance.mean() - target_rate) < 4 * standard_error + 0.02, (acceptance.mean(), standard_error)


def test_dual_averaging_pure_pair_carries_across_batches_and_restarts():
    """``init``/``update`` with per-chain data, jitted once; ``init(1.0)`` restarts from ``h = 1``."""
    adapt = mv.adaptation.dual_averaging(mv.kernels.mala)
    log_joint = lambda z, x: -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((x - z) ** 2)  # noqa: E731
    traces = []

    @jax.jit
    def batch_step(key, state, x):
        traces.append(None)
        chains = adapt.init_chains(x, log_joint, x)
        chains, state, info = adapt.update(key, state, chains, log_joint, x)
        return state, info

    state = adapt.init(3)
    da = state.dual_averaging
    assert float(da.log_step_size) == 0.0 and float(da.mu) == pytest.approx(math.log(10.0))
    for i in range(4):
        x = jax.random.normal(jax.random.key(100 + i), (8, 3))
        state, info = batch_step(jax.random.key(i), state, x)
    assert len(traces) == 1 and int(state.dual_averaging.step) == 5
    assert info.acceptance_rate.shape == (8,)
    tuned = adapt.final(state)
    assert float(tuned.step_size) == pytest.approx(float(jnp.exp(state.dual_averaging.log_step_size_avg)))
    np.testing.assert_array_equal(np.asarray(tuned.scale), np.ones(3))
    restarted = adapt.init(3)
    assert float(restarted.dual_averaging.log_step_size) == 0.0 and int(restarted.dual_averaging.step) == 1


def test_dual_averaging_keeps_a_given_c_and_starts_from_its_step_size():
    """A warm start from ``(h, C)``: dual averaging tunes ``h`` from ``h_0`` (``mu = log(10 h_0)``) for that ``C``."""
    adapt = mv.adaptation.dual_averaging(mv.kernels.mala, lambda z: -0.5 * jnp.sum(z**2 / jnp.array([0.01, 1.0])))
    given = mv.kernels.Preconditioner.lower_triangular(2, step_size=0.5, scale=jnp.array([[0.1, 0.0], [0.0, 1.0]]))
    state = adapt.init(2, given)
    assert float(state.dual_averaging.mu) == pytest.approx(math.log(5.0), rel=1e-6)
    results, _ = adapt.run(jax.random.key(0), jnp.zeros((16, 2)), 200, initial_parameters=given)
    np.testing.assert_array_equal(np.asarray(results.parameters.scale), np.asarray(given.scale))


@pytest.mark.slow
def test_window_adaptation_learns_the_covariance(make_gaussian):
    """A dense mass matrix from BlackJAX's window adaptation whitens a rotated Gaussian of condition number 100.

    ``C = chol(M^{-1})`` is an estimate of ``chol(Sigma)`` from the last slow window's samples (a few hundred,
    autocorrelated), so ``C^T Sigma^{-1} C`` is the identity up to a relative sampling error of order
    ``sqrt(d / n_eff)``; a condition number below 2 allows for that with a wide margin while an untuned
    ``C = I`` gives 100.
    """
    target = make_gaussian(5, 100.0, rotate=True, seed=23)
    warmup = mv.adaptation.window_adaptation(mv.kernels.hmc, target.logdensity_fn(), num_integration_steps=3)
    assert warmup.target_acceptance_rate == 0.65
    results = jax.jit(warmup.run, static_argnums=2)(jax.random.key(23), jnp.zeros(5), 1000)
    assert int(results.num_gradient_evaluations) == 1 + 1000 * 3
    assert results.inverse_mass_matrix.shape == (5, 5) and results.acceptance_rate.shape == (1000,)
    c = np.asarray(results.parameters.matrix(), np.float64)
    np.testing.assert_allclose(c @ c.T, np.asarray(results.inverse_mass_matrix), rtol=1e-4, atol=1e-5)
    assert target.transformed_condition_number(c) < 2.0
    assert target.transformed_condition_number(np.eye(5)) == pytest.approx(100.0)

    mala = mv.adaptation.window_adaptation(mv.kernels.mala, target.logdensity_fn())
    assert mala.num_integration_steps == 1 and mala.target_acceptance_rate == 0.55
    with pytest.raises(ValueError, match="num_integration_steps"):
        mv.adaptation.window_adaptation(mv.kernels.hmc, target.logdensity_fn())


def test_window_tuner_whitens_with_one_c_shared_by_many_chains(make_gaussian):
    """The window schedule as a tuner of the protocol, run by ``run_chains``: 32 chains feed one Welford covariance
    per slow window, so the last window's estimate rests on thousands of positions and ``C = chol(cov)`` whitens a
    rotated Gaussian of condition number 100 to below 1.5; after ``num_adaptation_steps`` the kernel is frozen."""
    target = make_gaussian(5, 100.0, rotate=True, seed=23)
    tuner = mv.adaptation.window_adaptation(mv.kernels.hmc, target.logdensity_fn(), num_integration_steps=3,
                                            num_adaptation_steps=600)
    chains = tuner.init_chains(jnp.asarray(target.sample(24, 32), jnp.float32))

    @jax.jit
    def run(key, chains, state):
        return mv.kernels.run_chains(key, chains, target.logdensity_fn(), 700, tuner=tuner, tuner_state=state)

    result = run(jax.random.key(24), chains, tuner.init(5))
    tuned = tuner.final(result.tuner_state)
    assert target.transformed_condition_number(np.asarray(tuned.matrix())) < 1.5
    is_adapting = np.asarray(result.info.is_adapting)
    assert is_adapting[:600].all() and not is_adapting[600:].any()
    np.testing.assert_allclose(np.asarray(result.info.step_size[600:]), float(tuned.step_size), rtol=1e-6)
    with pytest.raises(ValueError, match="num_adaptation_steps"):
        mv.adaptation.window_adaptation(mv.kernels.hmc, num_integration_steps=3).init(5)
