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

from typing import Any, Protocol

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
    """Adam wrapped so that a non-finite gradient skips the update and is counted, never written into params.

    ``optax.apply_if_finite`` zeroes the update and leaves the inner state untouched when any gradient is NaN or
    infinite; its state counts such steps (see :func:`nonfinite_count`).
    """
    return optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=1_000_000)


def nonfinite_count(opt_state) -> Array:
    """Total number of skipped (non-finite) updates recorded by :func:`make_optimizer`'s state."""
    return opt_state.total_notfinite


def apply_gradients(optimizer: optax.GradientTransformation, grads, opt_state, params):
    """One optimiser step on a parameter pytree (gradients of a loss to be minimised)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

