"""MNIST and Fashion-MNIST as published, when they are in the data directory.

These run on the real files that ``mcmcvae data fetch mnist fashion_mnist`` puts into the data directory and
are skipped, saying so, where that has not been run.
"""

import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.data import download
from mcmcvae.data.datasets import find_file

# Known facts about the published datasets: mean pixel intensity of the training images, and class counts.
_TRAIN_MEAN = {"mnist": 0.1307, "fashion_mnist": 0.2860}
_CLASS_COUNTS = {
    ("mnist", "train"): [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ("mnist", "test"): [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ("fashion_mnist", "train"): [6000] * 10,
    ("fashion_mnist", "test"): [1000] * 10,
}


def _require(name):
    # Present is enough: files that are there but fail their checks should fail these tests, not skip them.
    folder = mv.data.data_dir() / name
    if any(find_file(folder, relative, name) is None for relative in download.SHA256[name]):
        pytest.skip(f"{name} is not in {folder}: run `mcmcvae data fetch {name}` to test on the real files")
    return folder


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_files_load_with_the_published_sizes_and_statistics(name):
    _require(name)
    train, test = mv.data.load(name, "train"), mv.data.load(name, "test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int32
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    assert abs(float(train.images.mean()) - _TRAIN_MEAN[name]) < 5e-4
    assert np.bincount(train.labels).tolist() == _CLASS_COUNTS[name, "train"]
    assert np.bincount(test.labels).tolist() == _CLASS_COUNTS[name, "test"]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_fetch_leaves_checked_real_files_alone(name):
    folder = _require(name)
    before = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    (report,) = mv.data.fetch(name)
    assert report.status == "already present"
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == before
