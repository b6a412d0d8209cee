r"""The one chain loop: ``K`` steps of a kernel over a batch of chains, with or without a tuner.

Every chain ``i`` targets ``logdensity_fn(z)`` or, with a ``context``, ``logdensity_fn(z, context_i)``, where the
context is split over the chains along ``context_axes`` (a ``jax.vmap`` ``in_axes`` prefix: ``0`` for per-chain
values such as each chain's image, ``None`` for shared ones such as decoder parameters or an inverse temperature).
All chains share one preconditioner (or one tuner state). Steps run under ``lax.scan``, chains under ``vmap``;
step ``k`` uses the key ``fold_in(rng_key, k)``, split once per chain.

This is the loop the tuners' ``run``, every MCMC training method and annealed importance sampling use:

- :func:`init_chains`: kernel states for positions ``(n, d)``;
- :func:`step_chains`: one kernel step of every chain with a fixed preconditioner;
- :func:`run_chains`: ``num_steps`` of them, or of a tuner's ``update`` (see :mod:`mcmcvae.adaptation`).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mcmcvae.kernels.preconditioner import Preconditioner
from mcmcvae.types import Array, PRNGKey

__all__ = ["ChainRun", "init_chains", "step_chains", "run_chains", "with_context"]


class ChainRun(NamedTuple):
    """What :func:`run_chains` returns.

    Attributes
    ----------
    states
        The chains' last kernel states (leading axis ``n_chains``).
    info
        The per-step infos stacked along a leading ``num_steps`` axis (the kernel's ``Info``, or the tuner's).
    tuner_state
        The tuner's last state; None without a tuner.
    """

    states: Any
    info: Any
    tuner_state: Any = None


def with_context(logdensity_fn: Callable, context: Any) -> Callable:
    """``logdensity_fn`` itself when ``context`` is None, else ``z -> logdensity_fn(z, context)``."""
    if context is None:
        return logdensity_fn
    return lambda position: logdensity_fn(position, context)


def init_chains(algorithm: ModuleType, positions: Array, logdensity_fn: Callable, *, context: Any = None,
                context_axes: Any = 0):
    """Kernel states (``algorithm.init``) for the chains at ``positions`` of shape ``(n_chains, d)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> log_joint = lambda z, x: -0.5 * jnp.sum((z - x) ** 2)
    >>> states = mv.kernels.init_chains(mv.kernels.mala, jnp.zeros((4, 2)), log_joint, context=jnp.ones((4, 2)))
    >>> states.logdensity_grad[0]
    Array([1., 1.], dtype=float32)
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 2:
        raise ValueError(f"positions must have shape (n_chains, d), got {positions.shape}")
    return jax.vmap(lambda z, c: algorithm.init(z, with_context(logdensity_fn, c)), in_axes=(0, context_axes))(
        positions, context)


def step_chains(rng_key: PRNGKey, kernel: Callable, states, logdensity_fn: Callable, preconditioner: Preconditioner,
                *, context: Any = None, context_axes: Any = 0):
    """One step of ``kernel`` for every chain, all with ``preconditioner``; chain ``i`` uses ``split(rng_key)[i]``.

    Returns the batched ``(states, info)``.
    """
    num_chains = jax.tree.leaves(states)[0].shape[0]
    step = jax.vmap(lambda key, state, ctx: kernel(key, state, with_context(logdensity_fn, ctx), preconditioner),
                    in_axes=(0, 0, context_axes))
    return step(jax.random.split(rng_key, num_chains), states, context)


def run_chains(rng_key: PRNGKey, states, logdensity_fn: Callable, num_steps: int, *, kernel: Callable | None = None,
               preconditioner: Preconditioner | None = None, tuner=None, tuner_state=None, context: Any = None,
               context_axes: Any = 0) -> ChainRun:
    r"""Run ``num_steps`` steps of a batch of chains under ``lax.scan``.

    Either with a fixed ``kernel`` (built by a kernel module's ``build_kernel``) and ``preconditioner``, or with a
    ``tuner`` (:mod:`mcmcvae.adaptation`) from ``tuner_state``: each step is then ``tuner.update``, which moves the
    chains with the tuner's own kernel and adapts its state.

    Parameters
    ----------
    rng_key
        Step ``k`` uses ``fold_in(rng_key, k)``.
    states
        The chains' kernel states (:func:`init_chains`), leading axis ``n_chains``.
    logdensity_fn
        ``log pi(z)``, or ``log pi(z, context)`` with a ``context``.
    num_steps
        ``K`` (static).
    kernel, preconditioner
        The fixed kernel and its parameters (without a tuner).
    tuner, tuner_state
        A tuner and its state (instead of ``kernel`` and ``preconditioner``).
    context, context_axes
        Per-chain and shared arguments of ``logdensity_fn`` and how they split over chains (``vmap`` ``in_axes``).

    Returns
    -------
    ChainRun
        Final states, the stacked per-step infos and the tuner's final state.

    Examples
    --------
    Ten MALA steps of 8 chains, each with its own data point:

    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> log_joint = lambda z, x: -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((x - z) ** 2)
    >>> x = jnp.ones((8, 3))
    >>> states = mv.kernels.init_chains(mv.kernels.mala, jnp.zeros((8, 3)), log_joint, context=x)
    >>> run = mv.kernels.run_chains(jax.random.key(0), states, log_joint, 10, kernel=mv.kernels.mala.build_kernel(),
    ...                             preconditioner=mv.kernels.Preconditioner.diagonal(3, step_size=0.5), context=x)
    >>> run.info.acceptance_rate.shape
    (10, 8)

    The same with the speed measure tuning ``(h, C)`` on the way:

    >>> tuner = mv.adaptation.speed_measure(mv.kernels.mala)
    >>> run = mv.kernels.run_chains(jax.random.key(0), states, log_joint, 10, tuner=tuner, tuner_state=tuner.init(3),
    ...                             context=x)
    >>> tuner.final(run.tuner_state).scale.shape
    (3,)
    """
    if (tuner is None) == (kernel is None):
        raise ValueError("run_chains takes either kernel= and preconditioner= or tuner= and tuner_state=")
    if tuner is None and preconditioner is None:
        raise ValueError("run_chains: a fixed kernel needs its preconditioner=")
    if tuner is not None and tuner_state is None:
        raise ValueError("run_chains: a tuner needs its tuner_state= (tuner.init(dim))")

    def one_step(carry, step):
        chain_states, adaptation_state = carry
        key = jax.random.fold_in(rng_key, step)
        if tuner is None:
            chain_states, info = step_chains(key, kernel, chain_states, logdensity_fn, preconditioner,
                                             context=context, context_axes=context_axes)
        else:
            chain_states, adaptation_state, info = tuner.update(key, adaptation_state, chain_states, logdensity_fn,
                                                                context, context_axes=context_axes)
        return (chain_states, adaptation_state), info

    (states, tuner_state), info = lax.scan(one_step, (states, tuner_state), jnp.arange(num_steps))
    return ChainRun(states, info, tuner_state)
