r"""The variational contrastive divergence (Ruiz and Titsias, ICML 2019) and Hoffman's (2017) MCMC training.

Both refine ``z_0 ~ q0(z | x) = N(mu(x), diag(sigma(x)^2))`` with ``t`` HMC transitions (``L`` leapfrog steps
each, identity mass matrix, one step size ``h`` shared by all chains) targeting ``p(z | x)``, giving
``z_t ~ q_t(z | x)``, and both fit the decoder (theta) to the refined samples,
``grad_theta (1/n) sum_i log p_theta(x_i, z_t,i)``. They differ in how they fit the encoder (phi):

- ``hoffman`` (Hoffman 2017): by the ELBO, ``grad_phi E_q0[log p(x, z) - log q0(z | x)]``, reparameterised;
- ``vcd``: by minimising the VCD

  .. math::

     \mathcal L_{VCD}(\phi) = \mathrm{KL}(q_0 \| p) - \mathrm{KL}(q_t \| p) + \mathrm{KL}(q_t \| q_0)
       = -\mathbb E_{q_0}\big[\log p(x, z) - \log q_0(z)\big] + \mathbb E_{q_t}\big[\log p(x, z) - \log q_0(z)\big],

  which is non-negative and zero exactly when ``q0`` is the posterior. With ``f(z) = log p(x, z) - log q0(z | x)``
  its gradient (their eq. 12, the MCMC kernel's dependence on phi through ``z_0`` only) is

  .. math::

     \nabla_\phi \mathcal L_{VCD} = -\nabla_\phi \mathbb E_{q_0}[f(z_0)]
       + \mathbb E_{q_0(z_0)\, Q_t(z_t | z_0)}\big[(f(z_t) - b)\, \nabla_\phi \log q_0(z_0 | x)\big]
       - \mathbb E_{q_t}\big[\nabla_\phi \log q_0(z_t | x)\big],

  the first term reparameterised with the entropy of q0 in closed form, the second a score-function term with a
  control variate ``b``, the third at fixed ``z_t``. The control variate is an exponential moving average of
  ``f(z_t)`` (decay 0.9): one global value for the first ``control_variate_wait`` = 3000 iterations, then one per
  data point. The per-point stage needs each image's index in the training set: the shared trainer gives every
  method's :meth:`step` a :class:`mcmcvae.types.Batch` of images and their indices, and ``vcd`` built with
  ``num_data`` (the training-set size; ``mcmcvae train`` sets it) keeps one control variate per point.

HMC: ``t = 8`` transitions of ``L = 5`` leapfrog steps (:mod:`mcmcvae.kernels.hmc`, ``C = I``) from
``stop_gradient(z_0)``; the step size starts at ``0.5 / d`` and, after each of the first ``num_burn_in_steps``
transitions of every iteration, moves as in the paper's code, ``h <- h (1 + eta (a - 0.9) / 0.9)`` with
``eta = 0.01`` and ``a`` the batch's acceptance rate; it is carried across iterations in the method state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcmcvae import kernels
from mcmcvae.kernels.annealing import diagonal_normal_logpdf
from mcmcvae.methods.base import apply_gradients, make_optimizer, nonfinite_count
from mcmcvae.types import Array, PRNGKey, as_batch

__all__ = ["VCD", "Hoffman", "run_hmc", "adapt_log_step_size", "vcd_encoder_loss", "diagonal_normal_logpdf"]

_THETA = ("decoder", "prior", "likelihood")


def adapt_log_step_size(log_step_size: Array, acceptance_rate: Array, target: float, rate: float) -> Array:
    r"""The paper code's step-size rule in log space: :math:`h \leftarrow h\,(1 + \eta (a - a^*) / a^*)`.

    Elementwise, so one call adapts a vector of per-temperature step sizes. The factor is floored at 0.5 so
    that a large ``rate`` cannot make ``h`` negative.
    """
    factor = 1.0 + rate * (acceptance_rate - target) / target
    return log_step_size + jnp.log(jnp.maximum(factor, 0.5))


def run_hmc(rng_key: PRNGKey, logdensity_fn, contexts, positions: Array, log_step_size: Array, *,
            num_steps: int, num_integration_steps: int, num_adaptation_steps: int = 0,
            target_acceptance_rate: float = 0.9, adaptation_rate: float = 0.01):
    """``num_steps`` HMC transitions of every chain with one shared step size, optionally adapted on the way.

    Parameters
    ----------
    logdensity_fn
        ``logdensity_fn(z, context) -> scalar``; chain ``i`` targets ``logdensity_fn(., contexts[i])``
        (``contexts`` is a pytree with leading axis ``n``, e.g. the images).
    positions
        ``(n, d)`` starting points.
    log_step_size
        ``log h`` at the start.
    num_adaptation_steps
        After each of the first this many transitions, ``log h`` moves by :func:`adapt_log_step_size` on the
        chains' mean acceptance rate (a traced comparison: one compiled loop for every setting).

    Returns
    -------
    positions, log_step_size, acceptance_rate, divergences
        Final ``(n, d)`` positions, the (adapted) ``log h``, the mean acceptance rate of each transition
        ``(num_steps,)`` and the number of divergent transitions.
    """
    tuner = _acceptance_ratio_step_size(kernels.hmc.build_kernel(num_integration_steps), num_adaptation_steps,
                                        target_acceptance_rate, adaptation_rate)
    dim, dtype = positions.shape[-1], positions.dtype
    start = kernels.Preconditioner(jnp.asarray(log_step_size, dtype), jnp.ones((dim,), dtype))  # C = I
    states = kernels.init_chains(kernels.hmc, positions, logdensity_fn, context=contexts)
    run = kernels.run_chains(rng_key, states, logdensity_fn, num_steps, tuner=tuner, tuner_state=tuner.init(dim, start),
                             context=contexts)
    return (run.states.position, run.tuner_state.log_step_size, jnp.mean(run.info.acceptance_rate, axis=1),
            jnp.sum(run.info.is_divergent))


class _StepSizeRuleState(NamedTuple):
    log_step_size: Array
    scale: Array
    step: Array


class _StepSizeRule(NamedTuple):
    init: Callable
    update: Callable
    final: Callable


def _acceptance_ratio_step_size(kernel, num_adaptation_steps: int, target: float, rate: float) -> _StepSizeRule:
    """The paper code's rule (:func:`adapt_log_step_size`) after each of the first ``num_adaptation_steps`` updates,
    in the tuner protocol (:mod:`mcmcvae.adaptation.base`), so that :func:`mcmcvae.kernels.run_chains` runs it."""

    def init(dim, preconditioner):
        del dim
        return _StepSizeRuleState(preconditioner.log_step_size, preconditioner.scale, jnp.zeros((), jnp.int32))

    def final(state):
        return kernels.Preconditioner(state.log_step_size, state.scale)

    def update(rng_key, state, chain_states, logdensity_fn, context=None, *, context_axes=0):
        chain_states, info = kernels.step_chains(rng_key, kernel, chain_states, logdensity_fn, final(state),
                                                 context=context, context_axes=context_axes)
        adapted = adapt_log_step_size(state.log_step_size, jnp.mean(info.acceptance_rate), target, rate)
        log_step_size = jnp.where(state.step < num_adaptation_steps, adapted, state.log_step_size)
        return chain_states, state._replace(log_step_size=log_step_size, step=state.step + 1), info

    return _StepSizeRule(init, update, final)


def vcd_encoder_loss(encoder_params, model, params, images: Array, noise: Array, z_t: Array, baseline: Array):
    r"""A surrogate whose gradient in the encoder is :math:`\nabla_\phi \mathcal L_{VCD}` (eq. 12), and the VCD.

    ``z_0 = mu + sigma * noise`` (reparameterised), ``z_t`` the refined samples and ``baseline`` the control
    variate ``b`` (per image). Returns ``(surrogate, (vcd, elbo, f))`` with ``vcd`` the batch estimate of
    :math:`\mathcal L_{VCD}` and ``f = log p(x, z_t) - log q0(z_t | x)``, all averaged over images except ``f``.
    """
    p = {**params, "encoder": encoder_params}
    loc, scale = model.encode(p, images)
    dim = loc.shape[-1]
    z0 = loc + scale * noise
    entropy = jnp.sum(jnp.log(scale), axis=-1) + 0.5 * dim * (1.0 + math.log(2 * math.pi))
    elbo = model.log_joint_batch(p, images, z0) + entropy
    log_q0_at_t = diagonal_normal_logpdf(z_t, loc, scale)
    f = jax.lax.stop_gradient(model.log_joint_batch(p, images, z_t) - log_q0_at_t)
    score = diagonal_normal_logpdf(jax.lax.stop_gradient(z0), loc, scale)
    surrogate = -elbo + (f - baseline) * score - log_q0_at_t
    vcd = -elbo + f
    return jnp.mean(surrogate), (jnp.mean(vcd), jnp.mean(elbo), f)


@dataclasses.dataclass(frozen=True)
class _HMCRefinement:
    """What ``vcd`` and ``hoffman`` share: HMC refinement of q0 samples and the decoder's update at z_t."""

    num_mcmc_steps: int = 8
    num_integration_steps: int = 5
    num_burn_in_steps: int | None = None
    target_acceptance_rate: float = 0.9
    initial_step_size: float | None = None
    step_size_adaptation_rate: float = 0.01
    learning_rate: float = 1e-3
    encoder_learning_rate: float | None = None
    num_proposal_chains: int = 16

    def __post_init__(self):
        if self.num_mcmc_steps < 1 or self.num_integration_steps < 1:
            raise ValueError("num_mcmc_steps and num_integration_steps must be positive")
        if not 0.0 < self.target_acceptance_rate < 1.0:
            raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {self.target_acceptance_rate}")

    @property
    def _burn_in(self) -> int:
        return self.num_mcmc_steps if self.num_burn_in_steps is None else self.num_burn_in_steps

    def _optimizers(self):
        return make_optimizer(self.encoder_learning_rate or self.learning_rate), make_optimizer(self.learning_rate)

    def _init_common(self, model, params) -> dict[str, Any]:
        encoder_opt, theta_opt = self._optimizers()
        step_size = self.initial_step_size or 0.5 / model.latent_dim
        return {"encoder_opt": encoder_opt.init(params["encoder"]),
                "theta_opt": theta_opt.init({k: params[k] for k in _THETA}),
                "log_step_size": jnp.asarray(math.log(step_size), jnp.float32)}

    def _refine(self, rng_key, model, params, images, z0, log_step_size, num_adaptation_steps):
        frozen = jax.lax.stop_gradient(params)
        return run_hmc(rng_key, lambda z, x: model.log_joint(frozen, x, z), images, jax.lax.stop_gradient(z0),
                       log_step_size, num_steps=self.num_mcmc_steps, num_integration_steps=self.num_integration_steps,
                       num_adaptation_steps=num_adaptation_steps, target_acceptance_rate=self.target_acceptance_rate,
                       adaptation_rate=self.step_size_adaptation_rate)

    def _common_step(self, rng_key, model, params, state, images, encoder_loss):
        """Draw z_0, refine it, update theta at z_t and the encoder by ``encoder_loss(enc, noise, z_t)``."""
        k_eps, k_chain = jax.random.split(rng_key)
        loc, scale = model.encode(params, images)
        noise = jax.random.normal(k_eps, loc.shape, loc.dtype)
        z0 = loc + scale * noise
        z_t, log_h, acceptance, divergences = self._refine(
            k_chain, model, params, images, z0, state["log_step_size"], self._burn_in)
        z_t = jax.lax.stop_gradient(z_t)

        theta = {k: params[k] for k in _THETA}
        theta_loss, theta_grads = jax.value_and_grad(
            lambda t: -jnp.mean(model.log_joint_batch({**params, **t}, images, z_t)))(theta)
        (_, aux), encoder_grads = jax.value_and_grad(encoder_loss, has_aux=True)(params["encoder"], noise, z_t)

        encoder_opt, theta_opt = self._optimizers()
        encoder_params, encoder_state = apply_gradients(encoder_opt, encoder_grads, state["encoder_opt"],
                                                        params["encoder"])
        theta, theta_state = apply_gradients(theta_opt, theta_grads, state["theta_opt"], theta)
        new_params = {**params, **theta, "encoder": encoder_params}
        new_state = {**state, "encoder_opt": encoder_state, "theta_opt": theta_state, "log_step_size": log_h}
        metrics = {"log_joint_at_chain_end": -theta_loss, "acceptance_rate": jnp.mean(acceptance),
                   "step_size": jnp.exp(log_h), "divergences": divergences,
                   "nonfinite_updates": nonfinite_count(encoder_state) + nonfinite_count(theta_state)}
        return new_params, new_state, metrics, aux

    def proposal(self, rng_key, model, params, state, images):
        """``N(zbar_t(x), Sigma0(x))``: ``num_proposal_chains`` chains per image from q0, step size frozen."""
        loc, scale = model.encode(params, images)
        n, dim = loc.shape
        chains = self.num_proposal_chains
        k_eps, k_chain = jax.random.split(rng_key)
        z0 = (loc[:, None] + scale[:, None] * jax.random.normal(k_eps, (n, chains, dim))).reshape(n * chains, dim)
        repeated = jnp.repeat(images, chains, axis=0)
        positions, _, _, _ = self._refine(k_chain, model, params, repeated, z0, state["log_step_size"], 0)
        return positions.reshape(n, chains, dim).mean(axis=1), scale

    def config(self):
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Hoffman(_HMCRefinement):
    """The ``hoffman`` method (Hoffman 2017): encoder by the ELBO, decoder at HMC-refined samples.

    Parameters
    ----------
    num_mcmc_steps, num_integration_steps
        t HMC transitions of L leapfrog steps (default 8 and 5, as Ruiz and Titsias 2019 ran it).
    num_burn_in_steps
        How many of the t transitions adapt the step size (None: all of them).
    target_acceptance_rate, step_size_adaptation_rate, initial_step_size
        The adaptation ``h <- h (1 + eta (a - target) / target)``; target 0.9, eta 0.01, ``h_0 = 0.5 / d``
        (None).
    learning_rate, encoder_learning_rate
        Adam's learning rates for theta and (None: the same) for phi.
    num_proposal_chains
        Chains per image whose mean centres the evaluation proposal.
    """

    @property
    def name(self) -> str:
        return "hoffman"

    def init(self, rng_key, model, params):
        del rng_key
        return self._init_common(model, params)

    def step(self, rng_key, model, params, state, batch):
        images = as_batch(batch).images
        def negative_elbo(encoder_params, noise, z_t):
            del z_t
            p = {**params, "encoder": encoder_params}
            loc, scale = model.encode(p, images)
            z0 = loc + scale * noise
            elbo = model.log_joint_batch(p, images, z0) - diagonal_normal_logpdf(z0, loc, scale)
            return -jnp.mean(elbo), jnp.mean(elbo)

        params, state, metrics, elbo = self._common_step(rng_key, model, params, state, images, negative_elbo)
        return params, state, {"loss": -elbo, "elbo": elbo, **metrics}


@dataclasses.dataclass(frozen=True)
class VCD(_HMCRefinement):
    """The ``vcd`` method (Ruiz and Titsias 2019): encoder by the VCD gradient (eq. 12), decoder at z_t.

    Parameters
    ----------
    control_variate
        Subtract the control variate ``b`` from ``f(z_t)`` in the score-function term.
    control_variate_decay
        Decay of its moving average (0.9).
    control_variate_wait
        Iterations with one global ``b`` before switching to one per data point (3000, the paper's, out of its
        400000). A shorter run should set it to a fraction of its iterations, or the per-point stage never starts;
        the metric ``control_variate_per_point`` (1 or 0 per step) shows which stage each step used.
    num_data
        Training-set size; with it, and a :class:`mcmcvae.types.Batch` with indices given to :meth:`step` (as the
        trainer does), the per-point stage is used. Without either, ``b`` stays global.
    (others)
        As :class:`Hoffman`.
    """

    control_variate: bool = True
    control_variate_decay: float = 0.9
    control_variate_wait: int = 3000
    num_data: int | None = None

    @property
    def name(self) -> str:
        return "vcd"

    def init(self, rng_key, model, params):
        del rng_key
        state = self._init_common(model, params)
        state["control_variate"] = {"global": jnp.zeros((), jnp.float32), "iteration": jnp.zeros((), jnp.int32)}
        if self.num_data is not None:  # (Orbax cannot checkpoint an empty array, so no "local" without it)
            state["control_variate"]["local"] = jnp.zeros((self.num_data,), jnp.float32)
        return state

    def _baseline(self, cv_state, num_images, indices):
        if not self.control_variate:
            return jnp.zeros((num_images,), jnp.float32)
        shared = jnp.broadcast_to(cv_state["global"], (num_images,))
        if indices is None or self.num_data is None:
            return shared
        return jnp.where(cv_state["iteration"] >= self.control_variate_wait, cv_state["local"][indices], shared)

    def _per_point_in_use(self, cv_state, indices):
        """1.0 where this step's control variates are per point (past the wait, with indices and ``num_data``)."""
        in_use = self.control_variate and indices is not None and self.num_data is not None
        return jnp.where(in_use & (cv_state["iteration"] >= self.control_variate_wait), 1.0, 0.0)

    def _update_control_variate(self, cv_state, f, indices):
        decay = self.control_variate_decay
        new_global = decay * cv_state["global"] + (1 - decay) * jnp.mean(f)
        new_state = {**cv_state, "global": new_global, "iteration": cv_state["iteration"] + 1}
        if indices is not None and self.num_data is not None:
            local = cv_state["local"]
            per_point = local.at[indices].set(decay * local[indices] + (1 - decay) * f)
            # During the global stage every point's value follows the global one, as in the paper's code, so
            # the per-point averages start from it.
            new_state["local"] = jnp.where(cv_state["iteration"] >= self.control_variate_wait, per_point,
                                           jnp.full_like(local, new_global))
        return new_state

    def step(self, rng_key, model, params, state, batch):
        """One VCD update on a :class:`mcmcvae.types.Batch`; its ``indices`` (the images' positions in the training
        set, as the trainer passes them) select the per-point control variates. Images alone keep ``b`` global."""
        images, indices = as_batch(batch)
        cv_state = state["control_variate"]
        baseline = self._baseline(cv_state, images.shape[0], indices)

        def loss(encoder_params, noise, z_t):
            value, aux = vcd_encoder_loss(encoder_params, model, params, images, noise, z_t, baseline)
            return value, aux

        params, state, metrics, (vcd, elbo, f) = self._common_step(rng_key, model, params, state, images, loss)
        state = {**state, "control_variate": self._update_control_variate(cv_state, f, indices)}
        return params, state, {"loss": vcd, "vcd": vcd, "elbo": elbo, "control_variate": jnp.mean(baseline),
                               "control_variate_per_point": self._per_point_in_use(cv_state, indices), **metrics}
