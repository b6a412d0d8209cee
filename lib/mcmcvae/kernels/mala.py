r"""Preconditioned Metropolis-adjusted Langevin algorithm (MALA) with a learnable step size and matrix.

With ``U = -log pi``, step size ``h`` and matrix ``C`` (a :class:`~mcmcvae.kernels.Preconditioner`), the
proposal (Hirt, Kreouzis and Dellaportas, Stat. Comput. 2024, Section 3.1) is

    z' = m(z) + h C v,    m(z) = z - (h^2 / 2) C C^T grad U(z),    v ~ N(0, I_d),

that is ``q(z' | z) = N(z'; m(z), h^2 C C^T)``, and it is accepted with probability ``min(1, alpha)``,

    log alpha = U(z) - U(z') + log q(z | z') - log q(z' | z),
    log q(z' | z) = -|C^{-1} (z' - m(z)) / h|^2 / 2 - log |det C| - d log h + const.

The normalising terms cancel. The standardised residuals are available in closed form: forwards
``C^{-1} (z' - m(z)) / h = v`` by construction, and backwards

    C^{-1} (z - m(z')) / h = -v + (h / 2) C^T (grad U(z) + grad U(z')),

so the kernel evaluates ``log alpha`` without a solve and without the cancellation in ``z - z'`` that loses
float32 precision for small ``h``. ``log alpha`` is differentiable in ``(log h, C)`` for fixed ``v``: this is
what the speed-measure adaptation differentiates.

The module follows BlackJAX's layout (``State``, ``Info``, ``init``, ``build_kernel``); with ``C = I`` the
kernel is ``blackjax.mala`` with ``step_size = h^2 / 2``, drawing the same noise from the same key.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcmcvae.kernels import _metropolis
from mcmcvae.kernels.preconditioner import Preconditioner
from mcmcvae.types import Array, LogDensityFn, PRNGKey

__all__ = ["State", "Info", "init", "build_kernel", "DEFAULT_TARGET_ACCEPTANCE_RATE", "proposal_entropy", "as_top_level_api"]


# Both kernels carry the same minimal state and start it the same way.
State = _metropolis.State
init = _metropolis.init


class Info(NamedTuple):
    """Diagnostics of one MALA transition, and what the speed measure needs.

    Attributes
    ----------
    acceptance_rate
        ``min(1, alpha) = min(1, exp(log_acceptance_ratio))``.
    log_acceptance_ratio
        ``log alpha``, not clipped; differentiable in the preconditioner for the fixed noise ``v``. For a
        proposal with a non-finite value it is a finite constant (``-1e4``) with zero gradient.
    energy_error
        ``-log_acceptance_ratio``.
    is_accepted
        Whether the chain moved to the proposal.
    is_divergent
        Whether the proposal (position, log density, gradient) or ``log alpha`` was not finite; such a
        proposal is always rejected.
    noise
        ``v``, shape ``(d,)``.
    proposal
        The proposed ``State``; the current state when the proposal was not finite.
    """

    acceptance_rate: Array
    log_acceptance_ratio: Array
    energy_error: Array
    is_accepted: Array
    is_divergent: Array
    noise: Array
    proposal: State


# -- what the tuners ask of a kernel module (mcmcvae.adaptation) ------------------------------------------------

#: The acceptance rate the tuners steer MALA towards unless told otherwise (near the optimal 0.574 of Roberts and
#: Rosenthal 1998 for MALA in high dimension; the paper's choice).
DEFAULT_TARGET_ACCEPTANCE_RATE = 0.55


def proposal_entropy(preconditioner: Preconditioner) -> Array:
    r"""Entropy of the proposal ``N(m(z), h^2 C C^T)`` up to a constant: ``d log h + log|det C|``.

    The speed measure's ``H`` (Hirt, Kreouzis and Dellaportas 2024, section 4.4); differentiable in the
    preconditioner and the same for every ``z``.

    Examples
    --------
    >>> from mcmcvae.kernels import Preconditioner, mala
    >>> float(mala.proposal_entropy(Preconditioner.diagonal(2, step_size=1.0, scale=2.0)))  # 2 log 2
    1.3862943649291992
    """
    return preconditioner.dim * preconditioner.log_step_size + preconditioner.log_abs_det()


def build_kernel(
    *, stop_gradient_proposal_grad: bool = False
) -> Callable[[PRNGKey, State, LogDensityFn, Preconditioner], tuple[State, Info]]:
    r"""Build the preconditioned MALA transition kernel.

    Parameters
    ----------
    stop_gradient_proposal_grad
        If True, ``grad U(z')`` is wrapped in ``jax.lax.stop_gradient``, so the gradient of ``log alpha``
        with respect to ``h`` and ``C`` ignores how the gradient at the proposal moves with them (the
        "biased" gradient of the paper's code, which avoids second derivatives of ``U``). Values are the same
        either way.

    Returns
    -------
    kernel
        ``kernel(rng_key, state, logdensity_fn, preconditioner) -> (State, Info)``, pure and not jitted. The
        key is split into one key for ``v`` and one for the uniform of the accept step, in that order.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmcvae.kernels import Preconditioner, mala
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> kernel = mala.build_kernel()
    >>> state = mala.init(jnp.zeros(3), logdensity_fn)
    >>> precond = Preconditioner.diagonal(3, step_size=0.8)
    >>> state, info = jax.jit(kernel, static_argnums=2)(jax.random.key(0), state, logdensity_fn, precond)
    >>> info.acceptance_rate.shape
    ()

    Gradient of ``min(0, log alpha)`` with respect to the preconditioner, for fixed noise:

    >>> objective = lambda p: jnp.minimum(kernel(jax.random.key(1), state, logdensity_fn, p)[1]
    ...                                   .log_acceptance_ratio, 0.0)
    >>> grads = jax.grad(objective)(precond)
    """

    def kernel(
        rng_key: PRNGKey, state: State, logdensity_fn: LogDensityFn, preconditioner: Preconditioner
    ) -> tuple[State, Info]:
        position, logdensity, logdensity_grad = state
        _metropolis.check_compatible(position, preconditioner, "mala kernel")
        key_noise, key_accept = jax.random.split(rng_key)
        noise = jax.random.normal(key_noise, position.shape, position.dtype)
        step_size = preconditioner.step_size

        # z' = z + h (C v + (h / 2) C C^T grad log pi(z)); h stays a separate factor so that the backward pass
        # never multiplies by h^2.
        drift = 0.5 * step_size * preconditioner.covariance_apply(logdensity_grad)
        proposed = position + step_size * (preconditioner.apply(noise) + drift)
        proposed_is_finite = jnp.all(jnp.isfinite(proposed))
        # The log density is only ever evaluated at a finite point (double `where`): gradients through a
        # rejected non-finite proposal are then zero instead of NaN.
        evaluated_at = jnp.where(proposed_is_finite, proposed, position)
        new_logdensity, new_logdensity_grad = jax.value_and_grad(logdensity_fn)(evaluated_at)
        if stop_gradient_proposal_grad:
            new_logdensity_grad = jax.lax.stop_gradient(new_logdensity_grad)
        is_finite = (
            proposed_is_finite
            & jnp.isfinite(new_logdensity)
            & jnp.all(jnp.isfinite(new_logdensity_grad))
        )
        proposal = _metropolis.select(
            is_finite, State(evaluated_at, new_logdensity, new_logdensity_grad), state
        )

        # C^{-1} (z - m(z')) / h = -v - (h / 2) C^T (grad log pi(z) + grad log pi(z')).
        reverse_noise = -noise - 0.5 * step_size * preconditioner.apply_transpose(
            logdensity_grad + proposal.logdensity_grad
        )
        log_acceptance_ratio = (
            proposal.logdensity - logdensity + 0.5 * (jnp.sum(noise**2) - jnp.sum(reverse_noise**2))
        )

        decision = _metropolis.accept_reject(key_accept, log_acceptance_ratio, is_finite, state, proposal)
        info = Info(
            acceptance_rate=decision.acceptance_rate,
            log_acceptance_ratio=decision.log_acceptance_ratio,
            energy_error=-decision.log_acceptance_ratio,
            is_accepted=decision.is_accepted,
            is_divergent=~decision.is_finite,
            noise=noise,
            proposal=proposal,
        )
        return decision.state, info

    return kernel


def as_top_level_api(
    logdensity_fn: LogDensityFn,
    preconditioner: Preconditioner,
    *,
    stop_gradient_proposal_grad: bool = False,
):
    r"""The MALA kernel with its target and ``(h, C)`` bound, as a BlackJAX ``SamplingAlgorithm``.

    BlackJAX's generic loops (``blackjax.util.run_inference_algorithm``), its diagnostics and any code written for
    ``blackjax.mala(...)`` then run this kernel unchanged: ``init(position, rng_key=None)`` is :func:`init` and
    ``step(rng_key, state)`` is ``build_kernel(...)(rng_key, state, logdensity_fn, preconditioner)``, the same
    draw for the same key. A tuned ``(h, C)`` (``results.parameters`` of a tuner's ``.run``) is held fixed.

    Parameters
    ----------
    logdensity_fn
        ``log pi(position)``, up to a constant.
    preconditioner
        The :class:`~mcmcvae.kernels.Preconditioner` ``(h, C)``.
    stop_gradient_proposal_grad
        Passed to :func:`build_kernel` (values are the same either way).

    Returns
    -------
    blackjax.base.SamplingAlgorithm
        ``(init, step)``, pure and not jitted.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import blackjax
    >>> from mcmcvae.kernels import Preconditioner, mala
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2)
    >>> algorithm = mala.as_top_level_api(logdensity_fn, Preconditioner.diagonal(2, step_size=1.0))
    >>> _, history = blackjax.util.run_inference_algorithm(
    ...     jax.random.key(0), algorithm, 100, initial_position=jnp.zeros(2))
    >>> history[0].position.shape
    (100, 2)
    """
    kernel = build_kernel(stop_gradient_proposal_grad=stop_gradient_proposal_grad)
    return _metropolis.sampling_algorithm("mala", init, kernel, logdensity_fn, preconditioner)
