"""MALA and HMC kernels: shapes, jit/vmap/grad, dense references, BlackJAX equivalence, divergences.

Compiling is what costs time here, so the tests share a few programs: one per kind of ``C`` (the shape of
``scale``) that runs every kernel variant on the same keys, plus one single-chain program and one BlackJAX
program. Each runs a batch of chains whose targets may differ (per-chain ``shift`` and ``precision``), with
one shared preconditioner, and returns the transition together with the gradient of ``mean(log alpha)`` in
the preconditioner and in the starting positions (the speed-measure adaptation differentiates
``min(0, log alpha)``, the same derivative masked; the smooth version lets finite differences check it).
"""

import functools
from functools import partial
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit

from mcmcvae.kernels import REJECTED_LOG_ACCEPTANCE_RATIO, Preconditioner, hmc, mala

DIM = 3
NUM_CHAINS = 64
SHIFT = np.array([0.5, -1.0, 0.25], np.float32)
DESIGN = np.array([[1.0, -0.5, 0.3], [0.2, 1.5, -1.0], [-0.7, 0.4, 2.0], [1.0, 1.0, 1.0]], np.float32)


# A logistic-regression-like posterior (Gaussian prior, bounded likelihood gradients), with its float64 twin.
def logdensity(z, shift=SHIFT, precision=1.0):
    return -0.5 * precision * jnp.sum((z - shift) ** 2) + jnp.sum(jax.nn.log_sigmoid(DESIGN @ z))


def numpy_logdensity(z):
    return -0.5 * np.sum((z - SHIFT) ** 2) - np.sum(np.logaddexp(0.0, -(DESIGN @ z)))


def numpy_grad(z):
    return -(z - SHIFT) + DESIGN.T.astype(np.float64) @ expit(-(DESIGN @ z))


def preconditioner(kind, step_size=0.6):
    if kind == "diagonal":
        return Preconditioner.diagonal(DIM, step_size=step_size, scale=jnp.array([0.8, 1.2, 0.6]))
    matrix = jnp.array([[0.8, 0.0, 0.0], [0.3, 1.2, 0.0], [-0.4, 0.2, 0.6]])
    return Preconditioner.lower_triangular(DIM, step_size=step_size, scale=matrix)


VARIANTS = {
    "mala": (mala, lambda: mala.build_kernel()),
    "mala_biased": (mala, lambda: mala.build_kernel(stop_gradient_proposal_grad=True)),
    "hmc": (hmc, lambda: hmc.build_kernel(3)),
    "hmc_biased": (hmc, lambda: hmc.build_kernel(3, stop_gradient_proposal_grad=True)),
    "hmc1": (hmc, lambda: hmc.build_kernel(1)),
}


class Transition(NamedTuple):
    keys: jax.Array
    states: object
    new_states: object
    info: object
    grads: tuple  # d mean(log alpha) / d (preconditioner, positions)


# The variants each kind of C runs. One program per kind runs them all on the same keys, so that XLA compiles the
# shared parts (random numbers, the initial gradients) once.
PROGRAMS = {1: ("mala", "hmc"), 2: ("mala", "mala_biased", "hmc", "hmc_biased", "hmc1")}


@functools.cache
def _compiled(variants):
    def objective(precond, positions, keys, shifts, precisions, variant):
        module, build = VARIANTS[variant]
        kernel = build()

        def one_chain(key, position, shift, precision):
            target = partial(logdensity, shift=shift, precision=precision)
            state = module.init(position, target)
            return (state, *kernel(key, state, target, precond))

        states, new_states, info = jax.vmap(one_chain)(keys, positions, shifts, precisions)
        return jnp.mean(info.log_acceptance_ratio), (states, new_states, info)

    @jax.jit
    def run(*args):
        return {v: jax.grad(objective, argnums=(0, 1), has_aux=True)(*args, v) for v in variants}

    return run


def transition(variant, precond, *, positions=None, precisions=None, seed=0):
    """One transition of ``NUM_CHAINS`` chains of ``variant`` (all targets ``logdensity`` unless ``precisions``)."""
    if positions is None:
        positions = jax.random.normal(jax.random.key(seed), (NUM_CHAINS, DIM))
    if precisions is None:
        precisions = jnp.ones(NUM_CHAINS)
    keys = jax.random.split(jax.random.key(seed + 1), NUM_CHAINS)
    shifts = jnp.broadcast_to(jnp.asarray(SHIFT), (NUM_CHAINS, DIM))
    results = _compiled(PROGRAMS[precond.scale.ndim])(precond, positions, keys, shifts, precisions)
    grads, (states, new_states, info) = results[variant]
    return Transition(keys, states, new_states, info, grads)


def accept_uniform(keys):
    """The uniform each kernel compares with its acceptance ratio (the second key of the split)."""
    return jax.vmap(lambda k: jax.random.uniform(jax.random.split(k)[1]))(keys)


def clear_of_ties(keys, log_acceptance_ratio, margin=1e-3):
    """Chains whose accept decision is not within float tolerance of a tie."""
    clear = np.abs(np.log(accept_uniform(keys)) - log_acceptance_ratio) > margin
    assert clear.mean() > 0.9
    return clear


def assert_all_finite(tree):
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(leaf))


KERNELS = ["mala", "hmc"]
KINDS = ["diagonal", "lower_triangular"]


# -- shapes, dtypes, gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", KERNELS)
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_dtypes_and_gradients(variant, kind):
    module = VARIANTS[variant][0]
    precond = preconditioner(kind)
    result = transition(variant, precond)
    info = result.info
    assert isinstance(result.new_states, module.State) and isinstance(info, module.Info)
    for state in (result.new_states, info.proposal):
        assert state.position.shape == (NUM_CHAINS, DIM) and state.position.dtype == jnp.float32
        assert state.logdensity.shape == (NUM_CHAINS,) and state.logdensity.dtype == jnp.float32
        assert state.logdensity_grad.shape == (NUM_CHAINS, DIM)
    for name in ("acceptance_rate", "log_acceptance_ratio", "energy_error"):
        assert getattr(info, name).shape == (NUM_CHAINS,) and getattr(info, name).dtype == jnp.float32, name
    for name in ("is_accepted", "is_divergent"):
        assert getattr(info, name).shape == (NUM_CHAINS,) and getattr(info, name).dtype == jnp.bool_, name
    assert info.noise.shape == (NUM_CHAINS, DIM)
    if variant == "hmc":
        assert info.midpoint.shape == (NUM_CHAINS, DIM)
    np.testing.assert_allclose(info.acceptance_rate, np.minimum(1.0, np.exp(info.log_acceptance_ratio)), rtol=1e-6)
    np.testing.assert_array_equal(info.energy_error, -info.log_acceptance_ratio)
    # The chain moves to the proposal exactly when it is accepted, by `log u < log alpha`.
    expected = np.where(info.is_accepted[:, None], info.proposal.position, result.states.position)
    np.testing.assert_array_equal(result.new_states.position, expected)
    np.testing.assert_array_equal(info.is_accepted, np.log(accept_uniform(result.keys)) < info.log_acceptance_ratio)
    assert 0 < np.sum(info.is_accepted) < NUM_CHAINS
    assert not np.any(info.is_divergent)

    precond_grad, position_grad = result.grads
    assert precond_grad.scale.shape == precond.scale.shape and precond_grad.log_step_size.shape == ()
    assert_all_finite(result.grads)
    assert precond_grad.log_step_size != 0.0
    assert np.any(precond_grad.scale != 0.0) and np.any(position_grad != 0.0)
    if kind == "lower_triangular":
        np.testing.assert_array_equal(np.triu(precond_grad.scale, k=1), 0.0)


@pytest.mark.parametrize("variant", KERNELS)
def test_stop_gradient_changes_derivatives_not_values(variant):
    precond = preconditioner("lower_triangular")
    full = transition(variant, precond)
    biased = transition(f"{variant}_biased", precond)
    for got, want in zip(jax.tree.leaves((biased.new_states, biased.info)), jax.tree.leaves((full.new_states, full.info))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert_all_finite(biased.grads)
    assert not np.allclose(full.grads[0].scale, biased.grads[0].scale, rtol=1e-3)
    assert not np.allclose(full.grads[0].log_step_size, biased.grads[0].log_step_size, rtol=1e-3)


@pytest.mark.parametrize("variant", KERNELS)
def test_gradient_matches_finite_differences(variant):
    """d mean(log alpha) / d (log h, C_ij) for fixed noise, against central differences."""
    precond = preconditioner("lower_triangular", step_size=0.8)
    grads = transition(variant, precond).grads[0]
    eps = 1e-2

    def objective(p):
        info = transition(variant, p).info
        return np.mean(info.log_acceptance_ratio)

    def difference(shift):
        plus = jax.tree.map(lambda a, b: a + eps * b, precond, shift)
        minus = jax.tree.map(lambda a, b: a - eps * b, precond, shift)
        return (objective(plus) - objective(minus)) / (2 * eps)

    step_direction = Preconditioner(jnp.float32(1.0), jnp.zeros((DIM, DIM)))
    np.testing.assert_allclose(grads.log_step_size, difference(step_direction), rtol=2e-2)
    scale_direction = Preconditioner(jnp.float32(0.0), jnp.zeros((DIM, DIM)).at[2, 0].set(1.0))
    np.testing.assert_allclose(grads.scale[2, 0], difference(scale_direction), rtol=2e-2)


_SINGLE_CHAIN_TRACES = []


@functools.cache
def _single_chain():
    """Both kernels on one chain, in one program; counts its traces."""
    kernels = {name: (VARIANTS[name][0], VARIANTS[name][1]()) for name in KERNELS}

    @jax.jit
    def single(key, position, shift, precision, precond):
        _SINGLE_CHAIN_TRACES.append(None)
        target = partial(logdensity, shift=shift, precision=precision)
        return {name: kernel(key, module.init(position, target), target, precond) for name, (module, kernel) in kernels.items()}

    return single


@pytest.mark.parametrize("variant", KERNELS)
def test_vmap_over_different_targets_matches_single_chains_and_traces_once(variant):
    """A batch of chains, each with its own target (one posterior per data point in a VAE)."""

    rng = np.random.default_rng(0)
    shifts = jnp.asarray(rng.normal(size=(NUM_CHAINS, DIM)) * 3.0, jnp.float32)
    precisions = jnp.asarray(rng.uniform(0.5, 2.0, NUM_CHAINS), jnp.float32)
    positions = jax.random.normal(jax.random.key(0), (NUM_CHAINS, DIM))
    keys = jax.random.split(jax.random.key(1), NUM_CHAINS)
    precond = preconditioner("lower_triangular")
    program = _compiled(PROGRAMS[2])
    grads, (_, new_states, info) = program(precond, positions, keys, shifts, precisions)[variant]
    assert_all_finite(grads)
    for i in range(4):
        # New preconditioner values and new targets: no retrace.
        p = precond._replace(log_step_size=precond.log_step_size + 0.1 * i)
        _, (_, batch_states, batch_info) = program(p, positions, keys, shifts, precisions)[variant]
        one_state, one_info = _single_chain()(keys[i], positions[i], shifts[i], precisions[i], p)[variant]
        for got, want in zip(jax.tree.leaves((batch_states, batch_info)), jax.tree.leaves((one_state, one_info))):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)
    assert len(_SINGLE_CHAIN_TRACES) == 1


@pytest.mark.parametrize("variant", KERNELS)
def test_bad_inputs_raise(variant):
    module, build = VARIANTS[variant]
    with pytest.raises(ValueError, match="vmap"):
        module.init(jnp.zeros((2, DIM)), logdensity)
    state = module.init(jnp.zeros(DIM), logdensity)
    with pytest.raises(ValueError, match="scale"):
        build()(jax.random.key(0), state, logdensity, Preconditioner.diagonal(DIM + 1))
    with pytest.raises(ValueError, match="num_integration_steps"):
        hmc.build_kernel(0)


def test_keys_are_split_not_reused():
    result = transition("mala", preconditioner("diagonal"))
    noise_keys = jax.vmap(lambda k: jax.random.split(k)[0])(result.keys)
    np.testing.assert_array_equal(result.info.noise, jax.vmap(lambda k: jax.random.normal(k, (DIM,)))(noise_keys))
    unsplit = jax.vmap(lambda k: jax.random.normal(k, (DIM,)))(result.keys)
    assert not np.any(np.isclose(result.info.noise, unsplit))


# -- the proposals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", KERNELS)
def test_diagonal_and_lower_triangular_propose_the_same(variant):
    diagonal = preconditioner("diagonal")
    full = Preconditioner.lower_triangular(DIM, step_size=diagonal.step_size, scale=diagonal.scale)
    a, b = transition(variant, diagonal), transition(variant, full)
    np.testing.assert_allclose(a.info.proposal.position, b.info.proposal.position, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.info.log_acceptance_ratio, b.info.log_acceptance_ratio, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.info.is_accepted, b.info.is_accepted)
    np.testing.assert_allclose(a.grads[0].log_step_size, b.grads[0].log_step_size, rtol=1e-4)
    np.testing.assert_allclose(a.grads[0].scale, np.diagonal(b.grads[0].scale), rtol=1e-4, atol=1e-6)


def test_hmc_with_one_step_is_mala():
    precond = preconditioner("lower_triangular", step_size=0.8)
    a, b = transition("mala", precond), transition("hmc1", precond)
    np.testing.assert_array_equal(a.info.noise, b.info.noise)
    np.testing.assert_allclose(a.info.proposal.position, b.info.proposal.position, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.info.log_acceptance_ratio, b.info.log_acceptance_ratio, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.info.acceptance_rate, b.info.acceptance_rate, rtol=1e-4, atol=1e-5)
    clear = clear_of_ties(a.keys, a.info.log_acceptance_ratio)
    np.testing.assert_array_equal(a.info.is_accepted[clear], b.info.is_accepted[clear])
    np.testing.assert_allclose(b.info.midpoint, 0.5 * (b.states.position + b.info.proposal.position), atol=1e-6)


def test_mala_ratio_matches_dense_gaussian_proposal_densities():
    """The closed-form ``log alpha`` against the textbook ratio with explicit Gaussian densities (float64)."""
    precond = preconditioner("lower_triangular", step_size=0.7)
    result = transition("mala", precond)
    h, matrix = float(precond.step_size), np.asarray(precond.matrix(), np.float64)
    covariance = matrix @ matrix.T

    def mean(z):
        return z + 0.5 * h**2 * covariance @ numpy_grad(z)

    def log_q(to, start):  # log N(to; mean(start), h^2 C C^T), up to the constant both directions share
        residual = np.linalg.solve(matrix, to - mean(start)) / h
        return -0.5 * residual @ residual

    for i in range(16):
        z = np.asarray(result.states.position[i], np.float64)
        proposal = mean(z) + h * matrix @ np.asarray(result.info.noise[i], np.float64)
        ratio = numpy_logdensity(proposal) - numpy_logdensity(z) + log_q(z, proposal) - log_q(proposal, z)
        np.testing.assert_allclose(result.info.proposal.position[i], proposal, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.info.proposal.logdensity_grad[i], numpy_grad(proposal), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(result.info.log_acceptance_ratio[i], ratio, rtol=1e-4, atol=1e-4)


def test_hmc_matches_dense_leapfrog():
    precond = preconditioner("lower_triangular", step_size=0.4)
    result = transition("hmc", precond)
    h, matrix = float(precond.step_size), np.asarray(precond.matrix(), np.float64)
    inverse_mass = matrix @ matrix.T

    for i in range(16):
        z = np.asarray(result.states.position[i], np.float64)
        p = np.linalg.solve(matrix.T, np.asarray(result.info.noise[i], np.float64))
        energy = -numpy_logdensity(z) + 0.5 * p @ inverse_mass @ p
        positions = [z]
        for _ in range(3):
            p = p + 0.5 * h * numpy_grad(z)
            z = z + h * inverse_mass @ p
            p = p + 0.5 * h * numpy_grad(z)
            positions.append(z)
        new_energy = -numpy_logdensity(z) + 0.5 * p @ inverse_mass @ p
        np.testing.assert_allclose(result.info.proposal.position[i], z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.info.midpoint[i], positions[1], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.info.energy_error[i], new_energy - energy, rtol=1e-4, atol=1e-4)


# -- equivalence with BlackJAX when C = I -----------------------------------------------------------------------


@functools.cache
def _blackjax():
    """``blackjax.mala`` and ``blackjax.hmc`` (3 steps, identity metric) over a batch, in one program."""
    mala_kernel, hmc_kernel = blackjax.mala.build_kernel(), blackjax.hmc.build_kernel()

    def one(key, position, mala_step_size, hmc_step_size):
        mala_state = blackjax.mcmc.mala.init(position, logdensity)
        hmc_state = blackjax.mcmc.hmc.init(position, logdensity)
        return {
            "mala": mala_kernel(key, mala_state, logdensity, mala_step_size),
            "hmc": hmc_kernel(key, hmc_state, logdensity, hmc_step_size, jnp.ones(DIM), 3),
        }

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))


def _compare_with_blackjax(ours, new_state, acceptance_rate, is_accepted):
    np.testing.assert_allclose(ours.info.acceptance_rate, acceptance_rate, rtol=1e-4, atol=1e-5)
    clear = clear_of_ties(ours.keys, ours.info.log_acceptance_ratio)
    np.testing.assert_array_equal(ours.info.is_accepted[clear], is_accepted[clear])
    # Both moved to their proposals, or both stayed.
    np.testing.assert_allclose(ours.new_states.position[clear], new_state.position[clear], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.new_states.logdensity[clear], new_state.logdensity[clear], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_mala_with_identity_is_blackjax_mala(kind):
    """Same key, same noise: our proposal with C = I is BlackJAX's with ``step_size = h^2 / 2``."""
    h = 0.9
    precond = Preconditioner.diagonal(DIM, step_size=h) if kind == "diagonal" else Preconditioner.lower_triangular(DIM, step_size=h)
    ours = transition("mala", precond)
    new_state, info = _blackjax()(ours.keys, ours.states.position, 0.5 * h**2, h)["mala"]
    assert 0.1 < np.mean(info.acceptance_rate) < 0.95
    _compare_with_blackjax(ours, new_state, info.acceptance_rate, info.is_accepted)


@pytest.mark.parametrize("kind", KINDS)
def test_hmc_with_identity_is_blackjax_hmc(kind):
    """Same key, same momentum: with C = I our trajectory and acceptance are BlackJAX's (identity metric)."""
    h = 0.5
    precond = Preconditioner.diagonal(DIM, step_size=h) if kind == "diagonal" else Preconditioner.lower_triangular(DIM, step_size=h)
    ours = transition("hmc", precond)
    new_state, info = _blackjax()(ours.keys, ours.states.position, 0.5 * h**2, h)["hmc"]
    assert 0.1 < np.mean(info.acceptance_rate) < 0.95
    np.testing.assert_allclose(ours.info.noise, info.momentum, rtol=1e-6)
    np.testing.assert_allclose(ours.info.proposal.position, info.proposal.position, rtol=1e-5, atol=1e-5)
    _compare_with_blackjax(ours, new_state, info.acceptance_rate, info.is_accepted)


# -- divergences ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", KERNELS)
@pytest.mark.parametrize("kind", KINDS)
def test_absurd_step_size_is_rejected_with_finite_gradients(variant, kind):
    """h = 1e10 overflows the log density at the proposal: flagged, rejected, zero and finite gradients."""
    result = transition(variant, preconditioner(kind, step_size=1e10))
    info = result.info
    assert np.all(info.is_divergent) and not np.any(info.is_accepted)
    np.testing.assert_array_equal(info.acceptance_rate, 0.0)
    np.testing.assert_array_equal(info.log_acceptance_ratio, REJECTED_LOG_ACCEPTANCE_RATIO)
    for got, want in zip(jax.tree.leaves(result.new_states), jax.tree.leaves(result.states)):
        np.testing.assert_array_equal(got, want)
    assert_all_finite(info)
    assert_all_finite(result.grads)
    for leaf in jax.tree.leaves(result.grads):
        np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize("variant", KERNELS)
def test_divergent_chains_do_not_poison_the_batch_gradient(variant):
    """Chains whose target overflows next to healthy ones: the shared gradient stays finite and informative."""
    precisions = jnp.asarray(np.where(np.arange(NUM_CHAINS) % 4 == 0, 1e30, 1.0), jnp.float32)
    result = transition(variant, preconditioner("lower_triangular", step_size=0.6), precisions=precisions)
    np.testing.assert_array_equal(result.info.is_divergent, precisions > 1.0)
    assert_all_finite(result.grads)
    assert result.grads[0].log_step_size != 0.0
    np.testing.assert_array_equal(result.grads[1][precisions > 1.0], 0.0)


def test_hmc_flags_large_but_finite_energy_errors():
    result = transition("hmc", preconditioner("diagonal", step_size=30.0))
    info = result.info
    assert np.all(np.isfinite(info.log_acceptance_ratio)) and np.all(info.energy_error > 1000.0)
    assert not np.any(info.log_acceptance_ratio == REJECTED_LOG_ACCEPTANCE_RATIO)
    assert np.all(info.is_divergent) and not np.any(info.is_accepted)
    assert_all_finite(result.grads)
