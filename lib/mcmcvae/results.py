"""Results of research scripts: rows, summaries, the results files, cached evaluations and provenance stamps.

A results file pair is ``NAME.json``, a list of rows in the public schema ``{"experiment", "dataset", "method",
"metric", "value", "std", "num_seeds"}`` (plus any extra fields), and ``NAME.md``, the human-readable table with
its budget, machine and discussion. Every script under ``experiments/`` writes its results through this module;
a new script can do the same in a few lines:

>>> import tempfile
>>> import mcmcvae as mv
>>> mean, std = mv.results.summarise([-90.1, -89.7, -90.4])
>>> rows = [mv.results.row("my-study", "mnist", "vae", "test_log_likelihood", mean, std, num_seeds=3)]
>>> table = mv.results.markdown_table(["method", "log-likelihood"], [["vae", f"{mean:.2f}"]])
>>> paths = mv.results.write_results("my-study", rows, "# My study\\n\\n" + table, tempfile.mkdtemp())
>>> [p.name for p in paths]
['my-study.json', 'my-study.md']
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import time
from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["row", "summarise", "write_results", "markdown_table", "cached_evaluation", "paired_difference",
           "machine", "git_revision"]


def row(experiment: str, dataset: str, method: str, metric: str, value, std=None, num_seeds: int = 1,
        **extra) -> dict:
    """One result row in the public schema.

    Parameters
    ----------
    experiment, dataset, method, metric
        What was measured: the experiment's name, the dataset, the method's row name and the metric's name
        (e.g. ``test_log_likelihood`` in nats, ``kid``, ``step_time_ms``).
    value
        The measurement (a mean over seeds), converted to a float; ``None`` where there is none.
    std
        Its standard deviation over seeds, or ``None`` (one seed).
    num_seeds
        How many seeds ``value`` averages.
    **extra
        Further fields kept in the row as given (per-seed values, budgets, standard errors, ...).

    Returns
    -------
    dict
        ``{"experiment", "dataset", "method", "metric", "value", "std", "num_seeds", **extra}``.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> r = mv.results.row("study", "mnist", "vae", "test_log_likelihood", -90.25, per_seed=[-90.25])
    >>> r["value"], r["std"], r["num_seeds"], r["per_seed"]
    (-90.25, None, 1, [-90.25])
    """
    return {"experiment": experiment, "dataset": dataset, "method": method, "metric": metric,
            "value": None if value is None else float(value), "std": None if std is None else float(std),
            "num_seeds": int(num_seeds), **extra}


def summarise(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed values; the deviation is ``None`` for one value.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> mv.results.summarise([1.0, 2.0, 3.0])
    (2.0, 1.0)
    >>> mv.results.summarise([4.0])
    (4.0, None)
    """
    values = np.asarray(values, np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def write_results(name: str, rows: list[dict], markdown: str, out_dir=None) -> list[pathlib.Path]:
    """Write ``NAME.json`` (the rows, indented) and ``NAME.md`` (the text) into ``out_dir``.

    Parameters
    ----------
    name
        The files' stem, usually the experiment's name.
    rows
        Result rows (see :func:`row`); anything ``json`` can write.
    markdown
        The results page; trailing whitespace is trimmed to one final newline.
    out_dir
        The directory (made if missing); ``None`` is ``results/`` under the current directory.

    Returns
    -------
    list of pathlib.Path
        ``[json_path, md_path]``.

    Examples
    --------
    >>> import json, tempfile
    >>> import mcmcvae as mv
    >>> out = tempfile.mkdtemp()
    >>> json_path, md_path = mv.results.write_results("demo", [mv.results.row("demo", "d", "m", "x", 1)], "# Demo", out)
    >>> json.loads(json_path.read_text())[0]["value"], md_path.read_text()
    (1.0, '# Demo\\n')
    """
    directory = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path.cwd() / "results"
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return [json_path, md_path]


def markdown_table(header: list[str], body: Iterable[list]) -> str:
    """A Markdown table: ``header`` and one line per entry of ``body`` (cells formatted with ``str``).

    Examples
    --------
    >>> import mcmcvae as mv
    >>> print(mv.results.markdown_table(["method", "value"], [["vae", -90.1], ["gradmala", -89.2]]))
    | method | value |
    |---|---|
    | vae | -90.1 |
    | gradmala | -89.2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def cached_evaluation(path, settings: dict, evaluate: Callable[[], dict], *, require: Iterable[str] = ()) -> dict:
    """``evaluate()``'s summary (a dict), or the one saved at ``path`` by an earlier call with equal ``settings``.

    A script that is run again after an interruption so evaluates only what it has not evaluated yet. The file
    holds the summary with ``settings`` and ``eval_seconds`` added, arrays as lists; a fresh summary is returned as
    it would be read back, so both paths give the same types.

    Parameters
    ----------
    path
        The JSON file (its directory must exist), e.g. ``run_dir / "eval.json"``.
    settings
        Everything the evaluation depends on (sample counts, image counts, epochs, ...): a saved summary is reused
        only when its settings equal these (compared as stored, so tuples equal lists).
    evaluate
        Computes the summary; called only when no reusable one is saved. Arrays (NumPy or JAX) in it are stored
        as lists.
    require
        Keys a saved summary must have to be reused (a summary written before a key was kept is recomputed).

    Returns
    -------
    dict
        The summary with ``settings`` and ``eval_seconds`` (the seconds ``evaluate`` took when it ran).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> import mcmcvae as mv
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "eval.json"
    >>> calls = []
    >>> def evaluate():
    ...     calls.append(1)
    ...     return {"per_image": np.array([-1.0, -2.0])}
    >>> mv.results.cached_evaluation(path, {"num_samples": 10}, evaluate)["per_image"]
    [-1.0, -2.0]
    >>> mv.results.cached_evaluation(path, {"num_samples": 10}, evaluate)["per_image"], len(calls)
    ([-1.0, -2.0], 1)
    """
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
    """Mean of ``a - b`` over the same items (e.g. per-image log-likelihoods of two models on the same test images)
    and its standard error; pairing removes the item-to-item spread that unpaired errors carry.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> mean, se = mv.results.paired_difference([1.0, 2.0, 4.0], [0.0, 1.0, 3.0])
    >>> mean, se
    (1.0, 0.0)
    """
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def machine() -> str:
    """A one-line description of the machine and JAX backend the numbers were measured on.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> "JAX" in mv.results.machine()
    True
    """
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


def git_revision(directory=None) -> str:
    """The short git revision of the checkout holding ``directory``, or ``"unknown"`` outside one.

    Parameters
    ----------
    directory
        A folder inside the checkout; ``None`` is the folder this library is imported from (in a clone, the
        clone's revision, wherever the script runs from).

    Examples
    --------
    >>> import tempfile
    >>> import mcmcvae as mv
    >>> mv.results.git_revision(tempfile.mkdtemp())
    'unknown'
    """
    directory = pathlib.Path(__file__).parent if directory is None else pathlib.Path(directory)
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=directory).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _jsonable(value):
    return np.asarray(value).tolist()  # numpy and JAX arrays and scalars
