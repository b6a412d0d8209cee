r"""A dual-averaged multiple of a tuner's step size: a wrapper around any tuner (Optax style).

``with_dual_averaged_step_size(inner)`` keeps the inner tuner's state inside its own and changes one thing: the
chains no longer move with the inner tuner's step but with a separate kernel step at ``(s h, C)``, where ``(h, C)``
is the inner tuner's ``final`` of its current state and ``log s`` follows BlackJAX's dual averaging towards the
target acceptance rate (from ``s = 1``). The inner tuner adapts exactly as it would alone, from its own step's
proposals (whose moved chains are discarded). Each update costs one more kernel step (forward only). The tuned
kernel is ``(s-bar h, C)`` with dual averaging's averaged ``s-bar``.

**Not the paper's method: a variant for HMC.** For HMC the entropy speed measure can peak at a shorter step than
the one that accepts the target rate, and then no beta reaches the target (for ``L = 2`` on a Gaussian the
entropy's ``log(h) + log(1 - h^2 lambda / 2)`` per direction peaks at ``h^2 lambda = 2/3``; docs/kernels.md). With
this wrapper the speed measure chooses the shape of ``C`` and dual averaging the step length.

Every move, adapting or sampling, uses a jittered step ``s h u`` with ``u ~ Uniform(0.5, 1.5)`` per chain
(``step_size_jitter=0.5``): with ``L`` fixed, the step dual averaging settles on can make ``L`` leapfrog steps turn a
whitened direction through a whole number of turns, where HMC is periodic and does not mix (on the posteriors
benchmark's 5-d Gaussian without the jitter, R-hat 1.5: ``tests/adaptation/test_speed_measure.py``).

While the inner tuner reports ``info.is_adapting`` (the speed measure's ``num_adaptation_steps``), ``s`` adapts with
it and moves with its iterate; once frozen, ``s`` stays and the chains move with ``s-bar``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation

from mcmcvae import kernels
from mcmcvae.adaptation import base
from mcmcvae.adaptation.dual_averaging import init_state, jitter_step_size, update_state
from mcmcvae.kernels import Preconditioner

__all__ = ["DualAveragedStepSizeState", "DualAveragedStepSize", "with_dual_averaged_step_size"]

_MOVED = ("acceptance_rate", "is_accepted", "is_divergent")


class DualAveragedStepSizeState(NamedTuple):
    """State of :func:`with_dual_averaged_step_size`.

    Attributes
    ----------
    inner
        The wrapped tuner's state.
    factor
        BlackJAX's dual-averaging state of ``log s``.
    """

    inner: Any
    factor: DualAveragingAdaptationState


class DualAveragedStepSize(NamedTuple):
    """A tuner (:mod:`mcmcvae.adaptation.base`) built by :func:`with_dual_averaged_step_size`.

    Its ``info`` is the inner tuner's, with ``acceptance_rate``, ``is_accepted``, ``is_divergent`` and
    ``step_size`` those of the move at ``s h``; ``diagnostics`` adds ``step_size_factor`` (``s-bar``) to the inner
    tuner's and reports the tuned ``s-bar h``. ``inner`` is the wrapped tuner. ``run`` starts as ``inner.run`` would
    (a searched step size when ``inner`` was built with ``initial_step_size=None``) and ``sample`` draws with the
    tuned ``(s-bar h, C)`` (:mod:`mcmcvae.adaptation.base`), through ``kernel``: ``inner``'s kernel with the step
    jittered (``step_size_jitter``).
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
    inner: Any
    logdensity_fn: Callable | None = None
    sample: Callable | None = None


def with_dual_averaged_step_size(inner, *, step_size_jitter: float = 0.5, t0: int = 10, gamma: float = 0.05,
                                 kappa: float = 0.75) -> DualAveragedStepSize:
    """Move the chains with a dual-averaged multiple ``s`` of ``inner``'s step size; ``inner`` adapts as before.

    Parameters
    ----------
    inner
        Any tuner (e.g. :func:`mcmcvae.adaptation.speed_measure`); its kernel, target acceptance rate and bound
        log density are used.
    step_size_jitter
        Each move's step is ``s h u``, ``u ~ Uniform(1 - step_size_jitter, 1 + step_size_jitter)`` per chain and
        transition (:func:`mcmcvae.adaptation.dual_averaging.jitter_step_size`), in adaptation and in ``sample``;
        0 moves with ``s h`` itself (and can be periodic: see above and
        ``tests/adaptation/test_speed_measure.py``).
    t0, gamma, kappa
        BlackJAX's dual-averaging constants for ``log s``.

    Returns
    -------
    DualAveragedStepSize

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2 / jnp.array([0.1, 1.0, 10.0]))
    >>> gradhmc = mv.adaptation.speed_measure(mv.kernels.hmc, logdensity_fn, preconditioner="lower_triangular",
    ...                                       num_integration_steps=3)
    >>> tuner = mv.adaptation.with_dual_averaged_step_size(gradhmc)
    >>> results, info = tuner.run(jax.random.key(0), jnp.zeros((16, 3)), 200)
    >>> results.parameters.scale.shape
    (3, 3)
    """
    factor_init, factor_update, _ = dual_averaging_adaptation(inner.target_acceptance_rate, t0=t0, gamma=gamma,
                                                               kappa=kappa)
    kernel = jitter_step_size(inner.kernel, step_size_jitter)

    def resolve_logdensity(fn):
        fn = inner.logdensity_fn if fn is None else fn
        if fn is None:
            raise ValueError("no logdensity_fn: pass one to the inner tuner or to this call")
        return fn

    def init(dim: int, preconditioner: Preconditioner | None = None) -> DualAveragedStepSizeState:
        return DualAveragedStepSizeState(inner.init(dim, preconditioner), init_state(factor_init, 1.0))

    def final(state: DualAveragedStepSizeState) -> Preconditioner:
        tuned = inner.final(state.inner)
        return tuned._replace(log_step_size=tuned.log_step_size + state.factor.log_step_size_avg)

    def update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0):
        logdensity = resolve_logdensity(logdensity_fn)
        _, inner_state, info = inner.update(rng_key, state.inner, chain_states, logdensity, context,
                                            context_axes=context_axes)
        is_adapting = jnp.asarray(getattr(info, "is_adapting", True))
        factor = state.factor
        log_factor = jnp.where(is_adapting, factor.log_step_size, factor.log_step_size_avg)
        current = inner.final(state.inner)
        precond = current._replace(log_step_size=current.log_step_size + log_factor)
        moved, move_info = kernels.step_chains(jax.random.fold_in(rng_key, 1), kernel, chain_states, logdensity,
                                               precond, context=context, context_axes=context_axes)
        updated = update_state(factor_update, factor, jnp.mean(move_info.acceptance_rate))
        factor = jax.tree.map(lambda new, old: jnp.where(is_adapting, new, old), updated, factor)
        replaced = {name: getattr(move_info, name) for name in _MOVED if name in info._fields and
                    hasattr(move_info, name)}
        if "step_size" in info._fields:
            replaced["step_size"] = precond.step_size
        return moved, DualAveragedStepSizeState(inner_state, factor), info._replace(**replaced)

    def diagnostics(state, info) -> dict:
        tuned = final(state)
        return {**inner.diagnostics(state.inner, info), "step_size": tuned.step_size,
                "log_abs_det": tuned.log_abs_det(), "step_size_factor": jnp.exp(state.factor.log_step_size_avg)}

    # run searches the inner tuner's starting step size (when it would), and checks the acceptance against the
    # target; beta at a bound is expected here (the factor, not beta, reaches the target) and is not checked.
    loop = base.bind_loop(inner.algorithm, inner.logdensity_fn, init, update, final, "with_dual_averaged_step_size",
                          kernel=kernel, search=getattr(inner, "step_size_search", None),
                          target_acceptance_rate=inner.target_acceptance_rate)
    return DualAveragedStepSize(init=init, update=update, final=final, diagnostics=diagnostics,
                                init_chains=loop["init_chains"], run=loop["run"], algorithm=inner.algorithm,
                                kernel=kernel, target_acceptance_rate=inner.target_acceptance_rate, inner=inner,
                                logdensity_fn=inner.logdensity_fn, sample=loop["sample"])
