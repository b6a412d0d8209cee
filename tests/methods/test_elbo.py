"""The ELBO and IWAE bounds on a linear Gaussian model, where log p(x) is exact."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from mcmcvae import methods
from mcmcvae.methods.elbo import bound, log_weights


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
    """p(z) = N(0, I), p(x | z) = N(W z, s^2 I), with a deliberately imperfect fixed q0."""

    W: np.ndarray
    noise: float = 0.7

    def encode(self, params, images):
        flat = images.reshape(images.shape[0], -1)
        return flat @ self.W * 0.3, jnp.full((flat.shape[0], self.W.shape[1]), 0.8)

    def sample_q0(self, rng_key, params, images, num_samples):
        loc, scale = self.encode(params, images)
        z = loc + scale * jax.random.normal(rng_key, (num_samples, *loc.shape))
        return z, jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), -1)

    def log_joint_batch(self, params, images, z):
        flat = images.reshape(images.shape[0], -1)
        prior = jnp.sum(jax.scipy.stats.norm.logpdf(z), -1)
        return prior + jnp.sum(jax.scipy.stats.norm.logpdf(flat, z @ self.W.T, self.noise), -1)

    def exact_log_marginal(self, images):
        flat = images.reshape(images.shape[0], -1)
        cov = self.W @ self.W.T + self.noise**2 * np.eye(self.W.shape[0])
        return multivariate_normal.logpdf(flat, jnp.zeros(self.W.shape[0]), cov)


@pytest.fixture(scope="module")
def setup():
    W = np.asarray(jax.random.normal(jax.random.key(0), (6, 2)))
    model = LinearGaussian(W)
    images = jax.random.normal(jax.random.key(1), (3, 6, 1, 1)) * 2.0
    return model, images, model.exact_log_marginal(images)


def _mean_bound(model, images, k, importance_weighted, reps=400):
    keys = jax.random.split(jax.random.key(2), reps)
    values = jax.vmap(lambda key: bound(log_weights(key, model, None, images, k), importance_weighted))(keys)
    return values.mean(0), values.std(0) / np.sqrt(reps)


def test_bounds_are_below_log_likelihood_and_iwae_tightens_with_k(setup):
    model, images, exact = setup
    elbo, elbo_se = _mean_bound(model, images, 1, False)
    previous = elbo
    for k in (5, 50):
        value, se = _mean_bound(model, images, k, True)
        assert np.all(value <= exact + 4 * se)
        assert np.all(value > previous)  # L_k increases with k (strictly, here: q0 is far from the posterior)
        previous = value
    assert np.all(elbo <= exact + 4 * elbo_se)


def test_elbo_with_many_samples_has_the_same_mean_as_one_sample(setup):
    model, images, _ = setup
    one, se_one = _mean_bound(model, images, 1, False, reps=2000)
    many, se_many = _mean_bound(model, images, 20, False, reps=200)
    assert np.all(np.abs(one - many) < 4 * np.hypot(se_one, se_many))


def test_build_knows_all_names_and_rejects_unknown_ones():
    assert methods.build("vae").name == "vae"
    iwae = methods.build("iwae", num_samples=7)
    assert iwae.name == "iwae" and iwae.num_samples == 7
    with pytest.raises(ValueError, match="valid methods: vae, iwae, mala"):
        methods.build("gibbs")


def test_nonfinite_gradients_are_skipped_and_counted():
    from mcmcvae.models import VAE

    model = VAE((4, 4, 1), 2, hidden_sizes=(8,))
    method = methods.build("vae")
    params = model.init(jax.random.key(0))
    state = method.init(jax.random.key(1), model, params)
    bad = jnp.full((2, 4, 4, 1), jnp.nan)
    new_params, state, metrics = method.step(jax.random.key(2), model, params, state, bad)
    assert int(metrics["nonfinite_updates"]) == 1
    same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), params, new_params)
    assert all(jax.tree_util.tree_leaves(same))
