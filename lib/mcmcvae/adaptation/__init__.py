"""Tuners: adaptation of the kernels' step size ``h`` and preconditioner ``C``.

Every tuner has the same pure ``init / update / final`` shape (:mod:`mcmcvae.adaptation.base`), so a training
method or a loop takes any of them:

- :func:`speed_measure`: stochastic gradient ascent on the entropy speed measure
  ``E[min(0, log alpha)] + beta H(proposal)`` over ``(h, C)`` (Hirt, Kreouzis and Dellaportas, Stat. Comput. 2024,
  sections 4.3-4.5), with ``beta`` steered towards a target acceptance rate;
- :func:`dual_averaging`: ``h`` only (``C`` fixed), on BlackJAX's dual averaging;
- :func:`fixed`: nothing adapts;
- :func:`with_dual_averaged_step_size`: a wrapper around any tuner whose chains then move with a dual-averaged
  multiple of its step size (a variant for HMC; the wrapper keeps the inner tuner's state in its own);
- :func:`window_adaptation`: Stan-style window adaptation with a dense mass matrix, the tuned reference for a fixed
  target (``run``: BlackJAX's per-chain warm-up; ``init/update/final``: the same schedule as a tuner with one
  ``(h, C)`` for many chains);
- :mod:`logdet`: Russian-roulette ``log det(I - A)`` with Neumann-series gradients (the HMC entropy's last term).

A tuner asks its kernel module for what it needs (``build_kernel``, ``DEFAULT_TARGET_ACCEPTANCE_RATE``,
``proposal_entropy``), so it tunes any kernel module, and its ``run(rng_key, positions, num_steps)`` adapts while
sampling a fixed target with :func:`mcmcvae.kernels.run_chains`.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> import mcmcvae as mv
>>> logdensity_fn = lambda z: -0.5 * jnp.sum(z**2 / jnp.array([0.01, 1.0]))
>>> adapt = mv.adaptation.speed_measure(mv.kernels.mala, logdensity_fn, preconditioner="diagonal")
>>> results, info = adapt.run(jax.random.key(0), jnp.zeros((16, 2)), 100)
>>> results.parameters.scale.shape
(2,)
"""

from mcmcvae.adaptation import base, logdet
from mcmcvae.adaptation.base import AdaptationResults
from mcmcvae.adaptation.dual_averaging import (
    DualAveragingAdaptation,
    DualAveragingAdaptationState,
    DualAveragingInfo,
    DualAveragingState,
    dual_averaging,
)
from mcmcvae.adaptation.fixed import FixedKernel, fixed
from mcmcvae.adaptation.speed_measure import (
    PRECONDITIONER_KINDS,
    ObjectiveAux,
    SpeedMeasureAdaptation,
    SpeedMeasureInfo,
    SpeedMeasureParams,
    SpeedMeasureState,
    from_preconditioner,
    speed_measure,
    to_preconditioner,
)
from mcmcvae.adaptation.step_size_factor import (
    DualAveragedStepSize,
    DualAveragedStepSizeState,
    with_dual_averaged_step_size,
)
from mcmcvae.adaptation.window import (
    WindowAdaptation,
    WindowAdaptationResults,
    WindowInfo,
    WindowState,
    window_adaptation,
)
from mcmcvae.adaptation.initial_step_size import find_reasonable_step_size

__all__ = [
    "AdaptationResults",
    "DualAveragedStepSize",
    "DualAveragedStepSizeState",
    "DualAveragingAdaptation",
    "DualAveragingAdaptationState",
    "DualAveragingInfo",
    "DualAveragingState",
    "FixedKernel",
    "ObjectiveAux",
    "PRECONDITIONER_KINDS",
    "SpeedMeasureAdaptation",
    "SpeedMeasureInfo",
    "SpeedMeasureParams",
    "SpeedMeasureState",
    "WindowAdaptation",
    "WindowAdaptationResults",
    "WindowInfo",
    "WindowState",
    "base",
    "dual_averaging",
    "fixed",
    "from_preconditioner",
    "logdet",
    "speed_measure",
    "to_preconditioner",
    "window_adaptation",
    "with_dual_averaged_step_size",
    "find_reasonable_step_size",
]
