"""The fixed stochastic binarisation: one documented draw per split, Bernoulli(intensity) per pixel."""

import numpy as np
import pytest

import mcmcvae as mv


def test_binarize_fixed_is_deterministic_under_its_seed_and_differs_across_seeds():
    images = np.random.default_rng(3).uniform(size=(50, 28, 28, 1)).astype(np.float32)
    a, b = mv.data.binarize_fixed(images, 7), mv.data.binarize_fixed(images, 7)
    assert a.dtype == np.float32 and a.shape == images.shape and set(np.unique(a)) <= {0.0, 1.0}
    assert np.array_equal(a, b)
    assert not np.array_equal(a, mv.data.binarize_fixed(images, 8))
    # pixels at 0 and 1 keep their value whatever the draw
    edges = np.array([0.0, 1.0] * 500)
    assert np.array_equal(mv.data.binarize_fixed(edges, 1), edges)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.83])
def test_binarize_fixed_has_mean_equal_to_the_intensity_within_monte_carlo_error(p):
    """Over n = 200000 pixels at intensity p the mean is p within 4 standard errors sqrt(p (1 - p) / n)."""
    n = 200_000
    x = mv.data.binarize_fixed(np.full(n, p), seed=0)
    assert abs(x.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_binarize_fixed_pixels_follow_their_own_intensity():
    """A gradient image: pixel intensities 0..1; the mean over many images of each pixel matches its intensity."""
    n, intensity = 4000, np.linspace(0.0, 1.0, 11)
    x = mv.data.binarize_fixed(np.broadcast_to(intensity, (n, 11)), seed=2)
    error = np.sqrt(intensity * (1 - intensity) / n)
    assert np.all(np.abs(x.mean(axis=0) - intensity) <= 4 * error + 1e-12)


def test_binarize_fixed_refuses_bad_input():
    with pytest.raises(ValueError, match="divide grey levels by 255"):
        mv.data.binarize_fixed(np.array([0.0, 255.0]), 0)
    with pytest.raises(ValueError, match="intensities in \\[0, 1\\]"):
        mv.data.binarize_fixed(np.array([0.5, np.nan]), 0)
    with pytest.raises(ValueError, match="non-negative integer"):
        mv.data.binarize_fixed(np.array([0.5]), -1)
    with pytest.raises(ValueError, match="non-negative integer"):
        mv.data.binarize_fixed(np.array([0.5]), 1.5)


def test_load_fixed_binarization_keeps_each_images_draw_whatever_the_count(mnist_available):
    """The whole split is drawn with the split's documented seed, so the first 10 images are the same binary images
    in a 10-image run and a full one, and train and test use different seeds."""
    assert mv.data.FIXED_BINARIZATION_SEEDS == {"train": 0, "test": 1}
    short = mv.data.load_fixed_binarization("mnist", "test", num_images=10)
    full = mv.data.load_fixed_binarization("mnist", "test")
    assert full.shape == (10_000, 28, 28, 1) and np.array_equal(short, full[:10])
    grey = mv.data.load("mnist", "test").images
    assert np.array_equal(full, mv.data.binarize_fixed(grey, 1))
    # the stochastic draw keeps grey pixels' noise: about as many on-pixels as the intensities' sum, not the threshold's
    assert abs(full.sum() - grey.sum()) < 4 * np.sqrt(np.sum(grey * (1 - grey)))
    assert not np.array_equal(full, mv.data.binarize_static(grey))
    with pytest.raises(ValueError, match="split must be one of"):
        mv.data.load_fixed_binarization("mnist", "validation")
