"""Writers for tiny dataset files in the publishers' formats, and a clean data-directory environment."""

import gzip
import pathlib

import numpy as np
import pytest


def _idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: magic 0x000008NN, big-endian uint32 dims, the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def _write_idx(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _idx_bytes(array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _write_mnist_like(folder: pathlib.Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool = False):
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


@pytest.fixture
def idx_bytes():
    """``idx_bytes(array) -> bytes``."""
    return _idx_bytes


@pytest.fixture
def write_idx():
    """``write_idx(path, array)``: gzipped when the name ends in ``.gz``."""
    return _write_idx


@pytest.fixture
def write_mnist_like():
    """``write_mnist_like(folder, split, images, labels, gz=False)``: the idx pair MNIST names for a split."""
    return _write_mnist_like


@pytest.fixture
def clean_env(monkeypatch):
    """No data-directory variables, so a test sees only what it sets."""
    monkeypatch.delenv("MCMCVAE_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return monkeypatch
