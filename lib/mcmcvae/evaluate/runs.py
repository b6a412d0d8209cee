"""Dataset-level evaluation of a trained model and method.

The importance proposal for each image comes from the method (:meth:`Method.proposal`): the encoder's q0 for
amortised methods, or a Gaussian centred on the chain's estimate of the posterior mean for MCMC methods (paper
section 6.2), with its variance widened by ``variance_factor`` (tau = 1.5) or its standard deviation by
``scale_factor`` (the VCD paper's 1.2). Evaluation only reads parameters; nothing adapts or trains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.evaluate.importance import bits_per_dim, dataset_log_likelihood

__all__ = ["method_proposals", "test_log_likelihood"]


def method_proposals(rng_key, model, method, params, state, images, *, batch_size: int = 100):
    """Each image's proposal ``(loc, scale)``, ``(n, d)`` each, from the method, batch by batch.

    Batch ``b`` uses the key ``fold_in(rng_key, b)``; the last batch is padded so one compiled call serves all.
    """
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    batch_size = min(batch_size, n)
    fn = jax.jit(lambda key, p, s, x: method.proposal(key, model, p, s, x))
    locs, scales = [], []
    for b, start in enumerate(range(0, n, batch_size)):
        index = np.minimum(np.arange(start, start + batch_size), n - 1)
        loc, scale = fn(jax.random.fold_in(rng_key, b), params, state, images[index])
        locs.append(np.asarray(loc)[: n - start])
        scales.append(np.asarray(scale)[: n - start])
    return np.concatenate(locs), np.concatenate(scales)


def test_log_likelihood(rng_key, model, method, params, state, images, *, num_samples: int = 5000,
                        variance_factor: float = 1.5, scale_factor: float = 1.0, batch_size: int = 100,
                        chunk_size: int | None = None) -> dict:
    """Importance-sampling log-likelihood of every image; returns a summary dict and the per-image values.

    Returns
    -------
    dict
        ``test_log_likelihood`` (mean, nats), ``standard_error``, ``num_images``, ``num_samples``, the proposal
        factors, ``bits_per_dim`` for non-Bernoulli likelihoods, and ``per_image`` (numpy array).
    """
    k_proposal, k_is = jax.random.split(rng_key)
    locs, scales = method_proposals(k_proposal, model, method, params, state, images, batch_size=batch_size)
    inputs = (jnp.asarray(images, jnp.float32), jnp.asarray(locs), jnp.asarray(scales))
    per_image = dataset_log_likelihood(
        k_is,
        lambda data, z: model.log_joint(params, data[0], z),
        lambda data: (data[1], data[2]),
        inputs,
        num_samples=num_samples,
        batch_size=batch_size,
        chunk_size=chunk_size,
        variance_factor=variance_factor,
        scale_factor=scale_factor,
    )
    per_image = np.asarray(per_image, np.float64)
    summary = {
        "test_log_likelihood": float(per_image.mean()),
        "standard_error": float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0,
        "num_images": int(len(per_image)),
        "num_samples": int(num_samples),
        "variance_factor": float(variance_factor),
        "scale_factor": float(scale_factor),
        "per_image": per_image,
    }
    if model.likelihood != "bernoulli":
        summary["bits_per_dim"] = float(bits_per_dim(per_image.mean(), model.data_dim))
    return summary
