"""Stochastic ``log det(I - A)``: Hutchinson probes, a Russian-roulette power series and Neumann-series gradients.

The HMC entropy of section 4.5 of Hirt, Kreouzis and Dellaportas (2024) contains ``log|det(I - A)|`` with
``A = (L^2 - 1) / 6 h^2 C^T Hess U(q_mid) C``, a matrix that is only available through matrix-vector products.
For a spectral radius ``rho(A) < 1`` the power series

.. math::

    \\log \\det (I - A) = -\\sum_{k \\geq 1} \\operatorname{tr}(A^k) / k

converges, and each trace has the Hutchinson estimate ``w^T A^k w`` with ``E[w w^T] = I``. The series is cut at a
random number of terms ``N`` (the *Russian roulette*): the first ``num_exact_terms`` terms are always kept and every
further term is kept with probability ``continue_probability``, so that ``N = num_exact_terms + G`` with
``P(G >= j) = continue_probability^j``. Term ``k`` is weighted by ``1 / P(N >= k)``, which makes the truncated sum
unbiased for the whole series:

.. math::

    E\\Big[\\sum_{k=1}^{N} \\frac{t_k}{P(N \\geq k)}\\Big] = \\sum_{k \\geq 1} t_k .

The gradient follows the Neumann-series identity of Chen et al. (2019, "Residual flows"):

.. math::

    \\nabla_\\theta \\log\\det(I - A_\\theta) = -\\operatorname{tr}\\big((I - A)^{-1} \\nabla_\\theta A\\big)
    = -E_w\\Big[\\big(\\textstyle\\sum_{k \\geq 0} A^k w\\big)^T \\nabla_\\theta A\\, w\\Big],

estimated with the same roulette (the series vector ``u = sum_k A^k w / P(N >= k + 1)`` is held fixed with
``stop_gradient``) and implemented as the surrogate ``-u^T A_theta w`` whose gradient is unbiased. The series vectors
are computed without differentiating through the loop, so the cost of a gradient is that of two matrix-vector
products, whatever ``N`` is.

The same loop is a power iteration: its last vector gives a Rayleigh-quotient estimate of ``rho(A)``, used by
:func:`spectral_radius_penalty` to keep the series inside its region of convergence.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mcmcvae.types import Array, ArrayLike, PRNGKey

__all__ = [
    "LogDetEstimate",
    "roulette_weights",
    "roulette_survival",
    "sample_num_terms",
    "log_det_identity_minus",
    "estimate_log_det",
    "exact_log_det_identity_minus",
    "spectral_radius_penalty",
]

MatvecFn = Callable[[Any, Array], Array]


class LogDetEstimate(NamedTuple):
    """Result of :func:`log_det_identity_minus`.

    Attributes
    ----------
    log_det
        Unbiased estimate of ``log det(I - A)`` whose gradient is the unbiased Neumann-series gradient.
        Zero (value and gradient) where the series is outside its region of convergence, see ``converged``.
    spectral_radius
        ``|u^T A u|`` for the normalised last power-iteration vector ``u``; differentiable in the parameters of ``A``
        unless :func:`log_det_identity_minus` was asked for its value only.
    num_terms
        The roulette's number of series terms ``N``.
    converged
        Whether the power-iteration estimate of ``rho(A)`` was below one and the series finite.
    radius_vector
        ``u`` (held fixed; the zero vector where the iteration left the finite numbers).
    radius_image
        ``A u`` (held fixed), from which a caller that knows how ``A`` depends on its parameters can form a
        differentiable ``|u^T A u|`` without another product; ``None`` unless asked for
        (``differentiable_radius=False``).
    neumann_vector
        The Neumann-series vector ``u`` of the surrogate ``-u^T A w`` (held fixed); ``None`` unless asked for
        (``differentiable_surrogate=False``).
    probe_image, neumann_image
        ``A w`` and ``A u`` (held fixed, zero where the series did not converge), from which a caller that knows how
        ``A`` depends on its parameters forms the surrogate's gradient without a reverse pass through a product;
        ``None`` unless asked for (``differentiable_surrogate=False``).
    """

    log_det: Array
    spectral_radius: Array
    num_terms: Array
    converged: Array
    radius_vector: Array | None = None
    radius_image: Array | None = None
    neumann_vector: Array | None = None
    probe_image: Array | None = None
    neumann_image: Array | None = None


def roulette_survival(num_terms: int, num_exact_terms: int = 2, continue_probability: float = 0.5) -> Array:
    """``P(N >= k)``, ``k = 1, ..., num_terms``: one for the exact terms, then ``continue_probability^(k - n_exact)``.

    Parameters
    ----------
    num_terms
        How many terms to report.
    num_exact_terms
        Terms that are always kept (``N >= num_exact_terms``).
    continue_probability
        Probability of keeping each further term.

    Returns
    -------
    Array of shape ``(num_terms,)``.

    Examples
    --------
    >>> roulette_survival(4, num_exact_terms=2, continue_probability=0.5)
    Array([1.  , 1.  , 0.5 , 0.25], dtype=float32)
    """
    k = jnp.arange(1, num_terms + 1)
    return jnp.asarray(continue_probability, jnp.float32) ** jnp.maximum(k - num_exact_terms, 0)


def roulette_weights(num_terms: int, num_exact_terms: int = 2, continue_probability: float = 0.5) -> Array:
    """Unbiased Russian-roulette weights ``1 / P(N >= k)``, ``k = 1, ..., num_terms``.

    With ``N = num_exact_terms + G`` and ``P(G >= j) = continue_probability^j``,

    .. math::

        w_k = 1 / P(N \\geq k) = \\text{continue\\_probability}^{-\\max(k - n_\\text{exact}, 0)} .

    (Weighting by ``1 / (1 - F_G(k - n_exact + 0.1))`` with ``F_G`` the cdf of ``G``, as in the authors' public
    code, gives ``continue_probability^-(k - n_exact + 1)`` from ``k = n_exact`` on: every term from the last exact
    one onwards is over-weighted by ``1 / continue_probability``, so the estimate is biased.)

    Examples
    --------
    >>> roulette_weights(4, num_exact_terms=2, continue_probability=0.5)
    Array([1., 1., 2., 4.], dtype=float32)
    """
    return 1.0 / roulette_survival(num_terms, num_exact_terms, continue_probability)


def sample_num_terms(
    rng_key: PRNGKey,
    num_exact_terms: int = 2,
    continue_probability: float = 0.5,
    max_num_terms: int = 64,
) -> Array:
    """Draw the roulette's number of terms ``N = min(num_exact_terms + G, max_num_terms)``.

    ``G`` is geometric on ``{0, 1, ...}`` with ``P(G >= j) = continue_probability^j``, drawn by inversion as
    ``floor(log U / log continue_probability)``. The cap ``max_num_terms`` bounds the work; it changes nothing below
    it, so the estimate stays unbiased for the series truncated at ``max_num_terms`` terms (a remainder of at most
    ``d rho^K / (K (1 - rho))`` for ``K = max_num_terms``), and with the defaults it is reached with probability
    ``2^-62``.

    Returns
    -------
    ``int32`` scalar.
    """
    if not 0.0 < continue_probability < 1.0:
        raise ValueError(f"continue_probability must lie in (0, 1), got {continue_probability}")
    if num_exact_terms < 1:
        raise ValueError(f"num_exact_terms must be at least 1, got {num_exact_terms}")
    uniform = jax.random.uniform(rng_key, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    extra = jnp.floor(jnp.log(uniform) / jnp.log(continue_probability))
    extra = jnp.minimum(extra, max_num_terms)  # before the cast, so that a huge draw cannot overflow int32
    return jnp.minimum(num_exact_terms + extra.astype(jnp.int32), max_num_terms)


def log_det_identity_minus(
    probe: Array,
    num_terms: ArrayLike,
    matvec_fn: MatvecFn,
    params: Any,
    *,
    num_exact_terms: int = 2,
    continue_probability: float = 0.5,
    num_power_iterations: int = 4,
    differentiable_radius: bool = True,
    differentiable_surrogate: bool = True,
) -> LogDetEstimate:
    """One-probe Russian-roulette estimate of ``log det(I - A)`` with a Neumann-series surrogate gradient.

    .. math::

        \\widehat{\\log\\det}(I - A) = -\\sum_{k=1}^{N} \\frac{w^T A^k w}{k \\, P(N \\geq k)}, \\qquad
        \\text{surrogate} = -\\operatorname{sg}(u)^T A_\\theta w, \\quad
        u = \\sum_{k=0}^{N-1} \\frac{A^k w}{P(N \\geq k + 1)} .

    The returned ``log_det`` has the value of the first expression and the gradient of the second.

    Parameters
    ----------
    probe
        Hutchinson probe ``w`` of shape ``(d,)`` with ``E[w w^T] = I`` (Rademacher or standard normal).
    num_terms
        The roulette's ``N`` (from :func:`sample_num_terms`; may be shared by many probes).
    matvec_fn
        ``matvec_fn(params, v) -> A v`` for a **symmetric** ``A``. It must depend on anything that is differentiated
        only through ``params``: the loop runs on ``stop_gradient(params)``.
    params
        Pytree of the parameters of ``A``.
    num_exact_terms, continue_probability
        The roulette's law (see :func:`roulette_weights`).
    num_power_iterations
        The loop runs ``max(N, num_power_iterations)`` matrix-vector products; the last vector's Rayleigh quotient
        estimates ``rho(A)``.
    differentiable_radius
        ``True`` (default): ``spectral_radius`` is differentiable in ``params`` (its product ``A u`` is taken with
        the surrogate's, through reverse mode). ``False``: the same value with no gradient, its product taken
        forward only and returned as ``radius_image``, from which a caller that knows the structure of ``A``
        builds the gradient it needs without a reverse pass through the product (as the speed measure does).
    differentiable_surrogate
        ``True`` (default): ``log_det`` carries the surrogate's gradient in ``params`` (the product ``A w`` through
        reverse mode). ``False``: the same value with no gradient, and the surrogate's ingredients returned held
        fixed (``neumann_vector`` ``u``, ``probe_image`` ``A w`` from the loop's first product, ``neumann_image``
        ``A u`` from one more forward product), from which a caller that knows the structure of ``A`` builds the
        gradient of ``-u^T A w`` (as the speed measure does).

    Returns
    -------
    LogDetEstimate

    Examples
    --------
    With every term exact (``num_exact_terms = N``) the estimate is the truncated series itself:

    >>> A = 0.3 * jnp.eye(3)
    >>> est = log_det_identity_minus(jnp.ones(3), 40, lambda a, v: a @ v, A, num_exact_terms=40)
    >>> bool(jnp.allclose(est.log_det, 3 * jnp.log(0.7), atol=1e-5))
    True
    >>> round(float(est.spectral_radius), 4)
    0.3
    """
    fixed_params = lax.stop_gradient(params)
    probe = lax.stop_gradient(probe)
    num_terms = jnp.asarray(num_terms, jnp.int32)
    num_iterations = jnp.maximum(num_terms, num_power_iterations)
    continue_probability = jnp.asarray(continue_probability, probe.dtype)

    def weight(k):  # 1 / P(N >= k)
        return continue_probability ** (-jnp.maximum(k - num_exact_terms, 0).astype(probe.dtype))

    def body(carry):
        # A^k w is carried as scale * direction with a unit direction: the direction is the power iteration's
        # iterate and stays finite even when the series itself overflows.
        k, direction, scale, log_det, neumann, first_image = carry
        kept = k + 1 <= num_terms  # iterations past N only continue the power iteration
        w_next = weight(k + 1)
        neumann = jnp.where(kept, neumann + (w_next * scale) * direction, neumann)
        image = matvec_fn(fixed_params, direction)
        first_image = jnp.where(k == 0, image, first_image)  # A w / |w|
        norm = jnp.linalg.norm(image)
        direction = image / jnp.where(norm > 0, norm, 1.0)
        scale = scale * norm
        term = (w_next / (k + 1).astype(probe.dtype)) * scale * jnp.vdot(probe, direction)
        log_det = jnp.where(kept, log_det - term, log_det)
        return k + 1, direction, scale, log_det, neumann, first_image

    probe_norm = jnp.linalg.norm(probe)
    init = (
        jnp.zeros((), jnp.int32),
        probe / jnp.where(probe_norm > 0, probe_norm, 1.0),
        probe_norm,
        jnp.zeros((), probe.dtype),
        jnp.zeros_like(probe),
        jnp.zeros_like(probe),
    )
    _, direction, _, log_det_value, neumann, first_image = lax.while_loop(lambda c: c[0] < num_iterations, body, init)

    finite = jnp.isfinite(log_det_value) & jnp.all(jnp.isfinite(neumann)) & jnp.all(jnp.isfinite(direction))
    # Sanitise before anything differentiable touches these vectors: a where() downstream would otherwise turn an
    # infinite series vector into NaN gradients (0 * inf).
    direction = jnp.where(jnp.all(jnp.isfinite(direction)), direction, 0.0)
    neumann = jnp.where(finite, neumann, 0.0)
    log_det_value = jnp.where(finite, log_det_value, 0.0)

    if not differentiable_surrogate:
        return _log_det_with_fixed_surrogate(matvec_fn, params, fixed_params, probe, probe_norm * first_image,
                                             direction, neumann, log_det_value, num_terms, finite,
                                             differentiable_radius)
    radius_image = None
    if differentiable_radius:
        products = jax.vmap(lambda v: matvec_fn(params, v))(jnp.stack([probe, direction]))
        probe_image, spectral_radius = products[0], jnp.abs(jnp.vdot(direction, products[1]))
    else:  # the same value, without the reverse pass through a second product
        probe_image = matvec_fn(params, probe)
        radius_image = matvec_fn(fixed_params, direction)
        spectral_radius = jnp.abs(jnp.vdot(direction, radius_image))
    converged = finite & (lax.stop_gradient(spectral_radius) < 1.0)

    surrogate = -jnp.vdot(neumann, probe_image)
    log_det = lax.stop_gradient(log_det_value) + surrogate - lax.stop_gradient(surrogate)
    log_det = jnp.where(converged, log_det, 0.0)
    return LogDetEstimate(log_det, spectral_radius, num_terms, converged, direction, radius_image)


def _log_det_with_fixed_surrogate(matvec_fn, params, fixed_params, probe, probe_image, direction, neumann,
                                  log_det_value, num_terms, finite, differentiable_radius):
    """The end of :func:`log_det_identity_minus` for ``differentiable_surrogate=False``: forward products only
    (but the radius's where it stays differentiable), the surrogate's ingredients returned held fixed."""
    radius_image = None
    if differentiable_radius:
        neumann_image = matvec_fn(fixed_params, neumann)
        spectral_radius = jnp.abs(jnp.vdot(direction, matvec_fn(params, direction)))
    else:  # one batched forward product for both
        neumann_image, radius_image = jax.vmap(lambda v: matvec_fn(fixed_params, v))(jnp.stack([neumann, direction]))
        spectral_radius = jnp.abs(jnp.vdot(direction, radius_image))
    converged = finite & (lax.stop_gradient(spectral_radius) < 1.0)
    # zero where the series did not converge: a caller's surrogate is then zero, with a finite (zero) gradient
    probe_image = jnp.where(converged, probe_image, 0.0)
    neumann_image = jnp.where(converged, neumann_image, 0.0)
    log_det = jnp.where(converged, log_det_value, 0.0)
    return LogDetEstimate(log_det, spectral_radius, num_terms, converged, direction, radius_image, neumann,
                          probe_image, neumann_image)


def estimate_log_det(
    rng_key: PRNGKey,
    matvec_fn: MatvecFn,
    params: Any,
    dim: int,
    *,
    num_probes: int = 1,
    num_exact_terms: int = 2,
    continue_probability: float = 0.5,
    num_power_iterations: int = 4,
    max_num_terms: int = 64,
) -> LogDetEstimate:
    """Estimate ``log det(I - A)`` with ``num_probes`` Rademacher probes sharing one roulette draw.

    See :func:`log_det_identity_minus` for the estimator; the probes' estimates are averaged, the spectral-radius
    estimate is their maximum.

    Examples
    --------
    >>> A = jnp.diag(jnp.array([0.1, 0.2, 0.3]))
    >>> est = estimate_log_det(jax.random.key(0), lambda a, v: a @ v, A, 3, num_probes=8)
    >>> est.log_det.shape
    ()
    """
    key_terms, key_probes = jax.random.split(rng_key)
    num_terms = sample_num_terms(key_terms, num_exact_terms, continue_probability, max_num_terms)
    probes = jax.random.rademacher(key_probes, (num_probes, dim), dtype=jnp.float32)
    estimates = jax.vmap(
        lambda w: log_det_identity_minus(
            w,
            num_terms,
            matvec_fn,
            params,
            num_exact_terms=num_exact_terms,
            continue_probability=continue_probability,
            num_power_iterations=num_power_iterations,
        )
    )(probes)
    return LogDetEstimate(
        jnp.mean(estimates.log_det),
        jnp.max(estimates.spectral_radius),
        num_terms,
        jnp.all(estimates.converged),
        estimates.radius_vector[jnp.argmax(estimates.spectral_radius)],
    )


def spectral_radius_penalty(spectral_radius: ArrayLike, threshold: float = 0.75, strength: float = 1000.0) -> Array:
    """Quadratic hinge keeping ``rho(A)`` below ``threshold``: ``strength * max(0, rho - threshold)^2``.

    It is zero (with zero gradient) while the estimate stays below the threshold, so it leaves the speed measure
    untouched where the power series converges quickly; above it, it grows smoothly and its gradient shrinks
    ``h`` and the scale of ``C``. The default threshold 0.75 sits near ``sqrt(1/2)``, beyond which the default
    roulette (``continue_probability = 0.5``) has infinite variance (term ``k`` of the estimator's second moment
    grows like ``rho^(2k) / 0.5^k``).

    Examples
    --------
    >>> float(spectral_radius_penalty(0.5))
    0.0
    >>> float(spectral_radius_penalty(0.85, threshold=0.75, strength=100.0))  # doctest: +ELLIPSIS
    1.0...
    """
    excess = jnp.maximum(jnp.asarray(spectral_radius) - threshold, 0.0)
    return strength * excess**2


def exact_log_det_identity_minus(matvec_fn: MatvecFn, params: Any, dim: int) -> LogDetEstimate:
    """``log det(I - A)`` computed exactly from ``dim`` matrix-vector products, for small dimensions.

    ``A`` is assembled column by column (one batched ``vmap`` of ``matvec_fn`` over the identity's columns) and
    ``log det(I - A)`` taken from its LU factorisation (``jnp.linalg.slogdet``). Where the power series converges
    (``rho(A) < 1``) this is the expectation of :func:`log_det_identity_minus`, and its gradient is the exact
    ``-tr((I - A)^{-1} grad A)``, whose unbiased estimate the Neumann-series surrogate is: the same gradient path,
    without the estimator's variance. It costs ``d`` Hessian-vector products and an ``O(d^3)`` factorisation,
    against the roulette's ``max(N, num_power_iterations) + 2`` products, so it pays for small ``d``.

    The spectral radius is exact too (``eigvalsh`` of the symmetrised ``A``); its gradient is that of the Rayleigh
    quotient at the leading eigenvector (held fixed), which is the eigenvalue's derivative for a simple eigenvalue.
    As with the estimator, ``log_det`` is zero (value and gradient) where ``rho(A) >= 1`` or ``A`` is not finite,
    and ``converged`` says so; ``num_terms`` is ``dim``.

    Parameters
    ----------
    matvec_fn
        ``matvec_fn(params, v) -> A v`` for a **symmetric** ``A``.
    params
        Pytree of the parameters of ``A``; gradients flow through ``matvec_fn``.
    dim
        ``d``, the size of ``A``.

    Returns
    -------
    LogDetEstimate

    Examples
    --------
    >>> A = jnp.diag(jnp.array([0.1, 0.2, 0.3]))
    >>> est = exact_log_det_identity_minus(lambda a, v: a @ v, A, 3)
    >>> bool(jnp.allclose(est.log_det, jnp.log(0.9 * 0.8 * 0.7)))
    True
    >>> round(float(est.spectral_radius), 4)
    0.3
    """
    basis = jnp.eye(dim, dtype=jnp.result_type(float))
    columns = jax.vmap(lambda e: matvec_fn(params, e))(basis)  # row i is A e_i, i.e. column i of A
    matrix = 0.5 * (columns + columns.T)  # A is symmetric; this only removes rounding asymmetry
    finite = jnp.all(jnp.isfinite(matrix))
    safe = jnp.where(finite, matrix, 0.0)
    eigenvalues, eigenvectors = jnp.linalg.eigh(lax.stop_gradient(safe))
    leading = jnp.argmax(jnp.abs(eigenvalues))
    vector = eigenvectors[:, leading]
    spectral_radius = jnp.abs(vector @ safe @ vector)
    converged = finite & (lax.stop_gradient(spectral_radius) < 1.0)
    # I - A is positive definite where rho(A) < 1; elsewhere the identity stands in so that no NaN can leak into
    # gradients through the where() below.
    _, log_abs_det = jnp.linalg.slogdet(jnp.eye(dim, dtype=safe.dtype) - jnp.where(converged, safe, 0.0))
    log_det = jnp.where(converged, log_abs_det, 0.0)
    return LogDetEstimate(log_det, spectral_radius, jnp.asarray(dim, jnp.int32), converged, vector)
