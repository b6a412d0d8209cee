"""Corrupted and truncated checkpoints, checksum and metrics files, configs and data files: a clear error, or
the run continues from the newest intact checkpoint with what an uninterrupted run gives; nothing lost."""

import json
import pathlib
import struct
import sys

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.train import CheckpointWarning, Phase, Trainer, load_run, read_metrics

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))


def _images():
    rng = np.random.default_rng(0)
    return (rng.random((100, 8, 8, 1)) < 0.5).astype(np.float32)


def _trainer(epochs, out=None):
    return Trainer(mv.models.VAE((8, 8, 1), 2, hidden_sizes=(16,)),
                   [Phase(mv.methods.build("vae"), epochs)], batch_size=50, seed=3, out_dir=out, progress=False)


@pytest.fixture(scope="module")
def straight():
    return _trainer(4).run(_images())


def _files(run_dir, step):
    return sorted((p for p in (run_dir / "checkpoints" / str(step)).rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)


def _flip(path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, min(len(data), len(data) // 3 + 32)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped array bytes": lambda d: _flip(_files(d, 3)[-1]),
    "truncated array file": lambda d: _files(d, 3)[-1].write_bytes(_files(d, 3)[-1].read_bytes()[:40]),
    "deleted array file": lambda d: _files(d, 3)[-1].unlink(),
    "flipped metadata bytes": lambda d: _flip(_files(d, 3)[0]),
    "empty checkpoint directory": lambda d: [p.unlink() for p in _files(d, 3)],
    "lost checksum entry": lambda d: (d / "checkpoint-checksums.json").write_text(
        json.dumps({k: v for k, v in json.loads((d / "checkpoint-checksums.json").read_text()).items()
                    if k != "3"})),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_and_loses_nothing(tmp_path, straight, damage):
    _trainer(3, tmp_path).run(_images())
    DAMAGE[damage](tmp_path)
    with pytest.warns(CheckpointWarning, match="checkpoint 3 of") as record:
        resumed = _trainer(4, tmp_path).run(_images(), resume=True)
    assert len(record) == 1 and "\n" not in str(record[0].message)  # reported in one line
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["global_epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]


@pytest.mark.parametrize("damage", ["garbage checksum file", "both checkpoints flipped"])
def test_no_intact_checkpoint_is_a_clear_refusal(tmp_path, damage):
    _trainer(3, tmp_path).run(_images())
    if damage == "garbage checksum file":
        (tmp_path / "checkpoint-checksums.json").write_text("{not json")
    else:
        _flip(_files(tmp_path, 2)[-1])
        _flip(_files(tmp_path, 3)[-1])
    with pytest.warns(CheckpointWarning), pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        load_run(tmp_path)
    with pytest.warns(CheckpointWarning), pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        _trainer(4, tmp_path).run(_images(), resume=True)
    assert (tmp_path / "config.json").exists()  # the refusal removed nothing of the run


@pytest.mark.parametrize("text,message", [
    ("{not json", "is not valid JSON"),
    ('{"model": {}}', "not the configuration of an mcmcvae training run"),
    ("[1, 2]", "not the configuration of an mcmcvae training run"),
])
def test_a_damaged_config_is_a_clear_error(tmp_path, text, message):
    _trainer(1, tmp_path).run(_images())
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_run(tmp_path)
    with pytest.raises(ValueError, match=message):
        _trainer(2, tmp_path).run(_images(), resume=True)


def test_a_half_written_metrics_row_is_neither_read_nor_kept(tmp_path, straight):
    _trainer(3, tmp_path).run(_images())
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"phase": 0, "epoch": 4, "glob')
    assert [r["global_epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    _trainer(4, tmp_path).run(_images(), resume=True)
    assert [r["global_epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------- data files
def _write_idx(directory, n=20, rows=28, cols=28, magic=0x00000803, labels=None, truncate=None):
    directory.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (n, rows, cols), dtype=np.uint8)
    data = struct.pack(">IIII", magic, n, rows, cols) + pixels.tobytes()
    if truncate is not None:
        data = data[:truncate]
    (directory / "t10k-images-idx3-ubyte").write_bytes(data)
    n_labels = n if labels is None else labels
    (directory / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x00000801, n_labels)
                                                       + bytes(range(n_labels)))


@pytest.mark.parametrize("case", ["truncated images", "wrong magic", "empty file", "label count mismatch",
                                  "wrong image size"])
def test_damaged_data_files_are_clear_errors(tmp_path, monkeypatch, case):
    monkeypatch.setenv("MCMCVAE_DATA", str(tmp_path))
    directory = tmp_path / "mnist"
    if case == "truncated images":
        _write_idx(directory, truncate=16 + 28 * 28 * 5 + 7)
    elif case == "wrong magic":
        _write_idx(directory, magic=0x00000801)
    elif case == "empty file":
        _write_idx(directory, truncate=0)
    elif case == "label count mismatch":
        _write_idx(directory, labels=19)
    else:
        _write_idx(directory, rows=27)
    with pytest.raises((ValueError, mv.data.DataNotFoundError)) as error:
        mv.data.load("mnist", "test")
    assert "t10k" in str(error.value) or "mnist" in str(error.value)


def test_intact_data_files_load(tmp_path, monkeypatch):
    monkeypatch.setenv("MCMCVAE_DATA", str(tmp_path))
    _write_idx(tmp_path / "mnist")
    images = mv.data.load("mnist", "test").images
    assert images.shape == (20, 28, 28, 1) and 0.0 <= images.min() and images.max() <= 1.0


def test_a_run_without_checksums_is_read_unverified_with_a_warning(tmp_path, straight):
    """Runs written before checkpoints carried checksums (or whose checksum file was deleted) still resume."""
    _trainer(3, tmp_path).run(_images())
    (tmp_path / "checkpoint-checksums.json").unlink()
    with pytest.warns(CheckpointWarning, match="read unverified"):
        resumed = _trainer(4, tmp_path).run(_images(), resume=True)
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "checkpoint-checksums.json").exists()  # checkpoints saved since are verified again
