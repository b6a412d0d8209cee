"""Static and dynamic binarisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.data import binarize_dynamic, binarize_static


def test_static_thresholds_numpy_to_numpy():
    images = np.array([[0.0, 0.3], [0.5, 0.51]], dtype=np.float32)
    binary = binarize_static(images)
    assert isinstance(binary, np.ndarray) and binary.dtype == np.float32
    np.testing.assert_array_equal(binary, [[0, 0], [0, 1]])
    np.testing.assert_array_equal(binarize_static(images, threshold=0.2), [[0, 1], [1, 1]])


def test_static_works_on_jax_arrays_inside_jit():
    images = jnp.array([0.1, 0.6, 0.9])
    binary = jax.jit(binarize_static)(images)
    assert isinstance(binary, jax.Array) and binary.dtype == jnp.float32
    np.testing.assert_array_equal(binary, [0, 1, 1])


def test_dynamic_keeps_shape_and_dtype_and_the_extreme_pixels():
    images = jnp.array([[0.0, 1.0], [1.0, 0.0]])[None, ..., None]
    binary = binarize_dynamic(jax.random.key(0), images)
    assert binary.shape == images.shape and binary.dtype == jnp.float32
    np.testing.assert_array_equal(binary, images)  # Bernoulli(0) is 0 and Bernoulli(1) is 1, always


def test_dynamic_draws_bernoulli_with_the_pixel_intensity():
    # 200,000 pixels per intensity: the frequency of ones has standard error sqrt(p (1 - p) / n) <= 0.0012,
    # and the tolerance is five standard errors.
    probabilities = jnp.array([0.1, 0.5, 0.8])
    num_pixels = 200_000
    images = jnp.broadcast_to(probabilities, (num_pixels, 3))
    frequencies = binarize_dynamic(jax.random.key(42), images).mean(axis=0)
    standard_errors = np.sqrt(probabilities * (1 - probabilities) / num_pixels)
    np.testing.assert_array_less(np.abs(frequencies - probabilities), 5 * standard_errors)
    assert set(np.unique(binarize_dynamic(jax.random.key(1), images[:100]))) <= {0.0, 1.0}


def test_dynamic_is_a_pure_function_of_the_key_and_compiles_once():
    traces = []

    @jax.jit
    def epoch(key, images):
        traces.append(None)
        return binarize_dynamic(jax.random.fold_in(key, 3), images)

    images = jnp.full((8, 28, 28, 1), 0.5)
    key = jax.random.key(0)
    first, again = epoch(key, images), epoch(key, images)
    other = epoch(jax.random.key(1), images)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(traces) == 1


@pytest.mark.parametrize("images", [np.full((2, 3), 0.5, dtype=np.float32), np.full((2, 3), 0.5)])
def test_dynamic_accepts_numpy_images(images):
    binary = binarize_dynamic(jax.random.key(0), images)
    assert isinstance(binary, jax.Array) and binary.shape == (2, 3) and binary.dtype == jnp.float32


@pytest.mark.parametrize("images,message", [
    (np.array([[0.0, 255.0]]), "divide 8-bit images by 255"),
    (np.array([[0.0, np.nan]]), "1 NaN or infinite pixels"),
    (np.array([[-0.5, 0.5]]), r"found \[-0.5, 0.5\]"),
])
def test_bad_intensities_are_refused_by_both(images, message):
    with pytest.raises(ValueError, match=message):
        binarize_static(images)
    with pytest.raises(ValueError, match=message):
        binarize_dynamic(jax.random.key(0), images)


def test_non_numeric_images_and_bad_thresholds_are_refused():
    with pytest.raises(TypeError, match="numeric"):
        binarize_static(np.array([["a"]]))
    with pytest.raises(ValueError, match="threshold must lie in"):
        binarize_static(np.array([0.5]), threshold=1.5)


def test_traced_images_are_binarised_unchecked():
    out = jax.jit(lambda x: binarize_static(x))(jnp.array([0.2, 0.9]))
    np.testing.assert_array_equal(np.asarray(out), [0.0, 1.0])
