"""MALA and HMC kernels whose step size ``h`` and matrix ``C`` are learnable parameters.

- :class:`Preconditioner`: ``(log_step_size, scale)`` with a diagonal or lower-triangular ``C``;
- :mod:`mala`: ``z' = z - (h^2/2) C C^T grad U(z) + h C v``, Metropolis-Hastings corrected;
- :mod:`hmc`: ``L`` leapfrog steps with inverse mass matrix ``C C^T`` and initial momentum ``C^{-T} v``;
- :mod:`integrators`: the leapfrog integrator with a general inverse-mass-matrix product;
- :func:`run_chains` (with :func:`init_chains`, :func:`step_chains`): the one loop that runs ``K`` kernel steps
  over a batch of chains, with per-chain and shared context, with or without a tuner.

Each sampler module exports ``State``, ``Info``, ``init`` and ``build_kernel``; a kernel is
``kernel(rng_key, state, logdensity_fn, preconditioner) -> (State, Info)``, pure and never jitted itself, and
``Info.log_acceptance_ratio`` is differentiable in the preconditioner for the kernel's fixed noise. For the
tuners (:mod:`mcmcvae.adaptation`) a module also carries ``DEFAULT_TARGET_ACCEPTANCE_RATE`` and, for the speed
measure, ``proposal_entropy(preconditioner, **kernel_options)`` (HMC also ``entropy_curvature`` and
``Info.midpoint`` for its ``log det(I - A)`` term): a new kernel is one new module with these names.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> import mcmcvae as mv
>>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
>>> kernel = mv.kernels.mala.build_kernel()
>>> precond = mv.kernels.Preconditioner.diagonal(2, step_size=1.0)
>>> states = jax.vmap(mv.kernels.mala.init, in_axes=(0, None))(jnp.zeros((8, 2)), logdensity_fn)
>>> keys = jax.random.split(jax.random.key(0), 8)
>>> states, infos = jax.vmap(kernel, in_axes=(0, 0, None, None))(keys, states, logdensity_fn, precond)
>>> infos.acceptance_rate.shape
(8,)
"""

from mcmcvae.kernels import chains, hmc, integrators, mala, preconditioner
from mcmcvae.kernels._metropolis import REJECTED_LOG_ACCEPTANCE_RATIO
from mcmcvae.kernels.chains import ChainRun, init_chains, run_chains, step_chains, with_context
from mcmcvae.kernels.preconditioner import Preconditioner

__all__ = ["Preconditioner", "mala", "hmc", "integrators", "preconditioner", "REJECTED_LOG_ACCEPTANCE_RATIO",
           "ChainRun", "chains", "init_chains", "run_chains", "step_chains", "with_context"]
