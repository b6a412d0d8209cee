"""The speed measure's HMC entropy with the exact log-det term: the expectation of the stochastic one, in value
and in gradient, on a non-Gaussian target; ``log_det="auto"`` picks exact for small dimensions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
import importlib

sm = importlib.import_module("mcmcvae.adaptation.speed_measure")  # the module (the package exports the function)


def _logdensity(z):  # non-Gaussian (the Hessian varies with z), correlated
    return -0.5 * jnp.sum(z**2 / jnp.array([0.5, 1.0, 2.0, 0.7])) - 0.1 * jnp.sum(z**4) - 0.3 * z[0] * z[1]


def _objective(log_det):
    return mv.adaptation.speed_measure(mv.kernels.hmc, _logdensity, num_integration_steps=3, log_det=log_det,
                                       preconditioner="lower_triangular", initial_step_size=0.4)


def test_exact_entropy_is_the_stochastic_entropys_expectation_in_value_and_gradient():
    positions = jax.random.normal(jax.random.key(0), (8, 4))
    exact, stochastic = _objective("exact"), _objective("stochastic")
    chains = exact.init_chains(positions)
    params = sm.from_preconditioner(mv.kernels.Preconditioner.lower_triangular(4, step_size=0.4))
    beta = jnp.float32(1.0)

    def entropy(tuner, params, key):  # the chains' mean entropy for the same kernel noise (key)
        _, aux = tuner.objective(sm.to_preconditioner(params), key, chains, beta)
        return jnp.mean(aux.entropy)

    def value_and_grad(tuner, index):
        return jax.value_and_grad(lambda p: entropy(tuner, p, jax.random.key(index)))(params)

    # Paired by key: the same key gives both the same kernel noise (so the same midpoints), and the stochastic one
    # its own roulette and probes on top; their difference has mean zero if exact is stochastic's expectation.
    num_draws = 1000
    indices = jnp.arange(num_draws)
    exact_values, exact_grads = jax.vmap(lambda i: value_and_grad(exact, i))(indices)
    values, grads = jax.vmap(lambda i: value_and_grad(stochastic, i))(indices)
    for sample, reference in [(values, exact_values), (grads.log_step_size, exact_grads.log_step_size),
                              (grads.scale[:, 1, 0], exact_grads.scale[:, 1, 0])]:
        difference = np.asarray(sample, np.float64) - np.asarray(reference, np.float64)
        standard_error = difference.std(ddof=1) / np.sqrt(num_draws)
        assert standard_error > 0
        assert abs(difference.mean()) < 4 * standard_error, (difference.mean(), standard_error)


@pytest.mark.parametrize("dim,expected", [(4, True), (sm.EXACT_LOG_DET_MAX_DIM + 1, False)])
def test_auto_is_exact_in_small_dimensions(dim, expected):
    precision = jnp.diag(1.0 / jnp.linspace(1.0, 2.0, dim)) + 0.1 * (jnp.ones((dim, dim)) - jnp.eye(dim))
    tuner = mv.adaptation.speed_measure(mv.kernels.hmc, lambda z: -0.5 * z @ precision @ z,
                                        num_integration_steps=2, log_det="auto", initial_step_size=0.3)
    chains = tuner.init_chains(jnp.ones((2, dim)))
    precond = mv.kernels.Preconditioner.diagonal(dim, step_size=0.3)
    # the exact term is deterministic: two keys give the same entropy; the roulette's differ
    entropies = [jnp.mean(tuner.objective(precond, jax.random.key(k), chains, 1.0)[1].log_det_residual)
                 for k in (0, 1)]
    # for a Gaussian A = (L^2 - 1)/6 h^2 Sigma^-1 exactly, C = I: log det(I - A) = log det(I - 0.5 * 0.09 P)
    if expected:
        assert float(entropies[0]) == float(entropies[1])
        np.testing.assert_allclose(entropies[0], np.linalg.slogdet(np.eye(dim) - 0.045 * np.asarray(precision))[1],
                                   rtol=1e-5)
    else:
        assert float(entropies[0]) != float(entropies[1])


def test_log_det_option_is_checked():
    with pytest.raises(ValueError, match="log_det must be one of"):
        mv.adaptation.speed_measure(mv.kernels.hmc, num_integration_steps=2, log_det="exactly")


def test_exact_objective_gradient_equals_finite_differences():
    """With the exact log-det term the objective is a deterministic function of (h, C) for fixed noise, and on a
    Gaussian (constant Hessian, so holding the midpoint fixed loses nothing) its gradient is that function's
    derivative; the stochastic one matches only on average (test_speed_measure)."""
    with jax.enable_x64(True):
        def logdensity(z):
            return -0.5 * jnp.sum(z**2 / jnp.array([0.5, 1.0, 2.0])) - 0.4 * z[0] * z[2]

        tuner = mv.adaptation.speed_measure(mv.kernels.hmc, logdensity, num_integration_steps=3, log_det="exact",
                                            preconditioner="lower_triangular")
        chains = tuner.init_chains(jax.random.normal(jax.random.key(0), (6, 3), jnp.float64))
        precond = mv.kernels.Preconditioner.lower_triangular(3, step_size=0.4, dtype=jnp.float64)
        params = mv.adaptation.from_preconditioner(precond)

        def value(p):
            return tuner.objective(mv.adaptation.to_preconditioner(p), jax.random.key(2), chains, 2.0)[0]

        gradient = jax.grad(value)(params)
        eps = 1e-6
        for field in ("log_step_size", "scale"):
            direction = jax.random.normal(jax.random.key(3), jnp.shape(getattr(params, field)), jnp.float64)
            if field == "scale":
                direction = jnp.tril(direction)
            plus = params._replace(**{field: getattr(params, field) + eps * direction})
            minus = params._replace(**{field: getattr(params, field) - eps * direction})
            finite_difference = (value(plus) - value(minus)) / (2 * eps)
            np.testing.assert_allclose(jnp.sum(getattr(gradient, field) * direction), finite_difference, rtol=1e-6)
