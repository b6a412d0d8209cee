"""The figure script of docs/kernels.md runs end to end in its --quick form."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "kernels_figure.py"


@pytest.mark.slow
def test_kernels_figure_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("kernels_figure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figure.png"
    summary = module.main(["--quick", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.with_suffix(".json").read_text()) == summary
    assert len(summary["runs"]) == 2
    for run in summary["runs"].values():
        assert 1.0 <= run["final_condition_number"] < 500.0
