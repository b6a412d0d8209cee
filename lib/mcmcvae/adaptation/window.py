r"""Stan-style window adaptation with a dense mass matrix: the strongest tuned reference for a fixed target.

A thin wrapper of ``blackjax.window_adaptation`` (public API) run on ``blackjax.hmc`` with
``is_mass_matrix_diagonal=False``: dual averaging of the step size in fast windows and the empirical covariance
of the chain in doubling slow windows. MALA is HMC with one leapfrog step (same proposal, same acceptance), so
``mv.kernels.mala`` runs as ``blackjax.hmc`` with ``num_integration_steps = 1``.

The tuned inverse mass matrix ``M^{-1}`` is returned as is and also as an ``mv.kernels.Preconditioner`` with
``C = cholesky(M^{-1})`` (so that ``C C^T = M^{-1}``) and ``h`` the tuned step size, ready for ``mv.kernels``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.adaptation.base import get_filter_adapt_info_fn

from mcmcvae.adaptation import base
from mcmcvae.kernels import Preconditioner
from mcmcvae.types import Array, PRNGKey

__all__ = ["WindowAdaptationResults", "WindowAdaptation", "window_adaptation"]


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
        ``run(rng_key, positions, num_steps) -> WindowAdaptationResults``; ``positions`` is ``(d,)`` for one chain
        or ``(n_chains, d)`` for independent warm-ups, one per chain (``vmap``).
    algorithm, target_acceptance_rate, num_integration_steps
        The settings.
    """

    run: Callable
    algorithm: ModuleType
    target_acceptance_rate: float
    num_integration_steps: int


def window_adaptation(
    algorithm: ModuleType,
    logdensity_fn: Callable,
    *,
    num_integration_steps: int | None = None,
    target_acceptance_rate: float | None = None,
    initial_step_size: float = 1.0,
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

    return WindowAdaptation(run, algorithm, target, num_steps_l)
