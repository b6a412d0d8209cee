r"""``table2-kid``: how good the images of MCMC-refined VAEs are, by KID (Hirt et al. 2024, Table 2).

Per dataset and seed: a plain VAE (standard prior) is trained for the VAE epochs; ``dsmala``, ``dshmc``,
``gradmala`` and ``gradhmc`` (Algorithm 1, K = 10, HMC with L = 2, a diagonal C for the speed-measure
methods) continue from it for the MCMC epochs, and the ``vae`` row continues the ELBO for as many epochs.
``vae-mog`` and ``vae-vamp`` are VAEs with a mixture-of-Gaussians prior (50 components) and a VampPrior (500
pseudo-inputs), trained with the ELBO for all the epochs. Everything else as in Table 1: MNIST and
Fashion-MNIST thresholded at 0.5, Bernoulli likelihood, d_z = 10, 200-200 ReLU MLPs, Adam at 1e-3, batch 100.

KID like for like (``common.binary_sample_kid``): one binary prior sample per held-out test image (``z ~ p(z)``,
each pixel drawn once from the decoded Bernoulli mean) against binary test images, both resized to 150 x 150 as in
the paper, FID Inception-V3 features, cubic-kernel MMD^2 over subsets. (Decoded grey means against binary test
images, the earlier protocol, partly reward a saturated decoder.) The test images are a random sample (fixed seed,
``common.test_order``) when fewer than all; their features are computed once per dataset and shared.

Verdicts: each claim in :data:`CLAIMS` ("a has a lower KID than b") is tested on the per-seed KIDs paired by seed
(:func:`mcmcvae.results.compare_seeds`, 95% t interval over seeds): holds, fails or not resolved.
"""

from __future__ import annotations

import time

import numpy as np

import mcmcvae as mv

import common

DESCRIPTION = "Table 2: KID of vae (standard/MoG/Vamp prior), dsmala, dshmc, gradmala, gradhmc on MNIST, Fashion-MNIST"
NAME = "table2-kid"

# (row name, method name, options, prior); rows with a method other than "vae" start from the pre-trained VAE.
METHODS = [
    ("vae", "vae", {}, "standard"),
    ("vae-mog", "vae", {}, "mog"),
    ("vae-vamp", "vae", {}, "vamp"),
    ("dsmala", "dsmala", {}, "standard"),
    ("dshmc", "dshmc", {}, "standard"),
    ("gradmala", "gradmala", {"preconditioner": "diagonal"}, "standard"),
    ("gradhmc", "gradhmc", {"preconditioner": "diagonal"}, "standard"),
]
SEEDS = (0, 1, 2, 3, 4)  # 5 seeds: a t interval on 4 degrees of freedom (the paper ran 3)
PAPER = {"vae_epochs": 100, "mcmc_epochs": 50, "kid_images": 10_000, "seeds": 3}
BUDGETS = {
    "paper": {"vae_epochs": 100, "mcmc_epochs": 50, "seeds": SEEDS, "train_size": None, "kid_images": None,
              "subset_size": 1000, "num_subsets": 100, "resize_to": 150, "datasets": ("mnist", "fashion_mnist")},
    "cpu": {"vae_epochs": 20, "mcmc_epochs": 5, "seeds": SEEDS, "train_size": None, "kid_images": 1000,
            "subset_size": 500, "num_subsets": 100, "resize_to": 150, "datasets": ("mnist", "fashion_mnist")},
    # One path of each kind: plain VAE, a learnt prior, and the speed measure; the network at its smallest input;
    # two seeds, for the seed comparison.
    "quick": {"vae_epochs": 1, "mcmc_epochs": 1, "seeds": (0, 1), "train_size": 300, "kid_images": 20,
              "subset_size": 10, "num_subsets": 5, "resize_to": 75, "datasets": ("mnist",),
              "methods": ("vae", "vae-mog", "gradmala")},
}
# The claims tested on every dataset: (a, b) reads "a has a lower KID than b" (the speed-measure methods against
# the plain VAE and their dual-averaging counterparts).
CLAIMS = (("gradmala", "vae"), ("gradhmc", "vae"), ("gradmala", "dsmala"), ("gradhmc", "dshmc"))
LEARNING_RATE = 1e-3
LATENT_DIM = 10
K, L = 10, 2


def parts(*, quick: bool = False, budget: str | None = None) -> tuple[str, list[dict]]:
    """The budget's name and its parts, one per seed and dataset (seed by seed): ``run.py table2-kid --workers N``
    runs them side by side (:func:`run_part`), then :func:`run` collects them."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    return budget_name, [{"dataset": dataset, "seed": seed} for seed in budget["seeds"]
                         for dataset in budget["datasets"]]


def run_part(dataset: str, seed: int, *, quick: bool = False, out_dir=None, budget: str | None = None) -> dict:
    """Train and evaluate every method on one dataset and seed; returns ``{row name: KID summary}``.

    Each training run resumes from its checkpoints and each KID is kept beside its run (``kid.json``), so parts run
    side by side in separate processes (one per dataset and seed) are only collected by the final :func:`run`.
    """
    import jax

    import mcmcvae as mv
    from mcmcvae.data import load_images
    from mcmcvae.evaluate.generative import generate_images
    from mcmcvae.figures import save_image_grid
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    methods = [m for m in METHODS if m[0] in budget.get("methods", [m[0] for m in METHODS])]
    runs = common.runs_dir(NAME, out_dir) / budget_name
    figures = common.results_dir(out_dir) / "figures" / NAME
    figures.mkdir(parents=True, exist_ok=True)
    total_epochs = budget["vae_epochs"] + budget["mcmc_epochs"]
    train = load_images(dataset, "train", binarize="static", num_images=budget["train_size"])
    test = common.load_binary(dataset, "test", "threshold", num_images=budget["kid_images"], random_sample=True)
    reference = common.reference_features(f"{dataset}-test", test, resize_to=budget["resize_to"], out_dir=out_dir)
    models = {prior: mv.models.VAE(image_shape=train.shape[1:], latent_dim=LATENT_DIM, prior=prior)
              for prior in {m[3] for m in methods}}
    elbo = mv.methods.build("vae", learning_rate=LEARNING_RATE)
    pretrained, _, _ = mv.train.fit(models["standard"], [Phase(elbo, budget["vae_epochs"])], train,
                                    run_dir=runs / f"{dataset}-pretrain-seed{seed}", seed=seed,
                                    progress=not quick, extra_config={"dataset": dataset})
    results = {}
    for row_name, method_name, options, prior in methods:
        model = models[prior]
        if prior != "standard":  # a learnt prior: the ELBO from scratch for all the epochs
            phases, start = [Phase(elbo, total_epochs)], None
        else:
            method = mv.methods.build(method_name, **mv.methods.select_options(method_name, dict(
                learning_rate=LEARNING_RATE, num_mcmc_steps=K, num_integration_steps=L, **options)))
            phases, start = [Phase(method, budget["mcmc_epochs"])], pretrained
        run_dir = runs / f"{dataset}-{row_name}-seed{seed}"
        params, _, seconds = mv.train.fit(model, phases, train, run_dir=run_dir, seed=seed, params=start,
                                          progress=not quick, extra_config={"dataset": dataset})

        def evaluate():
            return common.binary_sample_kid(jax.random.key(30_000 + seed), model, params,
                                            reference_features=reference, resize_to=budget["resize_to"],
                                            num_subsets=budget["num_subsets"], subset_size=budget["subset_size"])

        settings = {key: budget[key] for key in ("kid_images", "subset_size", "num_subsets", "resize_to")}
        settings.update(samples="binary", test_sample_seed=common.TEST_SAMPLE_SEED)
        result = mv.results.cached_evaluation(run_dir / "kid.json", {**settings, "epochs": total_epochs}, evaluate)
        results[row_name] = {**result, "train_seconds": seconds}
        if seed == budget["seeds"][0]:
            save_image_grid(generate_images(jax.random.key(seed), model, params, 64),
                            figures / f"{dataset}-{row_name}-samples.png", num_columns=8,
                            title=f"{dataset} {row_name}: decoded prior samples")
    return results


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    import mcmcvae as mv

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    methods = [m for m in METHODS if m[0] in budget.get("methods", [m[0] for m in METHODS])]
    tic = time.perf_counter()
    rows, unavailable = [], []
    for dataset in budget["datasets"]:
        per_method: dict[str, list[dict]] = {}
        try:
            for seed in budget["seeds"]:
                for row_name, result in run_part(dataset, seed, out_dir=out_dir, budget=budget_name).items():
                    per_method.setdefault(row_name, []).append(result)
        except mv.data.DataNotFoundError:
            unavailable.append(dataset)
            continue
        for row_name, results in per_method.items():
            kids = [r["kid"] for r in results]
            mean, std = mv.results.summarise(kids)
            first = results[0]
            rows.append(mv.results.row(NAME, dataset, row_name, "kid", mean, std, len(kids), per_seed=kids,
                                       subset_std=[r["kid_std"] for r in results], num_generated=first["num_generated"],
                                       num_reference=first["num_reference"], subset_size=first["subset_size"],
                                       num_subsets=first["num_subsets"], resize_to=first["resize_to"],
                                       train_seconds=[r["train_seconds"] for r in results],
                                       kid_seconds=[r["eval_seconds"] for r in results],
                                       samples=first["samples"], num_images=first["num_reference"],
                                       test_sample_seed=common.TEST_SAMPLE_SEED, budget=budget_name, quick=quick))
    for dataset in budget["datasets"]:
        per_seed = {r["method"]: r["per_seed"] for r in rows if r["dataset"] == dataset and r["value"] is not None}
        for (a, b), c in kid_comparisons(per_seed).items():
            rows.append(mv.results.row(NAME, dataset, f"{a} - {b}", "kid_verdict", None, None, c.num_seeds,
                                       claim=f"{a} has a lower KID than {b}", verdict=c.verdict,
                                       comparison=c._asdict()))
    for dataset in unavailable:
        for row_name, *_ in methods:
            rows.append(mv.results.row(NAME, dataset, row_name, "kid", None, None, 0, note="not run: data unavailable"))
    markdown = _markdown(rows, budget_name, budget, unavailable, quick, (time.perf_counter() - tic) / 60,
                         provenance=common.parts_provenance(NAME, budget_name, out_dir))
    return mv.results.write_results(NAME, rows, markdown, out_dir)


def kid_comparisons(per_seed: dict) -> dict:
    """Each claim of :data:`CLAIMS` whose two rows ran: ``{(a, b): SeedComparison}`` of ``KID_b - KID_a`` paired by
    seed (positive: ``a`` has the lower, better KID)."""
    return {(a, b): mv.results.compare_seeds(per_seed[b], per_seed[a]) for a, b in CLAIMS
            if a in per_seed and b in per_seed}


def _minus_baseline(row, baseline) -> str:
    """``row``'s KID minus the plain VAE's, paired by seed (the MCMC rows refine that seed's own pre-trained VAE):
    the mean difference +- its standard error over seeds, or the one difference for a single seed."""
    if baseline is None or row is baseline:
        return ""
    diffs = 1000 * (np.asarray(row["per_seed"]) - np.asarray(baseline["per_seed"]))
    if len(diffs) == 1:
        return f"{diffs[0]:+.1f}"
    mean, error = mv.results.paired_difference(row["per_seed"], baseline["per_seed"])
    return f"{1000 * mean:+.1f} +- {1000 * error:.1f}"


def _verdict_lines(kid_rows) -> str:
    """The claims' verdicts on one dataset's KID rows, computed from the per-seed values."""
    per_seed = {r["method"]: r["per_seed"] for r in kid_rows if r["value"] is not None}
    lines = [mv.results.verdict_sentence(f"{a} has a lower KID than {b}", c, unit="(KID x 1000)", scale=1000,
                                         digits=2) for (a, b), c in kid_comparisons(per_seed).items()]
    return "" if not lines else "\n" + "\n".join(f"- {line}" for line in lines) + "\n"


def _time_text(rows, minutes) -> str:
    """This invocation's minutes, and the training and KID minutes of the runs it collected (which an earlier
    invocation or side-by-side :func:`run_part` processes may have spent)."""
    done = [r for r in rows if r["metric"] == "kid" and r["value"] is not None]
    train = sum(sum(r["train_seconds"]) for r in done) / 60
    kid = sum(sum(r["kid_seconds"]) for r in done) / 60
    return (f"this invocation {minutes:.1f} min; the runs it collected took {train:.0f} min of training and "
            f"{kid:.0f} min of KID, summed over runs (the shared pre-training excluded)")


def _markdown(rows, budget_name, budget, unavailable, quick, minutes, provenance="") -> str:
    tables = []
    for dataset in budget["datasets"]:
        body = []
        mine = [r for r in rows if r["dataset"] == dataset and r["metric"] == "kid"]
        baseline = next((r for r in mine if r["method"] == "vae" and r["value"] is not None), None)
        for r in mine:
            if r["value"] is None:
                body.append([r["method"], r.get("note", "not run"), "", "", "", ""])
                continue
            std = "n/a" if r["std"] is None else f"{1000 * r['std']:.2f}"
            per_seed = ", ".join(f"{1000 * k:.1f}" for k in r["per_seed"])
            body.append([r["method"], f"{1000 * r['value']:.2f}", std, per_seed,
                         _minus_baseline(r, baseline), r["num_seeds"]])
        tables.append(f"### {dataset}\n\n" + mv.results.markdown_table(
            ["method", "KID x 1000", "std over seeds (x 1000)", "per seed (x 1000)", "minus vae, paired by seed",
             "seeds"], body) + "\n" + _verdict_lines(mine))
    first = next((r for r in rows if r["metric"] == "kid" and r["value"] is not None), None)
    sets = ("" if first is None else
            f"{first['num_generated']} generated against {first['num_reference']} test images, "
            f"{first['num_subsets']} subsets of {first['subset_size']}, images resized to "
            f"{first['resize_to']} x {first['resize_to']}")
    fraction = common.fraction_text([("VAE epochs", budget["vae_epochs"], PAPER["vae_epochs"]),
                                     ("MCMC epochs", budget["mcmc_epochs"], PAPER["mcmc_epochs"]),
                                     ("KID test images", budget["kid_images"], PAPER["kid_images"])])
    cut = (f"{'' if budget_name == 'paper' else f'**Budget `{budget_name}`, cut from the paper.** '}{fraction} "
           f"Seeds: {len(budget['seeds'])} (the paper: {PAPER['seeds']}); KID test images: "
           f"{common.sample_text(budget['kid_images'])}"
           f"{'; Inception input 75 x 75 (paper: 150)' if budget['resize_to'] != 150 else ''}. Lower KID is better.\n")
    missing = ("" if not unavailable else
               f"Not run, data unavailable: {', '.join(unavailable)} (`mcmcvae data fetch` says where the files go).\n")
    return f"""# table2-kid: KID of MCMC-refined VAEs

Regenerate with `python experiments/run.py table2-kid {'--quick' if quick else f'--budget {budget_name}'}`
(`--budget paper` for the paper's schedule).
{'**Quick run: smoke test only; these numbers mean nothing.**' if quick else ''}

Setting: threshold-0.5 binarisation, d_z = {LATENT_DIM}, 200-200 ReLU MLPs, Bernoulli likelihood, Adam at
{LEARNING_RATE}, batch 100. `vae`, `dsmala`, `dshmc`, `gradmala`, `gradhmc` share one pre-trained VAE per seed
and differ only in the last {budget['mcmc_epochs']} epochs (K = {K}, L = {L}, a diagonal C for the speed
measure); `vae-mog` (50 components) and `vae-vamp` (500 pseudo-inputs) train their ELBO from scratch for all
{budget['vae_epochs'] + budget['mcmc_epochs']} epochs. **KID like for like: binary against binary**: one binary
prior sample per test image (each pixel drawn once from the decoded Bernoulli mean) against the binary
(thresholded) test images; {sets}; x 1000, lower is better; std over seeds (n/a for one seed); "minus vae" is
each seed's KID minus that seed's plain VAE's, averaged, +- its standard error over seeds (the MCMC rows start from
that VAE; the learnt-prior rows are trained apart from it, so for them the pairing only shares the seed). Verdicts
under each table: each claim's KID difference paired by seed with its 95% t interval over seeds
(`mv.results.compare_seeds`): holds, fails or not resolved.

{cut}{missing}
**Machine.** {mv.results.machine()}; revision {mv.results.git_revision()}{provenance}; {_time_text(rows, minutes)}.

{chr(10).join(tables)}
Sample grids of every method are in `results/figures/{NAME}/`.
"""
