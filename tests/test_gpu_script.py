"""scripts/gpu.sh --dry-run: the GPU run's steps (tests, benchmark, the Table 1 slice with seeds at once) at a tiny
size on the CPU, so that the script works the first time it meets a GPU."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu.sh"


def _run(*args, timeout=1500):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "JAX_PLATFORMS": "cpu"}
    return subprocess.run(["bash", str(SCRIPT), "--python", sys.executable, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_runs_every_step_and_records_them(tmp_path, mnist_available):
    out = tmp_path / "out"
    done = _run("--dry-run", "--seconds", "1200", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "gpu-run.json").read_text())
    assert record["dry_run"] and "cpu" in record["device"]
    assert [(s["step"], s["status"]) for s in record["steps"]] == [
        ("tests", "ok"), ("benchmark", "ok"), ("table1-loglik gpu-dry-run", "ok")]
    for name in ("benchmark-gpu.json", "benchmark-gpu.md", "table1-loglik-gpu-dry-run.json",
                 "table1-loglik-gpu-dry-run.md", "gpu-run.md"):
        assert (out / name).is_file(), name
    # both seeds of both rows were trained at once (one vmapped epoch: metrics rows say so) and evaluated
    runs = {r["run"] for r in record["table1_slice_runs_evaluated"]}
    assert runs == {f"mnist-{m}-seed{s}" for m in ("vae", "gradmala-diag") for s in (0, 1)}
    metrics = out / "runs" / "table1-loglik" / "gpu-dry-run" / "mnist-gradmala-diag-seed1" / "metrics.jsonl"
    assert json.loads(metrics.read_text().splitlines()[0])["replicas"] == 2
    rows = json.loads((out / "table1-loglik-gpu-dry-run.json").read_text())
    assert {r["method"] for r in rows} >= {"vae", "gradmala-diag"}


def test_a_spent_budget_is_recorded_not_overrun(tmp_path):
    """With no time left every step is recorded as not run, and the script still writes its record."""
    out = tmp_path / "out"
    done = _run("--dry-run", "--seconds", "0", "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "gpu-run.json").read_text())
    assert [s["status"] for s in record["steps"]] == ["not run: time budget spent"] * 3
    assert not (out / "benchmark-gpu.json").exists()


def test_bad_options_are_refused():
    done = _run("--seconds", "ten", timeout=60)
    assert done.returncode == 2 and "whole number of seconds" in done.stderr
    done = _run("--dryrun", timeout=60)
    assert done.returncode == 2 and "unknown option --dryrun" in done.stderr
