"""Shared type aliases and callable protocols.

Every module of the library takes its array and callable types from here, so that a reader sees one
vocabulary: ``Array`` for values that flow through jitted code, ``PRNGKey`` for typed JAX keys made with
``jax.random.key``, and ``Protocol``s for the callables that cross module boundaries.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

Array = jax.Array
ArrayLike = jax.Array | np.ndarray | float | int
PRNGKey = jax.Array
PyTree = Any
Params = Any  # nested dict of arrays, as Haiku builds them


class LogDensityFn(Protocol):
    """Log of an unnormalised density, ``position (d,) -> scalar``."""

    def __call__(self, position: Array) -> Array: ...


class LogJointFn(Protocol):
    """One data point's ``log p(x, z)`` as a function of ``z`` alone."""

    def __call__(self, z: Array) -> Array: ...


class Batch(NamedTuple):
    """What the trainer gives a method's ``step``: a batch of images and their positions in the training set.

    Attributes
    ----------
    images
        ``(n, H, W, C)`` (or ``(n, D)`` vector data).
    indices
        ``(n,)`` int: each image's index in the training set (for methods with per-image state, such as ``vcd``'s
        control variates); None when unknown.
    """

    images: Array
    indices: Array | None = None


def as_batch(batch: Batch | Array) -> Batch:
    """``batch`` itself, or an array of images as ``Batch(images, None)`` (so a method's ``step`` can be called
    by hand with images alone)."""
    return batch if isinstance(batch, Batch) else Batch(batch, None)
