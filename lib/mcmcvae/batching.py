"""Fixed-shape batches over a data set: the one loop that evaluation code runs outside ``jit``.

A jitted function compiles once per input shape, so the last, short batch is padded by repeating the final data
point, and its surplus results are dropped. Every data-set-level evaluation (importance sampling, AIS, method
proposals) goes through :func:`map_padded_batches`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from mcmcvae.types import PyTree

__all__ = ["map_padded_batches"]


def map_padded_batches(fn: Callable[[int, np.ndarray, PyTree], PyTree], inputs: PyTree, batch_size: int) -> PyTree:
    """Apply ``fn(batch_number, indices, batch)`` to consecutive batches of ``inputs`` and concatenate the results.

    Parameters
    ----------
    fn
        Called with the batch's number ``b`` (0, 1, ...), the data points' indices ``start .. start + batch_size - 1``
        (``np.ndarray``; those past the end belong to padding) and the batch: ``inputs`` indexed leaf by leaf, the
        final data point repeated in place of the missing ones. Returns a pytree of arrays whose leading axis is
        the batch. Usually jitted: every call has the same shapes.
    inputs
        An array of shape ``(n, ...)`` or a pytree of arrays sharing the leading axis ``n >= 1``.
    batch_size
        Data points per call (capped at ``n``).

    Returns
    -------
    PyTree
        ``fn``'s results for the ``n`` real data points, concatenated along the leading axis, as numpy arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmcvae.batching import map_padded_batches
    >>> map_padded_batches(lambda b, idx, x: 2 * x, np.arange(5.0), batch_size=2)
    array([0., 2., 4., 6., 8.])
    """
    leaves = jax.tree.leaves(inputs)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("inputs must be an array of shape (n, ...) or a pytree of such arrays")
    num_points = np.shape(leaves[0])[0]
    if any(np.shape(leaf)[0] != num_points for leaf in leaves):
        raise ValueError(f"every array in inputs needs the same leading axis, got {[np.shape(a) for a in leaves]}")
    if num_points == 0:
        raise ValueError("inputs hold no data points")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = min(int(batch_size), num_points)
    results = []
    for number, start in enumerate(range(0, num_points, batch_size)):
        indices = np.arange(start, start + batch_size)
        batch = jax.tree.map(lambda a: a[np.minimum(indices, num_points - 1)], inputs)
        kept = num_points - start
        results.append(jax.tree.map(lambda r: np.asarray(r)[:kept], fn(number, indices, batch)))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *results)
