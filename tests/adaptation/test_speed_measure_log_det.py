"""The speed measure's HMC entropy with the exact log-det term: the expectation of the stochastic one, in value
and in gradient, on a non-Gaussian target; ``log_det="auto"`` picks exact for small dimensions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
import importlib

from mcmcvae.adaptation import logdet as logdet_module

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


@pytest.mark.parametrize("kind", ["diagonal", "lower_triangular"])
def test_roulette_surrogate_from_forward_products_equals_the_reverse_mode_surrogate(monkeypatch, kind):
    """The roulette's surrogate gradient in ``(h, C)`` is built from forward products (``H C p``, ``H C n``); the
    objective's value and gradient equal those of the generic surrogate (``log_det_identity_minus`` differentiating
    through the product ``A p``) for the same keys, to float rounding."""
    dim = 4
    adapt = mv.adaptation.speed_measure(mv.kernels.hmc, _logdensity, num_integration_steps=3,
                                        log_det="stochastic", preconditioner=kind)
    chains = adapt.init_chains(jax.random.normal(jax.random.key(0), (8, dim)))
    scale = jnp.array([0.9, 1.1, 0.8, 1.2])
    if kind == "lower_triangular":
        scale = jnp.diag(scale) + 0.1 * jnp.tril(jax.random.normal(jax.random.key(5), (dim, dim)), -1)
    params = mv.kernels.Preconditioner(jnp.log(jnp.float32(0.4)), scale)

    def evaluate():
        def objective(log_step_size, scale):
            value, aux = adapt.objective(mv.kernels.Preconditioner(log_step_size, scale), jax.random.key(3),
                                         chains, jnp.float32(1.0))
            return value, aux

        def log_det_term(log_step_size, scale):
            return jnp.mean(objective(log_step_size, scale)[1].log_det_residual)

        value_and_grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
        (value, aux), grads = jax.jit(value_and_grads)(params.log_step_size, params.scale)
        log_det_grads = jax.jit(jax.grad(log_det_term, argnums=(0, 1)))(params.log_step_size, params.scale)
        return value, aux, grads, log_det_grads

    new = evaluate()
    original = logdet_module.log_det_identity_minus

    def generic(probe, num_terms, matvec_fn, params, *, differentiable_surrogate, **options):
        assert differentiable_surrogate is False  # the speed measure asks for the forward-only path
        estimate = original(probe, num_terms, matvec_fn, params, **options)  # differentiates through A p
        zero = jnp.zeros_like(probe)  # no structured surrogate on top of the generic one
        return estimate._replace(neumann_vector=zero, probe_image=zero, neumann_image=zero)

    monkeypatch.setattr(logdet_module, "log_det_identity_minus", generic)
    old = evaluate()

    value, aux, grads, log_det_grads = new
    old_value, old_aux, old_grads, old_log_det_grads = old
    assert 0 < int(jnp.sum(aux.log_det_residual != 0.0))  # the roulette's term is there for some chains
    np.testing.assert_allclose(value, old_value, rtol=1e-6)
    np.testing.assert_allclose(aux.log_det_residual, old_aux.log_det_residual, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(aux.spectral_radius, old_aux.spectral_radius, rtol=1e-6)
    for got, want in zip(log_det_grads, old_log_det_grads):
        assert float(jnp.max(jnp.abs(want))) > 0  # the term has a gradient in h and in C
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * float(jnp.max(jnp.abs(want))))
    for got, want in zip(grads, old_grads):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * float(jnp.max(jnp.abs(want))))
    if kind == "lower_triangular":  # the strictly lower part is learnt too
        assert float(jnp.max(jnp.abs(jnp.tril(log_det_grads[1], -1)))) > 0


@pytest.mark.parametrize("kind", ["diagonal", "lower_triangular"])
def test_exact_term_from_forward_products_equals_the_reverse_mode_exact_term(monkeypatch, kind):
    """The exact term's ``A`` is assembled from ``H C`` taken forward (no reverse pass through its ``d``
    Hessian-vector products). On a Gaussian target ``H`` is the known precision, so the generic exact term,
    differentiating through ``A = c h^2 C^T H C`` itself, is the reference: value and gradient in ``(h, C)``
    agree to float rounding for the same keys."""
    dim = 4
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    precision = jnp.asarray((q * np.array([0.5, 1.0, 2.0, 3.0])) @ q.T, jnp.float32)
    adapt = mv.adaptation.speed_measure(mv.kernels.hmc, lambda z: -0.5 * z @ (precision @ z),
                                        num_integration_steps=3, log_det="exact", preconditioner=kind)
    chains = adapt.init_chains(jax.random.normal(jax.random.key(0), (8, dim)))
    scale = jnp.array([0.9, 1.1, 0.8, 1.2])
    if kind == "lower_triangular":
        scale = jnp.diag(scale) + 0.1 * jnp.tril(jax.random.normal(jax.random.key(5), (dim, dim)), -1)
    log_step_size = jnp.log(jnp.float32(0.4))
    curvature = (3**2 - 1) / 6

    def evaluate():
        def log_det_term(log_step_size, scale):
            _, aux = adapt.objective(mv.kernels.Preconditioner(log_step_size, scale), jax.random.key(3), chains,
                                     jnp.float32(1.0))
            return jnp.mean(aux.log_det_residual), aux

        return jax.jit(jax.value_and_grad(log_det_term, argnums=(0, 1), has_aux=True))(log_step_size, scale)

    new = evaluate()
    original = logdet_module.exact_log_det_identity_minus

    def generic(matvec_fn, params, dim):
        precond = params[0]  # the differentiable preconditioner; the fixed H C is ignored

        def matvec(precond, v):
            return curvature * precond.step_size**2 * precond.apply_transpose(precision @ precond.apply(v))

        return original(matvec, precond, dim)

    monkeypatch.setattr(logdet_module, "exact_log_det_identity_minus", generic)
    old = evaluate()

    (value, aux), grads = new
    (old_value, old_aux), old_grads = old
    assert bool(jnp.all(aux.log_det_residual != 0.0))
    np.testing.assert_allclose(value, old_value, rtol=1e-5)
    np.testing.assert_allclose(aux.spectral_radius, old_aux.spectral_radius, rtol=1e-5)
    for got, want in zip(grads, old_grads):
        assert float(jnp.max(jnp.abs(want))) > 0
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * float(jnp.max(jnp.abs(want))))
    if kind == "lower_triangular":
        assert float(jnp.max(jnp.abs(jnp.tril(grads[1], -1)))) > 0
