r"""Training and evaluation helpers for hierarchical VAEs.

- :class:`FreezeParams` wraps any method so that its steps leave some parameter groups untouched, e.g. the
  prior during the MCMC phase of Table 6 (the prior is trained in the hVAE phase only);
- :func:`log_likelihood` estimates ``log p(x)`` by importance sampling with the hierarchical ``q(z | x)``
  itself as the proposal (the diagonal Gaussians of :mod:`mcmcvae.evaluate` cannot express it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.batching import map_padded_batches
from mcmcvae.evaluate.importance import _streaming_log_weight_sums
from mcmcvae.types import Array, Params, PRNGKey

__all__ = ["FreezeParams", "log_likelihood"]


@dataclasses.dataclass(frozen=True)
class FreezeParams:
    """A method whose steps keep the parameter groups in ``groups`` as they were.

    The wrapped method computes its update as usual; the frozen groups are then put back, so neither they nor
    anything derived from them changes (the frozen groups' optimiser moments are kept but never applied).
    ``name``, ``init``, ``proposal`` and ``kernel_parameters`` are the wrapped method's; ``config`` is the wrapped
    method's plus ``"frozen_groups"``, from which :func:`mcmcvae.methods.from_config` (and so
    :func:`mcmcvae.train.load_run`) rebuilds this wrapper around the same method.

    Parameters
    ----------
    method
        Any method (:mod:`mcmcvae.methods`).
    groups
        Names of parameter groups to freeze, default ``("prior",)``.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> from mcmcvae.hierarchical import FreezeParams
    >>> mcmc = FreezeParams(mv.methods.build("gradmala", num_mcmc_steps=5))  # theta = decoder only
    >>> mcmc.name
    'gradmala'
    """

    method: Any
    groups: tuple[str, ...] = ("prior",)

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def name(self) -> str:
        return self.method.name

    def init(self, rng_key: PRNGKey, model, params: Params):
        return self.method.init(rng_key, model, params)

    @property
    def num_data(self):
        return getattr(self.method, "num_data", None)

    def step(self, rng_key: PRNGKey, model, params: Params, state, batch):
        new_params, state, metrics = self.method.step(rng_key, model, params, state, batch)
        return {**new_params, **{group: params[group] for group in self.groups}}, state, metrics

    def proposal(self, rng_key: PRNGKey, model, params: Params, state, images: Array):
        return self.method.proposal(rng_key, model, params, state, images)

    def kernel_parameters(self, model, state):
        return self.method.kernel_parameters(model, state)

    def config(self) -> dict[str, Any]:
        return {**self.method.config(), "frozen_groups": list(self.groups)}


def _image_log_likelihood(rng_key, model, params, image, num_samples: int, chunk_size: int, scale_factor: float):
    """``log (1/S) sum_s w_s`` for one image, streaming over chunks of samples (chunk ``c`` from
    ``fold_in(rng_key, c)``)."""
    images = image[None]

    def chunk_log_weights(chunk_index, _):
        z, log_q = model.sample_q(jax.random.fold_in(rng_key, chunk_index), params, images, chunk_size,
                                  scale_factor=scale_factor)
        log_p = jax.vmap(model.log_joint_batch, in_axes=(None, None, 0))(params, images, z)
        return (log_p - log_q)[:, 0]

    sums = _streaming_log_weight_sums(chunk_log_weights, num_samples, chunk_size, jnp.result_type(float))
    return sums.log_sum_weights - math.log(num_samples)


@functools.lru_cache(maxsize=16)
def _compiled_batch_log_likelihood(model, num_samples: int, chunk_size: int, scale_factor: float):
    """One jitted batch estimator per (model, S, chunk, tau): repeated evaluations do not recompile. Image ``i``
    of the data set draws from ``fold_in(rng_key, i)``."""
    def batch(rng_key, params, indices, images):
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng_key, indices)
        return jax.vmap(_image_log_likelihood, in_axes=(0, None, None, 0, None, None, None))(
            keys, model, params, images, num_samples, chunk_size, scale_factor)

    return jax.jit(batch)


def log_likelihood(rng_key: PRNGKey, model, params: Params, images, *, num_samples: int = 1000,
                   chunk_size: int | None = None, batch_size: int = 100, variance_factor: float = 1.0) -> np.ndarray:
    r"""Importance-sampling ``log p(x)`` per image with the hierarchical ``q(z | x)`` as the proposal.

    .. math::

        \log \hat p(x) = \log \frac1S \sum_{s=1}^S \frac{p(x, z_s)}{q_\tau(z_s \mid x)}, \qquad
        z_s \sim q_\tau(\cdot \mid x),

    where ``q_tau`` is ``q`` with every layer's conditional variance multiplied by ``variance_factor`` (tau;
    1 keeps ``q``). Biased low in expectation, unbiased for ``p(x)`` after ``exp``.

    Parameters
    ----------
    rng_key
        Image ``i`` uses ``fold_in(rng_key, i)``, its chunk ``c`` ``fold_in`` of that: the estimate of an image
        does not depend on ``batch_size`` or on the other images.
    model
        A hierarchical model (:class:`mcmcvae.hierarchical.TopDownHVAE` or ``LinearHVAE``).
    params
        Its parameters.
    images
        ``(n, H, W, C)``.
    num_samples
        S (any positive integer; the last chunk's surplus draws are masked out).
    chunk_size
        Samples drawn at a time (default ``min(S, 100)``).
    batch_size
        Images per compiled call (the last batch is padded).
    variance_factor
        tau.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64, nats.

    Examples
    --------
    A linear hierarchical VAE, whose exact ``log p(x)`` is known, on its synthetic data:

    >>> import jax, numpy as np
    >>> from mcmcvae import hierarchical
    >>> model = hierarchical.LinearHVAE(image_shape=(8, 1, 1), latent_sizes=(2, 4))
    >>> params = jax.jit(model.init)(jax.random.key(0))  # a trained model's parameters in practice
    >>> images = hierarchical.make_dataset((2, 4), split="test").images[:3]
    >>> values = hierarchical.log_likelihood(jax.random.key(0), model, params, images, num_samples=100)
    >>> values.shape
    (3,)
    >>> bool((values < np.asarray(model.log_marginal(params, images))).all())  # biased low; far while q is untrained
    True
    """
    images = np.asarray(images, np.float32)
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    num_samples = int(num_samples)
    chunk_size = min(num_samples, 100) if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    fn = _compiled_batch_log_likelihood(model, num_samples, min(chunk_size, num_samples), math.sqrt(variance_factor))
    per_image = map_padded_batches(lambda _, indices, batch: fn(rng_key, params, jnp.asarray(indices), batch),
                                   images, batch_size)
    return per_image.astype(np.float64)
