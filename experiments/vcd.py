"""``vcd``: VAE, Hoffman (2017), VCD, gradMALA and gradHMC on binary MNIST and Fashion-MNIST.

Setting (Ruiz and Titsias 2019, section 5.2): d_z = 10, 200-200 ReLU MLPs, Bernoulli likelihood, batch 100. Two
binarisations of MNIST: thresholded at 0.5 (Hirt et al.'s code, as table1-loglik) and a fixed stochastic
binarisation (each pixel drawn once as Bernoulli(intensity), one draw for train and one for test:
:func:`mcmcvae.data.load_fixed_binarization`), the kind of data of the VCD paper's MNIST numbers (-111.20 / -103.61
/ -101.26), the only one on which they can be compared (theirs is Larochelle and Murray's draw, 50000 training
images, not obtainable here; ours another draw, 60000); Fashion-MNIST thresholded at 0.5, as theirs. Every MCMC
method starts from the same VAE trained for ``vae_epochs`` and then trains for ``mcmc_epochs`` (the
``mcmcvae train --epochs E --mcmc-epochs M`` schedule); ``vae`` continues as a VAE for the same ``mcmc_epochs``.
``hoffman`` and ``vcd`` use t = 8 HMC transitions of L = 5 leapfrog steps (step size adapted towards acceptance
0.9); ``gradmala``/``gradhmc`` the library's defaults. vcd's per-point control variates switch on after
:data:`CONTROL_VARIATE_WAIT_FRACTION` of the MCMC iterations (:func:`control_variate_wait`), so they are in use for
most of the MCMC phase in every budget (the paper's wait, 3000 of its 400000 iterations, would outlast a short run).

Test log-likelihood by two protocols, on a random sample of test images (fixed seed) or all of them:

- **VCD protocol** (their code, ``compute_llh_vae_explicit[_useHMC].m``): the best of three importance-sampling
  estimates with S = 20000 samples each, from (0) q0 with its standard deviation times 1.2, (1) a Gaussian centred
  on the mean of 300 HMC samples (after 300 burn-in transitions started at the encoder mean, step size adapted
  during burn-in from the method's learnt step size, or 0.5 / d for the methods without one) with the encoder's
  standard deviation times 1.2, (2) the same mean with the samples' standard
  deviation times 1.2; the estimator of this experiment's verdicts (:data:`VERDICT_ESTIMATOR`), as the published
  numbers use it (their ``demo_main.m`` computes all three and stores (2) as its test log-likelihood; the rows
  keep all three under ``estimates``, so that reading can be recomputed);
- **ours**: the method's own proposal (:meth:`Method.proposal`) with its variance times tau = 1.5, S = 10000.

Verdicts (:data:`CLAIMS`, and each method against its published number) are computed from the per-seed values
paired by seed (:func:`mcmcvae.results.compare_seeds`, 95% t intervals over seeds).
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
# (dataset, binarization) cases; binarizations as common.BINARIZATIONS.
CASES = (("mnist", "threshold"), ("mnist", "fixed_stochastic"), ("fashion_mnist", "threshold"))
SEEDS = (0, 1, 2, 3, 4)
# The estimator of the verdicts, decided before any run: the VCD protocol, the one the published numbers use.
VERDICT_ESTIMATOR = "vcd_protocol"
# vcd's control variates turn per point after this fraction of the MCMC iterations.
CONTROL_VARIATE_WAIT_FRACTION = 0.1
# (a, b): "a has a higher test log-likelihood than b".
CLAIMS = (("vcd", "hoffman"), ("vcd", "vae"), ("hoffman", "vae"), ("gradmala", "vcd"), ("gradhmc", "vcd"))
FULL = {"cases": CASES, "methods": ("vae", "hoffman", "vcd", "gradmala", "gradhmc"),
        "vae_epochs": None, "mcmc_epochs": 10, "train_size": None, "test_images": None,
        "num_samples_ours": 10_000, "num_samples_vcd": 20_000, "burn_in": 300, "sampling": 300, "seeds": SEEDS}
# The quick form skips the VAE pre-training (zero epochs) and trains vcd alone on the fixed stochastic
# binarisation, two seeds (every method runs the same code; the seed comparison and the per-point stage run).
QUICK = {"cases": (("mnist", "fixed_stochastic"),), "methods": ("vcd",), "vae_epochs": 0, "mcmc_epochs": 1,
         "train_size": 300, "test_images": 20, "num_samples_ours": 32, "num_samples_vcd": 32, "burn_in": 5,
         "sampling": 5, "seeds": (0, 1)}
# The short schedule of table1-loglik's cpu budget: 20 VAE + 5 MCMC epochs, evaluation on 5000 random test
# images with S = 1000 (ours) and 2000 (VCD protocol). The MCMC phase runs at table1-loglik's cpu rates
# (pre-training keeps the schedule's): at this schedule the paper's 5e-3 on Fashion-MNIST makes vcd diverge and
# lowers gradhmc far below vae (results/README.md), and the rates were chosen on a validation split of the
# training set for every method (table1-lr). 37-38 min per dataset and seed on one quiet core (measured), so
# about 5 hours on 2 cores: a GPU's job at 5 seeds.
CPU = {**FULL, "vae_epochs": 20, "mcmc_epochs": 5, "test_images": 5000, "num_samples_ours": 1000,
       "num_samples_vcd": 2000,
       **{key: table1_loglik.BUDGETS["cpu"][key] for key in ("mcmc_learning_rates", "mcmc_learning_rate_reason")}}
# The VCD paper's training length: every method from scratch (no pre-trained VAE) for 667 epochs of 600
# iterations (about their 400000 iterations at batch 100); vae, hoffman and vcd, as their Table 2.
LONG = {**FULL, "methods": ("vae", "hoffman", "vcd"), "vae_epochs": 0, "mcmc_epochs": 667}
BUDGETS = {"paper": FULL, "cpu": CPU, "long": LONG, "quick": QUICK}
PAPER_TEST_IMAGES, PAPER_SAMPLES_OURS, PAPER_SAMPLES_VCD = 10_000, 10_000, 20_000
# Ruiz and Titsias's training length per method, in iterations of batch 100.
PAPER_ITERATIONS = 400_000
# Ruiz and Titsias (2019), Table 2 (test log-likelihood, nats): MNIST on its fixed stochastic binarisation,
# Fashion-MNIST thresholded at 0.5 (their code's choices).
PUBLISHED = {("mnist", "fixed_stochastic", "vae"): -111.20, ("mnist", "fixed_stochastic", "hoffman"): -103.61,
             ("mnist", "fixed_stochastic", "vcd"): -101.26,
             ("fashion_mnist", "threshold", "vae"): -127.43, ("fashion_mnist", "threshold", "hoffman"): -121.86,
             ("fashion_mnist", "threshold", "vcd"): -121.11}


def control_variate_wait(budget: dict, num_train: int, batch_size: int = 100) -> int:
    """vcd's wait before per-point control variates: :data:`CONTROL_VARIATE_WAIT_FRACTION` of the budget's MCMC
    iterations (at least 1), so that they are in use for the rest of the MCMC phase."""
    iterations = budget["mcmc_epochs"] * math.ceil(num_train / batch_size)
    return max(1, round(CONTROL_VARIATE_WAIT_FRACTION * iterations))


def training_iterations(budget: dict, datasets, batch_size: int = 100) -> dict:
    """Each dataset's training iterations per method, ``(pre-training included, the method's own phase)``, to set
    beside Ruiz and Titsias's :data:`PAPER_ITERATIONS` (every method trained from scratch).

    >>> training_iterations(BUDGETS["cpu"], ["mnist"])
    {'mnist': (15000, 3000)}
    """
    per_epoch = math.ceil((budget["train_size"] or 60_000) / batch_size)
    out = {}
    for dataset in datasets:
        vae_epochs = SCHEDULE[dataset]["vae_epochs"] if budget["vae_epochs"] is None else budget["vae_epochs"]
        out[dataset] = ((vae_epochs + budget["mcmc_epochs"]) * per_epoch, budget["mcmc_epochs"] * per_epoch)
    return out


def control_variate_updates(budget: dict, num_train: int, batch_size: int = 100) -> tuple:
    """How far vcd's per-point control variates get from the global value they start at: the updates each
    image's value receives after the wait (every image is visited once per epoch) and the weight
    ``decay ** updates`` the global value still has at the end of the MCMC phase, ``decay`` the method's own
    (the experiment trains vcd with it).

    >>> control_variate_updates({"mcmc_epochs": 5}, 60_000)
    (4.5, 0.622...)
    """
    iterations = budget["mcmc_epochs"] * math.ceil(num_train / batch_size)
    updates = (iterations - control_variate_wait(budget, num_train, batch_size)) * batch_size / num_train
    return updates, mv.methods.build("vcd").control_variate_decay**updates


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


def _method(name: str, num_data: int, learning_rate: float, wait: int):
    import mcmcvae as mv

    # vcd keeps one control variate per training image (the trainer passes each batch's indices)
    extra = {"num_data": num_data, "control_variate_wait": wait} if name == "vcd" else {}
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


def parts(*, quick: bool = False, budget: str | None = None) -> tuple[str, list[dict]]:
    """The budget's name and its parts, one per seed and case (seed by seed): ``run.py vcd --workers N`` runs them
    side by side (:func:`run_part`), then :func:`run` collects them."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    return budget_name, [{"dataset": dataset, "binarization": binarization, "seed": seed}
                         for seed in budget["seeds"] for dataset, binarization in budget["cases"]]


def run_part(dataset: str, binarization: str, seed: int, *, quick: bool = False, out_dir=None,
             budget: str | None = None) -> list[dict]:
    """Train and evaluate every method on one dataset, binarisation and seed; returns its result rows (two per
    method, one per protocol).

    Runs resume from their checkpoints and evaluations are cached beside them (``eval.json``), so cases can run
    side by side in separate processes and the final :func:`run` only collects them.
    """
    import mcmcvae as mv
    from mcmcvae.train import Phase, read_metrics

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=10, hidden_sizes=(200, 200))
    runs = common.runs_dir(NAME, out_dir) / budget_name
    rows = []
    train = common.load_binary(dataset, "train", binarization, num_images=budget["train_size"])
    test = common.load_binary(dataset, "test", binarization, num_images=budget["test_images"], random_sample=True)
    config = {"dataset": dataset, "train_size": budget["train_size"], "binarization": binarization}
    tag = dataset if binarization == "threshold" else f"{dataset}-{binarization}"
    learning_rate = SCHEDULE[dataset]["learning_rate"]
    mcmc_lr = common.mcmc_learning_rate(budget, dataset, learning_rate)
    # runs at an overridden rate keep their own directories, so they never resume from runs at another rate
    suffix = "" if mcmc_lr == learning_rate else f"-mcmclr{mcmc_lr:g}"
    vae_epochs = SCHEDULE[dataset]["vae_epochs"] if budget["vae_epochs"] is None else budget["vae_epochs"]
    wait = control_variate_wait(budget, len(train))
    # an interrupted run resumes from its last checkpoint; a finished one is restored
    pretrained, _, _ = mv.train.fit(
        model,
        [Phase(mv.methods.build("vae", learning_rate=learning_rate), vae_epochs)], train,
        run_dir=runs / f"{tag}-vae-pretrain-seed{seed}", seed=seed,
        progress=not quick, extra_config=config)
    for name in budget["methods"]:
        method = _method(name, len(train), mcmc_lr, wait)
        run_dir = runs / f"{tag}-{name}{suffix}-seed{seed}"
        # every method, vae included, continues from the same pre-trained VAE (each with a fresh optimiser)
        params, state, train_seconds = mv.train.fit(
            model, [Phase(method, budget["mcmc_epochs"])], train, run_dir=run_dir, seed=seed, params=pretrained,
            progress=not quick, extra_config=config)
        log_h = state["log_step_size"] if isinstance(state, dict) and "log_step_size" in state else \
            math.log(0.5 / model.latent_dim)
        protocol = {key: budget[key] for key in ("test_images", "num_samples_ours", "num_samples_vcd",
                                                 "burn_in", "sampling")}
        result = mv.results.cached_evaluation(
            run_dir / "eval.json", {**protocol, "epochs": budget["mcmc_epochs"],
                                    "test_sample_seed": common.TEST_SAMPLE_SEED},
            lambda: evaluate(jax.random.key(10_000 + seed), model, method, params, state, test,
                             num_samples_ours=budget["num_samples_ours"],
                             num_samples_vcd=budget["num_samples_vcd"], burn_in=budget["burn_in"],
                             sampling=budget["sampling"], log_step_size=log_h))
        extra = {"budget": {k: v for k, v in budget.items() if k not in ("cases", "methods")},
                 "budget_name": budget_name, "quick": quick, "binarization": binarization, "seed": seed,
                 "published": PUBLISHED.get((dataset, binarization, name)), "train_seconds": train_seconds,
                 "mcmc_learning_rate": mcmc_lr}
        if name == "vcd":  # the fraction of the MCMC phase's steps whose control variates were per point
            per_point = [m.get("control_variate_per_point") for m in read_metrics(run_dir)]
            extra.update(control_variate_wait=wait,
                         per_point_fraction=(None if not per_point or None in per_point
                                             else float(np.mean(per_point))))
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood", result["ours"], None, 1,
                                   protocol="ours: method proposal, variance x 1.5",
                                   standard_error=result["ours_standard_error"], **extra))
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood_vcd_protocol", result["vcd_protocol"],
                                   None, 1, protocol="VCD: best of three IS estimates, std x 1.2",
                                   estimates={k: result[k] for k in ("q0", "hmc_mean_encoder_std",
                                                                 "hmc_mean_hmc_std")}, **extra))
    return rows


def summarise(seed_rows: list[dict]) -> list[dict]:
    """One row per (dataset, binarisation, method, metric) from the per-seed rows: the mean over seeds, its
    standard deviation and the per-seed values."""
    groups: dict = {}
    for r in seed_rows:
        groups.setdefault((r["dataset"], r["binarization"], r["method"], r["metric"]), []).append(r)
    out = []
    for (dataset, binarization, method, metric), group in groups.items():
        values = [r["value"] for r in group]
        mean, std = mv.results.summarise(values)
        first = group[0]
        keep = {k: first[k] for k in ("protocol", "budget", "budget_name", "quick", "published",
                                      "mcmc_learning_rate", "control_variate_wait") if k in first}
        out.append(mv.results.row(NAME, dataset, method, metric, mean, std, len(values), binarization=binarization,
                                  per_seed=values, seeds=[r["seed"] for r in group],
                                  train_seconds=[r["train_seconds"] for r in group],
                                  per_point_fraction=[r.get("per_point_fraction") for r in group], **keep))
    return out


def verdicts(rows: list[dict], metric: str = "test_log_likelihood_vcd_protocol") -> list[dict]:
    """Every claim of :data:`CLAIMS` whose rows ran, per (dataset, binarisation), and every method with a published
    number against it, from the per-seed values paired by seed (:func:`mcmcvae.results.compare_seeds`)."""
    out = []
    cases = dict.fromkeys((r["dataset"], r["binarization"]) for r in rows)
    for dataset, binarization in cases:
        mine = {r["method"]: r for r in rows if (r["dataset"], r["binarization"]) == (dataset, binarization)
                and r["metric"] == metric}
        for a, b in CLAIMS:
            if a in mine and b in mine:
                c = mv.results.compare_seeds(mine[a]["per_seed"], mine[b]["per_seed"])
                out.append({"dataset": dataset, "binarization": binarization, "claim": f"{a} beats {b}",
                            "comparison": c})
        for name, r in mine.items():
            if r.get("published") is not None:
                c = mv.results.compare_seeds(r["per_seed"], [r["published"]] * len(r["per_seed"]))
                out.append({"dataset": dataset, "binarization": binarization,
                            "claim": f"our {name} lies above the published {r['published']:.2f}", "comparison": c})
    return out


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    """Train and evaluate every method; ``budget`` is ``paper`` (default), ``cpu``, ``long`` or, with ``quick``,
    ``quick``."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    seed_rows = []
    for dataset, binarization in budget["cases"]:
        for seed in budget["seeds"]:
            part = {"dataset": dataset, "binarization": binarization, "seed": seed}
            kept = common.part_rows(NAME, budget_name, part, budget, out_dir)  # a finished part's record
            seed_rows += kept if kept is not None else run_part(**part, out_dir=out_dir, budget=budget_name)
    rows = summarise(seed_rows)
    found = verdicts(rows, "test_log_likelihood_vcd_protocol")
    rows += [mv.results.row(NAME, v["dataset"], v["claim"], "verdict", None, None, v["comparison"].num_seeds,
                            binarization=v["binarization"], estimator=VERDICT_ESTIMATOR,
                            verdict=v["comparison"].verdict, comparison=v["comparison"]._asdict()) for v in found]
    ours = [r for r in rows if r["metric"] == "test_log_likelihood"]
    vcd_protocol = {(r["dataset"], r["binarization"], r["method"]): r for r in rows
                    if r["metric"] == "test_log_likelihood_vcd_protocol"}

    def cell(r):
        return f"{r['value']:.2f}" + ("" if r["std"] is None else f" +- {r['std']:.2f}")

    body = []
    for r in ours:
        other = vcd_protocol[(r["dataset"], r["binarization"], r["method"])]
        body.append([r["dataset"], r["binarization"].replace("_", " "), r["method"], r["num_seeds"], cell(other),
                     cell(r), "n/a" if r["published"] is None else f"{r['published']:.2f}"])
    timings = {(r["dataset"], r["binarization"], r["method"]): np.mean(r["train_seconds"]) for r in ours}
    rates = {r["dataset"]: r["mcmc_learning_rate"] for r in ours}
    per_point = {(r["dataset"], r["binarization"]): r["per_point_fraction"] for r in ours if r["method"] == "vcd"}
    table = mv.results.markdown_table(
        ["dataset", "binarisation", "method", "seeds", "VCD protocol (verdict)", "ours (tau = 1.5)",
         "published (Ruiz and Titsias 2019)"], body)
    verdict_lines = "\n".join(f"- {v['dataset']}, {v['binarization'].replace('_', ' ')}: "
                              + mv.results.verdict_sentence(v["claim"], v["comparison"]) for v in found)
    option = {"quick": " --quick", "paper": ""}.get(budget_name, f" --budget {budget_name}")
    iterations = training_iterations(budget, sorted({dataset for dataset, _ in budget["cases"]}))
    fraction = common.fraction_text([
        ("MCMC epochs (Hirt et al.'s schedule)", budget["mcmc_epochs"], FULL["mcmc_epochs"]),
        *((f"iterations per method on {dataset}, pre-training included (Ruiz and Titsias's training)", total,
           PAPER_ITERATIONS) for dataset, (total, _) in iterations.items()),
        ("iterations of each method's own objective (Ruiz and Titsias's training)",
         next(iter(iterations.values()))[1], PAPER_ITERATIONS),
        ("test images", budget["test_images"], PAPER_TEST_IMAGES),
        ("S for ours", budget["num_samples_ours"], PAPER_SAMPLES_OURS),
        ("S for the VCD protocol", budget["num_samples_vcd"], PAPER_SAMPLES_VCD)])
    wait_text = ("" if not per_point else "; the fraction of vcd's MCMC steps with per-point control variates: "
                 + ", ".join(f"{d} {b.replace('_', ' ')} "
                             + ("/".join("n/a" if f is None else f"{f:.2f}" for f in fractions))
                             for (d, b), fractions in per_point.items()))
    vcd_defaults = mv.methods.build("vcd")  # the step-size rule and the control variates' decay, as trained
    if per_point:  # each image is visited once per epoch, so per point is not yet converged per point
        num_train = budget["train_size"] or 60_000
        updates, left = control_variate_updates(budget, num_train)
        wait_text += (f". Each image's control variate is updated {updates:.1f} times after the switch (once per "
                      f"epoch, decay {vcd_defaults.control_variate_decay:g}), so at the end {left:.0%} of it is "
                      "still the global value it started from; the gradient is unbiased whatever the control "
                      "variate, which changes only its variance (the paper's 400000 iterations, after its wait of "
                      "3000, update each about 660 times)")
    markdown = f"""# vcd: VCD and Hoffman against VAE and the speed-measure methods

Regenerate with `python experiments/run.py vcd{option}` (this file and `vcd.json`).
{'**Quick run: tiny budget, for smoke testing only; these numbers mean nothing.**' if quick else ''}

**Estimator of the verdicts, decided before the numbers: the VCD protocol** (`VERDICT_ESTIMATOR` in
`experiments/vcd.py`), the one the published numbers use. Each verdict is the mean over seeds of the per-seed
difference, paired by seed, with its 95% t interval (`mv.results.compare_seeds`): holds (above 0), fails (below 0)
or not resolved.

**Binarisations.** MNIST twice: thresholded at 0.5 (Hirt et al.'s code; table1-loglik's) and a fixed stochastic
binarisation ({common.BINARIZATIONS['fixed_stochastic']}); only the second is comparable with their MNIST numbers
(thresholding removes the pixel noise a stochastic binarisation keeps, tens of nats per image), and only in kind:
theirs is Larochelle and Murray's draw with 50000 training images, not obtainable here, ours another draw.
Fashion-MNIST thresholded at 0.5, as theirs.

{fraction} Seeds: {len(budget['seeds'])}.

{table}

Each cell: mean over seeds +- std over seeds.

{verdict_lines}

**Setting.** d_z = 10, 200-200 ReLU MLPs, Bernoulli likelihood, batch 100, Adam. A VAE is trained for
{'MNIST 90 / Fashion-MNIST 290' if budget['vae_epochs'] is None else budget['vae_epochs']} epochs (learning rate
MNIST 1e-3, Fashion-MNIST 5e-3, Hirt et al. 2024's schedule)
{'on the first ' + str(budget['train_size']) + ' training images' if budget['train_size'] else 'on all 60000 training images'};
each method, `vae` included, then trains from it for {budget['mcmc_epochs']} epochs with a fresh optimiser{_rates_text(budget, rates)}.
hoffman and vcd: t = 8 HMC transitions of L = 5 leapfrog steps, step size from 0.5 / d adapted towards acceptance
0.9 (h <- h (1 + 0.01 (a - 0.9) / 0.9)) after every transition; vcd's control variate is global for the first
{CONTROL_VARIATE_WAIT_FRACTION:.0%} of the MCMC iterations, then per data point{wait_text}. Evaluation on
{common.sample_text(budget['test_images'])}: ours with S = {budget['num_samples_ours']}; the VCD protocol with
S = {budget['num_samples_vcd']} and {budget['burn_in']} + {budget['sampling']} HMC transitions (L = 5; the step
size starts from the learnt one for hoffman and vcd and from 0.5 / d for the others, and adapts during the
burn-in by the rule above, which lets it grow by at most a factor of
{(1 + vcd_defaults.step_size_adaptation_rate * (1 - vcd_defaults.target_acceptance_rate)
    / vcd_defaults.target_acceptance_rate) ** budget['burn_in']:.2f}). Seeds
{', '.join(map(str, budget['seeds']))}.

**Machine.** {mv.results.machine()}; code at revision {mv.results.git_revision()}{common.parts_provenance(NAME, budget_name, out_dir)}; mean training time per method
{', '.join(f'{d}/{b}/{m} {s / 60:.1f} min' for (d, b, m), s in timings.items())}.

**Published.** Ruiz and Titsias (2019) trained each method for 400000 iterations (batch 100, RMSprop-like step
sizes 5e-4) from scratch and report the VCD protocol's estimate; `--budget long` trains vae, hoffman and vcd that
long from scratch here. Shorter schedules start from a pre-trained VAE, so they compare the methods' MCMC phases,
not the published training runs.
"""
    return mv.results.write_results(NAME, rows, markdown, out_dir)
