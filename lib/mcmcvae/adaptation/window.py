r"""Stan-style window adaptation with a dense mass matrix: the strongest tuned reference for a fixed target.

A thin wrapper of ``blackjax.window_adaptation`` (public API) run on ``blackjax.hmc`` with
``is_mass_matrix_diagonal=False``: dual averaging of the step size in fast windows and the empirical covariance
of the chain in doubling slow windows. MALA is HMC with one leapfrog step (same proposal, same acceptance), so
``mv.kernels.mala`` runs as ``blackjax.hmc`` with ``num_integration_steps = 1``.

The tuned inverse mass matrix ``M^{-1}`` is returned as is and also as an ``mv.kernels.Preconditioner`` with
``C = cholesky(M^{-1})`` (so that ``C C^T = M^{-1}``) and ``h`` the tuned step size, ready for ``mv.kernels``.

The same schedule is also a tuner of the protocol (:mod:`mcmcvae.adaptation.base`) on the module's own kernel,
with one ``(h, C)`` shared by a batch of chains: ``init(dim, preconditioner=None)``, ``update`` and ``final``
(built from BlackJAX's public dual averaging, mass-matrix adaptation and Stan window schedule for
``num_adaptation_steps`` steps): fast windows adapt ``h``; slow windows also feed every chain's position to the
Welford covariance, and at a slow window's end ``C`` becomes the Cholesky factor of the regularised covariance and
dual averaging restarts from the current ``h``; after ``num_adaptation_steps`` the kernel is frozen at the averaged
``h`` and the last ``C``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.adaptation.mass_matrix import MassMatrixAdaptationState, mass_matrix_adaptation
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation
from blackjax.adaptation.window_adaptation import build_schedule
from jax import lax

from mcmcvae import kernels
from mcmcvae.adaptation import base
from mcmcvae.adaptation.dual_averaging import init_state, update_state
from mcmcvae.kernels import Preconditioner
from mcmcvae.types import Array, PRNGKey

__all__ = ["WindowAdaptationResults", "WindowAdaptation", "WindowState", "WindowInfo", "window_adaptation"]


class WindowState(NamedTuple):
    """State of the window tuner (:func:`window_adaptation`'s ``init``/``update``).

    Attributes
    ----------
    step_size
        BlackJAX's dual-averaging state of ``log h``.
    mass_matrix
        BlackJAX's mass-matrix adaptation state (the Welford covariance of the current slow window).
    scale
        ``C``, lower triangular, ``C C^T`` the inverse mass matrix in use.
    step
        Updates done (``int32``).
    """

    step_size: DualAveragingAdaptationState
    mass_matrix: MassMatrixAdaptationState
    scale: Array
    step: Array


class WindowInfo(NamedTuple):
    """Per-chain ``acceptance_rate``, ``is_accepted``, ``is_divergent``; the ``step_size`` used; ``is_adapting``."""

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    step_size: Array
    is_adapting: Array


class WindowAdaptationResults(NamedTuple):
    """Results of :func:`window_adaptation`'s ``run`` (a leading ``n_chains`` axis for a batch of chains).

    Attributes
    ----------
    step_size
        The tuned ``h``.
    inverse_mass_matrix
        The tuned dense ``M^{-1}``, ``(d, d)``.
    parameters
        ``mv.kernels.Preconditioner`` with ``h`` and ``C = cholesky(M^{-1})``.
    states
        BlackJAX ``HMCState`` of the chain(s) at the end of warm-up.
    acceptance_rate
        Per warm-up step, ``(num_steps,)`` (or ``(n_chains, num_steps)``).
    num_gradient_evaluations
        Gradient evaluations spent by the warm-up per chain: one at the start plus ``L`` per step.
    """

    step_size: Array
    inverse_mass_matrix: Array
    parameters: Preconditioner
    states: object
    acceptance_rate: Array
    num_gradient_evaluations: Array


class WindowAdaptation(NamedTuple):
    """Built by :func:`window_adaptation`.

    Attributes
    ----------
    run
        ``run(rng_key, positions, num_steps) -> WindowAdaptationResults``: BlackJAX's warm-up on ``blackjax.hmc``;
        ``positions`` is ``(d,)`` for one chain or ``(n_chains, d)`` for independent warm-ups, one per chain
        (``vmap``).
    init, update, final, diagnostics, init_chains
        The tuner on the module's own kernel, one ``(h, C)`` for all chains (:mod:`mcmcvae.adaptation.base`);
        they need ``num_adaptation_steps``.
    algorithm, kernel, target_acceptance_rate, num_integration_steps, logdensity_fn
        The settings.
    """

    run: Callable
    algorithm: ModuleType
    target_acceptance_rate: float
    num_integration_steps: int
    init: Callable
    update: Callable
    final: Callable
    diagnostics: Callable
    init_chains: Callable
    kernel: Callable
    logdensity_fn: Callable | None = None


def window_adaptation(
    algorithm: ModuleType,
    logdensity_fn: Callable | None = None,
    *,
    num_integration_steps: int | None = None,
    target_acceptance_rate: float | None = None,
    initial_step_size: float = 1.0,
    num_adaptation_steps: int | None = None,
) -> WindowAdaptation:
    """Tune ``h`` and a dense inverse mass matrix by BlackJAX's window adaptation, for a fixed target.

    Parameters
    ----------
    algorithm
        ``mv.kernels.mala`` (run as HMC with ``L = 1``) or ``mv.kernels.hmc``.
    logdensity_fn
        ``log pi``.
    num_integration_steps
        ``L`` for HMC (required).
    target_acceptance_rate
        Default 0.55 for MALA, 0.65 for HMC.
    initial_step_size
        Start of the step-size dual averaging.
    num_adaptation_steps
        Length of the tuner's window schedule (``init``/``update``; Stan's 75/25/50 windows for 150 or more
        steps); ``run`` takes its own ``num_steps``.

    Returns
    -------
    WindowAdaptation

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2 / jnp.array([0.1, 1.0, 10.0]))
    >>> warmup = mv.adaptation.window_adaptation(mv.kernels.hmc, logdensity_fn, num_integration_steps=3)
    >>> results = warmup.run(jax.random.key(0), jnp.zeros(3), 300)
    >>> results.inverse_mass_matrix.shape, int(results.num_gradient_evaluations)
    ((3, 3), 901)

    As a tuner shared by 32 chains, through :func:`mcmcvae.kernels.run_chains`:

    >>> tuner = mv.adaptation.window_adaptation(mv.kernels.hmc, logdensity_fn, num_integration_steps=3,
    ...                                         num_adaptation_steps=300)
    >>> chains = tuner.init_chains(jnp.zeros((32, 3)))
    >>> run = mv.kernels.run_chains(jax.random.key(1), chains, logdensity_fn, 300, tuner=tuner,
    ...                             tuner_state=tuner.init(3))
    >>> tuner.final(run.tuner_state).scale.shape
    (3, 3)
    """
    # The module is asked for its options and target; the warm-up itself runs blackjax.hmc with L of the module's
    # options, or L = 1 (MALA's proposal) for a module without num_integration_steps.
    settings = base.kernel_settings(algorithm, target_acceptance_rate, num_integration_steps)
    target, num_steps_l = settings.target_acceptance_rate, settings.options.get("num_integration_steps", 1)
    warmup = blackjax.window_adaptation(
        blackjax.hmc,
        logdensity_fn,
        is_mass_matrix_diagonal=False,
        initial_step_size=initial_step_size,
        target_acceptance_rate=target,
        adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"acceptance_rate"}),
        num_integration_steps=num_steps_l,
    )

    def run_one(rng_key: PRNGKey, position: Array, num_steps: int) -> WindowAdaptationResults:
        (state, parameters), info = warmup.run(rng_key, position, num_steps)
        step_size = jnp.asarray(parameters["step_size"], jnp.float32)
        inverse_mass_matrix = parameters["inverse_mass_matrix"]
        preconditioner = Preconditioner(jnp.log(step_size), jnp.linalg.cholesky(inverse_mass_matrix))
        return WindowAdaptationResults(
            step_size,
            inverse_mass_matrix,
            preconditioner,
            state,
            info.info.acceptance_rate,
            jnp.asarray(1 + num_steps * num_steps_l, jnp.int32),
        )

    def run(rng_key: PRNGKey, positions: Array, num_steps: int = 1000) -> WindowAdaptationResults:
        positions = jnp.asarray(positions)
        if positions.ndim == 1:
            return run_one(rng_key, positions, num_steps)
        if positions.ndim != 2:
            raise ValueError(f"positions must have shape (d,) or (n_chains, d), got {positions.shape}")
        keys = jax.random.split(rng_key, positions.shape[0])
        return jax.vmap(lambda key, position: run_one(key, position, num_steps))(keys, positions)

    da_init, da_update, _ = dual_averaging_adaptation(target)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=False)
    kernel = settings.kernel
    if num_adaptation_steps is not None:
        schedule = np.asarray(build_schedule(int(num_adaptation_steps)), np.int32).reshape(-1, 2)
        stages, window_ends = jnp.asarray(schedule[:, 0]), jnp.asarray(schedule[:, 1] == 1)

    def init(dim: int, preconditioner: Preconditioner | None = None) -> WindowState:
        if num_adaptation_steps is None:
            raise ValueError("the window tuner needs num_adaptation_steps (its window schedule depends on it): "
                             "window_adaptation(..., num_adaptation_steps=N)")
        if preconditioner is None:
            preconditioner = Preconditioner.lower_triangular(dim, step_size=initial_step_size)
        scale = preconditioner.matrix()
        return WindowState(init_state(da_init, preconditioner.step_size), mm_init(dim, scale @ scale.T), scale,
                           jnp.zeros((), jnp.int32))

    def final(state: WindowState) -> Preconditioner:
        return Preconditioner(state.step_size.log_step_size_avg.astype(state.scale.dtype), state.scale)

    def update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0):
        logdensity = loop["resolve_logdensity"](logdensity_fn)
        is_adapting = state.step < num_adaptation_steps
        log_step_size = jnp.where(is_adapting, state.step_size.log_step_size, state.step_size.log_step_size_avg)
        precond = Preconditioner(log_step_size.astype(state.scale.dtype), state.scale)
        chain_states, info = kernels.step_chains(rng_key, kernel, chain_states, logdensity, precond, context=context,
                                                 context_axes=context_axes)

        def adapt(state):
            index = jnp.minimum(state.step, num_adaptation_steps - 1)
            step_size = update_state(da_update, state.step_size, jnp.mean(info.acceptance_rate))

            def slow(mass_matrix):  # every chain's new position joins the window's covariance
                return lax.fori_loop(0, chain_states.position.shape[0],
                                     lambda i, m: mm_update(m, chain_states.position[i]), mass_matrix)

            mass_matrix = lax.cond(stages[index] == 1, slow, lambda m: m, state.mass_matrix)
            state = state._replace(step_size=step_size, mass_matrix=mass_matrix)

            def end_of_window(state):
                mass_matrix = mm_final(state.mass_matrix)
                scale = jnp.linalg.cholesky(mass_matrix.inverse_mass_matrix).astype(state.scale.dtype)
                restarted = init_state(da_init, jnp.exp(state.step_size.log_step_size))
                return state._replace(step_size=restarted, mass_matrix=mass_matrix, scale=scale)

            return lax.cond(window_ends[index], end_of_window, lambda s: s, state)

        state = lax.cond(is_adapting, adapt, lambda s: s, state)
        state = state._replace(step=state.step + 1)
        divergent = getattr(info, "is_divergent", jnp.zeros_like(info.is_accepted))
        return chain_states, state, WindowInfo(info.acceptance_rate, info.is_accepted, divergent,
                                               precond.step_size, is_adapting)

    def diagnostics(state, info) -> dict:
        del info
        tuned = final(state)
        return {"step_size": tuned.step_size, "log_abs_det": tuned.log_abs_det()}

    loop = base.bind_loop(algorithm, logdensity_fn, init, update, final, "window_adaptation")
    return WindowAdaptation(run, algorithm, target, num_steps_l, init=init, update=update, final=final,
                            diagnostics=diagnostics, init_chains=loop["init_chains"], kernel=kernel,
                            logdensity_fn=logdensity_fn)
