"""The tuners' ``sample``, their scale-aware start and warm starts, and the warnings of ``run`` (issue #21)."""

from __future__ import annotations

import warnings
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv

SD = jnp.array([0.02, 0.05, 0.01, 0.03])
MEAN = jnp.array([1.0, -2.0, 0.5, 0.0])


def badly_scaled(z):
    """Independent normals with standard deviations 0.01-0.05 (the issue's regression posterior's scale)."""
    return -0.5 * jnp.sum(((z - MEAN) / SD) ** 2)


def half_normal(z):
    """Independent standard half-normals on z > 0: -inf on the rest of the space."""
    return jnp.where(jnp.all(z > 0), -0.5 * jnp.sum(z**2), -jnp.inf)


def gaussian(z):
    return -0.5 * jnp.sum(z**2)


def _tuners(logdensity_fn):
    hmc = {"num_integration_steps": 3}
    return {
        "speed_measure_mala": mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn),
        "speed_measure_hmc_lower": mv.adaptation.speed_measure(mv.kernels.hmc, logdensity_fn,
                                                               preconditioner="lower_triangular", **hmc),
        "dual_averaging_hmc": mv.adaptation.dual_averaging(mv.kernels.hmc, logdensity_fn, **hmc),
        "fixed_mala": mv.adaptation.fixed(mv.kernels.mala, logdensity_fn, step_size=0.5),
        "dual_averaged_step": mv.adaptation.with_dual_averaged_step_size(
            mv.adaptation.speed_measure(mv.kernels.hmc, logdensity_fn, **hmc)),
    }


@pytest.mark.parametrize("name", sorted(_tuners(gaussian)))
def test_sample_shapes_and_fixed_kernel(name):
    tuner = _tuners(gaussian)[name]
    # Five steps cannot reach a target, nor can its kernel mix: the warnings are checked elsewhere.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mv.adaptation.AdaptationWarning)
        results, _ = tuner.run(jax.random.key(0), jnp.zeros((6, 3)), 5)
        before = jax.tree.map(np.asarray, results.parameters)
        positions, info = tuner.sample(jax.random.key(1), results, 7)
    assert positions.shape == (7, 6, 3)
    assert info.acceptance_rate.shape == info.is_divergent.shape == info.is_accepted.shape == (7, 6)
    assert info.is_divergent.dtype == jnp.bool_
    # The parameters are held fixed: the draws are those of run_chains with results.parameters, whose last
    # states are the last draws.
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, results.parameters))
    fixed = mv.kernels.run_chains(jax.random.key(1), results.states, gaussian, 7, kernel=tuner.kernel,
                                  preconditioner=results.parameters)
    np.testing.assert_array_equal(positions[-1], fixed.states.position)
    # A chain's first draw is its start where the first step was rejected: the draws go on from results.states.
    rejected = ~np.asarray(info.is_accepted[0])
    np.testing.assert_array_equal(np.asarray(positions[0])[rejected], np.asarray(results.states.position)[rejected])


def test_sample_rejects_bad_input():
    tuner = mv.adaptation.speed_measure(mv.kernels.mala, gaussian, initial_step_size=0.5)
    results = mv.adaptation.AdaptationResults(mv.kernels.Preconditioner.diagonal(2, step_size=0.5),
                                              tuner.init_chains(jnp.zeros((4, 2))), None)
    with pytest.raises(ValueError, match="num_samples"):
        tuner.sample(jax.random.key(0), results, 0)
    with pytest.raises(TypeError, match="Preconditioner"):
        tuner.sample(jax.random.key(0), results._replace(parameters=0.5), 3)
    with pytest.raises(TypeError, match="initial_parameters"):
        tuner.run(jax.random.key(0), jnp.zeros((4, 2)), 3, initial_parameters=0.5)


def test_window_sample_per_chain_parameters():
    window = mv.adaptation.window_adaptation(mv.kernels.hmc, gaussian, num_integration_steps=3)
    results = window.run(jax.random.key(0), jax.random.normal(jax.random.key(1), (3, 2)), 60)
    positions, info = window.sample(jax.random.key(2), results, 5)
    assert positions.shape == (5, 3, 2) and info.acceptance_rate.shape == (5, 3)


def test_explicit_step_size_keeps_the_training_path():
    """A number for initial_step_size (what the VAE methods pass) starts run and init from it, with no search:
    run equals the loop of init(dim) and update with the same key."""
    tuner = mv.adaptation.speed_measure(mv.kernels.mala, gaussian, initial_step_size=0.05)
    assert tuner.step_size_search is None
    state = tuner.init(3)
    assert float(tuner.final(state).step_size) == pytest.approx(0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mv.adaptation.AdaptationWarning)
        results, _ = tuner.run(jax.random.key(0), jnp.zeros((4, 3)), 4)
    run = mv.kernels.run_chains(jax.random.key(0), tuner.init_chains(jnp.zeros((4, 3))), gaussian, 4, tuner=tuner,
                                tuner_state=state)
    np.testing.assert_array_equal(results.states.position, run.states.position)
    # Without positions, init falls back to the documented h0 (0.1 for the speed measure, 1 for dual averaging).
    assert float(mv.adaptation.speed_measure(mv.kernels.mala).final(
        mv.adaptation.speed_measure(mv.kernels.mala).init(2)).step_size) == pytest.approx(0.1)
    dual = mv.adaptation.dual_averaging(mv.kernels.mala)
    assert float(jnp.exp(dual.init(2).dual_averaging.log_step_size)) == pytest.approx(1.0)


def test_default_start_follows_the_targets_scale():
    """initial_step_size=None: run starts from the searched h, far below the fallback 0.1 for sds near 0.02."""
    tuner = mv.adaptation.speed_measure(mv.kernels.mala, badly_scaled)
    positions = MEAN + SD * jax.random.normal(jax.random.key(0), (16, 4))
    with warnings.catch_warnings():  # one step cannot reach the target
        warnings.simplefilter("ignore", mv.adaptation.AdaptationWarning)
        results, info = tuner.run(jax.random.key(1), positions, 1)  # info.step_size[0]: the searched h
    assert float(info.step_size[0]) < 0.05
    searched = mv.adaptation.find_reasonable_step_size(
        jax.random.split(jax.random.key(1))[1], mv.kernels.mala, badly_scaled, positions,
        mv.kernels.Preconditioner.diagonal(4, step_size=0.1), target_acceptance_rate=0.55)
    assert float(info.step_size[0]) == pytest.approx(float(searched), rel=1e-5)


@pytest.mark.parametrize("kind", ["speed_measure", "dual_averaging", "fixed", "dual_averaged_step"])
def test_warm_start_from_a_cholesky_factor(kind):
    covariance = np.array([[1.0, 0.8], [0.8, 1.0]])
    cholesky = jnp.asarray(np.linalg.cholesky(covariance), jnp.float32)
    start = mv.kernels.Preconditioner(jnp.log(jnp.float32(0.3)), cholesky)
    logdensity_fn = lambda z: -0.5 * z @ jnp.asarray(np.linalg.inv(covariance), jnp.float32) @ z  # noqa: E731
    tuner = {
        "speed_measure": mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn,
                                                     preconditioner="lower_triangular"),
        "dual_averaging": mv.adaptation.dual_averaging(mv.kernels.mala, logdensity_fn),
        "fixed": mv.adaptation.fixed(mv.kernels.mala, logdensity_fn),
        "dual_averaged_step": mv.adaptation.with_dual_averaged_step_size(
            mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn, preconditioner="lower_triangular")),
    }[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mv.adaptation.AdaptationWarning)
        results, info = tuner.run(jax.random.key(0), jnp.zeros((4, 2)), 1, initial_parameters=start)
    # The first step moves with the given (h, C), not a searched h or C = I.
    np.testing.assert_allclose(np.asarray(tuner.final(tuner.init(2, start)).matrix()), np.asarray(cholesky),
                               rtol=1e-6)
    if hasattr(info, "step_size"):
        assert float(np.ravel(info.step_size)[0]) == pytest.approx(0.3, rel=1e-5)
    if kind == "fixed":
        np.testing.assert_allclose(np.asarray(results.parameters.matrix()), np.asarray(cholesky))


def test_warning_fires_on_a_failing_setup_and_is_recorded():
    """A step size pinned far too large for the target's scale: the run warns, names the problem and records it."""
    tuner = mv.adaptation.speed_measure(mv.kernels.hmc, badly_scaled, initial_step_size=0.1, num_integration_steps=5)
    positions = MEAN + SD * jax.random.normal(jax.random.key(0), (8, 4))
    with pytest.warns(mv.adaptation.AdaptationWarning, match="acceptance rate .* far from the target 0.65") as record:
        results, _ = tuner.run(jax.random.key(1), positions, 40)
    assert issubclass(record[0].category, UserWarning)
    assert results.problems and any("acceptance" in problem for problem in results.problems)


def test_no_warning_on_a_healthy_run_and_none_under_jit():
    tuner = mv.adaptation.dual_averaging(mv.kernels.mala, gaussian)
    positions = jax.random.normal(jax.random.key(0), (16, 3))
    results, _ = tuner.run(jax.random.key(1), positions, 300)  # filterwarnings=error: a warning fails this test
    assert results.problems == ()
    # Inside a user's jit the results are traced: no check, no warning, nothing recorded.
    failing = mv.adaptation.fixed(mv.kernels.mala, gaussian, step_size=50.0)
    results = jax.jit(lambda key: failing.run(key, positions, 20)[0])(jax.random.key(0))
    assert results.problems == ()


def test_adaptation_problems_names_each_failure():
    steps = 8
    fields = dict(acceptance_rate=jnp.full((steps, 2), 0.55), is_divergent=jnp.zeros((steps, 2), bool),
                  beta=jnp.full((steps,), 100.0), objective=jnp.full((steps,), jnp.nan),
                  gradient_is_finite=jnp.zeros((steps,), bool))
    Info = namedtuple("Info", fields)
    problems = mv.adaptation.adaptation_problems(Info(**fields), 0.55, beta_bounds=(1e-3, 100.0))
    assert len(problems) == 3
    assert "upper bound" in problems[0] and "objective" in problems[1] and "gradient" in problems[2]
    divergent = Info(**{**fields, "beta": jnp.ones(steps), "objective": jnp.zeros(steps),
                        "gradient_is_finite": jnp.ones(steps, bool), "is_divergent": jnp.ones((steps, 2), bool)})
    assert "diverged" in mv.adaptation.adaptation_problems(divergent, 0.55, beta_bounds=(1e-3, 100.0))[0]


def _assert_moments(positions, mean, sd):
    """Mean and sd within 5 Monte Carlo standard errors (ESS from BlackJAX's diagnostics)."""
    diagnostics = mv.evaluate.chain_diagnostics(positions)
    ess = np.asarray(diagnostics.effective_sample_size)
    draws = np.asarray(positions).reshape(-1, positions.shape[-1])
    mean_error = np.abs(draws.mean(0) - np.asarray(mean))
    np.testing.assert_array_less(mean_error, 5 * np.asarray(sd) / np.sqrt(ess))
    # sd: the standard error of a sample sd is about sd / sqrt(2 ESS) for a normal (a bit more for a half-normal).
    sd_error = np.abs(draws.std(0) - np.asarray(sd))
    np.testing.assert_array_less(sd_error, 5 * np.asarray(sd) / np.sqrt(2 * ess) * 1.5)
    # Gelman and Rubin's classic bar: with a few effective draws per chain (32 short chains) R-hat's own noise is
    # several hundredths.
    assert np.all(np.asarray(diagnostics.potential_scale_reduction) < 1.1)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["mala", "hmc"])
def test_badly_scaled_target_under_default_settings(algorithm):
    """Posterior sds 0.01-0.05 and every option at its default: the run reaches its target acceptance without a
    warning and the draws have the right moments. HMC: the speed measure wrapped with the dual-averaged step size,
    the rule docs/kernels.md recommends for a standalone user (the bare paper's rule stalls above its target)."""
    positions = MEAN + 0.5 * SD * jax.random.normal(jax.random.key(0), (32, 4))
    if algorithm == "mala":
        tuner = mv.adaptation.speed_measure(mv.kernels.mala, badly_scaled)
    else:
        tuner = mv.adaptation.with_dual_averaged_step_size(
            mv.adaptation.speed_measure(mv.kernels.hmc, badly_scaled, num_integration_steps=5))
    results, info = tuner.run(jax.random.key(1), positions, 1000)  # a warning would fail this test
    tail = np.asarray(info.acceptance_rate[-250:]).mean()
    # 250 steps x 32 chains: the acceptance's Monte Carlo sd is below 0.01; the tuners' noise leaves 0.05.
    assert abs(tail - tuner.target_acceptance_rate) < 0.05
    positions, sample_info = tuner.sample(jax.random.key(2), results, 500)
    accepted = float(sample_info.acceptance_rate.mean())
    if algorithm == "mala":
        assert abs(accepted - tuner.target_acceptance_rate) < 0.07
    else:
        # Dual averaging's averaged step (the tuned one) is shorter than its iterates and accepts more than the
        # target (0.85 here), as Stan's does; never less.
        assert tuner.target_acceptance_rate - 0.07 < accepted < 0.95
    _assert_moments(positions, MEAN, SD)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["mala", "hmc"])
def test_target_that_is_minus_infinity_on_half_the_space(algorithm):
    """Half-normals on z > 0 under default settings: proposals into z <= 0 are rejections that pull the step size
    down (before the fix, h grew until nothing was accepted); the run tunes to its target acceptance and samples
    the right moments. The rejections are counted as divergences and the warning says so (and what to try)."""
    options = {"num_integration_steps": 5} if algorithm == "hmc" else {}
    tuner = mv.adaptation.speed_measure(getattr(mv.kernels, algorithm), half_normal, **options)
    with pytest.warns(mv.adaptation.AdaptationWarning, match="outside the support") as record:
        results, info = tuner.run(jax.random.key(1), jnp.ones((32, 4)), 1000)
    assert len(results.problems) == 1 and "diverged" in results.problems[0], results.problems
    assert len(record) == 1
    assert abs(float(info.acceptance_rate[-250:].mean()) - tuner.target_acceptance_rate) < 0.05
    assert float(info.step_size[-1]) < 2.0  # not grown without bound
    with pytest.warns(mv.adaptation.AdaptationWarning, match="diverged .* leave its support"):
        positions, _ = tuner.sample(jax.random.key(2), results, 500)  # the tuned kernel's rejections say so too
    assert np.all(np.asarray(positions) > 0)
    mean, sd = np.sqrt(2 / np.pi), np.sqrt(1 - 2 / np.pi)
    _assert_moments(positions, jnp.full(4, mean), jnp.full(4, sd))


def test_sample_warns_when_the_tuned_kernel_does_not_mix():
    """A kernel that accepts nearly everything but barely moves passes run's acceptance check; sample sees that the
    chains, started far apart, still disagree (R-hat), and says so; a healthy kernel draws without a warning."""
    import warnings

    logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)  # noqa: E731
    tuner = mv.adaptation.fixed(mv.kernels.mala, logdensity_fn, step_size=1e-3)
    starts = jnp.linspace(-5.0, 5.0, 8)[:, None] * jnp.ones((8, 2))
    results, _ = tuner.run(jax.random.key(0), starts, 1)
    with pytest.warns(mv.adaptation.AdaptationWarning, match=r"chains disagree \(largest R-hat"):
        tuner.sample(jax.random.key(1), results, 50)
    healthy = mv.adaptation.fixed(mv.kernels.mala, logdensity_fn, step_size=1.0)
    results, _ = healthy.run(jax.random.key(0), jax.random.normal(jax.random.key(2), (8, 2)), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mv.adaptation.AdaptationWarning)
        healthy.sample(jax.random.key(1), results, 500)
    calm = mv.adaptation.SampleInfo(*(jnp.zeros((10, 4), bool),) * 3)
    assert mv.adaptation.sampling_problems(jnp.full((10, 4, 2), jnp.nan), calm) == ("some draws are not finite",)
