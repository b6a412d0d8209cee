"""The interface every training method implements, and the optimiser plumbing they share.

A method is a small frozen dataclass of hyperparameters with three pure functions, in the manner of an Optax
``GradientTransformation``: behaviour changes between steps only through the state it returns.

- ``init(rng_key, model, params) -> state``: the method's own state (optimiser states; for MCMC methods the
  kernel's parameters and adaptation state; control variates ...). Never holds random keys.
- ``step(rng_key, model, params, state, batch) -> (params, state, metrics)``: one update on a
  :class:`mcmcvae.types.Batch` (``images (n, H, W, C)`` and their ``indices`` in the training set; methods also
  accept the images alone, :func:`mcmcvae.types.as_batch`). ``metrics`` is a flat dict of scalar arrays; the
  trainer averages them over an epoch.
- ``proposal(rng_key, model, params, state, images) -> (loc, scale)``: the diagonal Gaussian (one per image)
  that importance sampling should use for this method's model; plain VAEs return q0, MCMC methods centre it
  on their chains. Evaluation calls it and nothing else, so nothing adapts or trains during evaluation.

The loop in :mod:`mcmcvae.train` knows nothing else about a method, which is what lets every method share it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Protocol

import jax.numpy as jnp
import optax

from mcmcvae.types import Array, Batch, Params, PRNGKey

__all__ = ["Method", "make_optimizer", "apply_gradients", "nonfinite_count"]


class Method(Protocol):
    name: str

    def init(self, rng_key: PRNGKey, model, params: Params) -> Any: ...

    def step(self, rng_key: PRNGKey, model, params: Params, state: Any, batch: Batch | Array): ...

    def proposal(self, rng_key: PRNGKey, model, params: Params, state: Any, images: Array): ...

    def config(self) -> dict[str, Any]: ...


def make_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """Adam wrapped so that a non-finite gradient skips the update and is flagged, never written into params.

    ``optax.apply_if_finite`` zeroes the update and leaves the inner state untouched when any gradient is NaN or
    infinite; :func:`nonfinite_count` reads whether the latest update was skipped. This is the method-level half
    of the guard: the trainer (:mod:`mcmcvae.train`) also refuses any step whose new parameters, optimiser or
    kernel state would be non-finite (a huge learning rate overflows them with finite gradients), and reports the
    exact number of skipped steps per epoch as ``nonfinite_updates``.

    Raises
    ------
    ValueError
        If ``learning_rate`` is a number that is not positive and finite (NaN, infinite, zero or negative).
    """
    if isinstance(learning_rate, numbers.Real) and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive finite number (e.g. 1e-3), got {learning_rate!r}")
    return optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=1_000_000)


def nonfinite_count(opt_state) -> Array:
    """1 if the update that produced ``opt_state`` (from :func:`make_optimizer`) was skipped because a gradient
    was non-finite, else 0 (int32): a per-step count, so the trainer can add them up exactly."""
    return 1 - opt_state.last_finite.astype(jnp.int32)


def apply_gradients(optimizer: optax.GradientTransformation, grads, opt_state, params):
    """One optimiser step on a parameter pytree (gradients of a loss to be minimised)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

