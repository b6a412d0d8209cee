r"""Step-size adaptation by dual averaging (``C = I``), on BlackJAX's public dual-averaging scheme.

Nesterov's primal-dual averaging as used by Hoffman and Gelman (2014, section 3.2.1): with ``x = log h``,
``H_t = a* - a_t`` (target minus the acceptance rate at step ``t``, here averaged over chains),

.. math::

    x_{t+1} = \mu - \frac{\sqrt{t}}{\gamma} \frac{1}{t + t_0} \sum_{i \le t} H_i, \qquad
    \bar x_{t+1} = t^{-\kappa} x_{t+1} + (1 - t^{-\kappa}) \bar x_t,

with ``mu = log(10 h_0)``. The chains move with ``h = exp(x_t)``; the tuned step size is ``exp(x-bar)``.
The state holds ``blackjax.adaptation.step_size.DualAveragingAdaptationState`` and the fixed ``C``; ``init`` starts
it afresh (for instance from ``h = 1`` at the start of every batch).
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation

from mcmcvae import kernels
from mcmcvae.adaptation import base
from mcmcvae.kernels import Preconditioner
from mcmcvae.types import Array

__all__ = ["DualAveragingInfo", "DualAveragingAdaptation", "DualAveragingState", "dual_averaging", "jitter_step_size",
           "DualAveragingAdaptationState"]


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


class DualAveragingState(NamedTuple):
    """State of :func:`dual_averaging`.

    Attributes
    ----------
    dual_averaging
        BlackJAX's ``DualAveragingAdaptationState`` of ``x = log h``.
    scale
        ``C``, held fixed: the identity unless the tuner was started from a preconditioner.
    """

    dual_averaging: DualAveragingAdaptationState
    scale: Array


class DualAveragingAdaptation(NamedTuple):
    """Dual averaging of ``h`` for one kernel module; built by :func:`dual_averaging`. A tuner
    (:mod:`mcmcvae.adaptation.base`).

    Attributes
    ----------
    init
        ``init(dim, preconditioner=None) -> DualAveragingState``: from ``h = initial_step_size`` and ``C = I``, or
        from the step size and ``C`` of ``preconditioner``.
    update
        ``update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0)
        -> (chain_states, state, DualAveragingInfo)``: one kernel step for every chain with ``h = exp(x_t)`` and
        one dual-averaging step on the acceptance rate averaged over chains.
    final
        ``final(state) -> Preconditioner``: ``h = exp(x-bar)`` and ``C``.
    diagnostics
        ``diagnostics(state, info) -> dict``: the tuned ``step_size`` and ``log_abs_det``.
    init_chains, run, sample
        See :mod:`mcmcvae.adaptation.base`.
    algorithm, kernel, target_acceptance_rate, logdensity_fn
        The kernel module, its built kernel, the target and the bound log density (or None).
    step_size_search
        How ``run`` finds its starting step size, or None when ``initial_step_size`` was given.
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
    sample: Callable | None = None
    step_size_search: base.StepSizeSearch | None = None


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


def jitter_step_size(kernel: Callable, jitter: float) -> Callable:
    """``kernel`` with its step size multiplied, at every transition and per chain, by ``u ~ Uniform(1 - jitter,
    1 + jitter)`` (Stan's ``stepsize_jitter``); ``jitter = 0`` returns ``kernel`` itself.

    With ``L`` fixed and no jitter, HMC is periodic in any direction where ``L`` leapfrog steps of ``h`` make a
    whole number of turns: on a Gaussian whose whitened curvature is ``lambda`` one leapfrog step turns by
    ``arccos(1 - h^2 lambda / 2)``, and where ``L`` of them make about one full turn the position comes back to where
    it started, with almost no energy error, so such an ``h`` is accepted and dual averaging stays there. A random
    step changes the angle from one transition to the next and breaks the cycle.

    The kernel's ``rng_key`` is split into one key for ``u`` and one passed on to ``kernel``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmcvae.kernels import Preconditioner, hmc
    >>> from mcmcvae.adaptation.dual_averaging import jitter_step_size
    >>> kernel = jitter_step_size(hmc.build_kernel(num_integration_steps=5), 0.5)
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> state = hmc.init(jnp.zeros(3), logdensity_fn)
    >>> state, info = kernel(jax.random.key(0), state, logdensity_fn, Preconditioner.diagonal(3, step_size=1.2))
    >>> state.position.shape
    (3,)
    """
    jitter = float(jitter)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"step_size_jitter must lie in [0, 1) (the step is h times Uniform(1 - jitter, 1 + jitter)), "
                         f"got {jitter}")
    if jitter == 0.0:
        return kernel

    def jittered_kernel(rng_key, state, logdensity_fn, preconditioner):
        key_jitter, key_kernel = jax.random.split(rng_key)
        factor = 1.0 + jitter * jax.random.uniform(key_jitter, minval=-1.0, maxval=1.0)
        preconditioner = preconditioner._replace(
            log_step_size=preconditioner.log_step_size + jnp.log(factor).astype(preconditioner.log_step_size.dtype))
        return kernel(key_kernel, state, logdensity_fn, preconditioner)

    return jittered_kernel


def _final(state: DualAveragingState, *, averaged: bool = True) -> Preconditioner:
    log_step_size = state.dual_averaging.log_step_size_avg if averaged else state.dual_averaging.log_step_size
    return Preconditioner(jnp.asarray(log_step_size, state.scale.dtype), state.scale)


def dual_averaging(
    algorithm: ModuleType,
    logdensity_fn: Callable | None = None,
    *,
    target_acceptance_rate: float | None = None,
    num_integration_steps: int | None = None,
    initial_step_size: float | None = None,
    step_size_jitter: float = 0.0,
    t0: int = 10,
    gamma: float = 0.05,
    kappa: float = 0.75,
    **kernel_options,
) -> DualAveragingAdaptation:
    """Tune the step size ``h`` of a kernel (``C`` held fixed, the identity by default) by dual averaging.

    Built on ``blackjax.adaptation.step_size.dual_averaging_adaptation``, fed with the acceptance rate averaged
    over chains (one ``h`` for all chains).

    Parameters
    ----------
    algorithm
        A kernel module: ``mv.kernels.mala``, ``mv.kernels.hmc`` or one of your own.
    logdensity_fn
        ``log pi`` for ``.run`` and the default of ``update``.
    target_acceptance_rate
        Default: the module's ``DEFAULT_TARGET_ACCEPTANCE_RATE`` (0.55 for MALA, 0.65 for HMC).
    num_integration_steps
        ``L`` for HMC (required there).
    initial_step_size
        ``h_0``. None (default): ``run`` starts from the step size
        :func:`~mcmcvae.adaptation.find_reasonable_step_size` finds at its starting positions (from ``h = 1``);
        ``init(dim)``, which has no positions, starts from ``h = 1``. A number starts both from it.
    step_size_jitter
        Every transition, adapting or sampling, uses ``h u`` with ``u ~ Uniform(1 - step_size_jitter,
        1 + step_size_jitter)`` per chain (:func:`jitter_step_size`), which keeps fixed-``L`` HMC from being periodic.
        Default 0 (none), as the paper's baselines ran.
    t0, gamma, kappa
        BlackJAX's dual-averaging constants (Hoffman and Gelman's defaults).
    **kernel_options
        Passed to ``algorithm.build_kernel`` (e.g. HMC's ``divergence_threshold``).

    Returns
    -------
    DualAveragingAdaptation

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> adapt = mv.adaptation.dual_averaging(mv.kernels.hmc, logdensity_fn, num_integration_steps=5)
    >>> results, info = adapt.run(jax.random.key(0), jnp.zeros((8, 4)), 500)
    >>> results.parameters.scale
    Array([1., 1., 1., 1.], dtype=float32)

    Carried across batches with per-chain data (restart from ``h = 1`` with ``adapt.init(4)``):

    >>> adapt = mv.adaptation.dual_averaging(mv.kernels.mala)
    >>> log_joint = lambda z, x: -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((x - z) ** 2)
    >>> x = jnp.ones((8, 4))
    >>> chains = adapt.init_chains(jnp.zeros((8, 4)), log_joint, x)
    >>> state = adapt.init(4)
    >>> chains, state, info = adapt.update(jax.random.key(1), state, chains, log_joint, x)
    """
    settings = base.kernel_settings(algorithm, target_acceptance_rate, num_integration_steps, **kernel_options)
    kernel, target = jitter_step_size(settings.kernel, step_size_jitter), settings.target_acceptance_rate
    da_init, da_update, _ = dual_averaging_adaptation(target, t0=t0, gamma=gamma, kappa=kappa)

    start_step_size = 1.0 if initial_step_size is None else initial_step_size

    def start(dim: int) -> Preconditioner:
        return Preconditioner.diagonal(dim, step_size=start_step_size)

    def init(dim: int, preconditioner: Preconditioner | None = None) -> DualAveragingState:
        if preconditioner is None:
            preconditioner = start(dim)
        if preconditioner.scale.shape[-1] != dim:
            raise ValueError(f"a preconditioner of dimension {dim} was expected, got scale of shape "
                             f"{jnp.shape(preconditioner.scale)}")
        return DualAveragingState(init_state(da_init, preconditioner.step_size), jnp.asarray(preconditioner.scale))

    def update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0):
        logdensity = loop["resolve_logdensity"](logdensity_fn)
        precond = _final(state, averaged=False)
        chain_states, info = kernels.step_chains(rng_key, kernel, chain_states, logdensity, precond, context=context,
                                                 context_axes=context_axes)
        new_state = state._replace(
            dual_averaging=update_state(da_update, state.dual_averaging, jnp.mean(info.acceptance_rate)))
        return chain_states, new_state, DualAveragingInfo(
            info.acceptance_rate,
            info.is_accepted,
            getattr(info, "is_divergent", jnp.zeros_like(info.is_accepted)),
            precond.step_size,
            jnp.exp(new_state.dual_averaging.log_step_size_avg),
        )

    def diagnostics(state, info) -> dict:
        del info
        tuned = _final(state)
        return {"step_size": tuned.step_size, "log_abs_det": tuned.log_abs_det()}

    search = None if initial_step_size is not None else base.StepSizeSearch(start, target, settings.options)
    loop = base.bind_loop(algorithm, logdensity_fn, init, update, _final, "dual_averaging", kernel=kernel,
                          search=search, target_acceptance_rate=target)
    return DualAveragingAdaptation(
        init=init,
        update=update,
        final=_final,
        diagnostics=diagnostics,
        init_chains=loop["init_chains"],
        run=loop["run"],
        algorithm=algorithm,
        kernel=kernel,
        target_acceptance_rate=target,
        logdensity_fn=logdensity_fn,
        sample=loop["sample"],
        step_size_search=search,
    )
