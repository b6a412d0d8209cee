r"""Annealed importance-weighted training (Ding and Freedman 2019, "Learning deep generative models with annealed
importance sampling").

The decoder's gradient :math:`\nabla_\theta \log p_\theta(x) = \mathbb E_{p(z|x)}[\nabla_\theta \log p_\theta(x, z)]`
is estimated by self-normalised annealed importance sampling (AIS; Neal 2001). For each image, ``K`` chains start
at ``z_0 ~ q0(z | x)`` and pass through the ``T`` inverse temperatures ``beta_t = t / (T - 1)``,
``t = 0..T-1``, of the geometric path

.. math:: \pi_t(z) \propto q_0(z \mid x)^{1 - \beta_t}\, p_\theta(x, z)^{\beta_t},

accumulating, for ``t = 1..T-1``,

.. math::

    \log w \mathrel{+}= (\beta_t - \beta_{t-1}) \big(\log p_\theta(x, z_{t-1}) - \log q_0(z_{t-1} \mid x)\big),
    \qquad z_t \sim \mathcal T_t(z_{t-1}, \cdot),

where ``T_t`` is one HMC transition (``L = 5`` leapfrog steps, identity mass matrix) leaving ``pi_t`` invariant,
with a step size ``h_t`` per temperature adapted across iterations towards acceptance 0.6 by
``h_t <- h_t (1 + eta (a_t - 0.6) / 0.6)``. With normalised weights ``w~_k = w_k / sum_j w_j``,

.. math:: \hat g_\theta = \sum_{k=1}^{K} \tilde w_k\, \nabla_\theta \log p_\theta(x, z^{(k)}_{T-1}) ,

which for ``T = 2`` and no transition would be the IWAE gradient; more temperatures move the samples towards the
posterior before weighting. The encoder maximises the ELBO over the same ``K`` draws. Chains, weights and samples
are all computed under ``stop_gradient`` outside of the differentiated function, so memory does not grow with
``T`` (measured in ``docs/methods.md``). ``logsumexp(log w) - log K`` is a stochastic lower bound of
``log p(x)`` and is reported as ``ais_bound``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.kernels.annealing import anneal
from mcmcvae.methods.base import apply_gradients, make_optimizer, nonfinite_count
from mcmcvae.methods.vcd import adapt_log_step_size
from mcmcvae.types import Array, PRNGKey, as_batch

__all__ = ["AIWAE", "inverse_temperatures", "annealed_log_weights"]

_THETA = ("decoder", "prior", "likelihood")


def inverse_temperatures(num_temperatures: int) -> np.ndarray:
    """``beta_t = t / (T - 1)`` for ``t = 0..T-1`` (``T >= 2``)."""
    if num_temperatures < 2:
        raise ValueError(f"num_temperatures must be at least 2 (beta_0 = 0 and beta_T-1 = 1), got {num_temperatures}")
    return np.arange(num_temperatures, dtype=np.float32) / (num_temperatures - 1)


def annealed_log_weights(rng_key: PRNGKey, log_joint_fn, contexts, positions: Array, loc: Array, scale: Array,
                         log_step_sizes: Array, *, num_integration_steps: int = 5):
    r"""AIS from ``q0 = N(loc, diag(scale^2))`` to ``log_joint_fn`` along ``beta_t = t / (T - 1)``, with HMC
    transitions of identity mass (:func:`mcmcvae.kernels.annealing.anneal`).

    Parameters
    ----------
    log_joint_fn
        ``log_joint_fn(z, context) -> scalar``, chain ``i``'s unnormalised target ``p(x_i, z)``.
    contexts
        Pytree with leading axis ``m`` (one entry per chain).
    positions
        ``(m, d)`` draws from q0 (one per chain).
    loc, scale
        ``(m, d)`` each: every chain's q0.
    log_step_sizes
        ``(T - 1,)``: ``log h_t`` of the transition at ``beta_1 .. beta_{T-1}``; ``T`` is read from its length.

    Returns
    -------
    log_weights, positions, acceptance_rate
        ``(m,)`` AIS log weights, ``(m, d)`` final positions, ``(T - 1,)`` mean acceptance rate per temperature.
        Nothing here is meant to be differentiated (callers stop gradients).
    """
    betas = jnp.asarray(inverse_temperatures(log_step_sizes.shape[0] + 1))
    result = anneal(rng_key, log_joint_fn, positions, loc, scale, betas, num_integration_steps=num_integration_steps,
                    log_step_sizes=log_step_sizes, context=contexts, context_axes=0)
    return result.log_weights, result.positions, result.acceptance_rate


@dataclasses.dataclass(frozen=True)
class AIWAE:
    """The ``aiwae`` method: decoder by self-normalised AIS, encoder by the ELBO.

    Parameters
    ----------
    num_samples
        K, AIS chains per image.
    num_temperatures
        T, inverse temperatures ``beta_t = t / (T - 1)`` (``T - 1`` HMC transitions).
    num_integration_steps
        L, leapfrog steps per HMC transition (5).
    target_acceptance_rate, step_size_adaptation_rate, initial_step_size
        Per-temperature step sizes move by ``h_t <- h_t (1 + eta (a_t - target) / target)`` after every
        iteration; target 0.6, eta 0.01, ``h_0 = 0.5 / d`` (None).
    learning_rate, encoder_learning_rate
        Adam's learning rates for theta and (None: the same) for phi.

    Examples
    --------
    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    >>> params = model.init(jax.random.key(0))
    >>> images = (np.random.default_rng(0).random((6, 4, 4, 1)) < 0.5).astype(np.float32)
    >>> method = mv.methods.build("aiwae", num_samples=5, num_temperatures=11)
    >>> state = method.init(jax.random.key(0), model, params)
    >>> params, state, metrics = method.step(jax.random.key(1), model, params, state, images)
    >>> bool(np.isfinite(metrics["loss"]))
    True
    """

    num_samples: int = 5
    num_temperatures: int = 5
    num_integration_steps: int = 5
    target_acceptance_rate: float = 0.6
    step_size_adaptation_rate: float = 0.01
    initial_step_size: float | None = None
    learning_rate: float = 1e-3
    encoder_learning_rate: float | None = None

    def __post_init__(self):
        inverse_temperatures(self.num_temperatures)  # validates T
        if self.num_samples < 1 or self.num_integration_steps < 1:
            raise ValueError("num_samples and num_integration_steps must be positive")

    @property
    def name(self) -> str:
        return "aiwae"

    def _optimizers(self):
        return make_optimizer(self.encoder_learning_rate or self.learning_rate), make_optimizer(self.learning_rate)

    def init(self, rng_key, model, params):
        del rng_key
        encoder_opt, theta_opt = self._optimizers()
        step_size = self.initial_step_size or 0.5 / model.latent_dim
        return {"encoder_opt": encoder_opt.init(params["encoder"]),
                "theta_opt": theta_opt.init({k: params[k] for k in _THETA}),
                "log_step_size": jnp.full((self.num_temperatures - 1,), math.log(step_size), jnp.float32)}

    def step(self, rng_key, model, params, state, batch):
        images = as_batch(batch).images
        k_q, k_chain = jax.random.split(rng_key)
        num_samples, n = self.num_samples, images.shape[0]

        def negative_elbo(encoder_params):
            p = {**params, "encoder": encoder_params}
            z, log_q = model.sample_q0(k_q, p, images, num_samples)  # (K, n, d), (K, n)
            log_p = jax.vmap(model.log_joint_batch, in_axes=(None, None, 0))(p, images, z)
            return -jnp.mean(log_p - log_q), z

        (negative_value, z0), encoder_grads = jax.value_and_grad(negative_elbo, has_aux=True)(params["encoder"])

        # AIS, entirely outside the differentiated functions: nothing of it is kept for a backward pass.
        frozen = jax.lax.stop_gradient(params)
        loc, scale = model.encode(frozen, images)
        dim = loc.shape[-1]

        def flat(a):  # (K, n, ...) -> (K n, ...)
            return a.reshape(num_samples * n, *a.shape[2:])

        def repeat(a):  # (n, ...) -> (K n, ...)
            return flat(jnp.broadcast_to(a, (num_samples, *a.shape)))

        log_w, z_final, acceptance = annealed_log_weights(
            k_chain, lambda z, x: model.log_joint(frozen, x, z), repeat(images), flat(jax.lax.stop_gradient(z0)),
            repeat(loc), repeat(scale), state["log_step_size"], num_integration_steps=self.num_integration_steps)
        log_w = log_w.reshape(num_samples, n)
        z_final = jax.lax.stop_gradient(z_final.reshape(num_samples, n, dim))
        weights = jax.lax.stop_gradient(jax.nn.softmax(log_w, axis=0))

        def negative_weighted_log_joint(theta):
            p = {**params, **theta}
            log_p = jax.vmap(model.log_joint_batch, in_axes=(None, None, 0))(p, images, z_final)
            return -jnp.mean(jnp.sum(weights * log_p, axis=0))

        theta = {k: params[k] for k in _THETA}
        theta_loss, theta_grads = jax.value_and_grad(negative_weighted_log_joint)(theta)

        encoder_opt, theta_opt = self._optimizers()
        encoder_params, encoder_state = apply_gradients(encoder_opt, encoder_grads, state["encoder_opt"],
                                                        params["encoder"])
        theta, theta_state = apply_gradients(theta_opt, theta_grads, state["theta_opt"], theta)
        log_step_size = adapt_log_step_size(state["log_step_size"], acceptance, self.target_acceptance_rate,
                                            self.step_size_adaptation_rate)
        ais_bound = jnp.mean(jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples))
        ess = jnp.mean(1.0 / jnp.sum(weights**2, axis=0))
        metrics = {"loss": -ais_bound, "ais_bound": ais_bound, "elbo": -negative_value,
                   "weighted_log_joint": -theta_loss, "acceptance_rate": jnp.mean(acceptance),
                   "step_size": jnp.mean(jnp.exp(log_step_size)), "effective_sample_size": ess,
                   "nonfinite_updates": nonfinite_count(encoder_state) + nonfinite_count(theta_state)}
        new_params = {**params, **theta, "encoder": encoder_params}
        return new_params, {"encoder_opt": encoder_state, "theta_opt": theta_state,
                            "log_step_size": log_step_size}, metrics

    def proposal(self, rng_key, model, params, state, images):
        """The encoder's q0, as for ``vae`` and ``iwae``."""
        del rng_key, state
        return model.encode(params, images)

    def config(self):
        return {"name": self.name, **dataclasses.asdict(self)}
