"""The posteriors benchmark runs end to end at its quick budget and matches the easy Gaussian's closed form."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "posteriors.py"
ROW_KEYS = {"experiment", "dataset", "method", "metric", "value", "std", "num_seeds"}


def _load():
    spec = importlib.util.spec_from_file_location("posteriors", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_shape():
    module = _load()
    assert isinstance(module.DESCRIPTION, str) and "\n" not in module.DESCRIPTION
    assert {"quick", "cpu"} <= set(module.BUDGETS)
    assert len(module.BUDGETS["cpu"]["targets"]) >= 5
    with pytest.raises(ValueError, match="unknown budget"):
        module.run(budget="nonesuch")


@pytest.mark.slow
def test_quick_budget(tmp_path):
    module = _load()
    paths = module.run(quick=True, out_dir=tmp_path)
    assert sorted(p.name for p in paths) == ["posteriors.json", "posteriors.md"]
    rows = json.loads((tmp_path / "posteriors.json").read_text())
    assert rows and all(set(row) == ROW_KEYS for row in rows)
    assert {row["experiment"] for row in rows} == {"posteriors"}
    budget = module.BUDGETS["quick"]
    values = {(row["dataset"], row["method"], row["metric"]): row["value"] for row in rows}
    for sampler in budget["samplers"]:
        # Every sampler's draws match the closed form within the bar or their own Monte Carlo error.
        metrics = {m: values[("gaussian-5d", sampler, m)] for m in ("mean_error", "sd_error", "min_ess", "finite")}
        assert metrics["finite"] == 1.0
        metrics["max_rhat"] = values[("gaussian-5d", sampler, "max_rhat")]
        assert module.verdict(metrics) in ("correct", "within MC error"), (sampler, metrics)
        assert metrics["min_ess"] > 50, (sampler, metrics)
        assert values[("gaussian-5d", sampler, "min_ess_per_gradient")] > 0
    text = (tmp_path / "posteriors.md").read_text()
    assert "gaussian-5d" in text and "## Verdicts" in text and "quick" in text
