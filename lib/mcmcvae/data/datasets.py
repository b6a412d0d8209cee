"""Image datasets read from the data directory, in the files their publishers distribute.

Every loader returns a :class:`Dataset` of ``images``, float32 in [0, 1] with shape ``(n, H, W, C)``, and
``labels``, int32 with shape ``(n,)``. The files live under :func:`data_dir`, one folder per dataset:

============== ==================================================================================
mnist          ``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
fashion_mnist  ``fashion_mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
omniglot       ``omniglot/chardata.mat`` (the IWAE repository's 28x28 Omniglot)
svhn           ``svhn/{train,test}_32x32.mat``
cifar10        ``cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch}``
============== ==================================================================================
"""

from __future__ import annotations

import os
import pathlib
import pickle
from typing import NamedTuple

import numpy as np

from mcmcvae.data.idx import read_idx

DATASETS = ("mnist", "fashion_mnist", "omniglot", "svhn", "cifar10")
SPLITS = ("train", "test")

_IMAGE_SHAPES = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "omniglot": (28, 28, 1),
    "svhn": (32, 32, 3),
    "cifar10": (32, 32, 3),
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR10_FOLDER = "cifar-10-batches-py"

# The files each split reads, relative to the dataset's folder. idx files may also carry a ".gz" suffix.
FILES = {
    "mnist": _IDX_FILES,
    "fashion_mnist": _IDX_FILES,
    "omniglot": {"train": ("chardata.mat",), "test": ("chardata.mat",)},
    "svhn": {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
    "cifar10": {
        "train": tuple(f"{_CIFAR10_FOLDER}/data_batch_{i}" for i in range(1, 6)),
        "test": (f"{_CIFAR10_FOLDER}/test_batch",),
    },
}

# Datasets that `fetch` cannot download: where a person gets their files.
MANUAL_SOURCES = {
    "omniglot": (
        "download chardata.mat from the IWAE repository "
        "(https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat) "
        "and save it as {folder}/chardata.mat"
    ),
    "svhn": (
        "download train_32x32.mat and test_32x32.mat (the cropped digits, 'Format 2') from the Stanford SVHN page "
        "(http://ufldl.stanford.edu/housenumbers/) and save them in {folder}/"
    ),
    "cifar10": (
        "download the CIFAR-10 python version "
        "(https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) and unpack it in {folder}/ "
        f"(`tar xzf cifar-10-python.tar.gz -C {{folder}}` creates {{folder}}/{_CIFAR10_FOLDER}/)"
    ),
}


class Dataset(NamedTuple):
    """One split of an image dataset.

    Attributes
    ----------
    images
        float32 array of shape ``(n, H, W, C)`` with values in [0, 1].
    labels
        int32 array of shape ``(n,)``: the class of each image (for Omniglot its alphabet), or -1 where the
        file holds no label.
    """

    images: np.ndarray
    labels: np.ndarray


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not in the data directory.

    The message names the dataset, the folder searched, the files expected and how to get them.

    Attributes
    ----------
    dataset
        The dataset's name.
    directory
        The folder that was searched.
    missing
        The paths that were expected and not found.
    """

    def __init__(self, message: str, *, dataset: str, directory: pathlib.Path, missing: tuple[pathlib.Path, ...]):
        super().__init__(message)
        self.dataset = dataset
        self.directory = directory
        self.missing = missing


def data_dir() -> pathlib.Path:
    """Return the data directory, where :func:`load` looks for datasets and :func:`fetch` puts them.

    It is ``$MCMCVAE_DATA`` when that variable is set, else ``$XDG_CACHE_HOME/mcmcvae/data``, with
    ``XDG_CACHE_HOME`` defaulting to ``~/.cache``. The directory is not created here.

    Returns
    -------
    pathlib.Path
        The directory, with ``~`` expanded.

    Examples
    --------
    With ``MCMCVAE_DATA=/srv/datasets`` in the environment:

    >>> from unittest import mock
    >>> import mcmcvae as mv
    >>> with mock.patch.dict("os.environ", {"MCMCVAE_DATA": "/srv/datasets"}):
    ...     print(mv.data.data_dir())
    /srv/datasets
    """
    explicit = os.environ.get("MCMCVAE_DATA")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return pathlib.Path(cache).expanduser() / "mcmcvae" / "data"


def resolve_data_dir(directory: str | os.PathLike | None) -> pathlib.Path:
    """Return ``directory`` as a path, or :func:`data_dir` when it is None."""
    return data_dir() if directory is None else pathlib.Path(directory).expanduser()


def check_name(name: str) -> None:
    """Raise ``ValueError`` listing the valid names unless ``name`` is one of :data:`DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names are: {', '.join(DATASETS)}")


def image_shape(name: str) -> tuple[int, int, int]:
    """Return the ``(H, W, C)`` shape of one image of dataset ``name``.

    Examples
    --------
    >>> from mcmcvae.data import image_shape
    >>> image_shape("mnist"), image_shape("cifar10")
    ((28, 28, 1), (32, 32, 3))
    """
    check_name(name)
    return _IMAGE_SHAPES[name]


def find_file(folder: pathlib.Path, relative: str, name: str) -> pathlib.Path | None:
    """Return the path of one expected file, or None; idx files are found plain or gzipped."""
    path = folder / relative
    if path.is_file():
        return path
    if name in ("mnist", "fashion_mnist"):
        gzipped = folder / (relative + ".gz")
        if gzipped.is_file():
            return gzipped
    return None


def how_to_get(name: str, root: pathlib.Path) -> str:
    """Say how to put dataset ``name`` into data directory ``root``."""
    folder = root / name
    if name in MANUAL_SOURCES:
        return MANUAL_SOURCES[name].format(folder=folder)
    command = f"mcmcvae data fetch {name}"
    if root != data_dir():
        command = f"MCMCVAE_DATA={root} {command}"
    return f"run `{command}`, which downloads them into {folder}/"


def load(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load one split of a dataset from the data directory.

    Parameters
    ----------
    name
        One of :data:`DATASETS`: ``mnist``, ``fashion_mnist``, ``omniglot``, ``svhn``, ``cifar10``.
    split
        ``"train"`` or ``"test"``.
    data_dir
        The data directory; default :func:`mcmcvae.data.data_dir` (``$MCMCVAE_DATA`` or the cache folder).

    Returns
    -------
    Dataset
        ``images`` float32 ``(n, H, W, C)`` in [0, 1] (``H, W, C`` as :func:`image_shape` gives) and
        ``labels`` int32 ``(n,)``. Omniglot's labels are the alphabet of each character (0 to 49, the
        one-hot ``target``/``testtarget`` of ``chardata.mat``); SVHN's label 10 is read as digit 0.

    Raises
    ------
    ValueError
        For an unknown name or split, a corrupt file, or images holding NaN.
    DataNotFoundError
        If the files are missing; its message says where they are expected and how to get them.

    Examples
    --------
    After ``mcmcvae data fetch mnist``:

    >>> import mcmcvae as mv
    >>> test = mv.data.load("mnist", "test")
    >>> test.images.shape, test.labels.shape
    ((10000, 28, 28, 1), (10000,))
    >>> float(test.images.min()), float(test.images.max())
    (0.0, 1.0)
    """
    check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir)
    folder = root / name
    relatives = FILES[name][split]
    paths = [find_file(folder, relative, name) for relative in relatives]
    missing = tuple(folder / relative for relative, path in zip(relatives, paths) if path is None)
    if missing:
        gz_note = " (or the same names with a '.gz' suffix)" if name in ("mnist", "fashion_mnist") else ""
        raise DataNotFoundError(
            f"dataset {name!r} ({split} split) was not found in {folder}.\n"
            f"Expected these files{gz_note}:\n"
            + "".join(f"  {path}\n" for path in missing)
            + f"To fix this, {how_to_get(name, root)}.\n"
            "The data directory is $MCMCVAE_DATA if set, else $XDG_CACHE_HOME/mcmcvae/data (~/.cache/mcmcvae/data).",
            dataset=name,
            directory=folder,
            missing=missing,
        )
    images, labels = _READERS[name](paths, split)
    return Dataset(_unit_float_images(images, paths[0]), np.asarray(labels, dtype=np.int32))


def _unit_float_images(images: np.ndarray, source: pathlib.Path) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32, order="C") / np.float32(255.0)
    images = images.astype(np.float32, order="C")
    if np.isnan(images).any():
        raise ValueError(f"{source} holds images with NaN pixel values; the file is corrupt, replace it")
    low, high = images.min(initial=0.0), images.max(initial=0.0)
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{source} holds pixel values in [{low}, {high}], expected [0, 1]")
    return images


def read_mnist_like(image_path: pathlib.Path, label_path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-style pair of idx files as ``(n, 28, 28, 1)`` uint8 images and ``(n,)`` labels."""
    return check_mnist_like(read_idx(image_path), read_idx(label_path), image_path, label_path)


def check_mnist_like(images: np.ndarray, labels: np.ndarray, image_source, label_source):
    """Check that idx arrays are MNIST-style images and labels; return ``(images[..., None], labels)``."""
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{image_source} is not an MNIST-style image file: expected magic number 2051 "
            f"(unsigned bytes, shape (n, 28, 28)), found {images.dtype} values of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{label_source} is not an MNIST-style label file: expected magic number 2049 "
            f"(unsigned bytes, shape (n,)), found {labels.dtype} values of shape {labels.shape}"
        )
    if len(labels) != len(images):
        raise ValueError(f"{image_source} holds {len(images)} images but {label_source} holds {len(labels)} labels")
    return images[..., None], labels


def _read_idx_split(paths, split):
    return read_mnist_like(*paths)


def _read_omniglot(paths, split):
    import scipy.io  # scipy loads only for the .mat datasets

    (path,) = paths
    image_key, target_key = ("data", "target") if split == "train" else ("testdata", "testtarget")
    contents = scipy.io.loadmat(path, variable_names=[image_key, target_key])
    if image_key not in contents:
        raise ValueError(f"{path} holds no {image_key!r} array; is it the IWAE repository's chardata.mat?")
    flat = np.asarray(contents[image_key])
    if flat.ndim != 2 or flat.shape[0] != 28 * 28:
        raise ValueError(f"{path}: {image_key!r} has shape {flat.shape}, expected (784, n)")
    # Each column is one image flattened column-major (MATLAB's order). The IWAE repository's datasets.py
    # reads it as data.T.reshape((-1, 28, 28)).reshape((-1, 784), order="F"), whose rows are row-major
    # images; that is a transpose of each 28x28 block.
    images = flat.T.reshape(-1, 28, 28).transpose(0, 2, 1)[..., None]
    labels = np.full(len(images), -1, dtype=np.int32)
    if target_key in contents:
        target = np.asarray(contents[target_key])
        if target.ndim == 2 and target.shape[0] > 1 and target.shape[1] == len(images):
            labels = np.argmax(target, axis=0)  # one-hot columns, one row per alphabet
        elif target.size == len(images):
            labels = target.reshape(-1)
    return images, labels


def _read_svhn(paths, split):
    import scipy.io

    (path,) = paths
    contents = scipy.io.loadmat(path)
    if "X" not in contents or "y" not in contents:
        raise ValueError(f"{path} holds no 'X' and 'y' arrays; is it SVHN's {split}_32x32.mat?")
    images = np.asarray(contents["X"])
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: 'X' has shape {images.shape}, expected (32, 32, 3, n)")
    labels = np.asarray(contents["y"]).reshape(-1).astype(np.int32)
    if len(labels) != images.shape[3]:
        raise ValueError(f"{path} holds {images.shape[3]} images but {len(labels)} labels")
    labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10
    return np.moveaxis(images, 3, 0), labels


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays and refuses anything else, so a file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")
        return super().find_class(module, name)


def _read_cifar10(paths, split):
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as f:
            try:
                batch = _ArrayUnpickler(f, encoding="bytes").load()
            except (pickle.UnpicklingError, EOFError, ValueError) as error:
                raise ValueError(f"{path} is not a CIFAR-10 python batch ({error}); replace it") from None
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise ValueError(f"{path} is not a CIFAR-10 python batch: expected a dict with b'data' and b'labels'")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: b'data' has shape {data.shape}, expected (n, 3072)")
        # Each row holds the red, then green, then blue 32x32 plane, each row-major.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int32).reshape(-1))
        if len(labels[-1]) != len(images[-1]):
            raise ValueError(f"{path} holds {len(images[-1])} images but {len(labels[-1])} labels")
    return np.concatenate(images), np.concatenate(labels)


_READERS = {
    "mnist": _read_idx_split,
    "fashion_mnist": _read_idx_split,
    "omniglot": _read_omniglot,
    "svhn": _read_svhn,
    "cifar10": _read_cifar10,
}


LINEAR_HVAE = "linear_hvae"  # synthetic vectors drawn from a documented linear hierarchical model


def load_images(name: str, split: str = "train", *, binarize: str = "none", num_images: int | None = None,
                latent_sizes=(10, 20)) -> np.ndarray:
    """A split's images as a run trains or evaluates on them: the first ``num_images``, binarised if asked.

    Parameters
    ----------
    name
        One of :data:`DATASETS`, or ``"linear_hvae"``: the synthetic vector data ``(n, D, 1, 1)`` of
        :func:`mcmcvae.hierarchical.make_dataset` from its generating model with ``latent_sizes``.
    split
        ``"train"`` or ``"test"``.
    binarize
        ``"static"`` (threshold 0.5) or ``"none"``. (Dynamic binarisation is a per-batch draw in training;
        evaluation code fixes one draw itself.)
    num_images
        Keep the first ``num_images`` (all when ``None``).

    Returns
    -------
    np.ndarray
        float32 ``(n, H, W, C)``.

    Raises
    ------
    ValueError
        For an unknown name or ``binarize``, a non-positive ``num_images``, or a binarisation of ``linear_hvae``.
    DataNotFoundError
        If an image dataset's files are missing (the message says how to fetch them).
    """
    from mcmcvae.data.binarize import binarize_static

    if binarize not in ("static", "none"):
        raise ValueError(f"binarize must be 'static' or 'none', got {binarize!r}")
    if num_images is not None and (isinstance(num_images, bool) or int(num_images) != num_images or num_images < 1):
        raise ValueError(f"the number of images to keep (--train-size, --num-images) must be a positive integer, "
                         f"got {num_images!r}")
    if name == LINEAR_HVAE:
        if binarize != "none":
            raise ValueError(f"linear_hvae holds real-valued vectors; binarize={binarize!r} does not apply")
        from mcmcvae.hierarchical import make_dataset  # the data come from the model family that generated them

        images = make_dataset(tuple(int(s) for s in latent_sizes), split=split).images
    else:
        images = load(name, split).images
    images = images if num_images is None else images[: int(num_images)]
    return np.asarray(binarize_static(images) if binarize == "static" else images, np.float32)
