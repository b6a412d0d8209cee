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


def test_a_damaged_cached_evaluation_is_evaluated_again_with_a_warning(tmp_path):
    """A file cut short (a kill while it was written by an older version) is recomputed, not a crash on resume."""
    path = tmp_path / "eval.json"
    path.write_text('{"value": 1.0, "settings": {"epo')
    with pytest.warns(UserWarning, match="not valid JSON; evaluating again"):
        summary = mv.results.cached_evaluation(path, {"epochs": 1}, lambda: {"value": 2.0})
    assert summary["value"] == 2.0 and json.loads(path.read_text())["value"] == 2.0


def test_a_kill_while_writing_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """Evaluations and results files are written to a temporary file and renamed: a kill before the rename
    leaves the previous content intact."""
    path = tmp_path / "eval.json"
    mv.results.cached_evaluation(path, {"epochs": 1}, lambda: {"value": 1.0})
    before = path.read_text()

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and renaming it

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        mv.results.cached_evaluation(path, {"epochs": 2}, lambda: {"value": 2.0})
    with pytest.raises(KeyboardInterrupt):
        mv.results.write_results("x", [mv.results.row("x", "d", "m", "k", 1.0, 0.0, 1)], "# x", tmp_path)
    assert path.read_text() == before and not (tmp_path / "x.json").exists()


def test_machine_and_git_revision_stamps(tmp_path):
    import pathlib

    import jax

    assert f"JAX {jax.__version__}" in mv.results.machine() and "\n" not in mv.results.machine()
    assert mv.results.git_revision(tmp_path) == "unknown"
    here = mv.results.git_revision(pathlib.Path(__file__).parent)  # this checkout, where there is one
    assert here == "unknown" or (4 <= len(here) <= 40 and all(c in "0123456789abcdef" for c in here))


# ------------------------------------------------------------------------------------------- seed-level inference
def test_compare_seeds_is_the_paired_t_interval_on_n_minus_1_degrees_of_freedom():
    """Known values: differences (1, 2, 3) have mean 2 and s = 1; t_{2, 0.975} = 4.302653 (tables), so the 95%
    interval is 2 -+ 4.302653 / sqrt(3) = [-0.4841, 4.4841]: it contains 0, so the claim is not resolved."""
    c = mv.results.compare_seeds([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    half = 4.302653 / np.sqrt(3)
    assert c.mean == pytest.approx(2.0) and c.num_seeds == 3 and c.per_seed == (1.0, 2.0, 3.0)
    assert c.lower == pytest.approx(2 - half, abs=1e-5) and c.upper == pytest.approx(2 + half, abs=1e-5)
    assert c.verdict == "not resolved" and c.confidence == 0.95
    # five seeds, t_{4, 0.975} = 2.776445: differences (1, 1.5, 2, 2.5, 3), mean 2, s = sqrt(0.625)
    c = mv.results.compare_seeds([1.0, 1.5, 2.0, 2.5, 3.0], np.zeros(5))
    half = 2.776445 * np.sqrt(0.625) / np.sqrt(5)
    assert (c.lower, c.upper) == (pytest.approx(2 - half, abs=1e-5), pytest.approx(2 + half, abs=1e-5))
    assert c.verdict == "holds"
    assert mv.results.compare_seeds(np.zeros(5), [1.0, 1.5, 2.0, 2.5, 3.0]).verdict == "fails"
    # a 90% interval is narrower: t_{4, 0.95} = 2.131847
    c90 = mv.results.compare_seeds([1.0, 1.5, 2.0, 2.5, 3.0], np.zeros(5), confidence=0.9)
    assert c90.upper - c90.mean == pytest.approx(2.131847 * np.sqrt(0.625) / np.sqrt(5), abs=1e-5)


def test_compare_seeds_with_two_seeds_uses_one_degree_of_freedom():
    """n = 2: t_{1, 0.975} = 12.706205; differences (1, 3): mean 2, s = sqrt(2), half width 12.706205."""
    c = mv.results.compare_seeds([1.0, 3.0], [0.0, 0.0])
    assert c.lower == pytest.approx(2 - 12.706205, abs=1e-5) and c.upper == pytest.approx(2 + 12.706205, abs=1e-5)
    assert c.verdict == "not resolved"
    # two seeds that agree closely can resolve: differences (2.0, 2.1), half width 12.706 * 0.05 = 0.635
    assert mv.results.compare_seeds([2.0, 2.1], [0.0, 0.0]).verdict == "holds"


def test_compare_seeds_identical_values_and_one_seed():
    """Equal differences have zero spread: the interval is the point, above 0 holds, at exactly 0 it is not resolved;
    one seed gives an unbounded interval and resolves nothing."""
    c = mv.results.compare_seeds([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert c.lower == c.upper == c.mean == 0.5 and c.verdict == "holds"
    same = mv.results.compare_seeds([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.mean == same.lower == same.upper == 0.0 and same.verdict == "not resolved"
    one = mv.results.compare_seeds([5.0], [1.0])
    assert one.mean == 4.0 and one.lower == -np.inf and one.upper == np.inf and one.verdict == "not resolved"


def test_compare_seeds_refuses_what_it_cannot_pair():
    with pytest.raises(ValueError, match="3 values for a and 2 for b"):
        mv.results.compare_seeds([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one seed"):
        mv.results.compare_seeds([], [])
    with pytest.raises(ValueError, match="non-finite"):
        mv.results.compare_seeds([1.0, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError, match="confidence must lie in"):
        mv.results.compare_seeds([1.0, 2.0], [0.0, 0.0], confidence=95)


def test_verdict_sentence_is_computed_from_the_numbers():
    holds = mv.results.compare_seeds([1.0, 1.5, 2.0, 2.5, 3.0], np.zeros(5))
    text = mv.results.verdict_sentence("gradmala beats dshmc", holds)
    assert text.startswith("gradmala beats dshmc: mean paired difference +2.00 nats over 5 seeds, 95% interval [+")
    assert text.endswith(": holds.")
    fails = mv.results.compare_seeds(np.zeros(5), [0.001, 0.0015, 0.002, 0.0025, 0.003])
    text = mv.results.verdict_sentence("m beats vae in KID", fails, unit="(KID x 1000)", scale=1000, digits=1)
    assert "-2.0 (KID x 1000) over 5 seeds" in text and text.endswith(": fails.")


def test_combined_verdicts():
    assert mv.results.all_hold(["holds", "holds"]) == "holds"
    assert mv.results.all_hold(["holds", "not resolved"]) == "not resolved"
    assert mv.results.all_hold(["not resolved", "fails"]) == "fails"
    assert mv.results.any_holds(["fails", "not resolved", "holds"]) == "holds"
    assert mv.results.any_holds(["fails", "fails"]) == "fails"
    assert mv.results.any_holds(["fails", "not resolved"]) == "not resolved"
    with pytest.raises(ValueError, match="unknown verdicts \\['maybe'\\]"):
        mv.results.all_hold(["holds", "maybe"])
    with pytest.raises(ValueError, match="at least one"):
        mv.results.any_holds([])
