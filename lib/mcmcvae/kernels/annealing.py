r"""Annealed importance sampling (Neal 2001) with :mod:`mcmcvae.kernels.hmc` transitions: the one AIS loop.

Chains start at ``z_0 ~ q = N(loc, diag(scale^2))`` and pass through inverse temperatures
``beta_0 = 0 < beta_1 < ... < beta_N`` of the geometric path

.. math:: \pi_t(z) \propto q(z)^{1 - \beta_t}\, p(x, z)^{\beta_t},

adding, for ``t = 1..N``, ``(beta_t - beta_{t-1}) (log p(x, z) - log q(z))`` at the current ``z`` to each chain's
log weight and then moving ``z`` by one HMC transition that leaves ``pi_t`` invariant. The transitions are
:func:`mcmcvae.kernels.step_chains` of ``hmc.build_kernel(L)`` on the annealed log density, with
``(beta_t, context, loc, scale)`` as its context (the inverse temperature shared, the rest per chain or shared).
Each temperature evaluates ``log p(x, z)`` and its gradient once to weight and to start the kernel state at the new
temperature, and ``L`` times inside the transition.

Used by :func:`mcmcvae.evaluate.ais_log_likelihood` (one data point, a sigmoidal schedule, the inverse mass matrix
``diag(scale^2)``, step sizes adapted across temperatures) and by the ``aiwae`` training method (one chain per
(image, sample), a linear schedule, identity mass, step sizes per temperature).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcmcvae.kernels import hmc
from mcmcvae.kernels.chains import step_chains
from mcmcvae.kernels.preconditioner import Preconditioner
from mcmcvae.types import Array, PRNGKey

__all__ = ["AnnealingResult", "anneal", "diagonal_normal_logpdf"]


class AnnealingResult(NamedTuple):
    """What :func:`anneal` returns.

    Attributes
    ----------
    log_weights
        ``(m,)``: each chain's ``log w`` after the increment to ``beta_N`` (no increment beyond it).
    positions
        ``(m, d)``: the chains after the transition at ``beta_N``.
    step_size
        ``(N,)``: the step size of each transition.
    acceptance_rate
        ``(N,)``: the chains' mean acceptance rate at each transition.
    """

    log_weights: Array
    positions: Array
    step_size: Array
    acceptance_rate: Array


def diagonal_normal_logpdf(z: Array, loc: Array, scale: Array) -> Array:
    """``log N(z; loc, diag(scale^2))`` summed over the last axis."""
    return jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), axis=-1)


def _annealed_logdensity(log_joint_fn: Callable, has_context: bool):
    def logdensity(z, annealing_context):
        beta, context, loc, scale = annealing_context
        log_q = diagonal_normal_logpdf(z, loc, scale)
        log_p = log_joint_fn(z, context) if has_context else log_joint_fn(z)
        return log_q + beta * (log_p - log_q)

    return logdensity


def anneal(rng_key: PRNGKey, log_joint_fn: Callable, positions: Array, loc: Array, scale: Array, betas: Array, *,
           num_integration_steps: int, log_step_sizes: Array | None = None, initial_step_size: float = 0.5,
           target_acceptance_rate: float = 0.65, step_size_adaptation_rate: float = 0.5,
           mass_scale: Array | None = None, context: Any = None, context_axes: Any = 0) -> AnnealingResult:
    r"""Run AIS from ``q = N(loc, diag(scale^2))`` along ``betas`` with one HMC transition per temperature.

    Parameters
    ----------
    rng_key
        Transition ``t`` (``1..N``) uses ``fold_in(rng_key, t)``, split once per chain.
    log_joint_fn
        ``log p(x, z)``: ``log_joint_fn(z)``, or ``log_joint_fn(z, context)`` with a ``context``.
    positions
        ``(m, d)`` draws from ``q``.
    loc, scale
        ``q``'s mean and standard deviation: ``(d,)`` shared by the chains or ``(m, d)`` one per chain.
    betas
        ``(N + 1,)`` inverse temperatures from ``beta_0 = 0``; transitions at ``beta_1 .. beta_N``.
    num_integration_steps
        ``L`` leapfrog steps per transition.
    log_step_sizes
        ``(N,)`` fixed ``log h_t``; None adapts across temperatures from ``initial_step_size``:
        ``log h_{t+1} = log h_t + step_size_adaptation_rate (a_t - target_acceptance_rate)``, with ``a_t`` the
        chains' mean acceptance at ``t`` (the step at ``t`` depends only on what came before ``t``).
    mass_scale
        ``C`` of the kernel, ``(d,)`` and shared: the inverse mass matrix is ``diag(mass_scale^2)`` and the step
        size is in its units. None: the identity.
    context, context_axes
        ``log_joint_fn``'s context and how it splits over chains (``vmap`` ``in_axes``).

    Returns
    -------
    AnnealingResult

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmcvae.kernels.annealing import anneal
    >>> log_joint = lambda z: -0.5 * jnp.sum((z - 1.0) ** 2)
    >>> z0 = jax.random.normal(jax.random.key(0), (16, 2))
    >>> result = anneal(jax.random.key(1), log_joint, z0, jnp.zeros(2), jnp.ones(2), jnp.linspace(0.0, 1.0, 11),
    ...                 num_integration_steps=3)
    >>> result.log_weights.shape, result.acceptance_rate.shape
    ((16,), (10,))
    """
    positions = jnp.asarray(positions)
    num_chains, dim = positions.shape
    dtype = positions.dtype
    betas = jnp.asarray(betas, dtype)
    num_transitions = betas.shape[0] - 1
    adapt = log_step_sizes is None
    fixed = jnp.zeros((num_transitions,), dtype) if adapt else jnp.asarray(log_step_sizes, dtype)
    proposal_axes = 0 if jnp.ndim(loc) == 2 else None
    has_context = context is not None
    kernel = hmc.build_kernel(num_integration_steps)
    logdensity = _annealed_logdensity(log_joint_fn, has_context)
    mass = jnp.ones((dim,), dtype) if mass_scale is None else jnp.asarray(mass_scale, dtype)

    def log_joint_and_grad(z, ctx):
        return jax.value_and_grad(lambda zz: log_joint_fn(zz, ctx) if has_context else log_joint_fn(zz))(z)

    batched_log_joint = jax.vmap(log_joint_and_grad, in_axes=(0, context_axes if has_context else None))

    def body(carry, inputs):
        z, log_w, log_h = carry
        t, fixed_log_h = inputs
        log_h = log_h if adapt else fixed_log_h
        beta, beta_prev = betas[t], betas[t - 1]
        lp, grad_lp = batched_log_joint(z, context)
        lq = diagonal_normal_logpdf(z, loc, scale)
        grad_lq = -(z - loc) / scale**2
        log_w = log_w + (beta - beta_prev) * (lp - lq)
        # The kernel state of pi_t from the two densities' values, not evaluated afresh.
        states = hmc.State(z, lq + beta * (lp - lq), grad_lq + beta * (grad_lp - grad_lq))
        states, info = step_chains(jax.random.fold_in(rng_key, t), kernel, states, logdensity,
                                   Preconditioner(log_h, mass), context=(beta, context, loc, scale),
                                   context_axes=(None, context_axes if has_context else None, proposal_axes,
                                                 proposal_axes))
        acceptance = jnp.mean(info.acceptance_rate)
        next_log_h = log_h + step_size_adaptation_rate * (acceptance - target_acceptance_rate) if adapt else log_h
        return (states.position, log_w, next_log_h), (jnp.exp(log_h), acceptance)

    init = (positions, jnp.zeros((num_chains,), dtype), jnp.log(jnp.asarray(initial_step_size, dtype)))
    (z, log_w, _), (step_sizes, acceptance) = jax.lax.scan(
        body, init, (jnp.arange(1, num_transitions + 1), fixed))
    return AnnealingResult(log_w, z, step_sizes, acceptance)
