"""mv.results: the rows, files, caches and stamps that every research script writes its results with."""

import json

import numpy as np
import pytest

import mcmcvae as mv


def test_row_is_the_public_schema_with_floats_and_extra_fields():
    row = mv.results.row("study", "mnist", "vae", "test_log_likelihood", np.float32(-90.5), np.float64(0.25), 3,
                         per_seed=[-90.0, -90.5, -91.0])
    assert list(row)[:7] == ["experiment", "dataset", "method", "metric", "value", "std", "num_seeds"]
    assert type(row["value"]) is float and type(row["std"]) is float and type(row["num_seeds"]) is int
    assert row["value"] == -90.5 and row["std"] == 0.25 and row["per_seed"] == [-90.0, -90.5, -91.0]
    assert mv.results.row("s", "d", "m", "x", None)["value"] is None
    json.dumps(row)  # writable as it is


def test_summarise_is_the_mean_and_sample_standard_deviation():
    mean, std = mv.results.summarise([1.0, 2.0, 6.0])
    assert mean == 3.0 and std == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))
    assert mv.results.summarise(np.array([5.0])) == (5.0, None)


def test_write_results_writes_the_json_rows_and_the_markdown_page(tmp_path, monkeypatch):
    rows = [mv.results.row("study", "mnist", "vae", "kid", 0.01)]
    paths = mv.results.write_results("study", rows, "# study\n\n| a |\n\n\n", tmp_path / "out")
    assert paths == [tmp_path / "out" / "study.json", tmp_path / "out" / "study.md"]
    assert json.loads(paths[0].read_text()) == rows and paths[0].read_text().endswith("]\n")
    assert paths[1].read_text() == "# study\n\n| a |\n"
    monkeypatch.chdir(tmp_path)  # without out_dir: results/ under the current directory
    assert mv.results.write_results("study", rows, "# study")[0] == tmp_path / "results" / "study.json"


def test_markdown_table_has_a_header_a_rule_and_one_line_per_row():
    text = mv.results.markdown_table(["a", "b"], [[1, "x"], [2.5, None]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 | None |"]


def test_paired_difference_is_the_mean_difference_and_its_standard_error():
    mean, se = mv.results.paired_difference([1.0, 2.0, 4.0], [0.0, 1.0, 2.0])  # differences 1, 1, 2
    assert mean == pytest.approx(4 / 3) and se == pytest.approx(np.std([1, 1, 2], ddof=1) / np.sqrt(3))


def test_cached_evaluation_reuses_only_equal_settings_and_returns_what_it_stores(tmp_path):
    """Equal settings (tuples compared as stored) reuse the file without evaluating; other settings, or a saved
    summary missing a required key, evaluate afresh; fresh and reused summaries have the same types."""
    calls = []

    def evaluate():
        calls.append(1)
        return {"value": np.float32(len(calls)), "per_image": np.arange(3.0)}

    path = tmp_path / "eval.json"
    fresh = mv.results.cached_evaluation(path, {"epochs": (1, 2)}, evaluate)
    again = mv.results.cached_evaluation(path, {"epochs": (1, 2)}, evaluate)
    assert len(calls) == 1 and fresh == again and fresh["per_image"] == [0.0, 1.0, 2.0]
    assert fresh["value"] == 1.0 and fresh["settings"] == {"epochs": [1, 2]} and fresh["eval_seconds"] >= 0
    assert mv.results.cached_evaluation(path, {"epochs": (1, 3)}, evaluate)["value"] == 2.0
    assert mv.results.cached_evaluation(path, {"epochs": (1, 3)}, evaluate, require=("missing",))["value"] == 3.0


def test_machine_and_git_revision_stamps(tmp_path):
    import pathlib

    import jax

    assert f"JAX {jax.__version__}" in mv.results.machine() and "\n" not in mv.results.machine()
    assert mv.results.git_revision(tmp_path) == "unknown"
    here = mv.results.git_revision(pathlib.Path(__file__).parent)  # this checkout, where there is one
    assert here == "unknown" or (4 <= len(here) <= 40 and all(c in "0123456789abcdef" for c in here))
