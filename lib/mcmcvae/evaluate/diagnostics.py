r"""Diagnostics of a trained model beyond its log-likelihood: active units, the IWAE bound and its weights, gaps.

- :func:`active_units`: Burda, Grosse and Salakhutdinov (2016, section 5.2) call latent unit ``u`` active when
  its activity ``A_u = Cov_x(E_{q(z|x)}[z_u])`` exceeds 0.01: a unit whose posterior mean does not move with
  ``x`` carries no information about the data.
- :func:`log_k_bound` and :func:`bound_diagnostics`: the importance-weighted bound (Burda et al. 2016)

  .. math::

      \mathcal L_k(x) = \log \frac{1}{k} \sum_{s=1}^{k} \frac{p(x, z_s)}{q(z_s \mid x)}, \qquad z_s \sim q(z \mid x),

  with ``q`` the model's own ``q0`` (:meth:`sample_q0`, so hierarchical posteriors work too).
  ``E[L_1]`` is the ELBO, ``E[L_k]`` grows with ``k`` and tends to ``log p(x)``; ``-L_5000`` is the NVLB that
  Ding and Freedman (2019, section 5) report beside the NLL. The same pass gives the effective sample size
  ``(sum w)^2 / sum w^2`` of the weights and the ELBO estimate ``(1/k) sum_s log w_s``, through the streaming
  accumulation of :mod:`mcmcvae.evaluate.importance`.
- :func:`variational_gap` and :func:`generalisation_gap`: differences of per-image log-likelihoods and bounds.
- :func:`chain_diagnostics`: the effective sample size and R-hat of MCMC draws, computed by BlackJAX's
  ``blackjax.diagnostics`` (the library's maintained estimators; nothing here re-implements them).

Two quantities are both called an effective sample size. The MCMC one (:func:`chain_diagnostics`) counts how many
independent draws a set of autocorrelated chains is worth; it comes from BlackJAX. The importance-sampling one
(:attr:`BoundDiagnostics.effective_sample_size`, Kish's ``(sum w)^2 / sum w^2`` of independent weighted draws) is a
one-line function of the streamed weight sums; neither BlackJAX nor NumPyro offers it for streamed sums, so it stays
in :mod:`mcmcvae.evaluate.importance`.

Everything here only reads parameters: nothing trains or adapts.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.batching import map_padded_batches
from mcmcvae.evaluate.importance import (
    _DEFAULT_SAMPLES_IN_FLIGHT,
    _check_positive_int,
    _effective_sample_size,
    _streaming_log_weight_sums,
)
from mcmcvae.methods.elbo import log_weights
from mcmcvae.types import Array, ArrayLike, Params, PRNGKey

__all__ = [
    "ActiveUnits",
    "BoundDiagnostics",
    "active_units",
    "bound_diagnostics",
    "log_k_bound",
    "variational_gap",
    "generalisation_gap",
    "DEFAULT_ACTIVITY_THRESHOLD",
    "ChainDiagnostics",
    "chain_diagnostics",
]

DEFAULT_ACTIVITY_THRESHOLD = 0.01  # Burda et al. (2016)


def _check_images(model, images, *, min_points: int = 1) -> np.ndarray:
    """Host-side images of shape ``(n, *model.image_shape)`` (when the model states one), ``n >= min_points``."""
    images = np.asarray(images, np.float32)
    if images.ndim < 2:
        raise ValueError(f"images must have shape (n, ...) with one image per row, got shape {images.shape}")
    image_shape = getattr(model, "image_shape", None)
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"images must have shape (n, {', '.join(map(str, image_shape))}) for this model, got {images.shape}; "
            "reshape flat vectors to (n, H, W, C) with the model's image_shape"
        )
    if images.shape[0] < min_points:
        raise ValueError(f"need at least {min_points} image{'s' if min_points > 1 else ''}, got {images.shape[0]}")
    return images


def _check_hashable(model) -> None:
    """The model is a static argument of the jitted functions, so it must be hashable."""
    try:
        hash(model)
    except TypeError as error:
        raise ValueError(f"model must be hashable (it is a static argument of the compiled function): {error}; "
                         "make it a frozen dataclass and keep its arrays in params") from None


# ------------------------------------------------------------------------------------------- active units
class ActiveUnits(NamedTuple):
    """Per-dimension activity of the latent units and how many are active.

    Attributes
    ----------
    activity
        ``(d,)``, ``A_u = Cov_x(E_q[z_u | x])`` over the images (an unbiased Monte Carlo estimate when
        ``num_samples`` is given, which may dip slightly below zero for an inactive unit).
    is_active
        ``(d,)`` booleans, ``activity > threshold``.
    num_active
        Their count.
    threshold
        The threshold used.
    """

    activity: Array
    is_active: Array
    num_active: int
    threshold: float


@functools.partial(jax.jit, static_argnames=("model", "num_samples"))
def _posterior_moments(rng_key, params, indices, images, *, model, num_samples):
    """Per image: the mean of q's draws and their unbiased variance, ``(n, d)`` each (or encode's mean and 0)."""
    if num_samples is None:
        loc = model.encode(params, images)[0]
        return loc, jnp.zeros_like(loc)

    def one(index, x):
        z, _ = model.sample_q0(jax.random.fold_in(rng_key, index), params, x[None], num_samples)
        z = z[:, 0]
        return jnp.mean(z, axis=0), jnp.var(z, axis=0, ddof=1)

    return jax.vmap(one)(indices, images)


def active_units(
    rng_key: PRNGKey,
    model,
    params: Params,
    images: ArrayLike,
    *,
    threshold: float = DEFAULT_ACTIVITY_THRESHOLD,
    num_samples: int | None = 100,
    batch_size: int = 100,
) -> ActiveUnits:
    r"""Burda et al.'s (2016) activity of each latent unit and the number of active units.

    .. math:: A_u = \operatorname{Cov}_x\big(\mathbb E_{q(z \mid x)}[z_u]\big), \qquad
              \text{unit } u \text{ active} \iff A_u > \text{threshold} \;(= 0.01),

    with the covariance (a variance, ``1/n`` normalised) taken over the ``n`` given images.

    With ``num_samples = S`` the posterior means are estimated from ``S`` draws of ``model.sample_q0`` per
    image, which works for any model (hierarchical ones whose ``q`` is no single Gaussian included). The Monte
    Carlo means ``m_hat_i`` scatter around the exact ``m_i`` with variance ``sigma_i^2 / S``, which would add
    ``(1 - 1/n) mean_i(sigma_i^2) / S`` to the variance over images: about 0.01 for a collapsed unit
    (``sigma^2 = 1``) at ``S = 100``, the size of the threshold. The estimate subtracts that term, with
    ``sigma_i^2`` estimated by the draws' unbiased variance ``s_i^2``:

    .. math:: \hat A_u = \operatorname{Var}_i(\hat m_{iu}) - \frac{n - 1}{n} \frac{1}{S} \frac1n \sum_i s_{iu}^2,

    which is unbiased for ``A_u``. With ``num_samples=None`` the mean is ``model.encode(params, x)[0]``, exact
    for a model whose ``q`` is the diagonal Gaussian ``encode`` returns (:class:`mcmcvae.models.VAE`); for a
    hierarchical model ``encode`` gives the mean path, exact only when the model is linear.

    Image ``i`` draws with ``fold_in(rng_key, i)``; one jitted function serves every batch (the last is padded),
    so the result does not depend on ``batch_size``.

    Parameters
    ----------
    rng_key
        A ``jax.random.key`` (unused when ``num_samples`` is ``None``).
    model
        A hashable model with ``sample_q0(key, params, images, num_samples)`` (and ``encode`` for the exact
        path), such as :class:`mcmcvae.models.VAE` or :class:`mcmcvae.hierarchical.TopDownHVAE`.
    params
        Its parameters.
    images
        ``(n, ...)`` with ``n >= 2``, usually held-out images.
    threshold
        Activity above which a unit counts as active; finite and non-negative.
    num_samples
        Draws from ``q`` per image (at least 2), or ``None`` for the encoder's exact mean.
    batch_size
        Images per jitted call.

    Returns
    -------
    ActiveUnits
        ``activity (d,)``, ``is_active (d,)``, ``num_active`` and ``threshold``.

    Raises
    ------
    ValueError
        For a negative or non-finite ``threshold``, ``num_samples < 2``, fewer than two images, images whose
        shape does not match ``model.image_shape``, or a model that is not hashable.

    Examples
    --------
    A small, untrained model on random binary images (use a trained model and the test set in practice):

    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))
    >>> images = (np.random.default_rng(0).uniform(size=(4, 28, 28, 1)) < 0.2).astype(np.float32)
    >>> units = mv.evaluate.active_units(jax.random.key(0), model, params, images, num_samples=None)
    >>> units.activity.shape, units.num_active  # units whose mean E_q[z_j] varies over images by > 0.01
    ((2,), 2)
    """
    if (isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number)
            or not math.isfinite(threshold) or threshold < 0):
        raise ValueError(f"threshold must be a finite number >= 0 (Burda et al. use 0.01), got {threshold!r}")
    if num_samples is not None:
        num_samples = _check_positive_int(num_samples, "num_samples")
        if num_samples < 2:
            raise ValueError("num_samples must be at least 2 (the correction needs each image's sample variance); "
                             "pass num_samples=None to use the encoder's exact mean")
    batch_size = _check_positive_int(batch_size, "batch_size")
    images = _check_images(model, images, min_points=2)
    _check_hashable(model)
    means, variances = map_padded_batches(
        lambda _, indices, batch: _posterior_moments(rng_key, params, jnp.asarray(indices), batch, model=model,
                                                     num_samples=num_samples),
        images, batch_size)
    means, variances = np.asarray(means, np.float64), np.asarray(variances, np.float64)
    num_points = means.shape[0]
    activity = means.var(axis=0)
    if num_samples is not None:
        activity = activity - (num_points - 1) / num_points * variances.mean(axis=0) / num_samples
    is_active = activity > threshold
    return ActiveUnits(jnp.asarray(activity, jnp.float32), jnp.asarray(is_active), int(is_active.sum()),
                       float(threshold))


# ------------------------------------------------------------------------------------ the IWAE bound L_k
class BoundDiagnostics(NamedTuple):
    """What one pass of ``k`` draws from ``q(z | x)`` per image gives, each ``(n,)``.

    Attributes
    ----------
    log_k_bound
        ``L_k = log (1/k) sum_s w_s`` in nats, ``w_s = p(x, z_s) / q(z_s | x)``.
    elbo
        ``(1/k) sum_s log w_s``, an unbiased estimate of the ELBO.
    effective_sample_size
        ``(sum_s w_s)^2 / sum_s w_s^2``, between 1 and ``k``.
    """

    log_k_bound: Array
    elbo: Array
    effective_sample_size: Array


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "chunk_size"))
def _bound_sums(rng_key, params, indices, images, *, model, num_samples, chunk_size):
    """The streamed log-weight sums of a batch of images (vmap over images, one key per image)."""

    def one(index, x):
        key = jax.random.fold_in(rng_key, index)

        def chunk_log_weights(chunk_index, _):
            return log_weights(jax.random.fold_in(key, chunk_index), model, params, x[None], chunk_size)[0]

        return _streaming_log_weight_sums(chunk_log_weights, num_samples, chunk_size, jnp.float32)

    return jax.vmap(one)(indices, images)


def bound_diagnostics(
    rng_key: PRNGKey,
    model,
    params: Params,
    images: ArrayLike,
    *,
    num_samples: int = 5000,
    chunk_size: int | None = None,
    batch_size: int = 100,
) -> BoundDiagnostics:
    r"""The IWAE bound ``L_k``, the ELBO and the weights' effective sample size of every image, in one pass.

    For image ``x`` and ``k = num_samples`` draws ``z_s ~ q(z | x)`` from ``model.sample_q0`` with log weights
    ``log w_s = log p(x, z_s) - log q(z_s | x)``:

    .. math::

        \mathcal L_k = \log \frac1k \sum_s w_s, \qquad
        \widehat{\mathrm{ELBO}} = \frac1k \sum_s \log w_s, \qquad
        \mathrm{ESS} = \frac{(\sum_s w_s)^2}{\sum_s w_s^2}.

    ``E[L_k] <= E[L_{k+1}] <= log p(x)`` (Burda et al. 2016, theorem 1); with ``k = 5000``, ``-L_k`` is the
    NVLB of Ding and Freedman (2019). ``ESS / k`` estimates ``1 / E_q[(w / p(x))^2]``: 1 when ``q`` is the
    posterior, small when a few draws carry the estimate, a sign that ``L_k`` is far below ``log p(x)``.

    The draws are made ``chunk_size`` at a time (one ``sample_q0`` call, hence one encoder pass, per chunk)
    inside the streaming log-sum-exp of :mod:`mcmcvae.evaluate.importance`, so ``k = 5000`` costs the memory of
    one chunk; the surplus of the last chunk is masked out, so exactly ``k`` draws count. Image ``i`` uses the
    key ``fold_in(rng_key, i)`` and chunk ``c`` of it ``fold_in(fold_in(rng_key, i), c)``: the results do not
    depend on ``batch_size``, but they do on ``chunk_size`` (other draws, same distribution). Images are
    evaluated ``batch_size`` at a time by one jitted function, the last batch padded, so it compiles once per
    model, ``num_samples`` and ``chunk_size``.

    Parameters
    ----------
    rng_key
        A ``jax.random.key``.
    model
        A hashable model (it is a static argument of the jitted function) with
        ``sample_q0(key, params, images, num_samples) -> (z (k, n, d), log_q (k, n))`` and
        ``log_joint_batch(params, images, z)``: :class:`mcmcvae.models.VAE`,
        :class:`mcmcvae.hierarchical.TopDownHVAE`.
    params
        Its parameters.
    images
        ``(n, ...)``.
    num_samples
        ``k``, draws per image.
    chunk_size
        Draws per image evaluated together; ``None`` keeps ``batch_size * chunk_size`` near 10,000.
    batch_size
        Images per jitted call.

    Returns
    -------
    BoundDiagnostics
        ``log_k_bound``, ``elbo`` and ``effective_sample_size``, each ``(n,)``.

    Raises
    ------
    ValueError
        If ``num_samples``, ``chunk_size`` or ``batch_size`` is not a positive integer, the images' shape does
        not suit the model, or the model is not hashable.

    Examples
    --------
    A small, untrained model on random binary images (use a trained model and the test set in practice):

    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))
    >>> images = (np.random.default_rng(0).uniform(size=(4, 28, 28, 1)) < 0.2).astype(np.float32)
    >>> result = mv.evaluate.bound_diagnostics(jax.random.key(0), model, params, images, num_samples=100)
    >>> result.log_k_bound.shape  # with num_samples=5000, -mean(L_k) is Ding and Freedman's NVLB
    (4,)
    >>> bool((result.elbo <= result.log_k_bound).all())  # Jensen, on the same draws
    True
    >>> bool(((1 <= result.effective_sample_size) & (result.effective_sample_size <= 100)).all())
    True
    """
    num_samples = _check_positive_int(num_samples, "num_samples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    images = _check_images(model, images)
    _check_hashable(model)
    batch_size = min(batch_size, images.shape[0])
    if chunk_size is None:
        chunk_size = max(1, _DEFAULT_SAMPLES_IN_FLIGHT // batch_size)
    chunk_size = min(_check_positive_int(chunk_size, "chunk_size"), num_samples)
    sums = map_padded_batches(
        lambda _, indices, batch: _bound_sums(rng_key, params, jnp.asarray(indices), batch, model=model,
                                              num_samples=num_samples, chunk_size=chunk_size),
        images, batch_size)
    sums = jax.tree.map(jnp.asarray, sums)
    return BoundDiagnostics(
        log_k_bound=sums.log_sum_weights - math.log(num_samples),
        elbo=sums.sum_log_weights / num_samples,
        effective_sample_size=_effective_sample_size(sums),
    )


def log_k_bound(
    rng_key: PRNGKey,
    model,
    params: Params,
    images: ArrayLike,
    *,
    num_samples: int = 5000,
    chunk_size: int | None = None,
    batch_size: int = 100,
) -> Array:
    r"""The importance-weighted bound ``L_k`` of every image; with ``k = 5000``, minus Ding and Freedman's NVLB.

    .. math:: \mathcal L_k(x) = \log \frac1k \sum_{s=1}^k \frac{p(x, z_s)}{q(z_s \mid x)},
              \qquad z_s \sim q(z \mid x) \text{ (model.sample\_q0)}.

    :func:`bound_diagnostics` (same arguments, same draws) also returns the ELBO and the effective sample size
    of the weights at no extra cost.

    Returns
    -------
    Array
        ``(n,)``, nats.

    Examples
    --------
    A small, untrained model on random binary images (use a trained model and the test set in practice):

    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))
    >>> images = (np.random.default_rng(0).uniform(size=(4, 28, 28, 1)) < 0.2).astype(np.float32)
    >>> bound = mv.evaluate.log_k_bound(jax.random.key(0), model, params, images, num_samples=100)
    >>> bound.shape  # L_100 per image, nats
    (4,)
    """
    return bound_diagnostics(rng_key, model, params, images, num_samples=num_samples, chunk_size=chunk_size,
                             batch_size=batch_size).log_k_bound


# ------------------------------------------------------------------------------------------------- gaps
def variational_gap(log_likelihood: ArrayLike, lower_bound: ArrayLike) -> Array:
    r"""Per image, how far a variational bound lies below the log-likelihood: ``log p_hat(x) - bound(x)``.

    Ding and Freedman (2019) define the variational gap as ``NVLB - NLL`` with ``NVLB = -L_5000`` (the IWAE
    bound with 5000 draws from ``q``, :func:`log_k_bound`) and the NLL from AIS, i.e.
    ``log p_hat(x) - L_5000(x)``; pass ``L_k`` as ``lower_bound`` for that gap. Passing the ELBO instead
    (:attr:`BoundDiagnostics.elbo`) gives the inference gap ``log p(x) - ELBO = KL(q(z|x) || p(z|x))`` of
    Cremer, Li and Duvenaud (2018). Both are non-negative in expectation up to the log-likelihood estimate's own
    (downward) bias.

    Parameters
    ----------
    log_likelihood
        Per-image ``log p(x)`` estimates (importance sampling or AIS), any shape.
    lower_bound
        The bound for the same images, the same shape.

    Returns
    -------
    Array
        ``log_likelihood - lower_bound``, elementwise, nats.

    Raises
    ------
    ValueError
        If the shapes differ (the two must describe the same images in the same order).

    Examples
    --------
    Per-image log-likelihoods and ``L_k`` of the same two images:

    >>> import jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> mv.evaluate.variational_gap(jnp.array([-90.0, -100.0]), jnp.array([-92.5, -101.0]))
    Array([2.5, 1. ], dtype=float32)
    """
    log_likelihood, lower_bound = jnp.asarray(log_likelihood), jnp.asarray(lower_bound)
    if log_likelihood.shape != lower_bound.shape:
        raise ValueError(f"log_likelihood {log_likelihood.shape} and lower_bound {lower_bound.shape} must have the "
                         "same shape: one value per image, the same images in the same order")
    return log_likelihood - lower_bound


def generalisation_gap(train_log_likelihood: ArrayLike, test_log_likelihood: ArrayLike) -> Array:
    r"""Mean training log-likelihood minus mean test log-likelihood, ``NLL_test - NLL_train``, in nats.

    Ding and Freedman (2019) compare the NLL on test images with that on equally many training images; a large
    positive gap means the model fits the images it was trained on better than new ones (overfitting).

    Parameters
    ----------
    train_log_likelihood, test_log_likelihood
        Per-image ``log p(x)`` estimates on training and test images (any lengths, at least one each), or
        their means.

    Returns
    -------
    Array
        Scalar, ``mean(train) - mean(test)``.

    Raises
    ------
    ValueError
        If either holds no values.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> float(mv.evaluate.generalisation_gap(jnp.array([-88.0, -90.0]), jnp.array([-91.0, -90.0])))  # nats
    1.5
    """
    train, test = jnp.asarray(train_log_likelihood), jnp.asarray(test_log_likelihood)
    if train.size == 0 or test.size == 0:
        raise ValueError(f"both log-likelihood arrays need at least one value, got sizes {train.size} and "
                         f"{test.size}")
    return jnp.mean(train) - jnp.mean(test)


# ------------------------------------------------------------------------------------------- MCMC chains
class ChainDiagnostics(NamedTuple):
    """Per-coordinate convergence diagnostics of MCMC draws, from ``blackjax.diagnostics``.

    Attributes
    ----------
    effective_sample_size
        ``(d,)``: the draws of all chains together are worth this many independent draws
        (``blackjax.diagnostics.effective_sample_size``: Geyer's initial monotone sequence over the chains' mean
        autocorrelation, as in Stan).
    potential_scale_reduction
        ``(d,)``: R-hat (``blackjax.diagnostics.potential_scale_reduction``, Gelman and Rubin's between/within
        chain variance ratio); near 1 when the chains agree.
    """

    effective_sample_size: Array
    potential_scale_reduction: Array


def chain_diagnostics(positions: ArrayLike) -> ChainDiagnostics:
    r"""The effective sample size and R-hat of every coordinate of MCMC draws, by BlackJAX's diagnostics.

    Parameters
    ----------
    positions
        ``(num_samples, n_chains, d)``, the layout the tuners' ``.sample`` returns (``num_samples >= 4``,
        ``n_chains >= 2``). For BlackJAX's own ``(n_chains, num_samples, ...)`` call ``blackjax.diagnostics``
        directly.

    Returns
    -------
    ChainDiagnostics
        ``effective_sample_size (d,)`` and ``potential_scale_reduction (d,)``.

    Raises
    ------
    ValueError
        If ``positions`` is not three-dimensional, has fewer than 2 chains or 4 draws per chain.

    Examples
    --------
    >>> import jax
    >>> draws = jax.random.normal(jax.random.key(0), (500, 4, 3))  # independent draws: ESS near 2000
    >>> diagnostics = chain_diagnostics(draws)
    >>> diagnostics.effective_sample_size.shape, bool(abs(diagnostics.potential_scale_reduction - 1).max() < 0.01)
    ((3,), True)
    """
    import blackjax.diagnostics  # noqa: PLC0415 - only this function needs it

    positions = jnp.asarray(positions)
    if positions.ndim != 3:
        raise ValueError(f"positions must have shape (num_samples, n_chains, d), got {positions.shape}; add a "
                         "trailing axis for a scalar quantity")
    num_samples, num_chains, _ = positions.shape
    if num_chains < 2 or num_samples < 4:
        raise ValueError(f"need at least 2 chains of 4 draws for R-hat and the ESS, got {num_chains} chains of "
                         f"{num_samples}")
    return ChainDiagnostics(
        effective_sample_size=blackjax.diagnostics.effective_sample_size(positions, chain_axis=1, sample_axis=0),
        potential_scale_reduction=blackjax.diagnostics.potential_scale_reduction(positions, chain_axis=1,
                                                                                 sample_axis=0),
    )
