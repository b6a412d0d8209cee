r"""The Hamiltonian variational auto-encoder (Caterini, Doucet and Sejdinovic, NeurIPS 2018).

HVAE is a normalising flow on the extended space ``(z, rho)`` built from Hamiltonian dynamics for the target
``p(x, z)`` (Hamiltonian importance sampling, Neal 2005). With ``gamma_0 ~ N(0, I_d)``,
``z_0 ~ q0(z | x) = N(mu(x), diag(sigma(x)^2))`` and ``rho_0 = gamma_0 / sqrt(beta_0)``, each of the K steps is

.. math::

    \tilde\rho &= \rho_{k-1} + \tfrac{\varepsilon}{2} \odot \nabla_z \log p(x, z_{k-1}), \\
    z_k &= z_{k-1} + \varepsilon \odot \tilde\rho, \\
    \rho'_k &= \tilde\rho + \tfrac{\varepsilon}{2} \odot \nabla_z \log p(x, z_k), \\
    \rho_k &= \alpha_k \rho'_k, \qquad \alpha_k = \sqrt{\beta_{k-1} / \beta_k},

one leapfrog step with per-dimension step sizes ``epsilon = 0.5 * sigmoid(a)`` (``a`` learnt; one vector shared
by all steps, or one per step) followed by tempering of the momentum, with ``beta_K = 1``. Tempering is

- ``"fixed"``: the quadratic schedule
  :math:`\beta_k^{-1/2} = (1 - \beta_0^{-1/2}) k^2 / K^2 + \beta_0^{-1/2}` with a learnt initial inverse
  temperature ``beta_0 = sigmoid(b)`` in (0, 1);
- ``"free"``: every ``alpha_k = sigmoid(c_k)`` learnt, and ``beta_0 = prod_k alpha_k^2``;
- ``"none"``: ``beta_k = 1``, ``alpha_k = 1``.

The leapfrog steps preserve volume and the momentum scalings multiply to ``sqrt(beta_0)``, which cancels the
initial ``1 / sqrt(beta_0)``: the map ``(z_0, gamma_0) -> (z_K, rho_K)`` has unit Jacobian. With the extended
target ``p(x, z) N(rho; 0, I)`` the bound is therefore

.. math:: \log p(x, z_K) - \tfrac12 \rho_K^T\rho_K - \log q_0(z_0 | x) + \tfrac12 \gamma_0^T\gamma_0 ,

and replacing the last two terms by their expectations (the entropy of q0 and d/2) gives the Rao-Blackwellised
ELBO of their eq. (12),

.. math::

    \mathcal L^H(\theta, \phi; x) = \mathbb E\big[\log p_\theta(x, z_K) - \tfrac12 \rho_K^T \rho_K\big]
        + \tfrac12 \log\lvert\Sigma_\phi(x)\rvert + d + \tfrac d2 \log 2\pi ,

which is maximised jointly over the encoder, decoder, step sizes and tempering by reparameterisation gradients
through the whole flow (second derivatives of ``log p``). Reverse-mode differentiation keeps every step's
intermediates, so memory grows linearly with K (measured in ``docs/methods.md``).

Each leapfrog step is :func:`mcmcvae.kernels.integrators.leapfrog_step` with unit step size and inverse mass
matrix ``diag(epsilon^2)`` applied to the rescaled momentum ``rho / epsilon``, which is the same map.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from mcmcvae.kernels import integrators
from mcmcvae.methods.base import apply_gradients, make_optimizer, nonfinite_count
from mcmcvae.types import Array, PRNGKey, as_batch

__all__ = ["HVAE", "TEMPERINGS", "init_flow", "step_sizes", "momentum_scales", "flow", "hvae_bound"]

TEMPERINGS = ("fixed", "free", "none")


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def init_flow(dim: int, num_steps: int, *, tempering: str = "fixed", share_step_sizes: bool = True,
              initial_step_size: float = 0.005, initial_inverse_temperature: float = 1 / 25,
              max_step_size: float = 0.5) -> dict[str, Array]:
    """The flow's learnable parameters, as unconstrained arrays.

    Returns a dict with ``"step_size_logits"`` (``(d,)`` if shared, else ``(K, d)``, with
    ``epsilon = max_step_size * sigmoid(logit)``) and, for ``"fixed"`` tempering, ``"inverse_temperature_logit"``
    (``beta_0 = sigmoid``), for ``"free"`` tempering ``"tempering_logits"`` (``(K,)``, ``alpha_k = sigmoid``,
    initialised so that ``prod alpha_k^2 = initial_inverse_temperature``).
    """
    if tempering not in TEMPERINGS:
        raise ValueError(f"unknown tempering {tempering!r}; choose one of {TEMPERINGS}")
    if not 0.0 < initial_step_size < max_step_size:
        raise ValueError(f"initial_step_size must lie in (0, {max_step_size}), got {initial_step_size}")
    if not 0.0 < initial_inverse_temperature < 1.0:
        raise ValueError(f"initial_inverse_temperature must lie in (0, 1), got {initial_inverse_temperature}")
    shape = (dim,) if share_step_sizes else (num_steps, dim)
    flow_params = {"step_size_logits": jnp.full(shape, _logit(initial_step_size / max_step_size), jnp.float32)}
    if tempering == "fixed":
        flow_params["inverse_temperature_logit"] = jnp.asarray(_logit(initial_inverse_temperature), jnp.float32)
    elif tempering == "free":
        alpha = initial_inverse_temperature ** (1.0 / (2 * num_steps))
        flow_params["tempering_logits"] = jnp.full((num_steps,), _logit(alpha), jnp.float32)
    return flow_params


def step_sizes(flow_params: dict, num_steps: int, max_step_size: float = 0.5) -> Array:
    """Per-step, per-dimension leapfrog step sizes ``epsilon = max_step_size * sigmoid(a)``, shape ``(K, d)``."""
    eps = max_step_size * jax.nn.sigmoid(flow_params["step_size_logits"])
    if eps.ndim == 1:
        eps = jnp.broadcast_to(eps, (num_steps, eps.shape[0]))
    return eps


def momentum_scales(flow_params: dict, num_steps: int, tempering: str) -> tuple[Array, Array]:
    r"""``(1 / sqrt(beta_0), alpha_{1..K})``: the initial momentum scale and the tempering factors.

    ``"fixed"``: :math:`T_k = \beta_k^{-1/2} = T_0 + (1 - T_0) k^2 / K^2`, :math:`\alpha_k = T_k / T_{k-1}`;
    ``"free"``: :math:`\alpha_k = \mathrm{sigmoid}(c_k)`, :math:`\beta_0^{-1/2} = 1 / \prod_k \alpha_k`;
    ``"none"``: all ones. In every case ``(1 / sqrt(beta_0)) * prod_k alpha_k = 1``.
    """
    if tempering == "fixed":
        beta0 = jax.nn.sigmoid(flow_params["inverse_temperature_logit"])
        t0 = jax.lax.rsqrt(beta0)
        k = jnp.arange(num_steps + 1, dtype=jnp.float32)
        temperatures = t0 + (1.0 - t0) * k**2 / num_steps**2
        return t0, temperatures[1:] / temperatures[:-1]
    if tempering == "free":
        log_alpha = jax.nn.log_sigmoid(flow_params["tempering_logits"])
        return jnp.exp(-jnp.sum(log_alpha)), jnp.exp(log_alpha)
    if tempering == "none":
        return jnp.ones((), jnp.float32), jnp.ones((num_steps,), jnp.float32)
    raise ValueError(f"unknown tempering {tempering!r}; choose one of {TEMPERINGS}")


def flow(logdensity_fn, z0: Array, gamma0: Array, eps: Array, initial_scale: Array, factors: Array):
    """Run the K leapfrog-and-temper steps for one chain.

    Returns ``(z_K, rho_K, log p(x, z_K), is_finite)``; when ``is_finite`` is False a step left the finite
    numbers and the other values are stand-ins to be discarded.

    Parameters
    ----------
    logdensity_fn
        ``z -> log p(x, z)`` for one data point.
    z0, gamma0
        ``(d,)`` start position and standard-normal momentum noise; ``rho_0 = initial_scale * gamma0``.
    eps
        ``(K, d)`` step sizes.
    initial_scale, factors
        From :func:`momentum_scales`.
    """
    logdensity, grad = jax.value_and_grad(logdensity_fn)(z0)

    def one_step(carry, inputs):
        position, momentum, logdensity, grad, is_finite = carry
        step_eps, factor = inputs
        # A leapfrog step with per-dimension step sizes eps is a unit-step leapfrog with inverse mass
        # diag(eps^2) on the momentum rho / eps.
        state = integrators.IntegratorState(position, momentum / step_eps, logdensity, grad)
        new, step_is_finite = integrators.leapfrog_step(state, logdensity_fn, lambda p: step_eps**2 * p, 1.0)
        momentum = factor * step_eps * new.momentum
        return (new.position, momentum, new.logdensity, new.logdensity_grad, is_finite & step_is_finite), None

    carry = (z0, initial_scale * gamma0, logdensity, grad, jnp.asarray(True))
    (z_k, rho_k, logdensity_k, _, is_finite), _ = jax.lax.scan(one_step, carry, (eps, factors))
    return z_k, rho_k, logdensity_k, is_finite


def hvae_bound(rng_key: PRNGKey, model, params, flow_params: dict, images: Array, *, num_steps: int,
               tempering: str = "fixed", max_step_size: float = 0.5, rao_blackwellised: bool = True):
    r"""One-sample estimates of the HVAE bound for every image, and whether each flow stayed finite.

    ``rao_blackwellised=True`` gives eq. (12),
    ``log p(x, z_K) - |rho_K|^2 / 2 + sum log sigma(x) + d + (d/2) log 2 pi``; ``False`` gives the plain estimate
    ``log p(x, z_K) - |rho_K|^2 / 2 - log q0(z_0 | x) + |gamma_0|^2 / 2``. Both have the same expectation, a
    lower bound of ``log p(x)``. Differentiable in ``params`` and ``flow_params``.

    Returns
    -------
    bound, is_finite
        Each ``(n,)``.
    """
    k_z, k_rho = jax.random.split(rng_key)
    loc, scale = model.encode(params, images)
    dim = loc.shape[-1]
    noise = jax.random.normal(k_z, loc.shape, loc.dtype)
    z0 = loc + scale * noise
    gamma0 = jax.random.normal(k_rho, loc.shape, loc.dtype)
    eps = step_sizes(flow_params, num_steps, max_step_size)
    initial_scale, factors = momentum_scales(flow_params, num_steps, tempering)

    def one(x, z, g):
        return flow(lambda zz: model.log_joint(params, x, zz), z, g, eps, initial_scale, factors)

    _, rho_k, log_joint_k, is_finite = jax.vmap(one)(images, z0, gamma0)
    value = log_joint_k - 0.5 * jnp.sum(rho_k**2, axis=-1)
    if rao_blackwellised:
        value = value + jnp.sum(jnp.log(scale), axis=-1) + dim + 0.5 * dim * math.log(2 * math.pi)
    else:
        log_q0 = jnp.sum(jax.scipy.stats.norm.logpdf(z0, loc, scale), axis=-1)
        value = value - log_q0 + 0.5 * jnp.sum(gamma0**2, axis=-1)
    return value, is_finite


@dataclasses.dataclass(frozen=True)
class HVAE:
    """The ``hvae`` method: maximise the Rao-Blackwellised HVAE bound over every parameter at once.

    Parameters
    ----------
    num_mcmc_steps
        K, leapfrog-and-temper steps of the flow.
    tempering
        ``"fixed"`` (quadratic schedule, learnt ``beta_0``), ``"free"`` (learnt ``alpha_k``) or ``"none"``.
    share_step_sizes
        One step-size vector for all K steps (True) or one per step.
    learning_rate
        Adam's learning rate for the model and the flow parameters alike.
    initial_step_size, initial_inverse_temperature, max_step_size
        Start values of ``epsilon`` and ``beta_0``, and the bound ``epsilon < max_step_size``; the defaults are
        those of the paper's code for the Gaussian model (``epsilon = 0.005``, ``beta_0 = 1/25``, bound 0.5).
    num_proposal_chains
        Flow samples per image whose mean centres the evaluation proposal (with the encoder's scale).

    Examples
    --------
    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    >>> params = model.init(jax.random.key(0))
    >>> images = (np.random.default_rng(0).random((6, 4, 4, 1)) < 0.5).astype(np.float32)
    >>> method = mv.methods.build("hvae", num_mcmc_steps=5, tempering="free")
    >>> state = method.init(jax.random.key(0), model, params)
    >>> params, state, metrics = method.step(jax.random.key(1), model, params, state, images)
    >>> bool(np.isfinite(metrics["loss"]))
    True
    """

    num_mcmc_steps: int = 10
    tempering: str = "fixed"
    share_step_sizes: bool = True
    learning_rate: float = 1e-3
    initial_step_size: float = 0.005
    initial_inverse_temperature: float = 1 / 25
    max_step_size: float = 0.5
    num_proposal_chains: int = 16

    def __post_init__(self):
        if self.tempering not in TEMPERINGS:
            raise ValueError(f"unknown tempering {self.tempering!r}; choose one of {TEMPERINGS}")
        if self.num_mcmc_steps < 1:
            raise ValueError(f"num_mcmc_steps must be positive, got {self.num_mcmc_steps}")

    @property
    def name(self) -> str:
        return "hvae"

    def _bound(self, rng_key, model, params, flow_params, images, **options):
        return hvae_bound(rng_key, model, params, flow_params, images, num_steps=self.num_mcmc_steps,
                          tempering=self.tempering, max_step_size=self.max_step_size, **options)

    def init(self, rng_key, model, params) -> dict[str, Any]:
        del rng_key
        flow_params = init_flow(model.latent_dim, self.num_mcmc_steps, tempering=self.tempering,
                                share_step_sizes=self.share_step_sizes, initial_step_size=self.initial_step_size,
                                initial_inverse_temperature=self.initial_inverse_temperature,
                                max_step_size=self.max_step_size)
        return {"flow": flow_params, "opt_state": make_optimizer(self.learning_rate).init((params, flow_params))}

    def step(self, rng_key, model, params, state, batch):
        images = as_batch(batch).images
        def loss_fn(variables):
            p, f = variables
            value, is_finite = self._bound(rng_key, model, p, f, images)
            # A flow that left the finite numbers carries stand-in values (see integrators.leapfrog_step): it is
            # left out of the average, and counted.
            count = jnp.maximum(jnp.sum(is_finite), 1)
            mean = jnp.sum(jnp.where(is_finite, value, 0.0)) / count
            return -mean, (mean, jnp.sum(~is_finite))

        grads, (value, nonfinite_flows) = jax.grad(loss_fn, has_aux=True)((params, state["flow"]))
        (params, flow_params), opt_state = apply_gradients(
            make_optimizer(self.learning_rate), grads, state["opt_state"], (params, state["flow"]))
        initial_scale, _ = momentum_scales(flow_params, self.num_mcmc_steps, self.tempering)
        metrics = {"loss": -value, "bound": value,
                   "step_size": jnp.mean(step_sizes(flow_params, self.num_mcmc_steps, self.max_step_size)),
                   "initial_inverse_temperature": initial_scale**-2,
                   "nonfinite_flows": nonfinite_flows, "nonfinite_updates": nonfinite_count(opt_state)}
        return params, {"flow": flow_params, "opt_state": opt_state}, metrics

    def proposal(self, rng_key, model, params, state, images):
        """``N(mean of z_K, Sigma0(x))`` per image, from ``num_proposal_chains`` runs of the learnt flow."""
        n = images.shape[0]
        chains = self.num_proposal_chains
        repeated = jnp.repeat(images, chains, axis=0)
        k_z, k_rho = jax.random.split(rng_key)
        loc, scale = model.encode(params, images)
        z0 = (jnp.repeat(loc, chains, 0) + jnp.repeat(scale, chains, 0)
              * jax.random.normal(k_z, (n * chains, loc.shape[-1]), loc.dtype))
        gamma0 = jax.random.normal(k_rho, z0.shape, z0.dtype)
        eps = step_sizes(state["flow"], self.num_mcmc_steps, self.max_step_size)
        initial_scale, factors = momentum_scales(state["flow"], self.num_mcmc_steps, self.tempering)
        z_k, _, _, is_finite = jax.vmap(
            lambda x, z, g: flow(lambda zz: model.log_joint(params, x, zz), z, g, eps, initial_scale, factors)
        )(repeated, z0, gamma0)
        z_k = jnp.where(is_finite[:, None], z_k, z0)
        return z_k.reshape(n, chains, -1).mean(axis=1), scale

    def config(self):
        return {"name": self.name, **dataclasses.asdict(self)}
