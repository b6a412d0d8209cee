"""KID: the unbiased MMD^2 estimator against direct sums and exact Gaussian values, and the subset average."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv

# The implementation lives in `mmd.py`, so no submodule can shadow the public function `kid`.
kid_module = importlib.import_module("mcmcvae.evaluate.mmd")
kid = kid_module.kid
polynomial_kernel = kid_module.polynomial_kernel
unbiased_mmd2 = kid_module.unbiased_mmd2


def test_public_name_is_the_function():
    assert mv.evaluate.kid is kid_module.kid


def _numpy_unbiased_mmd2(x, y):
    """The estimator written as explicit double sums, in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dim = x.shape[1]

    def k(u, v):
        return (u @ v / dim + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def _exact_expected_kernel(mean_a, mean_b):
    """E k(x, y) for independent x ~ N(mean_a, I), y ~ N(mean_b, I) under k(x, y) = (x^T y / d + 1)^3.

    u = x^T y is a sum of independent products z_i = x_i y_i, whose first three moments are known in closed
    form; the cumulants of u add up over coordinates, and E (1 + u/d)^3 needs only E u, E u^2 and E u^3.
    """
    a, b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    dim = a.size
    ez, ez2, ez3 = a * b, (1 + a**2) * (1 + b**2), (a**3 + 3 * a) * (b**3 + 3 * b)
    k1 = ez.sum()
    k2 = (ez2 - ez**2).sum()
    k3 = (ez3 - 3 * ez * ez2 + 2 * ez**3).sum()
    eu, eu2, eu3 = k1, k2 + k1**2, k3 + 3 * k1 * k2 + k1**3
    return 1 + 3 * eu / dim + 3 * eu2 / dim**2 + eu3 / dim**3


def test_polynomial_kernel_matches_definition():
    x = jax.random.normal(jax.random.key(0), (4, 6))
    y = jax.random.normal(jax.random.key(1), (3, 6))
    expected = (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / 6 + 1) ** 3
    np.testing.assert_allclose(polynomial_kernel(x, y), expected, rtol=1e-5)


@pytest.mark.parametrize("m, n", [(7, 5), (2, 2), (6, 6)])
def test_unbiased_mmd2_matches_direct_double_sums(m, n):
    x = jax.random.normal(jax.random.key(2), (m, 4))
    y = jax.random.normal(jax.random.key(3), (n, 4)) + 0.5
    np.testing.assert_allclose(unbiased_mmd2(x, y), _numpy_unbiased_mmd2(x, y), rtol=1e-5, atol=1e-6)


def test_unbiased_mmd2_is_unbiased_for_gaussians():
    # The estimator's mean over independent data sets must reach the exact population MMD^2; a V-statistic
    # (diagonal terms kept) would be off by about 0.39 here, some 30 standard errors.
    dim, m, n, num_repeats = 8, 60, 40, 400
    mean_a, mean_b = np.zeros(dim), np.linspace(0.0, 0.6, dim)
    exact = (
        _exact_expected_kernel(mean_a, mean_a)
        + _exact_expected_kernel(mean_b, mean_b)
        - 2 * _exact_expected_kernel(mean_a, mean_b)
    )

    def one_estimate(key):
        key_a, key_b = jax.random.split(key)
        a = jax.random.normal(key_a, (m, dim)) + mean_a
        b = jax.random.normal(key_b, (n, dim)) + mean_b
        return unbiased_mmd2(a, b)

    estimates = np.asarray(jax.jit(jax.vmap(one_estimate))(jax.random.split(jax.random.key(4), num_repeats)))
    standard_error = estimates.std(ddof=1) / np.sqrt(num_repeats)
    assert abs(estimates.mean() - exact) < 4 * standard_error, (estimates.mean(), exact, standard_error)


def _gaussian_features(key, num, dim, shift=0.0):
    return jax.random.normal(key, (num, dim)) + shift


def test_kid_of_same_distribution_is_about_zero():
    a = _gaussian_features(jax.random.key(5), 1000, 32)
    b = _gaussian_features(jax.random.key(6), 1000, 32)
    mean, std = kid(a, b, num_subsets=50, subset_size=400, rng_key=jax.random.key(7))
    # A biased (V-statistic) estimate would sit near +0.05 here, about four times the subset spread.
    assert std > 0
    assert abs(float(mean)) < float(std), (mean, std)


def test_kid_grows_monotonically_with_mean_shift():
    a = _gaussian_features(jax.random.key(8), 600, 32)
    shifts = [0.0, 0.1, 0.2, 0.4, 0.8]
    key_b, key_subsets = jax.random.key(9), jax.random.key(10)
    results = [
        kid(a, _gaussian_features(key_b, 600, 32, s), num_subsets=20, subset_size=300, rng_key=key_subsets)
        for s in shifts
    ]
    means = [float(mean) for mean, _ in results]
    assert all(lo < hi for lo, hi in zip(means, means[1:])), means
    for shift, (mean, std) in zip(shifts, results):
        if shift >= 0.2:
            assert mean > 3 * std, (shift, mean, std)


def test_kid_returns_scalar_arrays_and_is_deterministic_given_key():
    a = _gaussian_features(jax.random.key(11), 120, 8)
    b = _gaussian_features(jax.random.key(12), 100, 8, 0.3)
    mean, std = kid(a, b, num_subsets=5, subset_size=50)
    assert isinstance(mean, jax.Array) and mean.shape == () and mean.dtype == jnp.float32
    assert isinstance(std, jax.Array) and std.shape == () and std.dtype == jnp.float32
    again = kid(a, b, num_subsets=5, subset_size=50, rng_key=jax.random.key(0))
    np.testing.assert_array_equal(mean, again[0])  # None means key 0
    other = kid(a, b, num_subsets=5, subset_size=50, rng_key=jax.random.key(1))
    assert float(other[0]) != float(mean)


def test_kid_can_be_jitted():
    a = _gaussian_features(jax.random.key(13), 80, 8)
    b = _gaussian_features(jax.random.key(14), 90, 8, 0.5)
    jitted = jax.jit(kid, static_argnames=("num_subsets", "subset_size"))
    key = jax.random.key(3)
    np.testing.assert_allclose(
        jitted(a, b, num_subsets=4, subset_size=30, rng_key=key),
        kid(a, b, num_subsets=4, subset_size=30, rng_key=key),
        rtol=1e-6,
    )


def test_subset_size_is_capped_by_the_smaller_set():
    # With both sets no larger than the subset, every subset holds all rows: one value, no spread.
    a = _gaussian_features(jax.random.key(15), 30, 8)
    b = _gaussian_features(jax.random.key(16), 30, 8, 0.5)
    mean, std = kid(a, b, num_subsets=3, subset_size=1000)
    np.testing.assert_allclose(mean, unbiased_mmd2(a, b), rtol=1e-5)
    assert float(std) < 1e-5 * abs(float(mean)) + 1e-7


@pytest.mark.parametrize(
    "a_shape, b_shape, options, message",
    [
        ((10,), (10, 4), {}, "shape"),
        ((10, 4), (10, 5), {}, "dimension"),
        ((1, 4), (10, 4), {}, "at least 2"),
        ((10, 4), (10, 4), {"num_subsets": 0}, "num_subsets"),
        ((10, 4), (10, 4), {"subset_size": 1}, "subset_size"),
    ],
)
def test_kid_rejects_bad_input(a_shape, b_shape, options, message):
    with pytest.raises(ValueError, match=message):
        kid(jnp.ones(a_shape), jnp.ones(b_shape), **options)
