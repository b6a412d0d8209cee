"""The idx reader, on tiny files written here, plain and gzipped."""

import gzip

import numpy as np
import pytest

from mcmcvae.data import read_idx
from mcmcvae.data.idx import parse_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips_images_and_labels(tmp_path, write_idx, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    image_file = write_idx(tmp_path / f"images{suffix}", images)
    label_file = write_idx(tmp_path / f"labels{suffix}", labels)
    expected_start = b"\x1f\x8b" if suffix else bytes.fromhex("0000")
    assert image_file.read_bytes()[:2] == expected_start  # the file really is (not) gzipped

    read_images, read_labels = read_idx(image_file), read_idx(label_file)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    assert read_images.dtype == np.uint8 and read_labels.dtype == np.uint8


def test_mnist_magic_numbers(idx_bytes):
    assert int.from_bytes(idx_bytes(np.zeros((1, 28, 28)))[:4], "big") == 2051
    assert int.from_bytes(idx_bytes(np.zeros(1))[:4], "big") == 2049


def test_parse_idx_reads_big_endian_wider_types():
    values = np.array([[1, -2], [300, 70000]], dtype=">i4")
    data = bytes([0, 0, 0x0C, 2]) + np.array([2, 2], dtype=">u4").tobytes() + values.tobytes()
    parsed = parse_idx(data)
    np.testing.assert_array_equal(parsed, values)
    assert parsed.dtype == np.dtype("int32") and parsed.dtype.isnative


@pytest.mark.parametrize("magic", ["01000803", "00000703", "00000800"])
def test_corrupt_magic_number_is_a_clear_error(tmp_path, idx_bytes, magic):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes.fromhex(magic) + idx_bytes(np.zeros((1, 2, 2)))[4:])
    with pytest.raises(ValueError, match=f"{path}.*bad magic number 0x{magic}.*corrupt"):
        read_idx(path)


def test_truncated_file_is_a_clear_error(tmp_path, idx_bytes):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28)))[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)


def test_broken_gzip_is_a_clear_error(tmp_path, idx_bytes):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100)))[:-12])
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(path)
