r"""MCMC-refined VAE training (Hirt, Kreouzis and Dellaportas 2024, Algorithm 1).

One training step on a batch ``x_1..x_n``:

1. ``z0 = mu(x) + sigma(x) * eps`` from the encoder; the encoder (phi0) takes an Adam step on the ELBO (eq. 2).
2. ``K`` kernel steps from ``stop_gradient(z0)`` targeting ``p(z | x)`` for every image at once; the chains share
   the kernel parameters phi1 = (h, C).
3. The decoder and any learnable prior or likelihood scale (theta) take an Adam step on
   ``(1/n) sum_i log p(x_i, stop_gradient(z_K,i))`` (section 4.6).
4. The kernel parameters are tuned while the chains run, according to ``tuning``:

   - ``"speed_measure"`` (``gradmala``, ``gradhmc``): after every kernel step, one optimiser step on the entropy
     speed measure ``E[min(0, log alpha)] + beta H`` over this batch's (x, z) pairs, beta steered towards the
     target acceptance rate (:func:`mcmcvae.adaptation.speed_measure`). With
     ``step_size_adaptation="dual_averaging"`` (a variant, not the paper's method) the chains move with ``s h``
     instead, ``s`` dual-averaged towards the target, while ``(h, C)`` learn as before;
   - ``"dual_averaging"`` (``dsmala``, ``dshmc``): BlackJAX's dual averaging of h towards the target acceptance
     rate, C = I, its state carried across batches (or restarted from h = 1 every batch with
     ``restart_dual_averaging``, as the paper's code did);
   - ``"fixed"`` (``mala``, ``hmc``): h fixed at ``step_size``, C = I.

Encoder, decoder and kernel have separate optimisers and learning rates. Divergent or non-finite proposals are
rejected by the kernels and counted (``divergences``); non-finite gradients skip the update and are counted.

For evaluation, :meth:`MCMC.proposal` runs ``num_proposal_chains`` chains per image for K steps with the kernel
frozen (the averaged h for dual averaging) and centres the importance proposal on the mean of their final states,
with the encoder's scale (paper section 6.2); nothing adapts during evaluation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from mcmcvae import adaptation, kernels
from mcmcvae.methods.base import apply_gradients, make_optimizer, nonfinite_count

__all__ = ["MCMC", "TUNINGS", "ALGORITHMS"]

TUNINGS = ("fixed", "dual_averaging", "speed_measure")
ALGORITHMS = ("mala", "hmc")
_PREFIX = {"fixed": "", "dual_averaging": "ds", "speed_measure": "grad"}
_THETA = ("decoder", "prior", "likelihood")


def _log_joint(z, context, model):
    params, x = context
    return model.log_joint(params, x, z)


@dataclasses.dataclass(frozen=True)
class MCMC:
    """The ``mala``, ``hmc``, ``dsmala``, ``dshmc``, ``gradmala`` and ``gradhmc`` methods.

    Parameters
    ----------
    algorithm
        ``"mala"`` or ``"hmc"``.
    tuning
        ``"fixed"``, ``"dual_averaging"`` or ``"speed_measure"``.
    num_mcmc_steps
        K, kernel steps per batch.
    num_integration_steps
        L, leapfrog steps per HMC step.
    preconditioner
        ``"diagonal"`` or ``"lower_triangular"`` C (speed measure only; the other tunings use C = I).
    learning_rate
        Adam's learning rate for theta (decoder, prior, likelihood scale).
    encoder_learning_rate
        Adam's learning rate for phi0; None: ``learning_rate``.
    kernel_learning_rate
        Adam's learning rate for phi1 = (log h, C) under the speed measure.
    step_size
        h of the fixed kernels, and the initial h of the speed measure.
    target_acceptance_rate
        None: 0.55 for MALA, 0.65 for HMC.
    restart_dual_averaging
        Restart dual averaging from h = 1 every batch (the paper code's behaviour) instead of carrying it.
    stop_gradient_proposal_grad
        The speed measure's "biased" gradient of the paper's code (see :mod:`mcmcvae.kernels.mala`).
    step_size_adaptation
        Speed measure only. ``"speed_measure"`` (the paper's method) or ``"dual_averaging"``: the chains move with
        ``s h`` and the learnt ``C``, ``log s`` dual-averaged towards the target acceptance rate, which gradHMC's
        own objective does not reach (:mod:`mcmcvae.adaptation.speed_measure`).
    num_proposal_chains
        Chains per image whose final states' mean centres the evaluation proposal.
    """

    algorithm: str = "mala"
    tuning: str = "speed_measure"
    num_mcmc_steps: int = 10
    num_integration_steps: int = 2
    preconditioner: str = "diagonal"
    learning_rate: float = 1e-3
    encoder_learning_rate: float | None = None
    kernel_learning_rate: float = 1e-2
    step_size: float = 0.05
    target_acceptance_rate: float | None = None
    restart_dual_averaging: bool = False
    stop_gradient_proposal_grad: bool = False
    step_size_adaptation: str = "speed_measure"
    num_proposal_chains: int = 16

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of {ALGORITHMS}")
        if self.tuning not in TUNINGS:
            raise ValueError(f"unknown tuning {self.tuning!r}; choose one of {TUNINGS}")
        if self.preconditioner not in adaptation.PRECONDITIONER_KINDS:
            raise ValueError(f"unknown preconditioner {self.preconditioner!r}; "
                             f"choose one of {adaptation.PRECONDITIONER_KINDS}")
        if self.step_size_adaptation not in adaptation.STEP_SIZE_ADAPTATIONS:
            raise ValueError(f"unknown step_size_adaptation {self.step_size_adaptation!r}; "
                             f"choose one of {adaptation.STEP_SIZE_ADAPTATIONS}")
        if self.step_size_adaptation != "speed_measure" and self.tuning != "speed_measure":
            raise ValueError(f"step_size_adaptation={self.step_size_adaptation!r} is an option of the speed-measure "
                             f"methods (gradmala, gradhmc), not of {self.name}")
        if self.num_mcmc_steps < 1 or self.num_integration_steps < 1:
            raise ValueError("num_mcmc_steps and num_integration_steps must be positive")

    @property
    def name(self) -> str:
        return _PREFIX[self.tuning] + self.algorithm

    # ------------------------------------------------------------------------------------- kernel plumbing
    @property
    def _module(self):
        return kernels.hmc if self.algorithm == "hmc" else kernels.mala

    @property
    def _hmc_options(self):
        return {"num_integration_steps": self.num_integration_steps} if self.algorithm == "hmc" else {}

    def _tuner(self):
        if self.tuning == "speed_measure":
            return adaptation.speed_measure(
                self._module, preconditioner=self.preconditioner, target_acceptance_rate=self.target_acceptance_rate,
                learning_rate=self.kernel_learning_rate, initial_step_size=self.step_size,
                stop_gradient_proposal_grad=self.stop_gradient_proposal_grad,
                step_size_adaptation=self.step_size_adaptation, **self._hmc_options)
        if self.tuning == "dual_averaging":
            return adaptation.dual_averaging(
                self._module, target_acceptance_rate=self.target_acceptance_rate, **self._hmc_options)
        return None

    def _init_kernel_state(self, dim: int):
        if self.tuning == "speed_measure":
            return self._tuner().init(dim)
        if self.tuning == "dual_averaging":
            return self._tuner().init(1.0)
        return kernels.Preconditioner.diagonal(dim, step_size=self.step_size)

    def _frozen_preconditioner(self, kernel_state, dim: int) -> kernels.Preconditioner:
        """The kernel parameters to sample with when nothing adapts (evaluation, fixed kernels)."""
        if self.tuning == "speed_measure":
            return adaptation.to_preconditioner(kernel_state)
        if self.tuning == "dual_averaging":
            return kernels.Preconditioner.diagonal(dim, step_size=jnp.exp(kernel_state.log_step_size_avg))
        return kernel_state

    def _kernel(self):
        if self.algorithm == "hmc":
            return kernels.hmc.build_kernel(self.num_integration_steps)
        return kernels.mala.build_kernel()

    def _sample(self, rng_key, model, params, images, z0, preconditioner):
        """K kernel steps with fixed parameters for every chain; returns final positions and per-step infos."""
        kernel, module = self._kernel(), self._module

        def logdensity(x):
            return lambda z: model.log_joint(params, x, z)

        chains = jax.vmap(lambda z, x: module.init(z, logdensity(x)))(z0, images)

        def body(chains, k):
            keys = jax.random.split(jax.random.fold_in(rng_key, k), z0.shape[0])
            chains, info = jax.vmap(lambda key, c, x: kernel(key, c, logdensity(x), preconditioner))(
                keys, chains, images)
            return chains, (info.acceptance_rate, info.is_divergent)

        chains, (acceptance, divergent) = jax.lax.scan(body, chains, jnp.arange(self.num_mcmc_steps))
        return chains.position, acceptance, divergent

    def _sample_and_adapt(self, rng_key, model, params, images, z0, kernel_state):
        """K kernel steps that also tune phi1; returns final positions, the new kernel state and diagnostics."""
        dim = z0.shape[-1]
        if self.tuning == "fixed":
            positions, acceptance, divergent = self._sample(rng_key, model, params, images, z0, kernel_state)
            return positions, kernel_state, {"acceptance_rate": jnp.mean(acceptance),
                                             "divergences": jnp.sum(divergent)}
        tuner = self._tuner()
        if self.tuning == "dual_averaging" and self.restart_dual_averaging:
            kernel_state = tuner.init(1.0)
        context, axes = (params, images), (None, 0)
        logdensity = functools.partial(_log_joint, model=model)
        chains = tuner.init_chains(z0, logdensity, context, context_axes=axes)

        def body(carry, k):
            chains, state = carry
            chains, state, info = tuner.update(jax.random.fold_in(rng_key, k), state, chains, logdensity, context,
                                               context_axes=axes)
            return (chains, state), info

        (chains, kernel_state), infos = jax.lax.scan(body, (chains, kernel_state), jnp.arange(self.num_mcmc_steps))
        preconditioner = self._frozen_preconditioner(kernel_state, dim)
        diagnostics = {"acceptance_rate": jnp.mean(infos.acceptance_rate),
                       "divergences": jnp.sum(infos.is_divergent),
                       "step_size": preconditioner.step_size,
                       "log_abs_det": preconditioner.log_abs_det()}
        if self.tuning == "speed_measure":
            diagnostics["beta"] = kernel_state.beta
            diagnostics["speed_measure"] = jnp.mean(infos.objective)
            diagnostics["nonfinite_kernel_gradients"] = jnp.sum(~infos.gradient_is_finite)
            if kernel_state.step_size_factor is not None:
                diagnostics["step_size_factor"] = jnp.exp(kernel_state.step_size_factor.log_step_size_avg)
        return chains.position, kernel_state, diagnostics

    # ------------------------------------------------------------------------------------- the method
    def init(self, rng_key, model, params):
        del rng_key
        encoder_opt = make_optimizer(self.encoder_learning_rate or self.learning_rate)
        theta_opt = make_optimizer(self.learning_rate)
        return {
            "encoder_opt": encoder_opt.init(params["encoder"]),
            "theta_opt": theta_opt.init({k: params[k] for k in _THETA}),
            "kernel": self._init_kernel_state(model.latent_dim),
        }

    def step(self, rng_key, model, params, state, images):
        k_eps, k_chain = jax.random.split(rng_key)

        # (1) encoder on the ELBO, with z0 = mu + sigma * eps reparameterised.
        def negative_elbo(encoder_params):
            p = {**params, "encoder": encoder_params}
            z0, log_q = model.sample_q0(k_eps, p, images)
            elbo = model.log_joint_batch(p, images, z0) - log_q
            return -jnp.mean(elbo), z0

        (negative_value, z0), encoder_grads = jax.value_and_grad(negative_elbo, has_aux=True)(params["encoder"])
        elbo = -negative_value

        # (2) + (4) K kernel steps from stop_gradient(z0), tuning phi1 on the way.
        z_k, kernel_state, diagnostics = self._sample_and_adapt(
            k_chain, model, params, images, jax.lax.stop_gradient(z0), state["kernel"])
        z_k = jax.lax.stop_gradient(z_k)

        # (3) theta on log p(x, z_K).
        def negative_log_joint(theta):
            return -jnp.mean(model.log_joint_batch({**params, **theta}, images, z_k))

        theta = {k: params[k] for k in _THETA}
        theta_loss, theta_grads = jax.value_and_grad(negative_log_joint)(theta)

        encoder_params, encoder_opt = apply_gradients(
            make_optimizer(self.encoder_learning_rate or self.learning_rate), encoder_grads, state["encoder_opt"],
            params["encoder"])
        theta, theta_opt = apply_gradients(make_optimizer(self.learning_rate), theta_grads, state["theta_opt"], theta)
        new_params = {**params, **theta, "encoder": encoder_params}
        metrics = {"loss": -elbo, "elbo": elbo, "log_joint_at_chain_end": -theta_loss, **diagnostics,
                   "nonfinite_updates": nonfinite_count(encoder_opt) + nonfinite_count(theta_opt)}
        return new_params, {"encoder_opt": encoder_opt, "theta_opt": theta_opt, "kernel": kernel_state}, metrics

    def proposal(self, rng_key, model, params, state, images):
        """``N(zbar_K(x), Sigma0(x))`` per image: chains from q0 with the kernel frozen (tau is applied later)."""
        loc, scale = model.encode(params, images)
        n, dim = loc.shape
        chains = self.num_proposal_chains
        k_eps, k_chain = jax.random.split(rng_key)
        z0 = (loc[:, None] + scale[:, None] * jax.random.normal(k_eps, (n, chains, dim))).reshape(n * chains, dim)
        repeated = jnp.repeat(images, chains, axis=0)
        preconditioner = self._frozen_preconditioner(state["kernel"], dim)
        positions, _, _ = self._sample(k_chain, model, params, repeated, z0, preconditioner)
        return positions.reshape(n, chains, dim).mean(axis=1), scale

    def kernel_parameters(self, model, state) -> kernels.Preconditioner:
        """The learnt (or fixed) kernel parameters phi1 as a :class:`mcmcvae.kernels.Preconditioner`."""
        return self._frozen_preconditioner(state["kernel"], model.latent_dim)

    def config(self):
        return {"name": self.name, **dataclasses.asdict(self)}
