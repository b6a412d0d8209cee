"""Adaptation of the kernels' step size ``h`` and preconditioner ``C``.

- :func:`speed_measure`: stochastic gradient ascent on the entropy speed measure
  ``E[min(0, log alpha)] + beta H(proposal)`` over ``(h, C)`` (Hirt, Kreouzis and Dellaportas, Stat. Comput. 2024,
  sections 4.3-4.5), with ``beta`` steered towards a target acceptance rate;
- :func:`dual_averaging`: ``h`` only (``C = I``), on BlackJAX's dual averaging;
- :func:`window_adaptation`: BlackJAX's Stan-style window adaptation with a dense mass matrix, the tuned reference
  for a fixed target;
- :mod:`logdet`: Russian-roulette ``log det(I - A)`` with Neumann-series gradients (the HMC entropy's last term).

``speed_measure`` and ``dual_averaging`` return a pure ``(init, update)`` pair, so a training loop can carry the
adaptation state across batches, and a ``run(rng_key, positions, num_steps)`` that adapts while sampling a fixed
target with ``lax.scan``.

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

from mcmcvae.adaptation import logdet
from mcmcvae.adaptation._common import AdaptationResults
from mcmcvae.adaptation.dual_averaging import (
    DualAveragingAdaptation,
    DualAveragingAdaptationState,
    DualAveragingInfo,
    dual_averaging,
)
from mcmcvae.adaptation.speed_measure import (
    PRECONDITIONER_KINDS,
    STEP_SIZE_ADAPTATIONS,
    ObjectiveAux,
    SpeedMeasureAdaptation,
    SpeedMeasureInfo,
    SpeedMeasureParams,
    SpeedMeasureState,
    from_preconditioner,
    speed_measure,
    to_preconditioner,
)
from mcmcvae.adaptation.window import WindowAdaptation, WindowAdaptationResults, window_adaptation
from mcmcvae.adaptation.initial_step_size import find_reasonable_step_size

__all__ = [
    "AdaptationResults",
    "DualAveragingAdaptation",
    "DualAveragingAdaptationState",
    "DualAveragingInfo",
    "ObjectiveAux",
    "PRECONDITIONER_KINDS",
    "STEP_SIZE_ADAPTATIONS",
    "SpeedMeasureAdaptation",
    "SpeedMeasureInfo",
    "SpeedMeasureParams",
    "SpeedMeasureState",
    "WindowAdaptation",
    "WindowAdaptationResults",
    "dual_averaging",
    "from_preconditioner",
    "logdet",
    "speed_measure",
    "to_preconditioner",
    "window_adaptation",
    "find_reasonable_step_size",
]
