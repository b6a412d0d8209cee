r"""Learning ``h`` and ``C`` by stochastic gradient ascent on the entropy speed measure.

Hirt, Kreouzis and Dellaportas, "Learning variational autoencoders via MCMC speed measures" (Stat. Comput. 2024),
sections 4.3-4.5. For one step of a chain at ``z`` with noise ``v ~ N(0, I)`` the kernel proposes
``z' = T_{h,C}(z, v)``; the speed measure is

.. math::

    F(h, C) = E\big[\min(0, \log \alpha(z, z'))\big] + \beta \, H\big(q_{h,C}(\cdot \mid z)\big),

maximised over ``(h, C)`` by gradients through the reparameterised proposal (the kernel is called inside
``jax.grad`` with its noise fixed by the key). ``beta`` steers the acceptance rate towards a target:
``beta <- clip(beta (1 + lr_beta (mean acceptance - target)), 1e-3, 100)``.

Entropies, up to constants:

- MALA: ``H = d log h + log|det C|``.
- HMC with ``L`` leapfrog steps (a local Gaussian approximation at the trajectory's midpoint ``q_mid``):

  .. math::

      H = d \log(hL) + \log|\det C| + \log\big|\det\big(I - A\big)\big|, \qquad
      A = \frac{L^2 - 1}{6} h^2 C^T \nabla^2 U(q_\text{mid}) C,

  with the last term estimated by :mod:`mcmcvae.adaptation.logdet` (Hutchinson probe, Russian-roulette power
  series, Neumann-series gradient; Hessian-vector products by ``jax.jvp`` of ``jax.grad``). ``q_mid`` is held
  fixed (``stop_gradient``): the entropy's gradient keeps only how ``A`` depends on ``(h, C)`` through the
  explicit ``h^2 C^T . C``, not through the point at which the Hessian is evaluated (that would need third
  derivatives of ``U``; for a Gaussian target the Hessian is constant and nothing is lost). A penalty
  ``beta * strength * max(0, rho(A) - threshold)^2`` on a power-iteration estimate of the spectral radius keeps the
  series convergent.

The adaptation is a pure ``(init, update)`` pair over :class:`SpeedMeasureState`; ``update`` moves every chain
one step with the current ``(h, C)`` and uses that same step's proposal for the gradient.

The dual-averaged step-size factor (chains moved with ``s h``, ``log s`` dual-averaged towards the target, for
HMC whose entropy can peak short of the target) is a wrapper around this tuner:
:func:`mcmcvae.adaptation.with_dual_averaged_step_size`.

The tuner asks its kernel module for what it needs: ``proposal_entropy(preconditioner, **kernel_options)`` for
``H`` and, where the module has it, ``entropy_curvature(**kernel_options)``; a positive curvature adds the
``log det(I - A)`` term at ``Info.midpoint``. So any module with these names can be tuned, not only MALA and HMC.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mcmcvae import kernels
from mcmcvae.adaptation import base, logdet
from mcmcvae.kernels import Preconditioner
from mcmcvae.types import Array

__all__ = [
    "EXACT_LOG_DET_MAX_DIM",
    "LOG_DET_METHODS",
    "PRECONDITIONER_KINDS",
    "SpeedMeasureParams",
    "SpeedMeasureState",
    "SpeedMeasureInfo",
    "ObjectiveAux",
    "SpeedMeasureAdaptation",
    "speed_measure",
    "to_preconditioner",
    "from_preconditioner",
]

PRECONDITIONER_KINDS = ("diagonal", "lower_triangular")
BETA_BOUNDS = (1e-3, 100.0)
LOG_DET_METHODS = ("auto", "exact", "stochastic")
# Up to this latent dimension log_det="auto" computes the HMC entropy's log-det term exactly: there d batched
# Hessian-vector products and a factorisation cost less than the roulette's loop. Measured on 2 CPU cores with an
# MLP decoder (results/profile-step.md): exact/roulette time 0.52 at d = 2, 0.92 at 4, 2.05 at 8, 27.9 at 32.
EXACT_LOG_DET_MAX_DIM = 4


class SpeedMeasureParams(NamedTuple):
    """Unconstrained parameters of ``(h, C)``; the optimiser acts on these.

    Attributes
    ----------
    log_step_size
        ``log h``.
    scale
        Diagonal ``C``: ``(d,)``, ``log C_ii``. Lower-triangular ``C``: ``(d, d)`` holding the strictly-lower
        entries of ``C`` below the diagonal and ``log C_ii`` on it (the upper triangle is unused and stays zero),
        so the diagonal of ``C`` is positive and ``log|det C| = trace(scale)``.
    """

    log_step_size: Array
    scale: Array


class SpeedMeasureState(NamedTuple):
    """State of the speed-measure adaptation.

    Attributes
    ----------
    params
        :class:`SpeedMeasureParams`, the unconstrained ``(log h, C)``.
    beta
        The entropy weight ``beta``.
    optimizer_state
        The ``optax`` optimiser's state for ``params``.
    step
        Number of updates done (``int32``); adaptation stops once it reaches ``num_adaptation_steps``.
    """

    params: SpeedMeasureParams
    beta: Array
    optimizer_state: Any
    step: Array


class ObjectiveAux(NamedTuple):
    """Per-chain by-products of one evaluation of the speed measure (leading axis ``n_chains``).

    Attributes
    ----------
    states
        The chains' states after the step (the kernel's accept/reject of the proposal used in the objective).
    info
        The kernel's ``Info``.
    acceptance_term
        ``min(0, log alpha)``.
    entropy
        ``H`` (for HMC including the estimated ``log det(I - A)``).
    log_det_residual
        The estimate of ``log det(I - A)`` (zero for MALA and for HMC with ``L = 1``).
    spectral_radius
        Power-iteration estimate of ``rho(A)`` (zero where there is no ``A``).
    penalty
        ``strength * max(0, rho(A) - threshold)^2``.
    """

    states: Any
    info: Any
    acceptance_term: Array
    entropy: Array
    log_det_residual: Array
    spectral_radius: Array
    penalty: Array


class SpeedMeasureInfo(NamedTuple):
    """Diagnostics of one :func:`update` (``n_chains``-shaped per-chain fields, scalars otherwise).

    Attributes
    ----------
    acceptance_rate, is_accepted, is_divergent
        Per chain, from the kernel.
    beta
        ``beta`` used in this step's objective.
    step_size
        ``h`` used in this step.
    log_abs_det
        ``log|det C|`` used in this step.
    objective
        The speed measure averaged over chains (for HMC, with the penalty subtracted).
    entropy, log_det_residual, spectral_radius
        Averaged over chains (``spectral_radius``: maximum over chains).
    is_adapting
        Whether this step updated the parameters (False once frozen).
    gradient_is_finite
        Whether the gradient was finite (if not, the parameters are left unchanged for this step).
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    beta: Array
    step_size: Array
    log_abs_det: Array
    objective: Array
    entropy: Array
    log_det_residual: Array
    spectral_radius: Array
    is_adapting: Array
    gradient_is_finite: Array


def to_preconditioner(params: SpeedMeasureParams | SpeedMeasureState) -> Preconditioner:
    """The :class:`mcmcvae.kernels.Preconditioner` of unconstrained parameters (or of an adaptation state).

    ``C = diag(exp(scale))`` for a diagonal ``C``; ``C = tril(scale, -1) + diag(exp(diag(scale)))`` for a
    lower-triangular one. Differentiable. Of a state, this is the tuner's ``final``: the ``(h, C)`` to sample with
    once adaptation stops.

    Examples
    --------
    >>> params = SpeedMeasureParams(jnp.log(0.5), jnp.zeros(3))
    >>> to_preconditioner(params).matrix()[0, 0]
    Array(1., dtype=float32)
    """
    if isinstance(params, SpeedMeasureState):
        params = params.params
    scale = params.scale
    if scale.ndim == 1:
        return Preconditioner(params.log_step_size, jnp.exp(scale))
    matrix = jnp.tril(scale, -1) + jnp.diag(jnp.exp(jnp.diagonal(scale)))
    return Preconditioner(params.log_step_size, matrix)


def from_preconditioner(preconditioner: Preconditioner) -> SpeedMeasureParams:
    """Unconstrained parameters of a preconditioner (inverse of :func:`to_preconditioner`).

    Signs on the diagonal of ``C`` are absorbed by flipping columns (``C`` and ``C D`` with ``D = diag(+-1)``
    give the same ``C C^T`` and the same kernel law); a zero on the diagonal is an error of the caller.
    """
    scale = jnp.asarray(preconditioner.scale)
    log_step_size = jnp.asarray(preconditioner.log_step_size, scale.dtype)
    if scale.ndim == 1:
        return SpeedMeasureParams(log_step_size, jnp.log(jnp.abs(scale)))
    lower = jnp.tril(scale)
    signs = jnp.where(jnp.diagonal(lower) < 0, -1.0, 1.0).astype(scale.dtype)
    lower = lower * signs[None, :]
    return SpeedMeasureParams(log_step_size, jnp.tril(lower, -1) + jnp.diag(jnp.log(jnp.diagonal(lower))))


class SpeedMeasureAdaptation(NamedTuple):
    """The speed-measure adaptation for one kernel and one kind of ``C``; built by :func:`speed_measure`. A tuner
    (:mod:`mcmcvae.adaptation.base`).

    Attributes
    ----------
    init
        ``init(dim, preconditioner=None) -> SpeedMeasureState``; start from ``preconditioner`` when given
        (e.g. a previous run's, or a Cholesky factor), else from ``h = initial_step_size``, ``C = I``.
    update
        ``update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0)
        -> (chain_states, state, SpeedMeasureInfo)``: one kernel step for every chain and one optimiser step.
    objective
        ``objective(preconditioner, rng_key, chain_states, beta, logdensity_fn=None, context=None, *,
        context_axes=0) -> (value, ObjectiveAux)``: the speed measure averaged over chains, differentiable in
        ``preconditioner`` (for HMC its gradient is the unbiased surrogate of the log-det term's).
    init_chains
        ``init_chains(positions, logdensity_fn=None, context=None, *, context_axes=0)``: kernel states for
        ``positions`` of shape ``(n_chains, d)``.
    run
        ``run(rng_key, positions, num_steps, *, initial_parameters=None) -> (AdaptationResults,
        SpeedMeasureInfo)``: adapt while sampling from ``logdensity_fn`` with ``lax.scan``; ``info`` fields get a
        leading ``num_steps`` axis. Starts from ``initial_parameters`` when given, else (``initial_step_size=None``)
        from a searched step size and ``C = I``; warns (:class:`~mcmcvae.adaptation.AdaptationWarning`) when the
        run ends far from its target, with ``beta`` at a bound, with non-finite objectives or gradients, or with
        divergences (:mod:`mcmcvae.adaptation.base`).
    sample
        ``sample(rng_key, results, num_samples) -> (positions, SampleInfo)``: draws with ``results.parameters``
        held fixed from ``results.states``; ``positions`` is ``(num_samples, n_chains, d)``.
    final
        ``final(state) -> Preconditioner``: :func:`to_preconditioner` of the state.
    diagnostics
        ``diagnostics(state, info) -> dict``: ``step_size``, ``log_abs_det``, ``beta``, the mean ``speed_measure``
        and the number of ``nonfinite_kernel_gradients`` of ``K`` stacked updates.
    algorithm, kernel, target_acceptance_rate, preconditioner, kernel_options, logdensity_fn
        The kernel module, its built kernel and the settings.
    step_size_search
        How ``run`` finds its starting step size (:class:`~mcmcvae.adaptation.base.StepSizeSearch`), or None when
        ``initial_step_size`` was given.
    """

    init: Callable
    update: Callable
    final: Callable
    diagnostics: Callable
    objective: Callable
    init_chains: Callable
    run: Callable
    algorithm: ModuleType
    kernel: Callable
    target_acceptance_rate: float
    preconditioner: str
    kernel_options: tuple
    logdensity_fn: Callable | None = None
    sample: Callable | None = None
    step_size_search: base.StepSizeSearch | None = None


#: ``h`` of ``init(dim)`` without a preconditioner when ``initial_step_size`` is None (``run`` searches instead).
FALLBACK_STEP_SIZE = 0.1


def speed_measure(
    algorithm: ModuleType,
    logdensity_fn: Callable | None = None,
    *,
    preconditioner: str = "diagonal",
    target_acceptance_rate: float | None = None,
    num_integration_steps: int | None = None,
    learning_rate: float = 0.01,
    optimizer: optax.GradientTransformation | None = None,
    initial_step_size: float | None = None,
    initial_beta: float = 1.0,
    beta_learning_rate: float = 0.02,
    num_adaptation_steps: int | None = None,
    num_exact_terms: int = 2,
    continue_probability: float = 0.5,
    num_power_iterations: int = 4,
    max_num_terms: int = 64,
    spectral_radius_threshold: float = 0.75,
    penalty_strength: float = 1000.0,
    log_det: str = "auto",
    **kernel_options,
) -> SpeedMeasureAdaptation:
    r"""Adapt ``h`` and ``C`` of a MALA or HMC kernel by maximising the entropy speed measure.

    Maximises, by ``optax`` gradient steps (Adam by default), the speed measure averaged over chains

    .. math::

        F = \frac{1}{n} \sum_{i=1}^n \Big[\min(0, \log\alpha_i)
            + \beta \big(H_i - \text{strength} \max(0, \hat\rho_i - \text{threshold})^2\big)\Big],

    with ``H`` the proposal's entropy (``d log h + log|det C|`` for MALA; for HMC plus ``d log L`` and the
    estimated ``log det(I - (L^2 - 1)/6 h^2 C^T Hess U(q_mid) C)``; the penalty only for HMC with ``L > 1``),
    and after every step

    .. math::

        \beta \leftarrow \operatorname{clip}\big(\beta\,(1 + \text{lr}_\beta (\bar a - a^\star)),\ 10^{-3},\ 100\big)

    with ``a-bar`` the mean acceptance rate over chains and ``a*`` the target.

    Parameters
    ----------
    algorithm
        A kernel module with ``proposal_entropy``: ``mv.kernels.mala``, ``mv.kernels.hmc`` or one of your own.
    logdensity_fn
        ``log pi(position)`` for ``.run`` and the default of ``update``; may be None when ``update`` is always
        given one (e.g. ``log p(x, z)`` with per-chain ``x`` as ``context``).
    preconditioner
        ``"diagonal"`` or ``"lower_triangular"``.
    target_acceptance_rate
        Default: the module's ``DEFAULT_TARGET_ACCEPTANCE_RATE`` (0.55 for MALA, 0.65 for HMC).
    num_integration_steps
        ``L`` for HMC (required); not for MALA.
    learning_rate
        Adam's learning rate (ignored when ``optimizer`` is given).
    optimizer
        Any ``optax.GradientTransformation``; it receives the gradient of ``-F``.
    initial_step_size
        ``h`` to start from (with ``C = I``). None (default): ``run`` starts from the step size
        :func:`~mcmcvae.adaptation.find_reasonable_step_size` finds at its starting positions for the target
        acceptance rate (a doubling/halving search from ``h = 0.1``), so the start follows the target's scale;
        ``init(dim)``, which has no positions, starts from ``h = 0.1``. A number starts both from it.
    initial_beta, beta_learning_rate
        Start and rate of the ``beta`` update.
    num_adaptation_steps
        After this many updates the parameters and ``beta`` stay fixed (``lax.cond`` on the step counter) and
        ``update`` only moves the chains; None adapts for ever.
    num_exact_terms, continue_probability, num_power_iterations, max_num_terms
        The Russian roulette of the HMC log-det term (see :mod:`mcmcvae.adaptation.logdet`).
    spectral_radius_threshold, penalty_strength
        The spectral-radius penalty.
    log_det
        How the HMC entropy's ``log det(I - A)`` is computed: ``"stochastic"``, the paper's unbiased
        Russian-roulette estimate (:func:`mcmcvae.adaptation.logdet.log_det_identity_minus`); ``"exact"``, its
        expectation from ``d`` batched Hessian-vector products and a factorisation
        (:func:`mcmcvae.adaptation.logdet.exact_log_det_identity_minus`), with the same gradient path and no
        estimator variance; ``"auto"`` (default), exact up to ``EXACT_LOG_DET_MAX_DIM`` (= 4) dimensions, where it
        is also the cheaper of the two on a CPU (results/profile-step.md), stochastic above. Either way the
        Hessian-vector products are taken forward only: ``H`` is the Hessian at the fixed midpoint, so the term's
        gradient in ``(h, C)`` is formed from ``H C v`` without a reverse pass (and is not taken in the log
        density's context).
    **kernel_options
        Passed to ``algorithm.build_kernel``: for MALA and HMC ``stop_gradient_proposal_grad`` (ignore how
        ``grad U`` at the proposal moves with ``(h, C)``, the biased gradient of the paper's code; default full
        gradients), for HMC ``divergence_threshold``.

    Returns
    -------
    SpeedMeasureAdaptation

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> scales = jnp.array([0.1, 1.0, 10.0])
    >>> logdensity_fn = lambda z: -0.5 * jnp.sum((z / scales) ** 2)
    >>> adapt = mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn)
    >>> results, info = adapt.run(jax.random.key(0), jnp.zeros((16, 3)), 200)
    >>> info.acceptance_rate.shape
    (200, 16)

    Inside a VAE's training step, with one ``x`` per chain and the decoder parameters shared:

    >>> def log_joint(z, context):
    ...     decoder_params, x = context
    ...     return -0.5 * jnp.sum(z**2) - 0.5 * jnp.sum((x - decoder_params * z) ** 2)
    >>> adapt = mv.adaptation.speed_measure(mv.kernels.hmc, num_integration_steps=3)
    >>> x, decoder_params = jnp.ones((16, 3)), jnp.float32(2.0)
    >>> context, axes = (decoder_params, x), (None, 0)
    >>> chains = adapt.init_chains(jnp.zeros((16, 3)), log_joint, context, context_axes=axes)
    >>> state = adapt.init(3)
    >>> chains, state, info = adapt.update(jax.random.key(1), state, chains, log_joint, context, context_axes=axes)
    """
    if preconditioner not in PRECONDITIONER_KINDS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONER_KINDS}, got {preconditioner!r}")
    settings = base.kernel_settings(algorithm, target_acceptance_rate, num_integration_steps, **kernel_options)
    kernel, target = settings.kernel, settings.target_acceptance_rate
    if not callable(getattr(algorithm, "proposal_entropy", None)):
        raise ValueError(f"the speed measure needs the kernel module's proposal_entropy(preconditioner, ...); "
                         f"{getattr(algorithm, '__name__', algorithm)} has none")
    entropy_options = base.module_options(algorithm.proposal_entropy, settings.options)
    curvature_fn = getattr(algorithm, "entropy_curvature", None)
    curvature = float(curvature_fn(**base.module_options(curvature_fn, settings.options))) if curvature_fn else 0.0
    has_log_det = curvature > 0.0  # e.g. (L^2 - 1) / 6 for HMC: zero for MALA and for HMC with L = 1
    if log_det not in LOG_DET_METHODS:
        raise ValueError(f"log_det must be one of {LOG_DET_METHODS}, got {log_det!r}")
    preconditioner_kind = preconditioner
    if optimizer is None:
        optimizer = optax.adam(learning_rate)
    roulette = dict(
        num_exact_terms=num_exact_terms,
        continue_probability=continue_probability,
        num_power_iterations=num_power_iterations,
    )

    def resolve_logdensity(fn):
        return loop["resolve_logdensity"](fn)

    def residual_matvec(logdensity, params, v):
        """``A v = c h^2 C^T Hess U(q) C v`` by a Hessian-vector product (``Hess U = -Hess log pi``)."""
        precond, position, context = params
        grad_potential = jax.grad(lambda z: -kernels.with_context(logdensity, context)(z))
        _, hvp = jax.jvp(grad_potential, (position,), (precond.apply(v),))
        return curvature * precond.step_size**2 * precond.apply_transpose(hvp)

    def chain_objective(precond, rng_key, chain_state, context, num_terms, beta, logdensity):
        key_kernel, key_probe = jax.random.split(rng_key)
        new_state, info = kernel(key_kernel, chain_state, kernels.with_context(logdensity, context), precond)
        dim = chain_state.position.shape[-1]
        acceptance_term = jnp.minimum(info.log_acceptance_ratio, 0.0)
        entropy = algorithm.proposal_entropy(precond, **entropy_options)
        zero = jnp.zeros((), entropy.dtype)
        log_det_residual, spectral_radius, penalty = zero, zero, zero
        if has_log_det:
            matvec = functools.partial(residual_matvec, logdensity)
            matrix_params = (precond, lax.stop_gradient(info.midpoint), context)
            if log_det == "exact" or (log_det == "auto" and dim <= EXACT_LOG_DET_MAX_DIM):  # dim is static
                estimate = logdet.exact_log_det_identity_minus(
                    structured_matvec, (precond, fixed_hessian_columns(matvec, matrix_params, dim)), dim)
                log_det_residual, spectral_radius = estimate.log_det, estimate.spectral_radius
            else:
                probe = jax.random.rademacher(key_probe, (dim,), dtype=chain_state.position.dtype)
                estimate = logdet.log_det_identity_minus(probe, num_terms, matvec, matrix_params,
                                                         differentiable_radius=False,
                                                         differentiable_surrogate=False, **roulette)
                log_det_residual = differentiable_log_det(precond, probe, estimate)
                spectral_radius = differentiable_radius(precond, estimate)
            penalty = logdet.spectral_radius_penalty(spectral_radius, spectral_radius_threshold, penalty_strength)
        entropy = entropy + log_det_residual
        value = acceptance_term + beta * (entropy - penalty)
        aux = ObjectiveAux(new_state, info, acceptance_term, entropy, log_det_residual, spectral_radius, penalty)
        return value, aux

    def fixed_hessian_image(precond, image):
        """``H C v = C^{-T} A v / (c h^2)`` from a product ``A v`` taken forward, held fixed.

        (A step size whose square underflows leaves ``A v = 0``: the result is zero then, not ``0 / 0``.)
        """
        fixed = lax.stop_gradient(precond)
        factor = curvature * fixed.step_size**2
        return lax.stop_gradient(fixed.solve_transpose(image) / jnp.where(factor > 0, factor, 1.0))

    def fixed_hessian_columns(matvec, matrix_params, dim):
        """``M = H C`` (row ``i`` is ``H C e_i``), held fixed, from ``d`` forward products ``A e_i``."""
        precond = lax.stop_gradient(matrix_params[0])
        fixed_params = (precond, *matrix_params[1:])
        basis = jnp.eye(dim, dtype=jnp.result_type(float))
        return jax.vmap(lambda e: fixed_hessian_image(precond, matvec(fixed_params, e)))(basis)

    def structured_matvec(params, v):
        """``A v = c h^2 C^T H C v`` from ``M = H C`` held fixed, with its gradient in ``(h, C)``.

        With ``g = c h^2 (C^T M v + M^T C v - sg(C^T M v))`` (value ``A v``; derivative
        ``c h^2 (dC^T H C + C^T H dC) v`` in ``C``, ``H`` being symmetric), ``sg(c h^2 C^T M v) + g - sg(g)`` is ``A v``
        in value and gradient, without a reverse pass through a Hessian-vector product: the exact term's ``d``
        products are taken forward only. (The gradient part uses ``M`` with its non-finite entries zeroed, so that a
        non-finite ``A``, which the exact term reports as not converged, cannot make the gradient NaN.)
        """
        precond, hessian_columns = params
        fixed_columns = lax.stop_gradient(hessian_columns)
        safe_columns = jnp.where(jnp.isfinite(fixed_columns), fixed_columns, 0.0)
        factor = curvature * precond.step_size**2
        value = lax.stop_gradient(factor * precond.apply_transpose(v @ fixed_columns))  # M v: rows are H C e_i
        inner = safe_columns.T @ v
        g = factor * (precond.apply_transpose(inner) + safe_columns @ precond.apply(v)
                      - lax.stop_gradient(precond.apply_transpose(inner)))
        return value + g - lax.stop_gradient(g)

    def differentiable_log_det(precond, probe, estimate):
        """The roulette's ``log det(I - A)`` with the surrogate's gradient in ``(h, C)`` from forward products only.

        The surrogate is ``-n^T A p = -c h^2 (C n)^T H (C p)`` (``n`` the held-fixed Neumann vector, ``p`` the probe,
        ``H = Hess U(q_mid)`` fixed). With ``a = H C p`` and ``b = H C n`` held fixed (from ``A p``, the loop's
        first product, and ``A n``, both taken forward), ``-c h^2 ((C n)^T a + (C p)^T b - sg((C n)^T a))`` has its
        value and its gradient (``H`` is symmetric: ``d/dC (C n)^T H (C p) = H C p n^T + H C n p^T``), so the
        gradient costs no reverse pass through a Hessian-vector product. Its value adds zero to the estimate's;
        a series that did not converge has zero images, hence a zero surrogate.
        """
        a = fixed_hessian_image(precond, estimate.probe_image)
        b = fixed_hessian_image(precond, estimate.neumann_image)
        cn, cp = precond.apply(estimate.neumann_vector), precond.apply(probe)
        inner = jnp.vdot(cn, a) + jnp.vdot(cp, b) - lax.stop_gradient(jnp.vdot(cn, a))
        surrogate = -curvature * precond.step_size**2 * inner
        return estimate.log_det + surrogate - lax.stop_gradient(surrogate)

    def differentiable_radius(precond, estimate):
        """``|u^T A u|`` differentiable in ``(h, C)`` from the product ``A u`` the estimate took forward only.

        ``u^T A u = c h^2 (C u)^T H (C u)`` with ``H = Hess U(q_mid)`` fixed, so with ``y = H C u`` (held fixed,
        ``C^{-T} A u / (c h^2)``) the expression ``c h^2 (2 y^T (C u) - sg(y^T C u))`` has the value of
        ``u^T A u`` and its gradient (``H`` is symmetric): the penalty's gradient costs no reverse pass through a
        Hessian-vector product.
        """
        u = estimate.radius_vector
        factor = curvature * precond.step_size**2
        y = fixed_hessian_image(precond, estimate.radius_image)
        cu = precond.apply(u)
        quadratic = 2 * jnp.vdot(y, cu) - lax.stop_gradient(jnp.vdot(y, cu))
        radius = jnp.abs(factor * quadratic)
        # the value is the estimate's own (y^T C u recovers u^T A u / (c h^2) only up to rounding)
        return lax.stop_gradient(estimate.spectral_radius) + radius - lax.stop_gradient(radius)

    def objective(precond, rng_key, chain_states, beta, logdensity_fn=None, context=None, *, context_axes=0):
        logdensity = resolve_logdensity(logdensity_fn)
        num_chains = chain_states.position.shape[0]
        key_terms, key_chains = jax.random.split(rng_key)
        # One truncation level for all chains: each chain's estimate stays unbiased, and the loop runs
        # E[N] = num_exact_terms + p / (1 - p) steps instead of the maximum of n draws.
        num_terms = logdet.sample_num_terms(key_terms, num_exact_terms, continue_probability, max_num_terms)
        per_chain = jax.vmap(
            lambda key, state, ctx: chain_objective(precond, key, state, ctx, num_terms, beta, logdensity),
            in_axes=(0, 0, context_axes),
        )
        values, aux = per_chain(jax.random.split(key_chains, num_chains), chain_states, context)
        # A proposal with a non-finite value is a rejection whose log alpha the kernel replaced by a constant
        # with zero gradient: alone, its entropy term would still push (h, C) up, so that on a target that is
        # -inf on part of the space h grows until nothing is accepted. Such a chain's gradient is -grad H instead
        # (the value is unchanged): a rejection pulls the step down, as a very negative log alpha would.
        rejected = aux.info.log_acceptance_ratio <= kernels.REJECTED_LOG_ACCEPTANCE_RATIO
        entropy_change = aux.entropy - lax.stop_gradient(aux.entropy)
        values = jnp.where(rejected, values - (1.0 + beta) * entropy_change, values)
        return jnp.mean(values), aux

    start_step_size = FALLBACK_STEP_SIZE if initial_step_size is None else initial_step_size

    def start(dim: int) -> Preconditioner:
        if preconditioner_kind == "diagonal":
            return Preconditioner.diagonal(dim, step_size=start_step_size)
        return Preconditioner.lower_triangular(dim, step_size=start_step_size)

    def init(dim: int, preconditioner: Preconditioner | None = None) -> SpeedMeasureState:
        if preconditioner is None:
            preconditioner = start(dim)
        expected_ndim = 1 if preconditioner_kind == "diagonal" else 2
        if jnp.ndim(preconditioner.scale) != expected_ndim or preconditioner.scale.shape[-1] != dim:
            raise ValueError(
                f"a {preconditioner_kind} preconditioner of dimension {dim} was expected, got scale of shape "
                f"{jnp.shape(preconditioner.scale)}"
            )
        params = from_preconditioner(preconditioner)
        return SpeedMeasureState(
            params,
            jnp.asarray(initial_beta, params.scale.dtype),
            optimizer.init(params),
            jnp.zeros((), jnp.int32),
        )

    def update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0):
        def evaluate(params):
            return objective(
                to_preconditioner(params), rng_key, chain_states, state.beta, logdensity_fn, context,
                context_axes=context_axes,
            )

        def adapt(_):
            (value, aux), grads = jax.value_and_grad(evaluate, has_aux=True)(state.params)
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
            grads = jax.tree.map(lambda g: jnp.where(finite, -g, 0.0), grads)  # ascent on F
            updates, optimizer_state = optimizer.update(grads, state.optimizer_state, state.params)
            params = optax.apply_updates(state.params, updates)
            # Keep the previous optimiser state too when the gradient was not finite.
            params, optimizer_state = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old),
                (params, optimizer_state),
                (state.params, state.optimizer_state),
            )
            mean_acceptance = jnp.mean(aux.info.acceptance_rate)
            beta = jnp.clip(state.beta * (1.0 + beta_learning_rate * (mean_acceptance - target)), *BETA_BOUNDS)
            new_state = state._replace(params=params, beta=beta.astype(state.beta.dtype),
                                       optimizer_state=optimizer_state, step=state.step + 1)
            return value, aux, new_state, jnp.asarray(True), finite

        def frozen(_):
            value, aux = evaluate(state.params)
            return value, aux, state._replace(step=state.step + 1), jnp.asarray(False), jnp.asarray(True)

        if num_adaptation_steps is None:
            value, aux, new_state, is_adapting, finite = adapt(None)
        else:
            value, aux, new_state, is_adapting, finite = lax.cond(
                state.step < num_adaptation_steps, adapt, frozen, None
            )
        precond = to_preconditioner(state.params)
        info = SpeedMeasureInfo(
            acceptance_rate=aux.info.acceptance_rate,
            is_accepted=aux.info.is_accepted,
            is_divergent=getattr(aux.info, "is_divergent", jnp.zeros_like(aux.info.is_accepted)),
            beta=state.beta,
            step_size=precond.step_size,
            log_abs_det=precond.log_abs_det(),
            objective=value,
            entropy=jnp.mean(aux.entropy),
            log_det_residual=jnp.mean(aux.log_det_residual),
            spectral_radius=jnp.max(aux.spectral_radius),
            is_adapting=is_adapting,
            gradient_is_finite=finite,
        )
        return aux.states, new_state, info

    def diagnostics(state, info) -> dict:
        tuned = to_preconditioner(state)
        return {"step_size": tuned.step_size, "log_abs_det": tuned.log_abs_det(), "beta": state.beta,
                "speed_measure": jnp.mean(info.objective),
                "nonfinite_kernel_gradients": jnp.sum(~info.gradient_is_finite)}

    search = None if initial_step_size is not None else base.StepSizeSearch(start, target, settings.options)
    loop = base.bind_loop(algorithm, logdensity_fn, init, update, to_preconditioner, "speed_measure", kernel=kernel,
                          search=search, target_acceptance_rate=target, beta_bounds=BETA_BOUNDS)
    return SpeedMeasureAdaptation(
        init=init,
        update=update,
        final=to_preconditioner,
        diagnostics=diagnostics,
        objective=objective,
        init_chains=loop["init_chains"],
        run=loop["run"],
        algorithm=algorithm,
        kernel=kernel,
        target_acceptance_rate=target,
        preconditioner=preconditioner_kind,
        kernel_options=tuple(sorted(settings.options.items())),
        logdensity_fn=logdensity_fn,
        sample=loop["sample"],
        step_size_search=search,
    )
