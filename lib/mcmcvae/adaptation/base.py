r"""The tuner protocol, and what every tuner shares: asking the kernel module, binding the loop, results.

A *tuner* adapts the parameters ``(h, C)`` (a :class:`mcmcvae.kernels.Preconditioner`) of one kernel module while a
batch of chains runs. Like BlackJAX's ``dual_averaging_adaptation`` triple and Optax's transformations it is a set
of pure functions over a state that is a pytree:

- ``init(dim, preconditioner=None) -> state``: the state for positions of dimension ``d``, started from
  ``preconditioner`` when given (a warm start), else from the tuner's own initial values;
- ``update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0)
  -> (chain_states, state, info)``: one kernel step of every chain and one adaptation step; ``info`` has at least
  the per-chain ``acceptance_rate``;
- ``final(state) -> Preconditioner``: what to sample with once adaptation stops;
- ``diagnostics(state, info) -> dict``: scalar summaries of ``K`` stacked ``info`` for a training log.

and carries ``algorithm`` (the kernel module), ``kernel`` (its built transition kernel), ``target_acceptance_rate``,
``init_chains(positions, logdensity_fn=None, context=None, *, context_axes=0)`` and
``run(rng_key, positions, num_steps, *, initial_parameters=None) -> (AdaptationResults, info)``, which adapts while
sampling with :func:`mcmcvae.kernels.run_chains`.

What a tuner needs from the kernel module it asks the module for (no list of known kernels):
``init`` and ``build_kernel(**kernel_options)``, ``DEFAULT_TARGET_ACCEPTANCE_RATE``, and, for the speed measure,
``proposal_entropy``. A new kernel is therefore one new module.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from mcmcvae import kernels
from mcmcvae.types import Array, PRNGKey

__all__ = ["AdaptationResults", "KernelOptionsError", "KernelSettings", "kernel_settings", "module_options",
           "bind_loop"]


class KernelOptionsError(TypeError, ValueError):
    """Options that a kernel module's ``build_kernel`` does not take, or a required one missing (a ``TypeError``,
    as for a wrong keyword, and a ``ValueError``, as for a bad setting)."""


class AdaptationResults(NamedTuple):
    """What ``.run`` returns besides the per-step info.

    Attributes
    ----------
    parameters
        The tuned :class:`mcmcvae.kernels.Preconditioner` (the tuner's ``final`` of its last state).
    states
        The chains' last kernel states (a batched ``State``, leading axis ``n_chains``).
    adaptation_state
        The tuner's own last state, to continue adapting from.
    """

    parameters: kernels.Preconditioner
    states: Any
    adaptation_state: Any


class KernelSettings(NamedTuple):
    """A kernel module's built kernel and the settings a tuner read from it."""

    kernel: Callable
    target_acceptance_rate: float
    options: dict


def _module_name(algorithm) -> str:
    return getattr(algorithm, "__name__", repr(algorithm))


def module_options(fn: Callable, options: dict) -> dict:
    """The entries of ``options`` that ``fn`` takes as keywords (e.g. ``num_integration_steps`` for
    ``hmc.proposal_entropy``)."""
    parameters = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in parameters}


def kernel_settings(algorithm: ModuleType, target_acceptance_rate: float | None = None,
                    num_integration_steps: int | None = None, **kernel_options) -> KernelSettings:
    """Build ``algorithm.build_kernel(**kernel_options)`` and read its default target acceptance rate.

    ``num_integration_steps`` joins the kernel options when given. Raises a ``ValueError`` naming the problem for
    something that is not a kernel module, for options its ``build_kernel`` does not take (or a required one that
    is missing: :class:`KernelOptionsError`), and for a target outside (0, 1).
    """
    missing = [name for name in ("init", "build_kernel") if not callable(getattr(algorithm, name, None))]
    if missing:
        raise ValueError(
            f"algorithm must be a kernel module with init and build_kernel (such as mcmcvae.kernels.mala, "
            f"mcmcvae.kernels.hmc); {_module_name(algorithm)} has no {', '.join(missing)}")
    options = dict(kernel_options)
    if num_integration_steps is not None:
        options["num_integration_steps"] = int(num_integration_steps)
    try:
        inspect.signature(algorithm.build_kernel).bind(**options)
    except TypeError as error:
        raise KernelOptionsError(f"{_module_name(algorithm)}.build_kernel does not accept the options "
                                 f"{sorted(options)}: {error}") from None
    kernel = algorithm.build_kernel(**options)
    if target_acceptance_rate is None:
        target_acceptance_rate = getattr(algorithm, "DEFAULT_TARGET_ACCEPTANCE_RATE", None)
        if target_acceptance_rate is None:
            raise ValueError(f"{_module_name(algorithm)} has no DEFAULT_TARGET_ACCEPTANCE_RATE: pass "
                             "target_acceptance_rate")
    if not 0.0 < float(target_acceptance_rate) < 1.0:
        raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {target_acceptance_rate}")
    return KernelSettings(kernel, float(target_acceptance_rate), options)


def bind_loop(algorithm: ModuleType, logdensity_fn: Callable | None, init: Callable, update: Callable,
              final: Callable, tuner_name: str) -> dict:
    """``resolve_logdensity``, ``init_chains`` and ``run`` of a tuner from its ``init``, ``update`` and ``final``
    (``run`` is :func:`mcmcvae.kernels.run_chains` from ``init(d, initial_parameters)``)."""
    bound_logdensity_fn = logdensity_fn

    def resolve_logdensity(fn):
        fn = bound_logdensity_fn if fn is None else fn
        if fn is None:
            raise ValueError(f"no logdensity_fn: pass one to {tuner_name}(...) or to this call")
        return fn

    def init_chains(positions: Array, logdensity_fn=None, context=None, *, context_axes=0):
        return kernels.init_chains(algorithm, positions, resolve_logdensity(logdensity_fn), context=context,
                                   context_axes=context_axes)

    def run(rng_key: PRNGKey, positions: Array, num_steps: int, *, initial_parameters=None):
        positions = jnp.asarray(positions)
        chain_states = init_chains(positions)
        state = init(positions.shape[-1], initial_parameters)
        run = kernels.run_chains(rng_key, chain_states, resolve_logdensity(None), num_steps, tuner=_Update(update),
                                 tuner_state=state)
        return AdaptationResults(final(run.tuner_state), run.states, run.tuner_state), run.info

    return {"resolve_logdensity": resolve_logdensity, "init_chains": init_chains, "run": run}


class _Update(NamedTuple):
    """The part of a tuner that :func:`mcmcvae.kernels.run_chains` calls."""

    update: Callable
