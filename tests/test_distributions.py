import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mcmcvae.distributions import DiscretizedLogistic, logistic_scale_from_variance

BINS = jnp.arange(256) / 255.0


@pytest.mark.parametrize("loc,scale", [(0.5, 0.1), (0.0, 0.01), (1.3, 0.5), (-0.2, 1e-3), (0.37, 1e-4)])
def test_bin_probabilities_sum_to_one(loc, scale):
    log_p = DiscretizedLogistic(loc, scale).log_prob(BINS)
    assert bool(jnp.all(jnp.isfinite(log_p)))
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(log_p))), 1.0, atol=1e-5)


def test_interior_bin_matches_logistic_cdf():
    loc, scale, k = 0.4, 0.07, 100
    w = 0.5 / 255
    expected = stats.logistic.cdf(k / 255 + w, loc, scale) - stats.logistic.cdf(k / 255 - w, loc, scale)
    got = float(jnp.exp(DiscretizedLogistic(loc, scale).log_prob(k / 255)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_sampling_frequencies_match_probabilities():
    d = DiscretizedLogistic(0.5, 0.02)
    samples = np.asarray(d.sample(jax.random.key(0), (200_000,)))
    assert set(np.unique(np.round(samples * 255)).astype(int)) <= set(range(256))
    p = np.exp(np.asarray(d.log_prob(BINS)))
    freq = np.bincount(np.round(samples * 255).astype(int), minlength=256) / samples.size
    se = np.sqrt(p * (1 - p) / samples.size)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-6)


def test_gradients_are_finite():
    g = jax.grad(lambda s: DiscretizedLogistic(0.5, s).log_prob(BINS).sum())(0.05)
    assert np.isfinite(float(g))


def test_scale_from_variance():
    s = logistic_scale_from_variance(0.1)
    np.testing.assert_allclose(s**2 * np.pi**2 / 3, 0.1, rtol=1e-6)
