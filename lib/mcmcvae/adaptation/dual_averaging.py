r"""Step-size adaptation by dual averaging (``C = I``), on BlackJAX's public dual-averaging scheme.

Nesterov's primal-dual averaging as used by Hoffman and Gelman (2014, section 3.2.1): with ``x = log h``,
``H_t = a* - a_t`` (target minus the acceptance rate at step ``t``, here averaged over chains),

.. math::

    x_{t+1} = \mu - \frac{\sqrt{t}}{\gamma} \frac{1}{t + t_0} \sum_{i \le t} H_i, \qquad
    \bar x_{t+1} = t^{-\kappa} x_{t+1} + (1 - t^{-\kappa}) \bar x_t,

with ``mu = log(10 h_0)``. The chains move with ``h = exp(x_t)``; the tuned step size is ``exp(x-bar)``.
The state is ``blackjax.adaptation.step_size.DualAveragingAdaptationState``; ``init`` starts it afresh (for
instance from ``h = 1`` at the start of every VAE epoch).
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation
from jax import lax

from mcmcvae.adaptation import _common
from mcmcvae.adaptation._common import AdaptationResults
from mcmcvae.kernels import Preconditioner
from mcmcvae.types import Array, PRNGKey

__all__ = ["DualAveragingInfo", "DualAveragingAdaptation", "dual_averaging", "DualAveragingAdaptationState"]


class DualAveragingInfo(NamedTuple):
    """Diagnostics of one dual-averaging update.

    Attributes
    ----------
    acceptance_rate, is_accepted, is_divergent
        Per chain, from the kernel.
    step_size
        ``h`` used in this step.
    averaged_step_size
        ``exp(x-bar)`` after this step.
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    step_size: Array
    averaged_step_size: Array


class DualAveragingAdaptation(NamedTuple):
    """Dual averaging of ``h`` for one kernel; built by :func:`dual_averaging`.

    Attributes
    ----------
    init
        ``init(initial_step_size=1.0) -> DualAveragingAdaptationState``.
    update
        ``update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0)
        -> (chain_states, state, DualAveragingInfo)``: one kernel step for every chain with ``h = exp(x_t)`` and
        one dual-averaging step on the acceptance rate averaged over chains.
    init_chains
        ``init_chains(positions, logdensity_fn=None, context=None, *, context_axes=0)``.
    run
        ``run(rng_key, positions, num_steps) -> (AdaptationResults, DualAveragingInfo)``.
    to_preconditioner
        ``to_preconditioner(state, dim, *, averaged=True)``: ``C = I`` and ``h = exp(x-bar)`` (or ``exp(x_t)``).
    algorithm, target_acceptance_rate, num_integration_steps
        The settings.
    """

    init: Callable
    update: Callable
    init_chains: Callable
    run: Callable
    to_preconditioner: Callable
    algorithm: ModuleType
    target_acceptance_rate: float
    num_integration_steps: int


def init_state(da_init: Callable, initial_step_size) -> DualAveragingAdaptationState:
    """BlackJAX's dual-averaging state at ``h = initial_step_size``, with fixed dtypes, so it can be a ``lax.scan``
    carry (BlackJAX's ``init`` mixes Python scalars in)."""
    state = da_init(jnp.asarray(initial_step_size, jnp.float32))
    return DualAveragingAdaptationState(
        jnp.asarray(state.log_step_size, jnp.float32),
        jnp.asarray(state.log_step_size_avg, jnp.float32),
        jnp.asarray(state.step, jnp.int32),
        jnp.asarray(state.avg_error, jnp.float32),
        jnp.asarray(state.mu, jnp.float32),
    )


def update_state(
    da_update: Callable, state: DualAveragingAdaptationState, acceptance_rate
) -> DualAveragingAdaptationState:
    """One BlackJAX dual-averaging step on ``acceptance_rate``, keeping the carry's dtypes (BlackJAX's update may
    promote them)."""
    new_state = da_update(state, acceptance_rate)
    return DualAveragingAdaptationState(
        *(jnp.asarray(new, jnp.asarray(old).dtype) for new, old in zip(new_state, state))
    )


def _to_preconditioner(state: DualAveragingAdaptationState, dim: int, *, averaged: bool = True) -> Preconditioner:
    log_step_size = state.log_step_size_avg if averaged else state.log_step_size
    return Preconditioner(jnp.asarray(log_step_size, jnp.float32), jnp.ones((dim,), jnp.float32))


def dual_averaging(
    algorithm: ModuleType,
    logdensity_fn: Callable | None = None,
    *,
    target_acceptance_rate: float | None = None,
    num_integration_steps: int | None = None,
    initial_step_size: float = 1.0,
    t0: int = 10,
    gamma: float = 0.05,
    kappa: float = 0.75,
    divergence_threshold: float = 1000.0,
) -> DualAveragingAdaptation:
    """Tune the step size ``h`` of a MALA or HMC kernel (``C = I``) by dual averaging.

    Built on ``blackjax.adaptation.step_size.dual_averaging_adaptation``, fed with the acceptance rate averaged
    over chains (one ``h`` for all chains).

    Parameters
    ----------
    algorithm
        ``mv.kernels.mala`` or ``mv.kernels.hmc``.
    logdensity_fn
        ``log pi`` for ``.run`` and the default of ``update``.
    target_acceptance_rate
        Default 0.55 for MALA, 0.65 for HMC.
    num_integration_steps
        ``L`` for HMC (required).
    initial_step_size
        ``h_0`` used by ``.run``; ``init`` takes its own.
    t0, gamma, kappa
        BlackJAX's dual-averaging constants (Hoffman and Gelman's defaults).
    divergence_threshold
        Passed to the HMC kernel.

    Returns
    -------
    DualAveragingAdaptation

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> adapt = mv.adaptation.dual_averaging(mv.kernels.hmc, logdensity_fn, num_integration_steps=5)
    >>> results, info = adapt.run(jax.random.key(0), jnp.zeros((8, 4)), 100)
    >>> results.parameters.scale
    Array([1., 1., 1., 1.], dtype=float32)

    Carried across batches with per-chain data (restart from ``h = 1`` with ``adapt.init(1.0)``):

    >>> adapt = mv.adaptation.dual_averaging(mv.kernels.mala)
    >>> log_joint = lambda z, x: -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((x - z) ** 2)
    >>> x = jnp.ones((8, 4))
    >>> chains = adapt.init_chains(jnp.zeros((8, 4)), log_joint, x)
    >>> state = adapt.init(1.0)
    >>> chains, state, info = adapt.update(jax.random.key(1), state, chains, log_joint, x)
    """
    name, target, num_steps_l = _common.resolve(algorithm, target_acceptance_rate, num_integration_steps)
    kernel_options = {"divergence_threshold": divergence_threshold} if name == "hmc" else {}
    kernel = _common.build_kernel(name, num_steps_l, **kernel_options)
    da_init, da_update, _ = dual_averaging_adaptation(target, t0=t0, gamma=gamma, kappa=kappa)
    bound_logdensity_fn = logdensity_fn

    def resolve_logdensity(fn):
        fn = bound_logdensity_fn if fn is None else fn
        if fn is None:
            raise ValueError("no logdensity_fn: pass one to dual_averaging(...) or to this call")
        return fn

    def init(initial_step_size: float = 1.0) -> DualAveragingAdaptationState:
        return init_state(da_init, initial_step_size)

    def update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0):
        logdensity = resolve_logdensity(logdensity_fn)
        dim = chain_states.position.shape[-1]
        precond = _to_preconditioner(state, dim, averaged=False)
        chain_states, info = _common.step_chains(kernel, rng_key, chain_states, logdensity, context, context_axes,
                                                 precond)
        new_state = update_state(da_update, state, jnp.mean(info.acceptance_rate))
        return chain_states, new_state, DualAveragingInfo(
            info.acceptance_rate,
            info.is_accepted,
            info.is_divergent,
            precond.step_size,
            jnp.exp(new_state.log_step_size_avg),
        )

    def init_chains(positions, logdensity_fn=None, context=None, *, context_axes=0):
        return _common.init_chains(
            algorithm, positions, resolve_logdensity(logdensity_fn), context, context_axes=context_axes
        )

    def run(rng_key: PRNGKey, positions: Array, num_steps: int):
        positions = jnp.asarray(positions)
        chain_states = init_chains(positions)
        state = init(initial_step_size)

        def one_step(carry, step):
            chains, da_state = carry
            chains, da_state, info = update(jax.random.fold_in(rng_key, step), da_state, chains)
            return (chains, da_state), info

        (chain_states, state), info = lax.scan(one_step, (chain_states, state), jnp.arange(num_steps))
        return AdaptationResults(_to_preconditioner(state, positions.shape[-1]), chain_states, state), info

    return DualAveragingAdaptation(
        init=init,
        update=update,
        init_chains=init_chains,
        run=run,
        to_preconditioner=_to_preconditioner,
        algorithm=algorithm,
        target_acceptance_rate=target,
        num_integration_steps=num_steps_l,
    )
