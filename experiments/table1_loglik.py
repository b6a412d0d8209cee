"""``table1-loglik``: test log-likelihoods of MCMC-refined VAEs (Hirt et al. 2024, Table 1).

Per dataset and seed, one plain VAE is pre-trained; every method then starts from that checkpoint for its MCMC
epochs (the ``vae`` row continues the plain VAE for as many epochs), so methods differ only in the last phase.

Evaluation: importance sampling with the method's proposal (paper section 6.2, tau = 1.5) on ``test_images`` test
images, and AIS from the same proposal on ``ais_images`` of them (``ais_temperatures`` x ``ais_chains``, a fixed
HMC step size ``ais_step_size``); both samples are random (the first images of ``common.test_order``, a fixed
seed), never the file's first images. AIS's own check: on the first seed, every method's AIS runs again with
``ais_check_factor`` times the temperatures on the same images, and the results file says whether that moved it
beyond its error. Evaluations are kept in each run directory and reused when their settings match.

Verdict: decided before any number, by :data:`VERDICT_ESTIMATOR` (AIS: importance sampling with the MCMC methods'
chain-centred proposals flatters them against ``vae``). The criterion, "a speed-measure method beats each of
vae, dsmala and dshmc", is tested per speed-measure method and rival on the per-seed means, paired by seed
(:func:`mcmcvae.results.compare_seeds`, 95% t interval over seeds): a method meets it when all three comparisons
hold; the criterion holds when some method meets it, fails when every method fails against some rival, and is
not resolved otherwise. Every comparison is printed with its interval.

Budgets: ``paper`` is the paper's schedule (MNIST 90 + 10 epochs at lr 1e-3, Fashion-MNIST 290 + 10 at lr 5e-3,
S = 10000 on all 10000 test images) with 5 seeds (the paper: 3) and AIS on 1000 random test images; ``cpu`` cuts
the schedule to 20 + 2 epochs, S = 1000 on 5000 random test images, AIS with 100 temperatures, 5 seeds;
``quick`` is a smoke test; ``gpu-slice`` is MNIST at the paper's schedule with seeds 0-2 trained at once
(``mv.train.fit_seeds``) for ``scripts/gpu.sh``, and ``gpu-dry-run`` its tiny CPU twin. The results file states the
fraction of the paper's budget it used.

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
# The estimator every verdict of this experiment uses, decided before any run: AIS (fixed step size, checked
# against a run with more temperatures). Importance sampling is reported beside it.
VERDICT_ESTIMATOR = "ais"
PAPER_SCHEDULE = {"mcmc_epochs": 10, "num_samples": 10_000, "test_images": 10_000, "seeds": 3}
SEEDS = (0, 1, 2, 3, 4)  # 5 seeds: a t interval on 4 degrees of freedom (the paper ran 3)
_CPU = {"vae_epochs": 20, "mcmc_epochs": 2, "seeds": SEEDS, "num_samples": 1000,
        "train_size": None, "test_images": 5000, "datasets": ("mnist", "fashion_mnist"),
        "ais_images": 1000, "ais_temperatures": 100, "ais_chains": 16, "ais_step_size": 0.2, "ais_check_factor": 2,
        "mcmc_learning_rates": {"mnist": 3e-4, "fashion_mnist": 1e-3},
        "mcmc_learning_rate_reason": {
            "mnist": "was chosen for every method on a validation split of the training set by "
                     "`table1-lr --budget cpu-mnist`, see `results/table1-lr-mnist.md`",
            "fashion_mnist": "was chosen for every method on a validation split of the training set by "
                             "`table1-lr --budget cpu`, see `results/table1-lr.md`"}}
# MNIST's rows of the cpu budget that decide its criterion (vae, dsmala, dshmc, gradhmc-diag, gradhmc-lt), with
# the same seeds and schedule, beside the variant gradhmc-lt-da, written to their own files so that
# table1-loglik's own stand. table1-acceptance chose the variant on the validation split first.
_VARIANT = {**_CPU, "datasets": ("mnist",),
            "methods": ("vae", "dsmala", "dshmc", "gradhmc-diag", "gradhmc-lt", "gradhmc-lt-da"),
            "results_name": "table1-loglik-variant",
            "mcmc_learning_rates": {"mnist": 3e-4},
            "mcmc_learning_rate_reason": {"mnist": _CPU["mcmc_learning_rate_reason"]["mnist"]}}
BUDGETS = {
    "paper": {"vae_epochs": None, "mcmc_epochs": 10, "seeds": SEEDS, "num_samples": 10_000,
              "train_size": None, "test_images": None, "datasets": tuple(DATASETS),
              "ais_images": 1000, "ais_temperatures": 1000, "ais_chains": 16, "ais_step_size": 0.2,
              "ais_check_factor": 2},
    # On 2 cores alone one seed of both datasets trains in about 25 min (an HMC-based MCMC epoch on 60000 images
    # about 1 min for gradhmc, 15 s for dshmc); the evaluation (IS on 5000 images, AIS on 1000 with its check)
    # takes longer than the training there: a GPU's job. Each dataset's MCMC phase runs at the rate every method
    # preferred on a validation split of its training set (table1-lr).
    "cpu": _CPU,
    "cpu-mnist-variant": _VARIANT,
    # The same with the paper's 10 MCMC epochs, the schedule on which table1-acceptance chose the variant on
    # validation, with the rows the criterion needs and the variant.
    "cpu-mnist-variant-10epochs": {**_VARIANT, "mcmc_epochs": 10,
                                   "methods": ("vae", "dsmala", "dshmc", "gradhmc-lt", "gradhmc-lt-da"),
                                   "results_name": "table1-loglik-variant-10epochs"},
    # The paper's MNIST schedule (90 + 10 epochs, the nine methods, S = 10000 on all 10000 test images) for one
    # GPU (scripts/gpu.sh): the seeds train at once as replicas of one vmapped epoch (mv.train.fit_seeds).
    "gpu-slice": {"vae_epochs": 90, "mcmc_epochs": 10, "seeds": (0, 1, 2), "num_samples": 10_000,
                  "train_size": None, "test_images": None, "datasets": ("mnist",),
                  "ais_images": 100, "ais_temperatures": 100, "ais_chains": 16, "ais_step_size": 0.2,
                  "ais_check_factor": 2, "seeds_at_once": True, "results_name": "table1-loglik-gpu-slice"},
    # The same steps at a tiny size, for the CPU dry run of scripts/gpu.sh (tests/test_gpu_script.py).
    "gpu-dry-run": {"vae_epochs": 1, "mcmc_epochs": 1, "seeds": (0, 1), "num_samples": 16,
                    "train_size": 200, "test_images": 20, "datasets": ("mnist",),
                    "ais_images": 4, "ais_temperatures": 3, "ais_chains": 2, "ais_step_size": 0.2,
                    "ais_check_factor": 2, "methods": ("vae", "gradmala-diag"), "seeds_at_once": True,
                    "results_name": "table1-loglik-gpu-dry-run"},
    # The smoke test covers each code path once (plain VAE, dual averaging with HMC, speed measure with a full C,
    # an MCMC learning rate other than pre-training's, two seeds for the seed comparison, random test samples and
    # the AIS check).
    "quick": {"vae_epochs": 1, "mcmc_epochs": 1, "seeds": (0, 1), "num_samples": 16,
              "train_size": 400, "test_images": 40, "datasets": ("mnist",),
              "ais_images": 4, "ais_temperatures": 3, "ais_chains": 2, "ais_step_size": 0.2, "ais_check_factor": 2,
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
    test = load_images(dataset, "test", binarize=binarize)
    # a random sample (fixed seed), never the first images, which are easier than average
    return train, test[common.test_order(len(test))[:budget["test_images"]]]


def parts(*, quick: bool = False, budget: str | None = None) -> tuple[str, list[dict]]:
    """The budget's name and its parts, one per dataset: ``run.py table1-loglik --workers N`` runs them side by
    side (:func:`run_part`), then :func:`run` collects them."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    return budget_name, [{"dataset": dataset} for dataset in BUDGETS[budget_name]["datasets"]]


def run_part(dataset: str, *, quick: bool = False, out_dir=None, budget: str | None = None) -> dict | None:
    """Train and evaluate every seed and method of one dataset; writes no results file.

    Each run resumes from its checkpoints and keeps its evaluations beside it (``eval.json``, ``ais.json``), so
    the datasets can run side by side, one process each (``run_part("mnist", budget="cpu")``), and across
    sessions; :func:`run` then restores them and writes the results. Returns ``{"values", "per_image",
    "checks"}`` keyed as :func:`run` uses them, or None where the dataset's files are missing.
    """
    import jax

    import mcmcvae as mv
    from mcmcvae.figures import plot_training_curves, save_image_grid
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    if dataset not in budget["datasets"]:
        raise ValueError(f"budget {budget_name!r} does not run {dataset!r}; its datasets: {budget['datasets']}")
    runs = common.runs_dir(NAME, out_dir) / budget_name
    figures = common.results_dir(out_dir) / "figures" / budget.get("results_name", NAME)  # a budget with files of its own
    figures.mkdir(parents=True, exist_ok=True)
    values, per_image, checks = {}, {}, {}
    try:
        train, test = _load(dataset, budget)
    except mv.data.DataNotFoundError:
        return None
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
                if result["ais_check"] is not None:
                    checks[(dataset, row_name)] = result["ais_check"]
                run_dir = result["run_dir"]
                plot_training_curves(f"{run_dir}/metrics.jsonl", figures / f"{dataset}-{row_name}-training.png")
                z = model.sample_prior(jax.random.key(seed), result["params"], 64)
                save_image_grid(np.asarray(model.mean_image(result["params"], z)),
                                figures / f"{dataset}-{row_name}-samples.png", num_columns=8,
                                title=f"{dataset} {row_name}: samples")
    return {"values": values, "per_image": per_image, "checks": checks}


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    import mcmcvae as mv

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    rows, unavailable, values, per_image, checks = [], [], {}, {}, {}
    for dataset in budget["datasets"]:
        part = run_part(dataset, quick=quick, out_dir=out_dir, budget=budget_name)
        if part is None:
            unavailable.append(dataset)
            for row_name, _, _ in METHODS:
                rows.append(mv.results.row(NAME, dataset, row_name, "test_log_likelihood", None, None, 0,
                                           note="not run: data unavailable"))
            continue
        values.update(part["values"])
        per_image.update(part["per_image"])
        checks.update(part["checks"])
    metrics = {None: "test_log_likelihood", "ais": "test_log_likelihood_ais",
               "importance_on_ais_images": "test_log_likelihood_importance_on_ais_images"}
    for (dataset, row_name, *key), per_seed in values.items():
        mean, std = mv.results.summarise(per_seed)
        extra = ({"num_images": budget["test_images"] or 10_000} if not key
                 else {"num_images": budget["ais_images"]})
        extra["test_sample_seed"] = common.TEST_SAMPLE_SEED
        if key == ["ais"]:
            extra.update(num_temperatures=budget["ais_temperatures"], num_chains=budget["ais_chains"],
                         step_size=budget["ais_step_size"], check=checks.get((dataset, row_name)))
        rows.append(mv.results.row(NAME, dataset, row_name, metrics[key[0] if key else None], mean, std, len(per_seed),
                                   per_seed=per_seed, budget=budget_name, **extra))
    for dataset in {r["dataset"] for r in rows if r["value"] is not None}:
        result = criterion(rows, dataset)
        if result is not None:
            rows.append(mv.results.row(NAME, dataset, "criterion", "verdict", None, None, result["num_seeds"],
                                       verdict=result["verdict"], estimator=VERDICT_ESTIMATOR,
                                       comparisons={f"{a} - {b}": c._asdict() for (a, b), c in
                                                    result["comparisons"].items()}))
    markdown = _markdown(rows, budget_name, budget, unavailable, quick, per_image, checks,
                         provenance=common.parts_provenance(NAME, budget_name, out_dir))
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

    from mcmcvae.evaluate.runs import test_log_likelihood
    from mcmcvae.train import Phase

    run_dir = common.runs_dir(experiment, out_dir) / f"{tag}-seed{seed}"
    params, state, train_seconds = mv.train.fit(model, [Phase(method, epochs)], train, run_dir=run_dir, seed=seed,
                                                params=pretrained, progress=progress,
                                                extra_config={"dataset": dataset})
    sample = {"test_sample_seed": common.TEST_SAMPLE_SEED, "epochs": epochs}
    settings = {"num_samples": budget["num_samples"], "variance_factor": 1.5, "num_images": len(test), **sample}
    summary = mv.results.cached_evaluation(run_dir / "eval.json", settings, lambda: test_log_likelihood(
        jax.random.key(10_000 + seed), model, method, params, state, test, num_samples=settings["num_samples"],
        variance_factor=1.5), require=("per_image",))
    num_ais = min(budget["ais_images"], len(test))  # the first of the random sample: a random sample too
    check = budget["ais_check_factor"] if seed == budget["seeds"][0] else None
    ais = common.ais_with_check(run_dir / "ais.json", sample, jax.random.key(20_000 + seed), model, method, params,
                                state, test[:num_ais], num_temperatures=budget["ais_temperatures"],
                                num_chains=budget["ais_chains"], step_size=budget["ais_step_size"],
                                check_factor=check)
    return {**summary, "params": params, "train_seconds": train_seconds, "run_dir": str(run_dir),
            "ais": ais["test_log_likelihood"], "ais_check": ais["check"],
            "importance_on_ais_images": float(np.mean(summary["per_image"][:num_ais]))}


SPEED_MEASURE = ("gradmala-diag", "gradmala-lt", "gradhmc-diag", "gradhmc-lt")


RIVALS = ("vae", "dsmala", "dshmc")
ESTIMATOR_NAMES = {"ais": "AIS", "importance": "importance sampling"}
METRICS = {"ais": "test_log_likelihood_ais", "importance": "test_log_likelihood",
           "importance_on_ais_images": "test_log_likelihood_importance_on_ais_images"}


def per_seed_values(rows, dataset, metric) -> dict:
    """``{method: per-seed values}`` of one dataset's ``metric`` rows."""
    return {r["method"]: r["per_seed"] for r in rows
            if r["dataset"] == dataset and r["metric"] == metric and r["value"] is not None}


def criterion(rows, dataset, estimator: str = VERDICT_ESTIMATOR):
    """The criterion on one dataset by ``estimator`` ("ais" or "importance"), from the per-seed values paired by
    seed: each speed-measure method against each of vae, dsmala and dshmc (:func:`mcmcvae.results.compare_seeds`).

    Returns ``{"verdict", "per_method": {method: verdict}, "comparisons": {(method, rival): SeedComparison},
    "num_seeds", "rivals"}``, or None when every rival or every speed-measure method is missing. Where some
    rivals did not run (the quick form), the verdict is on those that did, and ``rivals`` says which.
    A method meets the criterion when all three of its comparisons hold (:func:`mcmcvae.results.all_hold`); the
    criterion holds when some method meets it (:func:`mcmcvae.results.any_holds`).
    """
    values = per_seed_values(rows, dataset, METRICS[estimator])
    methods = [m for m in SPEED_MEASURE if m in values]
    rivals = [r for r in RIVALS if r in values]
    if not rivals or not methods:
        return None
    comparisons = {(m, r): mv.results.compare_seeds(values[m], values[r]) for m in methods for r in rivals}
    per_method = {m: mv.results.all_hold(comparisons[(m, r)].verdict for r in rivals) for m in methods}
    return {"verdict": mv.results.any_holds(per_method.values()), "per_method": per_method,
            "comparisons": comparisons, "num_seeds": len(values[rivals[0]]), "rivals": rivals}


def verdict(rows, dataset, metric="test_log_likelihood"):
    """The best speed-measure method by mean ``metric`` and the rivals' means, for the table: ``(best name, its
    value, {rival: value}, beats every rival in mean)``, or None when a row is missing. Descriptive only: the
    verdict is :func:`criterion`'s, from the seed-level intervals."""
    value = {r["method"]: r["value"] for r in rows
             if r["dataset"] == dataset and r["metric"] == metric and r["value"] is not None}
    if not all(m in value for m in RIVALS) or not any(m in value for m in SPEED_MEASURE):
        return None
    best = max((m for m in SPEED_MEASURE if m in value), key=value.get)
    return best, value[best], {m: value[m] for m in RIVALS}, all(value[best] > value[m] for m in RIVALS)


def paired_differences(leader: list, rival: list) -> dict:
    """``leader - rival`` per test image, paired within each seed (both rows evaluate the same images).

    ``leader`` and ``rival`` are per-seed lists of per-image log-likelihoods. Returns the mean over seeds of each
    seed's mean difference, its standard error from the images alone (``sqrt(sum se_s^2) / n_seeds``), and the
    per-seed mean differences. The images' error leaves out the seed-to-seed spread: verdicts use
    :func:`criterion`'s intervals over seeds, not this."""
    means, errors = zip(*(mv.results.paired_difference(a, b) for a, b in zip(leader, rival, strict=True)))
    return {"mean": float(np.mean(means)), "standard_error": float(np.sqrt(np.sum(np.square(errors))) / len(means)),
            "per_seed": list(means)}


def _criterion_lines(rows, dataset) -> list[str]:
    """The criterion's verdict and every comparison behind it, by the verdict's estimator and (for comparison
    only) by importance sampling; then the variant rows, compared the same way but outside the criterion."""
    lines = []
    for estimator in (VERDICT_ESTIMATOR, *(e for e in ("importance",) if e != VERDICT_ESTIMATOR)):
        result = criterion(rows, dataset, estimator)
        if result is None:
            continue
        label = {"ais": "AIS", "importance": "importance sampling"}[estimator]
        role = ("**the verdict**" if estimator == VERDICT_ESTIMATOR else
                f"for comparison only (the verdict uses {VERDICT_ESTIMATOR})")
        partial = "" if len(result["rivals"]) == len(RIVALS) else " (only these rivals ran)"
        lines.append(f"- {label}, {role}: the criterion (some speed-measure method beats each of "
                     f"{', '.join(result['rivals'])}{partial}, 95% intervals over {result['num_seeds']} seeds) "
                     f"**{result['verdict']}**; per method: "
                     + ", ".join(f"{m} {v}" for m, v in result["per_method"].items()) + ".")
        lines += [f"  - {mv.results.verdict_sentence(f'{m} beats {r}', c)}"
                  for (m, r), c in result["comparisons"].items()]
    values = per_seed_values(rows, dataset, METRICS[VERDICT_ESTIMATOR])
    for variant in VARIANT_NAMES:
        if variant not in values:
            continue
        _, sentences = common.seed_comparisons(values, [(variant, m) for m in (*RIVALS, *SPEED_MEASURE)])
        lines.append(f"- {variant}, a variant and not one of the paper's methods (so not in the criterion), by "
                     f"{VERDICT_ESTIMATOR}:")
        lines += [f"  - {sentence}" for sentence in sentences]
    return lines


def _markdown(rows, budget_name, budget, unavailable, quick, per_image, checks=None, provenance=""):
    checks = checks or {}
    by_dataset = {}
    for r in rows:
        if r["metric"] != "verdict":
            by_dataset.setdefault(r["dataset"], []).append(r)
    n_is = budget["test_images"] or 10_000
    n_ais = budget["ais_images"]
    tables = []
    for dataset, dataset_rows in by_dataset.items():
        value = {(r["method"], r["metric"]): r for r in dataset_rows}
        body = []
        for r in dataset_rows:
            if r["metric"] != "test_log_likelihood":
                continue
            if r["value"] is None:
                body.append([r["method"], r.get("note", "not run"), "", "", "", "", "", ""])
                continue
            ais = value.get((r["method"], METRICS["ais"]))
            subset = value.get((r["method"], METRICS["importance_on_ais_images"]))

            def cell(row):
                return "" if row is None else (f"{row['value']:.2f}" + ("" if row["std"] is None else
                                                                       f" +- {row['std']:.2f}"))

            gap = "" if subset is None or ais is None else f"{ais['value'] - subset['value']:+.2f}"
            body.append([r["method"], r["num_seeds"], cell(ais), cell(subset), gap, cell(r)])
        published = PUBLISHED.get(dataset)
        anchor = ("" if not published else
                  f"\nNot comparable anchors (Ruiz and Titsias 2019, same d_z and MLPs, but their MNIST is a fixed "
                  f"*stochastic* binarisation, ours thresholded; see `results/vcd.md` for the like-for-like "
                  f"run): standard VAE {published['vae']:.2f}, Hoffman (2017) {published['hoffman']:.2f}, "
                  f"VCD {published['vcd']:.2f}.\n" if dataset == "mnist" else
                  f"\nPublished anchors (Ruiz and Titsias 2019, same d_z, MLPs and threshold binarisation): "
                  f"standard VAE {published['vae']:.2f}, Hoffman (2017) {published['hoffman']:.2f}, "
                  f"VCD {published['vcd']:.2f}.\n")
        lines = _criterion_lines(dataset_rows, dataset)
        dataset_checks = {m: c for (d, m), c in checks.items() if d == dataset}
        if dataset_checks:
            lines.append("- " + common.ais_check_text(dataset_checks))
        lr_note = (f"MCMC phase at lr {mcmc_learning_rate(budget, dataset):g} (pre-training at "
                   f"{DATASETS[dataset]['learning_rate']:g}"
                   + (f"; the MCMC rate {budget['mcmc_learning_rate_reason'][dataset]}" if
                      dataset in budget.get("mcmc_learning_rates", {}) else "") + ").\n\n")
        tables.append(f"### {dataset}\n\n{lr_note}" + mv.results.markdown_table(
            ["method", "seeds", f"AIS on {n_ais} random test images (verdict)", f"IS on the same {n_ais}",
             "AIS - IS", f"IS on {n_is} {'random ' if n_is < 10_000 else ''}test images"], body)
            + "\n\nEach cell: mean over seeds +- std over seeds.\n" + anchor
            + ("\n" + "\n".join(lines) + "\n" if lines else ""))
    paper_epochs = {"mnist": 90, "fashion_mnist": 290, "omniglot": 90, "svhn": 90}
    fraction = common.fraction_text(
        [*((f"{d} VAE epochs", budget["vae_epochs"], paper_epochs[d]) for d in budget["datasets"]),
         ("MCMC epochs", budget["mcmc_epochs"], PAPER_SCHEDULE["mcmc_epochs"]),
         ("importance samples S", budget["num_samples"], PAPER_SCHEDULE["num_samples"]),
         ("test images", budget["test_images"], PAPER_SCHEDULE["test_images"])])
    seeds = len(budget["seeds"])
    missing = ("" if not unavailable else
               f"Not run, data unavailable: {', '.join(unavailable)} (put the files where `mcmcvae data fetch` says).\n")
    variants = [name for name in VARIANT_NAMES if any(r["method"] == name for r in rows)]
    variant_note = ("" if not variants else
                    f"**Variant rows** ({', '.join(variants)}) are not the paper's methods and do not count in the "
                    "criterion. gradhmc-lt-da learns (h, C) exactly as gradhmc-lt but moves its chains with a "
                    "second kernel step at s h, log s dual-averaged towards the target acceptance rate 0.65 that "
                    "gradHMC's own objective stops short of (docs/kernels.md); table1-acceptance chose it on a "
                    "validation split first.\n")
    option = "--quick" if quick else f"--budget {budget_name}"
    seed_list = ", ".join(map(str, budget["seeds"]))
    cut = "" if budget_name == "paper" else f"**Budget `{budget_name}`, cut from the paper's.** "
    return f"""# table1-loglik: MCMC-refined VAEs, test log-likelihood

Regenerate with `python experiments/run.py table1-loglik {option}` (`--budget paper` for the paper's schedule).
{'**Quick run: smoke test only; these numbers mean nothing.**' if quick else ''}

**Estimator of the verdicts, decided before the numbers: {ESTIMATOR_NAMES[VERDICT_ESTIMATOR]}**
(`VERDICT_ESTIMATOR` in `experiments/table1_loglik.py`). AIS anneals from each method's importance-sampling
proposal to p(x, z) ({budget['ais_temperatures']} sigmoidal temperatures x {budget['ais_chains']} chains, HMC with
a fixed step size {budget['ais_step_size']} in the proposal's whitened coordinates, no adaptation from the chains it
weighs) on {common.sample_text(n_ais)}; importance sampling (the paper's protocol, section 6.2; proposal
N(zbar_K(x), 1.5 Sigma_0(x))) flatters the MCMC methods, whose proposals are centred by their own chains, against
vae. Each comparison is the mean over seeds of the per-seed difference, paired by seed (every method starts from
that seed's pre-trained VAE), with its 95% t interval on n - 1 degrees of freedom
(`mv.results.compare_seeds`): "holds" when the interval lies above 0, "fails" below 0, "not resolved" when it
contains 0.

Setting: threshold-0.5 binarisation (as Hirt et al.'s code), d_z = 10 (Omniglot 20, SVHN 64 with a logistic-256
likelihood of variance 0.1), 200-200 ReLU MLPs, Bernoulli likelihood, batch 100, K = {K} kernel steps, HMC with
L = {L}; every method starts from the same pre-trained VAE per seed; {seeds} seeds ({seed_list});
importance sampling with S = {budget['num_samples']} on {common.sample_text(budget['test_images'])}.

{cut}{fraction} Seeds: {seeds} (the paper: 3).

{missing}{variant_note}
**Machine.** {mv.results.machine()}; revision {mv.results.git_revision()}{provenance}.

{chr(10).join(tables)}

Figures (training curves of acceptance, beta, h and log|det C|; samples) are in `results/figures/{budget.get('results_name', NAME)}/`.
"""
