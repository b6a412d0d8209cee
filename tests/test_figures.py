"""Latent traversals, and the PNG they are drawn into (tests/test_report.py traverses a trained VAE)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.figures import latent_traversal, save_image_grid


@dataclasses.dataclass(frozen=True)
class LogisticDecoder:
    """The part of the model interface a traversal needs: ``latent_dim`` and ``mean_image = sigmoid(z W + b)``."""

    latent_dim: int = 3

    def mean_image(self, params, z):
        return jax.nn.sigmoid(z @ params["weight"] + params["bias"]).reshape(z.shape[0], 6, 5, 1)


@pytest.fixture(scope="module")
def tiny_vae():
    rng = np.random.default_rng(0)
    params = {"weight": jnp.asarray(rng.normal(size=(3, 30)), jnp.float32), "bias": jnp.zeros(30)}
    return LogisticDecoder(), params


def test_latent_traversal_moves_one_coordinate_per_row(tiny_vae, tmp_path):
    model, params = tiny_vae
    center = np.array([0.3, -0.2, 0.1], np.float32)
    images = latent_traversal(model, params, center, num_steps=5, radius=2.0, dimensions=[2, 0])
    assert images.shape == (2 * 5, 6, 5, 1) and images.dtype == np.float32
    assert np.all((images >= 0) & (images <= 1))
    offsets = np.linspace(-2.0, 2.0, 5, dtype=np.float32)
    latents = np.stack([center + t * np.eye(3, dtype=np.float32)[u] for u in (2, 0) for t in offsets])
    np.testing.assert_allclose(images, np.asarray(model.mean_image(params, latents)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(images[2], images[7], atol=1e-6)  # both middle columns decode z_center itself
    assert not np.allclose(images[0], images[4])  # moving a coordinate changes the image
    everything = latent_traversal(model, params, center, num_steps=3, radius=1.0)
    assert everything.shape == (3 * 3, 6, 5, 1)  # default: every latent dimension, one row each
    path = save_image_grid(images, tmp_path / "traversal.png", num_columns=5, title="units 2, 0")
    assert path.stat().st_size > 100


def test_latent_traversal_rejects_bad_input(tiny_vae):
    model, params = tiny_vae
    with pytest.raises(ValueError, match=r"z_center must have shape \(3,\)"):
        latent_traversal(model, params, np.zeros(4))
    with pytest.raises(ValueError, match="num_steps must be an integer >= 2"):
        latent_traversal(model, params, np.zeros(3), num_steps=1)
    with pytest.raises(ValueError, match="radius must be a positive finite number"):
        latent_traversal(model, params, np.zeros(3), radius=0.0)
    with pytest.raises(ValueError, match="dimensions must be a non-empty list"):
        latent_traversal(model, params, np.zeros(3), dimensions=[3])
