"""The entropy speed-measure adaptation: API, exact gradients, and what it achieves on ill-conditioned Gaussians."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.adaptation import logdet as logdet_module

# -- API and parametrisation -------------------------------------------------------------------------------------


def test_dispatch_and_errors():
    logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)  # noqa: E731
    with pytest.raises(ValueError, match="kernel module with init and build_kernel"):
        mv.adaptation.speed_measure(jnp, logdensity_fn)
    with pytest.raises(ValueError, match="diagonal.*lower_triangular"):
        mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn, preconditioner="dense")
    with pytest.raises(ValueError, match="num_integration_steps"):
        mv.adaptation.speed_measure(mv.kernels.hmc, logdensity_fn)
    with pytest.raises(ValueError, match="num_integration_steps"):
        mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn, num_integration_steps=3)
    with pytest.raises(ValueError, match="kernel module with init and build_kernel"):
        mv.adaptation.dual_averaging("nuts", logdensity_fn)
    with pytest.raises(TypeError, match="no_such_option"):
        mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn, no_such_option=1)
    with pytest.raises(TypeError, match="divergence_threshold"):  # an HMC option, not MALA's
        mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn, divergence_threshold=10.0)
    assert mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn).target_acceptance_rate == 0.55
    hmc = mv.adaptation.speed_measure(mv.kernels.hmc, logdensity_fn, num_integration_steps=3)
    assert hmc.target_acceptance_rate == 0.65
    dual = mv.adaptation.dual_averaging(mv.kernels.hmc, logdensity_fn, num_integration_steps=2)
    assert dual.target_acceptance_rate == 0.65
    with pytest.raises(ValueError, match="logdensity_fn"):
        mv.adaptation.speed_measure(mv.kernels.mala).init_chains(jnp.zeros((2, 3)))


def test_unconstrained_parameters_round_trip():
    rng = np.random.default_rng(0)
    lower = np.tril(rng.normal(size=(4, 4)))
    lower[np.diag_indices(4)] = [1.5, -0.5, 2.0, -3.0]  # negative entries: absorbed by column sign flips
    precond = mv.kernels.Preconditioner.lower_triangular(4, step_size=0.3, scale=jnp.asarray(lower, jnp.float32))
    params = mv.adaptation.from_preconditioner(precond)
    np.testing.assert_allclose(np.diagonal(params.scale), np.log(np.abs(np.diagonal(lower))), rtol=1e-6)
    assert np.all(np.triu(np.asarray(params.scale), 1) == 0)
    back = mv.adaptation.to_preconditioner(params)
    assert np.all(np.diagonal(np.asarray(back.matrix())) > 0)
    c = np.asarray(back.matrix(), np.float64)
    np.testing.assert_allclose(c @ c.T, lower @ lower.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(back.step_size), 0.3, rtol=1e-6)

    diagonal = mv.kernels.Preconditioner.diagonal(3, step_size=0.2, scale=jnp.array([0.5, 1.0, 4.0]))
    params = mv.adaptation.from_preconditioner(diagonal)
    np.testing.assert_allclose(np.asarray(mv.adaptation.to_preconditioner(params).scale), [0.5, 1.0, 4.0], rtol=1e-6)

    adapt = mv.adaptation.speed_measure(mv.kernels.mala, preconditioner="lower_triangular", initial_step_size=0.25)
    state = adapt.init(5)
    assert state.params.scale.shape == (5, 5) and float(state.params.scale.sum()) == 0.0
    np.testing.assert_allclose(float(adapt.final(state).step_size), 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="lower_triangular"):
        adapt.init(5, mv.kernels.Preconditioner.diagonal(5))


# -- gradients of the objective ----------------------------------------------------------------------------------


def _flat_params(precond):
    """The free parameters: ``log h`` and the lower triangle of ``C`` (or its diagonal)."""
    if precond.scale.ndim == 1:
        return jnp.concatenate([precond.log_step_size[None], precond.scale])
    rows, cols = np.tril_indices(precond.scale.shape[0])
    return jnp.concatenate([precond.log_step_size[None], precond.scale[rows, cols]])


def _unflatten(flat, like):
    if like.scale.ndim == 1:
        return mv.kernels.Preconditioner(flat[0], flat[1:])
    dim = like.scale.shape[0]
    rows, cols = np.tril_indices(dim)
    return mv.kernels.Preconditioner(flat[0], jnp.zeros((dim, dim), flat.dtype).at[rows, cols].set(flat[1:]))


@pytest.mark.parametrize(
    "kind, stop_gradient_proposal_grad",
    [("diagonal", False), ("lower_triangular", False), ("lower_triangular", True)],
)
def test_mala_objective_gradient_matches_finite_differences(make_gaussian, kind, stop_gradient_proposal_grad):
    """Fixed noise: the objective is a smooth function of ``(h, C)``; float64 central differences."""
    with jax.enable_x64(True):
        target = make_gaussian(4, 20.0, rotate=True, seed=1)
        logdensity_fn = target.logdensity_fn(jnp.float64)
        adapt = mv.adaptation.speed_measure(
            mv.kernels.mala, logdensity_fn, preconditioner=kind, stop_gradient_proposal_grad=stop_gradient_proposal_grad
        )
        positions = jnp.asarray(target.sample(1, 8), jnp.float64)
        chains = adapt.init_chains(positions)
        rng = np.random.default_rng(1)
        if kind == "diagonal":
            scale = rng.uniform(0.5, 2.0, 4)
            precond = mv.kernels.Preconditioner.diagonal(4, step_size=0.6, scale=scale, dtype=jnp.float64)
        else:
            scale = np.tril(rng.normal(0, 0.3, (4, 4))) + np.diag(rng.uniform(0.5, 2.0, 4))
            precond = mv.kernels.Preconditioner.lower_triangular(4, step_size=0.6, scale=scale, dtype=jnp.float64)
        key, beta = jax.random.key(2), jnp.float64(0.7)

        @jax.jit
        def value_and_grad(flat):
            def value(f):
                value, aux = adapt.objective(_unflatten(f, precond), key, chains, beta)
                return value, jnp.mean(aux.info.acceptance_rate)

            return jax.value_and_grad(value, has_aux=True)(flat)

        flat = _flat_params(precond)
        (_, acceptance), gradient = value_and_grad(flat)
        eps = 1e-6
        finite_differences = np.array(
            [
                (value_and_grad(flat.at[i].add(eps))[0][0] - value_and_grad(flat.at[i].add(-eps))[0][0]) / (2 * eps)
                for i in range(flat.size)
            ]
        )
        assert 0.05 < float(acceptance) < 0.999  # a non-trivial mix of accepted and rejected proposals
        if stop_gradient_proposal_grad:
            # The biased variant ignores how grad U(z') moves: it must differ from the exact gradient.
            assert np.max(np.abs(np.asarray(gradient) - finite_differences)) > 1e-3
        else:
            np.testing.assert_allclose(np.asarray(gradient), finite_differences, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_hmc_objective_gradient_matches_finite_differences_on_average(make_gaussian):
    """HMC (L = 3): with fixed noise, probe and truncation, the acceptance term and ``d log(hL) + log|det C|`` are
    differentiated exactly, while the log-det term's Neumann surrogate gradient equals the derivative of its
    estimate only in expectation over probes. Per batch of chains the difference
    ``grad . u - (F(theta + eps u) - F(theta - eps u)) / (2 eps)`` therefore has mean zero; it is averaged over
    independent batches (common random numbers) and compared with its standard error."""
    with jax.enable_x64(True):
        target = make_gaussian(4, 20.0, rotate=True, seed=3)
        adapt = mv.adaptation.speed_measure(
            mv.kernels.hmc,
            target.logdensity_fn(jnp.float64),
            preconditioner="lower_triangular",
            num_integration_steps=3,
            log_det="stochastic",  # the estimator whose surrogate gradient is unbiased only on average
        )
        chains = adapt.init_chains(jnp.asarray(target.sample(3, 16), jnp.float64))
        rng = np.random.default_rng(3)
        scale = np.linalg.cholesky(target.covariance) @ (np.eye(4) + np.tril(rng.normal(0, 0.1, (4, 4))))
        precond = mv.kernels.Preconditioner.lower_triangular(4, step_size=0.45, scale=scale, dtype=jnp.float64)
        flat = _flat_params(precond)
        beta = jnp.float64(2.0)
        directions = jnp.asarray(rng.normal(size=(3, flat.size)), jnp.float64)
        eps = 1e-5

        def one_batch(key):
            def value(f):
                return adapt.objective(_unflatten(f, precond), key, chains, beta)[0]

            (_, aux), gradient = jax.value_and_grad(
                lambda f: adapt.objective(_unflatten(f, precond), key, chains, beta), has_aux=True
            )(flat)
            fd = jax.vmap(lambda u: (value(flat + eps * u) - value(flat - eps * u)) / (2 * eps))(directions)
            return directions @ gradient - fd, jnp.max(aux.spectral_radius), jnp.mean(aux.log_det_residual)

        # 512 batches as 8 calls of 64: one jit(vmap) over all 512 keys in float64 hangs XLA:CPU (jaxlib 0.10.2)
        # with every thread idle, with single-threaded Eigen too; 64 at a time never did (CHANGELOG, known
        # limitations). The keys, and so the statistics, are the same.
        batched = jax.jit(jax.vmap(one_batch))
        parts = [batched(keys) for keys in jax.random.split(jax.random.key(3), 512).reshape(8, 64)]
        differences, radius, log_det = (np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(3))
        assert 0.2 < float(np.max(radius)) < 0.75  # the series converges; the penalty is off
        assert np.all(np.asarray(log_det) != 0.0)
        standard_error = differences.std(0) / math.sqrt(differences.shape[0])
        assert np.all(standard_error > 0)  # single batches differ: the comparison is statistical, not trivial
        np.testing.assert_array_less(np.abs(differences.mean(0)), 4.0 * standard_error)


# -- jit, vmap, grad; traced once --------------------------------------------------------------------------------


def test_update_is_pure_traced_once_and_vmappable(make_gaussian):
    target = make_gaussian(3, 10.0, rotate=True, seed=5)
    adapt = mv.adaptation.speed_measure(mv.kernels.mala, target.logdensity_fn(), num_adaptation_steps=3)
    traces = []

    def update(key, state, chains):
        traces.append(None)
        return adapt.update(key, state, chains)

    update = jax.jit(update)
    chains = adapt.init_chains(jnp.asarray(target.sample(5, 6), jnp.float32))
    state = adapt.init(3)
    steps = []
    for i in range(5):
        chains, state, info = update(jax.random.key(i), state, chains)
        steps.append(info)
    assert len(traces) == 1
    assert [bool(i.is_adapting) for i in steps] == [True, True, True, False, False]
    assert float(steps[0].step_size) != float(steps[3].step_size)
    frozen = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), steps[3], steps[4])
    assert frozen.beta and frozen.step_size and frozen.log_abs_det  # lax.cond on the counter froze them
    assert int(state.step) == 5
    assert info.acceptance_rate.shape == (6,)

    # vmap over independent problems (two step sizes).
    init = lambda h: adapt.init(3, mv.kernels.Preconditioner.diagonal(3, step_size=h))  # noqa: E731
    states = jax.vmap(init)(jnp.array([0.1, 1.0]))
    many_chains = jax.tree.map(lambda x: jnp.stack([x, x]), chains)
    _, new_states, infos = jax.jit(jax.vmap(adapt.update))(jax.random.split(jax.random.key(9), 2), states, many_chains)
    np.testing.assert_allclose(np.asarray(infos.step_size), [0.1, 1.0], rtol=1e-6)
    assert new_states.beta.shape == (2,) and infos.acceptance_rate.shape == (2, 6)


def test_run_scans_one_traced_step_and_shapes(make_gaussian):
    """Tracing ``run`` calls the log density as often for 2 steps as for 7: ``lax.scan`` traces the step once."""
    target = make_gaussian(3, 10.0, rotate=False)
    calls = []

    def logdensity_fn(z):
        calls.append(None)
        return target.logdensity_fn()(z)

    adapt = mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn)
    counts = []
    for num_steps in (2, 7):
        calls.clear()
        run = lambda key, x: adapt.run(key, x, num_steps)  # noqa: E731
        results, info = jax.eval_shape(run, jax.random.key(0), jnp.zeros((5, 3)))
        counts.append(len(calls))
        assert info.acceptance_rate.shape == (num_steps, 5)
        assert info.beta.shape == (num_steps,)
    assert counts[0] == counts[1] > 0
    assert isinstance(results.parameters, mv.kernels.Preconditioner)
    assert results.states.position.shape == (5, 3) and results.parameters.scale.shape == (3,)


def test_per_chain_context_matches_per_chain_targets():
    """``logdensity_fn(z, context)`` with per-chain data and shared parameters (``context_axes``) gives every chain
    its own target: chain i of a batched update equals the kernel step on target i with the same key."""
    adapt = mv.adaptation.speed_measure(mv.kernels.hmc, preconditioner="diagonal", num_integration_steps=2)

    def log_joint(z, context):
        weight, x = context
        return -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((x - weight * z) ** 2)

    x = jnp.arange(12.0).reshape(4, 3) / 4
    weight = jnp.float32(1.5)
    context, axes = (weight, x), (None, 0)
    chains = adapt.init_chains(jnp.zeros((4, 3)), log_joint, context, context_axes=axes)
    np.testing.assert_allclose(np.asarray(chains.logdensity_grad), np.asarray(weight * x), rtol=1e-6)
    state = adapt.init(3)
    precond = adapt.final(state)
    kernel = mv.kernels.hmc.build_kernel(2)

    @jax.jit
    def both(key):
        new_chains, _, info = adapt.update(key, state, chains, log_joint, context, context_axes=axes)
        # The keys update() gives the chains' kernels: split(key) -> (roulette, chains), then per chain
        # split(chain key) -> (kernel, probe).
        chain_keys = jax.random.split(jax.random.split(key)[1], 4)
        expected = jax.vmap(
            lambda k, chain, xi: kernel(jax.random.split(k)[0], chain, lambda z: log_joint(z, (weight, xi)), precond)[0]
        )(chain_keys, chains, x)
        return new_chains.position, expected.position, info.acceptance_rate

    positions, expected, acceptance = both(jax.random.key(0))
    assert acceptance.shape == (4,)
    np.testing.assert_allclose(np.asarray(positions), np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(positions), 0.0)


# -- the acceptance criteria: condition numbers on ill-conditioned Gaussians --------------------------------------

NUM_CHAINS, NUM_STEPS, LAST = 64, 4000, 500


def _adapt(target, algorithm, kind, wrap=None, **options):
    adapt = mv.adaptation.speed_measure(algorithm, target.logdensity_fn(), preconditioner=kind, **options)
    if wrap is not None:
        adapt = wrap(adapt)
    positions = jnp.asarray(target.sample(11, NUM_CHAINS), jnp.float32)
    results, info = jax.jit(adapt.run, static_argnums=2)(jax.random.key(11), positions, NUM_STEPS)
    acceptance = np.asarray(info.acceptance_rate)[-LAST:]
    return {
        "condition_number": target.transformed_condition_number(results.parameters.matrix()),
        "acceptance": float(acceptance.mean()),
        # Standard error of the mean acceptance from the spread of the per-chain means.
        "acceptance_se": float(acceptance.mean(0).std() / math.sqrt(NUM_CHAINS)),
        "target": adapt.target_acceptance_rate,
        "beta": np.asarray(info.beta),
        "step_size": float(results.parameters.step_size),
        # h |det C|^(1/d): the step's scale, comparable between runs whose C differ in volume
        "geometric_mean_step": float(results.parameters.step_size
                                     * np.exp(float(results.parameters.log_abs_det()) / target.dim)),
    }


@pytest.fixture(scope="module")
def hmc_lower_triangular(make_gaussian):
    return _adapt(make_gaussian(20, 500.0, rotate=True), mv.kernels.hmc, "lower_triangular", num_integration_steps=3)


@pytest.mark.slow
def test_mala_lower_triangular_whitens_a_rotated_gaussian(make_gaussian):
    result = _adapt(make_gaussian(20, 500.0, rotate=True), mv.kernels.mala, "lower_triangular")
    assert result["condition_number"] < 3.0, result
    assert abs(result["acceptance"] - result["target"]) < 0.1, result


@pytest.mark.slow
def test_mala_diagonal_whitens_an_axis_aligned_gaussian(make_gaussian):
    result = _adapt(make_gaussian(20, 500.0, rotate=False), mv.kernels.mala, "diagonal")
    assert result["condition_number"] < 2.0, result
    assert abs(result["acceptance"] - result["target"]) < 0.1, result


@pytest.mark.slow
def test_hmc_lower_triangular_whitens_a_rotated_gaussian(hmc_lower_triangular):
    assert hmc_lower_triangular["condition_number"] < 5.0, hmc_lower_triangular


@pytest.mark.slow
def test_hmc_acceptance_sits_at_the_entropy_optimum(hmc_lower_triangular):
    """With ``L = 3`` the HMC entropy ``d log h + sum_i log(1 - 4/3 h^2 mu_i)`` (``mu_i`` the eigenvalues of
    ``C^T Sigma^{-1} C``) is maximal at ``h^2 mu_i = 1/4``: however large ``beta``, ``h`` cannot exceed that, and a
    whitened 20-d Gaussian then accepts about 0.887 of the proposals (the acceptance of leapfrog with
    ``h = 1/2``, ``L = 3`` on a standard 20-d Gaussian, computed independently below). ``beta`` therefore climbs to
    its upper bound and the acceptance stays near that value, above the target."""
    rng = np.random.default_rng(12)
    x, p = rng.standard_normal((2, 200_000, 20))
    energy = 0.5 * (x**2).sum(1) + 0.5 * (p**2).sum(1)
    for _ in range(3):
        p = p - 0.25 * x
        x = x + 0.5 * p
        p = p - 0.25 * x
    ceiling = np.minimum(1.0, np.exp(energy - 0.5 * (x**2).sum(1) - 0.5 * (p**2).sum(1))).mean()
    assert hmc_lower_triangular["beta"][-LAST:].min() == pytest.approx(100.0)
    assert abs(hmc_lower_triangular["acceptance"] - ceiling) < 0.03, (hmc_lower_triangular, ceiling)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the HMC entropy caps h at h^2 mu = 1/4 where a whitened 20-d Gaussian accepts ~0.89 > 0.65 + 0.1; "
    "see docs/kernels.md, 'HMC and the target acceptance rate'",
)
def test_hmc_acceptance_reaches_the_target(hmc_lower_triangular):
    assert abs(hmc_lower_triangular["acceptance"] - hmc_lower_triangular["target"]) < 0.1, hmc_lower_triangular


# -- the variant: chains moved with a dual-averaged multiple of h (a wrapper around the tuner) --------------------


def test_dual_averaged_factor_moves_the_chains_with_s_h_and_leaves_the_learning_of_h_and_c_alone(make_gaussian):
    """The wrapper's update is the paper's update of (h, C, beta) from the objective's own proposal, plus a separate
    move at ``(s h, C)`` with ``s`` the dual-averaging iterate; the tuned kernel is ``(s-bar h, C)``."""
    target = make_gaussian(4, 10.0, rotate=True)
    options = dict(preconditioner="lower_triangular", num_integration_steps=2, initial_step_size=0.3)
    paper = mv.adaptation.speed_measure(mv.kernels.hmc, target.logdensity_fn(), **options)
    variant = mv.adaptation.with_dual_averaged_step_size(paper, step_size_jitter=0.0)
    assert variant.inner is paper and variant.target_acceptance_rate == paper.target_acceptance_rate
    positions = jnp.asarray(target.sample(3, 8), jnp.float32)
    chains = paper.init_chains(positions)
    state = variant.init(4)
    for step in range(5):  # move s away from 1 first
        chains, state, _ = jax.jit(variant.update)(jax.random.key(step), state, chains)

    key = jax.random.key(9)
    moved, new_state, info = jax.jit(variant.update)(key, state, chains)
    objective_chains, expected_state, _ = jax.jit(paper.update)(key, state.inner, chains)
    for got, want in zip(jax.tree.leaves(new_state.inner), jax.tree.leaves(expected_state)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)

    factor = state.factor
    step_size = float(np.exp(state.inner.params.log_step_size + factor.log_step_size))
    np.testing.assert_allclose(float(info.step_size), step_size, rtol=1e-5)
    precond = paper.final(state.inner)._replace(log_step_size=jnp.log(step_size))
    kernel = mv.kernels.hmc.build_kernel(2)
    keys = jax.random.split(jax.random.fold_in(key, 1), 8)
    expected = jax.vmap(lambda k, c: kernel(k, c, target.logdensity_fn(), precond)[0])(keys, chains)
    np.testing.assert_allclose(np.asarray(moved.position), np.asarray(expected.position), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(moved.position), np.asarray(objective_chains.position))
    assert int(new_state.factor.step) == int(factor.step) + 1
    tuned = variant.final(new_state)
    np.testing.assert_allclose(
        float(tuned.log_step_size),
        float(new_state.inner.params.log_step_size + new_state.factor.log_step_size_avg), rtol=1e-6)


def test_dual_averaged_factor_jitters_its_moves_by_default(make_gaussian):
    """By default the move is the kernel at ``(s h u, C)``, ``u ~ Uniform(0.5, 1.5)`` per chain drawn from the first
    half of the chain's key (:func:`mcmcvae.adaptation.dual_averaging.jitter_step_size`)."""
    target = make_gaussian(4, 10.0, rotate=True)
    paper = mv.adaptation.speed_measure(mv.kernels.hmc, target.logdensity_fn(), preconditioner="lower_triangular",
                                        num_integration_steps=2, initial_step_size=0.3)
    variant = mv.adaptation.with_dual_averaged_step_size(paper)
    chains = paper.init_chains(jnp.asarray(target.sample(3, 8), jnp.float32))
    state = variant.init(4)
    key = jax.random.key(9)
    moved, _, info = jax.jit(variant.update)(key, state, chains)
    precond = paper.final(state.inner)
    kernel = mv.kernels.hmc.build_kernel(2)
    keys = jax.random.split(jax.random.fold_in(key, 1), 8)

    def jittered(k, c):
        key_jitter, key_kernel = jax.random.split(k)
        u = 1.0 + 0.5 * jax.random.uniform(key_jitter, minval=-1.0, maxval=1.0)
        return kernel(key_kernel, c, target.logdensity_fn(), precond._replace(
            log_step_size=precond.log_step_size + jnp.log(u)))[0]

    expected = jax.vmap(jittered)(keys, chains)
    np.testing.assert_allclose(np.asarray(moved.position), np.asarray(expected.position), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="step_size_jitter must lie in"):
        mv.adaptation.with_dual_averaged_step_size(paper, step_size_jitter=1.0)


def test_dual_averaged_factor_mixes_on_the_benchmarks_easy_gaussian(make_gaussian):
    """The posteriors benchmark's ``gaussian-5d`` (the same covariance), L = 5, its 16 chains and 2000 + 1000
    gradients per chain: the tuned kernel mixes.

    Without a step-size jitter it did not (R-hat 1.5 to 1.65, minimum ESS 14 to 30 of 3200 draws over two seeds):
    dual averaging settled on a step at which 5 leapfrog steps turn the stiffest whitened direction through one
    whole turn (0.99 turns), where HMC is periodic and the energy error vanishes. Bounds: R-hat of well-mixed
    chains exceeds 1 by about 1 / (draws per chain) = 0.005 here, so 1.05 is far above that and far below 1.5;
    the ESS measured with the jitter is about 2000, and 320 (a tenth of the draws) is 10 to 20 times the failure's.
    Each mean lies within 4 of its Monte Carlo standard errors."""
    target = make_gaussian(5, 10.0, rotate=True, seed=1)
    paper = mv.adaptation.speed_measure(mv.kernels.hmc, target.logdensity_fn(), preconditioner="lower_triangular",
                                        num_integration_steps=5)
    tuner = mv.adaptation.with_dual_averaged_step_size(paper)
    positions = jnp.asarray(target.sample(5, 16), jnp.float32)
    results, _ = tuner.run(jax.random.key(3), positions, 400)
    draws, _ = tuner.sample(jax.random.key(4), results, 200)
    draws = np.asarray(draws, np.float64)
    diagnostics = mv.evaluate.chain_diagnostics(draws)
    ess = np.asarray(diagnostics.effective_sample_size, np.float64)
    assert float(np.max(diagnostics.potential_scale_reduction)) < 1.05, diagnostics
    assert float(np.min(ess)) > 320, ess
    flat = draws.reshape(-1, 5)
    standard_errors = np.sqrt(np.diag(target.covariance) / ess)
    assert np.all(np.abs(flat.mean(0)) < 4 * standard_errors), (flat.mean(0), standard_errors)


def test_the_speed_measure_has_no_step_size_flag():
    """The variant is a wrapper: the speed measure itself takes no option to switch its step size rule."""
    with pytest.raises(TypeError, match="step_size_adaptation"):
        mv.adaptation.speed_measure(mv.kernels.mala, step_size_adaptation="dual_averaging")


@pytest.fixture(scope="module")
def hmc_dual_averaged_factor(make_gaussian):
    return _adapt(make_gaussian(20, 500.0, rotate=True), mv.kernels.hmc, "lower_triangular", num_integration_steps=3,
                  wrap=mv.adaptation.with_dual_averaged_step_size)


@pytest.mark.slow
def test_dual_averaged_factor_reaches_the_target_and_keeps_the_whitening(hmc_dual_averaged_factor,
                                                                         hmc_lower_triangular):
    """Where gradHMC's own proposals stop near 0.89 (the test above), the variant's moves accept at the target
    and its C whitens the target as well, with longer steps than gradHMC's."""
    result = hmc_dual_averaged_factor
    # Dual averaging holds the running mean of the acceptance at the target; over the last 500 steps the mean
    # stays within a few of its standard errors (0.0014 from the chains' spread here) plus the iterate's drift.
    assert abs(result["acceptance"] - result["target"]) < 0.01, result
    assert result["condition_number"] < 5.0, result
    assert result["geometric_mean_step"] > 1.5 * hmc_lower_triangular["geometric_mean_step"], (
        result, hmc_lower_triangular)


@pytest.mark.parametrize("dim, log_det", [(4, "exact"), (6, "stochastic")])
def test_hmc_penalty_acts_only_outside_the_threshold(make_gaussian, dim, log_det):
    """On a Gaussian ``A = (L^2 - 1)/6 h^2 C^T Sigma^{-1} C``: with ``C = chol(Sigma)``, ``rho(A) = 4/3 h^2``. With
    the exact term and with the roulette (radius differentiated from the forward product ``A u``): zero with zero
    gradient inside, positive and shrinking h outside, and there ``strength * (|u^T A u| - t)^2``."""
    target = make_gaussian(dim, 20.0, rotate=True, seed=4)
    adapt = mv.adaptation.speed_measure(
        mv.kernels.hmc, target.logdensity_fn(), preconditioner="lower_triangular", num_integration_steps=3,
        num_power_iterations=30, log_det=log_det)
    chains = adapt.init_chains(jnp.asarray(target.sample(4, 8), jnp.float32))
    chol = jnp.asarray(np.linalg.cholesky(target.covariance), jnp.float32)

    @jax.jit
    def evaluate(log_step_size):
        def penalty(log_h):
            _, aux = adapt.objective(mv.kernels.Preconditioner(log_h, chol), jax.random.key(4), chains, 1.0)
            return jnp.mean(aux.penalty), aux

        return jax.value_and_grad(penalty, has_aux=True)(log_step_size)

    for radius, inside in [(0.3, True), (0.7, True), (0.85, False), (0.95, False)]:
        log_h = jnp.float32(0.5 * math.log(radius * 6 / 8))
        (penalty, aux), grad = evaluate(log_h)
        np.testing.assert_allclose(np.asarray(aux.spectral_radius), radius, rtol=1e-3)
        if inside:
            assert float(penalty) == 0.0 and float(grad) == 0.0
        else:
            assert float(penalty) > 0.0 and float(grad) > 0.0  # the objective subtracts beta * penalty: h goes down
            np.testing.assert_allclose(aux.penalty, 1000.0 * (aux.spectral_radius - 0.75) ** 2, rtol=1e-4)
            # d penalty / d log h = 2 strength (rho - t) * d rho / d log h, with rho = 4/3 h^2: d rho / d log h = 2 rho
            expected = jnp.mean(2000.0 * (aux.spectral_radius - 0.75) * 2 * aux.spectral_radius)
            np.testing.assert_allclose(grad, expected, rtol=1e-3)


def test_stochastic_log_det_penalty_gradient_in_h_and_c_is_the_radius_gradient():
    """The roulette path's radius is differentiated without a reverse pass through ``A u`` (from ``y = H C u``):
    on an axis-aligned Gaussian with a diagonal ``C``, ``A = c h^2 C Sigma^-1 C`` is diagonal and its radius
    ``c h^2 max_i C_i^2 / sigma_i^2``, whose gradient in ``(log h, C)`` the penalty's must follow."""
    variances = jnp.array([4.0, 1.0, 0.25, 2.0, 0.5, 3.0])
    adapt = mv.adaptation.speed_measure(
        mv.kernels.hmc, lambda z: -0.5 * jnp.sum(z**2 / variances), preconditioner="diagonal",
        num_integration_steps=3, num_power_iterations=60, log_det="stochastic", spectral_radius_threshold=0.5)
    chains = adapt.init_chains(jax.random.normal(jax.random.key(0), (4, 6)))
    curvature = (3**2 - 1) / 6
    scale = jnp.array([1.0, 0.9, 1.1, 0.8, 0.7, 1.2])
    log_h = jnp.float32(0.5 * math.log(0.8 / (curvature * 1.1**2 / 0.25)))  # rho(A) = 0.8, above 0.5

    def penalty(log_h, scale):
        _, aux = adapt.objective(mv.kernels.Preconditioner(log_h, scale), jax.random.key(4), chains, 1.0)
        return jnp.mean(aux.penalty), aux

    def closed_form(log_h, scale):
        radius = curvature * jnp.exp(2 * log_h) * jnp.max(scale**2 / variances)
        return logdet_module.spectral_radius_penalty(radius, 0.5, 1000.0)

    (value, aux), grads = jax.jit(jax.value_and_grad(penalty, argnums=(0, 1), has_aux=True))(log_h, scale)
    np.testing.assert_allclose(aux.spectral_radius, 0.8, rtol=1e-4)
    np.testing.assert_allclose(value, closed_form(log_h, scale), rtol=1e-3)
    expected = jax.grad(closed_form, argnums=(0, 1))(log_h, scale)
    np.testing.assert_allclose(grads[0], expected[0], rtol=1e-3)
    np.testing.assert_allclose(grads[1], expected[1], rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(expected[1]))))
