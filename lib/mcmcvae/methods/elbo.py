r"""Amortised variational inference: the VAE's ELBO and the IWAE bound.

With ``q0(z | x) = N(mu(x), diag(sigma(x)^2))``, ``k`` reparameterised draws ``z_j = mu + sigma * eps_j`` and
log weights ``log w_j = log p(x, z_j) - log q0(z_j | x)``:

- ``vae`` (Kingma and Welling 2014) maximises the ELBO ``(1/k) sum_j log w_j``;
- ``iwae`` (Burda et al. 2016) maximises ``L_k = log (1/k) sum_j w_j``, which tightens as k grows.

Both are one class, :class:`ELBO`, since the second differs from the first only in how the log weights are
averaged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mcmcvae.methods.base import apply_gradients, make_optimizer, nonfinite_count
from mcmcvae.types import as_batch

__all__ = ["ELBO", "log_weights", "bound"]


def log_weights(rng_key, model, params, images, num_samples: int):
    """Importance log weights ``log p(x, z_j) - log q0(z_j | x)``, shape ``(n, num_samples)``."""
    z, log_q = model.sample_q0(rng_key, params, images, num_samples)  # (k, n, d), (k, n)
    log_p = jax.vmap(model.log_joint_batch, in_axes=(None, None, 0))(params, images, z)
    return (log_p - log_q).T


def bound(log_w, importance_weighted: bool):
    """Per-image bound from log weights ``(n, k)``: the IWAE bound or the mean (ELBO)."""
    if importance_weighted:
        return jax.nn.logsumexp(log_w, axis=-1) - jnp.log(log_w.shape[-1])
    return jnp.mean(log_w, axis=-1)


@dataclasses.dataclass(frozen=True)
class ELBO:
    """The ``vae`` (``importance_weighted=False``) and ``iwae`` methods.

    Parameters
    ----------
    learning_rate
        Adam's learning rate for all parameters.
    num_samples
        k, the number of draws from q0 per image.
    importance_weighted
        Maximise the IWAE bound ``L_k`` rather than the average ELBO.
    """

    learning_rate: float = 1e-3
    num_samples: int = 1
    importance_weighted: bool = False

    @property
    def name(self) -> str:
        return "iwae" if self.importance_weighted else "vae"

    def init(self, rng_key, model, params):
        del rng_key, model
        return {"opt_state": make_optimizer(self.learning_rate).init(params)}

    def step(self, rng_key, model, params, state, batch):
        images = as_batch(batch).images
        def loss_fn(p):
            log_w = log_weights(rng_key, model, p, images, self.num_samples)
            value = jnp.mean(bound(log_w, self.importance_weighted))
            return -value, value

        grads, value = jax.grad(loss_fn, has_aux=True)(params)
        params, opt_state = apply_gradients(make_optimizer(self.learning_rate), grads, state["opt_state"], params)
        metrics = {"loss": -value, "bound": value, "nonfinite_updates": nonfinite_count(opt_state)}
        return params, {"opt_state": opt_state}, metrics

    def proposal(self, rng_key, model, params, state, images):
        del rng_key, state
        return model.encode(params, images)

    def config(self):
        """The name and the options :func:`mcmcvae.methods.build` takes (the name says whether it is importance
        weighted)."""
        options = dataclasses.asdict(self)
        del options["importance_weighted"]
        return {"name": self.name, **options}
