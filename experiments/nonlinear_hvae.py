r"""``nonlinear-hvae``: MCMC-refined training of top-down hierarchical VAEs on binarised MNIST and Fashion-MNIST.

Hirt, Kreouzis and Dellaportas (2024), section 6.7, Table 6. Model: :class:`mcmcvae.hierarchical.TopDownHVAE` with
two stochastic layers of sizes 5 and 10 (``z^1`` at the top), ReLU MLP blocks (200-200 for the networks that
read or write the image, 100 for the others, states of width 100), Bernoulli likelihood on images thresholded at
0.5. Training: 190 hVAE (ELBO) epochs, then 10 epochs of each MCMC method from those parameters (Algorithm 1),
Adam at 1e-3, batch 100; the baseline ``vae`` continues the ELBO for the same 10 epochs. The prior (``h_l``,
``mu_l``, ``sigma_l``) is trained in the hVAE phase only: the MCMC methods run inside
:class:`mcmcvae.hierarchical.FreezeParams` with ``groups=("prior",)``, so their theta update reaches the decoder
alone. Test log-likelihood: importance sampling with the hierarchical ``q(z | x)`` as the proposal
(:func:`mcmcvae.hierarchical.log_likelihood`) on ``test_images`` test images, and AIS from each method's own
proposal on ``ais_images`` of them (fixed HMC step size; on the first seed a second run with more temperatures
checks it); both samples random (fixed seed, ``common.test_order``) when not all. The verdicts use AIS
(:data:`VERDICT_ESTIMATOR`, decided before the numbers: importance sampling from q is loose for models whose
decoder has moved away from q, and it flipped this experiment's first verdict). Each claim of :data:`CLAIMS` is
tested on the per-seed values paired by seed (:func:`mcmcvae.results.compare_seeds`). KID like for like: binary
prior samples (one Bernoulli draw per pixel) against binary test images, 150 x 150 inputs.

Beyond the paper: the same on MNIST with three layers (5, 10, 20) and four layers (5, 10, 20, 40).
"""

from __future__ import annotations

import time

import numpy as np

import mcmcvae as mv

import common

DESCRIPTION = "top-down hVAE (5-10; also 3 and 4 layers) on binarised MNIST / Fashion-MNIST: test log-likelihood"
NAME = "nonlinear-hvae"
LAYERS = {2: (5, 10), 3: (5, 10, 20), 4: (5, 10, 20, 40)}
CASES = (("mnist", 2), ("fashion_mnist", 2), ("mnist", 3), ("mnist", 4))
SEEDS = (0, 1, 2, 3, 4)
FULL = {"vae_epochs": 190, "mcmc_epochs": 10, "methods": ("vae", "gradmala", "gradhmc", "dsmala", "dshmc"),
        "cases": CASES, "num_samples": 5000, "train_size": None, "test_images": None, "num_mcmc_steps": 10,
        "kid_images": None, "kid_subset_size": 1000, "kid_num_subsets": 100, "kid_resize_to": 150,
        "ais_images": 1000, "ais_temperatures": 1000, "ais_chains": 16, "ais_step_size": 0.2, "ais_check_factor": 2,
        "seeds": SEEDS}
# --quick: one hVAE epoch and one epoch of vae and gradmala on 300 MNIST images, two layers only, one seed (every
# compiled training epoch costs 20-40 s of CPU here; deeper models are exercised by tests/hierarchical).
QUICK = {"vae_epochs": 1, "mcmc_epochs": 1, "methods": ("vae", "gradmala"), "cases": (("mnist", 2),),
         "num_samples": 8, "train_size": 300, "test_images": 20, "num_mcmc_steps": 2,
         "kid_images": 20, "kid_subset_size": 10, "kid_num_subsets": 5, "kid_resize_to": 75,
         "ais_images": 4, "ais_temperatures": 3, "ais_chains": 2, "ais_step_size": 0.2, "ais_check_factor": 2,
         "seeds": (0,)}
# --budget cpu: every case, cut (there a two-layer hVAE epoch on 60000 images takes about 4 s, a gradmala epoch
# about 30 s and a gradhmc epoch about 100 s; one two-layer case and seed about 30 min of training alone, and AIS
# on 1000 images with its check as long again): the paper's hVAE phase, 3 of its 10 MCMC epochs, S = 1000 on 5000
# random test images, AIS on 1000 of them with 100 temperatures, KID on 1000, 5 seeds. A GPU's job at 5 seeds.
# The cases are independent, so they can run side by side (``run_part``; ``run.py nonlinear-hvae --workers N``)
# and the final invocation reuses them.
CPU = {**FULL, "mcmc_epochs": 3, "num_samples": 1000, "test_images": 5000, "kid_images": 1000,
       "kid_subset_size": 500, "ais_images": 1000, "ais_temperatures": 100}
BUDGETS = {"paper": FULL, "cpu": CPU, "quick": QUICK}
# The estimator of the verdicts, decided before any number.
VERDICT_ESTIMATOR = "ais"
# (a, b): "a has a higher AIS test log-likelihood than b"; KID claims read "a has a lower KID than b".
CLAIMS = (("gradmala", "vae"), ("gradhmc", "vae"), ("dsmala", "vae"), ("dshmc", "vae"), ("gradmala", "dsmala"),
          ("gradhmc", "dshmc"))
HIDDEN_SIZES, BLOCK_HIDDEN_SIZES, STATE_SIZE = (200, 200), (100,), 100
NUM_INTEGRATION_STEPS = 2
AIS_VARIANCE_FACTOR = 1.5  # tau on the start distribution's variance, as table1-loglik's AIS
LEARNING_RATE = 1e-3
BATCH_SIZE = 100


def _run(model, phases, images, run_dir, dataset, seed, params=None):
    """Train (resuming from ``run_dir``'s checkpoints when an earlier attempt was interrupted)."""
    return mv.train.fit(model, phases, images, run_dir=run_dir, seed=seed, params=params, batch_size=BATCH_SIZE,
                        progress=False, extra_config={"dataset": dataset})


def _copy(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(jnp.array, tree)  # the trainer donates the parameters it is given


def parts(*, quick: bool = False, budget: str | None = None) -> tuple[str, list[dict]]:
    """The budget's name and its parts, one per seed and case (seed by seed): ``run.py nonlinear-hvae --workers
    N`` runs them side by side (:func:`run_part`), then :func:`run` collects them."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    return budget_name, [{"dataset": dataset, "num_layers": num_layers, "seed": seed}
                         for seed in budget["seeds"] for dataset, num_layers in budget["cases"]]


def run_part(dataset: str, num_layers: int, seed: int = 0, *, quick: bool = False, out_dir=None,
             budget: str | None = None) -> list[dict]:
    """Train and evaluate every method on one dataset, depth and seed; returns result rows."""
    import jax

    import mcmcvae as mv
    from mcmcvae import hierarchical
    from mcmcvae.data import load_images
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    sizes = LAYERS[num_layers]
    train = load_images(dataset, "train", binarize="static", num_images=budget["train_size"])
    test = common.load_binary(dataset, "test", "threshold", num_images=budget["test_images"], random_sample=True)
    kid_test = common.load_binary(dataset, "test", "threshold", num_images=budget["kid_images"], random_sample=True)
    reference = common.reference_features(f"{dataset}-test", kid_test, resize_to=budget["kid_resize_to"],
                                          out_dir=out_dir)
    model = hierarchical.TopDownHVAE(image_shape=train.shape[1:], latent_sizes=sizes, hidden_sizes=HIDDEN_SIZES,
                                     block_hidden_sizes=BLOCK_HIDDEN_SIZES, state_size=STATE_SIZE)
    runs = common.runs_dir(NAME, out_dir) / budget_name / f"{dataset}-{num_layers}layer-seed{seed}"
    elbo = mv.methods.build("vae", learning_rate=LEARNING_RATE)
    hvae_params, _, hvae_seconds = _run(model, [Phase(elbo, budget["vae_epochs"])], train, runs / "hvae", dataset,
                                        seed)
    hvae_params = jax.tree_util.tree_map(np.array, hvae_params)

    rows = []
    case = {"num_layers": num_layers, "latent_sizes": list(sizes), "quick": quick, "budget_name": budget_name,
            "seed": seed}
    for name in budget["methods"]:
        if name == "vae":
            method = elbo
        else:
            method = hierarchical.FreezeParams(mv.methods.build(name, **mv.methods.select_options(name, dict(
                num_mcmc_steps=budget["num_mcmc_steps"], num_integration_steps=NUM_INTEGRATION_STEPS,
                learning_rate=LEARNING_RATE))), groups=("prior",))
        params, state, seconds = _run(model, [Phase(method, budget["mcmc_epochs"])], train, runs / name, dataset,
                                      seed, params=_copy(hvae_params))

        def evaluate():
            per_image = hierarchical.log_likelihood(jax.random.key(10_000 + seed), model, params, test,
                                                    num_samples=budget["num_samples"])
            kid = common.binary_sample_kid(jax.random.key(30_000 + seed), model, params,
                                           reference_features=reference, resize_to=budget["kid_resize_to"],
                                           num_subsets=budget["kid_num_subsets"],
                                           subset_size=budget["kid_subset_size"])
            return {"log_likelihood": float(per_image.mean()),
                    "standard_error": float(per_image.std(ddof=1) / np.sqrt(len(per_image))),
                    "num_images": len(per_image), "kid": kid, "per_image": np.asarray(per_image).tolist()}

        protocol = {key: budget[key] for key in ("num_samples", "test_images", "kid_images", "kid_subset_size",
                                                 "kid_num_subsets", "kid_resize_to", "train_size")}
        protocol.update(epochs=[budget["vae_epochs"], budget["mcmc_epochs"]], kid_samples="binary",
                        test_sample_seed=common.TEST_SAMPLE_SEED)
        result = mv.results.cached_evaluation(runs / name / "eval.json", protocol, evaluate, require=("per_image",))
        # AIS from the method's own proposal (N(zbar_K, tau Sigma0) for the MCMC methods) to p(x, z), fixed step
        # size, checked on the first seed against a run with more temperatures
        num_ais = min(budget["ais_images"], len(test))
        ais = common.ais_with_check(
            runs / name / "ais.json", {"epochs": protocol["epochs"], "test_sample_seed": common.TEST_SAMPLE_SEED},
            jax.random.key(20_000 + seed), model, method, params, state, test[:num_ais],
            num_temperatures=budget["ais_temperatures"], num_chains=budget["ais_chains"],
            step_size=budget["ais_step_size"], variance_factor=AIS_VARIANCE_FACTOR,
            check_factor=budget["ais_check_factor"] if seed == budget["seeds"][0] else None)
        kid = result["kid"]
        per_image = np.asarray(result["per_image"], np.float64)
        extra = {**case, "standard_error": result["standard_error"], "num_samples": budget["num_samples"],
                 "num_images": result["num_images"], "train_seconds": hvae_seconds + seconds,
                 "eval_seconds": result["eval_seconds"]}
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood", result["log_likelihood"], None, 1,
                                   **extra))
        ais_extra = {**case, "standard_error": ais["standard_error"], "num_images": ais["num_images"],
                     "num_temperatures": budget["ais_temperatures"], "num_chains": budget["ais_chains"],
                     "step_size": budget["ais_step_size"], "check": ais["check"],
                     "acceptance_rate": ais["acceptance_rate"], "eval_seconds": ais["eval_seconds"],
                     # importance sampling on the same images, for the gap between the two estimates
                     "importance_on_same_images": float(np.mean(per_image[:num_ais]))}
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood_ais", ais["test_log_likelihood"], None, 1,
                                   **ais_extra))
        rows.append(mv.results.row(NAME, dataset, name, "kid", kid["kid"], None, 1, **case,
                                   **{k: v for k, v in kid.items() if k != "kid"},
                                   num_images=kid["num_reference"], test_sample_seed=common.TEST_SAMPLE_SEED))
    return rows


def summarise(seed_rows: list[dict]) -> list[dict]:
    """One row per (dataset, depth, method, metric): the mean over seeds, its standard deviation, the per-seed
    values (and, for AIS, importance sampling on the same images per seed and the first seed's check)."""
    groups: dict = {}
    for r in seed_rows:
        groups.setdefault((r["dataset"], r["num_layers"], r["method"], r["metric"]), []).append(r)
    out = []
    for (dataset, num_layers, method, metric), group in groups.items():
        mean, std = mv.results.summarise([r["value"] for r in group])
        first = group[0]
        extra = {k: first[k] for k in ("latent_sizes", "quick", "budget_name", "num_images", "num_samples",
                                       "num_temperatures", "num_chains", "step_size", "check", "num_generated",
                                       "num_reference", "resize_to", "subset_size", "num_subsets", "samples",
                                       "test_sample_seed")
                 if k in first}
        if metric == "test_log_likelihood_ais":
            extra["importance_on_same_images"] = [r["importance_on_same_images"] for r in group]
            extra["acceptance_rate"] = [r["acceptance_rate"] for r in group]
        out.append(mv.results.row(NAME, dataset, method, metric, mean, std, len(group), num_layers=num_layers,
                                  per_seed=[r["value"] for r in group], seeds=[r["seed"] for r in group],
                                  train_seconds=[r.get("train_seconds") for r in group], **extra))
    return out


def verdicts(rows: list[dict]) -> list[dict]:
    """Every claim of :data:`CLAIMS` whose rows ran, per case: by :data:`VERDICT_ESTIMATOR` (AIS, "a beats b")
    and by KID ("a has a lower KID than b"), from the per-seed values paired by seed."""
    out = []
    for dataset, num_layers in dict.fromkeys((r["dataset"], r["num_layers"]) for r in rows):
        mine = {(r["method"], r["metric"]): r for r in rows
                if (r["dataset"], r["num_layers"]) == (dataset, num_layers)}
        for a, b in CLAIMS:
            for metric, claim, order in (("test_log_likelihood_ais", f"{a} beats {b} (AIS)", (a, b)),
                                         ("kid", f"{a} has a lower KID than {b}", (b, a))):
                if (a, metric) in mine and (b, metric) in mine:
                    c = mv.results.compare_seeds(mine[(order[0], metric)]["per_seed"],
                                                 mine[(order[1], metric)]["per_seed"])
                    out.append({"dataset": dataset, "num_layers": num_layers, "claim": claim, "metric": metric,
                                "comparison": c})
    return out


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    """Every case of the budget (``paper``, the default; ``cpu``; or, with ``quick``, ``quick``)."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    tic = time.perf_counter()
    seed_rows, cases = [], list(budget["cases"])
    for i, (dataset, num_layers) in enumerate(cases):
        for seed in budget["seeds"]:
            part = {"dataset": dataset, "num_layers": num_layers, "seed": seed}
            kept = common.part_rows(NAME, budget_name, part, budget, out_dir)  # a finished part's record
            seed_rows += kept if kept is not None else run_part(**part, out_dir=out_dir, budget=budget_name)
        # written after every case, so a long run that is stopped still leaves what it finished, marked as partial
        rows = summarise(seed_rows)
        found = verdicts(rows)
        rows += [mv.results.row(NAME, v["dataset"], v["claim"], "verdict", None, None, v["comparison"].num_seeds,
                                num_layers=v["num_layers"], verdict=v["comparison"].verdict,
                                comparison=v["comparison"]._asdict()) for v in found]
        markdown = _markdown(rows, found, budget_name, (time.perf_counter() - tic) / 60, pending=cases[i + 1:],
                             provenance=common.parts_provenance(NAME, budget_name, out_dir))
        paths = mv.results.write_results(NAME, rows, markdown, out_dir)
    return paths


def _cell(row, scale=1.0) -> str:
    return f"{scale * row['value']:.2f}" + ("" if row["std"] is None else f" +- {scale * row['std']:.2f}")


def _markdown(rows, found, budget_name, minutes, pending=(), provenance="") -> str:
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    by_key = {(r["dataset"], r["num_layers"], r["method"], r["metric"]): r for r in rows if r["metric"] != "verdict"}
    body = []
    for r in rows:
        if r["metric"] != "test_log_likelihood":
            continue
        key = (r["dataset"], r["num_layers"], r["method"])
        annealed, kid = by_key[(*key, "test_log_likelihood_ais")], by_key[(*key, "kid")]
        body.append([r["dataset"], f"{r['num_layers']} ({'-'.join(map(str, r['latent_sizes']))})", r["method"],
                     r["num_seeds"], _cell(annealed), f"{np.mean(annealed['importance_on_same_images']):.2f}",
                     _cell(r), _cell(kid, 1000)])
    n_ais = next(r for r in rows if r["metric"] == "test_log_likelihood_ais")["num_images"]
    table = mv.results.markdown_table(["dataset", "layers (sizes)", "method", "seeds", f"AIS on {n_ais} (verdict)",
                                       f"IS on the same {n_ais}", f"IS on {budget['test_images'] or 10_000}",
                                       "KID x 1000, binary vs binary"], body)
    lines = [f"- {v['dataset']}, {v['num_layers']} layers: " + mv.results.verdict_sentence(
        v["claim"], v["comparison"], **({"unit": "(KID x 1000)", "scale": 1000} if v["metric"] == "kid" else {}))
        for v in found]
    checks = {f"{r['dataset']}/{r['num_layers']}/{r['method']}": r["check"] for r in rows
              if r["metric"] == "test_log_likelihood_ais" and r.get("check")}
    check_text = common.ais_check_text(checks)
    kid = next(r for r in rows if r["metric"] == "kid")
    note = ("**Quick run: 300 images, one epoch per phase, one case, two methods and one seed; smoke test only, the "
            "numbers mean nothing.**" if quick else "")
    if budget_name != "paper":
        fraction = common.fraction_text([
            ("hVAE epochs", budget["vae_epochs"], FULL["vae_epochs"]),
            ("MCMC epochs", budget["mcmc_epochs"], FULL["mcmc_epochs"]),
            ("importance samples S", budget["num_samples"], FULL["num_samples"]),
            ("test images", budget["test_images"], 10_000), ("KID test images", budget["kid_images"], 10_000)])
        note += ("\n\n" if note else "") + f"**Budget `{budget_name}`, cut from the paper's.** " + fraction
    option = {"quick": " --quick", "paper": ""}.get(budget_name, f" --budget {budget_name}")
    if pending:
        note += ("\n\n**Partial: the run had not finished when this file was written.** Cases still to run: "
                 + ", ".join(f"{d} with {n} layers" for d, n in pending)
                 + ". Running the same command again reuses every finished run and evaluation.")
    return f"""# nonlinear-hvae: MCMC-refined top-down hierarchical VAEs

Regenerate with `python experiments/run.py nonlinear-hvae{option}` (this file and
`nonlinear-hvae.json`).

**Estimator of the verdicts, decided before the numbers: AIS** (`VERDICT_ESTIMATOR` in
`experiments/nonlinear_hvae.py`): importance sampling from the hierarchical q is loose for models whose decoder
has moved away from q. Each verdict: the mean over seeds of the per-seed difference, paired by seed, with its 95%
t interval over seeds (`mv.results.compare_seeds`): holds (above 0), fails (below 0) or not resolved.

{note}

{table}

Each cell: mean over seeds +- std over seeds (KID x 1000).

{chr(10).join(lines)}

{check_text}

**Setting.** Paper: section 6.7, Table 6 (two layers, MNIST and Fashion-MNIST); three and four layers on MNIST go
beyond it. Images thresholded at 0.5; {budget['train_size'] or 'all 60000'} training images;
{budget['vae_epochs']} hVAE epochs, then {budget['mcmc_epochs']} epochs of each method from the same hVAE
parameters (``vae``: the ELBO continued); K = {budget['num_mcmc_steps']} kernel steps, L = {NUM_INTEGRATION_STEPS}
leapfrog steps (HMC), speed-measure methods with a diagonal C; Adam at {LEARNING_RATE}, batch {BATCH_SIZE}, seeds
{', '.join(map(str, budget['seeds']))}. The MCMC methods' prior is frozen in their phase (``FreezeParams``), as
the paper's theta update reaches the decoder alone; ``vae``, continuing the ELBO, still trains it, so each
comparison with ``vae`` is of the method together with that difference. Importance
sampling: S = {budget['num_samples']} draws of the hierarchical q(z|x) per image over
{common.sample_text(budget['test_images'])}. AIS: from each method's own proposal (for the MCMC methods the
Gaussian centred on the mean of chains run with the learnt kernel, started, unlike training's, from the
diagonal Gaussian summary of q along its mean path, `encode`, with that summary's scale; for vae the summary
itself; either with its variance times {AIS_VARIANCE_FACTOR}: AIS is a stochastic lower bound from any start,
which changes only how tight it is) to p(x, z), {budget['ais_temperatures']} sigmoidal
temperatures x {budget['ais_chains']} chains, HMC with a fixed step size {budget['ais_step_size']} (whitened
coordinates), on {common.sample_text(n_ais)} (the first {n_ais} images of the importance-sampling sample). KID like for like
(lower is better): one binary prior sample per test image (each pixel drawn once from the decoded Bernoulli mean)
against binary test images, {kid['num_generated']} against {kid['num_reference']} images resized to
{kid['resize_to']} x {kid['resize_to']}, {kid['num_subsets']} subsets of {kid['subset_size']}.

**Machine.** {mv.results.machine()}; {minutes:.1f} min in this invocation (trained runs and evaluations already
on disk under `runs/` are reused, not redone); code at revision {mv.results.git_revision()}{provenance}.
The full run (4 cases x 5 methods x 5 seeds, 200 epochs each on 60000 images, S = {FULL['num_samples']}) needs a
GPU.
"""
