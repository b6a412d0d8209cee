"""``posteriors``: our tuned MALA/HMC against BlackJAX's samplers on real posteriors and hard geometries.

Targets (flat float32 positions; data that ship inside an installed package, scikit-learn, the optional dependency
``.[bench]``; nothing downloaded):

- ``gaussian-5d``: an easy correlated Gaussian (condition number 10), the smoke test;
- ``gaussian-100d``: ``N(0, Q diag(geomspace(1e-2, 1e2)) Q^T)``, condition number 1e4, random rotation ``Q``;
- ``logistic-breast-cancer``: Bayesian logistic regression of the Wisconsin breast cancer diagnoses (scikit-learn's
  ``load_breast_cancer``, 569 cases) on the 30 standardised features and an intercept, prior N(0, 2.5^2);
- ``linear-diabetes-raw``: a badly scaled linear regression, scikit-learn's ``load_diabetes(scaled=False)`` (disease
  progression of 442 patients on an intercept and 10 raw covariates: age in years, sex coded 1/2, BMI, blood pressure
  and six serum measurements in their own units), the noise sd fixed at the least-squares residual sd and a flat
  prior, so the posterior is Gaussian (its condition number is printed with the table);
- ``eight-schools``: the eight schools model (Rubin 1981) in non-centred form, ``(mu, log tau, theta~_1..8)``;
- ``funnel``: Neal's funnel, ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)``, ``i = 1..9``.

References: closed forms for the Gaussians and the funnel's marginals (``sd(x_i) = e^{9/4}``), long BlackJAX NUTS
runs (dense window adaptation, chains whose adaptation failed left out and counted) for the logistic regression and
eight schools, cached under ``runs/posteriors/``.

Samplers, all with the same number of chains from the same starting positions: ours, tuned by
``mv.adaptation.speed_measure`` (lower-triangular C, from its default start, which ``run`` searches on the target,
and from ``mv.adaptation.find_reasonable_step_size``) or by ``mv.adaptation.dual_averaging`` (C = I), then sampled
with the tuned kernel held fixed; BlackJAX NUTS and HMC/MALA (MALA is BlackJAX's HMC with L = 1, which proposes what MALA
proposes, since ``blackjax.mala`` takes no mass matrix) after per-chain dense ``window_adaptation``; ChEES-HMC (with
its diagonal mass matrix estimate) and MEADS, BlackJAX's many-chain adaptations; HMC with the oracle dense mass
matrix (``C`` the Cholesky factor of the reference covariance; h by dual averaging). Fixed-L samplers get the same
gradient budget per chain for warm-up and for sampling; NUTS and ChEES run a fixed number of iterations and their
ESS is divided by the gradients they actually used.

Metrics per sampler and target: the largest error of the posterior means and sds over coordinates in reference sds,
the minimum ESS (``mv.evaluate.chain_diagnostics``, i.e. BlackJAX's) and ESS per gradient of the sampling phase,
the largest R-hat, ``cond(C^T Sigma^{-1} C)`` for samplers with a ``C`` (median over chains for per-chain ones), the
wall time of warm-up plus sampling (compilation included), the mean acceptance rate and the number of divergences.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import platform
import subprocess
import time
import warnings
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mcmcvae as mv

DESCRIPTION = "Our tuned MALA/HMC vs BlackJAX NUTS, window HMC/MALA, ChEES, MEADS and oracle HMC on real posteriors"
NAME = "posteriors"
NUM_INTEGRATION_STEPS = 5  # L of every fixed-length HMC here
STEP_SIZE_JITTER = 0.5  # oracle and da-hmc-jitter, as with_dual_averaged_step_size's default (fixed-L HMC is periodic)
TARGETS = ("gaussian-5d", "gaussian-100d", "logistic-breast-cancer", "linear-diabetes-raw", "eight-schools", "funnel")
SAMPLERS = ("sm-mala", "sm-hmc", "sm-mala-searched", "sm-hmc-searched", "sm-hmc-da-step", "da-mala", "da-hmc",
            "da-hmc-jitter",
            "nuts-window", "hmc-window", "mala-window", "chees", "meads", "hmc-oracle")
# Gradient evaluations per chain (warm-up and sampling) for the fixed-L samplers; iterations for NUTS and ChEES.
# The cpu budget leaves out mala-window: BlackJAX refactors the dense mass matrix at every step, which made it the
# slowest sampler by far on the 100-d Gaussian (over 5 minutes there on the shared machine).
BUDGETS = {
    "quick": {"targets": ("gaussian-5d",), "samplers": ("sm-mala", "sm-hmc-searched", "da-hmc", "nuts-window",
                                                         "hmc-oracle"),
              "num_chains": 8, "warmup_gradients": 300, "sampling_gradients": 300, "nuts_warmup": 100,
              "nuts_samples": 60, "reference_warmup": 200, "reference_samples": 500, "seed": 0},
    "cpu": {"targets": TARGETS, "samplers": tuple(s for s in SAMPLERS if s != "mala-window"), "num_chains": 16,
            "warmup_gradients": 2000, "sampling_gradients": 1000, "nuts_warmup": 300, "nuts_samples": 150,
            "reference_warmup": 500, "reference_samples": 2500, "seed": 0},
    # Everything, with longer warm-ups (not run on the shared CPU).
    "full": {"targets": TARGETS, "samplers": SAMPLERS, "num_chains": 32, "warmup_gradients": 5000,
             "sampling_gradients": 2500, "nuts_warmup": 1000, "nuts_samples": 500, "reference_warmup": 1000,
             "reference_samples": 10000, "seed": 0},
}
CORRECT_WITHIN = 0.1  # reference sds: the bar for a correct sampler


# --------------------------------------------------------------------------------------------- targets
class Target(NamedTuple):
    name: str
    logdensity_fn: Callable
    dim: int
    mean: np.ndarray | None  # None: from a reference NUTS run
    covariance: np.ndarray | None
    start: Callable  # start(rng_key, num_chains, mean, sd) -> (num_chains, dim)
    kind: str


def _near_reference(rng_key, num_chains, mean, sd):
    """Chains start at independent draws from the reference marginals (overdispersed for correlated targets)."""
    return jnp.asarray(mean + sd * np.asarray(jax.random.normal(rng_key, (num_chains, mean.size))), jnp.float32)


def _standard_normal(rng_key, num_chains, mean, sd):
    return jax.random.normal(rng_key, (num_chains, mean.size))


def _gaussian(name, covariance, kind):
    covariance = np.asarray(covariance, np.float64)
    precision = jnp.asarray(np.linalg.inv(covariance), jnp.float32)
    return Target(name, lambda z: -0.5 * z @ (precision @ z), covariance.shape[0], np.zeros(covariance.shape[0]),
                  covariance, _near_reference, kind)


def _rotated(dim, low, high, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.geomspace(low, high, dim)) @ q.T


BENCH_EXTRA = "bench"  # the optional dependency (pyproject.toml) that ships the regression targets' data


def _sklearn_datasets():
    """``sklearn.datasets``, whose bundled data sets (no download) the regression targets use."""
    try:
        import sklearn.datasets
    except ImportError as error:
        raise ModuleNotFoundError(
            f"the posteriors benchmark's regression targets use data sets bundled with scikit-learn, which is not "
            f"installed: install the optional dependencies with `pip install -e '.[{BENCH_EXTRA}]'` (scripts/setup.sh "
            f"does), or run only the Gaussian, eight-schools and funnel targets") from error
    return sklearn.datasets


def _logistic_breast_cancer():
    data = _sklearn_datasets().load_breast_cancer()
    features = np.asarray(data.data, np.float64)
    features = (features - features.mean(0)) / features.std(0)
    x = jnp.asarray(np.concatenate([np.ones((len(features), 1)), features], 1), jnp.float32)
    y = jnp.asarray(data.target, jnp.float32)

    def logdensity_fn(beta):
        logits = x @ beta
        return jnp.sum(y * logits - jnp.logaddexp(0.0, logits)) - 0.5 * jnp.sum((beta / 2.5) ** 2)

    return Target("logistic-breast-cancer", logdensity_fn, x.shape[1], None, None, _standard_normal,
                  "logistic regression")


def _linear_diabetes_raw():
    data = _sklearn_datasets().load_diabetes(scaled=False)
    y = np.asarray(data.target, np.float64)
    x = np.concatenate([np.ones((len(y), 1)), np.asarray(data.data, np.float64)], 1)
    beta_hat, *_ = np.linalg.lstsq(x, y, rcond=None)
    noise_var = np.sum((y - x @ beta_hat) ** 2) / (len(y) - x.shape[1])
    covariance = noise_var * np.linalg.inv(x.T @ x)  # flat prior, known noise: N(beta_hat, s^2 (X^T X)^{-1})
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def logdensity_fn(beta):
        return -0.5 * jnp.sum((y32 - x32 @ beta) ** 2) / noise_var

    return Target("linear-diabetes-raw", logdensity_fn, x.shape[1], beta_hat, covariance, _near_reference,
                  "badly scaled linear regression")


EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def _eight_schools():
    y, sigma = jnp.asarray(EIGHT_SCHOOLS_Y, jnp.float32), jnp.asarray(EIGHT_SCHOOLS_SIGMA, jnp.float32)

    def logdensity_fn(z):
        mu, log_tau, theta_tilde = z[0], z[1], z[2:]
        tau = jnp.exp(log_tau)
        log_prior = -0.5 * (mu / 5.0) ** 2 - jnp.log1p((tau / 5.0) ** 2) + log_tau - 0.5 * jnp.sum(theta_tilde**2)
        return log_prior - 0.5 * jnp.sum(((y - mu - tau * theta_tilde) / sigma) ** 2)

    return Target("eight-schools", logdensity_fn, 10, None, None, _standard_normal, "hierarchical, non-centred")


def _funnel(dim=10, scale=3.0):
    def logdensity_fn(z):
        v, x = z[0], z[1:]
        return -0.5 * (v / scale) ** 2 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * (dim - 1) * v

    variances = np.concatenate([[scale**2], np.full(dim - 1, math.exp(scale**2 / 2))])  # Var x_i = E[e^v]
    return Target("funnel", logdensity_fn, dim, np.zeros(dim), np.diag(variances), _standard_normal, "funnel")


def build_target(name: str) -> Target:
    builders = {
        "gaussian-5d": lambda: _gaussian("gaussian-5d", _rotated(5, 1.0, 10.0, 1), "easy Gaussian"),
        "gaussian-100d": lambda: _gaussian("gaussian-100d", _rotated(100, 1e-2, 1e2, 0), "ill-conditioned Gaussian"),
        "logistic-breast-cancer": _logistic_breast_cancer,
        "linear-diabetes-raw": _linear_diabetes_raw,
        "eight-schools": _eight_schools,
        "funnel": _funnel,
    }
    return builders[name]()


# ------------------------------------------------------------------------------------------ references
def _window_warmup(algorithm, logdensity_fn, keys, positions, num_steps, **extra):
    """Per-chain BlackJAX window adaptation with a dense mass matrix: ``(states, parameters, gradients)``, batched;
    ``gradients`` is the number of leapfrog steps the warm-up took, all chains together."""
    warmup = blackjax.window_adaptation(algorithm, logdensity_fn, is_mass_matrix_diagonal=False, **extra)
    (states, parameters), info = jax.vmap(lambda k, p: warmup.run(k, p, num_steps=num_steps))(keys, positions)
    return states, parameters, jnp.sum(info.info.num_integration_steps)


def _sample_blackjax(make, keys, states, parameters, num_samples):
    """Draw ``num_samples`` per chain with each chain's own BlackJAX kernel ``make(**parameters)``."""

    def one_chain(key, state, params):
        def one_step(state, key):
            state, info = make(**params).step(key, state)
            return state, (state.position, info)

        _, (positions, info) = jax.lax.scan(one_step, state, jax.random.split(key, num_samples))
        return positions, info

    positions, info = jax.vmap(one_chain)(keys, states, parameters)
    return jnp.swapaxes(positions, 0, 1), jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), info)


def reference(target: Target, budget: dict, runs_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``(mean, covariance, source)``: the closed form, else a cached long NUTS run (computed once).

    Per-chain window adaptation can fail for a whole chain (a step size at which every transition diverges; the
    issue saw it lose a quarter of its chains on a hierarchical model), so the reference runs 8 chains and keeps
    those with at most 1 % divergent transitions; how many it kept, their ESS and R-hat are stated."""
    if target.mean is not None:
        correlation = target.covariance / np.outer(*2 * [np.sqrt(np.diag(target.covariance))])
        return target.mean, target.covariance, (
            f"closed form; condition number {np.linalg.cond(target.covariance):.2g}, of the correlation matrix "
            f"{np.linalg.cond(correlation):.2g}")
    num_chains, warmup, samples = 8, budget["reference_warmup"], budget["reference_samples"]
    path = runs_dir / f"reference-{target.name}-{num_chains}x{warmup}+{samples}.npz"
    if not path.exists():
        key_start, key_warmup, key_sample = jax.random.split(jax.random.key(12345), 3)
        positions = jax.random.normal(key_start, (num_chains, target.dim))

        @jax.jit
        def run():
            states, params, _ = _window_warmup(blackjax.nuts, target.logdensity_fn,
                                               jax.random.split(key_warmup, num_chains), positions, warmup)
            draws, info = _sample_blackjax(functools.partial(blackjax.nuts, target.logdensity_fn),
                                           jax.random.split(key_sample, num_chains), states, params, samples)
            return draws, info.is_divergent

        draws, divergent = run()
        keep = np.asarray(divergent).mean(0) <= 0.01
        draws = np.asarray(draws, np.float64)[:, keep]
        diagnostics = mv.evaluate.chain_diagnostics(draws)
        flat = draws.reshape(-1, target.dim)
        np.savez(path, mean=flat.mean(0), covariance=np.cov(flat.T), kept=int(keep.sum()),
                 min_ess=float(np.min(diagnostics.effective_sample_size)),
                 max_rhat=float(np.max(diagnostics.potential_scale_reduction)),
                 divergences=int(np.sum(np.asarray(divergent)[:, keep])))
    saved = np.load(path)
    source = (f"NUTS (dense window adaptation), {int(saved['kept'])} of {num_chains} chains kept (at most 1 % "
              f"divergent) x {samples} draws after {warmup} warm-up: min ESS {float(saved['min_ess']):.0f}, "
              f"max R-hat {float(saved['max_rhat']):.3f}, {int(saved['divergences'])} divergences in the kept chains")
    return saved["mean"], saved["covariance"], source


# -------------------------------------------------------------------------------------------- samplers
class Draws(NamedTuple):
    positions: jax.Array  # (num_samples, num_chains, dim)
    acceptance_rate: jax.Array  # (num_samples, num_chains)
    is_divergent: jax.Array
    num_gradients: jax.Array  # sampling gradient evaluations, all chains together
    warmup_gradients: jax.Array  # warm-up gradient evaluations of the kernels' moves, all chains together
    scale: jax.Array | None  # C, (dim, dim), or per chain (num_chains, dim, dim); None when there is none


def _sample(tuner, rng_key, results, num_samples):
    """Draws with the tuned kernel held fixed from ``results.states``: ``(positions (num_samples, n_chains, d),
    info)``."""
    with warnings.catch_warnings():  # shown, never raised: the benchmark's verdicts judge the draws
        warnings.simplefilter("default", mv.adaptation.AdaptationWarning)
        return tuner.sample(rng_key, results, num_samples)


def _ours(algorithm, tuner_kind, *, searched=False, wrap=None, **options):
    """Our kernel tuned by ``speed_measure`` (lower-triangular C) or ``dual_averaging`` (C = I), then sampled."""

    def sample(rng_key, target, budget, positions):
        grads_per_step = NUM_INTEGRATION_STEPS if algorithm is mv.kernels.hmc else 1
        hmc_options = {"num_integration_steps": NUM_INTEGRATION_STEPS} if algorithm is mv.kernels.hmc else {}
        key_search, key_adapt, key_sample = jax.random.split(rng_key, 3)
        settings = dict(options)
        if searched:
            target_rate = 0.65 if algorithm is mv.kernels.hmc else 0.55  # the tuners' defaults
            settings["initial_step_size"] = mv.adaptation.find_reasonable_step_size(
                key_search, algorithm, target.logdensity_fn, positions, target_acceptance_rate=target_rate,
                **hmc_options)
        if tuner_kind == "speed_measure":
            tuner = mv.adaptation.speed_measure(algorithm, target.logdensity_fn, preconditioner="lower_triangular",
                                                **hmc_options, **settings)
        else:
            tuner = mv.adaptation.dual_averaging(algorithm, target.logdensity_fn, **hmc_options, **settings)
        if wrap is not None:
            tuner = wrap(tuner)
        with warnings.catch_warnings():  # shown, never raised: the benchmark's verdicts judge the draws
            warnings.simplefilter("default", mv.adaptation.AdaptationWarning)
            num_steps = budget["warmup_gradients"] // grads_per_step
            results, _ = tuner.run(key_adapt, positions, num_steps)
        num_samples = budget["sampling_gradients"] // grads_per_step
        draws, info = _sample(tuner, key_sample, results, num_samples)
        # Kernel moves only: the wrapper moves the chains with a second kernel step per update; the speed
        # measure's update also differentiates through its proposal, and the start search takes at most 40 kernel
        # steps, neither counted here.
        moves_per_update = 2 if wrap is mv.adaptation.with_dual_averaged_step_size else 1
        warmup_gradients = num_steps * grads_per_step * moves_per_update * positions.shape[0]
        return Draws(draws, info.acceptance_rate, info.is_divergent,
                     jnp.asarray(num_samples * grads_per_step * positions.shape[0]), jnp.asarray(warmup_gradients),
                     results.parameters.matrix())

    return sample


def _window_peer(kind):
    def sample(rng_key, target, budget, positions):
        num_chains = positions.shape[0]
        key_warmup, key_sample = jax.random.split(rng_key)
        if kind == "nuts":
            algorithm, extra, grads_per_step = blackjax.nuts, {}, None
            num_warmup, num_samples = budget["nuts_warmup"], budget["nuts_samples"]
        else:
            steps = NUM_INTEGRATION_STEPS if kind == "hmc" else 1
            algorithm, extra, grads_per_step = blackjax.hmc, {"num_integration_steps": steps}, steps
            num_warmup = budget["warmup_gradients"] // steps
            num_samples = budget["sampling_gradients"] // steps
        states, params, warmup_gradients = _window_warmup(algorithm, target.logdensity_fn,
                                                          jax.random.split(key_warmup, num_chains), positions,
                                                          num_warmup, **extra)
        draws, info = _sample_blackjax(functools.partial(algorithm, target.logdensity_fn, **extra),
                                       jax.random.split(key_sample, num_chains), states, params, num_samples)
        gradients = (jnp.sum(info.num_integration_steps) if grads_per_step is None
                     else jnp.asarray(num_samples * grads_per_step * num_chains))
        return Draws(draws, info.acceptance_rate, info.is_divergent, gradients, warmup_gradients,
                     jnp.linalg.cholesky(params["inverse_mass_matrix"]))

    return sample


def _chees(rng_key, target, budget, positions):
    key_warmup, key_sample = jax.random.split(rng_key)
    warmup = blackjax.chees_adaptation(target.logdensity_fn, positions.shape[0], mass_matrix_estimation="diagonal")
    (states, params), warmup_info = warmup.run(key_warmup, positions, 0.1, optax.adam(0.025), budget["nuts_warmup"])
    kernel = blackjax.dynamic_hmc(target.logdensity_fn, **params).step
    step = jax.vmap(kernel)

    def one_step(states, key):
        states, info = step(jax.random.split(key, positions.shape[0]), states)
        return states, (states.position, info)

    _, (draws, info) = jax.lax.scan(one_step, states, jax.random.split(key_sample, budget["nuts_samples"]))
    scale = jnp.diag(jnp.sqrt(params["inverse_mass_matrix"]))
    return Draws(draws, info.acceptance_rate, info.is_divergent, jnp.sum(info.num_integration_steps),
                 jnp.sum(warmup_info.info.num_integration_steps), scale)


def _meads(rng_key, target, budget, positions):
    key_warmup, key_sample = jax.random.split(rng_key)
    warmup = blackjax.meads_adaptation(target.logdensity_fn, positions.shape[0])
    (states, params), _ = warmup.run(key_warmup, positions, budget["warmup_gradients"])
    step = jax.vmap(blackjax.ghmc(target.logdensity_fn, **params).step)
    num_samples = budget["sampling_gradients"]

    def one_step(states, key):
        states, info = step(jax.random.split(key, positions.shape[0]), states)
        return states, (states.position, info)

    _, (draws, info) = jax.lax.scan(one_step, states, jax.random.split(key_sample, num_samples))
    divergent = getattr(info, "is_divergent", jnp.zeros_like(info.acceptance_rate, bool))
    return Draws(draws, info.acceptance_rate, divergent, jnp.asarray(num_samples * positions.shape[0]),
                 jnp.asarray(budget["warmup_gradients"] * positions.shape[0]),
                 jnp.diag(params["momentum_inverse_scale"]))


def _oracle(rng_key, target, budget, positions, *, mean, covariance):
    """HMC with the oracle ``C = chol(Sigma)`` held fixed on the target itself: the start h found by
    ``find_reasonable_step_size`` with that C, h dual-averaged (``run(..., initial_parameters=(h, C))``) with a
    jittered step, then the tuned kernel sampled by the same tuner, so adaptation and sampling see the same log
    density. With C exact every whitened direction has the same frequency, so without the jitter a step at which
    L leapfrog steps make one whole turn returns every chain to where it started (and is accepted)."""
    del mean
    chol = jnp.asarray(np.linalg.cholesky(covariance), jnp.float32)
    key_search, key_adapt, key_sample = jax.random.split(rng_key, 3)
    hmc_options = {"num_integration_steps": NUM_INTEGRATION_STEPS}
    tuner = mv.adaptation.dual_averaging(mv.kernels.hmc, target.logdensity_fn, step_size_jitter=STEP_SIZE_JITTER,
                                         **hmc_options)
    start = mv.kernels.Preconditioner.lower_triangular(target.dim, step_size=1.0, scale=chol)
    step_size = mv.adaptation.find_reasonable_step_size(key_search, mv.kernels.hmc, target.logdensity_fn, positions,
                                                        start, target_acceptance_rate=tuner.target_acceptance_rate,
                                                        **hmc_options)
    start = start._replace(log_step_size=jnp.log(step_size).astype(start.log_step_size.dtype))
    with warnings.catch_warnings():  # shown, never raised: the benchmark's verdicts judge the draws
        warnings.simplefilter("default", mv.adaptation.AdaptationWarning)
        results, _ = tuner.run(key_adapt, positions, budget["warmup_gradients"] // NUM_INTEGRATION_STEPS,
                               initial_parameters=start)
    num_samples = budget["sampling_gradients"] // NUM_INTEGRATION_STEPS
    draws, info = _sample(tuner, key_sample, results, num_samples)
    num_steps = budget["warmup_gradients"] // NUM_INTEGRATION_STEPS
    return Draws(draws, info.acceptance_rate, info.is_divergent,
                 jnp.asarray(num_samples * NUM_INTEGRATION_STEPS * positions.shape[0]),
                 jnp.asarray(num_steps * NUM_INTEGRATION_STEPS * positions.shape[0]), chol)


def build_sampler(name: str, mean, covariance) -> Callable:
    mala, hmc = mv.kernels.mala, mv.kernels.hmc
    samplers = {
        "sm-mala": _ours(mala, "speed_measure"),
        "sm-hmc": _ours(hmc, "speed_measure"),
        "sm-mala-searched": _ours(mala, "speed_measure", searched=True),
        "sm-hmc-searched": _ours(hmc, "speed_measure", searched=True),
        "sm-hmc-da-step": _ours(hmc, "speed_measure", wrap=mv.adaptation.with_dual_averaged_step_size),
        "da-mala": _ours(mala, "dual_averaging"),
        "da-hmc": _ours(hmc, "dual_averaging"),
        "da-hmc-jitter": _ours(hmc, "dual_averaging", step_size_jitter=STEP_SIZE_JITTER),
        "nuts-window": _window_peer("nuts"),
        "hmc-window": _window_peer("hmc"),
        "mala-window": _window_peer("mala"),
        "chees": _chees,
        "meads": _meads,
        "hmc-oracle": functools.partial(_oracle, mean=mean, covariance=covariance),
    }
    return samplers[name]


SAMPLER_NOTES = {
    "sm-mala": "ours: speed-measure MALA, lower-triangular C, default settings (run searches the start h, C = I)",
    "sm-hmc": f"ours: speed-measure HMC (L = {NUM_INTEGRATION_STEPS}), lower-triangular C, default settings",
    "sm-mala-searched": "ours: sm-mala given a start h found by find_reasonable_step_size beforehand (the search "
                        "run itself does by default, with other keys)",
    "sm-hmc-searched": "ours: sm-hmc given a start h found by find_reasonable_step_size beforehand",
    "sm-hmc-da-step": "ours: sm-hmc moving with a dual-averaged multiple of h (with_dual_averaged_step_size, its "
                      "default step jitter Uniform(0.5, 1.5))",
    "da-mala": "ours: dual-averaged MALA, C = I",
    "da-hmc": f"ours: dual-averaged HMC (L = {NUM_INTEGRATION_STEPS}), C = I",
    "da-hmc-jitter": f"ours: da-hmc with the step jittered by Uniform(1 -/+ {STEP_SIZE_JITTER})",
    "nuts-window": "BlackJAX NUTS, per-chain dense window adaptation",
    "hmc-window": f"BlackJAX HMC (L = {NUM_INTEGRATION_STEPS}), per-chain dense window adaptation",
    "mala-window": "BlackJAX HMC with L = 1 (= MALA), per-chain dense window adaptation",
    "chees": "BlackJAX ChEES-HMC (many-chain), diagonal mass matrix estimate",
    "meads": "BlackJAX MEADS (many-chain generalised HMC)",
    "hmc-oracle": f"HMC (L = {NUM_INTEGRATION_STEPS}) with C = chol(reference covariance), h dual-averaged, step "
                  f"jittered by Uniform(1 -/+ {STEP_SIZE_JITTER})",
}
OURS_LOWER_TRIANGULAR = ("sm-mala", "sm-hmc", "sm-mala-searched", "sm-hmc-searched", "sm-hmc-da-step")


# ----------------------------------------------------------------------------------------------- metrics
def metrics(draws: Draws, mean: np.ndarray, covariance: np.ndarray) -> dict:
    positions = np.asarray(draws.positions, np.float64)
    if not np.all(np.isfinite(positions)):
        return {"finite": 0.0}
    sd = np.sqrt(np.diag(covariance))
    flat = positions.reshape(-1, positions.shape[-1])
    diagnostics = mv.evaluate.chain_diagnostics(positions)
    ess = np.asarray(diagnostics.effective_sample_size, np.float64)
    min_ess = float(np.min(ess)) if np.all(np.isfinite(ess)) else 0.0
    # Monte Carlo standard errors of each coordinate's mean and sd, from the ESS of x and of (x - mean)^2 (for
    # HMC the two differ: antithetic chains can make the first far larger than the draws, never the second).
    sample_mean, sample_sd = flat.mean(0), flat.std(0)
    squares = (positions - sample_mean) ** 2
    ess_squares = np.asarray(mv.evaluate.chain_diagnostics(squares).effective_sample_size, np.float64)
    se_mean = sample_sd / np.sqrt(np.maximum(ess, 1.0))
    se_sd = squares.reshape(-1, squares.shape[-1]).std(0) / (2 * sample_sd * np.sqrt(np.maximum(ess_squares, 1.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_z = np.abs(sample_mean - mean) / se_mean
        sd_z = np.abs(sample_sd - sd) / se_sd
    result = {
        "finite": 1.0,
        "mean_error": float(np.max(np.abs(sample_mean - mean) / sd)),
        "sd_error": float(np.max(np.abs(sample_sd - sd) / sd)),
        "mean_error_z": float(np.nan_to_num(np.max(mean_z), nan=np.inf)),
        "sd_error_z": float(np.nan_to_num(np.max(sd_z), nan=np.inf)),
        "min_ess": min_ess,
        "min_ess_squares": float(np.min(ess_squares)),
        "min_ess_per_gradient": min_ess / float(draws.num_gradients),
        "gradients_per_chain": float(draws.num_gradients) / positions.shape[1],
        "warmup_gradients_per_chain": float(draws.warmup_gradients) / positions.shape[1],
        "max_rhat": float(np.max(np.asarray(diagnostics.potential_scale_reduction))),
        "acceptance_rate": float(np.mean(np.asarray(draws.acceptance_rate))),
        "divergences": float(np.sum(np.asarray(draws.is_divergent))),
    }
    if draws.scale is not None:
        precision = np.linalg.inv(covariance)
        scales = np.asarray(draws.scale, np.float64)
        scales = scales[None] if scales.ndim == 2 else scales
        conds = [np.linalg.cond(c.T @ precision @ c) for c in scales]
        result["transformed_condition_number"] = float(np.median(conds))
    return result


def verdict(values: dict) -> str:
    """``correct``: mean and sd errors within 0.1 reference sd (the issue's bar) and R-hat below 1.1;
    ``within MC error``: errors above 0.1 but every coordinate's mean and sd within 4 of its own Monte Carlo
    standard errors (from the ESS of ``x`` and of ``(x - mean)^2``), so the budget cannot tell; ``not mixed``: R-hat
    above 1.1; ``wrong``: beyond both; ``failed``: the draws are not finite or the sampler raised."""
    if not values.get("finite"):
        return "failed"
    if values["max_rhat"] > 1.1:
        return "not mixed"
    if max(values["mean_error"], values["sd_error"]) <= CORRECT_WITHIN:
        return "correct"
    if max(values["mean_error_z"], values["sd_error_z"]) <= 4.0:
        return "within MC error"
    return "wrong"


# ------------------------------------------------------------------------------------------------ output
def _machine() -> str:
    try:
        load = ", load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs{load}), jax {jax.__version__} on "
            f"{jax.default_backend()}, blackjax {blackjax.__version__}, commit {commit}")


def _write_results(rows: list[dict], markdown: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write ``posteriors.json`` (the public rows) and ``posteriors.md``; the one place that knows the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{NAME}.json", out_dir / f"{NAME}.md"
    json_path.write_text(json.dumps(rows, indent=1) + "\n")
    md_path.write_text(markdown)
    return [json_path, md_path]


def _format(value, metric):
    if value is None:
        return "-"
    if metric in ("divergences", "warmup_gradients_per_chain", "gradients_per_chain"):
        return f"{value:.0f}"
    if metric in ("min_ess_per_gradient",):
        return f"{value:.2e}"
    if metric in ("transformed_condition_number",):
        return f"{value:.3g}"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


TABLE_METRICS = ("mean_error", "sd_error", "min_ess_per_gradient", "max_rhat", "transformed_condition_number",
                 "acceptance_rate", "divergences", "warmup_gradients_per_chain", "gradients_per_chain", "wall_time_s")


def markdown(results: dict, references: dict, budget_name: str, budget: dict, wall_time: float,
             failures: dict) -> str:
    lines = [f"# {NAME}", "", DESCRIPTION + ".", "",
             f"Budget `{budget_name}`: {budget['num_chains']} chains per sampler, all from the same starts; fixed-L "
             f"samplers {budget['warmup_gradients']} warm-up and {budget['sampling_gradients']} sampling gradient "
             f"evaluations per chain; NUTS and ChEES {budget['nuts_warmup']} warm-up and {budget['nuts_samples']} "
             f"sampling iterations (their ESS divided by the gradients they used). `warmup_gradients_per_chain` and "
             "`gradients_per_chain` count the log-density gradients of each sampler's warm-up and sampling per chain "
             "(for ours, those of the kernels' moves: the dual-averaged-step wrapper moves twice per update, and "
             "neither the speed measure's differentiation through its proposal nor the start search, at most 40 "
             "kernel steps, is counted). HMC uses L = "
             f"{NUM_INTEGRATION_STEPS}. Seed {budget['seed']}, one seed (no std). Machine: {_machine()}. "
             f"Wall time {wall_time / 60:.1f} min. Regenerate: `python experiments/run.py {NAME} "
             f"{'--quick' if budget_name == 'quick' else '--budget ' + budget_name}`.", "",
             "Errors are the largest over coordinates, in reference sds; ESS is BlackJAX's (via "
             "`mv.evaluate.chain_diagnostics`), over the sampling phase of all chains; `cond` is "
             "cond(C^T Sigma^-1 C) (1 = perfect whitening; median over chains for per-chain adaptations); wall time "
             "is warm-up plus sampling, compilation included. Verdicts: `correct` when mean and sd errors are within "
             f"{CORRECT_WITHIN} reference sd and R-hat < 1.1; `within MC error` when they exceed {CORRECT_WITHIN} but "
             "every coordinate's mean and sd lie within 4 of their Monte Carlo standard errors (from the ESS of x and "
             "of (x - mean)^2), so this budget cannot tell; `not mixed` "
             "when R-hat > 1.1; `wrong` otherwise; `failed` for non-finite draws or an error.", ""]
    lines += ["## Samplers", ""] + [f"- `{name}`: {SAMPLER_NOTES[name]}" for name in budget["samplers"]] + [""]
    for target_name, per_sampler in results.items():
        lines += [f"## {target_name}", "", f"Reference: {references[target_name]}.", "",
                  "| sampler | verdict | " + " | ".join(TABLE_METRICS) + " |",
                  "|---|---|" + "---|" * len(TABLE_METRICS)]
        for sampler, values in per_sampler.items():
            cells = [_format(values.get(metric), metric) for metric in TABLE_METRICS]
            lines.append(f"| {sampler} | {verdict(values)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Verdicts", ""] + summary_lines(results) + [""]
    if failures:
        lines += ["## Errors", ""] + [f"- {key}: {message}" for key, message in failures.items()] + [""]
    return "\n".join(lines)


def summary_lines(results: dict) -> list[str]:
    """Sentences computed from the numbers: who wins ESS per gradient, ours against NUTS and ChEES, defaults."""
    lines = []
    for target_name, per_sampler in results.items():
        verdicts = {s: verdict(v) for s, v in per_sampler.items()}
        correct = {s: per_sampler[s] for s, v in verdicts.items() if v == "correct"}
        finite = {s: v for s, v in per_sampler.items() if v.get("finite")}
        if correct:
            best = max(correct, key=lambda s: correct[s]["min_ess_per_gradient"])
            text = (f"- **{target_name}**: best ESS/gradient among correct samplers: `{best}` "
                    f"({correct[best]['min_ess_per_gradient']:.2e})")
        else:
            text = f"- **{target_name}**: no sampler is correct at this budget"
        ours_correct = [s for s in OURS_LOWER_TRIANGULAR if s in correct]
        if ours_correct:
            our_best = max(ours_correct, key=lambda s: correct[s]["min_ess_per_gradient"])
            text += f"; our best correct speed-measure sampler `{our_best}` ({correct[our_best]['min_ess_per_gradient']:.2e})"
            for peer in ("nuts-window", "chees"):
                if peer in correct:
                    ratio = correct[our_best]["min_ess_per_gradient"] / correct[peer]["min_ess_per_gradient"]
                    text += f", {ratio:.2f}x `{peer}`"
                    if peer == "nuts-window":
                        text += " (meets 0.5x NUTS)" if ratio >= 0.5 else " (**below 0.5x NUTS**)"
                elif peer in per_sampler:
                    text += f", no comparison with `{peer}` ({verdicts[peer]})"
        elif any(s in per_sampler for s in OURS_LOWER_TRIANGULAR):
            text += "; **none of our speed-measure samplers is correct**"
        others = sorted(s for s in per_sampler if s not in correct)
        if others:
            text += "; not correct: " + ", ".join(f"`{s}` ({verdicts[s]})" for s in others)
        failed_defaults = [s for s in ("sm-mala", "sm-hmc") if s in per_sampler and s not in correct]
        if failed_defaults:
            text += f"; **default settings not correct** for {', '.join(f'`{s}`' for s in failed_defaults)}"
        lines.append(text + ".")
    return lines


def rows_for(results: dict, wall_time: float) -> list[dict]:
    rows = []
    for target_name, per_sampler in results.items():
        for sampler, values in per_sampler.items():
            for metric, value in values.items():
                rows.append({"experiment": NAME, "dataset": target_name, "method": sampler, "metric": metric,
                             "value": value, "std": None, "num_seeds": 1})
    rows.append({"experiment": NAME, "dataset": "all", "method": "all", "metric": "wall_time_s",
                 "value": wall_time, "std": None, "num_seeds": 1})
    return rows


# --------------------------------------------------------------------------------------------------- run
def run(*, quick: bool = False, out_dir=None, budget: str | None = None) -> list[pathlib.Path]:
    budget_name = "quick" if quick else (budget or "cpu")
    if budget_name not in BUDGETS:
        raise ValueError(f"unknown budget {budget_name!r}; choose one of {', '.join(BUDGETS)}")
    settings = BUDGETS[budget_name]
    results_dir = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path.cwd() / "results"
    runs_dir = (pathlib.Path(out_dir) / "runs" if out_dir is not None else pathlib.Path.cwd() / "runs") / NAME
    runs_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results, references, failures = {}, {}, {}
    key = jax.random.key(settings["seed"])
    targets = [build_target(name) for name in settings["targets"]]  # a missing data set stops here, not later
    for target_index, (target_name, target) in enumerate(zip(settings["targets"], targets)):
        mean, covariance, references[target_name] = reference(target, settings, runs_dir)
        key_target = jax.random.fold_in(key, target_index)
        positions = target.start(jax.random.fold_in(key_target, 0), settings["num_chains"], np.asarray(mean),
                                 np.sqrt(np.diag(covariance)))
        results[target_name] = {}
        for sampler_index, sampler_name in enumerate(settings["samplers"]):
            sampler = build_sampler(sampler_name, mean, covariance)
            tic = time.perf_counter()
            try:
                draws = jax.jit(lambda k, p: sampler(k, target, settings, p))(
                    jax.random.fold_in(key_target, 1 + sampler_index), positions)
                draws = jax.block_until_ready(draws)
                values = metrics(draws, np.asarray(mean), np.asarray(covariance))
            except Exception as error:  # a peer that crashes is reported, not hidden  # noqa: BLE001
                failures[f"{target_name}/{sampler_name}"] = f"{type(error).__name__}: {str(error)[:300]}"
                values = {"finite": 0.0}
            values["wall_time_s"] = time.perf_counter() - tic
            results[target_name][sampler_name] = values
            print(f"{target_name:16s} {sampler_name:18s} {verdict(values):10s} "
                  + " ".join(f"{m}={_format(values.get(m), m)}" for m in TABLE_METRICS), flush=True)
    wall_time = time.perf_counter() - start
    text = markdown(results, references, budget_name, settings, wall_time, failures)
    return _write_results(rows_for(results, wall_time), text, results_dir)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    arguments = parser.parse_args()
    for path in run(quick=arguments.quick, out_dir=arguments.out, budget=arguments.budget):
        print(f"wrote {path}")
