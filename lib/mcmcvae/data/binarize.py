"""Binarisation of grey-level images for Bernoulli likelihoods.

Static binarisation thresholds once, so every epoch sees the same binary images. Dynamic binarisation
draws fresh binary images every time, ``x ~ Bernoulli(p)`` with ``p`` the pixel intensity, as the IWAE
paper (Burda et al., 2016, section 5) does for MNIST and Omniglot; it is pure and jit-able, so a jitted
epoch can binarise each batch with a key folded in from the step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.types import Array, ArrayLike, PRNGKey


def _check_intensities(images) -> None:
    """Concrete (not traced) inputs must be numeric, finite intensities in [0, 1]; inside ``jit`` nothing can be
    checked, so validate before tracing."""
    if isinstance(images, jax.core.Tracer):
        return
    array = np.asarray(images)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"images must be a numeric array of intensities in [0, 1], got dtype {array.dtype}")
    if array.size == 0:
        return
    if not np.all(np.isfinite(array)):
        raise ValueError(f"images contain {int(np.sum(~np.isfinite(array)))} NaN or infinite pixels; clean or drop "
                         "those images before binarising")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"intensities must lie in [0, 1], found [{lo}, {hi}]; divide 8-bit images by 255")


def binarize_static(images: ArrayLike, threshold: float = 0.5) -> Array | np.ndarray:
    """Threshold images: ``x = 1`` where the intensity exceeds ``threshold``, else 0.

    Parameters
    ----------
    images
        Intensities in [0, 1], any shape; a numpy array or a ``jax.Array`` (also inside ``jit``).
    threshold
        Pixels strictly above it become 1.

    Raises
    ------
    ValueError
        For NaN or infinite pixels, or intensities outside [0, 1] (8-bit images: divide by 255); checked on
        concrete arrays, not on traced ones inside ``jit``.

    Returns
    -------
    numpy.ndarray or jax.Array
        float32 zeros and ones, the same kind of array as ``images`` (numpy in, numpy out).

    Examples
    --------
    >>> import numpy as np
    >>> from mcmcvae.data import binarize_static
    >>> binarize_static(np.array([0.2, 0.5, 0.9]))
    array([0., 0., 1.], dtype=float32)
    """
    _check_intensities(images)
    if not (0.0 <= threshold < 1.0):
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    if isinstance(images, jax.Array):
        return (images > threshold).astype(jnp.float32)
    return (np.asarray(images) > threshold).astype(np.float32)


def binarize_dynamic(rng_key: PRNGKey, images: ArrayLike) -> Array:
    """Draw binary images ``x ~ Bernoulli(p)`` with ``p`` the pixel intensity.

    Parameters
    ----------
    rng_key
        A ``jax.random.key``; a new key gives a new binarisation.
    images
        Intensities in [0, 1], any shape.

    Raises
    ------
    ValueError
        As :func:`binarize_static`.

    Returns
    -------
    jax.Array
        float32 zeros and ones with the shape of ``images``; pixels at 0 stay 0 and pixels at 1 stay 1.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmcvae.data import binarize_dynamic
    >>> binarize_dynamic(jax.random.key(0), jnp.array([0.0, 1.0]))
    Array([0., 1.], dtype=float32)
    """
    _check_intensities(images)
    probabilities = jnp.asarray(images, dtype=jnp.float32)
    return jax.random.bernoulli(rng_key, probabilities).astype(jnp.float32)
