"""A new kernel is one module: a preconditioned random-walk Metropolis defined here, outside the library, tuned by
the speed measure and by dual averaging, and trained with as Algorithm 1's kernel, with no library edit."""

from __future__ import annotations

import math
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import mcmcvae as mv

# -- the kernel module -------------------------------------------------------------------------------------------


class State(NamedTuple):
    position: jax.Array
    logdensity: jax.Array


class Info(NamedTuple):
    acceptance_rate: jax.Array
    log_acceptance_ratio: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array


def init(position, logdensity_fn):
    return State(position, logdensity_fn(position))


def build_kernel():
    """``z' = z + h C v``, ``v ~ N(0, I)``: a symmetric proposal, so ``log alpha = log pi(z') - log pi(z)``."""

    def kernel(rng_key, state, logdensity_fn, preconditioner):
        key_noise, key_accept = jax.random.split(rng_key)
        noise = jax.random.normal(key_noise, state.position.shape, state.position.dtype)
        proposed = state.position + preconditioner.step_size * preconditioner.apply(noise)
        proposed_logdensity = logdensity_fn(proposed)
        log_ratio = proposed_logdensity - state.logdensity
        is_finite = jnp.isfinite(log_ratio)
        log_ratio = jnp.where(is_finite, log_ratio, -1e4)
        is_accepted = jnp.log(jax.random.uniform(key_accept)) < log_ratio
        new_state = jax.tree.map(lambda new, old: jnp.where(is_accepted, new, old),
                                 State(proposed, proposed_logdensity), state)
        return new_state, Info(jnp.exp(jnp.minimum(log_ratio, 0.0)), log_ratio, is_accepted, ~is_finite)

    return kernel


def proposal_entropy(preconditioner):
    """``N(z, h^2 C C^T)``: ``d log h + log|det C|`` up to a constant."""
    return preconditioner.dim * preconditioner.log_step_size + preconditioner.log_abs_det()


rwm = types.ModuleType("rwm", "Preconditioned random-walk Metropolis (a test's own kernel module).")
rwm.State, rwm.Info, rwm.init, rwm.build_kernel, rwm.proposal_entropy = State, Info, init, build_kernel, proposal_entropy
rwm.DEFAULT_TARGET_ACCEPTANCE_RATE = 0.3

# -- tuning it ---------------------------------------------------------------------------------------------------

NUM_CHAINS, NUM_STEPS, LAST = 64, 3000, 500
SCALES = np.geomspace(0.1, 1.0, 5)


def _gaussian(z):
    return -0.5 * jnp.sum((z / jnp.asarray(SCALES, jnp.float32)) ** 2)


def _acceptance_and_standard_error(acceptance):
    """Mean over chains and steps, and its standard error from the spread of the per-chain means."""
    per_chain = np.asarray(acceptance, np.float64).mean(0)
    return per_chain.mean(), per_chain.std() / math.sqrt(per_chain.size)


def _start():
    return jnp.asarray(np.random.default_rng(0).standard_normal((NUM_CHAINS, 5)) * SCALES, jnp.float32)


def test_speed_measure_tunes_the_new_kernel_to_its_target_and_learns_the_scales():
    """beta's update is stationary only where the mean acceptance equals the target, so over the last steps the
    acceptance sits at 0.3: within four standard errors of the measured rate plus 0.02 for the controller's own
    fluctuation (as for dual averaging, tests/adaptation/test_dual_averaging.py). The diagonal ``C`` whitens the
    axis-aligned target: ``C_i / sigma_i`` is nearly constant while ``sigma_i`` spans a factor of 10."""
    tuner = mv.adaptation.speed_measure(rwm, _gaussian, preconditioner="diagonal", initial_step_size=0.1)
    assert tuner.target_acceptance_rate == 0.3 and tuner.algorithm is rwm
    results, info = jax.jit(tuner.run, static_argnums=2)(jax.random.key(0), _start(), NUM_STEPS)
    mean, se = _acceptance_and_standard_error(info.acceptance_rate[-LAST:])
    assert abs(mean - 0.3) < 4 * se + 0.02, (mean, se)
    ratios = np.asarray(results.parameters.scale) / SCALES
    assert ratios.max() / ratios.min() < 1.5, ratios


def test_dual_averaging_tunes_the_new_kernel_to_its_target():
    """Tuned by dual averaging, the fixed kernel with the averaged step size accepts at the target (tolerance as in
    tests/adaptation/test_dual_averaging.py)."""
    tuner = mv.adaptation.dual_averaging(rwm, _gaussian)
    results, _ = jax.jit(tuner.run, static_argnums=2)(jax.random.key(1), _start(), NUM_STEPS)
    sample = mv.kernels.run_chains(jax.random.key(2), results.states, _gaussian, LAST, kernel=tuner.kernel,
                                   preconditioner=results.parameters)
    mean, se = _acceptance_and_standard_error(sample.info.acceptance_rate)
    assert abs(mean - 0.3) < 4 * se + 0.02, (mean, se)


def test_trains_a_vae_as_the_kernel_of_algorithm_1():
    from mcmcvae.train import Phase, Trainer

    model = mv.models.VAE((6, 6, 1), 3, hidden_sizes=(16,))
    rng = np.random.default_rng(0)
    images = (rng.random((40, 6, 6, 1)) < 0.4).astype(np.float32)
    method = mv.methods.MCMC(mv.adaptation.speed_measure(rwm, preconditioner="lower_triangular"), num_mcmc_steps=3)
    assert method.kernel is rwm
    trainer = Trainer(model, [Phase(method, 2)], batch_size=20, seed=0, progress=False)
    params, state = trainer.run(images)
    before = method.kernel_parameters(model, method.init(jax.random.key(0), model, model.init(jax.random.key(0))))
    after = method.kernel_parameters(model, state)
    assert after.scale.shape == (3, 3) and not np.allclose(after.scale, before.scale)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves((params, after)))
    assert trainer.trace_count == 1
    loc, scale = jax.jit(lambda k: method.proposal(k, model, params, state, jnp.asarray(images[:4])))(jax.random.key(3))
    assert loc.shape == (4, 3) and bool(jnp.all(jnp.isfinite(loc)))
