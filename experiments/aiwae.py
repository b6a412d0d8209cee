"""``aiwae``: IWAE against AIWAE on dynamically binarised MNIST (Ding and Freedman 2019, section 5).

Setting: d_z = 50, encoder and decoder 200-200 tanh MLPs, Bernoulli likelihood, MNIST binarised afresh for every
batch (test and training-subset images binarised once with a fixed key), batch 20, Adam with the IWAE schedule
(Burda et al. 2016): ``3^i`` epochs at learning rate ``1e-3 * 10^(-i/7)`` for ``i = 0..7`` (3280 epochs; the
method's state, Adam's moments and AIWAE's step sizes, restarts at each stage). IWAE for K in {1, 5, 50}; AIWAE
for K in {1, 5, 50} and T in {5, 8, 11} (L = 5 leapfrog steps, step sizes adapted towards acceptance 0.6).

Metrics (nats, per image):

- ``nll``: ``-log p(x)`` by annealed importance sampling from q0 (:func:`mcmcvae.evaluate.ais_log_likelihood`);
- ``nvlb``: ``-L_5000``, the IWAE bound with 5000 samples from q0;
- ``variational_gap``: ``nvlb - nll``;
- ``generalisation_gap``: ``nll(test) - nll(train)``, on equally many training images;
- ``active_units``: latent units with ``Cov_x(E_q[z_u | x]) > 0.01`` over the test images (Burda et al.).

Published (Ding and Freedman 2019): NLL 84.13 for IWAE with K = 50 and 83.68 for AIWAE with K = 50, T = 11.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import mcmcvae as mv

import common

DESCRIPTION = "IWAE vs AIWAE (K in 1,5,50; T in 5,8,11) on dynamically binarised MNIST: NLL, L_5000, gaps, units"
NAME = "aiwae"
PUBLISHED = {("iwae", 50, None): 84.13, ("aiwae", 50, 11): 83.68}
IWAE_SCHEDULE = tuple((3**i, 1e-3 * 10 ** (-i / 7)) for i in range(8))
FULL = {"configurations": [("iwae", k, None) for k in (1, 5, 50)]
        + [("aiwae", k, t) for k in (1, 5, 50) for t in (5, 8, 11)],
        "schedule": IWAE_SCHEDULE, "batch_size": 20, "train_size": None, "eval_images": 2000,
        "num_samples_bound": 5000, "ais_temperatures": 1000, "ais_chains": 16, "seed": 0}
QUICK = {"configurations": [("aiwae", 5, 5)], "schedule": ((1, 1e-3),), "batch_size": 20,
         "train_size": 200, "eval_images": 20, "num_samples_bound": 64, "ais_temperatures": 10, "ais_chains": 2,
         "seed": 0}
# --budget cpu: what fits a 2-core CPU in about an hour. Measured under load (load average 4-6 on the 2 cores):
# an AIWAE K = 5, T = 5 epoch on a 6000-image subset takes 14 s (about 140 s on all 60000, so 13 epochs are about
# 30 min), an IWAE K = 5 epoch 2.8 s (about 6 min for 13 epochs on 60000), and AIS with 200 temperatures x 16
# chains about 0.42 s per image (7 min per configuration for 500 test + 500 training images); about an hour in
# all. So: a stated subset of the configurations (IWAE K in {1, 5}, AIWAE K = 5 with T = 5), the first 3 stages of
# the IWAE schedule (1 + 3 + 9 = 13 of its 3280 epochs, at the schedule's learning rates), all 60000 training
# images, evaluation on 500 test and 500 training images with L_1000 and AIS 200 x 16.
CPU = {**FULL, "configurations": [("iwae", 1, None), ("iwae", 5, None), ("aiwae", 5, 5)],
       "schedule": IWAE_SCHEDULE[:3], "eval_images": 500, "num_samples_bound": 1000, "ais_temperatures": 200}
# "full" has the paper's model, configurations, batch and training schedule, but evaluates on 2000 test and 2000
# training images with one seed: not all of Ding and Freedman's protocol, so it is not called "paper".
BUDGETS = {"full": FULL, "cpu": CPU, "quick": QUICK}
RENAMED = {"paper": ("full", "it has the paper's model, configurations and training schedule but not all of its "
                              "evaluation protocol (2000 test and training images, one seed)")}


@functools.cache
def _ais_fn(model, num_temperatures: int, num_chains: int):
    from mcmcvae.evaluate.ais import ais_log_likelihood

    def per_image(key, params, x, loc, scale):
        return ais_log_likelihood(key, lambda z: model.log_joint(params, x, z), loc, scale,
                                  num_temperatures=num_temperatures, num_chains=num_chains)

    return jax.jit(jax.vmap(per_image, in_axes=(0, None, 0, 0, 0)))


def ais_log_likelihoods(rng_key, model, params, images, *, num_temperatures: int, num_chains: int,
                        batch_size: int = 100) -> np.ndarray:
    """Per-image AIS ``log p(x)`` from the encoder's q0, ``(n,)``; image ``i`` uses ``fold_in(rng_key, i)``."""
    fn = _ais_fn(model, num_temperatures, num_chains)
    encode = jax.jit(model.encode)
    n, out = len(images), []
    for start in range(0, n, batch_size):
        index = np.minimum(np.arange(start, start + batch_size), n - 1)
        x = jnp.asarray(images[index])
        loc, scale = encode(params, x)
        keys = jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.asarray(index))
        out.append(np.asarray(fn(keys, params, x, loc, scale), np.float64)[: n - start])
    return np.concatenate(out)


def summarise_model(rng_key, model, params, test, train, budget) -> dict:
    """NLL (AIS), NVLB (-L_S), the two gaps and the active units of one trained model."""
    from mcmcvae.evaluate.diagnostics import active_units

    k_test, k_train, k_bound = jax.random.split(rng_key, 3)
    ais = functools.partial(ais_log_likelihoods, model=model, params=params,
                            num_temperatures=budget["ais_temperatures"], num_chains=budget["ais_chains"])
    nll_test = -ais(k_test, images=test).mean()
    nll_train = -ais(k_train, images=train).mean()
    loc, scale = jax.jit(model.encode)(params, jnp.asarray(test))
    bound = common.importance_log_likelihoods(k_bound, model, params, test, np.asarray(loc), np.asarray(scale),
                                       num_samples=budget["num_samples_bound"])
    nvlb = -bound.mean()
    active = int(active_units(k_bound, model, params, test, num_samples=None).num_active)  # exact Gaussian means
    return {"nll": nll_test, "nvlb": nvlb, "variational_gap": nvlb - nll_test,
            "generalisation_gap": nll_test - nll_train, "nll_train": nll_train, "active_units": active}


METRICS = ("nll", "nvlb", "variational_gap", "generalisation_gap", "nll_train", "active_units")


def _tag(name: str, k: int, t: int | None) -> str:
    return f"{name}-K{k}" + (f"-T{t}" if t else "")


def run(*, quick: bool = False, out_dir=None, budget: str | None = None):
    """Train and evaluate every configuration; ``budget`` is ``full`` (default), ``cpu`` or, with ``quick``,
    ``quick``."""
    import mcmcvae as mv
    from mcmcvae.train import Phase

    budget_name = common.budget_name(BUDGETS, quick, budget, default="full", renamed=RENAMED)
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    tic_all = time.perf_counter()
    seed = budget["seed"]
    train = mv.data.load("mnist", "train").images[: budget["train_size"]]
    n_eval = budget["eval_images"]
    test = np.asarray(mv.data.binarize_dynamic(jax.random.key(12345), mv.data.load("mnist", "test").images[:n_eval]))
    train_eval = np.asarray(mv.data.binarize_dynamic(jax.random.key(54321), train[:n_eval]))
    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=50, hidden_sizes=(200, 200), activation="tanh")
    runs = common.runs_dir(NAME, out_dir) / budget_name  # budgets never share checkpoints
    protocol = {key: budget[key] for key in ("eval_images", "num_samples_bound", "ais_temperatures", "ais_chains",
                                             "train_size", "batch_size", "seed")}
    protocol["schedule"] = [list(stage) for stage in budget["schedule"]]
    rows, body = [], []
    for name, k, t in budget["configurations"]:
        tag = _tag(name, k, t)
        options = {"num_samples": k} if name == "iwae" else {"num_samples": k, "num_temperatures": t}
        phases = [Phase(mv.methods.build(name, learning_rate=lr, **options), epochs)
                  for epochs, lr in budget["schedule"]]
        run_dir = runs / f"{tag}-seed{seed}"
        # an interrupted run resumes from its last checkpoint; a finished one is restored, not retrained
        params, _, train_seconds = mv.train.fit(model, phases, train, run_dir=run_dir, seed=seed,
                                                batch_size=budget["batch_size"], binarize="dynamic",
                                                progress=not quick, extra_config={"dataset": "mnist"})

        summary = mv.results.cached_evaluation(run_dir / "eval.json", protocol, lambda: summarise_model(
            jax.random.key(10_000 + seed), model, params, test, train_eval, budget))
        eval_seconds = summary["eval_seconds"]
        metrics = {m: summary[m] for m in METRICS}
        published = PUBLISHED.get((name, k, t))
        for metric, value in metrics.items():
            rows.append(mv.results.row(NAME, "mnist-dynamic", tag, metric, value, None, 1, num_samples=k,
                                       num_temperatures=t, train_seconds=train_seconds, eval_seconds=eval_seconds,
                                       quick=quick, budget_name=budget_name,
                                       published=published if metric == "nll" else None,
                                       budget={key: v for key, v in budget.items() if key != "configurations"}))
        body.append([tag, *(f"{metrics[m]:.2f}" for m in ("nll", "nvlb", "variational_gap", "generalisation_gap")),
                     metrics["active_units"], "n/a" if published is None else f"{published:.2f}"])
    table = mv.results.markdown_table(["model", "NLL (AIS)", "NVLB (-L_S)", "variational gap", "generalisation gap",
                                   "active units", "published NLL"], body)
    markdown = _markdown(table, budget_name, (time.perf_counter() - tic_all) / 60)
    return mv.results.write_results(NAME, rows, markdown, out_dir)


def _cut(budget: dict) -> str:
    """The ``**Budget ..., cut from the full budget:**`` sentence: every setting that differs from ``FULL``."""
    cuts = []
    if budget["configurations"] != FULL["configurations"]:
        cuts.append(f"the configurations {', '.join(_tag(*c) for c in budget['configurations'])} only (full budget: "
                    "IWAE K in 1, 5, 50 and AIWAE K in 1, 5, 50 with T in 5, 8, 11)")
    if budget["schedule"] != FULL["schedule"]:
        epochs = " + ".join(str(e) for e, _ in budget["schedule"])
        cuts.append(f"the first {len(budget['schedule'])} of the IWAE schedule's {len(FULL['schedule'])} stages, "
                    f"{epochs} = {sum(e for e, _ in budget['schedule'])} epochs at the schedule's learning rates "
                    f"(full budget: {sum(e for e, _ in FULL['schedule'])} epochs; the models are compared far from "
                    "convergence)")
    if budget["train_size"] != FULL["train_size"]:
        cuts.append(f"the first {budget['train_size']} training images (full budget: all 60000)")
    if budget["batch_size"] != FULL["batch_size"]:
        cuts.append(f"batch {budget['batch_size']} (full budget: {FULL['batch_size']})")
    if budget["eval_images"] != FULL["eval_images"]:
        cuts.append(f"evaluation on {budget['eval_images']} test and {budget['eval_images']} training images "
                    f"(full budget: {FULL['eval_images']} each)")
    labels = {"num_samples_bound": "S = {} for the NVLB", "ais_temperatures": "AIS with {} temperatures",
              "ais_chains": "AIS with {} chains"}
    cuts += [f"{label.format(budget[key])} (full budget: {FULL[key]})" for key, label in labels.items()
             if budget[key] != FULL[key]]
    return "; ".join(cuts) + "."


def _markdown(table: str, budget_name: str, minutes: float) -> str:
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    option = {"quick": " --quick", "full": ""}.get(budget_name, f" --budget {budget_name}")
    note = "**Quick run: tiny budget, for smoke testing only; these numbers mean nothing.**" if quick else ""
    if budget_name == "cpu":
        note = f"**Budget `cpu`, cut from the full budget:** {_cut(budget)}"
    epochs, n_eval, seed = sum(e for e, _ in budget["schedule"]), budget["eval_images"], budget["seed"]
    return f"""# aiwae: IWAE and AIWAE on dynamically binarised MNIST

Regenerate with `python experiments/run.py aiwae{option}` (this file and `aiwae.json`).

{note}

{table}

**Setting.** d_z = 50, 200-200 tanh MLPs, Bernoulli likelihood, dynamic binarisation, batch
{budget['batch_size']}, Adam over {epochs} epochs in {len(budget['schedule'])} stage(s)
({', '.join(f'{e} at {lr:.2g}' for e, lr in budget['schedule'])})
{'on the first ' + str(budget['train_size']) + ' training images' if budget['train_size'] else 'on all 60000 training images'}.
AIWAE: L = 5, step sizes per temperature from 0.5 / d_z adapted towards acceptance 0.6. Evaluation on the first
{n_eval} test images and {n_eval} training images (each binarised once with a fixed key): NLL by AIS with
{budget['ais_temperatures']} temperatures (sigmoid schedule, 10 leapfrog steps, adapted step size) and
{budget['ais_chains']} chains from q0; NVLB = -L_S with S = {budget['num_samples_bound']}. Seed {seed}.

**Machine.** {mv.results.machine()}; {minutes:.1f} min in this invocation (trained runs and evaluations already on
disk under `runs/` are reused, not redone); code at revision {mv.results.git_revision()}.

**Published.** Ding and Freedman (2019): IWAE (K = 50) 84.13 nats, AIWAE (K = 50, T = 11) 83.68 nats, after the
same IWAE schedule; they evaluate on all 10000 test images.
"""
