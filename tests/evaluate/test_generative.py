"""The generative side of a model: decoded prior samples, and the paper's KID protocol on the real network."""

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.evaluate.generative import generate_images, model_kid


@pytest.fixture(scope="module")
def model_and_params():
    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=4, hidden_sizes=(32,))
    return model, model.init(jax.random.key(0))


def test_generated_images_are_decoded_prior_samples(model_and_params):
    model, params = model_and_params
    images = generate_images(jax.random.key(1), model, params, 7, batch_size=3)
    assert images.shape == (7, 28, 28, 1) and images.dtype == np.float32
    assert np.all((images >= 0) & (images <= 1))
    # batch b draws with fold_in(key, b): the first three are the first batch, decoded to Bernoulli means
    first = model.mean_image(params, model.sample_prior(jax.random.fold_in(jax.random.key(1), 0), params, 3))
    np.testing.assert_allclose(images[:3], np.asarray(first), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(images, generate_images(jax.random.key(1), model, params, 7, batch_size=3))
    assert not np.allclose(images, generate_images(jax.random.key(2), model, params, 7, batch_size=3))
    with pytest.raises(ValueError, match="num_images"):
        generate_images(jax.random.key(1), model, params, 0)


def test_model_kid_needs_one_reference(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match="exactly one"):
        model_kid(jax.random.key(0), model, params)
    with pytest.raises(ValueError, match="exactly one"):
        model_kid(jax.random.key(0), model, params, np.zeros((4, 28, 28, 1), np.float32),
                  reference_features=np.zeros((4, 2048), np.float32))


def test_model_kid_is_small_against_the_model_itself_and_large_against_digits(model_and_params, mnist_available):
    # An untrained decoder paints grey blurs: KID against more of its own images (another key) is about zero,
    # against real digits far larger.
    model, params = model_and_params
    own = generate_images(jax.random.key(7), model, params, 20)
    digits = mv.data.binarize_static(mv.data.load("mnist", "test").images[:20])
    options = dict(resize_to=75, num_subsets=20, subset_size=10)
    against_own = model_kid(jax.random.key(3), model, params, own, **options)
    against_digits = model_kid(jax.random.key(3), model, params,
                               reference_features=mv.evaluate.inception_features(digits, resize_to=75), **options)
    assert against_own["num_generated"] == against_own["num_reference"] == 20
    assert against_own["generated_features"].shape == (20, 2048)
    # the same key draws the same generated images, whatever the reference
    np.testing.assert_array_equal(against_own["generated_features"], against_digits["generated_features"])
    assert abs(against_own["kid"]) < 3 * against_own["kid_std"] + 1e-3
    assert against_digits["kid"] > 10 * max(abs(against_own["kid"]), against_own["kid_std"])
