"""The exact log-det term for small dimensions: equal to the closed form, and the expectation (value and gradient)
of the Russian-roulette estimator it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.adaptation import logdet


def _symmetric(key, dim, spectral_radius):
    q, _ = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    eigenvalues = jnp.linspace(-0.5 * spectral_radius, spectral_radius, dim)
    return (q * eigenvalues) @ q.T


def _matvec(params, v):
    theta, b = params
    return theta * (b @ v)


def test_exact_log_det_equals_the_closed_form():
    b = _symmetric(jax.random.key(0), 6, 0.6)
    est = logdet.exact_log_det_identity_minus(_matvec, (jnp.float32(1.0), b), 6)
    sign, expected = np.linalg.slogdet(np.eye(6) - np.asarray(b, np.float64))
    assert sign > 0
    np.testing.assert_allclose(est.log_det, expected, rtol=1e-5)
    np.testing.assert_allclose(est.spectral_radius, 0.6, rtol=1e-5)
    assert bool(est.converged)


def test_exact_is_the_roulette_estimators_expectation_in_value_and_gradient():
    dim, num_draws = 5, 4000
    b = _symmetric(jax.random.key(1), dim, 0.5)
    theta = jnp.float32(1.0)

    def exact(theta):
        return logdet.exact_log_det_identity_minus(_matvec, (theta, b), dim).log_det

    def stochastic(theta, key):
        return logdet.estimate_log_det(key, _matvec, (theta, b), dim).log_det

    keys = jax.random.split(jax.random.key(2), num_draws)
    values, grads = jax.vmap(jax.value_and_grad(stochastic), in_axes=(None, 0))(theta, keys)
    exact_value, exact_grad = jax.value_and_grad(exact)(theta)
    # the estimator is unbiased, so its mean over independent draws lies within a few Monte Carlo standard errors
    for draws, target in ((values, exact_value), (grads, exact_grad)):
        draws = np.asarray(draws, np.float64)
        standard_error = draws.std(ddof=1) / np.sqrt(num_draws)
        assert abs(draws.mean() - float(target)) < 4 * standard_error, (draws.mean(), float(target), standard_error)
    # and the exact gradient is -tr((I - A)^{-1} dA/dtheta) with dA/dtheta = B
    closed_form = -np.trace(np.linalg.solve(np.eye(dim) - np.asarray(b, np.float64), np.asarray(b, np.float64)))
    np.testing.assert_allclose(exact_grad, closed_form, rtol=1e-4)


def test_exact_spectral_radius_gradient_is_the_eigenvalue_derivative():
    b = _symmetric(jax.random.key(3), 4, 0.8)
    radius = jax.grad(lambda t: logdet.exact_log_det_identity_minus(_matvec, (t, b), 4).spectral_radius)
    np.testing.assert_allclose(radius(jnp.float32(1.0)), 0.8, rtol=1e-4)  # rho(theta B) = 0.8 theta


@pytest.mark.parametrize("scale", [1.5, 2.5])
def test_outside_the_region_of_convergence_it_is_zero_and_says_so(scale):
    b = _symmetric(jax.random.key(4), 4, 0.8) * scale / 0.8  # rho = scale > 1
    est = logdet.exact_log_det_identity_minus(_matvec, (jnp.float32(1.0), b), 4)
    assert not bool(est.converged)
    assert float(est.log_det) == 0.0
    grad = jax.grad(lambda t: logdet.exact_log_det_identity_minus(_matvec, (t, b), 4).log_det)(jnp.float32(1.0))
    assert float(grad) == 0.0


def test_repeated_eigenvalues_and_non_finite_matrices_give_finite_gradients():
    grad = jax.grad(lambda t: logdet.exact_log_det_identity_minus(_matvec, (t, jnp.eye(3)), 3).log_det)
    np.testing.assert_allclose(grad(jnp.float32(0.3)), -3.0 / 0.7, rtol=1e-5)  # d/dt 3 log(1 - t)
    nan_matrix = jnp.full((3, 3), jnp.nan)
    est = logdet.exact_log_det_identity_minus(_matvec, (jnp.float32(1.0), nan_matrix), 3)
    assert not bool(est.converged) and float(est.log_det) == 0.0
