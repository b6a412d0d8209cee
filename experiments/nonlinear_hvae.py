r"""``nonlinear-hvae``: MCMC-refined training of top-down hierarchical VAEs on binarised MNIST and Fashion-MNIST.

Hirt, Kreouzis and Dellaportas (2024), section 6.7, Table 6. Model: :class:`mcmcvae.hierarchical.TopDownHVAE` with
two stochastic layers of sizes 5 and 10 (``z^1`` at the top), ReLU MLP blocks (200-200 for the networks that
read or write the image, 100 for the others, states of width 100), Bernoulli likelihood on images thresholded at
0.5. Training: 190 hVAE (ELBO) epochs, then 10 epochs of each MCMC method from those parameters (Algorithm 1),
Adam at 1e-3, batch 100; the baseline ``vae`` continues the ELBO for the same 10 epochs. The prior (``h_l``,
``mu_l``, ``sigma_l``) is trained in the hVAE phase only: the MCMC methods run inside
:class:`mcmcvae.hierarchical.FreezeParams` with ``groups=("prior",)``, so their theta update reaches the decoder
alone. Test log-likelihood: importance sampling with the hierarchical ``q(z | x)`` as the proposal
(:func:`mcmcvae.hierarchical.log_likelihood`). KID by the paper's protocol
(:func:`mcmcvae.evaluate.generative.model_kid`: one decoded prior sample per test image, 150 x 150 inputs).

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
FULL = {"vae_epochs": 190, "mcmc_epochs": 10, "methods": ("vae", "gradmala", "gradhmc", "dsmala", "dshmc"),
        "cases": CASES, "num_samples": 5000, "train_size": None, "test_images": None, "num_mcmc_steps": 10,
        "kid_images": None, "kid_subset_size": 1000, "kid_num_subsets": 100, "kid_resize_to": 150,
        "ais_images": 1000, "ais_temperatures": 1000, "ais_chains": 16}
# --quick: one hVAE epoch and one epoch of vae and gradmala on 300 MNIST images, two layers only (every compiled
# training epoch costs 20-40 s of CPU here; deeper models are exercised by tests/hierarchical).
QUICK = {"vae_epochs": 1, "mcmc_epochs": 1, "methods": ("vae", "gradmala"), "cases": (("mnist", 2),),
         "num_samples": 8, "train_size": 300, "test_images": 20, "num_mcmc_steps": 2,
         "kid_images": 20, "kid_subset_size": 10, "kid_num_subsets": 5, "kid_resize_to": 75,
         "ais_images": 4, "ais_temperatures": 3, "ais_chains": 2}
# --budget cpu: every case, cut to what a 2-core CPU does in a few hours (there a two-layer hVAE epoch on 60000
# images takes about 4 s, a gradmala epoch about 30 s and a gradhmc epoch about 100 s; one two-layer case about
# 30 min alone): the paper's hVAE phase, 3 of its 10 MCMC epochs, S = 1000 on 2000 test images, KID on 1000 test
# images. The cases are independent, so they can run side by side (``run_case``) and the final invocation reuses
# them.
CPU = {**FULL, "mcmc_epochs": 3, "num_samples": 1000, "test_images": 2000, "kid_images": 1000,
       "kid_subset_size": 500, "ais_images": 200, "ais_temperatures": 100}
BUDGETS = {"paper": FULL, "cpu": CPU, "quick": QUICK}
HIDDEN_SIZES, BLOCK_HIDDEN_SIZES, STATE_SIZE = (200, 200), (100,), 100
NUM_INTEGRATION_STEPS = 2
AIS_VARIANCE_FACTOR = 1.5  # tau on the start distribution's variance, as table1-loglik's AIS
LEARNING_RATE = 1e-3
BATCH_SIZE = 100
SEED = 0


def _run(model, phases, images, run_dir, dataset, params=None):
    """Train (resuming from ``run_dir``'s checkpoints when an earlier attempt was interrupted)."""
    return mv.train.fit(model, phases, images, run_dir=run_dir, seed=SEED, params=params, batch_size=BATCH_SIZE,
                        progress=False, extra_config={"dataset": dataset})


def _copy(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(jnp.array, tree)  # the trainer donates the parameters it is given


def run_case(dataset: str, num_layers: int, *, quick: bool = False, out_dir=None,
             budget: str | None = None) -> list[dict]:
    """Train and evaluate every method on one dataset and depth; returns result rows."""
    import jax

    import mcmcvae as mv
    from mcmcvae import hierarchical
    from mcmcvae.data import load_images
    from mcmcvae.evaluate.generative import model_kid
    from mcmcvae.evaluate.runs import test_ais_log_likelihood
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    sizes = LAYERS[num_layers]
    train = load_images(dataset, "train", binarize="static", num_images=budget["train_size"])
    test = load_images(dataset, "test", binarize="static", num_images=budget["test_images"])
    kid_test = load_images(dataset, "test", binarize="static", num_images=budget["kid_images"])
    reference = common.reference_features(f"{dataset}-test", kid_test, resize_to=budget["kid_resize_to"],
                                          out_dir=out_dir)
    model = hierarchical.TopDownHVAE(image_shape=train.shape[1:], latent_sizes=sizes, hidden_sizes=HIDDEN_SIZES,
                                     block_hidden_sizes=BLOCK_HIDDEN_SIZES, state_size=STATE_SIZE)
    runs = common.runs_dir(NAME, out_dir) / budget_name / f"{dataset}-{num_layers}layer-seed{SEED}"
    elbo = mv.methods.build("vae", learning_rate=LEARNING_RATE)
    hvae_params, _, hvae_seconds = _run(model, [Phase(elbo, budget["vae_epochs"])], train, runs / "hvae", dataset)
    hvae_params = jax.tree_util.tree_map(np.array, hvae_params)

    rows, per_image, per_image_ais = [], {}, {}
    case = {"num_layers": num_layers, "latent_sizes": list(sizes), "quick": quick, "budget_name": budget_name}
    for name in budget["methods"]:
        if name == "vae":
            method = elbo
        else:
            method = hierarchical.FreezeParams(mv.methods.build(name, **mv.methods.select_options(name, dict(
                num_mcmc_steps=budget["num_mcmc_steps"], num_integration_steps=NUM_INTEGRATION_STEPS,
                learning_rate=LEARNING_RATE))), groups=("prior",))
        params, state, seconds = _run(model, [Phase(method, budget["mcmc_epochs"])], train, runs / name, dataset,
                                      params=_copy(hvae_params))

        def evaluate():
            per_image = hierarchical.log_likelihood(jax.random.key(10_000 + SEED), model, params, test,
                                                    num_samples=budget["num_samples"])
            kid = model_kid(jax.random.key(30_000 + SEED), model, params, reference_features=reference,
                            resize_to=budget["kid_resize_to"], num_subsets=budget["kid_num_subsets"],
                            subset_size=budget["kid_subset_size"])
            kid.pop("generated_features")
            return {"log_likelihood": float(per_image.mean()),
                    "standard_error": float(per_image.std(ddof=1) / np.sqrt(len(per_image))),
                    "num_images": len(per_image), "kid": kid, "per_image": np.asarray(per_image).tolist()}

        protocol = {key: budget[key] for key in ("num_samples", "test_images", "kid_images", "kid_subset_size",
                                                 "kid_num_subsets", "kid_resize_to", "train_size")}
        protocol["epochs"] = [budget["vae_epochs"], budget["mcmc_epochs"]]
        result = mv.results.cached_evaluation(runs / name / "eval.json", protocol, evaluate, require=("per_image",))
        # AIS from the method's own proposal (N(zbar_K, tau Sigma0) for the MCMC methods) to p(x, z): importance
        # sampling from the hierarchical q is loose for models whose decoder has moved away from q (results file)
        num_ais = min(budget["ais_images"], len(test))
        ais_settings = {"num_temperatures": budget["ais_temperatures"], "num_chains": budget["ais_chains"],
                        "variance_factor": AIS_VARIANCE_FACTOR, "num_images": num_ais,
                        "epochs": protocol["epochs"]}
        ais = mv.results.cached_evaluation(runs / name / "ais.json", ais_settings, lambda: test_ais_log_likelihood(
            jax.random.key(20_000 + SEED), model, method, params, state, test[:num_ais],
            num_temperatures=budget["ais_temperatures"], num_chains=budget["ais_chains"],
            variance_factor=AIS_VARIANCE_FACTOR))
        per_image_ais[name] = np.asarray(ais["per_image"], np.float64)
        kid = result["kid"]
        extra = {**case, "standard_error": result["standard_error"], "num_samples": budget["num_samples"],
                 "num_images": result["num_images"], "train_seconds": hvae_seconds + seconds,
                 "eval_seconds": result["eval_seconds"]}
        per_image[name] = np.asarray(result["per_image"], np.float64)
        extra.update(_difference_from_vae(per_image, name))
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood", result["log_likelihood"], None, 1,
                                   **extra))
        ais_extra = {**case, "standard_error": ais["standard_error"], "num_images": ais["num_images"],
                     "num_temperatures": budget["ais_temperatures"], "num_chains": budget["ais_chains"],
                     "acceptance_rate": ais["acceptance_rate"], "eval_seconds": ais["eval_seconds"],
                     # importance sampling on the same images, for the gap between the two estimates
                     "importance_on_same_images": float(np.mean(per_image[name][:num_ais])),
                     **_difference_from_vae(per_image_ais, name)}
        rows.append(mv.results.row(NAME, dataset, name, "test_log_likelihood_ais", ais["test_log_likelihood"], None, 1,
                                   **ais_extra))
        rows.append(mv.results.row(NAME, dataset, name, "kid", kid["kid"], None, 1, **case,
                                   **{k: v for k, v in kid.items() if k != "kid"}))
    return rows


def _difference_from_vae(per_image: dict, name: str) -> dict:
    """The mean over the same test images of ``name``'s per-image log-likelihood minus vae's, with the standard error
    of that paired difference (the per-image values stay in the run's evaluation files, not in the results); empty
    for vae itself or before vae has been evaluated."""
    if name == "vae" or "vae" not in per_image:
        return {}
    mean, se = mv.results.paired_difference(per_image[name], per_image["vae"])
    return {"difference_from_vae": mean, "difference_from_vae_standard_error": se}


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    """Every case of the budget (``paper``, the default; ``cpu``; or, with ``quick``, ``quick``)."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget = BUDGETS[budget_name]
    tic = time.perf_counter()
    rows, cases = [], list(budget["cases"])
    for i, (dataset, num_layers) in enumerate(cases):
        rows += run_case(dataset, num_layers, out_dir=out_dir, budget=budget_name)
        # written after every case, so a long run that is stopped still leaves what it finished, marked as partial
        markdown = _markdown(rows, budget_name, (time.perf_counter() - tic) / 60, pending=cases[i + 1:])
        paths = mv.results.write_results(NAME, rows, markdown, out_dir)
    return paths


def _paired(row) -> str:
    return ("" if "difference_from_vae" not in row else
            f"{row['difference_from_vae']:+.2f} +- {row['difference_from_vae_standard_error']:.2f}")


def _markdown(rows, budget_name, minutes, pending=()) -> str:
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    kids = {(r["dataset"], r["num_layers"], r["method"]): r for r in rows if r["metric"] == "kid"}
    ais = {(r["dataset"], r["num_layers"], r["method"]): r for r in rows if r["metric"] == "test_log_likelihood_ais"}
    body = []
    for r in rows:
        if r["metric"] != "test_log_likelihood":
            continue
        key = (r["dataset"], r["num_layers"], r["method"])
        kid, annealed = kids[key], ais[key]
        body.append([r["dataset"], f"{r['num_layers']} ({'-'.join(map(str, r['latent_sizes']))})", r["method"],
                     f"{r['value']:.2f} +- {r['standard_error']:.2f}", _paired(r),
                     f"{annealed['importance_on_same_images']:.2f}", f"{annealed['value']:.2f}", _paired(annealed),
                     f"{1000 * kid['value']:.2f} +- {1000 * kid['kid_std']:.2f}"])
    n_ais = next(iter(ais.values()))["num_images"]
    table = mv.results.markdown_table(["dataset", "layers (sizes)", "method", "test log-likelihood, IS (nats)",
                                   "IS minus vae's, paired", f"IS, first {n_ais} images", f"AIS, first {n_ais}",
                                   "AIS minus vae's, paired", "KID x 1000 (+- subset std)"], body)
    kid = next(iter(kids.values()))
    note = ("**Quick run: 300 images, one epoch per phase, one case and two methods; smoke test only, the numbers "
            "mean nothing.**" if quick else "")
    if budget_name == "cpu":
        note = (f"**Budget `cpu`, cut from the paper's:** the paper's {budget['vae_epochs']} hVAE epochs, then "
                f"{budget['mcmc_epochs']} epochs per method (paper: {FULL['mcmc_epochs']}); "
                f"S = {budget['num_samples']} on the first {budget['test_images']} test images (paper protocol: "
                f"S = {FULL['num_samples']} on all 10000); KID on the first {budget['kid_images']} test images. The "
                "methods are compared after a third of the paper's MCMC phase.")
    option = {"quick": " --quick", "paper": ""}.get(budget_name, f" --budget {budget_name}")
    if pending:
        note += ("\n\n**Partial: the run had not finished when this file was written.** Cases still to run: "
                 + ", ".join(f"{d} with {n} layers" for d, n in pending)
                 + ". Running the same command again reuses every finished run and evaluation.")
    return f"""# nonlinear-hvae: MCMC-refined top-down hierarchical VAEs

Regenerate with `python experiments/run.py nonlinear-hvae{option}` (this file and
`nonlinear-hvae.json`).

{note}

{table}

**Setting.** Paper: section 6.7, Table 6 (two layers, MNIST and Fashion-MNIST); three and four layers on MNIST go
beyond it. Images thresholded at 0.5; {budget['train_size'] or 'all 60000'} training images;
{budget['vae_epochs']} hVAE epochs, then {budget['mcmc_epochs']} epochs of each method from the same hVAE
parameters (``vae``: the ELBO continued); K = {budget['num_mcmc_steps']} kernel steps, L = {NUM_INTEGRATION_STEPS}
leapfrog steps (HMC), speed-measure methods with a diagonal C; Adam at {LEARNING_RATE}, batch {BATCH_SIZE}, seed
{SEED}. The prior is frozen in the MCMC phase (``FreezeParams``). Test log-likelihood by importance sampling with
S = {budget['num_samples']} draws of the hierarchical q(z|x) per image over
{budget['test_images'] or 'all 10000'} test images (+- one standard error over images); "minus vae's, paired" is
the mean over the same test images of the method's log-likelihood minus vae's, +- the standard error of that
paired difference, which removes the image-to-image spread that the unpaired errors carry. AIS: from each
method's own proposal (for the MCMC methods the Gaussian around the trained chain's mean, for vae the diagonal
Gaussian summary of q along its mean path, `encode`; either with its variance times {AIS_VARIANCE_FACTOR}) to
p(x, z), {budget['ais_temperatures']} sigmoidal
temperatures x {budget['ais_chains']} chains, HMC with step sizes adapted per image, on the first {n_ais} test
images, beside importance sampling on those same images. Both estimate log p(x) from below in expectation, so the
higher of the two is the tighter. KID (lower is better):
one decoded prior sample (Bernoulli means) per test image, {kid['num_generated']} against {kid['num_reference']}
test images resized to {kid['resize_to']} x {kid['resize_to']}, {kid['num_subsets']} subsets of
{kid['subset_size']}; +- the spread of one subset's estimate.

**Machine.** {mv.results.machine()}; {minutes:.1f} min in this invocation (trained runs and evaluations already
on disk under `runs/` are reused, not redone); code at revision {mv.results.git_revision()}.
The full run (4 cases x 5 methods, 200 epochs each on 60000 images, S = {FULL['num_samples']}) needs a GPU.
"""
