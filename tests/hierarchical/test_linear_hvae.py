"""The linear hierarchical VAE's exact Gaussian quantities against Monte Carlo from its own NumPyro model.

Tolerances are multiples of the Monte Carlo standard error of each estimate (4.5 standard errors per entry; with
a few dozen entries per check a false alarm has probability below 1e-3), seeds fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae import hierarchical

SIZES, DATA_DIM, NUM_DRAWS, Z = (2, 3), 4, 40_000, 4.5


@pytest.fixture(scope="module")
def linear():
    model = hierarchical.LinearHVAE(image_shape=(DATA_DIM, 1, 1), latent_sizes=SIZES, likelihood_scale=0.5,
                                    learn_likelihood_scale=False)
    params = hierarchical.generating_params(model, seed=3)
    exact = jax.jit(model.linear_gaussian)(params)
    images, z = jax.jit(model.sample_joint, static_argnums=2)(jax.random.key(0), params, NUM_DRAWS)
    return model, params, exact, np.asarray(images, np.float64).reshape(NUM_DRAWS, -1), np.asarray(z, np.float64)


def _assert_covariance(sample_cov, exact_cov, dof):
    exact_cov = np.asarray(exact_cov, np.float64)
    variance = np.outer(np.diag(exact_cov), np.diag(exact_cov)) + exact_cov**2
    z_scores = np.abs(sample_cov - exact_cov) / np.sqrt(variance / dof)
    assert z_scores.max() < Z, f"max z-score {z_scores.max():.2f}"


def test_structure_is_block_lower_triangular(linear):
    _, _, exact, _, _ = linear
    g = np.asarray(exact.prior_weights)
    assert np.all(np.triu(g) == 0.0)  # z^l depends on earlier layers only
    assert np.all(g[: SIZES[0]] == 0.0)  # z^1 ~ N(0, I)
    np.testing.assert_allclose(exact.prior_scale[: SIZES[0]], 1.0)
    np.testing.assert_allclose(exact.prior_scale[SIZES[0]:], 0.5, rtol=1e-6)


def test_prior_and_marginal_moments_match_monte_carlo(linear):
    _, _, exact, x, z = linear
    for draws, mean, cov in [(z, exact.prior_mean(), exact.prior_covariance()),
                             (x, exact.marginal_mean(), exact.marginal_covariance())]:
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        z_scores = np.abs(draws.mean(0) - mean) / np.sqrt(np.diag(cov) / NUM_DRAWS)
        assert z_scores.max() < Z
        _assert_covariance(np.cov(draws, rowvar=False), cov, NUM_DRAWS - 1)


def test_posterior_matches_the_regression_of_z_on_x(linear):
    """Eq. (12) against the residual covariance of the least-squares regression of z on x over joint draws."""
    _, _, exact, x, z = linear
    design = np.concatenate([np.ones((NUM_DRAWS, 1)), x], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, z, rcond=None)
    residuals = z - design @ coefficients
    dof = NUM_DRAWS - design.shape[1]
    posterior_cov = np.asarray(exact.posterior_covariance(), np.float64)
    _assert_covariance(residuals.T @ residuals / dof, posterior_cov, dof)

    # posterior means at a few points: the regression's prediction has variance R_ii (1/N)(1 + Mahalanobis^2)
    marginal_cov = np.asarray(exact.marginal_covariance(), np.float64)
    points = x[:5]
    predicted = np.concatenate([np.ones((5, 1)), points], axis=1) @ coefficients
    centred = points - x.mean(0)
    leverage = 1 + np.einsum("ni,ij,nj->n", centred, np.linalg.inv(marginal_cov), centred)
    se = np.sqrt(np.outer(leverage, np.diag(posterior_cov)) / NUM_DRAWS)
    exact_mean = np.asarray(exact.posterior_mean(jnp.asarray(points, jnp.float32)), np.float64)
    assert np.max(np.abs(predicted - exact_mean) / se) < Z


def test_gaussian_identity_ties_the_numpyro_joint_to_the_exact_marginal(linear):
    """log p(x) = log p(x, z) - log p(z | x) at any z; log p(x, z) from the NumPyro model, the rest exact."""
    model, params, exact, x, z = linear

    @jax.jit
    def gap(images, z):
        log_joint = model.log_joint_batch(params, images, z)
        log_posterior = jax.vmap(lambda xi, zi: jax.scipy.stats.multivariate_normal.logpdf(
            zi, exact.posterior_mean(xi.reshape(-1)), exact.posterior_covariance()))(images, z)
        return log_joint - log_posterior - exact.log_marginal(images.reshape(images.shape[0], -1))

    images = jnp.asarray(x[:8], jnp.float32).reshape(8, DATA_DIM, 1, 1)
    np.testing.assert_allclose(gap(images, jnp.asarray(z[8:16], jnp.float32)), 0.0, atol=2e-3)
    both = jax.jit(lambda x, z: (exact.log_joint(x.reshape(-1), z), model.log_joint(params, x, z)))
    np.testing.assert_allclose(*both(images[0], jnp.asarray(z[0], jnp.float32)), rtol=1e-5)


def test_log_marginal_matches_importance_sampling(linear):
    """log p(x) exact against importance sampling of the NumPyro log joint (proposal: the exact posterior's
    marginals, widened 1.5 times), within 4.5 delta-method standard errors."""
    model, params, exact, x, _ = linear
    num_samples = 20_000
    point = jnp.asarray(x[0], jnp.float32)
    loc = exact.posterior_mean(point)
    scale = 1.5 * jnp.sqrt(jnp.diag(exact.posterior_covariance()))

    @jax.jit
    def log_weights(key):
        z = loc + scale * jax.random.normal(key, (num_samples, loc.size))
        images = jnp.broadcast_to(point.reshape(DATA_DIM, 1, 1), (num_samples, DATA_DIM, 1, 1))
        log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), axis=-1)
        return model.log_joint_batch(params, images, z) - log_q

    log_w = np.asarray(log_weights(jax.random.key(5)), np.float64)
    estimate = np.logaddexp.reduce(log_w) - np.log(num_samples)
    w = np.exp(log_w - log_w.max())
    standard_error = np.std(w / w.mean()) / np.sqrt(num_samples)
    assert abs(estimate - float(exact.log_marginal(point))) < Z * standard_error + 1e-3


def test_hierarchical_importance_sampling_with_a_posterior_shaped_q():
    """``hierarchical.log_likelihood`` is right when q is set to the exact posterior's mean and marginal scales
    (one layer, so the linear encoder can express it), within 4.5 standard errors of its weights."""
    model = hierarchical.LinearHVAE(image_shape=(DATA_DIM, 1, 1), latent_sizes=(3,), likelihood_scale=0.5,
                                    learn_likelihood_scale=False)
    params = hierarchical.generating_params(model, seed=4)
    exact = jax.jit(model.linear_gaussian)(params)
    # m(x) = Sigma_{z|x} H^T (x - b) / sigma^2 (mu_z = 0 for z^1 ~ N(0, I)): bottom-up layer = that affine map
    cov = exact.posterior_covariance()
    weight = (cov @ exact.observation_weights.T / exact.observation_scale**2).T
    params["encoder"] = {
        "bottom_up_1": {"weight": weight, "bias": -exact.observation_offset @ weight},
        "posterior_1": {"up_weight": jnp.eye(3), "bias": jnp.zeros(3), "log_scale": 0.5 * jnp.log(jnp.diag(cov))},
    }
    images = jnp.asarray(jax.random.normal(jax.random.key(6), (4, DATA_DIM, 1, 1)) * 2.0)
    num_samples = 2000
    estimate = hierarchical.log_likelihood(jax.random.key(7), model, params, images, num_samples=num_samples,
                                           chunk_size=500, variance_factor=1.5)
    exact_values = np.asarray(jax.jit(model.log_marginal)(params, images), np.float64)

    @jax.jit
    def log_weights(key):
        z, log_q = model.sample_q(key, params, images, num_samples, scale_factor=np.sqrt(1.5))
        return jax.vmap(model.log_joint_batch, in_axes=(None, None, 0))(params, images, z) - log_q

    log_w = np.asarray(log_weights(jax.random.key(8)), np.float64)
    w = np.exp(log_w - log_w.max(0))
    standard_error = np.std(w / w.mean(0), axis=0) / np.sqrt(num_samples)
    assert np.all(np.abs(estimate - exact_values) < Z * standard_error + 1e-3)


def test_streaming_estimate_equals_one_logsumexp():
    """Chunks, a surplus last chunk and padded batches change nothing: the estimate is the log-mean-exp of the
    same S = 250 weights per image (chunks of 100, the last one's 50 surplus draws masked), whatever the batch size."""
    model = hierarchical.LinearHVAE(image_shape=(DATA_DIM, 1, 1), latent_sizes=SIZES)
    params = model.init(jax.random.key(9))
    images = jax.random.normal(jax.random.key(10), (3, DATA_DIM, 1, 1))
    key = jax.random.key(11)
    streamed = [hierarchical.log_likelihood(key, model, params, images, num_samples=250, chunk_size=100,
                                            batch_size=b) for b in (2, 3)]

    @jax.jit
    def log_weights(image_key, image):
        def chunk(c):
            z, log_q = model.sample_q(jax.random.fold_in(image_key, c), params, image[None], 100)
            return (jax.vmap(model.log_joint_batch, in_axes=(None, None, 0))(params, image[None], z) - log_q)[:, 0]
        return jnp.concatenate([chunk(c) for c in range(3)])[:250]

    direct = [np.logaddexp.reduce(np.asarray(log_weights(jax.random.fold_in(key, i), images[i]), np.float64))
              - np.log(250) for i in range(3)]
    for values in streamed:
        np.testing.assert_allclose(values, direct, rtol=1e-5, atol=1e-4)


def test_make_dataset_is_fixed_and_shaped():
    a = hierarchical.make_dataset((2, 3), num_samples=50)
    b = hierarchical.make_dataset((2, 3), num_samples=50)
    test = hierarchical.make_dataset((2, 3), num_samples=50, split="test")
    assert a.images.shape == (50, 6, 1, 1) and a.latents.shape == (50, 5)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.allclose(a.images, test.images)
    assert a.model.likelihood_scale == 0.5
    # the draws are x = H z + b + 0.5 eps: residuals have the observation standard deviation
    exact = jax.jit(a.model.linear_gaussian)(a.params)
    residuals = a.images.reshape(50, -1) - (a.latents @ np.asarray(exact.observation_weights).T
                                            + np.asarray(exact.observation_offset))
    assert 0.4 < residuals.std() < 0.6
    with pytest.raises(ValueError, match="split"):
        hierarchical.make_dataset((2, 3), split="validation")


def test_linear_model_checks_its_inputs():
    with pytest.raises(ValueError, match="Gaussian likelihood"):
        hierarchical.LinearHVAE(image_shape=(4, 1, 1), latent_sizes=(2,), likelihood="bernoulli")
    with pytest.raises(ValueError, match=r"\(D, 1, 1\)"):
        hierarchical.LinearHVAE(image_shape=(2, 2, 1), latent_sizes=(2,))
    model = hierarchical.LinearHVAE(image_shape=(4, 1, 1), latent_sizes=(2,))
    model.validate_images(np.full((3, 4, 1, 1), -7.0))  # real-valued vectors are fine
    with pytest.raises(ValueError, match="NaN"):
        model.validate_images(np.full((3, 4, 1, 1), np.nan))
    assert mv.models.from_config(model.config()) == model


def test_ais_from_the_method_proposal_is_unbiased_for_the_exact_marginal(linear):
    """AIS on a two-layer hierarchical model, through the path the experiments use
    (:func:`mcmcvae.evaluate.runs.test_ais_log_likelihood`: the method's Gaussian proposal, the model's log joint).
    With a fixed step size AIS is exactly unbiased for p(x), so over independent runs and images the ratio of the
    estimate to the exact p(x) averages 1 within 4.5 standard errors of the ratios' spread. The start distribution
    (the encoder of the generating parameters) is far from the posterior: with 10 temperatures the same check
    gives typical estimates orders of magnitude too low, so the check tells annealing from its start."""
    from mcmcvae.evaluate.runs import test_ais_log_likelihood

    model, params, exact, x, _ = linear
    images = jnp.asarray(x[:4].reshape(4, DATA_DIM, 1, 1), jnp.float32)
    exact_values = np.asarray(jax.jit(model.log_marginal)(params, images), np.float64)
    method = mv.methods.build("vae")

    def ratios(num_temperatures):
        runs = [test_ais_log_likelihood(jax.random.key(40 + r), model, method, params, None, images,
                                        num_temperatures=num_temperatures, num_chains=32, step_size=0.3)
                for r in range(5)]
        return np.exp(np.stack([run["per_image"] for run in runs]) - exact_values).ravel()

    ratio = ratios(200)
    assert abs(ratio.mean() - 1.0) < Z * ratio.std(ddof=1) / np.sqrt(ratio.size), ratio
    # far too few temperatures: still unbiased, but so heavy-tailed that the typical estimate is far too low
    few = ratios(10)
    assert np.median(few) < 0.1 < np.median(ratio), (np.median(few), np.median(ratio))
