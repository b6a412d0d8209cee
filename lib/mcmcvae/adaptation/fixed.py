"""The tuner that tunes nothing: a kernel with fixed ``(h, C)``, in the tuner protocol (:mod:`mcmcvae.adaptation.base`).

Its state is the :class:`mcmcvae.kernels.Preconditioner` itself, so a method or loop written for tuners runs a fixed
kernel without a special case (the ``mala`` and ``hmc`` training methods).
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, NamedTuple

from mcmcvae import kernels
from mcmcvae.adaptation import base
from mcmcvae.kernels import Preconditioner

__all__ = ["FixedKernel", "fixed"]


class FixedKernel(NamedTuple):
    """A kernel with fixed parameters as a tuner; built by :func:`fixed`.

    ``init(dim, preconditioner=None)`` returns ``preconditioner`` or ``h = step_size``, ``C = I``; ``update`` moves
    every chain one kernel step and returns the kernel's ``Info``; ``final`` is the identity; ``diagnostics`` is
    empty.
    """

    init: Callable
    update: Callable
    final: Callable
    diagnostics: Callable
    init_chains: Callable
    run: Callable
    algorithm: ModuleType
    kernel: Callable
    target_acceptance_rate: float
    logdensity_fn: Callable | None = None


def fixed(algorithm: ModuleType, logdensity_fn: Callable | None = None, *, step_size: float = 0.1,
          target_acceptance_rate: float | None = None, num_integration_steps: int | None = None,
          **kernel_options) -> FixedKernel:
    """A kernel module's kernel with ``(h, C)`` held fixed, as a tuner.

    Parameters
    ----------
    algorithm
        A kernel module (``mv.kernels.mala``, ``mv.kernels.hmc`` or your own).
    logdensity_fn
        ``log pi`` for ``.run`` and the default of ``update``.
    step_size
        ``h`` of ``init`` without a preconditioner (``C = I``).
    target_acceptance_rate
        Not used for tuning; recorded (default: the module's).
    num_integration_steps, **kernel_options
        Passed to ``algorithm.build_kernel``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> tuner = mv.adaptation.fixed(mv.kernels.hmc, lambda z: -0.5 * jnp.sum(z**2), step_size=0.5,
    ...                             num_integration_steps=4)
    >>> results, info = tuner.run(jax.random.key(0), jnp.zeros((8, 2)), 50)
    >>> float(results.parameters.step_size)
    0.5
    """
    settings = base.kernel_settings(algorithm, target_acceptance_rate, num_integration_steps, **kernel_options)
    kernel = settings.kernel

    def init(dim: int, preconditioner: Preconditioner | None = None) -> Preconditioner:
        if preconditioner is None:
            return Preconditioner.diagonal(dim, step_size=step_size)
        if preconditioner.scale.shape[-1] != dim:
            raise ValueError(f"a preconditioner of dimension {dim} was expected, got scale of shape "
                             f"{preconditioner.scale.shape}")
        return preconditioner

    def update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0):
        logdensity = loop["resolve_logdensity"](logdensity_fn)
        chain_states, info = kernels.step_chains(rng_key, kernel, chain_states, logdensity, state, context=context,
                                                 context_axes=context_axes)
        return chain_states, state, info

    def final(state: Preconditioner) -> Preconditioner:
        return state

    def diagnostics(state, info) -> dict:
        del state, info
        return {}

    loop = base.bind_loop(algorithm, logdensity_fn, init, update, final, "fixed")
    return FixedKernel(init=init, update=update, final=final, diagnostics=diagnostics,
                       init_chains=loop["init_chains"], run=loop["run"], algorithm=algorithm, kernel=kernel,
                       target_acceptance_rate=settings.target_acceptance_rate, logdensity_fn=logdensity_fn)
