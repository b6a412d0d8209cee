"""The batched evaluation paths compute exactly what the straightforward per-batch code computes.

:func:`dataset_importance_estimate` evaluates blocks of data points x chunks of samples in one compiled program,
and :func:`method_proposals` maps over batches inside one program; both must give, for the same keys, the values
of the plain formulation (one jitted ``vmap`` of the single-point estimator per batch, one proposal call per batch)
to float32 rounding. Timing is the benchmark's business (``experiments/benchmark.py``), not a test's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.evaluate.importance import _streaming_log_weight_sums, dataset_importance_estimate, importance_estimate
from mcmcvae.evaluate.runs import method_proposals


def _reference_dataset_estimate(key, log_joint_fn, proposal_fn, images, *, num_samples, chunk_size, batch_size,
                                std_factor):
    """The formulation before the batched path: per batch, a jitted ``vmap`` of :func:`importance_estimate`."""
    def point(index, x):
        loc, scale = proposal_fn(x)
        return importance_estimate(jax.random.fold_in(key, index), lambda z: log_joint_fn(x, z), loc,
                                   scale * std_factor, num_samples, chunk_size=chunk_size)

    fn = jax.jit(jax.vmap(point))
    n = len(images)
    parts = [fn(jnp.arange(start, min(start + batch_size, n)), jnp.asarray(images[start:start + batch_size]))
             for start in range(0, n, batch_size)]
    return [np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(2)]


@pytest.fixture(scope="module")
def small_vae():
    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=3, hidden_sizes=(16,))
    params = model.init(jax.random.key(0))
    images = (np.random.default_rng(0).uniform(size=(7, 28, 28, 1)) < 0.3).astype(np.float32)
    return model, params, images


@pytest.mark.parametrize(("batch_size", "chunk_size"), [(3, 16), (7, 50), (100, None)])
def test_dataset_estimate_equals_the_per_batch_reference(small_vae, batch_size, chunk_size):
    """Same keys, same weights: per-image log-likelihoods and ESS agree to float32 rounding, also when the last
    block is padded (7 images in blocks of 3) and when the sample count is not a multiple of the chunk."""
    model, params, images = small_vae
    key = jax.random.key(3)
    log_joint = lambda x, z: model.log_joint(params, x, z)  # noqa: E731
    encoder = lambda x: jax.tree.map(lambda a: a[0], model.encode(params, x[None]))  # noqa: E731
    num_samples = 90
    got = dataset_importance_estimate(key, log_joint, encoder, images, num_samples=num_samples,
                                      chunk_size=chunk_size, batch_size=batch_size, variance_factor=1.5,
                                      scale_factor=1.2)
    reference_chunk = chunk_size if chunk_size is not None else num_samples
    want_ll, want_ess = _reference_dataset_estimate(key, log_joint, encoder, images, num_samples=num_samples,
                                                    chunk_size=reference_chunk, batch_size=batch_size,
                                                    std_factor=1.2 * math.sqrt(1.5))
    assert got.log_likelihood.shape == got.effective_sample_size.shape == (len(images),)
    np.testing.assert_allclose(np.asarray(got.log_likelihood), want_ll, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got.effective_sample_size), want_ess, rtol=1e-4)


def test_batched_streaming_sums_equal_row_by_row():
    """Several sequences of weights streamed side by side give each sequence's own sums."""
    log_weights = 30.0 * jax.random.normal(jax.random.key(0), (4, 23))
    log_weights = log_weights.at[1].set(-jnp.inf)  # a data point whose every weight is zero stays -inf, not NaN

    def chunks(rows):
        return lambda _, indices: rows[..., jnp.minimum(indices, 22)]

    batched = _streaming_log_weight_sums(chunks(log_weights), 23, 5, jnp.float32, batch_shape=(4,))
    for row in range(4):
        single = _streaming_log_weight_sums(chunks(log_weights[row]), 23, 5, jnp.float32)
        for got, want in zip(batched, single, strict=True):
            np.testing.assert_allclose(np.asarray(got[row]), np.asarray(want), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(batched.log_sum_weights[0]),
                               np.asarray(jax.scipy.special.logsumexp(log_weights[0])), rtol=1e-6)
    assert np.isneginf(np.asarray(batched.log_sum_weights[1]))


def test_method_proposals_equal_one_call_per_batch(small_vae):
    """Batch b's proposal uses the key fold_in(key, b) whatever the mapping; the padded last batch is dropped."""
    model, params, images = small_vae
    method = mv.methods.build("mala", num_mcmc_steps=2)
    state = method.init(jax.random.key(1), model, params)
    key = jax.random.key(5)
    locs, scales = method_proposals(key, model, method, params, state, images, batch_size=3)
    assert locs.shape == scales.shape == (7, 3)
    for b, start in enumerate(range(0, 7, 3)):
        batch = jnp.asarray(images[np.minimum(np.arange(start, start + 3), 6)])
        loc, scale = method.proposal(jax.random.fold_in(key, b), model, params, state, batch)
        kept = min(3, 7 - start)
        np.testing.assert_allclose(locs[start:start + kept], np.asarray(loc)[:kept], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scales[start:start + kept], np.asarray(scale)[:kept], rtol=1e-5, atol=1e-6)
