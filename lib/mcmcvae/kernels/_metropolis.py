"""What the MALA and HMC kernels share: the chain state, its initialisation and the accept/reject step."""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp

from mcmcvae.types import Array, PRNGKey

#: The ``log_acceptance_ratio`` reported for a proposal that left the finite numbers. It is finite so that
#: averages of the ratio stay finite, and it is a constant, so its gradient is zero.
REJECTED_LOG_ACCEPTANCE_RATIO = -1.0e4

S = TypeVar("S")


class State(NamedTuple):
    """The chain's position with its cached log density and gradient (no keys, no parameters, no momentum).

    Attributes
    ----------
    position
        ``z``, shape ``(d,)``.
    logdensity
        ``log pi(z) = -U(z)``.
    logdensity_grad
        ``grad log pi(z) = -grad U(z)``, shape ``(d,)``.
    """

    position: Array
    logdensity: Array
    logdensity_grad: Array


def init(position: Array, logdensity_fn) -> State:
    """The chain state at ``position``: evaluates ``log pi`` and its gradient once.

    Parameters
    ----------
    position
        ``z``, a flat ``(d,)`` float array (``vmap`` over a batch).
    logdensity_fn
        ``log pi``, up to a constant.
    """
    position = jnp.asarray(position)
    check_position(position, "init")
    logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(position)
    return State(position, logdensity, logdensity_grad)


class Decision(NamedTuple):
    state: object
    log_acceptance_ratio: Array
    acceptance_rate: Array
    is_accepted: Array
    is_finite: Array


def select(pred: Array, on_true: S, on_false: S) -> S:
    """``jnp.where`` over a pytree (a batched select under ``vmap``, differentiable in both branches)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def accept_reject(
    rng_key: PRNGKey, log_acceptance_ratio: Array, is_finite: Array, state: S, proposal: S
) -> Decision:
    """Accept ``proposal`` when ``log(u) < log_acceptance_ratio``, ``u ~ U(0, 1)``, and it is finite.

    A non-finite ratio is replaced, through ``jnp.where``, by ``REJECTED_LOG_ACCEPTANCE_RATIO``: the gradient
    through the discarded branch is then exactly zero.
    """
    is_finite = is_finite & jnp.isfinite(log_acceptance_ratio)
    log_acceptance_ratio = jnp.where(is_finite, log_acceptance_ratio, REJECTED_LOG_ACCEPTANCE_RATIO)
    acceptance_rate = jnp.exp(jnp.minimum(log_acceptance_ratio, 0.0))
    uniform = jax.random.uniform(rng_key, dtype=log_acceptance_ratio.dtype)
    is_accepted = is_finite & (jnp.log(uniform) < log_acceptance_ratio)
    return Decision(
        select(is_accepted, proposal, state), log_acceptance_ratio, acceptance_rate, is_accepted, is_finite
    )


def check_position(position: Array, caller: str) -> None:
    """Raise a clear error for a position that is not a flat ``(d,)`` float array (checked at trace time)."""
    if jnp.ndim(position) != 1:
        raise ValueError(
            f"{caller}: position must be a flat (d,) array, got shape {jnp.shape(position)}; "
            "use jax.vmap for a batch of chains"
        )
    if not jnp.issubdtype(jnp.result_type(position), jnp.floating):
        raise TypeError(f"{caller}: position must have a floating dtype, got {jnp.result_type(position)}")


def check_compatible(position: Array, preconditioner, caller: str) -> None:
    """Raise a clear error when the preconditioner's shapes do not match the position."""
    check_position(position, caller)
    dim = position.shape[0]
    scale_shape = jnp.shape(preconditioner.scale)
    if scale_shape not in ((dim,), (dim, dim)):
        raise ValueError(
            f"{caller}: preconditioner.scale must have shape ({dim},) or ({dim}, {dim}) for a position of "
            f"shape ({dim},), got {scale_shape}"
        )
    if jnp.ndim(preconditioner.log_step_size) != 0:
        raise ValueError(
            f"{caller}: preconditioner.log_step_size must be a scalar, got shape "
            f"{jnp.shape(preconditioner.log_step_size)}"
        )


def sampling_algorithm(module_name: str, init, kernel, logdensity_fn, preconditioner):
    """``blackjax.base.SamplingAlgorithm(init, step)`` of a built ``kernel`` bound to ``logdensity_fn`` and
    ``preconditioner``: the body of every kernel module's ``as_top_level_api``."""
    import blackjax.base  # deferred: the kernels themselves need only JAX

    from mcmcvae.kernels.preconditioner import Preconditioner

    if not isinstance(preconditioner, Preconditioner):
        raise TypeError(
            f"{module_name}.as_top_level_api: preconditioner must be a mcmcvae.kernels.Preconditioner, got "
            f"{type(preconditioner).__name__}; build one with Preconditioner.diagonal or .lower_triangular"
        )

    def init_fn(position: Array, rng_key: PRNGKey | None = None):
        del rng_key  # the state is deterministic
        return init(position, logdensity_fn)

    def step_fn(rng_key: PRNGKey, state):
        return kernel(rng_key, state, logdensity_fn, preconditioner)

    return blackjax.base.SamplingAlgorithm(init_fn, step_fn)
