"""``vcd``: VAE, Hoffman (2017), VCD, gradMALA and gradHMC on binarised MNIST and Fashion-MNIST.

Setting (Ruiz and Titsias 2019, section 5.2): pixels thresholded at 0.5, d_z = 10, 200-200 ReLU MLPs, Bernoulli
likelihood, batch 100. Every MCMC method starts from the same VAE trained for ``vae_epochs`` and then trains for
``mcmc_epochs`` (the ``mcmcvae train --epochs E --mcmc-epochs M`` schedule); ``vae`` continues as a VAE for the
same ``mcmc_epochs``. ``hoffman`` and ``vcd`` use t = 8 HMC transitions of L = 5 leapfrog steps (step size
adapted towards acceptance 0.9); ``gradmala``/``gradhmc`` the library's defaults.

Test log-likelihood by two protocols:

- **VCD protocol** (their code, ``compute_llh_vae_explicit[_useHMC].m``): the best of three importance-sampling
  estimates with S = 20000 samples each, from (0) q0 with its standard deviation times 1.2, (1) a Gaussian centred
  on the mean of 300 HMC samples (after 300 burn-in transitions started at the encoder mean, step size adapted
  during burn-in) with the encoder's standard deviation times 1.2, (2) the same mean with the samples' standard
  deviation times 1.2;
- **ours**: the method's own proposal (:meth:`Method.proposal`) with its variance times tau = 1.5, S = 10000.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import mcmcvae as mv

import common
import table1_loglik

DESCRIPTION = "vae/hoffman/vcd/gradmala/gradhmc on binarised MNIST and Fashion-MNIST: test LL by two protocols"
NAME = "vcd"
# Hirt et al. (2024)'s schedule (as in table1-loglik): VAE epochs and learning rate per dataset, then 10 epochs.
SCHEDULE = {"mnist": {"vae_epochs": 90, "learning_rate": 1e-3},
            "fashion_mnist": {"vae_epochs": 290, "learning_rate": 5e-3}}
FULL = {"datasets": ("mnist", "fashion_mnist"), "methods": ("vae", "hoffman", "vcd", "gradmala", "gradhmc"),
        "vae_epochs": None, "mcmc_epochs": 10, "train_size": None, "test_images": None,
        "num_samples_ours": 10_000, "num_samples_vcd": 20_000, "burn_in": 300, "sampling": 300, "seed": 0}
# The quick form skips the VAE pre-training (zero epochs) and trains vcd alone: every method runs the same code.
QUICK = {"datasets": ("mnist",), "methods": ("vcd",), "vae_epochs": 0, "mcmc_epochs": 1,
         "train_size": 300, "test_images": 20, "num_samples_ours": 32, "num_samples_vcd": 32, "burn_in": 5,
         "sampling": 5, "seed": 0}
# What fits a 2-core CPU in about an hour: 20 VAE + 5 MCMC epochs (3000 iterations: vcd's control variate turns
# per-point in the last epoch), evaluation on 1000 test images with S = 1000 (ours) and 2000 (VCD protocol).
# The MCMC phase runs at table1-loglik's cpu rates (pre-training keeps the schedule's): at this schedule the
# paper's 5e-3 on Fashion-MNIST makes vcd diverge and lowers gradhmc far below vae (results/README.md), and the
# rates were chosen on a validation split of the training set for every method (table1-lr).
CPU = {**FULL, "vae_epochs": 20, "mcmc_epochs": 5, "test_images": 1000, "num_samples_ours": 1000,
       "num_samples_vcd": 2000,
       **{key: table1_loglik.BUDGETS["cpu"][key] for key in ("mcmc_learning_rates", "mcmc_learning_rate_reason")}}
BUDGETS = {"paper": FULL, "cpu": CPU, "quick": QUICK}
# Ruiz and Titsias (2019), Table 2 (test log-likelihood, nats)
PUBLISHED = {("mnist", "vae"): -111.20, ("mnist", "hoffman"): -103.61, ("mnist", "vcd"): -101.26,
             ("fashion_mnist", "vae"): -127.43, ("fashion_mnist", "hoffman"): -121.86,
             ("fashion_mnist", "vcd"): -121.11}


def hmc_proposals(rng_key, model, params, images, *, log_step_size, burn_in: int, sampling: int,
                  num_integration_steps: int = 5, target_acceptance_rate: float = 0.9):
    """The VCD protocol's chain: from the encoder mean, ``burn_in`` HMC transitions adapting the step size, then
    ``sampling`` transitions whose mean and standard deviation are returned, ``(n, d)`` each."""
    from mcmcvae.methods.vcd import run_hmc

    loc, _ = model.encode(params, images)
    k_burn, k_sample = jax.random.split(rng_key)

    def logdensity(z, x):
        return model.log_joint(params, x, z)

    options = {"num_integration_steps": num_integration_steps, "target_acceptance_rate": target_acceptance_rate}
    z, log_h, _, _ = run_hmc(k_burn, logdensity, images, loc, log_step_size, num_steps=burn_in,
                             num_adaptation_steps=burn_in, **options)

    def one(carry, i):
        z, total, total_sq = carry
        z, _, _, _ = run_hmc(jax.random.fold_in(k_sample, i), logdensity, images, z, log_h, num_steps=1, **options)
        return (z, total + z, total_sq + z**2), None

    (_, total, total_sq), _ = jax.lax.scan(one, (z, jnp.zeros_like(z), jnp.zeros_like(z)), jnp.arange(sampling))
    mean = total / sampling
    std = jnp.sqrt(jnp.maximum(total_sq / sampling - mean**2, 0.0) * sampling / max(sampling - 1, 1))
    return mean, jnp.maximum(std, 1e-4)


_CHAIN_FNS: dict = {}


def evaluate(rng_key, model, method, params, state, images, *, num_samples_ours: int, num_samples_vcd: int,
             burn_in: int, sampling: int, log_step_size, batch_size: int = 100) -> dict:
    """Test log-likelihood by ours (the method's proposal, variance x 1.5) and by the VCD protocol (best of three
    proposals, standard deviation x 1.2): dataset means in nats, and the per-image standard error of ours."""
    from mcmcvae.evaluate.runs import method_proposals

    images = np.asarray(images, np.float32)
    k_ours, k_chain, k_is = jax.random.split(rng_key, 3)
    loc_ours, scale_ours = method_proposals(k_ours, model, method, params, state, images, batch_size=batch_size)
    if model not in _CHAIN_FNS:
        _CHAIN_FNS[model] = jax.jit(
            lambda k, p, x, log_h, burn, samp: hmc_proposals(k, model, p, x, log_step_size=log_h, burn_in=burn,
                                                             sampling=samp), static_argnums=(4, 5))
    chain, encode = _CHAIN_FNS[model], jax.jit(model.encode)
    hmc_mean, hmc_std, enc_loc, enc_scale = [], [], [], []
    for b, start in enumerate(range(0, len(images), batch_size)):
        batch = jnp.asarray(images[start:start + batch_size])
        mean, std = chain(jax.random.fold_in(k_chain, b), params, batch, jnp.asarray(log_step_size, jnp.float32),
                          burn_in, sampling)
        loc, scale = encode(params, batch)
        for store, value in zip((hmc_mean, hmc_std, enc_loc, enc_scale), (mean, std, loc, scale)):
            store.append(np.asarray(value))
    hmc_mean, hmc_std, enc_loc, enc_scale = (np.concatenate(a) for a in (hmc_mean, hmc_std, enc_loc, enc_scale))
    proposals = {"ours": (loc_ours, scale_ours * math.sqrt(1.5)),
                 "q0": (enc_loc, 1.2 * enc_scale),
                 "hmc_mean_encoder_std": (hmc_mean, 1.2 * enc_scale),
                 "hmc_mean_hmc_std": (hmc_mean, 1.2 * hmc_std)}
    result = {}
    for i, (label, (loc, scale)) in enumerate(proposals.items()):
        per_image = common.importance_log_likelihoods(jax.random.fold_in(k_is, i), model, params, images, loc, scale,
                                               num_samples=num_samples_vcd if label != "ours" else num_samples_ours,
                                               batch_size=batch_size)
        result[label] = float(per_image.mean())
        if label == "ours":
            result["ours_standard_error"] = float(per_image.std(ddof=1) / np.sqrt(len(per_image)))
    result["vcd_protocol"] = max(result[k] for k in ("q0", "hmc_mean_encoder_std", "hmc_mean_hmc_std"))
    return result


def _method(name: str, num_data: int, learning_rate: float):
    import mcmcvae as mv

    # vcd keeps one control variate per training image (the trainer passes each batch's indices)
    extra = {"num_data": num_data} if name == "vcd" else {}
    return mv.methods.build(name, learning_rate=learning_rate, **extra)


def _rates_text(budget: dict, rates: dict) -> str:
    """How fast each dataset's MCMC phase learnt, and why when a budget overrides the schedule's rate."""
    parts = []
    for dataset, rate in rates.items():
        default = SCHEDULE[dataset]["learning_rate"]
        reason = budget.get("mcmc_learning_rate_reason", {}).get(dataset)
        parts.append(f"{dataset} at {rate:g}" + ("" if rate == default else
                                                  f" (overriding the schedule's {default:g}: this rate {reason})"))
    return "; the MCMC phase's learning rate: " + "; ".join(parts)


def run_dataset(dataset: str, *, quick: bool = False, out_dir=None, budget: str | None = None) -> list[dict]:
    """Train and evaluate every method on one dataset; returns its result rows (two per method, one per protocol).

    Runs resume from their checkpoints and evaluations are cached beside them (``eval.json``), so the datasets can
    run side by side in separate processes and the final :func:`run` only collects them.
    """
    import mcmcvae as mv
    from mcmcvae.data import load_images
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    seed = budget["seed"]
    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=10, hidden_sizes=(200, 200))
    runs = common.runs_dir(NAME, out_dir) / budget_name
    rows = []
    train = load_images(dataset, "train", binarize="static", num_images=budget["train_size"])
    test = load_images(dataset, "test", binarize="static", num_images=budget["test_images"])
    config = {"dataset": dataset, "train_size": budget["train_size"]}
    learning_rate = SCHEDULE[dataset]["learning_rate"]
    mcmc_lr = common.mcmc_learning_rate(budget, dataset, learning_rate)
    # runs at an overridden rate keep their own directories, so they never resume from runs at another rate
    suffix = "" if mcmc_lr == learning_rate else f"-mcmclr{mcmc_lr:g}"
    vae_epochs = SCHEDULE[dataset]["vae_epochs"] if budget["vae_epochs"] is None else budget["vae_epochs"]
    # an interrupted run resumes from its last checkpoint; a finished one is restored
    pretrained, _, _ = mv.train.fit(
        model,
        [Phase(mv.methods.build("vae", learning_rate=learning_rate), vae_epochs)], train,
        run_dir=runs / f"{dataset}-vae-pretrain-seed{seed}", seed=seed,
        progress=not quick, extra_config=config)
    for name in budget["methods"]:
        method = _method(name, len(train), mcmc_lr)
        run_dir = runs / f"{dataset}-{name}{suffix}-seed{seed}"
        # every method, vae included, continues from the same pre-trained VAE (each with a fresh optimiser)
        params, state, train_seconds = mv.train.fit(
            model, [Phase(method, budget["mcmc_epochs"])], train, run_dir=run_dir, seed=seed, params=pretrained,
            progress=not quick, extra_config=config)
        log_h = state["log_step_size"] if isinstance(state, dict) and "log_step_size" in state else \
            math.log(0.5 / model.latent_dim)
        protocol = {key: budget[key] for key in ("test_images", "num_samples_ours", "num_samples_vcd",
                                                 "burn_in", "sampling")}
        result = mv.results.cached_evaluation(
            run_dir / "eval.json", {**protocol, "epochs": budget["mcmc_epochs"]},
            lambda: evaluate(jax.random.key(10_000 + seed), model, method, params, state, test,
                             num_samples_ours=budget["num_samples_ours"],
                             num_samples_vcd=budget["num_samples_vcd"], burn_in=budget["burn_in"],
                             sampling=budget["sampling"], log_step_size=log_h))
        published = PUBLISHED.get((dataset, name))
        extra = {"budget": {k: v for k, v in budget.items() if k not in ("datasets", "methods")},
                 "budget_name": budget_name, "quick": quick,
                 "published": published, "train_seconds": train_seconds, "mcmc_learning_rate": mcmc_lr}
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood", result["ours"], None, 1,
                                   protocol="ours: method proposal, variance x 1.5",
                                   standard_error=result["ours_standard_error"], **extra))
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood_vcd_protocol", result["vcd_protocol"],
                                   None, 1, protocol="VCD: best of three IS estimates, std x 1.2",
                                   estimates={k: result[k] for k in ("q0", "hmc_mean_encoder_std",
                                                                 "hmc_mean_hmc_std")}, **extra))
    return rows


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    """Train and evaluate every method; ``budget`` is ``paper`` (default), ``cpu`` or, with ``quick``, ``quick``."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    seed = budget["seed"]
    rows = [row for dataset in budget["datasets"] for row in run_dataset(dataset, out_dir=out_dir, budget=budget_name)]
    ours = [r for r in rows if r["metric"] == "test_log_likelihood"]
    vcd_protocol = {(r["dataset"], r["method"]): r for r in rows if r["metric"] == "test_log_likelihood_vcd_protocol"}
    body = []
    for r in ours:
        other = vcd_protocol[(r["dataset"], r["method"])]
        body.append([r["dataset"], r["method"], f"{r['value']:.2f} +- {r['standard_error']:.2f}",
                     f"{other['value']:.2f}", ", ".join(f"{v:.2f}" for v in other["estimates"].values()),
                     "n/a" if r["published"] is None else f"{r['published']:.2f}"])
    timings = {(r["dataset"], r["method"]): r["train_seconds"] for r in ours}
    rates = {r["dataset"]: r["mcmc_learning_rate"] for r in ours}
    table = mv.results.markdown_table(
        ["dataset", "method", "ours (tau = 1.5)", "VCD protocol (best)",
         "VCD protocol: q0, HMC mean + enc. std, HMC mean + HMC std", "published (Ruiz and Titsias 2019)"], body)
    option = {"quick": " --quick", "paper": ""}.get(budget_name, f" --budget {budget_name}")
    cut = ("" if budget_name in ("paper", "quick") else
           f"**Budget `{budget_name}`, cut from the paper's:** {budget['vae_epochs']} VAE epochs (Hirt et al.'s "
           f"schedule: MNIST 90, Fashion-MNIST 290) then {budget['mcmc_epochs']} epochs per method (10); "
           f"{budget['test_images']} test images (10000); S = {budget['num_samples_ours']} for ours (10000) and "
           f"{budget['num_samples_vcd']} for the VCD protocol (20000).\n")
    markdown = f"""# vcd: VCD and Hoffman against VAE and the speed-measure methods

Regenerate with `python experiments/run.py vcd{option}` (this file and `vcd.json`).
{'**Quick run: tiny budget, for smoke testing only; these numbers mean nothing.**' if quick else ''}
{cut}

{table}

**Setting.** {', '.join(budget['datasets'])}, pixels thresholded at 0.5, d_z = 10, 200-200 ReLU MLPs, Bernoulli
likelihood, batch 100, Adam. A VAE is trained for {'MNIST 90 / Fashion-MNIST 290' if budget['vae_epochs'] is None else budget['vae_epochs']} epochs
(learning rate MNIST 1e-3, Fashion-MNIST 5e-3, Hirt et al. 2024's schedule)
{'on the first ' + str(budget['train_size']) + ' training images' if budget['train_size'] else 'on all 60000 training images'};
each method, `vae` included, then trains from it for {budget['mcmc_epochs']} epochs with a fresh optimiser{_rates_text(budget, rates)}.
hoffman and vcd: t = 8 HMC transitions of L = 5 leapfrog steps, step size from 0.5 / d adapted towards acceptance
0.9 (h <- h (1 + 0.01 (a - 0.9) / 0.9)) after every transition; vcd's control variate is global for the first
3000 iterations, then per data point. Evaluation on {'the first ' + str(budget['test_images']) if budget['test_images'] else 'all 10000'}
test images: ours with S = {budget['num_samples_ours']}; the VCD protocol with S = {budget['num_samples_vcd']} and
{budget['burn_in']} + {budget['sampling']} HMC transitions. Seed {seed}.

**Machine.** {mv.results.machine()}; code at revision {mv.results.git_revision()}; training time per method
{', '.join(f'{d}/{m} {s / 60:.1f} min' for (d, m), s in timings.items())}.

**Published.** Ruiz and Titsias (2019) trained each method for 400000 iterations (batch 100, RMSprop-like step
sizes 5e-4) from scratch, not from a pre-trained VAE, and report the VCD protocol's estimate. Our schedule is the
one of `mcmcvae train`; differences of a few nats between schedules are expected.
"""
    return mv.results.write_results(NAME, rows, markdown, out_dir)
