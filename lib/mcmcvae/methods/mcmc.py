r"""MCMC-refined VAE training (Hirt, Kreouzis and Dellaportas 2024, Algorithm 1).

One training step on a batch ``x_1..x_n``:

1. ``z0 = mu(x) + sigma(x) * eps`` from the encoder; the encoder (phi0) takes an Adam step on the ELBO (eq. 2).
2. ``K`` kernel steps from ``stop_gradient(z0)`` targeting ``p(z | x)`` for every image at once; the chains share
   the kernel parameters phi1 = (h, C).
3. The decoder and any learnable prior or likelihood scale (theta) take an Adam step on
   ``(1/n) sum_i log p(x_i, stop_gradient(z_K,i))`` (section 4.6).
4. The kernel parameters are tuned while the chains run, by the method's *tuner*
   (:mod:`mcmcvae.adaptation`; any object with the tuner protocol's ``init / update / final``):

   - :func:`mcmcvae.adaptation.speed_measure` (``gradmala``, ``gradhmc``): after every kernel step, one optimiser
     step on the entropy speed measure ``E[min(0, log alpha)] + beta H`` over this batch's (x, z) pairs, beta
     steered towards the target acceptance rate; wrapped in
     :func:`mcmcvae.adaptation.with_dual_averaged_step_size` (a variant, not the paper's method) the chains move
     with ``s h`` instead, ``s`` dual-averaged towards the target, while ``(h, C)`` learn as before;
   - :func:`mcmcvae.adaptation.dual_averaging` (``dsmala``, ``dshmc``): BlackJAX's dual averaging of h towards the
     target acceptance rate, C = I, its state carried across batches (or restarted every batch with
     ``restart_tuner``, as the paper's code did for dual averaging);
   - :func:`mcmcvae.adaptation.fixed` (``mala``, ``hmc``): h fixed, C = I.

   The tuner's state is carried across batches in the method state; the K steps run through
   :func:`mcmcvae.kernels.run_chains`.

Encoder, decoder and kernel have separate optimisers and learning rates. Divergent or non-finite proposals are
rejected by the kernels and counted (``divergences``); non-finite gradients skip the update and are counted.

For evaluation, :meth:`MCMC.proposal` runs ``num_proposal_chains`` chains per image for K steps with the kernel
frozen at the tuner's ``final`` (the averaged h for dual averaging) and centres the importance proposal on the mean of their final states,
with the encoder's scale (paper section 6.2); nothing adapts during evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from mcmcvae import kernels
from mcmcvae.methods.base import apply_gradients, make_optimizer, nonfinite_count
from mcmcvae.types import as_batch

__all__ = ["MCMC"]

_THETA = ("decoder", "prior", "likelihood")


def _log_joint(z, context, model):
    params, x = context
    return model.log_joint(params, x, z)


@jax.custom_jvp
def _known_log_density(position, logdensity, logdensity_grad):
    """``log pi(position)`` already computed: returns ``logdensity``, and ``logdensity_grad`` as its gradient."""
    del position, logdensity_grad
    return logdensity


@_known_log_density.defjvp
def _known_log_density_jvp(primals, tangents):
    _, logdensity, logdensity_grad = primals
    position_dot, logdensity_dot, _ = tangents
    return logdensity, jnp.vdot(logdensity_grad, position_dot) + logdensity_dot


def _known_at_start(z, context):
    return _known_log_density(z, *context)


@dataclasses.dataclass(frozen=True, eq=False)
class MCMC:
    """Algorithm 1 with any tuner: the ``mala``, ``hmc``, ``dsmala``, ``dshmc``, ``gradmala`` and ``gradhmc``
    methods, and any other kernel or tuner.

    Parameters
    ----------
    tuner
        A tuner (:mod:`mcmcvae.adaptation`) built for the kernel module to run, e.g.
        ``mv.adaptation.speed_measure(mv.kernels.hmc, num_integration_steps=2)``; its ``algorithm`` is the kernel.
        Built without a log density: the method passes each batch's ``log p(x, z)``.
    num_mcmc_steps
        K, kernel steps per batch.
    learning_rate
        Adam's learning rate for theta (decoder, prior, likelihood scale).
    encoder_learning_rate
        Adam's learning rate for phi0; None: ``learning_rate``.
    restart_tuner
        Start the tuner afresh (``tuner.init``) for every batch instead of carrying its state (the paper code's
        behaviour for dual averaging).
    num_proposal_chains
        Chains per image whose final states' mean centres the evaluation proposal.
    name
        The method's name in logs; :func:`mcmcvae.methods.build` sets the registry's.
    options
        What :func:`mcmcvae.methods.build` was given (``(key, value)`` pairs, defaults included); ``config()``
        writes them so that a run reloads to the same method. Empty for a method built by hand.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> tuner = mv.adaptation.speed_measure(mv.kernels.mala, preconditioner="lower_triangular")
    >>> method = mv.methods.MCMC(tuner, num_mcmc_steps=5)
    >>> method.kernel is mv.kernels.mala
    True
    """

    tuner: Any
    num_mcmc_steps: int = 10
    learning_rate: float = 1e-3
    encoder_learning_rate: float | None = None
    restart_tuner: bool = False
    num_proposal_chains: int = 16
    name: str = "mcmc"
    options: tuple = ()

    def __post_init__(self):
        missing = [f for f in ("init", "update", "final", "algorithm", "kernel") if not hasattr(self.tuner, f)]
        if missing:
            raise TypeError(f"tuner must be a tuner of mcmcvae.adaptation (init, update, final, algorithm, kernel); "
                            f"{type(self.tuner).__name__} lacks {', '.join(missing)}")
        if self.num_mcmc_steps < 1:
            raise ValueError(f"num_mcmc_steps must be positive, got {self.num_mcmc_steps}")
        if self.num_proposal_chains < 1:
            raise ValueError(f"num_proposal_chains must be positive, got {self.num_proposal_chains}")

    @property
    def kernel(self):
        """The kernel module the tuner runs."""
        return self.tuner.algorithm

    def _identity(self):
        # A registry-built method is what its name and options say (its tuner's functions are rebuilt afresh);
        # a hand-built one is its tuner object.
        tuner = self.options if self.options else id(self.tuner)
        return (self.name, tuner, self.num_mcmc_steps, self.learning_rate, self.encoder_learning_rate,
                self.restart_tuner, self.num_proposal_chains)

    def __eq__(self, other):
        return isinstance(other, MCMC) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    # ------------------------------------------------------------------------------------- kernel plumbing
    def _sample(self, rng_key, model, params, images, z0, preconditioner):
        """K kernel steps with fixed parameters for every chain; returns final positions and per-step infos."""
        context, axes = (params, images), (None, 0)
        logdensity = functools.partial(_log_joint, model=model)
        chains = kernels.init_chains(self.kernel, z0, logdensity, context=context, context_axes=axes)
        run = kernels.run_chains(rng_key, chains, logdensity, self.num_mcmc_steps, kernel=self.tuner.kernel,
                                 preconditioner=preconditioner, context=context, context_axes=axes)
        return run.states.position, run.info

    def _sample_and_adapt(self, rng_key, model, params, images, z0, tuner_state, start=None):
        """K kernel steps that also tune phi1; returns final positions, the new tuner state and diagnostics.

        ``start``, when given, is ``(log p(x_i, z0_i), grad_z log p(x_i, z0_i))`` for every chain, already
        computed: the kernel's ``init`` then reads them instead of evaluating the decoder at ``z0`` again (it must
        evaluate the log density only at the chain's position, as every kernel module's ``init`` does).
        """
        tuner = self.tuner
        if self.restart_tuner:
            tuner_state = tuner.init(z0.shape[-1])
        context, axes = (params, images), (None, 0)
        logdensity = functools.partial(_log_joint, model=model)
        if start is None:
            chains = kernels.init_chains(self.kernel, z0, logdensity, context=context, context_axes=axes)
        else:
            chains = kernels.init_chains(self.kernel, z0, _known_at_start, context=start, context_axes=0)
        run = kernels.run_chains(rng_key, chains, logdensity, self.num_mcmc_steps, tuner=tuner,
                                 tuner_state=tuner_state, context=context, context_axes=axes)
        diagnostics = {"acceptance_rate": jnp.mean(run.info.acceptance_rate)}
        if hasattr(run.info, "is_divergent"):
            diagnostics["divergences"] = jnp.sum(run.info.is_divergent)
        diagnostics.update(tuner.diagnostics(run.tuner_state, run.info))
        return run.states.position, run.tuner_state, diagnostics

    # ------------------------------------------------------------------------------------- the method
    def init(self, rng_key, model, params):
        del rng_key
        encoder_opt = make_optimizer(self.encoder_learning_rate or self.learning_rate)
        theta_opt = make_optimizer(self.learning_rate)
        return {
            "encoder_opt": encoder_opt.init(params["encoder"]),
            "theta_opt": theta_opt.init({k: params[k] for k in _THETA}),
            "kernel": self.tuner.init(model.latent_dim),
        }
    def step(self, rng_key, model, params, state, batch):
        images = as_batch(batch).images
        k_eps, k_chain = jax.random.split(rng_key)

        # (1) encoder on the ELBO, with z0 = mu + sigma * eps reparameterised. The reverse pass through
        # log p(x, z0) also gives grad_z log p(x_i, z0_i), which starts the chains below: by the chain rule,
        # grad_phi0 ELBO = (1/n) sum_i [grad_z log p(x_i, z0_i) . dz0_i/dphi0 + d/dphi0 log p(x_i, z) - dlog q_i/dphi0]
        # (the middle term is zero unless the prior depends on the encoder, as the VampPrior does).
        n = images.shape[0]
        (z0, log_q), q0_vjp = jax.vjp(lambda e: model.sample_q0(k_eps, {**params, "encoder": e}, images),
                                      params["encoder"])
        log_joint_z0, log_joint_vjp = jax.vjp(
            lambda e, z: model.log_joint_batch({**params, "encoder": e}, images, z), params["encoder"], z0)
        prior_encoder_grads, log_joint_grad_z0 = log_joint_vjp(jnp.ones_like(log_joint_z0))
        (sample_encoder_grads,) = q0_vjp((-log_joint_grad_z0 / n, jnp.full_like(log_q, 1 / n)))
        encoder_grads = jax.tree.map(lambda a, b: a - b / n, sample_encoder_grads, prior_encoder_grads)
        elbo = jnp.mean(log_joint_z0 - log_q)

        # (2) + (4) K kernel steps from stop_gradient(z0), tuning phi1 on the way.
        start = jax.lax.stop_gradient((log_joint_z0, log_joint_grad_z0))
        z_k, kernel_state, diagnostics = self._sample_and_adapt(
            k_chain, model, params, images, jax.lax.stop_gradient(z0), state["kernel"], start)
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
        positions, _ = self._sample(k_chain, model, params, repeated, z0, self.tuner.final(state["kernel"]))
        return positions.reshape(n, chains, dim).mean(axis=1), scale

    def kernel_parameters(self, model, state) -> kernels.Preconditioner:
        """The learnt (or fixed) kernel parameters phi1 as a :class:`mcmcvae.kernels.Preconditioner`."""
        del model
        return self.tuner.final(state["kernel"])

    def config(self):
        """``{"name": ..., **options}``: what :func:`mcmcvae.methods.build` rebuilds this method from. A method
        built by hand (no registry options) records its settings for reading only."""
        if self.options:
            return {"name": self.name, **dict(self.options)}
        kernel = getattr(self.kernel, "__name__", repr(self.kernel))
        return {"name": self.name, "tuner": f"{type(self.tuner).__name__}({kernel})",
                "num_mcmc_steps": self.num_mcmc_steps, "learning_rate": self.learning_rate,
                "encoder_learning_rate": self.encoder_learning_rate,
                "restart_tuner": self.restart_tuner, "num_proposal_chains": self.num_proposal_chains}
