"""Haiku encoders and decoders: the one place where the library touches Haiku.

Every network is a dataclass-style ``hk.Module`` wrapped by one ``hk.transform`` in :func:`make_encoder` or
:func:`make_decoder`. The rest of the library sees only ``init``/``apply`` pairs and plain parameter pytrees,
which it passes into NumPyro models as arguments (NumPyro has no Haiku adapter any more).

Encoders map an image batch ``(n, H, W, C)`` to the mean and standard deviation of a diagonal Gaussian
``q0(z | x) = N(loc, diag(scale^2))``. Decoders map latents ``(n, d)`` to the parameters of the likelihood,
shaped like the image, ``(n, H, W, C)`` (Bernoulli logits, logistic or Gaussian means).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "conv3x3", "make_encoder", "make_decoder",
           "ARCHITECTURES"]

ARCHITECTURES = ("mlp", "conv")
_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "softplus": jax.nn.softplus, "elu": jax.nn.elu}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _gaussian_head(hidden: jax.Array, latent_dim: int, min_scale: float) -> tuple[jax.Array, jax.Array]:
    loc = hk.Linear(latent_dim, name="loc")(hidden)
    # softplus keeps the scale positive with gradients that neither vanish nor explode for large inputs.
    scale = jax.nn.softplus(hk.Linear(latent_dim, name="raw_scale")(hidden)) + min_scale
    return loc, scale


@dataclasses.dataclass
class MLPEncoder(hk.Module):
    """Fully connected encoder: flatten, ``hidden_sizes`` dense layers, Gaussian head."""

    latent_dim: int
    hidden_sizes: Sequence[int] = (200, 200)
    activation: str = "relu"
    min_scale: float = 1e-4
    name: str | None = None

    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        hidden = images.reshape(images.shape[0], -1)
        act = _activation(self.activation)
        for size in self.hidden_sizes:
            hidden = act(hk.Linear(size)(hidden))
        return _gaussian_head(hidden, self.latent_dim, self.min_scale)


@dataclasses.dataclass
class MLPDecoder(hk.Module):
    """Fully connected decoder: ``hidden_sizes`` dense layers, then one output per pixel and channel."""

    image_shape: tuple[int, int, int]
    hidden_sizes: Sequence[int] = (200, 200)
    activation: str = "relu"
    name: str | None = None

    def __call__(self, z: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        hidden = z
        for size in self.hidden_sizes:
            hidden = act(hk.Linear(size)(hidden))
        out = hk.Linear(int(np.prod(self.image_shape)), name="out")(hidden)
        return out.reshape(z.shape[0], *self.image_shape)


@dataclasses.dataclass
class ConvEncoder(hk.Module):
    """Convolutional encoder for 28x28x1 and 32x32x3 images (stride-2 convolutions, then a dense layer)."""

    latent_dim: int
    channels: Sequence[int] = (32, 64, 64)
    hidden_size: int = 256
    activation: str = "relu"
    min_scale: float = 1e-4
    name: str | None = None

    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = _activation(self.activation)
        hidden = images
        for i, channels in enumerate(self.channels):
            stride = 2 if i < 2 else 1
            hidden = act(hk.Conv2D(channels, kernel_shape=3, stride=stride, padding="SAME")(hidden))
        hidden = act(hk.Linear(self.hidden_size)(hidden.reshape(hidden.shape[0], -1)))
        return _gaussian_head(hidden, self.latent_dim, self.min_scale)


@dataclasses.dataclass
class ConvDecoder(hk.Module):
    """Convolutional decoder mirroring :class:`ConvEncoder` (dense layer, two stride-2 transposed convolutions).

    The image height and width must be divisible by 4 (28 and 32 are).
    """

    image_shape: tuple[int, int, int]
    channels: Sequence[int] = (64, 64, 32)
    hidden_size: int = 256
    activation: str = "relu"
    name: str | None = None

    def __call__(self, z: jax.Array) -> jax.Array:
        height, width, out_channels = self.image_shape
        if height % 4 or width % 4:
            raise ValueError(f"ConvDecoder needs image height and width divisible by 4, got {self.image_shape}")
        act = _activation(self.activation)
        base = (height // 4, width // 4, self.channels[0])
        hidden = act(hk.Linear(self.hidden_size)(z))
        hidden = act(hk.Linear(int(np.prod(base)))(hidden)).reshape(z.shape[0], *base)
        for i, channels in enumerate(self.channels):
            stride = 2 if i < 2 else 1
            hidden = act(hk.Conv2DTranspose(channels, kernel_shape=3, stride=stride, padding="SAME")(hidden))
        return hk.Conv2D(out_channels, kernel_shape=3, padding="SAME", name="out")(hidden)


def make_encoder(architecture: str, latent_dim: int, **options) -> hk.Transformed:
    """Transform an encoder: ``apply(params, None, images) -> (loc, scale)``.

    Parameters
    ----------
    architecture
        ``"mlp"`` or ``"conv"``.
    latent_dim
        Dimension d of z.
    **options
        Passed to :class:`MLPEncoder` or :class:`ConvEncoder` (``hidden_sizes``, ``activation``, ...).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmcvae.nets import make_encoder
    >>> enc = make_encoder("mlp", latent_dim=10)
    >>> params = jax.jit(enc.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> loc, scale = jax.jit(enc.apply)(params, None, jnp.zeros((5, 28, 28, 1)))
    >>> loc.shape, bool((scale > 0).all())
    ((5, 10), True)
    """
    module = {"mlp": MLPEncoder, "conv": ConvEncoder}.get(architecture)
    if module is None:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")
    return hk.transform(lambda images: module(latent_dim, **options, name="encoder")(images))


def make_decoder(architecture: str, image_shape: tuple[int, int, int], **options) -> hk.Transformed:
    """Transform a decoder: ``apply(params, None, z) -> (n, H, W, C)`` likelihood parameters."""
    module = {"mlp": MLPDecoder, "conv": ConvDecoder}.get(architecture)
    if module is None:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")
    return hk.transform(lambda z: module(tuple(image_shape), **options, name="decoder")(z))


def conv3x3(images: jax.Array, channels: int, stride: int = 1, name: str | None = None) -> jax.Array:
    """A 3x3 convolution with zero padding 1, written as shifted strided slices and one dense layer.

    Output pixel ``(i, j)`` is ``W^T [x_{s i + a - 1, s j + b - 1, :}]_{a, b = 0..2} + b`` with ``W`` a
    ``(9 C, channels)`` matrix (the rows ordered by ``a``, then ``b``, then channel): exactly what
    ``lax.conv_general_dilated`` computes with the kernel ``W.reshape(3, 3, C, channels)``. The explicit form
    exists for speed: inside ``lax.scan`` XLA:CPU runs the kernel gradient of ``lax.conv`` some 20 times slower
    than in a lone jitted step, while slices and a matrix product stay fast, so a jitted epoch that scans over
    batches trains a small CNN at the speed of a Python loop of steps.
    """
    _, height, width, _ = images.shape
    out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    columns = [padded[:, a:a + stride * (out_height - 1) + 1:stride, b:b + stride * (out_width - 1) + 1:stride, :]
               for a in range(3) for b in range(3)]
    return hk.Linear(channels, name=name)(jnp.concatenate(columns, axis=-1))
