r"""Importance-sampling estimates of a VAE's marginal log-likelihood ``log p(x)``.

For one data point ``x`` and a diagonal Gaussian proposal ``q(z) = N(z; mu, diag(sigma^2))`` (usually the
encoder's, widened), the estimator is

.. math::

    \log \hat p(x) = \log \frac{1}{S} \sum_{s=1}^{S} \exp\big(\log p(x, z_s) - \log q(z_s)\big),
    \qquad z_s \sim q .

``exp`` of it is unbiased for ``p(x)``, so by Jensen's inequality the estimate itself is biased low,
``E[log p_hat(x)] <= log p(x)``, with a gap that shrinks as ``S`` grows and as ``q`` approaches the posterior.

The ``S`` samples are drawn and weighed ``chunk_size`` at a time inside a ``lax.scan`` that carries a streaming
log-sum-exp (running maximum and rescaled sum), so ``S = 100000`` costs the memory of one chunk. Sample ``s`` is
drawn with ``fold_in(rng_key, s)``, so the estimate does not depend on the chunk size (up to floating-point
summation order). The same pass also carries ``log sum w^2``, which gives the weights' effective sample size
``(sum w)^2 / sum w^2`` (:func:`importance_estimate`, :func:`dataset_importance_estimate`) at no extra cost;
:mod:`mcmcvae.evaluate.diagnostics` streams the IWAE bound ``L_k`` through the same accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.types import Array, ArrayLike, LogJointFn, PRNGKey, PyTree

__all__ = ["importance_log_likelihood", "importance_estimate", "dataset_log_likelihood",
           "dataset_importance_estimate", "bits_per_dim", "ImportanceEstimate"]

_DEFAULT_CHUNK_SIZE = 1000
# samples in flight (data points x chunk) that dataset_log_likelihood aims for when chunk_size is not given: on
# one CPU core 2000 MNIST samples (their 784 logits each, 6 MB) evaluate about 20% faster per sample than 10000,
# whose arrays stream through memory several times per chunk; a GPU wants more (pass chunk_size)
_DEFAULT_SAMPLES_IN_FLIGHT = 2_000


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_proposal(proposal_loc: ArrayLike, proposal_scale: ArrayLike) -> tuple[Array, Array]:
    """Cast the proposal to float arrays of one shape ``(d,)``; reject non-positive scales when they are known."""
    loc = jnp.asarray(proposal_loc)
    scale = jnp.asarray(proposal_scale)
    dtype = jnp.result_type(loc.dtype, scale.dtype, jnp.float32)
    loc, scale = loc.astype(dtype), scale.astype(dtype)
    if loc.ndim != 1:
        raise ValueError(f"proposal_loc must have shape (d,), got shape {loc.shape}")
    if scale.shape != loc.shape:
        raise ValueError(
            f"proposal_scale must have the shape of proposal_loc {loc.shape}, got shape {scale.shape}"
        )
    if not isinstance(scale, jax.core.Tracer) and not np.all(np.asarray(scale) > 0):
        raise ValueError("proposal_scale must be positive everywhere (it is a standard deviation)")
    return loc, scale


def _diagonal_normal_log_prob(z: Array, loc: Array, scale: Array) -> Array:
    standardised = (z - loc) / scale
    return -0.5 * jnp.sum(standardised**2) - jnp.sum(jnp.log(scale)) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class _LogWeightSums(NamedTuple):
    """What one streaming pass over ``S`` log weights ``log w_s`` keeps (scalars)."""

    log_sum_weights: Array  # log sum_s w_s
    log_sum_squared_weights: Array  # log sum_s w_s^2
    sum_log_weights: Array  # sum_s log w_s


def _logsumexp_update(state: tuple[Array, Array], values: Array) -> tuple[Array, Array]:
    """Fold ``values (..., m)`` into a streaming log-sum-exp held as (running maximum, sum of exp(value - maximum)).

    The state has the batch shape ``...`` of ``values`` (a scalar for one sequence of weights); the new values are
    reduced over their last axis.
    """
    running_max, running_sum = state
    new_max = jnp.maximum(running_max, jnp.max(values, axis=-1))
    # while every value so far is -inf the maximum is -inf; shifting by 0 then avoids inf - inf
    shift = jnp.where(jnp.isneginf(new_max), jnp.zeros_like(new_max), new_max)
    new_sum = running_sum * jnp.exp(running_max - shift) + jnp.sum(jnp.exp(values - shift[..., None]), axis=-1)
    return new_max, new_sum


def _streaming_log_weight_sums(
    chunk_log_weights: Callable[[Array, Array], Array], num_samples: int, chunk_size: int, dtype,
    batch_shape: tuple[int, ...] = (),
) -> _LogWeightSums:
    r"""``log sum w``, ``log sum w^2`` and ``sum log w`` over ``S`` weights computed ``chunk_size`` at a time.

    The one streaming log-sum-exp of the library: a ``lax.scan`` over ``ceil(S / chunk_size)`` chunks carries,
    for ``w`` and for ``w^2``, the running maximum ``m`` of the log values and ``s = sum exp(log value - m)``
    (rescaled by ``exp(m_old - m_new)`` when the maximum grows), so memory is one chunk's whatever ``S`` is.
    ``chunk_log_weights(chunk_index, sample_indices)`` returns the log weights ``batch_shape + (chunk_size,)`` of
    samples ``chunk_index * chunk_size + arange(chunk_size)`` (of every sequence in the batch: several data
    points stream side by side, each reduced on its own); those with index ``>= S`` (the surplus of the last
    chunk) are masked out, so exactly ``S`` samples count. The effective sample size ``(sum w)^2 / sum w^2`` and
    ``log (1/S) sum w`` both come from one pass. The sums have shape ``batch_shape``.
    """
    num_chunks = -(-num_samples // chunk_size)

    def add_chunk(carry, chunk_index):
        sums_w, sums_w2, total_log_w = carry
        indices = chunk_index * chunk_size + jnp.arange(chunk_size)
        log_weights = chunk_log_weights(chunk_index, indices)
        valid = indices < num_samples
        masked = jnp.where(valid, log_weights, -jnp.inf)
        carry = (
            _logsumexp_update(sums_w, masked),
            _logsumexp_update(sums_w2, 2 * masked),
            total_log_w + jnp.sum(jnp.where(valid, log_weights, 0), axis=-1),
        )
        return carry, None

    empty = (jnp.full(batch_shape, -jnp.inf, dtype), jnp.zeros(batch_shape, dtype))
    init = (empty, empty, jnp.zeros(batch_shape, dtype))
    ((max_w, sum_w), (max_w2, sum_w2), total_log_w), _ = jax.lax.scan(add_chunk, init, jnp.arange(num_chunks))
    return _LogWeightSums(jnp.log(sum_w) + max_w, jnp.log(sum_w2) + max_w2, total_log_w)


def _effective_sample_size(sums: _LogWeightSums) -> Array:
    """Kish's ``(sum w)^2 / sum w^2``, from the logs (no overflow); NaN when every weight is zero."""
    return jnp.exp(2 * sums.log_sum_weights - sums.log_sum_squared_weights)


def _gaussian_proposal_sums(rng_key, log_joint_fn, proposal_loc, proposal_scale, num_samples, chunk_size):
    """Check the arguments, then stream the weights of ``z_s ~ N(loc, diag(scale^2))``, ``z_s`` from key ``s``."""
    num_samples = _check_positive_int(num_samples, "num_samples")
    chunk_size = min(num_samples, _DEFAULT_CHUNK_SIZE) if chunk_size is None else chunk_size
    chunk_size = min(_check_positive_int(chunk_size, "chunk_size"), num_samples)
    loc, scale = _check_proposal(proposal_loc, proposal_scale)

    def log_weight(index):
        noise = jax.random.normal(jax.random.fold_in(rng_key, index), loc.shape, loc.dtype)
        z = loc + scale * noise
        return log_joint_fn(z) - _diagonal_normal_log_prob(z, loc, scale)

    return _streaming_log_weight_sums(lambda _, indices: jax.vmap(log_weight)(indices), num_samples, chunk_size,
                                      loc.dtype)


class ImportanceEstimate(NamedTuple):
    """An importance-sampling estimate and the effective sample size of its weights.

    Attributes
    ----------
    log_likelihood
        ``log (1/S) sum_s w_s``, the estimate of ``log p(x)`` in nats (scalar, or ``(n,)`` for a data set).
    effective_sample_size
        ``(sum_s w_s)^2 / sum_s w_s^2``, between 1 and ``S`` (same shape).
    """

    log_likelihood: Array
    effective_sample_size: Array


def importance_log_likelihood(
    rng_key: PRNGKey,
    log_joint_fn: LogJointFn,
    proposal_loc: ArrayLike,
    proposal_scale: ArrayLike,
    num_samples: int,
    *,
    chunk_size: int | None = None,
) -> Array:
    r"""Importance-sampling estimate of one data point's ``log p(x)``.

    .. math::

        \log \hat p(x) = \log \frac{1}{S} \sum_{s=1}^{S}
            \frac{p(x, z_s)}{\mathcal N(z_s; \mu, \operatorname{diag}(\sigma^2))},
        \qquad z_s \sim \mathcal N(\mu, \operatorname{diag}(\sigma^2)).

    The samples are processed ``chunk_size`` at a time (``vmap`` within a chunk, ``lax.scan`` over chunks with a
    streaming log-sum-exp), so memory grows with ``chunk_size``, not with ``S``. When ``S`` is not a multiple of
    ``chunk_size`` the surplus slots of the last chunk are masked out, so exactly ``S`` samples count.
    Sample ``s`` uses the key ``fold_in(rng_key, s)``: the estimate is the same for every ``chunk_size``.

    The function is pure and does not jit itself; under ``jax.jit`` keep ``num_samples`` and ``chunk_size``
    static (close over them or mark them static).

    Parameters
    ----------
    rng_key
        A ``jax.random.key``.
    log_joint_fn
        One data point's ``log p(x, z)`` as a function of ``z`` of shape ``(d,)``, returning a scalar.
    proposal_loc, proposal_scale
        Mean ``mu`` and standard deviation ``sigma`` (not variance) of the diagonal Gaussian proposal, both of
        shape ``(d,)``; ``sigma > 0``.
    num_samples
        ``S``, the number of importance samples.
    chunk_size
        Samples evaluated together; ``None`` takes ``min(S, 1000)``.

    Returns
    -------
    Array
        Scalar estimate of ``log p(x)`` in nats.

    Raises
    ------
    ValueError
        If ``proposal_loc`` is not ``(d,)``, ``proposal_scale`` has another shape, ``proposal_scale`` is known
        (not traced) and not positive, or ``num_samples``/``chunk_size`` are not positive integers.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from jax.scipy.stats import norm
    >>> log_joint = lambda z: jnp.sum(norm.logpdf(z)) + jnp.sum(norm.logpdf(1.0, z, 1.0))
    >>> import mcmcvae as mv
    >>> estimate = mv.evaluate.importance_log_likelihood(jax.random.key(0), log_joint, jnp.full(2, 0.5),
    ...                                                  jnp.full(2, 0.8), 10_000)
    >>> float(estimate)  # the exact value is 2 log N(1; 0, 2) = -3.031
    -3.03
    """
    sums = _gaussian_proposal_sums(rng_key, log_joint_fn, proposal_loc, proposal_scale, num_samples, chunk_size)
    return sums.log_sum_weights - math.log(num_samples)


def importance_estimate(
    rng_key: PRNGKey,
    log_joint_fn: LogJointFn,
    proposal_loc: ArrayLike,
    proposal_scale: ArrayLike,
    num_samples: int,
    *,
    chunk_size: int | None = None,
) -> ImportanceEstimate:
    r""":func:`importance_log_likelihood` and the effective sample size of its weights, from the same samples.

    With ``w_s = p(x, z_s) / q(z_s)``, Kish's effective sample size (Kong 1992; Owen 2013, section 9.3)

    .. math:: \mathrm{ESS} = \frac{\big(\sum_{s=1}^S w_s\big)^2}{\sum_{s=1}^S w_s^2} \in [1, S]

    equals ``S`` when all weights are equal (``q`` is the posterior) and falls towards 1 as a few weights
    dominate; ``ESS / S`` estimates ``1 / E_q[(w / p(x))^2]``. The streaming pass carries ``log sum w`` and
    ``log sum w^2`` side by side, so the ESS costs no extra evaluation of ``log_joint_fn``. Arguments, keys and
    chunking are those of :func:`importance_log_likelihood`, whose value ``log_likelihood`` is.

    Returns
    -------
    ImportanceEstimate
        ``log_likelihood`` and ``effective_sample_size``, scalars.

    Examples
    --------
    With the exact posterior as proposal every weight is ``p(x)``: the estimate is exact and ``ESS = S``.
    (``z ~ N(0, 1)`` and ``x | z ~ N(z, 1)`` in each of two dimensions, ``x = (1, 1)``; the posterior is
    ``N(1/2, 1/2)``.)

    >>> import jax, jax.numpy as jnp
    >>> from jax.scipy.stats import norm
    >>> import mcmcvae as mv
    >>> log_joint = lambda z: jnp.sum(norm.logpdf(z)) + jnp.sum(norm.logpdf(1.0, z, 1.0))
    >>> loc, scale = jnp.full(2, 0.5), jnp.full(2, jnp.sqrt(0.5))
    >>> estimate = mv.evaluate.importance_estimate(jax.random.key(0), log_joint, loc, scale, 1000)
    >>> float(estimate.log_likelihood), float(estimate.effective_sample_size) / 1000
    (-3.031, 1.000)
    """
    sums = _gaussian_proposal_sums(rng_key, log_joint_fn, proposal_loc, proposal_scale, num_samples, chunk_size)
    return ImportanceEstimate(sums.log_sum_weights - math.log(num_samples), _effective_sample_size(sums))


def dataset_log_likelihood(
    rng_key: PRNGKey,
    log_joint_fn: Callable[[Array, Array], Array],
    proposal_fn: Callable[[Array], tuple[Array, Array]],
    images: ArrayLike | PyTree,
    *,
    num_samples: int,
    chunk_size: int | None = None,
    batch_size: int = 100,
    scale_factor: float = 1.0,
    variance_factor: float = 1.0,
) -> Array:
    r"""Importance-sampling ``log p(x_i)`` for every data point of a data set.

    Data point ``i`` gets :func:`importance_log_likelihood` with the key ``fold_in(rng_key, i)`` and the proposal
    ``N(mu(x_i), diag(sigma'(x_i)^2))`` where

    .. math:: \sigma'(x) = \sigma(x) \cdot \text{scale\_factor} \cdot \sqrt{\text{variance\_factor}},
              \qquad (\mu(x), \sigma(x)) = \text{proposal\_fn}(x).

    A wider proposal than the encoder's keeps the importance weights' variance finite where the encoder is
    overconfident. The two conventions of the literature: the entropy-speed-measure paper multiplies the
    encoder's *variance* by ``tau = 1.5`` (``variance_factor=1.5``); the VCD paper multiplies its *standard
    deviation* by 1.2 (``scale_factor=1.2``).

    One compiled program evaluates the whole data set: a ``lax.map`` over blocks of ``batch_size`` data points
    (the last block padded by repeating the final point), and within a block a ``lax.scan`` over chunks of
    ``chunk_size`` samples that evaluates ``log_joint_fn`` on all ``batch_size x chunk_size`` (point, sample) pairs
    at once (so a decoder runs as matrix products over that many latents) and streams every point's
    log-sum-exp side by side. No Python loop runs over data points or blocks, and the host waits once. Because
    each point's key depends only on its index, the result does not depend on ``batch_size`` or ``chunk_size``
    (up to floating-point summation order). Nothing is trained or adapted.

    Parameters
    ----------
    rng_key
        A ``jax.random.key``.
    log_joint_fn
        ``log_joint_fn(x, z) -> scalar``, one data point's ``log p(x, z)``; vmappable.
    proposal_fn
        ``proposal_fn(x) -> (loc, scale)``, each of shape ``(d,)``, usually the encoder; ``scale`` is a standard
        deviation. Vmappable.
    images
        Data of shape ``(n, ...)``, or a pytree of arrays that share the leading axis ``n`` (e.g. images with
        precomputed proposals); data point ``i`` (``images[i]``, leaf by leaf) is passed to both functions.
    num_samples
        Importance samples per data point.
    chunk_size
        Samples per data point evaluated together; ``None`` keeps ``batch_size * chunk_size`` near 2,000
        (lower it for large decoders, raise it on a GPU).
    batch_size
        Data points evaluated together (one block).
    scale_factor, variance_factor
        Factors on the proposal's standard deviation and variance, as above.

    Returns
    -------
    Array
        Shape ``(n,)``, each data point's estimated ``log p(x_i)`` in nats.

    Examples
    --------
    A small, untrained model on random binary images (use a trained model and the test set in practice):

    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))
    >>> images = (np.random.default_rng(0).uniform(size=(4, 28, 28, 1)) < 0.2).astype(np.float32)
    >>> encoder = lambda x: jax.tree.map(lambda a: a[0], model.encode(params, x[None]))  # (loc, scale)
    >>> lls = mv.evaluate.dataset_log_likelihood(jax.random.key(0), lambda x, z: model.log_joint(params, x, z),
    ...                                          encoder, images, num_samples=100, variance_factor=1.5)
    >>> lls.shape  # log p(x_i) in nats; lls.mean() is the test log-likelihood
    (4,)
    """
    return dataset_importance_estimate(
        rng_key, log_joint_fn, proposal_fn, images, num_samples=num_samples, chunk_size=chunk_size,
        batch_size=batch_size, scale_factor=scale_factor, variance_factor=variance_factor,
    ).log_likelihood


def dataset_importance_estimate(
    rng_key: PRNGKey,
    log_joint_fn: Callable[[Array, Array], Array],
    proposal_fn: Callable[[Array], tuple[Array, Array]],
    images: ArrayLike | PyTree,
    *,
    num_samples: int,
    chunk_size: int | None = None,
    batch_size: int = 100,
    scale_factor: float = 1.0,
    variance_factor: float = 1.0,
) -> ImportanceEstimate:
    r""":func:`dataset_log_likelihood` with each data point's effective sample size, from one pass.

    Data point ``i`` gets :func:`importance_estimate` with the key ``fold_in(rng_key, i)`` and the proposal of
    :func:`dataset_log_likelihood` (same arguments, same batching), so ``log_likelihood`` is exactly what
    :func:`dataset_log_likelihood` returns and ``effective_sample_size`` is ``(sum w)^2 / sum w^2`` of the same
    weights.

    Returns
    -------
    ImportanceEstimate
        ``log_likelihood`` and ``effective_sample_size``, each ``(n,)``.

    Examples
    --------
    A small, untrained model on random binary images (use a trained model and the test set in practice):

    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))
    >>> images = (np.random.default_rng(0).uniform(size=(4, 28, 28, 1)) < 0.2).astype(np.float32)
    >>> encoder = lambda x: jax.tree.map(lambda a: a[0], model.encode(params, x[None]))  # (loc, scale)
    >>> estimate = mv.evaluate.dataset_importance_estimate(
    ...     jax.random.key(0), lambda x, z: model.log_joint(params, x, z), encoder, images, num_samples=100,
    ...     variance_factor=1.5)
    >>> estimate.log_likelihood.shape, bool(((1 <= estimate.effective_sample_size)
    ...                                      & (estimate.effective_sample_size <= 100)).all())
    ((4,), True)
    """
    num_samples = _check_positive_int(num_samples, "num_samples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if not (0 < scale_factor < math.inf and 0 < variance_factor < math.inf):
        raise ValueError(f"scale_factor and variance_factor must be positive and finite, got {scale_factor}, "
                         f"{variance_factor}")
    leaves = jax.tree.leaves(images)
    num_points = np.shape(leaves[0])[0] if leaves and np.ndim(leaves[0]) > 0 else None  # checked below
    if num_points == 0:
        return ImportanceEstimate(jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32))
    batch_size = min(batch_size, num_points or batch_size)
    if chunk_size is None:
        chunk_size = min(num_samples, max(1, _DEFAULT_SAMPLES_IN_FLIGHT // batch_size))
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    std_factor = scale_factor * math.sqrt(variance_factor)

    block_estimate = _block_estimate_fn(rng_key, log_joint_fn, proposal_fn, num_samples, min(chunk_size, num_samples),
                                        std_factor)
    log_likelihood, ess = _map_blocks(block_estimate, images, batch_size)
    return ImportanceEstimate(log_likelihood, ess)


def _block_estimate_fn(rng_key, log_joint_fn, proposal_fn, num_samples, chunk_size, std_factor):
    """``(indices (B,), data block) -> (log_likelihood (B,), ess (B,))``: B data points' weights in one stream.

    The ``lax.scan`` over sample chunks carries every point's streaming sums side by side, and each chunk
    evaluates ``log_joint_fn`` on all ``B x chunk_size`` (data point, sample) pairs at once, so the decoder runs
    as matrix products over ``B * chunk_size`` latents. Keys are those of :func:`importance_estimate` applied
    point by point (sample ``s`` of point ``i`` from ``fold_in(fold_in(rng_key, i), s)``), so the result equals
    the per-point estimates.
    """

    def block_estimate(indices, data):
        locs, scales = jax.vmap(proposal_fn)(data)
        locs, scales = jnp.asarray(locs), jnp.asarray(scales) * std_factor
        if locs.ndim != 2 or scales.shape != locs.shape:
            raise ValueError("proposal_fn(x) must return (loc, scale) of one shape (d,), got shapes "
                             f"{locs.shape[1:]} and {scales.shape[1:]}")
        dtype = jnp.result_type(locs.dtype, scales.dtype, jnp.float32)
        locs, scales = locs.astype(dtype), scales.astype(dtype)
        keys = jax.vmap(lambda index: jax.random.fold_in(rng_key, index))(indices)

        def point_log_weights(key, x, loc, scale, sample_indices):
            def log_weight(index):
                noise = jax.random.normal(jax.random.fold_in(key, index), loc.shape, loc.dtype)
                z = loc + scale * noise
                return log_joint_fn(x, z) - _diagonal_normal_log_prob(z, loc, scale)

            return jax.vmap(log_weight)(sample_indices)

        def chunk_log_weights(_, sample_indices):  # (B, chunk_size)
            return jax.vmap(point_log_weights, in_axes=(0, 0, 0, 0, None))(keys, data, locs, scales, sample_indices)

        sums = _streaming_log_weight_sums(chunk_log_weights, num_samples, chunk_size, dtype,
                                          batch_shape=indices.shape)
        return sums.log_sum_weights - math.log(num_samples), _effective_sample_size(sums)

    return block_estimate


def _map_blocks(block_fn: Callable[[Array, PyTree], PyTree], inputs: PyTree, block_size: int) -> PyTree:
    """``block_fn(indices, block)`` over consecutive blocks of ``inputs`` in one jitted ``lax.map``.

    The data set is padded to whole blocks by repeating its final point (the surplus results are dropped),
    reshaped to ``(num_blocks, block_size, ...)`` and mapped over by one compiled program: no Python loop over
    blocks and one transfer back at the end. ``indices`` are the points' positions ``(block_size,)``, so a key
    derived from them does not depend on ``block_size``. Returns ``block_fn``'s outputs (leading axis ``n``), as
    device arrays.
    """
    leaves = jax.tree.leaves(inputs)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("inputs must be an array of shape (n, ...) or a pytree of such arrays")
    num_points = np.shape(leaves[0])[0]
    if any(np.shape(leaf)[0] != num_points for leaf in leaves):
        raise ValueError(f"every array in inputs needs the same leading axis, got {[np.shape(a) for a in leaves]}")
    if num_points == 0:
        raise ValueError("inputs hold no data points")
    block_size = min(_check_positive_int(block_size, "batch_size"), num_points)
    num_blocks = -(-num_points // block_size)
    positions = np.arange(num_blocks * block_size)
    take = np.minimum(positions, num_points - 1)
    blocks = jax.tree.map(lambda a: jnp.asarray(a)[take].reshape(num_blocks, block_size, *np.shape(a)[1:]), inputs)
    indices = jnp.asarray(positions.reshape(num_blocks, block_size), jnp.int32)
    # jitted afresh on every call: a cached trace would keep whatever parameters the functions closed over
    mapped = jax.jit(lambda idx, data: jax.lax.map(lambda args: block_fn(*args), (idx, data)))(indices, blocks)
    return jax.tree.map(lambda r: r.reshape(num_blocks * block_size, *r.shape[2:])[:num_points], mapped)


def bits_per_dim(log_likelihood_nats: ArrayLike, num_dims: int) -> Array:
    r"""Convert a log-likelihood in nats to bits per dimension, ``-log p(x) / (D log 2)``.

    No offset for discretisation is added: the library's likelihoods for 8-bit images (the discretised logistic
    over 256 bins, ``logistic256``) already give the probability mass of each pixel's bin, so ``log p(x)`` is a
    log-probability of the discrete image. (A continuous density on ``[0, 256)`` would need ``+ 8`` bits, on
    ``[0, 1)`` a ``- D log 256`` correction; neither applies.)

    Parameters
    ----------
    log_likelihood_nats
        ``log p(x)`` in nats, any shape.
    num_dims
        ``D``, the number of dimensions of one data point (e.g. ``32 * 32 * 3``).

    Returns
    -------
    Array
        Bits per dimension, the shape of ``log_likelihood_nats``.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> float(mv.evaluate.bits_per_dim(-3000.0, 32 * 32 * 3))  # a CIFAR-10 image of log p(x) = -3000 nats
    1.409
    """
    num_dims = _check_positive_int(num_dims, "num_dims")
    return -jnp.asarray(log_likelihood_nats) / (num_dims * math.log(2.0))
