"""``table1-loglik``: test log-likelihoods of MCMC-refined VAEs (Hirt et al. 2024, Table 1).

Per dataset and seed, one plain VAE is pre-trained; every method then starts from that checkpoint for its MCMC
epochs (the ``vae`` row continues the plain VAE for as many epochs), so methods differ only in the last phase.
Test log-likelihood by importance sampling with the method's proposal (paper section 6.2) and tau = 1.5; as a
cross-check that does not rest on the proposal's covariance, AIS from the same proposal (``ais_images`` test
images, ``ais_temperatures`` x ``ais_chains``) beside importance sampling on those same images. Evaluations are
kept in each run directory (``eval.json``, ``ais.json``) and reused when their settings match.

Budgets: ``paper`` is the paper's schedule (MNIST 90 + 10 epochs at lr 1e-3, Fashion-MNIST 290 + 10 at lr 5e-3,
3 seeds, S = 10000); ``cpu`` is what fits a 2-core CPU in about 75 minutes (3 seeds, 20 + 2 epochs, S = 1000 on
1000 test images); ``quick`` is a smoke test. The results file states the budget it ran with.

A budget's ``mcmc_learning_rates`` overrides, per dataset, the learning rate of the MCMC phase (pre-training keeps
the paper's). The ``cpu`` budget runs each dataset's MCMC phase at the rate that
``experiments/table1_lr.py`` chose for every method on a validation split of the training set at this
schedule: 3e-4 on MNIST (``results/table1-lr-mnist.md``; the paper's 1e-3 is the other candidate) and 1e-3 on
Fashion-MNIST (``results/table1-lr.md``; the paper's 5e-3 lowers every speed-measure method's log-likelihood
there). Runs at an overridden rate live in their own directories (``...-mcmclr0.001-seed0``), so they never resume
from runs at another rate.
"""

from __future__ import annotations

import numpy as np

import mcmcvae as mv

import common

DESCRIPTION = "Table 1: test log-likelihood of vae, mala, hmc, ds*, grad* (diag/lt) on MNIST and Fashion-MNIST"
NAME = "table1-loglik"

# (row name, method name, options)
METHODS = [
    ("vae", "vae", {}),
    ("mala", "mala", {}),
    ("hmc", "hmc", {}),
    ("dsmala", "dsmala", {}),
    ("dshmc", "dshmc", {}),
    ("gradmala-diag", "gradmala", {"preconditioner": "diagonal"}),
    ("gradmala-lt", "gradmala", {"preconditioner": "lower_triangular"}),
    ("gradhmc-diag", "gradhmc", {"preconditioner": "diagonal"}),
    ("gradhmc-lt", "gradhmc", {"preconditioner": "lower_triangular"}),
]
# Not the paper's methods, and not in Table 1's rows or its criterion: variants that run where a budget's
# "methods" names them (table1-acceptance, and table1-loglik's cpu-mnist-variant).
# gradhmc-lt-da learns (h, C) as gradhmc-lt but moves its chains with a dual-averaged multiple of h, so that it
# accepts at the target rate that gradHMC's own objective stops short of (mcmcvae.adaptation.speed_measure).
VARIANTS = [
    ("gradhmc-lt-da", "gradhmc", {"preconditioner": "lower_triangular", "dual_averaged_step_size": True}),
]
VARIANT_NAMES = tuple(name for name, _, _ in VARIANTS)
DATASETS = {
    "mnist": {"latent_dim": 10, "learning_rate": 1e-3, "vae_epochs": 90, "likelihood": "bernoulli"},
    "fashion_mnist": {"latent_dim": 10, "learning_rate": 5e-3, "vae_epochs": 290, "likelihood": "bernoulli"},
    "omniglot": {"latent_dim": 20, "learning_rate": 1e-3, "vae_epochs": 90, "likelihood": "bernoulli"},
    "svhn": {"latent_dim": 64, "learning_rate": 1e-3, "vae_epochs": 90, "likelihood": "logistic256"},
}
# MNIST's rows of the cpu budget that decide its criterion (vae, dsmala, dshmc, gradhmc-diag, gradhmc-lt), with
# the same seeds and schedule, beside the variant gradhmc-lt-da, written to their own files so that
# table1-loglik's own stand. table1-acceptance chose the variant on the validation split first.
_VARIANT = {"vae_epochs": 20, "mcmc_epochs": 2, "seeds": (0, 1, 2), "num_samples": 1000,
           "train_size": None, "test_images": 1000, "datasets": ("mnist",),
           "ais_images": 100, "ais_temperatures": 100, "ais_chains": 16,
           "methods": ("vae", "dsmala", "dshmc", "gradhmc-diag", "gradhmc-lt", "gradhmc-lt-da"),
           "results_name": "table1-loglik-variant",
           "mcmc_learning_rates": {"mnist": 3e-4},
           "mcmc_learning_rate_reason": {
               "mnist": "was chosen for every method on a validation split of the training set by "
                        "`table1-lr --budget cpu-mnist`, see `results/table1-lr-mnist.md`"}}
BUDGETS = {
    "paper": {"vae_epochs": None, "mcmc_epochs": 10, "seeds": (0, 1, 2), "num_samples": 10_000,
              "train_size": None, "test_images": None, "datasets": tuple(DATASETS),
              "ais_images": 1000, "ais_temperatures": 1000, "ais_chains": 16},
    # Three seeds, as the paper: on 2 cores alone one seed of both datasets takes about 25 min (an HMC-based
    # MCMC epoch on 60000 images about 1 min for gradhmc, 15 s for dshmc). Each dataset's MCMC phase runs at the
    # rate every method preferred on a validation split of its training set (table1-lr).
    "cpu": {"vae_epochs": 20, "mcmc_epochs": 2, "seeds": (0, 1, 2), "num_samples": 1000,
            "train_size": None, "test_images": 1000, "datasets": ("mnist", "fashion_mnist"),
            "ais_images": 100, "ais_temperatures": 100, "ais_chains": 16,
            "mcmc_learning_rates": {"mnist": 3e-4, "fashion_mnist": 1e-3},
            "mcmc_learning_rate_reason": {
                "mnist": "was chosen for every method on a validation split of the training set by "
                         "`table1-lr --budget cpu-mnist`, see `results/table1-lr-mnist.md`",
                "fashion_mnist": "was chosen for every method on a validation split of the training set by "
                                 "`table1-lr --budget cpu`, see `results/table1-lr.md`"}},
    "cpu-mnist-variant": _VARIANT,
    # The same with the paper's 10 MCMC epochs, the schedule on which table1-acceptance chose the variant on
    # validation; one seed (about 30 min on 2 cores), the rows the criterion needs and the variant.
    "cpu-mnist-variant-10epochs": {**_VARIANT, "mcmc_epochs": 10, "seeds": (0,),
                                   "methods": ("vae", "dsmala", "dshmc", "gradhmc-lt", "gradhmc-lt-da"),
                                   "results_name": "table1-loglik-variant-10epochs"},
    # The smoke test covers each code path once (plain VAE, dual averaging with HMC, speed measure with a full C,
    # an MCMC learning rate other than pre-training's).
    # The paper's MNIST schedule (90 + 10 epochs, the nine methods, S = 10000 on all 10000 test images) for one
    # GPU (scripts/gpu.sh): the seeds train at once as replicas of one vmapped epoch (mv.train.fit_seeds).
    "gpu-slice": {"vae_epochs": 90, "mcmc_epochs": 10, "seeds": (0, 1, 2), "num_samples": 10_000,
                  "train_size": None, "test_images": None, "datasets": ("mnist",),
                  "ais_images": 100, "ais_temperatures": 100, "ais_chains": 16, "seeds_at_once": True,
                  "results_name": "table1-loglik-gpu-slice"},
    # The same steps at a tiny size, for the CPU dry run of scripts/gpu.sh (tests/test_gpu_script.py).
    "gpu-dry-run": {"vae_epochs": 1, "mcmc_epochs": 1, "seeds": (0, 1), "num_samples": 16,
                    "train_size": 200, "test_images": 20, "datasets": ("mnist",),
                    "ais_images": 4, "ais_temperatures": 3, "ais_chains": 2,
                    "methods": ("vae", "gradmala-diag"), "seeds_at_once": True,
                    "results_name": "table1-loglik-gpu-dry-run"},
    "quick": {"vae_epochs": 1, "mcmc_epochs": 1, "seeds": (0,), "num_samples": 16,
              "train_size": 400, "test_images": 40, "datasets": ("mnist",),
              "ais_images": 4, "ais_temperatures": 3, "ais_chains": 2,
              "methods": ("vae", "dshmc", "gradmala-lt"), "mcmc_learning_rates": {"mnist": 5e-4},
              "mcmc_learning_rate_reason": {"mnist": "is set here to exercise the override"}},
}
# Ruiz and Titsias (2019), same d_z and MLPs: standard VAE, Hoffman (2017), VCD.
PUBLISHED = {"mnist": {"vae": -111.20, "hoffman": -103.61, "vcd": -101.26},
             "fashion_mnist": {"vae": -127.43, "hoffman": -121.86, "vcd": -121.11}}
K, L = 10, 2


def _load(dataset, budget):
    from mcmcvae.data import load_images

    binarize = "static" if DATASETS[dataset]["likelihood"] == "bernoulli" else "none"
    train = load_images(dataset, "train", binarize=binarize, num_images=budget["train_size"])
    test = load_images(dataset, "test", binarize=binarize, num_images=budget["test_images"])
    return train, test


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    import jax

    import mcmcvae as mv
    from mcmcvae.figures import plot_training_curves, save_image_grid
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    runs = common.runs_dir(NAME, out_dir) / budget_name
    figures = common.results_dir(out_dir) / "figures" / budget.get("results_name", NAME)  # a budget with files of its own
    figures.mkdir(parents=True, exist_ok=True)
    rows, unavailable, values, per_image = [], [], {}, {}
    for dataset in budget["datasets"]:
        try:
            train, test = _load(dataset, budget)
        except mv.data.DataNotFoundError:
            unavailable.append(dataset)
            for row_name, _, _ in METHODS:
                rows.append(mv.results.row(NAME, dataset, row_name, "test_log_likelihood", None, None, 0,
                                           note="not run: data unavailable"))
            continue
        settings = DATASETS[dataset]
        vae_epochs = budget["vae_epochs"] or settings["vae_epochs"]
        model = mv.models.VAE(image_shape=train.shape[1:], latent_dim=settings["latent_dim"],
                              likelihood=settings["likelihood"],
                              likelihood_scale=mv.distributions.logistic_scale_from_variance(0.1))
        lr = settings["learning_rate"]
        mcmc_lr = mcmc_learning_rate(budget, dataset)
        suffix = "" if mcmc_lr == lr else f"-mcmclr{mcmc_lr:g}"
        if budget.get("seeds_at_once"):  # train every seed's runs as replicas first; the loop below restores them
            _fit_seeds_at_once(budget_name, budget, dataset, model, train, lr, mcmc_lr, suffix, out_dir, quick)
        for seed in budget["seeds"]:
            pretrained, _, _ = mv.train.fit(model, [Phase(mv.methods.build("vae", learning_rate=lr), vae_epochs)],
                                            train, run_dir=runs / f"{dataset}-pretrain-seed{seed}", seed=seed,
                                            progress=not quick, extra_config={"dataset": dataset})
            for row_name, method_name, options in (*METHODS, *VARIANTS):
                chosen = budget.get("methods")
                if (chosen is not None and row_name not in chosen) or (chosen is None and row_name in VARIANT_NAMES):
                    continue
                method = mv.methods.build(method_name, **mv.methods.select_options(method_name, dict(
                    learning_rate=mcmc_lr, num_mcmc_steps=K, num_integration_steps=L, **options)))
                result = _train_from(NAME, f"{budget_name}/{dataset}-{row_name}{suffix}", model, method,
                                     budget["mcmc_epochs"], train, test, pretrained, seed=seed, budget=budget,
                                     out_dir=out_dir, progress=not quick, dataset=dataset)
                values.setdefault((dataset, row_name), []).append(result["test_log_likelihood"])
                per_image.setdefault((dataset, row_name), []).append(np.asarray(result["per_image"], np.float64))
                for key in ("ais", "importance_on_ais_images"):
                    values.setdefault((dataset, row_name, key), []).append(result[key])
                if seed == budget["seeds"][0]:
                    run_dir = result["run_dir"]
                    plot_training_curves(f"{run_dir}/metrics.jsonl", figures / f"{dataset}-{row_name}-training.png")
                    z = model.sample_prior(jax.random.key(seed), result["params"], 64)
                    save_image_grid(np.asarray(model.mean_image(result["params"], z)),
                                    figures / f"{dataset}-{row_name}-samples.png", num_columns=8,
                                    title=f"{dataset} {row_name}: samples")
    metrics = {None: "test_log_likelihood", "ais": "test_log_likelihood_ais",
               "importance_on_ais_images": "test_log_likelihood_importance_on_ais_images"}
    for (dataset, row_name, *key), per_seed in values.items():
        mean, std = mv.results.summarise(per_seed)
        extra = {} if not key else {"num_images": budget["ais_images"]}
        if key == ["ais"]:
            extra.update(num_temperatures=budget["ais_temperatures"], num_chains=budget["ais_chains"])
        rows.append(mv.results.row(NAME, dataset, row_name, metrics[key[0] if key else None], mean, std, len(per_seed),
                                   per_seed=per_seed, budget=budget_name, **extra))
    markdown = _markdown(rows, budget_name, budget, unavailable, quick, per_image)
    return mv.results.write_results(budget.get("results_name", NAME), rows, markdown, out_dir)


def _fit_seeds_at_once(budget_name, budget, dataset, model, train, lr, mcmc_lr, suffix, out_dir, quick):
    """Train the pre-training and every method's runs of all seeds with ``mv.train.fit_seeds`` (one vmapped epoch
    for the seeds), into the run directories the per-seed loop of :func:`run` then restores and evaluates."""
    from mcmcvae.train import Phase

    seeds, runs = budget["seeds"], common.runs_dir(NAME, out_dir)
    vae_epochs = budget["vae_epochs"] or DATASETS[dataset]["vae_epochs"]
    pretrained = mv.train.fit_seeds(model, [Phase(mv.methods.build("vae", learning_rate=lr), vae_epochs)], train,
                                    run_dirs=[runs / budget_name / f"{dataset}-pretrain-seed{s}" for s in seeds],
                                    seeds=seeds, progress=not quick, extra_config={"dataset": dataset})
    chosen = budget.get("methods")
    for row_name, method_name, options in (*METHODS, *VARIANTS):
        if (chosen is not None and row_name not in chosen) or (chosen is None and row_name in VARIANT_NAMES):
            continue
        method = mv.methods.build(method_name, **mv.methods.select_options(method_name, dict(
            learning_rate=mcmc_lr, num_mcmc_steps=K, num_integration_steps=L, **options)))
        mv.train.fit_seeds(model, [Phase(method, budget["mcmc_epochs"])], train,
                           run_dirs=[runs / budget_name / f"{dataset}-{row_name}{suffix}-seed{s}" for s in seeds],
                           seeds=seeds, params=[r.params for r in pretrained], progress=not quick,
                           extra_config={"dataset": dataset})


def mcmc_learning_rate(budget: dict, dataset: str) -> float:
    """The MCMC phase's learning rate for ``dataset`` under ``budget``: its override, else the paper's rate."""
    return common.mcmc_learning_rate(budget, dataset, DATASETS[dataset]["learning_rate"])


def _train_from(experiment, tag, model, method, epochs, train, test, pretrained, *, seed, budget, out_dir,
                progress, dataset):
    """Train ``method`` for ``epochs`` from pre-trained parameters and evaluate it (resuming if interrupted;
    evaluations already in the run directory with the same settings are reused)."""
    import jax

    from mcmcvae.evaluate.runs import test_ais_log_likelihood, test_log_likelihood
    from mcmcvae.train import Phase

    run_dir = common.runs_dir(experiment, out_dir) / f"{tag}-seed{seed}"
    params, state, train_seconds = mv.train.fit(model, [Phase(method, epochs)], train, run_dir=run_dir, seed=seed,
                                                params=pretrained, progress=progress,
                                                extra_config={"dataset": dataset})
    settings = {"num_samples": budget["num_samples"], "variance_factor": 1.5, "num_images": len(test)}
    summary = mv.results.cached_evaluation(run_dir / "eval.json", settings, lambda: test_log_likelihood(
        jax.random.key(10_000 + seed), model, method, params, state, test, num_samples=settings["num_samples"],
        variance_factor=1.5), require=("per_image",))
    num_ais = min(budget["ais_images"], len(test))
    ais_settings = {"num_temperatures": budget["ais_temperatures"], "num_chains": budget["ais_chains"],
                    "variance_factor": 1.5, "num_images": num_ais}
    ais = mv.results.cached_evaluation(run_dir / "ais.json", ais_settings, lambda: test_ais_log_likelihood(
        jax.random.key(20_000 + seed), model, method, params, state, test[:num_ais],
        num_temperatures=ais_settings["num_temperatures"], num_chains=ais_settings["num_chains"]),
        require=("per_image",))
    return {**summary, "params": params, "train_seconds": train_seconds, "run_dir": str(run_dir),
            "ais": ais["test_log_likelihood"],
            "importance_on_ais_images": float(np.mean(summary["per_image"][:num_ais]))}


SPEED_MEASURE = ("gradmala-diag", "gradmala-lt", "gradhmc-diag", "gradhmc-lt")


def verdict(rows, dataset, metric="test_log_likelihood"):
    """The issue's criterion on one dataset: does the best speed-measure method beat ``vae``, ``dsmala`` and
    ``dshmc`` in mean ``metric``? Returns ``(best name, its value, {rival: value}, passed)``, or None when a row
    is missing (e.g. in the quick run)."""
    value = {r["method"]: r["value"] for r in rows
             if r["dataset"] == dataset and r["metric"] == metric and r["value"] is not None}
    rivals = ("vae", "dsmala", "dshmc")
    if not all(m in value for m in rivals) or not any(m in value for m in SPEED_MEASURE):
        return None
    best = max((m for m in SPEED_MEASURE if m in value), key=value.get)
    return best, value[best], {m: value[m] for m in rivals}, all(value[best] > value[m] for m in rivals)


def paired_differences(leader: list, rival: list) -> dict:
    """``leader - rival`` per test image, paired within each seed (both rows evaluate the same images).

    ``leader`` and ``rival`` are per-seed lists of per-image log-likelihoods. Returns the mean over seeds of each
    seed's mean difference, its standard error from the images alone (``sqrt(sum se_s^2) / n_seeds``), and the
    per-seed mean differences, whose spread shows the seed-to-seed variation the image error leaves out."""
    means, errors = zip(*(mv.results.paired_difference(a, b) for a, b in zip(leader, rival, strict=True)))
    return {"mean": float(np.mean(means)), "standard_error": float(np.sqrt(np.sum(np.square(errors))) / len(means)),
            "per_seed": list(means)}


def _paired_lines(dataset, rows, per_image) -> list[str]:
    result = verdict(rows, dataset)
    if result is None or any((dataset, m) not in per_image for m in (result[0], *result[2])):
        return []
    best, _, rivals, _ = result

    def paired(leader, others):
        parts = []
        for rival in others:
            d = paired_differences(per_image[(dataset, leader)], per_image[(dataset, rival)])
            seeds = ", ".join(f"{m:+.2f}" for m in d["per_seed"])
            parts.append(f"{rival} {d['mean']:+.2f} +- {d['standard_error']:.2f}"
                         + (f" (per seed {seeds})" if len(d["per_seed"]) > 1 else ""))
        return "; ".join(parts)

    lines = [f"- importance sampling, paired over the same test images ({best} minus each rival, mean over seeds "
             f"+- the images' standard error): {paired(best, rivals)}."]
    lines += [f"- {variant}, a variant and not one of the paper's methods (so not counted in the criterion), paired "
              f"the same way ({variant} minus each): {paired(variant, (*rivals, best))}."
              for variant in VARIANT_NAMES if (dataset, variant) in per_image]
    return lines


def _markdown(rows, budget_name, budget, unavailable, quick, per_image):
    by_dataset = {}
    for r in rows:
        by_dataset.setdefault(r["dataset"], []).append(r)
    tables = []
    for dataset, dataset_rows in by_dataset.items():
        value = {(r["method"], r["metric"]): r for r in dataset_rows}
        body = []
        for r in dataset_rows:
            if r["metric"] != "test_log_likelihood":
                continue
            if r["value"] is None:
                body.append([r["method"], r.get("note", "not run"), "", "", "", "", ""])
                continue
            std = "n/a" if r["std"] is None else f"{r['std']:.2f}"
            subset = value.get((r["method"], "test_log_likelihood_importance_on_ais_images"))
            ais = value.get((r["method"], "test_log_likelihood_ais"))
            extra = (["", "", ""] if subset is None or ais is None else
                     [f"{subset['value']:.2f}", f"{ais['value']:.2f}", f"{ais['value'] - subset['value']:+.2f}"])
            body.append([r["method"], f"{r['value']:.2f}", std, r["num_seeds"], *extra])
        published = PUBLISHED.get(dataset)
        anchor = ("" if not published else
                  f"\nPublished anchors (Ruiz and Titsias 2019, same d_z and MLPs): standard VAE {published['vae']:.2f}, "
                  f"Hoffman (2017) {published['hoffman']:.2f}, VCD {published['vcd']:.2f}.\n")
        checks = []
        for metric, label in (("test_log_likelihood", "importance sampling"), ("test_log_likelihood_ais", "AIS")):
            result = verdict(dataset_rows, dataset, metric)
            if result is not None:
                best, best_value, rivals, passed = result
                beaten = [f"{m} ({v:.2f})" for m, v in rivals.items() if best_value > v]
                unbeaten = [f"{m} ({v:.2f})" for m, v in rivals.items() if best_value <= v]
                comparison = (f"it beats {', '.join(beaten)}" + (f" but not {', '.join(unbeaten)}" if unbeaten else "")
                              if beaten else f"it beats none of {', '.join(unbeaten)}")
                checks.append(f"- {label}: the best speed-measure method is {best} ({best_value:.2f}); {comparison}: "
                              f"the criterion {'holds' if passed else 'DOES NOT hold'}.")
        checks += _paired_lines(dataset, dataset_rows, per_image)
        n = budget["ais_images"]
        lr_note = (f"MCMC phase at lr {mcmc_learning_rate(budget, dataset):g} (pre-training at "
                   f"{DATASETS[dataset]['learning_rate']:g}"
                   + (f"; the MCMC rate {budget['mcmc_learning_rate_reason'][dataset]}" if
                      dataset in budget.get("mcmc_learning_rates", {}) else "") + ").\n\n")
        tables.append(f"### {dataset}\n\n{lr_note}" + mv.results.markdown_table(
            ["method", "test log-likelihood (nats)", "std over seeds", "seeds", f"IS, first {n} test images",
             f"AIS, first {n} test images", "AIS - IS"], body) + "\n" + anchor
            + ("\n" + "\n".join(checks) + "\n" if checks else ""))
    cut = ""
    if budget_name != "paper":
        cut = (f"**Budget `{budget_name}`, cut from the paper's:** {budget['vae_epochs']} VAE epochs (paper: 90 on MNIST, "
               f"290 on Fashion-MNIST) then {budget['mcmc_epochs']} MCMC epoch(s) (paper: 10); seeds "
               f"{', '.join(map(str, budget['seeds']))} (paper: 3); S = {budget['num_samples']} (paper: 10000) on "
               f"{budget['test_images'] or 'all'} test images. At this budget the numbers compare methods after a "
               "short MCMC phase; they are not the paper's Table 1.\n")
    missing = ("" if not unavailable else
               f"Not run, data unavailable: {', '.join(unavailable)} (put the files where `mcmcvae data fetch` says).\n")
    variants = [name for name in VARIANT_NAMES if any(r["method"] == name for r in rows)]
    variant_note = ("" if not variants else
                    f"**Variant rows** ({', '.join(variants)}) are not the paper's methods and do not count in the "
                    "criterion. gradhmc-lt-da learns (h, C) exactly as gradhmc-lt but moves its chains with a "
                    "second kernel step at s h, log s dual-averaged towards the target acceptance rate 0.65 that "
                    "gradHMC's own objective stops short of (docs/kernels.md); table1-acceptance chose it on a "
                    "validation split first.\n")
    return f"""# table1-loglik: MCMC-refined VAEs, test log-likelihood

Regenerate with `python experiments/run.py table1-loglik --budget {budget_name}` (`--budget paper` for the
paper's schedule).
{'**Quick run: smoke test only; these numbers mean nothing.**' if quick else ''}

The first column is the paper's protocol (importance sampling, section 6.2). Its proposal's covariance is the
encoder's, so it is loose wherever the MCMC phase has moved the posterior away from q0; the AIS column anneals from
the same proposal to p(x, z) ({budget['ais_temperatures']} temperatures x {budget['ais_chains']} chains, HMC with
adapted step sizes) on the first {budget['ais_images']} test images, beside importance sampling on the same images:
where the two disagree, trust AIS (both are stochastic lower bounds in expectation; AIS is the tighter).

Setting: threshold-0.5 binarisation, d_z = 10 (Omniglot 20, SVHN 64 with a logistic-256 likelihood of variance
0.1), 200-200 ReLU MLPs, Bernoulli likelihood, batch 100, K = {K} kernel steps, HMC with L = {L}; every method
starts from the same pre-trained VAE per seed; test log-likelihood by importance sampling, proposal
N(zbar_K(x), 1.5 Sigma_0(x)).

{cut}{missing}{variant_note}
**Machine.** {mv.results.machine()}; revision {mv.results.git_revision()}.

{chr(10).join(tables)}

Figures (training curves of acceptance, beta, h and log|det C|; samples) are in `results/figures/{budget.get('results_name', NAME)}/`.
"""
