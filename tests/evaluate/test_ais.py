"""Annealed importance sampling against exact linear Gaussian log-likelihoods."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.evaluate.ais import ais_log_likelihood, ais_log_weights, annealing_schedule, dataset_ais_log_likelihood


def _estimate_and_standard_error(log_weights):
    """``log mean(w)`` and its delta-method standard error ``sd(w) / (mean(w) sqrt(K))`` over the chains."""
    log_weights = np.asarray(log_weights, np.float64)
    weights = np.exp(log_weights - log_weights.max())
    estimate = math.log(weights.mean()) + log_weights.max()
    return estimate, weights.std() / weights.mean() / math.sqrt(len(weights))


def test_exact_posterior_start_gives_exact_weights(diagonal_posterior_model):
    # q = p(z | x) makes every pi_t the posterior, and every chain's log weight sum_t (beta_t - beta_{t-1}) log p(x)
    model = diagonal_posterior_model
    x = model.data[0]
    mean, covariance = model.posterior(x)
    info = jax.jit(
        lambda key: ais_log_weights(
            key, lambda z: model.log_joint(x, z), mean, np.sqrt(np.diag(covariance)), num_temperatures=20, num_chains=8
        )
    )(jax.random.key(0))
    assert info.log_weights.shape == (8,) and info.step_size.shape == (19,) and info.acceptance_rate.shape == (19,)
    np.testing.assert_allclose(np.asarray(info.log_weights), model.log_marginal(x), atol=2e-3)


def test_estimate_converges_with_more_temperatures(correlated_model):
    # start from the prior: log weights with T = 1 spread over tens of nats (posterior sd ~ 0.2, mean ~ 1)
    model = correlated_model
    x = model.data[0]
    exact = model.log_marginal(x)
    d = model.latent_dim

    @jax.jit
    def run(key):
        log_joint = lambda z: model.log_joint(x, z)  # noqa: E731
        few = ais_log_weights(key, log_joint, jnp.zeros(d), jnp.ones(d), num_temperatures=10, num_chains=64)
        many = ais_log_weights(key, log_joint, jnp.zeros(d), jnp.ones(d), num_temperatures=1000, num_chains=64)
        return few, many

    few, many = run(jax.random.key(1))
    estimate_few, _ = _estimate_and_standard_error(few.log_weights)
    estimate_many, se_many = _estimate_and_standard_error(many.log_weights)
    assert se_many < 0.1  # the tolerance below is informative
    assert abs(estimate_many - exact) < 4 * se_many + 1e-3
    assert abs(estimate_many - exact) < abs(estimate_few - exact)
    # AIS's bias is downward: log mean w is below log p(x) beyond noise with few temperatures
    assert estimate_few < exact
    # the step size adapted towards the target acceptance rate
    assert abs(float(many.acceptance_rate[500:].mean()) - 0.65) < 0.1


def test_fixed_step_sizes_are_unbiased_with_few_temperatures(correlated_model):
    # fixed step sizes leave nothing adaptive: E[w] = p(x) exactly, for any number of temperatures; many chains
    # make the estimate of log E[w] tight, so a wrong weight update (e.g. weighing after the move) would show
    model = correlated_model
    x = model.data[1]
    mean, covariance = model.posterior(x)
    scale = np.sqrt(2.0 * np.diag(covariance))
    step_sizes = np.linspace(0.3, 0.6, 4)
    info = jax.jit(
        lambda key: ais_log_weights(
            key, lambda z: model.log_joint(x, z), mean + 0.5 * scale, scale, num_temperatures=5, num_chains=4000,
            num_leapfrog_steps=3, step_size=step_sizes, schedule="linear",
        )
    )(jax.random.key(2))
    np.testing.assert_allclose(np.asarray(info.step_size), step_sizes, rtol=1e-6)
    estimate, se = _estimate_and_standard_error(info.log_weights)
    assert se < 0.02
    assert abs(estimate - model.log_marginal(x)) < 4 * se


def test_one_temperature_is_importance_sampling(correlated_model):
    model = correlated_model
    x = model.data[2]
    mean, covariance = model.posterior(x)
    scale = np.sqrt(np.diag(covariance))
    key = jax.random.key(3)

    @jax.jit
    def run():
        log_joint = lambda z: model.log_joint(x, z)  # noqa: E731
        options = dict(num_temperatures=1, num_chains=5)
        info = ais_log_weights(key, log_joint, mean, scale, **options)
        # the chains' starting points, drawn as ais_log_weights draws them
        init_key, _ = jax.random.split(key)
        z = mean + scale * jax.vmap(lambda k: jax.random.normal(k, (3,)))(jax.random.split(init_key, 5))
        log_q = jax.scipy.stats.norm.logpdf(z, mean, scale).sum(1)
        return info, jax.vmap(log_joint)(z) - log_q, ais_log_likelihood(key, log_joint, mean, scale, **options)

    info, expected, estimate = run()
    assert info.step_size.shape == (0,) and estimate.shape == ()
    np.testing.assert_allclose(np.asarray(info.log_weights), np.asarray(expected), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(float(estimate), float(jax.nn.logsumexp(expected) - math.log(5)), rtol=1e-5)


def test_dataset_level_ais_is_pointwise_ais_with_folded_keys(correlated_model):
    # point i is ais_log_likelihood with key fold_in(key, i), whatever the batching (the padded last batch too).
    # Over 20 temperatures float rounding stays at 1e-5; over hundreds, rounding that flips one accept/reject
    # decision sends a chain elsewhere, so batchings then agree in distribution only.
    model = correlated_model
    data = jnp.asarray(model.data[:5])
    d = model.latent_dim
    key = jax.random.key(4)
    proposal = lambda x: (jnp.zeros(d), 0.5 * jnp.ones(d))  # noqa: E731  (widened x2 below: exactly 1)
    options = dict(num_temperatures=20, num_chains=32, num_leapfrog_steps=3)
    batched = dataset_ais_log_likelihood(key, model.log_joint, proposal, data, batch_size=2, variance_factor=4.0,
                                         **options)
    whole = dataset_ais_log_likelihood(key, model.log_joint, proposal, data, batch_size=5, scale_factor=2.0,
                                       **options)
    pointwise = jax.jit(jax.vmap(lambda i, x: ais_log_likelihood(
        jax.random.fold_in(key, i), lambda z: model.log_joint(x, z), jnp.zeros(d), jnp.ones(d), **options)))(
        jnp.arange(5), data)
    assert batched.log_likelihood.shape == (5,) and batched.acceptance_rate.shape == (5,)
    np.testing.assert_allclose(batched.log_likelihood, np.asarray(pointwise), atol=2e-4)
    np.testing.assert_allclose(whole.log_likelihood, batched.log_likelihood, atol=2e-4)


def test_dataset_level_ais_approaches_the_exact_log_likelihoods(correlated_model):
    model = correlated_model
    d = model.latent_dim
    result = dataset_ais_log_likelihood(jax.random.key(5), model.log_joint, lambda x: (jnp.zeros(d), jnp.ones(d)),
                                        jnp.asarray(model.data[:5]), num_temperatures=200, num_chains=32,
                                        num_leapfrog_steps=3, batch_size=2)
    exact = np.array([model.log_marginal(x) for x in model.data[:5]])
    # from the prior, 200 temperatures: every estimate within 0.3 nats of log p(x_i); with T = 1 (importance
    # sampling from the prior, 32 samples) they are several nats off
    assert np.all(np.abs(result.log_likelihood - exact) < 0.3)
    assert np.all((result.acceptance_rate > 0.45) & (result.acceptance_rate < 0.85))  # adapted towards 0.65
    plain = dataset_ais_log_likelihood(jax.random.key(5), model.log_joint, lambda x: (jnp.zeros(d), jnp.ones(d)),
                                       jnp.asarray(model.data[:5]), num_temperatures=1, num_chains=32)
    assert np.mean(exact - plain.log_likelihood) > 1.0


def test_schedules():
    np.testing.assert_allclose(annealing_schedule(4, "linear"), [0, 0.25, 0.5, 0.75, 1])
    betas = annealing_schedule(100)
    assert betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)
    # the sigmoid is symmetric about the middle and takes small steps at both ends
    np.testing.assert_allclose(betas + betas[::-1], 1.0, atol=1e-12)
    assert np.diff(betas)[0] < 0.01 / 4 < np.diff(betas)[50]
    with pytest.raises(ValueError, match="schedule"):
        annealing_schedule(10, "cosine")


def test_bad_inputs_raise_clear_errors():
    log_joint = lambda z: -0.5 * jnp.sum(z**2)  # noqa: E731
    key, loc, scale = jax.random.key(0), jnp.zeros(2), jnp.ones(2)
    with pytest.raises(ValueError, match="proposal_scale must have the shape"):
        ais_log_likelihood(key, log_joint, loc, jnp.ones(3), num_temperatures=3, num_chains=2)
    with pytest.raises(ValueError, match="positive everywhere"):
        ais_log_likelihood(key, log_joint, loc, -scale, num_temperatures=3, num_chains=2)
    with pytest.raises(ValueError, match="num_chains"):
        ais_log_likelihood(key, log_joint, loc, scale, num_temperatures=3, num_chains=0)
    with pytest.raises(ValueError, match="step_size must be positive"):
        ais_log_likelihood(key, log_joint, loc, scale, num_temperatures=3, num_chains=2, step_size=0.0)
    with pytest.raises(ValueError, match="target_acceptance_rate"):
        ais_log_likelihood(key, log_joint, loc, scale, num_temperatures=3, num_chains=2, target_acceptance_rate=1.5)
