r"""``hvae-gaussian``: the Gaussian model of Caterini, Doucet and Sejdinovic (2018, section 4.1, Figure 1).

One latent ``z ~ N(0, I_d)`` is shared by ``N = 10000`` observations ``x_i | z ~ N(z + Delta, diag(sigma^2))``;
the generative parameters ``theta = (Delta, sigma)`` are learnt by maximising an ELBO, and the experiment
reports the squared errors ``|Delta_hat - Delta|^2`` and ``|sigma_hat - sigma|^2`` at the end of training.
True values as in the paper's code: ``Delta_j = (j - (d - 1)/2) / 5`` and
``sigma_j = 36 (j - (d - 1)/2)^2 / (10 (d - 1)^2) + 0.1`` (``sigma = 1`` for d = 1).

Variational families (the paper's code, ``experiment_classes.py``):

- ``vb``: mean-field ``q(z) = N(mu, diag(s^2))``, its ELBO in closed form;
- ``nf-K``: a planar flow ``z <- z + u tanh(w^T z + b)`` applied K times with one shared ``(u, w, b)`` (as the
  paper's code does) to ``z_0 ~ N(0, I)``, ``u`` reparameterised to keep it invertible;
- ``hvae-K``: :func:`mcmcvae.methods.hvae.flow` from ``z_0 ~ N(0, I)`` with one step-size vector for all K
  steps and the fixed quadratic tempering (learnt ``beta_0``, started at 1/25), the Rao-Blackwellised bound;
  ``hvae-K-untempered`` the same with ``beta_k = 1``.

Everything is trained by RMSprop (learning rate 1e-3) for 30000 iterations with 10 Monte Carlo samples per ELBO
estimate, from ``Delta = 0``, ``log sigma = 3``, ``epsilon = 0.005`` (paper code), over 10 data sets per
dimension. The log joint uses the sufficient statistics ``sum_i x_i`` and ``sum_i x_i^2``.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mcmcvae as mv

DESCRIPTION = "HVAE paper's Gaussian model (N=10000): error of recovered (Delta, sigma), VB vs planar NF vs HVAE"
NAME = "hvae-gaussian"
METHODS = {  # name -> (family, K, tempering)
    "vb": ("vb", 0, None), "nf-1": ("nf", 1, None), "nf-30": ("nf", 30, None),
    "hvae-1": ("hvae", 1, "fixed"), "hvae-10": ("hvae", 10, "fixed"),
    "hvae-1-untempered": ("hvae", 1, "none"), "hvae-10-untempered": ("hvae", 10, "none"),
}
FULL = {"dims": (1, 2, 3, 5, 11, 25, 51, 101, 201, 301), "num_data": 10_000, "num_tests": 10,
        "num_iterations": 30_000, "num_mc_samples": 10, "learning_rate": 1e-3, "methods": tuple(METHODS)}
QUICK = {"dims": (3,), "num_data": 10_000, "num_tests": 2, "num_iterations": 200, "num_mc_samples": 10,
         "learning_rate": 1e-3, "methods": ("vb", "nf-1", "hvae-1", "hvae-1-untempered")}


def true_parameters(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Delta, sigma)`` of the paper's code for dimension ``dim``."""
    centred = np.arange(dim, dtype=np.float64) - (dim - 1) / 2
    sigma = np.ones(1) if dim == 1 else 36 / (10 * (dim - 1) ** 2) * centred**2 + 0.1
    return centred / 5, sigma


def sufficient_statistics(rng: np.random.Generator, dim: int, num_data: int) -> np.ndarray:
    """Draw ``z`` and ``N`` observations; return ``(sum_i x_i, sum_i x_i^2)`` stacked, ``(2, d)``."""
    delta, sigma = true_parameters(dim)
    z = rng.normal(size=dim)
    x = z + delta + sigma * rng.normal(size=(num_data, dim))
    return np.stack([x.sum(0), (x**2).sum(0)]).astype(np.float32)


def log_joint(theta, stats, z, num_data: int):
    r""":math:`\log p(z) + \sum_i \log N(x_i; z + \Delta, \mathrm{diag}(\sigma^2))` from the sufficient statistics."""
    total, total_sq = stats
    shift = z + theta["delta"]
    inv_var = jnp.exp(-2.0 * theta["log_sigma"])
    dim = z.shape[-1]
    quadratic = jnp.sum((total_sq - 2.0 * shift * total + num_data * shift**2) * inv_var)
    return (-0.5 * jnp.sum(z**2) - num_data * jnp.sum(theta["log_sigma"]) - 0.5 * quadratic
            - 0.5 * (num_data + 1) * dim * math.log(2 * math.pi))


def _planar(phi, z):
    w, b = phi["w"], phi["b"]
    wu = jnp.dot(w, phi["u"])
    u = phi["u"] + (jax.nn.softplus(wu) - 1.0 - wu) * w / jnp.sum(w**2)  # w^T u > -1: invertible
    activation = jnp.tanh(jnp.dot(w, z) + b)
    return z + u * activation, jnp.log(jnp.abs(1.0 + (1.0 - activation**2) * jnp.dot(w, u)))


def make_elbo(family: str, num_steps: int, tempering, dim: int, num_data: int, num_mc_samples: int):
    """``elbo(theta, phi, stats, key) -> (estimate, is_finite)`` for one variational family."""
    from mcmcvae.methods import hvae

    def target(theta, stats):
        return lambda z: log_joint(theta, stats, z, num_data)

    if family == "vb":
        def elbo(theta, phi, stats, key):
            del key
            total, total_sq = stats
            mean, var = phi["mu"], jnp.exp(2.0 * phi["log_s"])
            shift = mean + theta["delta"]
            inv_var = jnp.exp(-2.0 * theta["log_sigma"])
            quadratic = jnp.sum((total_sq - 2.0 * shift * total + num_data * (shift**2 + var)) * inv_var)
            expected = (-0.5 * jnp.sum(mean**2 + var) - num_data * jnp.sum(theta["log_sigma"]) - 0.5 * quadratic
                        - 0.5 * (num_data + 1) * dim * math.log(2 * math.pi))
            entropy = jnp.sum(phi["log_s"]) + 0.5 * dim * (1.0 + math.log(2 * math.pi))
            return expected + entropy, jnp.asarray(True)
        return elbo

    if family == "nf":
        def one(theta, phi, stats, key):
            z0 = jax.random.normal(key, (dim,))
            z, log_det = z0, 0.0
            for _ in range(num_steps):
                z, step_log_det = _planar(phi, z)
                log_det = log_det + step_log_det
            log_q0 = -0.5 * jnp.sum(z0**2) - 0.5 * dim * math.log(2 * math.pi)
            return log_joint(theta, stats, z, num_data) - log_q0 + log_det, jnp.asarray(True)
    else:
        def one(theta, phi, stats, key):
            k_z, k_rho = jax.random.split(key)
            eps = hvae.step_sizes(phi, num_steps)
            initial_scale, factors = hvae.momentum_scales(phi, num_steps, tempering)
            _, rho_k, log_joint_k, finite = hvae.flow(
                target(theta, stats), jax.random.normal(k_z, (dim,)), jax.random.normal(k_rho, (dim,)), eps,
                initial_scale, factors)
            # eq. (12) with q0 = N(0, I): its entropy plus d/2 is d + (d/2) log 2 pi
            return log_joint_k - 0.5 * jnp.sum(rho_k**2) + dim + 0.5 * dim * math.log(2 * math.pi), finite

    def elbo(theta, phi, stats, key):
        values, finite = jax.vmap(lambda k: one(theta, phi, stats, k))(jax.random.split(key, num_mc_samples))
        return jnp.mean(values), jnp.all(finite)

    return elbo


def init_variational(family: str, num_steps: int, tempering, dim: int, key):
    from mcmcvae.methods import hvae

    if family == "vb":
        return {"mu": jnp.zeros(dim), "log_s": jnp.ones(dim)}
    if family == "nf":
        k_u, k_w = jax.random.split(key)
        return {"u": 0.1 * jax.random.truncated_normal(k_u, -2.0, 2.0, (dim,)),
                "w": 0.1 * jax.random.truncated_normal(k_w, -2.0, 2.0, (dim,)), "b": jnp.asarray(0.1)}
    return hvae.init_flow(dim, num_steps, tempering=tempering, share_step_sizes=True, initial_step_size=0.005,
                          initial_inverse_temperature=1 / 25)


def train(name: str, dim: int, stats: np.ndarray, keys, budget: dict):
    """Train one family on every data set at once (``vmap``); returns the final ``(Delta, sigma)``, each
    ``(num_tests, d)``, and the number of skipped (non-finite) updates per data set."""
    family, num_steps, tempering = METHODS[name]
    elbo = make_elbo(family, num_steps, tempering, dim, budget["num_data"], budget["num_mc_samples"])
    optimiser = optax.apply_if_finite(optax.rmsprop(budget["learning_rate"]), max_consecutive_errors=10**9)

    def fit(stats, key):
        k_init, k_train = jax.random.split(key)
        variables = ({"delta": jnp.zeros(dim), "log_sigma": jnp.full(dim, 3.0)},
                     init_variational(family, num_steps, tempering, dim, k_init))

        def loss(v, k):
            value, finite = elbo(*v, stats, k)
            return -jnp.where(finite, value, jnp.nan)

        def body(carry, i):
            v, opt = carry
            grads = jax.grad(loss)(v, jax.random.fold_in(k_train, i))
            updates, opt = optimiser.update(grads, opt, v)
            return (optax.apply_updates(v, updates), opt), None

        (v, opt), _ = jax.lax.scan(body, (variables, optimiser.init(variables)), jnp.arange(budget["num_iterations"]))
        return v[0]["delta"], jnp.exp(v[0]["log_sigma"]), opt.total_notfinite

    return jax.jit(jax.vmap(fit))(jnp.asarray(stats), keys)


def run(*, quick: bool = False, out_dir=None):
    budget = QUICK if quick else FULL
    rows, body = [], []
    for dim in budget["dims"]:
        rng = np.random.default_rng(12345 + dim)
        stats = np.stack([sufficient_statistics(rng, dim, budget["num_data"]) for _ in range(budget["num_tests"])])
        delta, sigma = true_parameters(dim)
        keys = jax.random.split(jax.random.key(dim), budget["num_tests"])
        for name in budget["methods"]:
            tic = time.perf_counter()
            delta_hat, sigma_hat, skipped = train(name, dim, stats, keys, budget)
            seconds = time.perf_counter() - tic
            errors = {"delta_squared_error": np.sum((np.asarray(delta_hat) - delta) ** 2, -1),
                      "sigma_squared_error": np.sum((np.asarray(sigma_hat) - sigma) ** 2, -1)}
            errors["theta_squared_error"] = errors["delta_squared_error"] + errors["sigma_squared_error"]
            for metric, values in errors.items():
                mean, std = mv.results.summarise(values)
                rows.append(mv.results.row(NAME, f"gaussian-d{dim}", name, metric, mean, std, budget["num_tests"],
                                           dim=dim, per_test=values.tolist(),
                                           skipped_updates=np.asarray(skipped).tolist(), seconds=seconds, quick=quick,
                                           budget={k: v for k, v in budget.items() if k not in ("dims", "methods")}))
            body.append([dim, name, *(f"{np.mean(errors[m]):.3g} ({np.std(errors[m]):.2g})" for m in errors),
                         int(np.sum(skipped))])
    table = mv.results.markdown_table(
        ["d", "method", "|Delta error|^2", "|sigma error|^2", "theta error", "skipped updates"], body)
    markdown = f"""# hvae-gaussian: recovering (Delta, sigma) in the HVAE paper's Gaussian model

Regenerate with `python experiments/run.py hvae-gaussian` (this file and `hvae-gaussian.json`).
{'**Quick run: tiny budget, for smoke testing only; these numbers mean nothing.**' if quick else ''}

Mean (standard deviation) over {budget['num_tests']} data sets of N = {budget['num_data']} observations each.

{table}

**Setting.** z ~ N(0, I_d) shared by all observations, x_i ~ N(z + Delta, diag(sigma^2)); dimensions
{', '.join(map(str, budget['dims']))}; RMSprop (learning rate {budget['learning_rate']}) for
{budget['num_iterations']} iterations with {budget['num_mc_samples']} Monte Carlo samples per ELBO estimate; start
Delta = 0, log sigma = 3; HVAE epsilon = 0.005 (at most 0.5), beta_0 = 1/25; NF planar with one shared (u, w, b)
as in the paper's code. These are the paper's settings (its code's `conf.py`) except for the number of dimensions
and data sets in a quick run. A skipped update is one whose ELBO estimate left the finite numbers.

**Machine.** {mv.results.machine()}; code at revision {mv.results.git_revision()}.

**Published.** Caterini et al. (2018) show these errors only as a plot (Figure 1, log scale against d, averaged
over their 10 data sets), without a table, so no published numbers are quoted beside ours: compare the ordering
of the methods and the trend with d against their figure.
"""
    return mv.results.write_results(NAME, rows, markdown, out_dir)
