r"""The tuner protocol, and what every tuner shares: asking the kernel module, binding the loop, results.

A *tuner* adapts the parameters ``(h, C)`` (a :class:`mcmcvae.kernels.Preconditioner`) of one kernel module while a
batch of chains runs. Like BlackJAX's ``dual_averaging_adaptation`` triple and Optax's transformations it is a set
of pure functions over a state that is a pytree:

- ``init(dim, preconditioner=None) -> state``: the state for positions of dimension ``d``, started from
  ``preconditioner`` when given (a warm start), else from the tuner's own initial values;
- ``update(rng_key, state, chain_states, logdensity_fn=None, context=None, *, context_axes=0)
  -> (chain_states, state, info)``: one kernel step of every chain and one adaptation step; ``info`` has at least
  the per-chain ``acceptance_rate``;
- ``final(state) -> Preconditioner``: what to sample with once adaptation stops;
- ``diagnostics(state, info) -> dict``: scalar summaries of ``K`` stacked ``info`` for a training log.

and carries ``algorithm`` (the kernel module), ``kernel`` (its built transition kernel), ``target_acceptance_rate``,
``init_chains(positions, logdensity_fn=None, context=None, *, context_axes=0)`` and
``run(rng_key, positions, num_steps, *, initial_parameters=None) -> (AdaptationResults, info)``, which adapts while
sampling with :func:`mcmcvae.kernels.run_chains`, and ``sample(rng_key, results, num_samples) -> (positions,
SampleInfo)``, which draws with the tuned kernel held fixed.

``run`` starts from ``initial_parameters`` when given (a warm start: a previous run's ``results.parameters``, or
``(h, C)`` with ``C`` a Cholesky factor of a covariance guess); otherwise, for a tuner built with
``initial_step_size=None`` (the default of :func:`~mcmcvae.adaptation.speed_measure` and
:func:`~mcmcvae.adaptation.dual_averaging`), from the step size that
:func:`~mcmcvae.adaptation.find_reasonable_step_size` finds at the starting positions (the search uses
``split(rng_key)[1]``; adaptation uses ``rng_key`` as without a search). After the loop, on the host, ``run``
checks the adaptation (:func:`adaptation_problems`) and issues one :class:`AdaptationWarning` naming each
problem and what to try; the problems are also in ``results.problems``.
Called inside a user's ``jax.jit`` the results are traced and the check is skipped (``results.problems`` is
empty): call ``run`` outside ``jit`` (as BlackJAX's ``window_adaptation(...).run``), or call
:func:`adaptation_problems` on the returned ``info`` yourself.

What a tuner needs from the kernel module it asks the module for (no list of known kernels):
``init`` and ``build_kernel(**kernel_options)``, ``DEFAULT_TARGET_ACCEPTANCE_RATE``, and, for the speed measure,
``proposal_entropy``. A new kernel is therefore one new module.
"""

from __future__ import annotations

import inspect
import warnings
from types import ModuleType
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae import kernels
from mcmcvae.types import Array, PRNGKey

__all__ = ["AdaptationResults", "AdaptationWarning", "SampleInfo", "StepSizeSearch", "adaptation_problems",
           "KernelOptionsError", "KernelSettings", "kernel_settings", "module_options",
           "bind_loop"]


class AdaptationWarning(UserWarning):
    """An adaptation (a tuner's ``run``) ended in a state that is unlikely to sample well: far from its target
    acceptance rate, with ``beta`` at a bound, with non-finite objectives or gradients, or with divergent
    transitions. The message names each problem and what to try."""


class KernelOptionsError(TypeError, ValueError):
    """Options that a kernel module's ``build_kernel`` does not take, or a required one missing (a ``TypeError``,
    as for a wrong keyword, and a ``ValueError``, as for a bad setting)."""


class AdaptationResults(NamedTuple):
    """What ``.run`` returns besides the per-step info.

    Attributes
    ----------
    parameters
        The tuned :class:`mcmcvae.kernels.Preconditioner` (the tuner's ``final`` of its last state).
    states
        The chains' last kernel states (a batched ``State``, leading axis ``n_chains``).
    adaptation_state
        The tuner's own last state, to continue adapting from.
    problems
        What :func:`adaptation_problems` found (one sentence each; empty for a healthy run, and under ``jit``).
    """

    parameters: kernels.Preconditioner
    states: Any
    adaptation_state: Any
    problems: tuple = ()


class SampleInfo(NamedTuple):
    """Per-draw diagnostics of a tuner's ``sample``, each ``(num_samples, n_chains)``.

    Attributes
    ----------
    acceptance_rate
        ``min(1, alpha)`` of the transition that produced the draw.
    is_accepted
        Whether the chain moved.
    is_divergent
        The kernel's ``is_divergent``: for MALA a proposal whose position, log density, gradient or ``log alpha``
        is not finite (always rejected); for HMC also ``|energy error| > divergence_threshold``. A kernel module
        without the field gives all False.
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array


class StepSizeSearch(NamedTuple):
    """How ``run`` finds a starting step size when not given one (``initial_step_size=None``).

    Attributes
    ----------
    start
        ``start(dim) -> Preconditioner``: the ``(h0, C)`` the search starts from (and the ``C`` adaptation starts
        from); the found ``h`` replaces ``h0``.
    target_acceptance_rate
        The search's target (the tuner's own).
    kernel_options
        ``build_kernel`` options (``num_integration_steps`` for HMC).
    """

    start: Callable
    target_acceptance_rate: float
    kernel_options: dict


class KernelSettings(NamedTuple):
    """A kernel module's built kernel and the settings a tuner read from it."""

    kernel: Callable
    target_acceptance_rate: float
    options: dict


def _module_name(algorithm) -> str:
    return getattr(algorithm, "__name__", repr(algorithm))


def module_options(fn: Callable, options: dict) -> dict:
    """The entries of ``options`` that ``fn`` takes as keywords (e.g. ``num_integration_steps`` for
    ``hmc.proposal_entropy``)."""
    parameters = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in parameters}


def kernel_settings(algorithm: ModuleType, target_acceptance_rate: float | None = None,
                    num_integration_steps: int | None = None, **kernel_options) -> KernelSettings:
    """Build ``algorithm.build_kernel(**kernel_options)`` and read its default target acceptance rate.

    ``num_integration_steps`` joins the kernel options when given. Raises a ``ValueError`` naming the problem for
    something that is not a kernel module, for options its ``build_kernel`` does not take (or a required one that
    is missing: :class:`KernelOptionsError`), and for a target outside (0, 1).
    """
    missing = [name for name in ("init", "build_kernel") if not callable(getattr(algorithm, name, None))]
    if missing:
        raise ValueError(
            f"algorithm must be a kernel module with init and build_kernel (such as mcmcvae.kernels.mala, "
            f"mcmcvae.kernels.hmc); {_module_name(algorithm)} has no {', '.join(missing)}")
    options = dict(kernel_options)
    if num_integration_steps is not None:
        options["num_integration_steps"] = int(num_integration_steps)
    try:
        inspect.signature(algorithm.build_kernel).bind(**options)
    except TypeError as error:
        raise KernelOptionsError(f"{_module_name(algorithm)}.build_kernel does not accept the options "
                                 f"{sorted(options)}: {error}") from None
    kernel = algorithm.build_kernel(**options)
    if target_acceptance_rate is None:
        target_acceptance_rate = getattr(algorithm, "DEFAULT_TARGET_ACCEPTANCE_RATE", None)
        if target_acceptance_rate is None:
            raise ValueError(f"{_module_name(algorithm)} has no DEFAULT_TARGET_ACCEPTANCE_RATE: pass "
                             "target_acceptance_rate")
    if not 0.0 < float(target_acceptance_rate) < 1.0:
        raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {target_acceptance_rate}")
    return KernelSettings(kernel, float(target_acceptance_rate), options)


#: ``run`` warns when the mean acceptance rate over the last quarter of its steps is further than this from the
#: target on the log-odds scale (for a target of 0.55: outside (0.31, 0.77); for 0.65: outside (0.41, 0.83)).
ACCEPTANCE_TOLERANCE = 1.0
#: ``run`` warns when more than this fraction of the last quarter's transitions diverged. Some divergences during
#: adaptation are expected (dual averaging's iterates stray beyond the stable step size of HMC: 5 % over the last
#: quarter of 500 steps on a standard normal); ``sample``'s ``info.is_divergent`` counts those of the tuned kernel.
DIVERGENCE_TOLERANCE = 0.1


def _is_traced(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def adaptation_problems(info, target_acceptance_rate: float | None, *, beta_bounds: tuple | None = None,
                        acceptance_tolerance: float = ACCEPTANCE_TOLERANCE,
                        divergence_tolerance: float = DIVERGENCE_TOLERANCE) -> tuple[str, ...]:
    """What went wrong in an adaptation, from its stacked ``info`` (leading axis ``num_steps``); host-side.

    Looks at the last quarter of the steps (at least one): a mean acceptance rate whose log-odds are further than
    ``acceptance_tolerance`` from those of ``target_acceptance_rate`` (skipped when it is None), ``info.beta`` at
    the end within 1 % of a bound of ``beta_bounds`` (when given), non-finite ``info.objective`` or
    ``info.gradient_is_finite`` False at any step, and a fraction of ``info.is_divergent`` above
    ``divergence_tolerance``. Fields an ``info`` lacks are not checked.

    Returns
    -------
    tuple of str
        One sentence per problem, naming it and what to try; empty when none was found.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmcvae.adaptation.base import adaptation_problems, SampleInfo
    >>> info = SampleInfo(jnp.full((40, 4), 0.02), jnp.zeros((40, 4), bool), jnp.zeros((40, 4), bool))
    >>> problems = adaptation_problems(info, 0.55)
    >>> len(problems), problems[0].startswith("the mean acceptance rate over the last 10 steps is 0.02, far from")
    (1, True)
    """
    problems = []
    acceptance = np.asarray(info.acceptance_rate, np.float64)
    num_steps = acceptance.shape[0]
    if num_steps == 0:
        return ()
    tail = max(1, num_steps // 4)
    if target_acceptance_rate is not None:
        mean = float(np.mean(acceptance[-tail:]))
        clipped = min(max(mean, 1e-6), 1.0 - 1e-6)
        log_odds = np.log(clipped / (1.0 - clipped))
        target_log_odds = np.log(target_acceptance_rate / (1.0 - target_acceptance_rate))
        if not abs(log_odds - target_log_odds) <= acceptance_tolerance:
            low = mean < target_acceptance_rate
            problems.append(
                f"the mean acceptance rate over the last {tail} steps is {mean:.2f}, far from the target "
                f"{target_acceptance_rate:.2f}: " + (
                    "the step size is too large for the target's scale (or the run too short); try more "
                    "steps, a smaller initial_step_size (or None, to search), or a warm start "
                    "(initial_parameters)" if low else
                    "the step size is too small (or the run too short); try more steps, or for HMC "
                    "mv.adaptation.with_dual_averaged_step_size(tuner)"))
    beta = getattr(info, "beta", None)
    if beta_bounds is not None and beta is not None and np.size(beta):
        last = float(np.asarray(beta).reshape(num_steps, -1)[-1].mean())
        low, high = beta_bounds
        if last <= low * 1.01:
            problems.append(
                f"beta ended at its lower bound {low:g}: the acceptance rate stayed below the target whatever the "
                "entropy's weight; try a smaller initial_step_size (or None, to search) or more steps")
        elif last >= high * 0.99:
            problems.append(
                f"beta ended at its upper bound {high:g}: the entropy peaks at a step size that accepts more "
                "than the target (HMC's known limit); try mv.adaptation.with_dual_averaged_step_size(tuner)")
    objective = getattr(info, "objective", None)
    if objective is not None:
        bad = int(np.sum(~np.isfinite(np.asarray(objective))))
        if bad:
            problems.append(f"the objective was not finite at {bad} of {num_steps} steps: the log density "
                            "overflows where the chains went; check the model, or start closer to its mode")
    finite = getattr(info, "gradient_is_finite", None)
    if finite is not None:
        bad = int(np.sum(~np.asarray(finite, bool)))
        if bad:
            problems.append(f"the adaptation's gradient was not finite at {bad} of {num_steps} steps (those "
                            "steps were skipped): check the log density's gradient where the chains went")
    divergent = getattr(info, "is_divergent", None)
    if divergent is not None:
        fraction = float(np.mean(np.asarray(divergent, bool)[-tail:]))
        if fraction > divergence_tolerance:
            problems.append(
                f"{100 * fraction:.1f} % of the transitions over the last {tail} steps diverged (a non-finite or "
                "huge energy error, which includes proposals outside the support, where the log density is -inf): "
                "try a smaller step size, more adaptation steps, or a reparameterisation of the model (non-centred "
                "for a hierarchical one; a positive parameter sampled on the log scale, so that no proposal "
                "leaves the support)")
    return tuple(problems)


#: ``sample`` warns when the chains' potential scale reduction (R-hat) exceeds this (Gelman and Rubin's 1.1).
RHAT_TOLERANCE = 1.1


def sampling_problems(positions, info, *, rhat_tolerance: float = RHAT_TOLERANCE,
                      divergence_tolerance: float = DIVERGENCE_TOLERANCE) -> tuple[str, ...]:
    """What went wrong in a draw with a tuned kernel; host-side.

    Chains that disagree (the largest R-hat over coordinates, from ``blackjax.diagnostics``, above
    ``rhat_tolerance``; checked with at least 2 chains and 4 draws each), non-finite draws, and more than
    ``divergence_tolerance`` of the transitions divergent. A tuned kernel that does not mix, which ``run`` cannot
    see from its acceptance rates, is caught here.
    """
    from blackjax.diagnostics import potential_scale_reduction

    positions = np.asarray(positions)
    problems = []
    if not np.all(np.isfinite(positions)):
        problems.append("some draws are not finite")
    elif positions.shape[0] >= 4 and positions.shape[1] >= 2:
        rhat = float(np.max(np.asarray(potential_scale_reduction(positions, chain_axis=1, sample_axis=0))))
        if not rhat <= rhat_tolerance:
            problems.append(f"the chains disagree (largest R-hat {rhat:.3g} > {rhat_tolerance}): the tuned kernel "
                            "does not mix within these draws; draw more, adapt longer, or try another step-size "
                            "rule (docs/kernels.md)")
    divergent = float(np.mean(np.asarray(info.is_divergent)))
    if divergent > divergence_tolerance:
        problems.append(f"{divergent:.0%} of the transitions diverged (more than {divergence_tolerance:.0%}): "
                        "the tuned step is too long for part of the target, or proposals leave its support "
                        "(those count as divergences: sample a positive parameter on the log scale)")
    return tuple(problems)


def _warn(tuner_name: str, problems: tuple) -> None:
    if problems:
        warnings.warn(f"{tuner_name}.run: " + "; ".join(problems), AdaptationWarning, stacklevel=3)


def _kernel_info_fields(info):
    divergent = getattr(info, "is_divergent", None)
    if divergent is None:
        divergent = jnp.zeros_like(info.is_accepted)
    return SampleInfo(info.acceptance_rate, info.is_accepted, divergent)


class _Sampler(NamedTuple):
    """A fixed kernel as a ``run_chains`` tuner whose info carries the positions after each step."""

    kernel: Callable

    def update(self, rng_key, preconditioner, chain_states, logdensity_fn=None, context=None, *, context_axes=0):
        chain_states, info = kernels.step_chains(rng_key, self.kernel, chain_states, logdensity_fn, preconditioner,
                                                 context=context, context_axes=context_axes)
        return chain_states, preconditioner, (chain_states.position, _kernel_info_fields(info))


def sample_chains(kernel: Callable, logdensity_fn: Callable, rng_key, parameters, states, num_samples: int):
    """``num_samples`` draws of every chain with ``kernel`` at fixed ``parameters`` from ``states``
    (:func:`mcmcvae.kernels.run_chains`): ``(positions (num_samples, n_chains, d), SampleInfo)``."""
    if not isinstance(parameters, kernels.Preconditioner):
        raise TypeError(f"sample: results.parameters must be a mcmcvae.kernels.Preconditioner, got "
                        f"{type(parameters).__name__}")
    num_samples = int(num_samples)
    if num_samples < 1:
        raise ValueError(f"sample: num_samples must be >= 1, got {num_samples}")
    run = kernels.run_chains(rng_key, states, logdensity_fn, num_samples, tuner=_Sampler(kernel),
                             tuner_state=parameters)
    return run.info


def bind_loop(algorithm: ModuleType, logdensity_fn: Callable | None, init: Callable, update: Callable,
              final: Callable, tuner_name: str, *, kernel: Callable | None = None,
              search: StepSizeSearch | None = None, target_acceptance_rate: float | None = None,
              beta_bounds: tuple | None = None) -> dict:
    """``resolve_logdensity``, ``init_chains``, ``run`` and ``sample`` of a tuner from its ``init``, ``update``
    and ``final``.

    ``run`` is :func:`mcmcvae.kernels.run_chains` from ``init(d, initial_parameters)``; without
    ``initial_parameters`` and with a ``search``, from ``init(d, search.start(d))`` with the step size of
    :func:`~mcmcvae.adaptation.find_reasonable_step_size`. It then checks the run (:func:`adaptation_problems`
    against ``target_acceptance_rate`` and ``beta_bounds``; None skips those checks) and warns.
    ``sample`` draws with ``kernel`` at ``results.parameters``.
    """
    bound_logdensity_fn = logdensity_fn

    def resolve_logdensity(fn):
        fn = bound_logdensity_fn if fn is None else fn
        if fn is None:
            raise ValueError(f"no logdensity_fn: pass one to {tuner_name}(...) or to this call")
        return fn

    def init_chains(positions: Array, logdensity_fn=None, context=None, *, context_axes=0):
        return kernels.init_chains(algorithm, positions, resolve_logdensity(logdensity_fn), context=context,
                                   context_axes=context_axes)

    def run(rng_key: PRNGKey, positions: Array, num_steps: int, *, initial_parameters=None):
        positions = jnp.asarray(positions)
        chain_states = init_chains(positions)
        if initial_parameters is not None and not isinstance(initial_parameters, kernels.Preconditioner):
            raise TypeError(f"{tuner_name}.run: initial_parameters must be a mcmcvae.kernels.Preconditioner (e.g. "
                            f"a previous run's results.parameters), got {type(initial_parameters).__name__}")
        if initial_parameters is None and search is not None:
            from mcmcvae.adaptation.initial_step_size import find_reasonable_step_size

            start = search.start(positions.shape[-1])
            step_size = find_reasonable_step_size(
                jax.random.split(rng_key)[1], algorithm, resolve_logdensity(None), positions, start,
                target_acceptance_rate=search.target_acceptance_rate, **search.kernel_options)
            step_size = jnp.where(jnp.isfinite(step_size), step_size, start.step_size)
            initial_parameters = start._replace(log_step_size=jnp.log(step_size).astype(start.log_step_size.dtype))
        state = init(positions.shape[-1], initial_parameters)
        run = kernels.run_chains(rng_key, chain_states, resolve_logdensity(None), num_steps, tuner=_Update(update),
                                 tuner_state=state)
        problems = ()
        if not _is_traced(run.info):
            problems = adaptation_problems(run.info, target_acceptance_rate, beta_bounds=beta_bounds)
            _warn(tuner_name, problems)
        return AdaptationResults(final(run.tuner_state), run.states, run.tuner_state, problems), run.info

    def sample(rng_key: PRNGKey, results, num_samples: int):
        if kernel is None:
            raise ValueError(f"{tuner_name} has no kernel to sample with")
        positions, info = sample_chains(kernel, resolve_logdensity(None), rng_key, results.parameters,
                                        results.states, num_samples)
        if not _is_traced(positions):
            problems = sampling_problems(positions, info)
            if problems:
                warnings.warn(f"{tuner_name}.sample: " + "; ".join(problems), AdaptationWarning, stacklevel=2)
        return positions, info

    return {"resolve_logdensity": resolve_logdensity, "init_chains": init_chains, "run": run, "sample": sample}


class _Update(NamedTuple):
    """The part of a tuner that :func:`mcmcvae.kernels.run_chains` calls."""

    update: Callable
