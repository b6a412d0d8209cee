r"""Hamiltonian Monte Carlo with a learnable step size and matrix (inverse mass matrix ``C C^T``).

With ``U = -log pi``, step size ``h``, matrix ``C`` (a :class:`~mcmcvae.kernels.Preconditioner`) and
``L = num_integration_steps`` (Hirt, Kreouzis and Dellaportas, Stat. Comput. 2024, Section 3.2):

    v ~ N(0, I_d),    p_0 = C^{-T} v                  (so p_0 ~ N(0, M) with M^{-1} = C C^T),
    (z_L, p_L) = L leapfrog steps of size h from (z, p_0) for H(z, p) = U(z) + p^T C C^T p / 2,
    log alpha = H(z, p_0) - H(z_L, p_L),

and ``z_L`` is accepted with probability ``min(1, alpha)``. The kinetic energy is evaluated as
``|C^T p|^2 / 2``. With ``L = 1`` the proposal is the MALA proposal ``z - (h^2/2) C C^T grad U(z) + h C v``
and ``log alpha`` its MALA acceptance ratio, since ``C^T p_1 = v - (h/2) C^T (grad U(z) + grad U(z_1))``.

``log alpha`` is differentiable in ``(log h, C)`` for fixed ``v``. ``Info.midpoint`` is the position after
``floor(L/2)`` steps (for ``L = 1`` the mean of ``z`` and ``z_1``), the point at which the paper's HMC entropy
term is evaluated.

The module follows BlackJAX's layout (``State``, ``Info``, ``init``, ``build_kernel``); with ``C = I`` the
kernel is ``blackjax.hmc`` with an identity inverse mass matrix, drawing the same momentum from the same key.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcmcvae.kernels import _metropolis, integrators
from mcmcvae.kernels.preconditioner import Preconditioner
from mcmcvae.types import Array, LogDensityFn, PRNGKey

__all__ = ["State", "Info", "init", "build_kernel", "DEFAULT_TARGET_ACCEPTANCE_RATE", "proposal_entropy",
           "entropy_curvature", "as_top_level_api"]


# Both kernels carry the same minimal state and start it the same way.
State = _metropolis.State
init = _metropolis.init


class Info(NamedTuple):
    """Diagnostics of one HMC transition, and what the speed measure needs.

    Attributes
    ----------
    acceptance_rate
        ``min(1, alpha) = min(1, exp(log_acceptance_ratio))``.
    log_acceptance_ratio
        ``log alpha = -(H(z_L, p_L) - H(z, p_0))``, not clipped; differentiable in the preconditioner for the
        fixed noise ``v``. For a trajectory with a non-finite value it is a finite constant (``-1e4``) with
        zero gradient.
    energy_error
        ``H(z_L, p_L) - H(z, p_0) = -log_acceptance_ratio``.
    is_accepted
        Whether the chain moved to the proposal.
    is_divergent
        ``|energy_error| > divergence_threshold``, or a non-finite trajectory or energy (always rejected).
    noise
        ``v``, shape ``(d,)``; the initial momentum is ``C^{-T} v``.
    proposal
        The proposed ``State`` (the end of the trajectory; its last finite point when it left the finite
        numbers).
    midpoint
        The position after ``floor(L/2)`` leapfrog steps; for ``L = 1``, ``(z + z_1) / 2``.
    """

    acceptance_rate: Array
    log_acceptance_ratio: Array
    energy_error: Array
    is_accepted: Array
    is_divergent: Array
    noise: Array
    proposal: State
    midpoint: Array


# -- what the tuners ask of a kernel module (mcmcvae.adaptation) ------------------------------------------------

#: The acceptance rate the tuners steer HMC towards unless told otherwise (near the optimal 0.651 of Beskos et al.
#: 2013 for HMC in high dimension; the paper's choice).
DEFAULT_TARGET_ACCEPTANCE_RATE = 0.65


def proposal_entropy(preconditioner: Preconditioner, num_integration_steps: int) -> Array:
    r"""The closed-form part of the HMC proposal's entropy, ``d log(hL) + log|det C|``.

    To first order in ``h^2`` the end point ``z_L`` depends on the noise ``v`` through the Jacobian
    ``hL C (I - A)`` with ``A = c h^2 C^T Hess U(q_mid) C`` and ``c`` = :func:`entropy_curvature`
    (Hirt, Kreouzis and Dellaportas 2024, section 4.5), so the entropy is this plus ``log|det(I - A)|``, which the
    speed measure estimates at ``Info.midpoint`` (:mod:`mcmcvae.adaptation.logdet`). With ``L = 1``, ``c = 0`` and
    this is MALA's entropy.

    Examples
    --------
    >>> from mcmcvae.kernels import Preconditioner, hmc
    >>> float(hmc.proposal_entropy(Preconditioner.diagonal(2, step_size=0.5), 2))  # 2 log(0.5 * 2)
    0.0
    """
    log_length = jnp.log(jnp.asarray(float(num_integration_steps), preconditioner.log_step_size.dtype))
    return preconditioner.dim * (preconditioner.log_step_size + log_length) + preconditioner.log_abs_det()


def entropy_curvature(num_integration_steps: int) -> float:
    """``c = (L^2 - 1) / 6``, the factor of ``A = c h^2 C^T Hess U(q_mid) C`` in the entropy's ``log|det(I - A)|``
    term (zero for ``L = 1``: no such term)."""
    return (int(num_integration_steps) ** 2 - 1) / 6.0


def build_kernel(
    num_integration_steps: int,
    *,
    stop_gradient_proposal_grad: bool = False,
    divergence_threshold: float = 1000.0,
) -> Callable[[PRNGKey, State, LogDensityFn, Preconditioner], tuple[State, Info]]:
    r"""Build the preconditioned HMC transition kernel.

    Parameters
    ----------
    num_integration_steps
        ``L``, the number of leapfrog steps (a Python int >= 1; static).
    stop_gradient_proposal_grad
        If True, every ``grad U`` evaluated along the trajectory (all but the first, cached in the state) is
        wrapped in ``jax.lax.stop_gradient``, so the gradient of ``log alpha`` with respect to ``h`` and ``C``
        ignores how those gradients move with them (the paper code's "biased" variant). Values are the same
        either way.
    divergence_threshold
        A transition with ``|energy_error|`` above this is flagged ``is_divergent`` (it is still accepted or
        rejected by the usual rule when finite).

    Returns
    -------
    kernel
        ``kernel(rng_key, state, logdensity_fn, preconditioner) -> (State, Info)``, pure and not jitted. The
        key is split into one key for ``v`` and one for the uniform of the accept step, in that order.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmcvae.kernels import Preconditioner, hmc
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> kernel = hmc.build_kernel(num_integration_steps=5)
    >>> state = hmc.init(jnp.zeros(3), logdensity_fn)
    >>> precond = Preconditioner.lower_triangular(3, step_size=0.3)
    >>> state, info = jax.jit(kernel, static_argnums=2)(jax.random.key(0), state, logdensity_fn, precond)
    >>> info.midpoint.shape
    (3,)
    """
    num_integration_steps = int(num_integration_steps)
    if num_integration_steps < 1:
        raise ValueError(f"hmc.build_kernel: num_integration_steps must be >= 1, got {num_integration_steps}")

    def kernel(
        rng_key: PRNGKey, state: State, logdensity_fn: LogDensityFn, preconditioner: Preconditioner
    ) -> tuple[State, Info]:
        position, logdensity, logdensity_grad = state
        _metropolis.check_compatible(position, preconditioner, "hmc kernel")
        key_momentum, key_accept = jax.random.split(rng_key)
        noise = jax.random.normal(key_momentum, position.shape, position.dtype)
        momentum = preconditioner.solve_transpose(noise)

        def kinetic_energy(p):
            return 0.5 * jnp.sum(preconditioner.apply_transpose(p) ** 2)

        start = integrators.IntegratorState(position, momentum, logdensity, logdensity_grad)
        trajectory = integrators.leapfrog(
            logdensity_fn,
            preconditioner.covariance_apply,
            preconditioner.step_size,
            num_integration_steps,
            start,
            stop_gradient=stop_gradient_proposal_grad,
        )
        end = trajectory.end
        energy_error = (kinetic_energy(end.momentum) - end.logdensity) - (kinetic_energy(momentum) - logdensity)

        proposal = State(end.position, end.logdensity, end.logdensity_grad)
        decision = _metropolis.accept_reject(key_accept, -energy_error, trajectory.is_finite, state, proposal)
        is_divergent = ~decision.is_finite | (jnp.abs(decision.log_acceptance_ratio) > divergence_threshold)
        info = Info(
            acceptance_rate=decision.acceptance_rate,
            log_acceptance_ratio=decision.log_acceptance_ratio,
            energy_error=-decision.log_acceptance_ratio,
            is_accepted=decision.is_accepted,
            is_divergent=is_divergent,
            noise=noise,
            proposal=proposal,
            midpoint=trajectory.midpoint,
        )
        return decision.state, info

    return kernel


def as_top_level_api(
    logdensity_fn: LogDensityFn,
    preconditioner: Preconditioner,
    num_integration_steps: int,
    *,
    divergence_threshold: float = 1000.0,
    stop_gradient_proposal_grad: bool = False,
):
    r"""The HMC kernel with its target, ``(h, C)`` and ``L`` bound, as a BlackJAX ``SamplingAlgorithm``.

    BlackJAX's generic loops (``blackjax.util.run_inference_algorithm``), its diagnostics and any code written for
    ``blackjax.hmc(...)`` then run this kernel unchanged: ``init(position, rng_key=None)`` is :func:`init` and
    ``step(rng_key, state)`` is ``build_kernel(num_integration_steps, ...)(rng_key, state, logdensity_fn,
    preconditioner)``, the same draw for the same key. The inverse mass matrix is ``C C^T``.

    Parameters
    ----------
    logdensity_fn
        ``log pi(position)``, up to a constant.
    preconditioner
        The :class:`~mcmcvae.kernels.Preconditioner` ``(h, C)``.
    num_integration_steps
        ``L``, leapfrog steps per transition (a Python int >= 1).
    divergence_threshold, stop_gradient_proposal_grad
        Passed to :func:`build_kernel`.

    Returns
    -------
    blackjax.base.SamplingAlgorithm
        ``(init, step)``, pure and not jitted.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import blackjax
    >>> from mcmcvae.kernels import Preconditioner, hmc
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> algorithm = hmc.as_top_level_api(logdensity_fn, Preconditioner.lower_triangular(2, step_size=0.5), 4)
    >>> _, (states, infos) = blackjax.util.run_inference_algorithm(
    ...     jax.random.key(0), algorithm, 100, initial_position=jnp.zeros(2))
    >>> infos.is_divergent.shape
    (100,)
    """
    kernel = build_kernel(
        num_integration_steps,
        divergence_threshold=divergence_threshold,
        stop_gradient_proposal_grad=stop_gradient_proposal_grad,
    )
    return _metropolis.sampling_algorithm("hmc", init, kernel, logdensity_fn, preconditioner)
