"""Russian-roulette log-determinants against exact values on small symmetric matrices.

Every matrix here is ``A = Q diag(lambda) Q^T`` with a random rotation ``Q`` and a known spectrum, so that
``log det(I - A) = sum log(1 - lambda)`` and the spectral radius are exact. Estimates are averaged over many
independent draws (probe and truncation); tolerances are multiples of the empirical standard error of that
average.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.adaptation import logdet

NUM_EXACT, CONTINUE = 2, 0.5
DIM, NUM_DRAWS = 8, 40_000  # one shape for every matrix: one compilation serves all the tests


def _symmetric(seed: int, eigenvalues) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return (q * np.asarray(eigenvalues)) @ q.T


def _matvec(a, v):
    return a @ v


def _truncation_and_probe(key):
    k_terms, k_probe = jax.random.split(key)
    num_terms = logdet.sample_num_terms(k_terms, NUM_EXACT, CONTINUE)
    return num_terms, jax.random.rademacher(k_probe, (DIM,), dtype=jnp.float32)


@jax.jit
def _draws(key, a):
    """``NUM_DRAWS`` independent single-probe estimates, each with its own roulette draw."""

    def one(k):
        num_terms, probe = _truncation_and_probe(k)
        return logdet.log_det_identity_minus(
            probe, num_terms, _matvec, a, num_exact_terms=NUM_EXACT, continue_probability=CONTINUE
        )

    return jax.vmap(one)(jax.random.split(key, NUM_DRAWS))


def test_weights_invert_the_truncation_law():
    survival = logdet.roulette_survival(12, NUM_EXACT, CONTINUE)
    weights = logdet.roulette_weights(12, NUM_EXACT, CONTINUE)
    np.testing.assert_allclose(weights * survival, 1.0, rtol=1e-6)
    np.testing.assert_allclose(weights, [1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])

    # The sampler's law is the one the weights assume: P(N >= k), binomial standard errors.
    num_draws = 200_000
    keys = jax.random.split(jax.random.key(0), num_draws)
    n = jax.vmap(lambda k: logdet.sample_num_terms(k, NUM_EXACT, CONTINUE))(keys)
    n = np.asarray(n)
    assert n.min() == NUM_EXACT
    for k in range(1, 9):
        p = float(survival[k - 1])
        empirical = np.mean(n >= k)
        assert abs(empirical - p) <= 4.5 * math.sqrt(p * (1 - p) / num_draws) + 1e-12, (k, empirical, p)


@pytest.mark.parametrize(
    "seed, eigenvalues",
    [
        (1, np.linspace(0.05, 0.6, DIM)),  # SPD, rho = 0.6
        (2, np.concatenate([np.linspace(-0.5, -0.1, 3), np.linspace(0.0, 0.65, DIM - 3)])),  # indefinite, rho = 0.65
        (3, np.full(DIM, 0.3)),
    ],
)
def test_roulette_estimate_is_unbiased(seed, eigenvalues):
    a = _symmetric(seed, eigenvalues)
    exact = float(np.sum(np.log1p(-np.asarray(eigenvalues))))
    est = _draws(jax.random.key(seed), jnp.asarray(a, jnp.float32))
    values = np.asarray(est.log_det, np.float64)
    assert np.all(np.asarray(est.converged))
    standard_error = values.std() / math.sqrt(values.size)
    assert abs(values.mean() - exact) < 4.0 * standard_error, (values.mean(), exact, standard_error)


def _tfp_geometric_cdf(x, probs):
    """The cdf of TFP's ``Geometric(probs)`` on ``{0, 1, ...}``: ``1 - (1 - probs)^(floor(x) + 1)`` for ``x >= 0``."""
    return np.where(x < 0, 0.0, 1.0 - (1.0 - probs) ** (np.floor(x) + 1))


def test_authors_code_weighting_is_biased_and_ours_is_not():
    """The weights ``1 / (1 - cdf(k - n_exact + 0.1))`` of the authors' code over-weight terms ``k >= n_exact``.

    Both weightings are applied to the same draws (probe ``w`` and truncation ``N``); the per-term traces
    ``w^T A^k w`` come from dense matrix powers, independent of the library's loop, and the library's estimate is
    checked to equal the unbiased weighting draw by draw.
    """
    k = np.arange(1, 16)
    paper_weights = 1.0 / (1.0 - _tfp_geometric_cdf(k - NUM_EXACT + 0.1, 1.0 - CONTINUE))
    ours = np.asarray(logdet.roulette_weights(15, NUM_EXACT, CONTINUE))
    np.testing.assert_allclose(paper_weights[: NUM_EXACT - 1], ours[: NUM_EXACT - 1])
    np.testing.assert_allclose(paper_weights[NUM_EXACT - 1 :], ours[NUM_EXACT - 1 :] / CONTINUE)

    eigenvalues = np.linspace(0.1, 0.6, DIM)
    a = _symmetric(4, eigenvalues)
    exact = float(np.sum(np.log1p(-eigenvalues)))
    key, max_terms = jax.random.key(4), 40
    n, probes = jax.vmap(_truncation_and_probe)(jax.random.split(key, NUM_DRAWS))
    n, probes = np.asarray(n), np.asarray(probes, np.float64)
    assert n.max() <= max_terms
    powers = [np.linalg.matrix_power(a, j) for j in range(1, max_terms + 1)]
    traces = np.stack([np.einsum("ni,ij,nj->n", probes, p, probes) for p in powers], 1)  # (draws, K)
    k = np.arange(1, max_terms + 1)
    kept = k[None, :] <= n[:, None]

    def estimate(weights):
        return -np.sum(np.where(kept, weights[None, :] * traces / k[None, :], 0.0), 1)

    unbiased = estimate(np.asarray(logdet.roulette_weights(max_terms, NUM_EXACT, CONTINUE), np.float64))
    paper = estimate(1.0 / (1.0 - _tfp_geometric_cdf(k - NUM_EXACT + 0.1, 1.0 - CONTINUE)))
    se = lambda x: x.std() / math.sqrt(x.size)  # noqa: E731
    assert abs(unbiased.mean() - exact) < 4.0 * se(unbiased)
    assert abs(paper.mean() - exact) > 10.0 * se(paper), (paper.mean(), exact, se(paper))

    # The library's loop computes the unbiased weighting, draw by draw (same keys, same probes and N).
    library = np.asarray(_draws(key, jnp.asarray(a, jnp.float32)).log_det)
    np.testing.assert_allclose(library, unbiased, rtol=1e-3, atol=1e-3)


def test_neumann_surrogate_gradient_is_unbiased():
    """``d/dtheta log det(I - A(theta))`` for ``A(theta) = D(theta) S D(theta)``, ``D = diag(exp theta)``."""
    dim = 6
    s = jnp.asarray(_symmetric(5, np.linspace(0.05, 0.5, dim)), jnp.float32)
    theta = jnp.asarray(np.random.default_rng(5).normal(0.0, 0.05, dim), jnp.float32)

    def matvec(t, v):
        scale = jnp.exp(t)
        return scale * (s @ (scale * v))

    def exact_log_det(t):
        scale = jnp.exp(t)
        return jnp.linalg.slogdet(jnp.eye(dim) - scale[:, None] * s * scale[None, :])[1]

    exact_grad = np.asarray(jax.grad(exact_log_det)(theta), np.float64)
    assert np.max(np.abs(np.linalg.eigvalsh(np.asarray(jax.vmap(lambda e: matvec(theta, e))(jnp.eye(dim)))))) < 0.6

    def one(k):
        k_terms, k_probe = jax.random.split(k)
        num_terms = logdet.sample_num_terms(k_terms, NUM_EXACT, CONTINUE)
        probe = jax.random.rademacher(k_probe, (dim,), dtype=jnp.float32)
        return jax.grad(lambda t: logdet.log_det_identity_minus(probe, num_terms, matvec, t).log_det)(theta)

    grads = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), 40_000)), np.float64)
    standard_error = grads.std(0) / math.sqrt(grads.shape[0])
    # Six components: 4.5 standard errors keeps the family-wise false-alarm rate below 1e-4.
    np.testing.assert_array_less(np.abs(grads.mean(0) - exact_grad), 4.5 * standard_error)
    # The test has power: the gradient of the first term alone (-tr(dA)) is far from the exact one.
    first_order = np.asarray(jax.grad(lambda t: -jnp.trace(jax.vmap(lambda e: matvec(t, e))(jnp.eye(dim))))(theta))
    assert np.max(np.abs(first_order - exact_grad) / standard_error) > 20


def test_power_iteration_estimates_the_spectral_radius():
    eigenvalues = np.concatenate([np.linspace(0.0, 0.3, DIM - 1), [0.8]])
    a = jnp.asarray(_symmetric(6, eigenvalues), jnp.float32)

    @jax.jit
    def radii(key):
        long = logdet.estimate_log_det(key, _matvec, a, DIM, num_probes=4, num_power_iterations=20)
        short = logdet.estimate_log_det(key, _matvec, a, DIM, num_power_iterations=3)
        return long.spectral_radius, short.spectral_radius

    long, short = radii(jax.random.key(6))
    assert abs(float(long) - 0.8) < 0.02
    assert float(short) <= 0.8 + 1e-5  # a Rayleigh quotient can only underestimate |lambda|_max


def test_penalty_is_zero_inside_and_shrinks_the_step_outside():
    """``A(h) = h^2 B``: below the threshold neither the penalty nor its gradient act; above it the penalty is
    positive and its gradient in ``log h`` is positive, so ascent on ``objective - penalty`` lowers ``h``."""
    b = jnp.asarray(_symmetric(7, np.linspace(0.1, 1.0, 5)), jnp.float32)
    probe = jnp.asarray([1.0, -1.0, 1.0, 1.0, -1.0])

    def penalty(log_h):
        matvec = lambda p, v: jnp.exp(2 * p) * (b @ v)  # noqa: E731
        est = logdet.log_det_identity_minus(probe, 2, matvec, log_h, num_power_iterations=30)
        return logdet.spectral_radius_penalty(est.spectral_radius, threshold=0.75), est

    penalty_and_grad = jax.jit(jax.value_and_grad(penalty, has_aux=True))

    for radius in (0.3, 0.7):
        log_h = jnp.asarray(0.5 * math.log(radius), jnp.float32)
        (value, est), grad = penalty_and_grad(log_h)
        assert abs(float(est.spectral_radius) - radius) < 1e-3
        assert float(value) == 0.0 and float(grad) == 0.0
    for radius in (0.8, 0.95):
        log_h = jnp.asarray(0.5 * math.log(radius), jnp.float32)
        (value, est), grad = penalty_and_grad(log_h)
        np.testing.assert_allclose(float(value), 1000.0 * (radius - 0.75) ** 2, rtol=1e-2)
        # d/dlog h of strength (rho - t)^2 with rho = h^2 * 1: 4 strength (rho - t) rho.
        np.testing.assert_allclose(float(grad), 4000.0 * (radius - 0.75) * radius, rtol=1e-2)


def test_divergent_series_is_dropped_with_finite_gradients():
    """Outside the unit disc the series' value and gradient are set to zero (the penalty must act alone)."""
    b = jnp.asarray(_symmetric(8, np.linspace(0.2, 1.0, 5)), jnp.float32)
    probe = jnp.ones(5)

    def value(log_h):
        est = logdet.log_det_identity_minus(probe, 60, lambda p, v: jnp.exp(2 * p) * (b @ v), log_h)
        return est.log_det + logdet.spectral_radius_penalty(est.spectral_radius), est

    (out, est), grad = jax.jit(jax.value_and_grad(value, has_aux=True))(jnp.asarray(math.log(4.0), jnp.float32))
    assert not bool(est.converged)
    assert float(est.log_det) == 0.0
    assert np.isfinite(float(out)) and np.isfinite(float(grad)) and float(grad) > 0


def test_radius_value_only_leaves_value_and_gradient_of_the_log_det_unchanged():
    """``differentiable_radius=False`` skips the reverse pass through ``A u``: the same log-det (value and
    gradient), the same radius value, no radius gradient, and ``radius_vector`` gives the radius back."""
    a = jnp.asarray(_symmetric(3, np.linspace(-0.5, 0.6, DIM)), jnp.float32)
    num_terms, probe = _truncation_and_probe(jax.random.key(7))

    def estimate(scale, differentiable_radius):
        return logdet.log_det_identity_minus(probe, num_terms, _matvec, scale * a, num_exact_terms=NUM_EXACT,
                                             continue_probability=CONTINUE,
                                             differentiable_radius=differentiable_radius)

    for scale in (0.5, 1.0):
        scale = jnp.float32(scale)
        full, fast = estimate(scale, True), estimate(scale, False)
        for name in ("log_det", "spectral_radius", "num_terms", "converged", "radius_vector"):
            np.testing.assert_allclose(getattr(fast, name), getattr(full, name), rtol=1e-6, atol=1e-7)
        grads = [jax.grad(lambda s, d=d: estimate(s, d).log_det)(scale) for d in (True, False)]
        np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6)
        assert float(jax.grad(lambda s: estimate(s, True).spectral_radius)(scale)) != 0.0
        assert float(jax.grad(lambda s: estimate(s, False).spectral_radius)(scale)) == 0.0
        u = fast.radius_vector
        np.testing.assert_allclose(jnp.linalg.norm(u), 1.0, rtol=1e-6)
        np.testing.assert_allclose(jnp.abs(u @ (scale * a) @ u), fast.spectral_radius, rtol=1e-6)


def test_fixed_surrogate_returns_the_surrogates_ingredients_and_leaves_the_value_unchanged():
    """``differentiable_surrogate=False`` takes no reverse pass: the same value, no gradient, and the held-fixed
    ``u``, ``A w`` (the loop's first product) and ``A u`` from which the generic gradient ``-u^T (dA) w`` follows."""
    a = jnp.asarray(_symmetric(3, np.linspace(-0.5, 0.6, DIM)), jnp.float32)
    num_terms, probe = _truncation_and_probe(jax.random.key(7))

    def estimate(scale, **options):
        return logdet.log_det_identity_minus(probe, num_terms, _matvec, scale * a, num_exact_terms=NUM_EXACT,
                                             continue_probability=CONTINUE, **options)

    for differentiable_radius in (True, False):
        for scale in (0.5, 1.0):
            scale = jnp.float32(scale)
            full = estimate(scale, differentiable_radius=differentiable_radius)
            fast = estimate(scale, differentiable_radius=differentiable_radius, differentiable_surrogate=False)
            assert bool(fast.converged)
            for name in ("log_det", "spectral_radius", "num_terms", "converged", "radius_vector"):
                np.testing.assert_allclose(getattr(fast, name), getattr(full, name), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(fast.probe_image, (scale * a) @ probe, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fast.neumann_image, (scale * a) @ fast.neumann_vector, rtol=1e-5, atol=1e-6)
            assert float(jax.grad(lambda s: estimate(s, differentiable_surrogate=False).log_det)(scale)) == 0.0
            generic = jax.grad(lambda s: estimate(s, differentiable_radius=differentiable_radius).log_det)(scale)
            assert float(generic) != 0.0
            # d/ds of -u^T (s a) w is -u^T a w = -u^T (A w) / s
            np.testing.assert_allclose(generic, -jnp.vdot(fast.neumann_vector, fast.probe_image) / scale, rtol=1e-5)
            radius_grad = jax.grad(lambda s: estimate(s, differentiable_radius=differentiable_radius,
                                                      differentiable_surrogate=False).spectral_radius)(scale)
            assert (float(radius_grad) != 0.0) == differentiable_radius


def test_fixed_surrogate_images_are_zero_where_the_series_diverges():
    a = jnp.asarray(_symmetric(3, np.linspace(-0.5, 1.5, DIM)), jnp.float32)  # rho(A) = 1.5
    num_terms, probe = _truncation_and_probe(jax.random.key(7))
    est = logdet.log_det_identity_minus(probe, num_terms, _matvec, a, num_exact_terms=NUM_EXACT,
                                        continue_probability=CONTINUE, num_power_iterations=40,
                                        differentiable_surrogate=False)
    assert not bool(est.converged)
    assert float(est.log_det) == 0.0
    assert float(jnp.max(jnp.abs(est.probe_image))) == 0.0 and float(jnp.max(jnp.abs(est.neumann_image))) == 0.0
