"""Datasets: loaders, binarisation, the data directory and fetching.

``mv.data.load(name, split)`` reads ``mnist``, ``fashion_mnist``, ``omniglot``, ``svhn`` or ``cifar10``
from :func:`data_dir` as float32 images in [0, 1] of shape ``(n, H, W, C)`` and int32 labels.
``mv.data.fetch`` downloads the datasets it can; ``binarize_static`` and ``binarize_dynamic`` turn
grey levels into the binary images of a Bernoulli likelihood.

Names load on first use, so that ``mcmcvae data fetch`` does not import JAX.

Examples
--------
>>> import mcmcvae as mv
>>> mv.data.image_shape("svhn")
(32, 32, 3)
"""

from importlib import import_module as _import_module

_NAMES = {
    "DATASETS": "datasets",
    "Dataset": "datasets",
    "DataNotFoundError": "datasets",
    "data_dir": "datasets",
    "image_shape": "datasets",
    "load": "datasets",
    "load_images": "datasets",
    "LINEAR_HVAE": "datasets",
    "read_idx": "idx",
    "binarize_static": "binarize",
    "binarize_dynamic": "binarize",
    "binarize_fixed": "fixed_binarization",
    "load_fixed_binarization": "fixed_binarization",
    "FIXED_BINARIZATION_SEEDS": "fixed_binarization",
    "FetchReport": "download",
    "fetch": "download",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        value = getattr(_import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mcmcvae.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_NAMES))
