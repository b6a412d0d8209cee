"""Kernel inception distance (Binkowski et al., 2018, "Demystifying MMD GANs", section 4).

KID is the squared maximum mean discrepancy between two sets of features under the cubic polynomial kernel

    k(x, y) = (x^T y / dim + 1)^3,

estimated without bias on random subsets and averaged over them. For subsets ``X`` (size m) and ``Y`` (size n):

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
              - 2 sum_{i, j} k(x_i, y_j) / (m n).

The estimator's expectation is the population MMD^2, so it is about zero (and can be negative) when both sets
come from one distribution.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mcmcvae.types import Array, ArrayLike, PRNGKey

__all__ = ["kid", "polynomial_kernel", "unbiased_mmd2"]

_HIGHEST = jax.lax.Precision.HIGHEST  # MMD^2 is a small difference of O(1) means: keep full float32 products


def polynomial_kernel(x: Array, y: Array) -> Array:
    """Gram matrix of ``k(x, y) = (x^T y / dim + 1)^3`` between the rows of ``x`` (m, d) and ``y`` (n, d)."""
    return (jnp.matmul(x, y.T, precision=_HIGHEST) / x.shape[-1] + 1.0) ** 3


def _mean_off_diagonal(gram: Array) -> Array:
    m = gram.shape[0]
    return (jnp.sum(gram) - jnp.sum(jnp.diagonal(gram))) / (m * (m - 1))


def unbiased_mmd2(features_a: ArrayLike, features_b: ArrayLike) -> Array:
    """Unbiased estimate of MMD^2 under the KID polynomial kernel between two feature sets.

    Parameters
    ----------
    features_a : array_like, shape (m, d)
    features_b : array_like, shape (n, d)
        ``m, n >= 2``.

    Returns
    -------
    Array, shape ()
        ``mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean_{i, j} k(a_i, b_j)``.

    Examples
    --------
    >>> import jax
    >>> a = jax.random.normal(jax.random.key(0), (100, 8))
    >>> b = jax.random.normal(jax.random.key(1), (120, 8)) + 1.0
    >>> bool(unbiased_mmd2(a, b) > 0)
    True
    """
    a, b = _check_features(features_a, features_b)
    return _unbiased_mmd2(a, b)


@jax.jit
def _unbiased_mmd2(a: Array, b: Array) -> Array:
    return (
        _mean_off_diagonal(polynomial_kernel(a, a))
        + _mean_off_diagonal(polynomial_kernel(b, b))
        - 2.0 * jnp.mean(polynomial_kernel(a, b))
    )


def _check_features(features_a: ArrayLike, features_b: ArrayLike) -> tuple[Array, Array]:
    a, b = jnp.asarray(features_a), jnp.asarray(features_b)
    for name, value in (("features_a", a), ("features_b", b)):
        if value.ndim != 2:
            raise ValueError(f"{name} must have shape (n, dim), got shape {value.shape}")
        if value.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 rows for the unbiased estimate, got {value.shape[0]}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b differ in dimension: {a.shape[1]} and {b.shape[1]}")
    dtype = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    return a.astype(dtype), b.astype(dtype)


@functools.partial(jax.jit, static_argnames=("num_subsets", "subset_size"))
def _kid(rng_key: PRNGKey, a: Array, b: Array, num_subsets: int, subset_size: int) -> tuple[Array, Array]:
    def one_subset(key):
        key_a, key_b = jax.random.split(key)
        subset_a = a[jax.random.choice(key_a, a.shape[0], (subset_size,), replace=False)]
        subset_b = b[jax.random.choice(key_b, b.shape[0], (subset_size,), replace=False)]
        return _unbiased_mmd2(subset_a, subset_b)

    # One subset at a time: three (subset_size, subset_size) Gram matrices, not num_subsets of them.
    mmd2s = jax.lax.map(one_subset, jax.random.split(rng_key, num_subsets))
    return jnp.mean(mmd2s), jnp.std(mmd2s)


def kid(
    features_a: ArrayLike,
    features_b: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    rng_key: PRNGKey | None = None,
) -> tuple[Array, Array]:
    """Kernel inception distance between two sets of features: mean and standard deviation over subsets.

    Each of ``num_subsets`` rounds draws ``subset_size`` rows of ``features_a`` and, independently,
    ``subset_size`` rows of ``features_b``, each without replacement, and computes the unbiased MMD^2 of
    :func:`unbiased_mmd2` with the kernel ``(x^T y / dim + 1)^3``. ``subset_size`` is capped at the smaller set
    size (so with both sets smaller than ``subset_size`` every round sees every row and the std is 0).

    The function is pure and can be jitted with ``num_subsets`` and ``subset_size`` static.

    Parameters
    ----------
    features_a, features_b : array_like, shapes (n_a, dim) and (n_b, dim)
        E.g. :func:`mcmcvae.evaluate.inception_features` of real and generated images.
    num_subsets : int, default 100
    subset_size : int, default 1000
    rng_key : jax.random.key, optional
        Draws the subsets; ``None`` means ``jax.random.key(0)``, so that repeated evaluations agree.

    Returns
    -------
    mean : Array, shape ()
        KID, the mean of the subset estimates (often reported times 1000).
    std : Array, shape ()
        Their standard deviation (``ddof=0``), the spread of one subset estimate; subsets overlap, so it is not
        a standard error of ``mean``.

    Examples
    --------
    >>> import jax
    >>> a = jax.random.normal(jax.random.key(0), (500, 16))
    >>> b = jax.random.normal(jax.random.key(1), (500, 16)) + 0.5
    >>> mean, std = kid(a, b, num_subsets=10, subset_size=200)
    >>> bool(mean > 3 * std)
    True
    """
    a, b = _check_features(features_a, features_b)
    if int(num_subsets) != num_subsets or num_subsets < 1:
        raise ValueError(f"num_subsets must be a positive integer, got {num_subsets!r}")
    if int(subset_size) != subset_size or subset_size < 2:
        raise ValueError(f"subset_size must be an integer of at least 2, got {subset_size!r}")
    subset_size = min(int(subset_size), a.shape[0], b.shape[0])
    if rng_key is None:
        rng_key = jax.random.key(0)
    return _kid(rng_key, a, b, num_subsets=int(num_subsets), subset_size=subset_size)
