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

from mcmcvae.types import Array, Params, PRNGKey

__all__ = ["FreezeParams", "log_likelihood"]


@dataclasses.dataclass(frozen=True)
class FreezeParams:
    """A method whose steps keep the parameter groups in ``groups`` as they were.

    The wrapped method computes its update as usual; the frozen groups are then put back, so neither they nor
    anything derived from them changes (the frozen groups' optimiser moments are kept but never applied).
    ``name``, ``init``, ``proposal`` and ``kernel_parameters`` are the wrapped method's; ``config`` is the wrapped
    method's plus ``"frozen_groups"``, which :func:`mcmcvae.methods.build` ignores, so
    :func:`mcmcvae.train.load_run` rebuilds the wrapped method (the same for evaluation).

    Parameters
    ----------
    method
        Any method (:mod:`mcmcvae.methods`).
    groups
        Names of parameter groups to freeze, default ``("prior",)``.

    Examples
    --------
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

    def step(self, rng_key: PRNGKey, model, params: Params, state, images: Array):
        new_params, state, metrics = self.method.step(rng_key, model, params, state, images)
        return {**new_params, **{group: params[group] for group in self.groups}}, state, metrics

    def proposal(self, rng_key: PRNGKey, model, params: Params, state, images: Array):
        return self.method.proposal(rng_key, model, params, state, images)

    def kernel_parameters(self, model, state):
        return self.method.kernel_parameters(model, state)

    def config(self) -> dict[str, Any]:
        return {**self.method.config(), "frozen_groups": list(self.groups)}


def _batch_log_likelihood(rng_key, model, params, images, num_samples: int, chunk_size: int, scale_factor: float):
    """``log (1/S) sum_s w_s`` per image of one batch, streaming over chunks of samples."""
    num_chunks = num_samples // chunk_size

    def body(carry, chunk):
        running_max, running_sum = carry
        z, log_q = model.sample_q(jax.random.fold_in(rng_key, chunk), params, images, chunk_size,
                                  scale_factor=scale_factor)
        log_p = jax.vmap(model.log_joint_batch, in_axes=(None, None, 0))(params, images, z)
        log_w = log_p - log_q  # (chunk, n)
        new_max = jnp.maximum(running_max, jnp.max(log_w, axis=0))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(log_w - new_max), axis=0)
        return (new_max, running_sum), None

    n = images.shape[0]
    init = (jnp.full((n,), -jnp.inf), jnp.zeros((n,)))
    (running_max, running_sum), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    return running_max + jnp.log(running_sum) - math.log(num_chunks * chunk_size)


@functools.lru_cache(maxsize=16)
def _compiled_batch_log_likelihood(model, num_samples: int, chunk_size: int, scale_factor: float):
    """One jitted batch estimator per (model, S, chunk, tau): repeated evaluations do not recompile."""
    return jax.jit(lambda key, p, x: _batch_log_likelihood(key, model, p, x, num_samples, chunk_size, scale_factor))


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
        Batch ``b`` uses ``fold_in(rng_key, b)``; chunk ``c`` within it ``fold_in`` of that.
    model
        A hierarchical model (:class:`mcmcvae.hierarchical.TopDownHVAE` or ``LinearHVAE``).
    params
        Its parameters.
    images
        ``(n, H, W, C)``.
    num_samples
        S, rounded down to a multiple of ``chunk_size``.
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
    >>> values = log_likelihood(jax.random.key(0), model, params, test_images, num_samples=1000)
    """
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    chunk_size = min(num_samples, 100) if chunk_size is None else int(chunk_size)
    if num_samples < chunk_size or chunk_size < 1:
        raise ValueError(f"num_samples ({num_samples}) must be at least chunk_size ({chunk_size}) >= 1")
    batch_size = min(batch_size, n)
    fn = _compiled_batch_log_likelihood(model, num_samples, chunk_size, math.sqrt(variance_factor))
    out = []
    for b, start in enumerate(range(0, n, batch_size)):
        index = np.minimum(np.arange(start, start + batch_size), n - 1)
        out.append(np.asarray(fn(jax.random.fold_in(rng_key, b), params, images[index]))[: n - start])
    return np.concatenate(out).astype(np.float64)
