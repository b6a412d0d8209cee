"""``table1-lr``: the MCMC phase's learning rate for Table 1, chosen on a validation split of the training set.

Issue #4 asks, when the speed-measure methods do not beat ``vae`` and the ``ds*`` kernels, whether the learning
rate is the cause, chosen "on a validation split carved from the training set, never on the test set". This
experiment does exactly that. Per dataset, the last ``validation_size`` training images are held out. A plain VAE
is pre-trained on the rest at the paper's learning rate for that dataset (MNIST 1e-3, Fashion-MNIST 5e-3). Then
every method runs its MCMC phase from that checkpoint once per candidate learning rate. The learning rate sets
Adam for theta and phi0; the kernel's own rate stays at its default. Each run is scored by importance-sampling
log-likelihood on the first ``validation_images`` held-out images, with the method's own proposal and tau = 1.5,
as in ``experiments/table1_loglik.py``. The test set is never read. Per method, the best learning rate is
reported, and the table's criterion (the best speed-measure method beats ``vae``, ``dsmala`` and ``dshmc``) is
evaluated on validation with each method at its best rate.
"""

from __future__ import annotations

import time

import numpy as np

import mcmcvae as mv

import common
import table1_loglik as table1

DESCRIPTION = "Table 1's MCMC-phase learning rate chosen per method on a validation split of the training set"
NAME = "table1-lr"
_CPU = {"datasets": ("fashion_mnist",), "vae_epochs": 20, "mcmc_epochs": 2,
        "methods": ("vae", "dsmala", "dshmc", "gradmala-lt", "gradhmc-lt"), "learning_rates": (5e-3, 1e-3),
        "validation_size": 10_000, "validation_images": 1000, "num_samples": 1000, "train_size": None, "seed": 0}
BUDGETS = {
    "paper": {"datasets": ("mnist", "fashion_mnist"), "vae_epochs": None, "mcmc_epochs": 10,
              "methods": tuple(name for name, _, _ in table1.METHODS), "learning_rates": (5e-3, 1e-3, 3e-4),
              "validation_size": 10_000, "validation_images": 2000, "num_samples": 1000, "train_size": None,
              "seed": 0},
    # Fashion-MNIST only (where lr 5e-3 hurt the MCMC phase, results/table1-loglik.md), the table1 cpu schedule
    # (20 VAE + 2 MCMC epochs), the five methods that decide the criterion (vae, dsmala, dshmc and the two
    # lower-triangular speed-measure methods).
    "cpu": _CPU,
    # MNIST, where table1-loglik's cpu run ties gradhmc-lt with dshmc at the paper's rate (1e-3): the same
    # schedule and methods, at 1e-3 and the next lower candidate, 3e-4. Written to its own results files, so
    # the Fashion-MNIST study above stands without being rerun.
    "cpu-mnist": {**_CPU, "datasets": ("mnist",), "learning_rates": (1e-3, 3e-4), "results_name": "table1-lr-mnist"},
    # The schedule, the other cut of the cpu budgets: the two methods that tie on MNIST at the validated rate,
    # with the paper's 10 MCMC epochs instead of 2.
    "cpu-mnist-10epochs": {**_CPU, "datasets": ("mnist",), "mcmc_epochs": 10, "methods": ("dshmc", "gradhmc-lt"),
                           "learning_rates": (3e-4,), "results_name": "table1-lr-mnist-10epochs"},
    "quick": {"datasets": ("mnist",), "vae_epochs": 1, "mcmc_epochs": 1, "methods": ("gradmala-lt",),
              "learning_rates": (1e-3, 5e-3), "validation_size": 100, "validation_images": 20, "num_samples": 16,
              "train_size": 500, "seed": 0},
}


def split(images: np.ndarray, validation_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, validation)``: all but the last ``validation_size`` images, and those last images."""
    if not 0 < validation_size < len(images):
        raise ValueError(f"validation_size must be between 1 and {len(images) - 1} (the training set has "
                         f"{len(images)} images); got {validation_size}")
    return images[:-validation_size], images[-validation_size:]


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    options = {name: (method_name, extra) for name, method_name, extra in table1.METHODS}
    unknown = [m for m in budget["methods"] if m not in options]
    if unknown:
        raise ValueError(f"unknown Table 1 methods {unknown}; valid: {', '.join(options)}")
    runs = common.runs_dir(NAME, out_dir) / budget_name
    rows, per_image, tic = [], {}, time.perf_counter()
    for dataset in budget["datasets"]:
        model, fit, validation, pretrained = pretrain(dataset, budget, runs, quick)
        for row_name in budget["methods"]:
            method_name, extra = options[row_name]
            for lr in budget["learning_rates"]:
                row, values = train_and_validate(dataset, model, fit, validation, pretrained, budget,
                                                 runs / f"{dataset}-{row_name}-lr{lr:g}-seed{budget['seed']}",
                                                 method_name, extra, lr, quick)
                per_image[(dataset, row_name, lr)] = values
                rows.append(mv.results.row(NAME, dataset, row_name, "validation_log_likelihood", row.pop("value"), None,
                                           1, **row, budget=budget_name))
    minutes = (time.perf_counter() - tic) / 60
    return mv.results.write_results(budget.get("results_name", NAME), rows,
                                    _markdown(rows, per_image, budget_name, budget, minutes), out_dir)


def pretrain(dataset: str, budget: dict, runs, quick: bool):
    """``(model, fit, validation, params)``: the split of ``dataset``'s training images (``budget``'s
    ``validation_size``, the first ``validation_images`` of the held-out ones kept) and a plain VAE pre-trained on
    ``fit`` at the paper's learning rate for the dataset, under ``runs`` (resumed or reused if already there)."""
    import jax

    import mcmcvae as mv
    from mcmcvae.data import load_images
    from mcmcvae.train import Phase

    settings, seed = table1.DATASETS[dataset], budget["seed"]
    images = load_images(dataset, "train", binarize="static", num_images=budget["train_size"])
    fit, validation = split(images, budget["validation_size"])
    validation = validation[:budget["validation_images"]]
    model = mv.models.VAE(image_shape=fit.shape[1:], latent_dim=settings["latent_dim"],
                          likelihood=settings["likelihood"])
    params, _, _ = mv.train.fit(
        model,
        [Phase(mv.methods.build("vae", learning_rate=settings["learning_rate"]),
               budget["vae_epochs"] or settings["vae_epochs"])], fit, run_dir=runs / f"{dataset}-pretrain-seed{seed}",
        seed=seed, progress=not quick, extra_config={"dataset": dataset, "validation_size": budget["validation_size"]})
    return model, fit, validation, jax.tree_util.tree_map(np.array, params)


def train_and_validate(dataset: str, model, fit, validation, pretrained, budget: dict, run_dir, method_name: str,
                       options: dict, learning_rate: float, quick: bool) -> tuple[dict, np.ndarray]:
    """One MCMC phase from ``pretrained`` in ``run_dir``, scored on ``validation``: ``(fields, per_image)``, the
    fields of its result row (``value`` the validation log-likelihood) and the per-image log-likelihoods."""
    import jax

    import mcmcvae as mv
    from mcmcvae.evaluate.runs import test_log_likelihood
    from mcmcvae.train import Phase

    seed = budget["seed"]
    method = mv.methods.build(method_name, **mv.methods.select_options(method_name, dict(
        learning_rate=learning_rate, num_mcmc_steps=table1.K, num_integration_steps=table1.L, **options)))
    params, state, train_seconds = mv.train.fit(
        model, [Phase(method, budget["mcmc_epochs"])], fit, run_dir=run_dir, seed=seed,
        params=jax.tree_util.tree_map(np.array, pretrained), progress=not quick,
        extra_config={"dataset": dataset, "validation_size": budget["validation_size"]})
    protocol = {"num_samples": budget["num_samples"], "num_images": len(validation), "variance_factor": 1.5,
                "mcmc_epochs": budget["mcmc_epochs"]}
    summary = mv.results.cached_evaluation(
        run_dir / "validation.json", protocol, lambda: test_log_likelihood(
            jax.random.key(10_000 + seed), model, method, params, state, validation,
            num_samples=budget["num_samples"], variance_factor=1.5))
    fields = {"value": summary["test_log_likelihood"], "learning_rate": learning_rate,
              "standard_error": summary.get("standard_error"), "nonfinite_updates": _nonfinite_updates(run_dir),
              "train_seconds": train_seconds, "pretrain_learning_rate": table1.DATASETS[dataset]["learning_rate"],
              "num_images": len(validation), "num_samples": budget["num_samples"]}
    return fields, np.asarray(summary["per_image"], np.float64)


def _nonfinite_updates(run_dir) -> int:
    """Updates the trainer skipped because a gradient or loss was not finite, summed over the run's epochs."""
    from mcmcvae.train import read_metrics

    return int(sum(r.get("nonfinite_updates", 0) or 0 for r in read_metrics(run_dir)))


def best_learning_rates(rows) -> dict:
    """``{(dataset, method): row}``, the row with the highest validation log-likelihood per method."""
    best = {}
    for r in rows:
        key = (r["dataset"], r["method"])
        if r["value"] is not None and np.isfinite(r["value"]) and (key not in best or r["value"] > best[key]["value"]):
            best[key] = r
    return best


def _criterion(dataset, best, per_image) -> str:
    """Table 1's criterion on validation, each method at its best learning rate, with paired differences."""
    leaders = [r for (d, m), r in best.items() if d == dataset and m in table1.SPEED_MEASURE]
    rivals = [m for m in ("vae", "dsmala", "dshmc") if (dataset, m) in best]
    if not leaders or not rivals:
        return "The criterion needs a speed-measure method and at least one of vae, dsmala, dshmc."
    leader = max(leaders, key=lambda r: r["value"])
    parts, wins = [], []
    for rival in rivals:
        other = best[(dataset, rival)]
        mean, se = mv.results.paired_difference(per_image[(dataset, leader["method"], leader["learning_rate"])],
                                     per_image[(dataset, rival, other["learning_rate"])])
        wins.append(mean > 0)
        parts.append(f"{rival} (lr {other['learning_rate']:g}) by {mean:+.2f} +- {se:.2f}")
    missing = [m for m in ("vae", "dsmala", "dshmc") if m not in rivals]
    verdict = "beats every rival run" if all(wins) else "does not beat every rival run"
    note = (f" {', '.join(missing)} {'was' if len(missing) == 1 else 'were'} not run at this budget, so the "
            "full criterion is not decided here." if missing else "")
    return (f"With each method at its best learning rate, the best speed-measure method, {leader['method']} "
            f"(lr {leader['learning_rate']:g}), {verdict}. Its validation log-likelihood minus each rival's, "
            f"paired over the same images (+- one standard error of the paired difference): {'; '.join(parts)}."
            + note)


def _markdown(rows, per_image, budget_name, budget, minutes) -> str:
    best = best_learning_rates(rows)
    lrs = budget["learning_rates"]
    sections = []
    for dataset in budget["datasets"]:
        value = {(r["method"], r["learning_rate"]): r for r in rows if r["dataset"] == dataset}
        body = []
        for method in budget["methods"]:
            cells = []
            for lr in lrs:
                r = value[(method, lr)]
                mark = " **best**" if best.get((dataset, method)) is r else ""
                skipped = f" ({r['nonfinite_updates']} skipped)" if r["nonfinite_updates"] else ""
                cells.append(f"{r['value']:.2f} +- {r['standard_error']:.2f}{skipped}{mark}")
            body.append([method, *cells])
        table = mv.results.markdown_table(["method", *(f"lr {lr:g}" for lr in lrs)], body)
        criterion = _criterion(dataset, best, per_image)
        picks = ", ".join(f"{m} {best[(dataset, m)]['learning_rate']:g}" for m in budget["methods"]
                          if (dataset, m) in best)
        sections.append(f"### {dataset}\n\nPre-training at lr {table1.DATASETS[dataset]['learning_rate']:g}. "
                        f"Validation log-likelihood (nats, +- one standard error over images):\n\n{table}\n\n"
                        f"Best learning rate per method: {picks}. {criterion}")
    option = {"quick": " --quick", "paper": ""}.get(budget_name, f" --budget {budget_name}")
    results_name = budget.get("results_name", NAME)
    cut = (f"**Budget `{budget_name}`, cut from the paper's:** {budget['vae_epochs']} VAE epochs (paper: "
                   f"MNIST 90, Fashion-MNIST 290) then {budget['mcmc_epochs']} MCMC epochs (paper: 10), one seed, "
           f"{', '.join(budget['datasets'])} only, methods {', '.join(budget['methods'])}.\n\n")
    note = {"quick": "**Quick run: tiny budget, for smoke testing only; these numbers mean nothing.**\n\n",
            "paper": ""}.get(budget_name, cut)
    body = "\n\n".join(sections)
    epochs = budget["vae_epochs"] or "the paper's number of"
    return f"""# table1-lr: the MCMC phase's learning rate, chosen on a validation split

Regenerate with `python experiments/run.py table1-lr{option}` (this file and `{results_name}.json`).

{note}**Protocol.** The last {budget['validation_size']} training images are held out, and the rest train. A plain VAE
is pre-trained at the paper's learning rate for {epochs} epochs. Each
method then runs {budget['mcmc_epochs']} MCMC epochs from it, once per learning rate (Adam for theta and phi0; the
kernel keeps its own rate). K = {table1.K} kernel steps, L = {table1.L} leapfrog steps (HMC), batch 100, seed
{budget['seed']}. Score: importance-sampling log-likelihood on the first {budget['validation_images']} held-out
images, S = {budget['num_samples']}, the method's proposal with tau = 1.5. The test set is not read. "skipped"
counts updates the trainer refused because a loss or gradient was not finite.

{body}

**Machine.** {mv.results.machine()}; {minutes:.1f} min in this invocation (runs and evaluations already on disk are
reused); code at revision {mv.results.git_revision()}.
"""
