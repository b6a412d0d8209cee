"""Loaders on tiny files written here in each publisher's format, the data directory, and the errors."""

import os
import pathlib
import pickle

import numpy as np
import pytest
import scipy.io

import mcmcvae as mv
from mcmcvae.data import DataNotFoundError


def _asymmetric_images(n, height, width, channels=None, seed=0):
    """Random images whose every transpose or flip differs from the original."""
    shape = (n, height, width) if channels is None else (n, height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --- the data directory -------------------------------------------------------------------------------


def test_data_dir_prefers_mcmcvae_data(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clean_env.setenv("MCMCVAE_DATA", str(tmp_path / "mine"))
    assert mv.data.data_dir() == tmp_path / "mine"


def test_data_dir_falls_back_to_xdg_cache_then_home(clean_env, tmp_path):
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert mv.data.data_dir() == tmp_path / "home" / ".cache" / "mcmcvae" / "data"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert mv.data.data_dir() == tmp_path / "cache" / "mcmcvae" / "data"
    assert not (tmp_path / "cache").exists()  # asking for the directory creates nothing


def test_load_reads_from_the_environment_directory(clean_env, tmp_path, write_mnist_like):
    images, labels = _asymmetric_images(2, 28, 28), np.array([3, 4], dtype=np.uint8)
    write_mnist_like(tmp_path / "mnist", "test", images, labels)
    clean_env.setenv("MCMCVAE_DATA", str(tmp_path))
    np.testing.assert_array_equal(mv.data.load("mnist", "test").labels, [3, 4])


# --- names, shapes, errors ----------------------------------------------------------------------------


def test_names_and_image_shapes():
    assert mv.data.DATASETS == ("mnist", "fashion_mnist", "omniglot", "svhn", "cifar10")
    assert [mv.data.image_shape(name) for name in mv.data.DATASETS] == [(28, 28, 1)] * 3 + [(32, 32, 3)] * 2


@pytest.mark.parametrize("call", [lambda: mv.data.load("imagenet"), lambda: mv.data.image_shape("imagenet")])
def test_unknown_name_lists_the_valid_ones(call):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as error:
        call()
    for name in mv.data.DATASETS:
        assert name in str(error.value)


def test_unknown_split_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'valid'.*train, test"):
        mv.data.load("mnist", "valid", data_dir=tmp_path)


def test_missing_mnist_names_the_files_and_the_fetch_command(clean_env, tmp_path):
    clean_env.setenv("MCMCVAE_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError) as error:
        mv.data.load("mnist", "test")
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert "'mnist'" in message and str(tmp_path / "mnist") in message
    assert str(tmp_path / "mnist" / "t10k-images-idx3-ubyte") in message
    assert str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte") in message
    assert "'.gz'" in message
    assert "`mcmcvae data fetch mnist`" in message
    assert error.value.missing == (tmp_path / "mnist/t10k-images-idx3-ubyte", tmp_path / "mnist/t10k-labels-idx1-ubyte")


def test_missing_files_in_an_explicit_directory_say_how_to_fetch_there(clean_env, tmp_path, write_mnist_like):
    # Only the labels are missing: the message lists just them, and points the fetch command at the directory.
    write_mnist_like(tmp_path / "fashion_mnist", "train", np.zeros((1, 28, 28)), np.zeros(1))
    os.remove(tmp_path / "fashion_mnist" / "train-labels-idx1-ubyte")
    with pytest.raises(DataNotFoundError) as error:
        mv.data.load("fashion_mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "train-images" not in message
    assert str(tmp_path / "fashion_mnist" / "train-labels-idx1-ubyte") in message
    assert f"`MCMCVAE_DATA={tmp_path} mcmcvae data fetch fashion_mnist`" in message


@pytest.mark.parametrize(
    ("name", "split", "expected_path", "source"),
    [
        ("omniglot", "test", "omniglot/chardata.mat", "yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"),
        ("svhn", "train", "svhn/train_32x32.mat", "ufldl.stanford.edu/housenumbers"),
        ("cifar10", "test", "cifar10/cifar-10-batches-py/test_batch", "cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ],
)
def test_missing_manual_datasets_say_where_to_download_and_where_to_put(tmp_path, name, split, expected_path, source):
    with pytest.raises(DataNotFoundError, match=name) as error:
        mv.data.load(name, split, data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / expected_path) in message
    assert source in message
    assert str(tmp_path / name) in message


# --- MNIST and Fashion-MNIST: idx files ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "gz"), [("mnist", False), ("fashion_mnist", True)])
def test_idx_datasets_load_plain_or_gzipped(tmp_path, write_mnist_like, name, gz):
    images, labels = _asymmetric_images(4, 28, 28), np.array([0, 9, 3, 3], dtype=np.uint8)
    write_mnist_like(tmp_path / name, "train", images, labels, gz=gz)
    dataset = mv.data.load(name, "train", data_dir=tmp_path)
    assert isinstance(dataset, mv.data.Dataset)
    assert dataset.images.shape == (4, 28, 28, 1) and dataset.images.dtype == np.float32
    assert dataset.labels.shape == (4,) and dataset.labels.dtype == np.int32
    np.testing.assert_allclose(dataset.images[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_idx_images_of_the_wrong_shape_are_rejected(tmp_path, write_mnist_like):
    write_mnist_like(tmp_path / "mnist", "train", np.zeros((2, 32, 32)), np.zeros(2))
    with pytest.raises(ValueError, match=r"expected magic number 2051.*\(2, 32, 32\)"):
        mv.data.load("mnist", data_dir=tmp_path)


def test_idx_labels_must_match_the_images(tmp_path, write_mnist_like):
    write_mnist_like(tmp_path / "mnist", "test", np.zeros((3, 28, 28)), np.zeros(2))
    with pytest.raises(ValueError, match="3 images but .* 2 labels"):
        mv.data.load("mnist", "test", data_dir=tmp_path)


def test_corrupt_idx_file_names_the_file(tmp_path, write_mnist_like):
    write_mnist_like(tmp_path / "mnist", "test", np.zeros((1, 28, 28)), np.zeros(1))
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x08\x00" + path.read_bytes()[2:])
    with pytest.raises(ValueError, match=f"{path} is not an idx file: bad magic number"):
        mv.data.load("mnist", "test", data_dir=tmp_path)


# --- Omniglot: the IWAE repository's chardata.mat -----------------------------------------------------


def _write_chardata(path, train, test, with_targets=True):
    """chardata.mat as the IWAE repository ships it: one MATLAB column-major flattened image per column."""

    def columns(images):
        return images.transpose(0, 2, 1).reshape(len(images), 28 * 28).T.astype(np.float64)

    contents = {"data": columns(train), "testdata": columns(test)}
    if with_targets:
        for key, n in (("target", len(train)), ("testtarget", len(test))):
            one_hot = np.zeros((50, n))
            one_hot[np.arange(n) * 7 % 50, np.arange(n)] = 1.0
            contents[key] = one_hot
        contents["targetchar"] = np.ones((1, len(train)))
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, contents)


def test_omniglot_images_are_upright_and_match_the_iwae_reading(tmp_path):
    train = _asymmetric_images(5, 28, 28, seed=1) / 255.0
    test = _asymmetric_images(3, 28, 28, seed=2) / 255.0
    path = tmp_path / "omniglot" / "chardata.mat"
    _write_chardata(path, train, test)

    for split, expected in (("train", train), ("test", test)):
        dataset = mv.data.load("omniglot", split, data_dir=tmp_path)
        assert dataset.images.shape == (len(expected), 28, 28, 1) and dataset.images.dtype == np.float32
        np.testing.assert_allclose(dataset.images[..., 0], expected, rtol=1e-6)
        np.testing.assert_array_equal(dataset.labels, np.arange(len(expected)) * 7 % 50)
        assert dataset.labels.dtype == np.int32

    # The IWAE repository's datasets.py, reshape_data(omni_raw["data"].T), read row-major as 28x28 images.
    raw = scipy.io.loadmat(path)["data"]
    iwae = raw.T.reshape((-1, 28, 28)).reshape((-1, 28 * 28), order="F").reshape(-1, 28, 28)
    np.testing.assert_allclose(mv.data.load("omniglot", data_dir=tmp_path).images[..., 0], iwae, rtol=1e-6)


def test_omniglot_without_targets_has_labels_minus_one(tmp_path):
    images = _asymmetric_images(2, 28, 28) / 255.0
    _write_chardata(tmp_path / "omniglot" / "chardata.mat", images, images, with_targets=False)
    np.testing.assert_array_equal(mv.data.load("omniglot", "test", data_dir=tmp_path).labels, [-1, -1])


def test_images_holding_nan_are_rejected(tmp_path):
    images = _asymmetric_images(2, 28, 28) / 255.0
    images[1, 3, 4] = np.nan
    _write_chardata(tmp_path / "omniglot" / "chardata.mat", images, images)
    with pytest.raises(ValueError, match="NaN pixel values"):
        mv.data.load("omniglot", data_dir=tmp_path)


def test_images_outside_the_unit_interval_are_rejected(tmp_path):
    images = _asymmetric_images(2, 28, 28).astype(np.float64)  # 0..255, not rescaled
    _write_chardata(tmp_path / "omniglot" / "chardata.mat", images, images)
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        mv.data.load("omniglot", "test", data_dir=tmp_path)


# --- SVHN: train_32x32.mat / test_32x32.mat -----------------------------------------------------------


def test_svhn_moves_the_example_axis_first_and_reads_label_10_as_0(tmp_path):
    images = _asymmetric_images(4, 32, 32, channels=3)
    labels = np.array([[10], [1], [9], [10]], dtype=np.uint8)
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": np.moveaxis(images, 0, 3), "y": labels})

    dataset = mv.data.load("svhn", "test", data_dir=tmp_path)
    assert dataset.images.shape == (4, 32, 32, 3) and dataset.images.dtype == np.float32
    assert dataset.images.flags.c_contiguous
    np.testing.assert_allclose(dataset.images, images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.labels, [0, 1, 9, 0])
    assert dataset.labels.dtype == np.int32


# --- CIFAR-10: python pickle batches ------------------------------------------------------------------


def _write_cifar_batch(path: pathlib.Path, images: np.ndarray, labels: list[int]) -> None:
    """A batch as the python version holds it: b'data' rows are the R, G and B planes, each row-major."""
    batch = {
        b"batch_label": b"a tiny batch",
        b"labels": labels,
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32),
        b"filenames": [b"image_%d.png" % i for i in range(len(images))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def test_cifar10_concatenates_the_five_batches_in_order_as_hwc_images(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    images = _asymmetric_images(10, 32, 32, channels=3)
    labels = list(range(10))
    for i in range(5):
        _write_cifar_batch(folder / f"data_batch_{i + 1}", images[2 * i : 2 * i + 2], labels[2 * i : 2 * i + 2])
    _write_cifar_batch(folder / "test_batch", images[:3], [4, 5, 6])

    train = mv.data.load("cifar10", data_dir=tmp_path)
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.float32
    np.testing.assert_allclose(train.images, images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(train.labels, labels)
    test = mv.data.load("cifar10", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(test.labels, [4, 5, 6])
    assert test.labels.dtype == np.int32


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_batches_holding_anything_but_arrays_are_refused(tmp_path):
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({b"data": _RunsCodeWhenUnpickled(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load posix.getcwd"):
        mv.data.load("cifar10", "test", data_dir=tmp_path)
