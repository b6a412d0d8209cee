"""SIGKILL at chosen and at random instants, during checkpoint writes too: resuming gives the parameters and
method state of an uninterrupted run, bit for bit, and ``metrics.jsonl`` has every epoch exactly once."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
import _child  # noqa: E402

TOTAL = sum(_child.EPOCHS)


def _env():
    lib = str(HERE.parent.parent / "lib")
    cache = os.environ.get("MCMCVAE_JAX_CACHE", str(HERE.parent.parent / ".jax_cache"))
    return {**os.environ, "PYTHONPATH": lib + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}


def _start(out, *args):
    return subprocess.Popen([sys.executable, str(HERE / "_child.py"), str(out), *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(out, *args, timeout=300):
    child = _start(out, *args)
    stdout, stderr = child.communicate(timeout=timeout)
    return child.returncode, stdout, stderr


@pytest.fixture(scope="module")
def reference():
    params_and_state = _child.trainer().run(_child.images())
    return _child.leaves(params_and_state)


def _assert_complete(out, reference):
    saved = np.load(out / "final.npz")
    final = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    assert len(final) == len(reference)
    for a, b in zip(final, reference):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_epoch"] for r in rows] == list(range(1, TOTAL + 1))  # no duplicate, no gap
    assert all(np.isfinite(r["loss"]) for r in rows)


def _has_checkpoint(out):
    return (out / "checkpoints").is_dir() and any(p.name.isdigit() for p in (out / "checkpoints").iterdir())


@pytest.mark.parametrize("where", ["before-save", "mid-save", "before-checksum"])
def test_a_kill_while_writing_a_checkpoint_loses_nothing(tmp_path, reference, where):
    """Killed while writing checkpoint 3 (the first of the MCMC phase), then resumed: what a straight run gives."""
    out = tmp_path / "run"
    code, _, stderr = _run(out, "--kill", f"3:{where}")
    assert code == -signal.SIGKILL, stderr[-2000:]
    code, stdout, stderr = _run(out, "--resume")
    assert code == 0 and "DONE" in stdout, stderr[-2000:]
    if where == "before-checksum":  # the checkpoint without a checksum is set aside, with one line saying so
        assert "checkpoint 3 of" in stderr and "has no checksum" in stderr
    _assert_complete(out, reference)


@pytest.mark.parametrize("seed", [0, 1])
def test_kills_at_random_instants_lose_nothing(tmp_path, reference, seed):
    """Up to two SIGKILLs at random instants (start-up, compilation, an epoch or a checkpoint write), resuming
    after each, then run to the end."""
    rng = np.random.default_rng(seed)
    out = tmp_path / "run"
    kills = 0
    for attempt in range(2):
        child = _start(out, *(["--resume"] if _has_checkpoint(out) else []))
        time.sleep(rng.uniform(2.0, 9.0))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.communicate(timeout=300)
        if (out / "final.npz").exists():
            break
    if not (out / "final.npz").exists():
        code, stdout, stderr = _run(out, *(["--resume"] if _has_checkpoint(out) else []))
        assert code == 0 and "DONE" in stdout, stderr[-2000:]
    _assert_complete(out, reference)
