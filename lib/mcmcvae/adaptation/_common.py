"""What the adaptation algorithms share: dispatch on the kernel module, per-chain log densities, results."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, NamedTuple

import jax

from mcmcvae import kernels
from mcmcvae.types import Array

DEFAULT_TARGET_ACCEPTANCE_RATE = {"mala": 0.55, "hmc": 0.65}


class AdaptationResults(NamedTuple):
    """What ``.run`` returns besides the per-step info.

    Attributes
    ----------
    parameters
        The tuned :class:`mcmcvae.kernels.Preconditioner`.
    states
        The chains' last kernel states (a batched ``State``, leading axis ``n_chains``).
    adaptation_state
        The adaptation's own last state, to continue adapting from.
    """

    parameters: kernels.Preconditioner
    states: Any
    adaptation_state: Any


def algorithm_name(algorithm: ModuleType) -> str:
    """``"mala"`` or ``"hmc"`` for the modules ``mv.kernels.mala`` and ``mv.kernels.hmc``; ValueError otherwise."""
    if algorithm is kernels.mala:
        return "mala"
    if algorithm is kernels.hmc:
        return "hmc"
    raise ValueError(
        f"algorithm must be one of the modules mcmcvae.kernels.mala, mcmcvae.kernels.hmc; got {algorithm!r}"
    )


def resolve(algorithm: ModuleType, target_acceptance_rate, num_integration_steps) -> tuple[str, float, int]:
    """Validate the algorithm's settings; return its name, the target acceptance rate and ``L``."""
    name = algorithm_name(algorithm)
    if name == "hmc":
        if num_integration_steps is None:
            raise ValueError("num_integration_steps (the number of leapfrog steps L) is required for mv.kernels.hmc")
        num_integration_steps = int(num_integration_steps)
        if num_integration_steps < 1:
            raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}")
    else:
        if num_integration_steps not in (None, 1):
            raise ValueError("num_integration_steps is for mv.kernels.hmc; MALA takes one gradient step")
        num_integration_steps = 1
    if target_acceptance_rate is None:
        target_acceptance_rate = DEFAULT_TARGET_ACCEPTANCE_RATE[name]
    if not 0.0 < float(target_acceptance_rate) < 1.0:
        raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {target_acceptance_rate}")
    return name, float(target_acceptance_rate), num_integration_steps


def build_kernel(name: str, num_integration_steps: int, **kernel_options) -> Callable:
    if name == "hmc":
        return kernels.hmc.build_kernel(num_integration_steps, **kernel_options)
    return kernels.mala.build_kernel(**kernel_options)


def with_context(logdensity_fn: Callable, context: Any) -> Callable:
    """``logdensity_fn(position)`` when ``context`` is None, else ``logdensity_fn(position, context)``."""
    if context is None:
        return logdensity_fn
    return lambda position: logdensity_fn(position, context)


def step_chains(kernel: Callable, rng_key, chain_states, logdensity_fn: Callable, context: Any, context_axes: Any,
                preconditioner) -> tuple[Any, Any]:
    """One ``kernel`` step for every chain with the same ``preconditioner``, a key split per chain, and per-chain
    ``context`` along ``context_axes``; returns the batched ``(states, info)``."""
    step = jax.vmap(
        lambda key, chain, ctx: kernel(key, chain, with_context(logdensity_fn, ctx), preconditioner),
        in_axes=(0, 0, context_axes),
    )
    return step(jax.random.split(rng_key, chain_states.position.shape[0]), chain_states, context)


def vmap_chains(fn: Callable, context_axes: Any, num_mapped: int) -> Callable:
    """``vmap`` over ``num_mapped`` leading chain-batched arguments, then the context with ``context_axes``."""
    return jax.vmap(fn, in_axes=(0,) * num_mapped + (context_axes,))


def init_chains(
    algorithm: ModuleType, positions: Array, logdensity_fn: Callable, context: Any = None, *, context_axes: Any = 0
):
    """Kernel states for a batch of chains, ``positions`` of shape ``(n_chains, d)``.

    ``logdensity_fn(position)`` or, with a ``context``, ``logdensity_fn(position, context)``, where the
    ``context`` is split over chains along ``context_axes`` (a ``vmap`` ``in_axes`` prefix: 0 for per-chain
    data, None for shared values such as decoder parameters).
    """
    if positions.ndim != 2:
        raise ValueError(f"positions must have shape (n_chains, d), got {positions.shape}")
    return vmap_chains(lambda z, c: algorithm.init(z, with_context(logdensity_fn, c)), context_axes, 1)(
        positions, context
    )
