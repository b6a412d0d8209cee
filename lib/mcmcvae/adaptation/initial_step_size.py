r"""A step size to start adaptation from, found from the target: a doubling/halving search on the acceptance rate.

A fixed starting ``h`` ignores the target's scale: ``h = 0.1`` on a posterior whose standard deviations are near
0.02 accepts almost nothing, and an adaptation that starts there may never recover. Stan
(``stan::mcmc::base_hmc::init_stepsize``) and BlackJAX (``blackjax.adaptation.step_size.find_reasonable_step_size``)
start instead from a step size at which one transition's acceptance probability crosses a threshold, found by
doubling or halving ``h``. :func:`find_reasonable_step_size` does the same over many chains at once: with the
kernel's noise fixed by one key per chain (common random numbers, so the mean acceptance ``a(h)`` changes only
through ``h``) it evaluates

.. math::

    a(h) = \frac{1}{n} \sum_{i=1}^{n} \min\big(1, \alpha_i(h)\big)

from the chains' starting states with ``(h, C)``, and moves ``h`` by factors of 2 towards the target ``a*``: up
while ``a(h) >= a*``, down while ``a(h) < a*``, returning the largest ``h`` seen with ``a(h) >= a*`` next to one
with ``a(2h) < a*`` (or the end of the search's range, ``2^{+-max_num_steps}`` times the start). A proposal with a
non-finite position, log density, gradient or ratio is a rejection (``min(1, alpha) = 0``), so a target that is
``-inf`` on part of the space pulls ``h`` down, never up. Chains whose starting log density is not finite are left
out of the mean; if none is left the result is NaN.
"""

from __future__ import annotations

from types import ModuleType

import jax
import jax.numpy as jnp
from jax import lax

from mcmcvae.kernels import Preconditioner
from mcmcvae.types import Array, LogDensityFn, PRNGKey

__all__ = ["find_reasonable_step_size"]


def find_reasonable_step_size(
    rng_key: PRNGKey,
    algorithm: ModuleType,
    logdensity_fn: LogDensityFn,
    positions: Array,
    preconditioner: Preconditioner | None = None,
    *,
    target_acceptance_rate: float = 0.65,
    max_num_steps: int = 40,
    **kernel_options,
) -> Array:
    r"""The step size ``h`` at which one transition from ``positions`` accepts about ``target_acceptance_rate``.

    A doubling/halving search (Stan's and BlackJAX's ``find_reasonable_step_size``) on the mean acceptance
    probability over all chains, the kernel's noise held fixed between trials: from ``h0 = preconditioner.step_size``,
    ``h`` doubles while ``a(h) >= target`` or halves while ``a(h) < target``, until ``a`` crosses the target or
    ``max_num_steps`` factors of 2 have been tried. The result is the largest ``h`` tried with ``a(h) >= target``
    (the last ``h`` before the crossing when doubling, the crossing ``h`` when halving), or the last ``h`` tried
    if ``a`` never crossed. Non-finite proposals count as rejections. Pure and jittable (``lax.while_loop``);
    each trial costs one kernel step per chain.

    Parameters
    ----------
    rng_key
        A ``jax.random.key``; split into one key per chain, reused by every trial.
    algorithm
        A kernel module with ``init`` and ``build_kernel``: ``mv.kernels.mala`` or ``mv.kernels.hmc``.
    logdensity_fn
        ``log pi(position)``.
    positions
        ``(n_chains, d)``: where the chains start (the adaptation's starting positions). Their log densities should
        be finite; chains where it is not are ignored.
    preconditioner
        ``(h0, C)``: ``C`` is kept and ``h0`` starts the search. Default: ``C = I`` (diagonal) and ``h0 = 1``.
    target_acceptance_rate
        ``a*`` in (0, 1). Pass the adaptation's own target (0.55 for the tuners' MALA, 0.65 for HMC); the default
        0.65 is BlackJAX's.
    max_num_steps
        At most this many doublings or halvings (``h`` stays within ``2^{+-max_num_steps} h0``).
    **kernel_options
        Passed to ``algorithm.build_kernel``: ``num_integration_steps`` for HMC. An option the kernel does not
        take is a ``TypeError``.

    Returns
    -------
    Array
        ``h``, a scalar of the positions' dtype (NaN when no chain starts at a finite log density).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum((z / 0.02) ** 2)  # standard deviations 0.02
    >>> positions = 0.02 * jax.random.normal(jax.random.key(0), (64, 10))
    >>> h = mv.adaptation.find_reasonable_step_size(jax.random.key(1), mv.kernels.hmc, logdensity_fn, positions,
    ...                                             num_integration_steps=5)
    >>> bool(0.001 < h < 0.05)
    True
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 2:
        raise ValueError(f"find_reasonable_step_size: positions must have shape (n_chains, d), got {positions.shape}")
    if not 0.0 < float(target_acceptance_rate) < 1.0:
        raise ValueError(f"find_reasonable_step_size: target_acceptance_rate must lie in (0, 1), got "
                         f"{target_acceptance_rate}")
    max_num_steps = int(max_num_steps)
    if max_num_steps < 1:
        raise ValueError(f"find_reasonable_step_size: max_num_steps must be >= 1, got {max_num_steps}")
    num_chains, dim = positions.shape
    if preconditioner is None:
        preconditioner = Preconditioner.diagonal(dim, step_size=1.0, dtype=positions.dtype)
    if not isinstance(preconditioner, Preconditioner):
        raise TypeError(f"find_reasonable_step_size: preconditioner must be a mcmcvae.kernels.Preconditioner, got "
                        f"{type(preconditioner).__name__}")
    kernel = algorithm.build_kernel(**kernel_options)
    states = jax.vmap(algorithm.init, in_axes=(0, None))(positions, logdensity_fn)
    is_valid = jnp.isfinite(states.logdensity)
    num_valid = jnp.sum(is_valid)
    keys = jax.random.split(rng_key, num_chains)
    target = jnp.asarray(target_acceptance_rate, positions.dtype)
    step = jax.vmap(kernel, in_axes=(0, 0, None, None))

    def mean_acceptance(log_step_size):
        _, info = step(keys, states, logdensity_fn, preconditioner._replace(log_step_size=log_step_size))
        return jnp.sum(jnp.where(is_valid, info.acceptance_rate, 0.0)) / jnp.maximum(num_valid, 1)

    log_two = jnp.log(jnp.asarray(2.0, positions.dtype))
    log_step_size = jnp.asarray(preconditioner.log_step_size, positions.dtype)
    first = mean_acceptance(log_step_size)
    direction = jnp.where(first >= target, 1.0, -1.0).astype(positions.dtype)

    def crossed(acceptance):
        return jnp.where(direction > 0, acceptance < target, acceptance >= target)

    def keep_going(carry):
        num_steps, _, acceptance = carry
        return (num_steps < max_num_steps) & ~crossed(acceptance)

    def one_trial(carry):
        num_steps, log_h, _ = carry
        log_h = log_h + direction * log_two
        return num_steps + 1, log_h, mean_acceptance(log_h)

    _, log_h, last = lax.while_loop(keep_going, one_trial, (jnp.zeros((), jnp.int32), log_step_size, first))
    # Doubling stopped by a crossing: the step before it is the largest one accepting at least the target.
    log_h = jnp.where((direction > 0) & crossed(last), log_h - log_two, log_h)
    return jnp.where(num_valid > 0, jnp.exp(log_h), jnp.nan)
