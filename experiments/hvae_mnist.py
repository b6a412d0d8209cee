"""``hvae-mnist``: a convolutional VAE against HVAE on dynamically binarised MNIST (Caterini et al. 2018, 4.2).

Setting: latent dimension l = 64, the library's convolutional encoder and decoder (``architecture="conv"``),
Bernoulli likelihood, MNIST binarised afresh for every batch (test images binarised once, with a fixed key),
batch 100, Adam (learning rate 1e-3), every configuration trained from scratch for the same number of epochs.
HVAE for K in {1, 5, 10} with fixed (quadratic, learnt beta_0), free (learnt alpha_k) and no tempering, one
step-size vector per leapfrog step. Test negative log-likelihood (nats) by importance sampling with the method's
proposal (the encoder for the VAE; the mean of 16 flow samples with the encoder's scale for HVAE) with its
variance times tau = 1.5.

Published (Caterini et al. 2018, Table 1): base VAE 83.20 nats, best HVAE 82.62 nats (with their convolutional
architecture and schedule, not ours).
"""

from __future__ import annotations

import time

import jax
import numpy as np

import mcmcvae as mv

import common

DESCRIPTION = "conv VAE (l=64) vs HVAE (K in 1,5,10; fixed/free/no tempering) on dynamically binarised MNIST: NLL"
NAME = "hvae-mnist"
PUBLISHED = {"vae": 83.20, "best hvae": 82.62}
FULL = {"configurations": [("vae", {})] + [(f"hvae-K{k}-{t}", {"num_mcmc_steps": k, "tempering": t})
                                          for k in (1, 5, 10) for t in ("fixed", "free", "none")],
        "epochs": 200, "train_size": None, "test_images": None, "num_samples": 1000, "seed": 0,
        "architecture": {"architecture": "conv"}}
# The quick form trains one HVAE with one small dense layer instead of the convolutional networks, whose
# second derivatives take minutes on a CPU: the smoke test is about the experiment's code path.
QUICK = {"configurations": [("hvae-K1-fixed", {"num_mcmc_steps": 1, "tempering": "fixed"})],
         "epochs": 1, "train_size": 200, "test_images": 20, "num_samples": 16, "seed": 0,
         "architecture": {"architecture": "mlp", "hidden_sizes": (32,)}}
# No cpu budget: the convolutional networks are too slow on a 2-core CPU for any meaningful one. Measured under
# load (load average 4-6), per training iteration of batch 100, before the trainer stopped scanning conv models'
# epochs on CPU: vae 22 s, hvae-K1 97 s, hvae-K5 254 s. With one jitted step per batch (``Trainer(loop="auto")``,
# jax-ml/jax#12868): vae 3.5 s and hvae-K1 36 s per iteration, so one epoch on all 60000 images still takes about
# 35 min for the VAE and 6 h for hvae-K1 (HVAE's second derivatives through the transposed convolutions
# dominate). This experiment needs a GPU.
BUDGETS = {"paper": FULL, "quick": QUICK}


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    """Train and evaluate every configuration; ``budget`` is ``paper`` (default) or, with ``quick``, ``quick``."""
    import mcmcvae as mv
    from mcmcvae.evaluate.runs import method_proposals
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    tic_all = time.perf_counter()
    seed = budget["seed"]
    train = mv.data.load("mnist", "train").images[: budget["train_size"]]
    test = mv.data.load("mnist", "test").images[: budget["test_images"]]
    test = np.asarray(mv.data.binarize_dynamic(jax.random.key(12345), test))  # one fixed binarisation
    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=64, **budget["architecture"])
    runs = common.runs_dir(NAME, out_dir) / budget_name  # budgets never share checkpoints
    protocol = {key: budget[key] for key in ("epochs", "train_size", "test_images", "num_samples", "seed")}
    protocol["variance_factor"] = 1.5
    rows, body = [], []
    for tag, options in budget["configurations"]:
        name = "vae" if tag == "vae" else "hvae"
        method = mv.methods.build(name, **mv.methods.select_options(name, dict(share_step_sizes=False, **options)))
        run_dir = runs / f"{tag}-seed{seed}"
        # an interrupted run resumes from its last checkpoint; a finished one is restored, not retrained
        params, state, train_seconds = mv.train.fit(model, [Phase(method, budget["epochs"])], train,
                                                    run_dir=run_dir, seed=seed, batch_size=100, binarize="dynamic",
                                                    progress=not quick, extra_config={"dataset": "mnist"})

        def evaluate(method=method, params=params, state=state):
            key = jax.random.key(10_000 + seed)
            loc, scale = method_proposals(key, model, method, params, state, test)
            per_image = common.importance_log_likelihoods(jax.random.fold_in(key, 1), model, params, test, loc,
                                                   scale * np.sqrt(1.5), num_samples=budget["num_samples"])
            return {"nll": -float(per_image.mean()),
                    "standard_error": float(per_image.std(ddof=1) / np.sqrt(len(per_image))),
                    "num_images": len(per_image)}

        result = mv.results.cached_evaluation(run_dir / "eval.json", protocol, evaluate)
        nll, se = result["nll"], result["standard_error"]
        published = PUBLISHED["vae"] if tag == "vae" else None
        rows.append(mv.results.row(NAME, "mnist-dynamic", tag, "test_nll", nll, None, 1, standard_error=se,
                                   options=options, train_seconds=train_seconds, eval_seconds=result["eval_seconds"],
                                   quick=quick, budget_name=budget_name, published=published,
                                   budget={k: v for k, v in budget.items() if k != "configurations"}))
        body.append([tag, f"{nll:.2f} +- {se:.2f}", f"{train_seconds / 60:.1f}"])
    markdown = _markdown(rows, body, budget_name, (time.perf_counter() - tic_all) / 60)
    return mv.results.write_results(NAME, rows, markdown, out_dir)


def _markdown(rows, body, budget_name: str, minutes: float) -> str:
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    seed = budget["seed"]
    hvae_rows = [r for r in rows if r["method"] != "vae"]
    best = min(hvae_rows, key=lambda r: r["value"]) if hvae_rows else None
    table = mv.results.markdown_table(["configuration", "test NLL (nats)", "training minutes"], body)
    option = {"quick": " --quick", "paper": ""}.get(budget_name, f" --budget {budget_name}")
    note = "**Quick run: tiny budget, for smoke testing only; these numbers mean nothing.**" if quick else ""
    return f"""# hvae-mnist: VAE and HVAE on dynamically binarised MNIST

Regenerate with `python experiments/run.py hvae-mnist{option}` (this file and `hvae-mnist.json`).

{note}

{table}

Best HVAE here: {'n/a' if best is None else f"{best['method']} at {best['value']:.2f} nats"}. Published (Caterini et
al. 2018, Table 1): base VAE {PUBLISHED['vae']:.2f}, best HVAE {PUBLISHED['best hvae']:.2f} nats.

**Setting.** l = 64, {'the library convolutional encoder/decoder' if budget['architecture']['architecture'] == 'conv'
else 'a one-layer dense encoder/decoder (quick form only)'}, Bernoulli likelihood, dynamic binarisation,
batch 100, Adam (lr 1e-3), {budget['epochs']} epochs from scratch
{'on the first ' + str(budget['train_size']) + ' training images' if budget['train_size'] else 'on all 60000 training images'}.
HVAE: per-step step sizes started at 0.005 (at most 0.5), beta_0 started at 1/25, Rao-Blackwellised bound. Test
NLL by importance sampling with S = {budget['num_samples']} samples per image from the method's proposal with its
variance times 1.5, on {'the first ' + str(budget['test_images']) if budget['test_images'] else 'all 10000'} test
images (binarised once with a fixed key). Seed {seed}.

**Machine.** {mv.results.machine()}; {minutes:.1f} min in this invocation (trained runs and evaluations already on
disk under `runs/` are reused, not redone); code at revision {mv.results.git_revision()}.

**Comparison.** The paper's architecture and training schedule differ from ours (their encoder and decoder follow
Salimans et al. 2015), so the published numbers are anchors for the size of the HVAE gain over its base VAE
(0.58 nats), not targets for the absolute values.
"""
