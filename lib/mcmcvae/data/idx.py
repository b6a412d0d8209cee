"""The idx file format of MNIST and Fashion-MNIST, read with numpy.

An idx file is a 4-byte magic number, one big-endian uint32 per dimension, then the values in C order,
big-endian. The magic number is two zero bytes, a type code and the number of dimensions, so MNIST's
image files start with ``0x00000803`` (2051: unsigned bytes, 3 dimensions) and its label files with
``0x00000801`` (2049: unsigned bytes, 1 dimension). Files may be gzip-compressed (a ``.gz`` suffix).
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# The type codes the format defines, with the big-endian numpy dtype of each.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: str | os.PathLike) -> bytes:
    """Return the contents of ``path``, decompressed if its name ends in ``.gz``.

    Raises
    ------
    ValueError
        If a ``.gz`` file is not valid gzip data (a truncated or corrupt download).
    """
    path = os.fspath(path)
    if not path.endswith(".gz"):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is not a valid gzip file ({error}); the file is corrupt, replace it") from None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an idx file into an array.

    Parameters
    ----------
    data
        The whole (decompressed) file.
    source
        What to call the data in error messages, usually its path.

    Returns
    -------
    numpy.ndarray
        The values with the shape the header gives, in native byte order.

    Raises
    ------
    ValueError
        If the magic number is not an idx magic number or the size does not match the header.
    """
    if len(data) < 4:
        raise ValueError(f"{source} is not an idx file: it holds only {len(data)} bytes")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{source} is not an idx file: bad magic number {magic:#010x} "
            "(expected 0x0000TTNN with a type code TT among 08 09 0b 0c 0d 0e and NN dimensions, "
            "e.g. 0x00000803 for MNIST images); the file is corrupt, replace it"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{source} is truncated: its header announces {ndim} dimensions")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_size:
        raise ValueError(
            f"{source} holds {len(data)} bytes but its header (shape {shape}, {dtype.name}) "
            f"announces {expected_size}; the file is truncated or corrupt, replace it"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (plain, or gzip-compressed if its name ends in ``.gz``).

    Parameters
    ----------
    path
        The file, e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        The values with the shape the header gives: ``(n, 28, 28)`` uint8 for MNIST images,
        ``(n,)`` uint8 for its labels.

    Raises
    ------
    ValueError
        On a bad magic number, a size that does not match the header, or broken gzip data.

    Examples
    --------
    A file of two blank 28 x 28 images: the magic number (``0x08``: uint8, 3 dimensions), the sizes, the values:

    >>> from mcmcvae.data import read_idx
    >>> header = bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    >>> with open("images-idx3-ubyte", "wb") as f:
    ...     _ = f.write(header + bytes(2 * 28 * 28))
    >>> images = read_idx("images-idx3-ubyte")
    >>> images.shape, images.dtype
    ((2, 28, 28), dtype('uint8'))
    """
    return parse_idx(read_bytes(path), os.fspath(path))
