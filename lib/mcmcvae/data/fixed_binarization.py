"""A fixed stochastic binarisation: every pixel drawn once as ``Bernoulli(intensity)`` with a documented seed.

This is the kind of binary MNIST of Ruiz and Titsias (2019) and of much of the VAE literature before it: one draw
of the whole training set and one of the whole test set, kept for every epoch and every evaluation. It is not the
same draw: theirs is Larochelle and Murray's (2011; ``binarized_mnist_{train,test}.amat``, 50000 training images,
not obtainable here), this one is drawn from the MNIST files with the seeds below, over all 60000 training images.
It differs from the threshold at 0.5 (:func:`mcmcvae.data.binarize_static`, which removes the pixel noise and
makes the data far easier to model) and from dynamic binarisation (:func:`mcmcvae.data.binarize_dynamic`, a fresh
draw per batch).
Log-likelihoods on one binarisation cannot be compared with those on another.

The draw uses NumPy's PCG64 generator seeded with :data:`FIXED_BINARIZATION_SEEDS` (``train`` 0, ``test`` 1) over
the whole split in file order, so an image's binary version does not depend on how many images a run keeps.
"""

from __future__ import annotations

import numpy as np

from mcmcvae.types import ArrayLike

__all__ = ["FIXED_BINARIZATION_SEEDS", "binarize_fixed", "load_fixed_binarization"]

FIXED_BINARIZATION_SEEDS = {"train": 0, "test": 1}


def binarize_fixed(images: ArrayLike, seed: int) -> np.ndarray:
    """One fixed draw ``x ~ Bernoulli(p)`` of every pixel, ``p`` its intensity; the same ``seed`` gives the same draw.

    Parameters
    ----------
    images
        Intensities in [0, 1], any shape (NumPy or JAX array); read on the host.
    seed
        A non-negative integer seeding NumPy's PCG64 generator; pixel ``j`` of the flattened array uses the
        ``j``-th uniform draw, ``x_j = 1`` where it falls below ``p_j``.

    Returns
    -------
    np.ndarray
        float32 zeros and ones, the shape of ``images``; pixels at 0 stay 0 and pixels at 1 stay 1.

    Raises
    ------
    ValueError
        For a negative or non-integer seed, or intensities outside [0, 1] or not finite (grey levels in 0..255
        must be divided by 255 first).

    Examples
    --------
    >>> import numpy as np
    >>> from mcmcvae.data import binarize_fixed
    >>> images = np.array([[0.0, 0.3, 0.7, 1.0]])
    >>> x = binarize_fixed(images, seed=0)
    >>> x.dtype, x[0, 0], x[0, 3], bool(np.all(x == binarize_fixed(images, seed=0)))
    (dtype('float32'), np.float32(0.0), np.float32(1.0), True)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    probabilities = np.asarray(images, np.float64)
    if probabilities.size and not (np.all(np.isfinite(probabilities)) and probabilities.min() >= 0.0
                                   and probabilities.max() <= 1.0):
        raise ValueError(f"binarize_fixed needs intensities in [0, 1]; got values in [{np.nanmin(probabilities)}, "
                         f"{np.nanmax(probabilities)}] (divide grey levels by 255; remove non-finite values)")
    uniform = np.random.Generator(np.random.PCG64(int(seed))).random(probabilities.shape)
    return (uniform < probabilities).astype(np.float32)


def load_fixed_binarization(name: str, split: str = "train", *, num_images: int | None = None,
                            seed: int | None = None, data_dir=None) -> np.ndarray:
    """A split of an image dataset under its fixed stochastic binarisation, ``(n, H, W, C)`` float32.

    The whole split is drawn with ``seed`` (default: :data:`FIXED_BINARIZATION_SEEDS` for the split), then the
    first ``num_images`` are kept, so that a shorter run sees the same binary images as a full one.

    Raises
    ------
    ValueError
        For a split other than ``train`` or ``test``, or a non-positive ``num_images``.
    mcmcvae.data.DataNotFoundError
        If the dataset's files are missing.
    """
    from mcmcvae.data.datasets import load

    if split not in FIXED_BINARIZATION_SEEDS:
        raise ValueError(f"split must be one of {tuple(FIXED_BINARIZATION_SEEDS)}, got {split!r}")
    if num_images is not None and num_images <= 0:
        raise ValueError(f"num_images must be positive or None, got {num_images!r}")
    images = load(name, split, data_dir=data_dir).images
    binary = binarize_fixed(images, FIXED_BINARIZATION_SEEDS[split] if seed is None else seed)
    return binary if num_images is None else binary[:num_images]
