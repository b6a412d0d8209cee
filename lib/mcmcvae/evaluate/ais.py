r"""Annealed importance sampling (AIS) estimates of one data point's ``log p(x)``.

AIS (Neal, 2001) anneals from the diagonal Gaussian proposal ``q(z) = N(z; mu, diag(sigma^2))`` to the
unnormalised posterior ``f(z) = p(x, z)`` along the geometric path

.. math:: \pi_t(z) \propto q(z)^{1 - \beta_t} f(z)^{\beta_t}, \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1 .

Each chain starts at ``z_0 ~ q``, and for ``t = 1..T`` adds ``(beta_t - beta_{t-1}) (log f - log q)(z_{t-1})`` to
its log weight, then (for ``t < T``) moves ``z_{t-1} -> z_t`` with an HMC transition that leaves ``pi_t``
invariant. ``E[w] = p(x)``, so ``log mean(w)`` over chains is, like importance sampling, a stochastic lower
bound of ``log p(x)``, whose gap closes as ``T`` grows. ``T = 1`` is plain importance sampling.

Schedule: the sigmoidal schedule of Grosse et al. (2015) used by Wu et al. (2017),
``beta_t ∝ sigmoid(delta (2t/T - 1))`` rescaled to run from 0 to 1 with ``delta = 4``, which spends more
temperatures near both ends of the path; ``schedule="linear"`` gives ``beta_t = t / T``.

Transitions: :mod:`mcmcvae.kernels.hmc` with ``num_leapfrog_steps`` leapfrog steps and inverse mass matrix
``diag(sigma^2)`` (``C = diag(sigma)``, so the step size is in units of ``sigma``), run by the library's AIS loop
:func:`mcmcvae.kernels.annealing.anneal` on the annealed log density. Unless ``step_size`` is given, the step size
adapts across temperatures: the step size at temperature ``t + 1`` is ``h_{t+1} = h_t exp(rate (a_t - target))``
with ``a_t`` the chains' mean acceptance rate at temperature ``t``. The step size used at ``t`` thus depends only on
what happened before ``t``, and the transition at ``t`` still leaves ``pi_t`` invariant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.batching import map_padded_batches
from mcmcvae.evaluate.importance import _check_positive_int, _check_proposal
from mcmcvae.kernels.annealing import anneal, diagonal_normal_logpdf
from mcmcvae.types import Array, ArrayLike, LogJointFn, PRNGKey

__all__ = ["ais_log_likelihood", "ais_log_weights", "annealing_schedule", "dataset_ais_log_likelihood", "AISInfo",
           "DatasetAIS"]

_SIGMOID_RADIUS = 4.0


class AISInfo(NamedTuple):
    """Per-chain AIS weights and the transitions' diagnostics.

    Attributes
    ----------
    log_weights
        ``(num_chains,)``, each chain's ``log w``; ``logsumexp(log_weights) - log(num_chains)`` is the estimate.
    step_size
        ``(num_temperatures - 1,)``, the leapfrog step size used at each intermediate temperature
        (in the whitened coordinates ``u = (z - mu) / sigma``).
    acceptance_rate
        ``(num_temperatures - 1,)``, the chains' mean HMC acceptance rate at each intermediate temperature.
    """

    log_weights: Array
    step_size: Array
    acceptance_rate: Array


def annealing_schedule(num_temperatures: int, schedule: str = "sigmoid") -> np.ndarray:
    r"""Inverse temperatures ``beta_0 = 0 < ... < beta_T = 1``, an array of ``T + 1`` values.

    ``"sigmoid"``: :math:`\tilde\beta_t = \operatorname{sigmoid}(\delta (2t/T - 1))` with :math:`\delta = 4`,
    :math:`\beta_t = (\tilde\beta_t - \tilde\beta_0) / (\tilde\beta_T - \tilde\beta_0)` (Grosse et al., 2015;
    Wu et al., 2017). ``"linear"``: :math:`\beta_t = t / T`.

    Examples
    --------
    >>> annealing_schedule(4, "linear")
    array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    num_temperatures = _check_positive_int(num_temperatures, "num_temperatures")
    t = np.arange(num_temperatures + 1) / num_temperatures
    if schedule == "linear":
        betas = t
    elif schedule == "sigmoid":
        squashed = 1.0 / (1.0 + np.exp(-_SIGMOID_RADIUS * (2.0 * t - 1.0)))
        betas = (squashed - squashed[0]) / (squashed[-1] - squashed[0])
    else:
        raise ValueError(f"schedule must be 'sigmoid' or 'linear', got {schedule!r}")
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def ais_log_weights(
    rng_key: PRNGKey,
    log_joint_fn: LogJointFn,
    proposal_loc: ArrayLike,
    proposal_scale: ArrayLike,
    *,
    num_temperatures: int,
    num_chains: int,
    num_leapfrog_steps: int = 10,
    step_size: ArrayLike | None = None,
    initial_step_size: float = 0.5,
    target_acceptance_rate: float = 0.65,
    step_size_adaptation_rate: float = 0.5,
    schedule: str = "sigmoid",
) -> AISInfo:
    r"""Run AIS chains and return their log weights and diagnostics.

    Arguments as :func:`ais_log_likelihood`, which is ``logsumexp(log_weights) - log(num_chains)`` of this.

    Returns
    -------
    AISInfo
        ``log_weights`` ``(num_chains,)``, and the per-temperature ``step_size`` and mean ``acceptance_rate``.

    Examples
    --------
    A linear Gaussian model, ``z ~ N(0, I)``, ``x | z ~ N(z, I)``, whose ``log p(x) = log N(x; 0, 2 I)`` is known:

    >>> import jax, jax.numpy as jnp
    >>> from jax.scipy.stats import norm
    >>> x = jnp.array([0.5, -1.0])
    >>> log_joint = lambda z: jnp.sum(norm.logpdf(z) + norm.logpdf(x, z, 1.0))
    >>> exact = jnp.sum(norm.logpdf(x, 0.0, jnp.sqrt(2.0)))
    >>> loc, scale = 0.4 * x, jnp.ones(2)  # a start away from the posterior N(x / 2, I / 2)
    >>> info = ais_log_weights(jax.random.key(0), log_joint, loc, scale, num_temperatures=100, num_chains=16)
    >>> info.log_weights.shape, bool(0.5 < info.acceptance_rate.mean() < 0.95)  # adapted towards 0.65
    ((16,), True)
    """
    num_temperatures = _check_positive_int(num_temperatures, "num_temperatures")
    num_chains = _check_positive_int(num_chains, "num_chains")
    num_leapfrog_steps = _check_positive_int(num_leapfrog_steps, "num_leapfrog_steps")
    adapt = step_size is None
    if not adapt:
        step_size = jnp.broadcast_to(jnp.asarray(step_size), (num_temperatures - 1,))
        if not isinstance(step_size, jax.core.Tracer) and not np.all(np.asarray(step_size) > 0):
            raise ValueError("step_size must be positive, or None to adapt it")
    if not initial_step_size > 0:
        raise ValueError(f"initial_step_size must be positive, got {initial_step_size!r}")
    if not 0.0 < target_acceptance_rate < 1.0:
        raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {target_acceptance_rate!r}")
    loc, scale = _check_proposal(proposal_loc, proposal_scale)
    dtype = loc.dtype
    betas = jnp.asarray(annealing_schedule(num_temperatures, schedule), dtype)
    init_key, transition_key = jax.random.split(rng_key)
    noise = jax.vmap(lambda key: jax.random.normal(key, loc.shape, dtype))(jax.random.split(init_key, num_chains))
    # transitions at beta_1 .. beta_{T-1}; the last increment, to beta_T = 1, follows without a transition
    result = anneal(transition_key, log_joint_fn, loc + scale * noise, loc, scale, betas[:-1],
                    num_integration_steps=num_leapfrog_steps,
                    log_step_sizes=None if adapt else jnp.log(step_size.astype(dtype)),
                    initial_step_size=initial_step_size, target_acceptance_rate=target_acceptance_rate,
                    step_size_adaptation_rate=step_size_adaptation_rate, mass_scale=scale)
    z = result.positions
    last = (betas[-1] - betas[-2]) * (jax.vmap(log_joint_fn)(z) - diagonal_normal_logpdf(z, loc, scale))
    return AISInfo(result.log_weights + last, result.step_size, result.acceptance_rate)


def ais_log_likelihood(
    rng_key: PRNGKey,
    log_joint_fn: LogJointFn,
    proposal_loc: ArrayLike,
    proposal_scale: ArrayLike,
    *,
    num_temperatures: int,
    num_chains: int,
    num_leapfrog_steps: int = 10,
    step_size: ArrayLike | None = None,
    initial_step_size: float = 0.5,
    target_acceptance_rate: float = 0.65,
    step_size_adaptation_rate: float = 0.5,
    schedule: str = "sigmoid",
) -> Array:
    r"""Annealed importance sampling estimate of one data point's ``log p(x)``.

    .. math::

        \log w^{(k)} = \sum_{t=1}^{T} (\beta_t - \beta_{t-1})
            \big(\log p(x, z^{(k)}_{t-1}) - \log q(z^{(k)}_{t-1})\big),
        \qquad
        \log \hat p(x) = \log \frac{1}{K} \sum_{k=1}^{K} w^{(k)},

    with ``z_0 ~ q = N(mu, diag(sigma^2))`` and ``z_t`` an HMC move of ``z_{t-1}`` leaving
    ``pi_t ∝ q^(1 - beta_t) p(x, .)^beta_t`` invariant (Neal, 2001; Wu et al., 2017). The ``K`` chains run under
    ``vmap``, the temperatures under ``lax.scan``. Pure; does not jit itself (keep the integer arguments
    static under ``jax.jit``).

    Parameters
    ----------
    rng_key
        A ``jax.random.key``.
    log_joint_fn
        One data point's ``log p(x, z)`` as a function of ``z`` of shape ``(d,)``; differentiable.
    proposal_loc, proposal_scale
        Mean ``mu`` and standard deviation ``sigma`` of the diagonal Gaussian start distribution, ``(d,)``.
    num_temperatures
        ``T``, the number of annealing steps: ``beta_0 = 0 < beta_1 < ... < beta_T = 1``, with ``T - 1`` HMC
        transitions (at ``beta_1 .. beta_{T-1}``). ``T = 1`` is importance sampling with ``num_chains`` samples.
    num_chains
        ``K``, independent AIS chains.
    num_leapfrog_steps
        Leapfrog steps per HMC transition; the inverse mass matrix is ``diag(sigma^2)``.
    step_size
        Leapfrog step size in units of ``sigma`` (the whitened coordinates ``(z - mu) / sigma``). ``None``
        adapts it across temperatures: ``h_{t+1} = h_t exp(step_size_adaptation_rate (a_t - target))``, with
        ``a_t`` the mean acceptance rate over chains at temperature ``t``, starting from ``initial_step_size``.
        A number fixes it for every temperature; an array of shape ``(num_temperatures - 1,)`` gives one per
        intermediate temperature (e.g. ``AISInfo.step_size`` of an adapted pilot run).
    initial_step_size
        The adapted step size's value at the first intermediate temperature.
    target_acceptance_rate
        The acceptance rate the adaptation steers towards.
    step_size_adaptation_rate
        Gain of the adaptation on the log step size.
    schedule
        ``"sigmoid"`` (default; Grosse et al. 2015, ``delta = 4``) or ``"linear"``; see :func:`annealing_schedule`.

    Returns
    -------
    Array
        Scalar estimate of ``log p(x)`` in nats, ``logsumexp(log w) - log K``.

    Notes
    -----
    With a fixed ``step_size`` every chain's weight is exactly unbiased, ``E[w] = p(x)``. The adapted step size at
    ``t`` is a function of all chains' past acceptances only, so each transition still leaves ``pi_t``
    invariant; pooling over chains makes the step sizes nearly deterministic for many chains, and the
    estimator is consistent as ``num_chains`` grows (as adaptive SMC is). For a strictly unbiased run, read the
    adapted step sizes (``AISInfo.step_size``) from :func:`ais_log_weights` on a pilot key and pass them as
    ``step_size``.

    Examples
    --------
    A linear Gaussian model, ``z ~ N(0, I)``, ``x | z ~ N(z, I)``, whose ``log p(x) = log N(x; 0, 2 I)`` is known:

    >>> import jax, jax.numpy as jnp
    >>> from jax.scipy.stats import norm
    >>> x = jnp.array([0.5, -1.0])
    >>> log_joint = lambda z: jnp.sum(norm.logpdf(z) + norm.logpdf(x, z, 1.0))
    >>> exact = jnp.sum(norm.logpdf(x, 0.0, jnp.sqrt(2.0)))
    >>> loc, scale = 0.4 * x, jnp.ones(2)  # a start away from the posterior N(x / 2, I / 2)
    >>> estimate = ais_log_likelihood(jax.random.key(0), log_joint, loc, scale, num_temperatures=100,
    ...                               num_chains=16)
    >>> bool(jnp.abs(estimate - exact) < 0.05)
    True
    """
    info = ais_log_weights(
        rng_key,
        log_joint_fn,
        proposal_loc,
        proposal_scale,
        num_temperatures=num_temperatures,
        num_chains=num_chains,
        num_leapfrog_steps=num_leapfrog_steps,
        step_size=step_size,
        initial_step_size=initial_step_size,
        target_acceptance_rate=target_acceptance_rate,
        step_size_adaptation_rate=step_size_adaptation_rate,
        schedule=schedule,
    )
    return jax.nn.logsumexp(info.log_weights) - math.log(num_chains)


class DatasetAIS(NamedTuple):
    """Per-data-point AIS estimates and the transitions' mean acceptance.

    Attributes
    ----------
    log_likelihood
        ``(n,)``, each data point's AIS estimate of ``log p(x_i)`` in nats.
    acceptance_rate
        ``(n,)``, each data point's HMC acceptance rate, averaged over chains and intermediate temperatures.
    """

    log_likelihood: np.ndarray
    acceptance_rate: np.ndarray


def dataset_ais_log_likelihood(
    rng_key: PRNGKey,
    log_joint_fn,
    proposal_fn,
    images,
    *,
    num_temperatures: int,
    num_chains: int,
    batch_size: int = 100,
    variance_factor: float = 1.0,
    scale_factor: float = 1.0,
    **options,
) -> DatasetAIS:
    r"""AIS ``log p(x_i)`` for every data point of a data set, ``batch_size`` points per jitted call.

    Data point ``i`` runs :func:`ais_log_weights` with the key ``fold_in(rng_key, i)`` (so the results do not
    depend on ``batch_size``), starting from ``N(mu(x_i), diag(sigma'(x_i)^2))`` with
    ``sigma' = sigma * scale_factor * sqrt(variance_factor)`` and ``(mu, sigma) = proposal_fn(x_i)``, the
    conventions of :func:`mcmcvae.evaluate.importance.dataset_log_likelihood`. Each data point adapts its own
    step sizes across temperatures (unless ``step_size`` is given in ``options``). Nothing is trained.

    Parameters
    ----------
    rng_key
        A ``jax.random.key``.
    log_joint_fn
        ``log_joint_fn(x, z) -> scalar``, one data point's ``log p(x, z)``; vmappable and differentiable in ``z``.
    proposal_fn
        ``proposal_fn(x) -> (loc, scale)``, each ``(d,)``; vmappable.
    images
        ``(n, ...)``, or a pytree of arrays sharing the leading axis ``n`` (e.g. images with precomputed
        proposals); data point ``i`` is passed to both functions.
    num_temperatures, num_chains
        ``T`` and ``K`` of :func:`ais_log_likelihood`.
    batch_size
        Data points per jitted call; the last batch is padded, so the function compiles once.
    variance_factor, scale_factor
        Factors on the start distribution's variance and standard deviation.
    **options
        Passed to :func:`ais_log_weights` (``num_leapfrog_steps``, ``step_size``, ``target_acceptance_rate``,
        ``schedule``, ...).

    Returns
    -------
    DatasetAIS
        ``log_likelihood`` and ``acceptance_rate``, ``(n,)`` numpy arrays each.

    Examples
    --------
    Three data points of the linear Gaussian model ``z ~ N(0, I)``, ``x | z ~ N(z, I)``, with an "encoder" that
    proposes ``N(0.4 x, I)``:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jax.scipy.stats import norm
    >>> log_joint = lambda x, z: jnp.sum(norm.logpdf(z) + norm.logpdf(x, z, 1.0))
    >>> encoder = lambda x: (0.4 * x, jnp.ones_like(x))
    >>> data = jnp.array([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.3]])
    >>> result = dataset_ais_log_likelihood(jax.random.key(0), log_joint, encoder, data, num_temperatures=100,
    ...                                     num_chains=16, variance_factor=1.5)
    >>> exact = norm.logpdf(data, 0.0, np.sqrt(2.0)).sum(axis=1)  # log N(x; 0, 2 I)
    >>> bool(np.allclose(result.log_likelihood, exact, atol=0.05))
    True
    """
    num_temperatures = _check_positive_int(num_temperatures, "num_temperatures")
    num_chains = _check_positive_int(num_chains, "num_chains")
    if not scale_factor > 0 or not variance_factor > 0:
        raise ValueError(f"scale_factor and variance_factor must be positive, got {scale_factor}, {variance_factor}")
    std_factor = scale_factor * math.sqrt(variance_factor)

    def point(index, x):
        loc, scale = proposal_fn(x)
        info = ais_log_weights(jax.random.fold_in(rng_key, index), lambda z: log_joint_fn(x, z), loc,
                               scale * std_factor, num_temperatures=num_temperatures, num_chains=num_chains,
                               **options)
        acceptance = jnp.mean(info.acceptance_rate) if num_temperatures > 1 else jnp.ones((), loc.dtype)
        return jax.nn.logsumexp(info.log_weights) - math.log(num_chains), acceptance

    # jitted afresh on every call: a cached trace would keep whatever parameters the functions closed over
    batch_fn = jax.jit(jax.vmap(point))
    log_likelihood, acceptance = map_padded_batches(lambda b, indices, batch: batch_fn(jnp.asarray(indices), batch),
                                                    images, batch_size)
    return DatasetAIS(log_likelihood, acceptance)
