"""Importance-sampling log-likelihoods against exact linear Gaussian values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.evaluate.importance import bits_per_dim, dataset_log_likelihood, importance_log_likelihood


def _log_weights(key, log_joint, loc, scale, num_samples):
    """``log p(x, z) - log q(z)`` for fresh samples, in float64, to measure the weights' spread."""
    z = np.asarray(loc) + np.asarray(scale) * np.asarray(jax.random.normal(key, (num_samples, len(loc))))
    log_q = -0.5 * np.sum(((z - loc) / scale) ** 2, 1) - np.sum(np.log(scale)) - 0.5 * len(loc) * math.log(2 * math.pi)
    return np.asarray(jax.vmap(log_joint)(jnp.asarray(z, jnp.float32)), np.float64) - log_q


def _standard_error(log_weights, num_samples):
    """Delta-method standard error of ``log mean(w)`` over ``num_samples`` weights: ``sd(w) / (mean(w) sqrt(S))``."""
    weights = np.exp(log_weights - log_weights.max())
    return weights.std() / weights.mean() / math.sqrt(num_samples)


def test_exact_posterior_proposal_gives_exact_value(diagonal_posterior_model):
    model = diagonal_posterior_model
    estimate_fn = jax.jit(
        lambda key, x, loc, scale: importance_log_likelihood(key, lambda z: model.log_joint(x, z), loc, scale, 100)
    )
    for i, x in enumerate(model.data[:3]):
        mean, covariance = model.posterior(x)
        np.testing.assert_allclose(covariance, np.diag(np.diag(covariance)), atol=1e-12)
        scale = np.sqrt(np.diag(covariance))
        estimate = estimate_fn(jax.random.key(i), x, mean.astype(np.float32), scale.astype(np.float32))
        # every weight equals p(x): only float32 rounding separates the estimate from the exact value
        np.testing.assert_allclose(float(estimate), model.log_marginal(x), atol=2e-3)


def test_wide_proposal_within_monte_carlo_error(correlated_model):
    model = correlated_model
    x = model.data[0]
    mean, covariance = model.posterior(x)
    scale = np.sqrt(1.5 * np.diag(covariance))  # tau = 1.5 on the variance
    log_joint = lambda z: model.log_joint(x, z)  # noqa: E731
    num_samples = 2000
    se = _standard_error(_log_weights(jax.random.key(99), log_joint, mean, scale, 20_000), num_samples)
    assert se < 0.05  # the check below is informative
    exact = model.log_marginal(x)
    estimate_fn = jax.jit(lambda key: importance_log_likelihood(key, log_joint, mean, scale, num_samples))
    estimates = [float(estimate_fn(jax.random.key(k))) for k in range(3)]
    np.testing.assert_allclose(estimates, exact, atol=4 * se)


def test_poor_proposal_underestimates(correlated_model):
    model = correlated_model
    x = model.data[1]
    mean, covariance = model.posterior(x)
    posterior_sd = np.sqrt(np.diag(covariance))
    loc, scale = mean + 2 * posterior_sd, 0.5 * posterior_sd  # shifted and too narrow
    log_joint = lambda z: model.log_joint(x, z)  # noqa: E731
    exact = model.log_marginal(x)
    num_keys, num_samples = 8, 500
    estimate_fn = jax.jit(lambda key: importance_log_likelihood(key, log_joint, loc, scale, num_samples))
    estimates = np.array([float(estimate_fn(jax.random.key(k))) for k in range(num_keys)])
    # Markov: P(p_hat > e^c p) <= e^-c, so with c = 7 all 8 stay below exact + 7 but with probability < 0.01
    assert np.all(estimates < exact + 7.0)
    # Jensen: E[log p_hat] <= log p(x); the gap here is nats, far beyond the spread over keys
    assert estimates.mean() + 2 * estimates.std() / math.sqrt(num_keys) < exact
    # and S samples do better on average than one: E[log p_hat_S] >= E[log w] = log p(x) - KL(q || posterior)
    elbo = _log_weights(jax.random.key(98), log_joint, loc, scale, 20_000).mean()
    assert estimates.mean() > elbo


def test_chunking_does_not_change_the_estimate(correlated_model):
    model = correlated_model
    x = model.data[2]
    mean, covariance = model.posterior(x)
    scale = 1.2 * np.sqrt(np.diag(covariance))
    log_joint = lambda z: model.log_joint(x, z)  # noqa: E731
    key = jax.random.key(3)

    @jax.jit
    def estimates():
        # None takes min(S, 1000), one chunk; neither 128 nor 7 divides 1000, so the last chunk is partly masked
        return jnp.stack(
            [importance_log_likelihood(key, log_joint, mean, scale, 1000, chunk_size=c) for c in (None, 128, 7)]
        )

    one_chunk, *chunked = np.asarray(estimates())
    np.testing.assert_allclose(chunked, one_chunk, rtol=1e-6, atol=1e-5)


def test_remainder_chunk_counts_exactly_num_samples(correlated_model):
    model = correlated_model
    x = model.data[2]
    mean, covariance = model.posterior(x)
    scale = np.sqrt(np.diag(covariance))
    log_joint = lambda z: model.log_joint(x, z)  # noqa: E731
    key = jax.random.key(4)
    # 10 samples in chunks of 4: the last chunk holds 2 real samples and 2 masked slots
    estimate = jax.jit(lambda: importance_log_likelihood(key, log_joint, mean, scale, 10, chunk_size=4))()

    @jax.jit
    def expected():
        loc, std = jnp.asarray(mean, jnp.float32), jnp.asarray(scale, jnp.float32)
        z = jax.vmap(lambda s: loc + std * jax.random.normal(jax.random.fold_in(key, s), (3,)))(jnp.arange(10))
        log_q = jax.scipy.stats.norm.logpdf(z, loc, std).sum(1)
        return jax.nn.logsumexp(jax.vmap(log_joint)(z) - log_q) - math.log(10)

    np.testing.assert_allclose(float(estimate), float(expected()), rtol=1e-6, atol=1e-5)


def test_one_hundred_thousand_samples(correlated_model):
    model = correlated_model
    x = model.data[3]
    mean, covariance = model.posterior(x)
    scale = np.sqrt(1.5 * np.diag(covariance))
    log_joint = lambda z: model.log_joint(x, z)  # noqa: E731
    estimate = jax.jit(lambda key: importance_log_likelihood(key, log_joint, mean, scale, 100_000))(jax.random.key(5))
    se = _standard_error(_log_weights(jax.random.key(97), log_joint, mean, scale, 20_000), 100_000)
    np.testing.assert_allclose(float(estimate), model.log_marginal(x), atol=4 * se + 1e-4)


def test_jit_and_vmap_agree_with_eager(correlated_model):
    model = correlated_model
    xs = jnp.asarray(model.data[:3])
    posteriors = [model.posterior(x) for x in model.data[:3]]
    locs = jnp.asarray(np.stack([m for m, _ in posteriors]), jnp.float32)
    scales = jnp.asarray(np.stack([np.sqrt(np.diag(c)) for _, c in posteriors]), jnp.float32)
    keys = jax.random.split(jax.random.key(6), 3)

    def one(key, x, loc, scale):
        return importance_log_likelihood(key, lambda z: model.log_joint(x, z), loc, scale, 300, chunk_size=64)

    one_jit = jax.jit(one)
    eager = np.array([float(one_jit(keys[i], xs[i], locs[i], scales[i])) for i in range(3)])
    batched = jax.jit(jax.vmap(one))(keys, xs, locs, scales)
    assert batched.shape == (3,) and batched.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(batched), eager, rtol=1e-6, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    log_joint = lambda z: -0.5 * jnp.sum(z**2)  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="proposal_scale must have the shape"):
        importance_log_likelihood(key, log_joint, jnp.zeros(3), jnp.ones(2), 10)
    with pytest.raises(ValueError, match=r"proposal_loc must have shape \(d,\)"):
        importance_log_likelihood(key, log_joint, jnp.zeros((2, 3)), jnp.ones((2, 3)), 10)
    with pytest.raises(ValueError, match="positive everywhere"):
        importance_log_likelihood(key, log_joint, jnp.zeros(3), jnp.array([1.0, 0.0, 1.0]), 10)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        importance_log_likelihood(key, log_joint, jnp.zeros(3), jnp.ones(3), 0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        importance_log_likelihood(key, log_joint, jnp.zeros(3), jnp.ones(3), 2.5)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        importance_log_likelihood(key, log_joint, jnp.zeros(3), jnp.ones(3), 10, chunk_size=0)


def _encoder(model, std_factor=1.0):
    """The exact posterior's mean and marginal standard deviations, as a vmappable ``x -> (loc, scale)``."""
    precision = np.eye(model.latent_dim) + model.weight.T @ model.weight / model.noise_scale**2
    covariance = np.linalg.inv(precision)
    gain = jnp.asarray(covariance @ model.weight.T / model.noise_scale**2, jnp.float32)
    bias = jnp.asarray(model.bias, jnp.float32)
    scale = jnp.asarray(std_factor * np.sqrt(np.diag(covariance)), jnp.float32)
    return lambda x: (gain @ (x - bias), scale)


def test_dataset_log_likelihood_matches_per_point_estimates_for_any_batch_size(correlated_model):
    model = correlated_model
    num_traces = 0

    def encoder(x):
        nonlocal num_traces  # counts traces, to check that the padded last batch reuses the compiled function
        num_traces += 1
        return _encoder(model)(x)

    key = jax.random.key(7)
    options = dict(num_samples=200, scale_factor=1.2, variance_factor=1.5)
    # 7 points in 3 batches of 3, the last one padded
    result = dataset_log_likelihood(key, model.log_joint, encoder, model.data, batch_size=3, **options)
    assert num_traces == 1  # one trace serves every batch
    assert result.shape == (len(model.data),)
    # one batch of 7, with the data given as a pytree that carries precomputed proposals
    loc, scale = jax.vmap(_encoder(model))(jnp.asarray(model.data))
    one_batch = dataset_log_likelihood(
        key, lambda data, z: model.log_joint(data[0], z), lambda data: (data[1], data[2]), (model.data, loc, scale),
        batch_size=100, **options,
    )
    np.testing.assert_allclose(np.asarray(result), np.asarray(one_batch), rtol=1e-6, atol=1e-5)

    @jax.jit
    @jax.vmap
    def expected(i, x):
        loc, scale = _encoder(model)(x)
        key_i = jax.random.fold_in(key, i)
        return importance_log_likelihood(key_i, lambda z: model.log_joint(x, z), loc, scale * 1.2 * math.sqrt(1.5), 200)

    np.testing.assert_allclose(
        np.asarray(result), np.asarray(expected(jnp.arange(len(model.data)), model.data)), rtol=1e-6, atol=1e-5
    )
    # a loose sanity bound (the tests above check accuracy against Monte Carlo error)
    exact = np.array([model.log_marginal(x) for x in model.data])
    np.testing.assert_allclose(np.asarray(result), exact, atol=0.2)


def test_bits_per_dim():
    np.testing.assert_allclose(float(bits_per_dim(-3072 * 3 * math.log(2), 3072)), 3.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bits_per_dim(jnp.array([-784 * math.log(2), 0.0]), 784)), [1.0, 0.0])
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(-1.0, 0)
