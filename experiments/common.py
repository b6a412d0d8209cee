"""What the experiments share beyond the public API: budgets, where runs live, and train-then-evaluate.

Result rows, the results files, cached evaluations and provenance stamps are public (:mod:`mcmcvae.results`), as
is the resumable fit (:func:`mcmcvae.train.fit`); this module holds only what is about this folder's layout.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import mcmcvae as mv

__all__ = ["budget_name", "mcmc_learning_rate", "results_dir", "runs_dir", "train_and_evaluate",
           "reference_features", "importance_log_likelihoods"]


def results_dir(out_dir=None) -> pathlib.Path:
    """Where the results files go (``out_dir``, else ``results/`` under the current directory), made if missing."""
    path = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path.cwd() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def budget_name(budgets: dict, quick: bool, budget: str | None, default: str = "paper") -> str:
    """The budget an experiment runs with: ``quick`` for ``--quick``, else ``budget`` or ``default``; an unknown
    name is refused with the valid ones."""
    name = "quick" if quick else (budget or default)
    if name not in budgets:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(budgets)}")
    return name


def mcmc_learning_rate(budget: dict, dataset: str, default: float) -> float:
    """The MCMC phase's learning rate for ``dataset`` under ``budget``: the budget's ``mcmc_learning_rates``
    override for it, else ``default`` (the paper's rate)."""
    return budget.get("mcmc_learning_rates", {}).get(dataset, default)


def runs_dir(name: str, out_dir=None) -> pathlib.Path:
    """Where an experiment keeps its training runs (checkpoints, metrics): never inside results/."""
    base = pathlib.Path(out_dir) / "runs" if out_dir is not None else pathlib.Path.cwd() / "runs"
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_and_evaluate(experiment: str, tag: str, model, phases, train_images, test_images, *, seed: int,
                       num_samples: int, out_dir=None, batch_size: int = 100, variance_factor: float = 1.5,
                       progress: bool = True, extra_config: dict | None = None) -> dict:
    """Train one configuration (resuming from its checkpoints if an earlier attempt was interrupted) and
    evaluate its test log-likelihood by importance sampling; returns the evaluation summary with timings."""
    import jax

    run_dir = runs_dir(experiment, out_dir) / f"{tag}-seed{seed}"
    params, state, train_seconds = mv.train.fit(model, phases, train_images, run_dir=run_dir, seed=seed,
                                                batch_size=batch_size, progress=progress, extra_config=extra_config)
    settings = {"num_samples": int(num_samples), "num_images": int(len(test_images)),
                "variance_factor": float(variance_factor), "epochs": sum(p.num_epochs for p in phases)}
    summary = mv.results.cached_evaluation(run_dir / "eval.json", settings, lambda: {
        **mv.evaluate.test_log_likelihood(jax.random.key(10_000 + seed), model, phases[-1].method, params, state,
                                          test_images, num_samples=num_samples, variance_factor=variance_factor),
        "train_seconds": train_seconds, "run_dir": str(run_dir)})
    return {**summary, "params": params, "state": state}


def reference_features(name: str, images, *, resize_to: int, out_dir=None) -> np.ndarray:
    """Inception features of held-out images, computed once and kept under ``runs/features/`` for every method
    and seed that compares against them (the file name carries a hash of the images and the input size)."""
    import hashlib

    images = np.ascontiguousarray(np.asarray(images, np.float32))
    digest = hashlib.sha1(images.tobytes()).hexdigest()[:12]
    path = runs_dir("features", out_dir) / f"{name}-{len(images)}-{resize_to}-{digest}.npy"
    if path.exists():
        return np.load(path)
    features = np.asarray(mv.evaluate.inception_features(images, resize_to=resize_to))
    # written under a temporary name and renamed, so that cases run side by side never read a half-written file
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
    np.save(partial, features)
    os.replace(partial, path)
    return features


@functools.cache
def _importance_fn(model, num_samples: int):
    """One jitted importance-sampling function per model and S; parameters are an argument, so it compiles once
    for every method and dataset."""
    chunk = min(num_samples, 100)

    def per_image(key, params, x, loc, scale):
        return mv.evaluate.importance_log_likelihood(key, lambda z: model.log_joint(params, x, z), loc, scale,
                                                     num_samples, chunk_size=chunk)

    return jax.jit(jax.vmap(per_image, in_axes=(0, None, 0, 0, 0)))


def importance_log_likelihoods(rng_key, model, params, images, locs, scales, *, num_samples: int,
                               batch_size: int = 100) -> np.ndarray:
    """Per-image importance-sampling ``log p(x)`` with the proposal ``N(locs_i, diag(scales_i^2))``, ``(n,)``.

    Image ``i`` uses the key ``fold_in(rng_key, i)``, as :func:`mcmcvae.evaluate.dataset_log_likelihood` does.
    """
    fn = _importance_fn(model, num_samples)
    n = len(images)
    out = []
    for start in range(0, n, batch_size):
        index = np.minimum(np.arange(start, start + batch_size), n - 1)  # pad the last batch: one compiled shape
        keys = jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.asarray(index))
        values = fn(keys, params, jnp.asarray(images[index]), jnp.asarray(locs[index]), jnp.asarray(scales[index]))
        out.append(np.asarray(values, np.float64)[: n - start])
    return np.concatenate(out)
