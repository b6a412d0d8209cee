"""``seed-verdicts``: the verdicts of the committed results files, recomputed at seed level from their per-seed values.

The results files written before :func:`mcmcvae.results.compare_seeds` existed drew their verdicts from mean
values (and image-level standard errors, which leave the seed-to-seed spread out). Their JSON rows keep every
seed's value, so this script reads them and states each claim's verdict from the paired differences across seeds
and their 95% t interval: table1-loglik's criterion (by AIS, the estimator its code now decides by, and by
importance sampling), table1-loglik-variant's comparisons of the variant, and table2-kid's claims. It trains and
evaluates nothing; rerunning an experiment at a budget with more seeds (its own results file then carries these
verdicts) supersedes this summary.
"""

from __future__ import annotations

import json
import pathlib

import mcmcvae as mv

import common
import table1_loglik
import table2_kid

DESCRIPTION = "seed-level verdicts recomputed from the committed results files' per-seed values (nothing trains)"
NAME = "seed-verdicts"
SOURCES = ("table1-loglik", "table1-loglik-variant", "table2-kid")
RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def _rows(name: str, source_dir) -> list[dict]:
    path = pathlib.Path(source_dir) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python experiments/run.py {name} --budget cpu` first")
    return json.loads(path.read_text())


def describe(rows: list[dict]) -> str:
    """What a results file's claims rest on, read from its rows: seeds, and the test images of each estimator
    (rows written before the experiments recorded their sample scored the first test images)."""
    seeds = sorted({r["num_seeds"] for r in rows if r.get("value") is not None and r.get("num_seeds")})
    parts = [f"{'/'.join(map(str, seeds))} seeds"]
    labels = {"test_log_likelihood": "importance sampling", "test_log_likelihood_ais": "AIS", "kid": "KID"}
    for metric, label in labels.items():
        found = [r for r in rows if r["metric"] == metric and r.get("value") is not None]
        if not found:
            continue
        sizes = sorted({r["num_images"] for r in found if r.get("num_images")})
        if "test_sample_seed" in found[0]:
            sample = "/".join(map(str, sizes))
            where = f"a random {sample} of the test images (fixed seed {found[0]['test_sample_seed']})"
        else:
            where = "the first test images (the file predates random samples; its own page says how many)"
        parts.append(f"{label} on {where}")
    return "; ".join(parts)


def verdict_rows(source_dir=RESULTS) -> tuple[list[dict], list[str]]:
    """Result rows (metric ``verdict``) and the Markdown lines of every claim, from the files in ``source_dir``."""
    rows, lines = [], []

    def add(source, dataset, claim, comparison, estimator, **extra):
        rows.append(mv.results.row(NAME, dataset, claim, "verdict", comparison.mean, None, comparison.num_seeds,
                                   source=source, estimator=estimator, verdict=comparison.verdict,
                                   comparison=comparison._asdict(), **extra))

    table1 = _rows("table1-loglik", source_dir)
    lines.append("## table1-loglik: the criterion, from the committed file's per-seed values\n")
    lines.append(f"The file: {describe(table1)}.\n")
    for dataset in dict.fromkeys(r["dataset"] for r in table1 if r["value"] is not None):
        for estimator in ("ais", "importance"):
            result = table1_loglik.criterion(table1, dataset, estimator)
            if result is None:
                continue
            label = {"ais": "AIS", "importance": "importance sampling"}[estimator]
            lines.append(f"- **{dataset}, {label}: the criterion {result['verdict']}** over {result['num_seeds']} "
                         "seeds; per speed-measure method: "
                         + ", ".join(f"{m} {v}" for m, v in result["per_method"].items()) + ".")
            for (m, r), c in result["comparisons"].items():
                add("table1-loglik", dataset, f"{m} beats {r}", c, estimator)
                lines.append(f"  - {mv.results.verdict_sentence(f'{m} beats {r}', c)}")
    variant = _rows("table1-loglik-variant", source_dir)
    lines.append("\n## table1-loglik-variant: gradhmc-lt-da (not one of the paper's methods)\n")
    lines.append(f"The file: {describe(variant)}.\n")
    for estimator, metric in (("ais", "test_log_likelihood_ais"), ("importance", "test_log_likelihood")):
        values = table1_loglik.per_seed_values(variant, "mnist", metric)
        claims = [("gradhmc-lt-da", m) for m in (*table1_loglik.RIVALS, *table1_loglik.SPEED_MEASURE)]
        found, sentences = common.seed_comparisons(values, claims)
        for (a, b), c in found.items():
            add("table1-loglik-variant", "mnist", f"{a} beats {b}", c, estimator)
        label = {"ais": "AIS", "importance": "importance sampling"}[estimator]
        lines += [f"- mnist, {label}: {s}" for s in sentences]
    table2 = _rows("table2-kid", source_dir)
    compared = ("binary samples against binary test images" if any(r.get("samples") == "binary" for r in table2)
                else "grey decoded means against binary test images")  # the files written before rows said so
    lines.append(f"\n## table2-kid: lower KID (the committed file's KID: {compared})\n")
    lines.append(f"The file: {describe(table2)}.\n")
    for dataset in dict.fromkeys(r["dataset"] for r in table2 if r["value"] is not None):
        per_seed = {r["method"]: r["per_seed"] for r in table2
                    if r["dataset"] == dataset and r["metric"] == "kid" and r["value"] is not None}
        for (a, b), c in table2_kid.kid_comparisons(per_seed).items():
            add("table2-kid", dataset, f"{a} has a lower KID than {b}", c, "kid")
            lines.append(f"- {dataset}: " + mv.results.verdict_sentence(f"{a} has a lower KID than {b}", c,
                                                                       unit="(KID x 1000)", scale=1000))
    return rows, lines


def run(*, quick: bool = False, out_dir=None):
    """Recompute the verdicts from ``results/`` beside this folder (the same with ``quick``: nothing is costly)."""
    rows, lines = verdict_rows()
    counts = {v: sum(r["verdict"] == v for r in rows) for v in mv.results.VERDICTS}
    markdown = f"""# seed-verdicts: the committed results' verdicts at seed level

Regenerate with `python experiments/run.py seed-verdicts` (reads `results/{{{','.join(SOURCES)}}}.json`; trains
nothing). {'**Quick run** (the same computation).' if quick else ''}

Each claim is tested on the per-seed values of the two methods, paired by seed (every method of a seed starts
from that seed's pre-trained VAE), with the 95% t interval of the mean difference on n - 1 degrees of freedom
(`mv.results.compare_seeds`): **holds** when the interval lies above 0, **fails** when below, **not resolved**
when it contains 0. With few seeds only large or steady differences resolve (3 seeds leave 2 degrees of freedom,
t = 4.30; 5 seeds leave 4, t = 2.78). Each section says what its file rests on; budgets are as each file states.
Of {len(rows)} comparisons: {counts['holds']} hold,
{counts['fails']} fail, {counts['not resolved']} are not resolved.

{chr(10).join(lines)}

**Machine.** {mv.results.machine()}; revision {mv.results.git_revision()}.
"""
    return mv.results.write_results(NAME, rows, markdown, out_dir)
