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
import math
import os
import pathlib
import platform
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from mcmcvae._files import write_atomic

__all__ = ["row", "summarise", "write_results", "markdown_table", "cached_evaluation", "paired_difference",
           "SeedComparison", "compare_seeds", "verdict_sentence", "all_hold", "any_holds", "VERDICTS",
           "machine", "git_revision"]

VERDICTS = ("holds", "fails", "not resolved")


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
    write_atomic(json_path, json.dumps(rows, indent=2) + "\n")
    write_atomic(md_path, markdown.rstrip() + "\n")
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
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:  # damaged (e.g. cut short by a kill before writes were atomic): recompute
            warnings.warn(f"{path} is not valid JSON; evaluating again and replacing it", stacklevel=2)
            saved = {}
        if saved.get("settings") == settings and all(key in saved for key in require):
            return saved
    tic = time.perf_counter()
    summary = {**evaluate(), "settings": settings}
    summary["eval_seconds"] = time.perf_counter() - tic
    text = json.dumps(summary, indent=2, default=_jsonable)
    write_atomic(path, text)  # a kill while writing leaves no half file for the next run to trip over
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


class SeedComparison(NamedTuple):
    """The paired comparison of two methods across seeds (see :func:`compare_seeds`).

    Attributes
    ----------
    mean
        Mean over seeds of ``a - b``.
    lower, upper
        The two-sided ``confidence`` t interval of that mean (``-inf``, ``inf`` for fewer than two seeds).
    num_seeds
        How many seeds were paired.
    verdict
        ``"holds"`` (the interval lies above 0), ``"fails"`` (below 0) or ``"not resolved"`` (it contains 0,
        or fewer than two seeds).
    per_seed
        The per-seed differences ``a - b``.
    confidence
        The interval's confidence level.
    """

    mean: float
    lower: float
    upper: float
    num_seeds: int
    verdict: str
    per_seed: tuple
    confidence: float


def compare_seeds(a, b, *, confidence: float = 0.95) -> SeedComparison:
    r"""Whether ``a`` beats ``b`` across seeds: the mean paired difference, its t interval and a verdict.

    ``a[s]`` and ``b[s]`` are one number per seed ``s`` for two methods (e.g. each seed's test log-likelihood,
    both methods trained from that seed's shared start), so the seeds pair them. With ``d_s = a_s - b_s`` over
    ``n`` seeds, the interval is

    .. math:: \bar d \pm t_{n-1,\,(1+c)/2}\; s_d / \sqrt n ,

    the Student t quantile on ``n - 1`` degrees of freedom (:func:`scipy.stats.t.ppf`). It treats the seeds as
    independent draws, so it carries the seed-to-seed spread (training and evaluation noise alike) that an
    error over test images leaves out. The verdict on "``a`` beats ``b``" is ``"holds"`` when the interval lies
    strictly above 0, ``"fails"`` when it lies strictly below, and ``"not resolved"`` otherwise; one seed
    resolves nothing (its interval is unbounded). Where smaller is better (KID), compare ``(b, a)``.

    Parameters
    ----------
    a, b
        Per-seed values of the two methods, in the same seed order; equal lengths, finite.
    confidence
        The interval's level, in (0, 1).

    Returns
    -------
    SeedComparison

    Raises
    ------
    ValueError
        For lengths that differ, no seeds, a non-finite value, or a level outside (0, 1).

    Examples
    --------
    >>> import mcmcvae as mv
    >>> c = mv.results.compare_seeds([-90.0, -89.0, -91.0, -90.5, -89.5], [-91.0, -90.2, -91.9, -91.4, -90.5])
    >>> round(c.mean, 2), round(c.lower, 2), round(c.upper, 2), c.verdict
    (1.0, 0.85, 1.15, 'holds')
    >>> mv.results.compare_seeds([1.0, -1.0], [0.0, 0.0]).verdict
    'not resolved'
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"compare_seeds pairs values by seed: got {a.size} values for a and {b.size} for b; give "
                         "one value per seed for each method, in the same seed order")
    if a.size == 0:
        raise ValueError("compare_seeds needs at least one seed's values")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"compare_seeds got non-finite values (a = {a.tolist()}, b = {b.tolist()}): a diverged "
                         "run has no log-likelihood to compare; drop or rerun that seed and say so")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    d = a - b
    n, mean = d.size, float(d.mean())
    if n < 2:
        lower, upper = -math.inf, math.inf
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
        lower, upper = mean - half, mean + half
    verdict = "holds" if lower > 0 else "fails" if upper < 0 else "not resolved"
    return SeedComparison(mean, lower, upper, int(n), verdict, tuple(float(x) for x in d), float(confidence))


def verdict_sentence(claim: str, comparison: SeedComparison, *, unit: str = "nats", scale: float = 1.0,
                     digits: int = 2) -> str:
    """One sentence stating a claim's verdict from a :class:`SeedComparison`: the numbers first, then the verdict
    the interval gives (never text written around the numbers).

    Parameters
    ----------
    claim
        What ``a`` beating ``b`` means, e.g. ``"gradmala-diag beats dshmc"``.
    comparison
        From :func:`compare_seeds`.
    unit
        The difference's unit, printed after the numbers.
    scale
        Multiplies the numbers for printing (e.g. 1000 for KID x 1000).
    digits
        Decimals printed.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> c = mv.results.compare_seeds([2.0, 3.0, 4.0], [1.0, 1.0, 1.0])
    >>> mv.results.verdict_sentence("a beats b", c)
    'a beats b: mean paired difference +2.00 nats over 3 seeds, 95% interval [-0.48, +4.48]: not resolved.'
    >>> mv.results.verdict_sentence("a beats b", mv.results.compare_seeds([2.0], [1.0]))
    'a beats b: difference +1.00 nats on 1 seed, no interval from one seed: not resolved.'
    """
    if comparison.verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {comparison.verdict!r}; a SeedComparison's verdict is one of {VERDICTS}")
    mean = f"{scale * comparison.mean:+.{digits}f}"
    if comparison.num_seeds < 2:
        return f"{claim}: difference {mean} {unit} on 1 seed, no interval from one seed: {comparison.verdict}."
    level = f"{100 * comparison.confidence:g}%"
    return (f"{claim}: mean paired difference {mean} {unit} over {comparison.num_seeds} seeds, {level} interval "
            f"[{scale * comparison.lower:+.{digits}f}, {scale * comparison.upper:+.{digits}f}]: "
            f"{comparison.verdict}.")


def all_hold(verdicts: Iterable[str]) -> str:
    """The verdict on a claim made of several that must all hold: ``"holds"`` if every one holds, ``"fails"`` if
    any fails, else ``"not resolved"``.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> mv.results.all_hold(["holds", "not resolved"]), mv.results.all_hold(["holds", "fails", "not resolved"])
    ('not resolved', 'fails')
    """
    verdicts = _check_verdicts(verdicts)
    return "holds" if all(v == "holds" for v in verdicts) else "fails" if "fails" in verdicts else "not resolved"


def any_holds(verdicts: Iterable[str]) -> str:
    """The verdict on a claim that holds if any of several holds: ``"holds"`` if one holds, ``"fails"`` if every
    one fails, else ``"not resolved"``.

    Examples
    --------
    >>> import mcmcvae as mv
    >>> mv.results.any_holds(["fails", "holds"]), mv.results.any_holds(["fails", "not resolved"])
    ('holds', 'not resolved')
    """
    verdicts = _check_verdicts(verdicts)
    return "holds" if "holds" in verdicts else "fails" if all(v == "fails" for v in verdicts) else "not resolved"


def _check_verdicts(verdicts) -> list[str]:
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("no verdicts to combine: give at least one")
    unknown = [v for v in verdicts if v not in VERDICTS]
    if unknown:
        raise ValueError(f"unknown verdicts {unknown}; each is one of {VERDICTS}")
    return verdicts


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
