"""``mcmcvae report`` end to end: a tiny MNIST run trained through the command line, then its report."""

import json
import math
import re

import pytest

from mcmcvae.cli import main

PNGS = ("report-samples.png", "report-reconstructions.png", "report-traversals.png", "report-training.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_available):
    out = tmp_path_factory.mktemp("report") / "run"
    args = ["train", "--dataset", "mnist", "--method", "vae", "--out", str(out), "--epochs", "1",
            "--train-size", "200", "--batch-size", "50", "--hidden-sizes", "32", "--latent-dim", "4",
            "--no-progress"]
    assert main(args) == 0
    return out


def _table_values(markdown: str) -> list[str]:
    """The value column of the diagnostics table."""
    section = markdown.split("## Diagnostics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| quantity")]
    return [row.split(" | ")[1] for row in rows]


def test_report_writes_markdown_figures_and_finite_numbers(tiny_run, capsys):
    assert main(["report", str(tiny_run), "--num-samples", "20", "--num-images", "30"]) == 0
    assert "report.md" in capsys.readouterr().out
    markdown = (tiny_run / "report.md").read_text()
    for png in PNGS:
        assert (tiny_run / png).stat().st_size > 1000
        assert f"]({png})" in markdown
    assert "| method | vae |" in markdown and "mnist" in markdown and "| epochs | 1 (vae 1) |" in markdown
    values = _table_values(markdown)
    assert len(values) >= 7
    numbers = [float(x) for value in values for x in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?", value)]
    assert numbers and all(math.isfinite(x) for x in numbers)
    assert not re.search(r"\b(nan|inf)\b", " ".join(values), re.IGNORECASE)

    results = json.loads((tiny_run / "report.json").read_text())
    assert results["num_images"] == 30 and results["num_samples"] == 20 and results["epochs"] == 1
    assert results["test_log_likelihood_source"].startswith("importance sampling here")
    for key in ("test_log_likelihood", "log_k_bound", "elbo", "variational_gap", "inference_gap",
                "effective_sample_size", "proposal_effective_sample_size"):
        assert math.isfinite(results[key]), key
    assert -800 < results["elbo"] <= results["log_k_bound"] + 1e-3 < -50  # L_k >= mean log weight, always
    assert 1 <= results["effective_sample_size"] <= 20
    assert 0 <= results["active_units"] <= results["latent_dim"] == 4 == len(results["activity"])


def test_report_takes_the_log_likelihood_from_eval_json(tiny_run):
    # an eval.json of the same 30 test images (as `mcmcvae evaluate --num-images 30` writes it) is used as is
    saved = {"test_log_likelihood": -123.0, "standard_error": 1.5, "num_images": 30, "num_samples": 77,
             "split": "test", "estimator": "importance", "effective_sample_size": 5.0}
    (tiny_run / "eval.json").write_text(json.dumps(saved))
    assert main(["report", str(tiny_run), "--num-samples", "20", "--num-images", "30"]) == 0
    results = json.loads((tiny_run / "report.json").read_text())
    assert results["test_log_likelihood"] == -123.0
    assert results["test_log_likelihood_source"] == "eval.json (importance, S = 77)"
    assert results["variational_gap"] == pytest.approx(-123.0 - results["log_k_bound"])
    assert results["proposal_effective_sample_size"] == 5.0
    assert "-123.00 ± 1.50" in (tiny_run / "report.md").read_text()
    # one describing other images is not
    (tiny_run / "eval.json").write_text(json.dumps({**saved, "num_images": 10_000}))
    assert main(["report", str(tiny_run), "--num-samples", "20", "--num-images", "30"]) == 0
    assert json.loads((tiny_run / "report.json").read_text())["test_log_likelihood"] != -123.0


def test_report_errors_are_clear(tmp_path, tiny_run, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["report", str(tiny_run), "--num-samples", "0"]) == 2
    assert "num_samples must be a positive integer" in capsys.readouterr().err
