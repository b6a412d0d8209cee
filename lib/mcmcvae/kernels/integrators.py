"""The leapfrog (velocity Verlet) integrator with a general inverse mass matrix.

For ``H(z, p) = U(z) + K(p)`` with ``U = -log pi`` and ``K(p) = p^T M^{-1} p / 2``, one leapfrog step of size
``h`` is

    p_{1/2} = p - (h / 2) grad U(z),
    z'      = z + h M^{-1} p_{1/2},
    p'      = p_{1/2} - (h / 2) grad U(z').

The kernels of this package use ``M^{-1} = C C^T`` (``Preconditioner.covariance_apply``), but the integrator
only sees a function ``inverse_mass_apply(p) = M^{-1} p``.

A trajectory that leaves the finite numbers stops where it was: the rest of the loop keeps the last finite
state and ``Trajectory.is_finite`` turns False, so the kernel can reject it. The user's log density is never
evaluated at a non-finite point, and every value that later arithmetic sees stays finite, so reverse-mode
gradients through a rejected trajectory are zero rather than NaN.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcmcvae.types import Array, LogDensityFn

__all__ = ["IntegratorState", "Trajectory", "leapfrog_step", "leapfrog"]


class IntegratorState(NamedTuple):
    """A point of phase space with its cached log density and gradient.

    Attributes
    ----------
    position
        ``z``, shape ``(d,)``.
    momentum
        ``p``, shape ``(d,)``.
    logdensity
        ``log pi(z) = -U(z)``.
    logdensity_grad
        ``grad log pi(z) = -grad U(z)``.
    """

    position: Array
    momentum: Array
    logdensity: Array
    logdensity_grad: Array


class Trajectory(NamedTuple):
    """The result of ``num_steps`` leapfrog steps.

    Attributes
    ----------
    end
        The last state (the last finite one when ``is_finite`` is False).
    midpoint
        The position after ``floor(L / 2)`` steps; for ``L = 1`` the mean of the first and last positions.
    is_finite
        Whether every step stayed finite (positions, momenta, log densities and gradients).
    """

    end: IntegratorState
    midpoint: Array
    is_finite: Array


def _all_finite(*arrays: Array) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))


def _select(pred: Array, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def leapfrog_step(
    state: IntegratorState,
    logdensity_fn: LogDensityFn,
    inverse_mass_apply: Callable[[Array], Array],
    step_size: Array,
    *,
    stop_gradient: bool = False,
) -> tuple[IntegratorState, Array]:
    """One leapfrog step; returns the new state and whether it is finite.

    Parameters
    ----------
    state
        The current point, with ``logdensity`` and ``logdensity_grad`` at ``state.position``.
    logdensity_fn
        ``log pi``.
    inverse_mass_apply
        ``p -> M^{-1} p``.
    step_size
        ``h``.
    stop_gradient
        Apply ``jax.lax.stop_gradient`` to ``grad log pi`` at the new position, so that reverse-mode gradients
        ignore how it moves with the parameters.

    Returns
    -------
    new_state, is_finite
        When ``is_finite`` is False the new state holds stand-in finite values (the old position, log density
        or gradient where the new ones are not finite) and is meant to be discarded.
    """
    position, momentum, _, logdensity_grad = state
    half_momentum = momentum + 0.5 * step_size * logdensity_grad
    new_position = position + step_size * inverse_mass_apply(half_momentum)
    position_is_finite = jnp.all(jnp.isfinite(new_position))
    # Evaluate at a finite point only: the user's function must not see inf, or its backward pass multiplies
    # zero cotangents by infinite partials.
    evaluated_at = jnp.where(position_is_finite, new_position, position)
    new_logdensity, new_logdensity_grad = jax.value_and_grad(logdensity_fn)(evaluated_at)
    if stop_gradient:
        new_logdensity_grad = jax.lax.stop_gradient(new_logdensity_grad)
    is_finite = position_is_finite & _all_finite(new_logdensity, new_logdensity_grad)
    # A non-finite gradient must not become a factor of later products (its zero cotangent times inf is NaN):
    # the old values stand in for it, and the step is discarded by the caller.
    new_logdensity = jnp.where(is_finite, new_logdensity, state.logdensity)
    new_logdensity_grad = jnp.where(is_finite, new_logdensity_grad, logdensity_grad)
    new_momentum = half_momentum + 0.5 * step_size * new_logdensity_grad
    is_finite = is_finite & _all_finite(new_momentum)
    return IntegratorState(evaluated_at, new_momentum, new_logdensity, new_logdensity_grad), is_finite


def leapfrog(
    logdensity_fn: LogDensityFn,
    inverse_mass_apply: Callable[[Array], Array],
    step_size: Array,
    num_steps: int,
    initial_state: IntegratorState,
    *,
    stop_gradient: bool = False,
) -> Trajectory:
    """Integrate ``num_steps`` (``L``, static) leapfrog steps of size ``h`` with ``lax.scan``.

    Parameters
    ----------
    logdensity_fn
        ``log pi``.
    inverse_mass_apply
        ``p -> M^{-1} p``.
    step_size
        ``h``.
    num_steps
        ``L >= 1``, a Python int.
    initial_state
        The starting point, its gradient already computed (the kernel state caches it).
    stop_gradient
        Stop the gradient of every ``grad log pi`` evaluated along the trajectory (all but the first, which
        belongs to the initial state).

    Returns
    -------
    Trajectory
        The end state, the midpoint position (after ``floor(L/2)`` steps; for ``L = 1`` the mean of the start
        and end positions) and whether the trajectory stayed finite. After a non-finite step the trajectory
        stays at its last finite state.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmcvae.kernels.integrators import IntegratorState, leapfrog
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> z = jnp.ones(2)
    >>> start = IntegratorState(z, jnp.zeros(2), *jax.value_and_grad(logdensity_fn)(z))
    >>> trajectory = leapfrog(logdensity_fn, lambda p: p, 0.1, 10, start)
    >>> trajectory.end.position.shape
    (2,)
    """
    num_steps = int(num_steps)
    if num_steps < 1:
        raise ValueError(f"leapfrog: num_steps must be >= 1, got {num_steps}")
    middle = num_steps // 2

    def body(carry, index):
        state, midpoint, is_finite = carry
        new_state, step_is_finite = leapfrog_step(
            state, logdensity_fn, inverse_mass_apply, step_size, stop_gradient=stop_gradient
        )
        is_finite = is_finite & step_is_finite
        state = _select(is_finite, new_state, state)
        midpoint = jnp.where(index + 1 == middle, state.position, midpoint)
        return (state, midpoint, is_finite), None

    carry = (initial_state, initial_state.position, jnp.asarray(True))
    (end, midpoint, is_finite), _ = jax.lax.scan(body, carry, jnp.arange(num_steps))
    if middle == 0:
        midpoint = 0.5 * (initial_state.position + end.position)
    return Trajectory(end, midpoint, is_finite)
