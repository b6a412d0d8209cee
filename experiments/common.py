"""What every experiment shares: result rows, the results files, and a description of the machine."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess

import numpy as np

__all__ = ["row", "summarise", "write_results", "results_dir", "machine", "markdown_table", "runs_dir",
           "cached_evaluation", "paired_difference"]


def row(experiment, dataset, method, metric, value, std=None, num_seeds=1, **extra) -> dict:
    """One result row in the schema of the public API."""
    return {"experiment": experiment, "dataset": dataset, "method": method, "metric": metric,
            "value": None if value is None else float(value), "std": None if std is None else float(std),
            "num_seeds": int(num_seeds), **extra}


def summarise(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value) over seeds."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def results_dir(out_dir=None) -> pathlib.Path:
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


def write_results(name: str, rows: list[dict], markdown: str, out_dir=None) -> list[pathlib.Path]:
    directory = results_dir(out_dir)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return [json_path, md_path]


def machine() -> str:
    """A one-line description of the machine and JAX backend the numbers were measured on."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devices = jax.devices()
    kind = devices[0].device_kind if devices else "?"
    load = f"; load average {os.getloadavg()[0]:.1f} when written" if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on {len(devices)} x {devices[0].platform} "
            f"({kind}){load}")


def git_revision() -> str:
    try:
        # the checkout the code runs from, wherever the experiment is run from
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=pathlib.Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def train_and_evaluate(experiment: str, tag: str, model, phases, train_images, test_images, *, seed: int,
                       num_samples: int, out_dir=None, batch_size: int = 100, variance_factor: float = 1.5,
                       progress: bool = True, extra_config: dict | None = None) -> dict:
    """Train one configuration (resuming from its checkpoints if an earlier attempt was interrupted) and
    evaluate its test log-likelihood by importance sampling; returns the evaluation summary with timings."""
    import jax

    from mcmcvae.evaluate.runs import test_log_likelihood

    run_dir = runs_dir(experiment, out_dir) / f"{tag}-seed{seed}"
    params, state, train_seconds = train_run(run_dir, model, phases, train_images, seed=seed, batch_size=batch_size,
                                             progress=progress, extra_config=extra_config)
    settings = {"num_samples": int(num_samples), "num_images": int(len(test_images)),
                "variance_factor": float(variance_factor), "epochs": sum(p.num_epochs for p in phases)}
    summary = cached_evaluation(run_dir / "eval.json", settings, lambda: {
        **test_log_likelihood(jax.random.key(10_000 + seed), model, phases[-1].method, params, state, test_images,
                              num_samples=num_samples, variance_factor=variance_factor),
        "train_seconds": train_seconds, "run_dir": str(run_dir)})
    return {**summary, "params": params, "state": state}


def cached_evaluation(path, settings: dict, evaluate, *, require=()) -> dict:
    """``evaluate()``'s summary (a dict), or the one saved at ``path`` by an earlier call with equal ``settings``.

    An experiment that is run again after an interruption so evaluates only what it has not evaluated yet. The file
    holds the summary with ``settings`` and ``eval_seconds`` added, arrays as lists; a fresh summary is returned as
    it would be read back, so both paths give the same types. A saved summary without every key of ``require``
    (written before that key was kept) is recomputed.
    """
    import time

    path = pathlib.Path(path)
    settings = json.loads(json.dumps(settings, default=_jsonable))  # compare as it is stored (tuples -> lists)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings and all(key in saved for key in require):
            return saved
    tic = time.perf_counter()
    summary = {**evaluate(), "settings": settings}
    summary["eval_seconds"] = time.perf_counter() - tic
    text = json.dumps(summary, indent=2, default=_jsonable)
    path.write_text(text)
    return json.loads(text)


def paired_difference(a, b) -> tuple[float, float]:
    """Mean of ``a - b`` over the same images and its standard error (the per-image estimates are paired)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def _jsonable(value):
    return np.asarray(value).tolist()  # numpy and JAX arrays and scalars


def train_run(run_dir, model, phases, images, *, seed: int, params=None, batch_size: int = 100,
              progress: bool = True, binarize: str = "static", extra_config: dict | None = None):
    """Train one configuration into ``run_dir``, resuming from its checkpoints when an earlier attempt stopped
    (a finished run is restored, not retrained); returns ``(params, state, train_seconds)``, ``train_seconds`` being
    the run's epochs' wall time summed from its ``metrics.jsonl`` (compilation included), so that a restored or
    resumed run reports what its training took rather than what this call took."""
    from mcmcvae.train import Trainer, read_metrics

    run_dir = pathlib.Path(run_dir)
    resume = (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir())
    trainer = Trainer(model, phases, batch_size=batch_size, seed=seed, binarize=binarize, out_dir=run_dir,
                      progress=progress, extra_config=extra_config)
    params, state = trainer.run(images, resume=resume, params=None if resume else params)
    return params, state, float(sum(r["seconds"] for r in read_metrics(run_dir)))


def reference_features(name: str, images, *, resize_to: int, out_dir=None) -> np.ndarray:
    """Inception features of held-out images, computed once and kept under ``runs/features/`` for every method
    and seed that compares against them (the file name carries a hash of the images and the input size)."""
    import hashlib

    from mcmcvae.evaluate.inception import inception_features

    images = np.ascontiguousarray(np.asarray(images, np.float32))
    digest = hashlib.sha1(images.tobytes()).hexdigest()[:12]
    path = runs_dir("features", out_dir) / f"{name}-{len(images)}-{resize_to}-{digest}.npy"
    if path.exists():
        return np.load(path)
    features = np.asarray(inception_features(images, resize_to=resize_to))
    # written under a temporary name and renamed, so that cases run side by side never read a half-written file
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
    np.save(partial, features)
    os.replace(partial, path)
    return features
