"""What the experiments share beyond the public API: budgets, where runs live, and train-then-evaluate.

Result rows, the results files, cached evaluations and provenance stamps are public (:mod:`mcmcvae.results`), as
is the resumable fit (:func:`mcmcvae.train.fit`); this module holds only what is about this folder's layout.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

import mcmcvae as mv

__all__ = ["budget_name", "mcmc_learning_rate", "results_dir", "runs_dir", "train_and_evaluate",
           "reference_features", "importance_log_likelihoods", "TEST_SAMPLE_SEED", "test_order", "load_binary",
           "BINARIZATIONS", "sample_text", "ais_with_check", "ais_check_text", "binary_sample_kid",
           "seed_comparisons", "fraction_text", "code_state", "parts_provenance", "part_label", "part_records_dir",
           "part_settings", "write_part_record", "part_rows"]

# The random order of the test images that every experiment's test samples are cut from: an evaluation on n images
# uses the first n of this order (a fixed seed, so reruns and methods see the same images; never the file's first
# n, which are easier than average: 97 against 105 on-pixels per MNIST image among the first 1000).
TEST_SAMPLE_SEED = 20240
# How an experiment's binary images are made (mcmcvae.data): thresholded at 0.5 (Hirt et al.'s code), or one
# fixed Bernoulli(intensity) draw per split with documented seeds (Ruiz and Titsias's MNIST).
BINARIZATIONS = {"threshold": "thresholded at 0.5",
                 "fixed_stochastic": "one fixed Bernoulli(intensity) draw per pixel (mcmcvae.data.binarize_fixed, "
                                     "seeds: train 0, test 1)"}


def results_dir(out_dir=None) -> pathlib.Path:
    """Where the results files go (``out_dir``, else ``results/`` under the current directory), made if missing."""
    path = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path.cwd() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def budget_name(budgets: dict, quick: bool, budget: str | None, default: str = "paper",
                renamed: dict | None = None) -> str:
    """The budget an experiment runs with: ``quick`` for ``--quick``, else ``budget`` or ``default``; an unknown
    name is refused with the valid ones, and an old name in ``renamed`` (``{old: (new, why)}``) with its new one."""
    name = "quick" if quick else (budget or default)
    if renamed and name in renamed:
        new, why = renamed[name]
        raise ValueError(f"budget {name!r} was renamed {new!r}: {why}; run --budget {new}")
    if name not in budgets:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(budgets)}")
    return name


def mcmc_learning_rate(budget: dict, dataset: str, default: float) -> float:
    """The MCMC phase's learning rate for ``dataset`` under ``budget``: the budget's ``mcmc_learning_rates``
    override for it, else ``default`` (the paper's rate)."""
    return budget.get("mcmc_learning_rates", {}).get(dataset, default)


REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def _git(*args, repository=REPOSITORY) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=repository).stdout


def code_state(repository=REPOSITORY) -> dict:
    """The code a process runs: the checkout's short revision and the tracked files under ``lib/`` and
    ``experiments/`` that differ from it (uncommitted changes), so that each part of an experiment records which
    code computed it (``run.py --workers`` keeps this in the part's marker).

    >>> sorted(code_state())
    ['revision', 'uncommitted']
    """
    revision = mv.results.git_revision(repository)
    try:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", "lib", "experiments",
                      repository=repository)
    except (OSError, subprocess.CalledProcessError):
        status = ""
    return {"revision": revision, "uncommitted": sorted(line[3:] for line in status.splitlines())}


def part_label(part: dict) -> str:
    """A part's name in file names: ``dataset-mnist_seed-3``.

    >>> part_label({"dataset": "mnist", "seed": 3})
    'dataset-mnist_seed-3'
    """
    return "_".join(f"{key}-{value}" for key, value in part.items())


def part_records_dir(name: str, budget_name: str, out_dir=None) -> pathlib.Path:
    """Where the records of a budget's finished parts go: ``parts/NAME/BUDGET/`` beside the results files.

    A record (:func:`write_part_record`) holds a part's result rows and provenance, a few kilobytes, and no
    checkpoint: collecting a results file needs only the records, so parts computed on different machines or in
    different sessions are collected by bringing their records together (commit them, or copy the folder)."""
    return results_dir(out_dir) / "parts" / name / budget_name


def part_settings(budget: dict) -> dict:
    """A budget's settings as a part's record keeps them: every setting except which parts the budget has
    (``seeds``, ``cases``), which may grow without changing how a part is computed; tuples as lists (JSON).

    >>> part_settings({"epochs": 3, "methods": ("vae", "gradmala"), "seeds": (0, 1)})
    {'epochs': 3, 'methods': ['vae', 'gradmala']}
    """
    return json.loads(json.dumps({k: v for k, v in budget.items() if k not in ("seeds", "cases")}))


def write_part_record(name: str, budget_name: str, part: dict, rows: list[dict], *, settings: dict, minutes: float,
                      code: dict, starts: int = 1, finished: time.struct_time | None = None,
                      out_dir=None) -> pathlib.Path:
    """Write the record of a finished part: its rows, the budget's :func:`part_settings`, the minutes of the process
    that finished it and how many times it was started (``starts``: more than one means it was resumed, and its
    earlier processes' time is not in ``minutes``), the code that computed it (:func:`code_state`), the machine and
    when it finished (``finished``, UTC; ``None`` is now); returns its path."""
    finished = time.gmtime() if finished is None else finished
    record = {"part": part, "budget": budget_name, "settings": part_settings(settings), "minutes": minutes,
              "starts": starts, **code,
              "machine": mv.results.machine(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", finished),
              "rows": rows}
    folder = part_records_dir(name, budget_name, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{part_label(part)}.json"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    temporary.replace(path)  # a kill while writing leaves no half record
    return path


def part_rows(name: str, budget_name: str, part: dict, settings: dict, out_dir=None) -> list[dict] | None:
    """The result rows of a finished part from its record, or ``None`` when it has none (the part is to run).

    A record computed under other settings of the budget is refused, naming the settings that differ: its rows
    would be mixed with rows computed otherwise."""
    path = part_records_dir(name, budget_name, out_dir) / f"{part_label(part)}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    expected = part_settings(settings)
    if record.get("part") != part or record.get("settings") != expected:
        recorded = record.get("settings") or {}
        differ = sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))
        raise ValueError(f"{path} was computed for part {record.get('part')} with other settings of budget "
                         f"{budget_name!r} (they differ in {', '.join(differ) or 'the part'}) than this run's: "
                         "delete it to recompute the part, or restore the settings it was computed with")
    return record["rows"]


def parts_provenance(name: str, budget_name: str, out_dir=None, repository=REPOSITORY) -> str:
    """``"; parts computed at revision ..."`` for a results file's machine line, from the markers of the parts
    that ``run.py --workers`` ran (empty when none did): the revisions with their numbers of parts, in the order
    the parts finished, and, when there are several, the files under ``lib/`` and ``experiments/`` that differ
    between them, so a reader sees whether the parts ran the same code. Markers written before revisions were
    recorded count as "not recorded"."""
    folder = runs_dir(name, out_dir) / budget_name / "parts"
    markers = sorted(folder.glob("*.done"), key=lambda path: path.stat().st_mtime) if folder.is_dir() else []
    records = {path.stem: json.loads(path.read_text())
               for path in part_records_dir(name, budget_name, out_dir).glob("*.json")}
    # markers (in the order written) of the parts that have no record, then the records in the order they finished
    found = [json.loads(path.read_text()) for path in markers if path.stem not in records]
    found += sorted(records.values(), key=lambda record: record["finished"])
    if not found:
        return ""
    counts: dict = {}
    uncommitted: set = set()
    for record in found:
        revision = record.get("revision", "not recorded")
        counts[revision] = counts.get(revision, 0) + 1
        uncommitted.update(record.get("uncommitted", []))
    text = "; parts computed at revision " + ", ".join(f"{r} ({n})" for r, n in counts.items())
    recorded = [r for r in counts if r not in ("not recorded", "unknown")]
    if len(recorded) > 1:
        differ: set = set()
        try:
            for other in recorded[1:]:
                differ.update(_git("diff", "--name-only", recorded[0], other, "--", "lib", "experiments",
                                   repository=repository).split())
            text += ("; lib/ and experiments/ differ between those revisions in " + ", ".join(sorted(differ))
                     if differ else "; lib/ and experiments/ are the same at those revisions")
        except (OSError, subprocess.CalledProcessError):
            text += "; whether their code differs is unknown (a revision is missing from this checkout)"
    if uncommitted:
        text += "; some parts ran with uncommitted changes to " + ", ".join(sorted(uncommitted))
    return text


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
                "variance_factor": float(variance_factor), "epochs": sum(p.num_epochs for p in phases),
                "test_sample_seed": TEST_SAMPLE_SEED}  # the experiments' test samples are cut from test_order
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


def test_order(num_total: int, seed: int = TEST_SAMPLE_SEED) -> np.ndarray:
    """A fixed random order of ``num_total`` test images; a sample of ``n`` is its first ``n`` (so a smaller sample,
    e.g. AIS's, lies inside a larger one, e.g. importance sampling's)."""
    return np.random.default_rng(seed).permutation(num_total)


def load_binary(dataset: str, split: str, binarization: str, *, num_images: int | None = None,
                random_sample: bool = False) -> np.ndarray:
    """A split's binary images: ``binarization`` is a key of :data:`BINARIZATIONS`. Training images are the first
    ``num_images``; with ``random_sample`` (test images) they are the first ``num_images`` of :func:`test_order`."""
    from mcmcvae.data import load_fixed_binarization, load_images

    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {binarization!r}; choose one of {', '.join(BINARIZATIONS)}")
    if binarization == "threshold":
        images = load_images(dataset, split, binarize="static", num_images=None if random_sample else num_images)
    else:
        images = load_fixed_binarization(dataset, split, num_images=None if random_sample else num_images)
    if not random_sample:
        return images
    return images[test_order(len(images))[:num_images]]


def sample_text(num_images: int | None, num_total: int = 10_000) -> str:
    """How a test sample was drawn, for a results file."""
    if num_images is None or num_images >= num_total:
        return f"all {num_total} test images"
    return (f"a random sample of {num_images} of the {num_total} test images (fixed seed {TEST_SAMPLE_SEED}, "
            "common.test_order)")


def ais_with_check(path, settings: dict, rng_key, model, method, params, state, images, *, num_temperatures: int,
                   num_chains: int, step_size: float, check_factor: int | None = 2, variance_factor: float = 1.5):
    """AIS with a fixed step size (no adaptation from the chains it weighs), cached at ``path``; with
    ``check_factor``, a second run with ``check_factor`` times the temperatures on the same images, whose per-image
    difference from the first says whether more temperatures still move the estimate.

    Returns the AIS summary with ``check``: ``{num_temperatures, difference, standard_error, moved}`` where
    ``difference`` is the mean over images of (more temperatures minus fewer), and ``moved`` is true when it lies
    more than 2 standard errors from 0 (then the estimate at ``num_temperatures`` has not converged).
    """
    from mcmcvae.evaluate.runs import test_ais_log_likelihood

    def evaluate(temperatures, key):
        return test_ais_log_likelihood(key, model, method, params, state, images, num_temperatures=temperatures,
                                       num_chains=num_chains, variance_factor=variance_factor, step_size=step_size)

    base = {**settings, "num_temperatures": num_temperatures, "num_chains": num_chains, "step_size": step_size,
            "variance_factor": variance_factor, "num_images": len(images)}
    path = pathlib.Path(path)
    result = mv.results.cached_evaluation(path, base, lambda: evaluate(num_temperatures, rng_key),
                                          require=("per_image",))
    if not check_factor:
        return {**result, "check": None}
    more = check_factor * num_temperatures
    second = mv.results.cached_evaluation(path.with_name(f"{path.stem}-check{path.suffix}"),
                                          {**base, "num_temperatures": more},
                                          lambda: evaluate(more, jax.random.fold_in(rng_key, 1)),
                                          require=("per_image",))
    difference, error = mv.results.paired_difference(second["per_image"], result["per_image"])
    return {**result, "check": {"num_temperatures": more, "difference": difference, "standard_error": error,
                                "moved": bool(abs(difference) > 2 * error),
                                "acceptance_rate": second["acceptance_rate"]}}


def ais_check_text(checks: dict) -> str:
    """One line per checked run: what more temperatures did to AIS, and whether that is within its error."""
    if not checks:
        return ""
    moved = [name for name, c in checks.items() if c["moved"]]
    parts = [f"{name} {c['difference']:+.2f} +- {c['standard_error']:.2f} (acceptance {c['acceptance_rate']:.2f})"
             for name, c in checks.items()]
    verdict = ("more temperatures do not move any estimate beyond 2 standard errors" if not moved else
               f"more temperatures move {', '.join(moved)} beyond 2 standard errors: their AIS estimates have not "
               "converged and are looser than the truth")
    return (f"AIS check (the same images, {next(iter(checks.values()))['num_temperatures']} temperatures minus the "
            f"verdict's, paired per image): {'; '.join(parts)}: {verdict}.")


def binary_sample_kid(rng_key, model, params, *, reference_features, resize_to: int, num_subsets: int,
                      subset_size: int, batch_size: int = 50) -> dict:
    """KID of binary samples against binary test images: ``z ~ p(z)``, ``x ~ Bernoulli(mean(z))`` drawn once per
    pixel, so that generated and reference images are both binary (decoded means are grey, and grey images
    against binary ones partly reward a saturated decoder)."""
    from mcmcvae.evaluate import inception_features
    from mcmcvae.evaluate.generative import generate_images
    from mcmcvae.evaluate.mmd import kid

    reference_features = np.asarray(reference_features, np.float32)
    generate_key, pixel_key, kid_key = jax.random.split(rng_key, 3)
    means = generate_images(generate_key, model, params, reference_features.shape[0])
    binary = np.asarray(jax.random.bernoulli(pixel_key, jnp.asarray(means)), np.float32)
    features = np.asarray(inception_features(binary, batch_size=batch_size, resize_to=resize_to))
    subset_size = min(int(subset_size), reference_features.shape[0], features.shape[0])
    mean, std = kid(reference_features, features, num_subsets=num_subsets, subset_size=subset_size, rng_key=kid_key)
    return {"kid": float(mean), "kid_std": float(std), "num_generated": int(features.shape[0]),
            "num_reference": int(reference_features.shape[0]), "resize_to": int(resize_to),
            "subset_size": subset_size, "num_subsets": int(num_subsets), "samples": "binary"}


def seed_comparisons(per_seed: dict, claims, *, unit: str = "nats", scale: float = 1.0, digits: int = 2):
    """Each claim ``(a, b)`` ("``a`` beats ``b``") compared across seeds (:func:`mcmcvae.results.compare_seeds` on
    ``per_seed[a]`` and ``per_seed[b]``); returns ``({(a, b): SeedComparison}, [sentence, ...])``. Claims with a
    missing side are left out."""
    comparisons, lines = {}, []
    for a, b in claims:
        if a not in per_seed or b not in per_seed:
            continue
        comparison = mv.results.compare_seeds(per_seed[a], per_seed[b])
        comparisons[(a, b)] = comparison
        lines.append(mv.results.verdict_sentence(f"{a} beats {b}", comparison, unit=unit, scale=scale,
                                                 digits=digits))
    return comparisons, lines


def fraction_text(parts) -> str:
    """The fraction of the paper's budget used, one ``(what, used, paper's)`` per part (``None``: all)."""
    out = []
    for what, used, paper in parts:
        used = paper if used is None else used
        out.append(f"{what} {used}/{paper} ({100 * used / paper:.3g}%)")
    return "Fraction of the paper's budget used: " + "; ".join(out) + "."
