import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.train import Phase, Trainer, load_run


def _images(n=400, seed=0):
    # Two prototype digits-like patterns plus noise: learnable structure, binary pixels.
    rng = np.random.default_rng(seed)
    protos = rng.random((2, 8, 8, 1)) < 0.5
    labels = rng.integers(0, 2, n)
    flips = rng.random((n, 8, 8, 1)) < 0.05
    return (protos[labels] ^ flips).astype(np.float32)


def _model():
    return mv.models.VAE((8, 8, 1), 2, hidden_sizes=(32,))


def test_training_lowers_the_loss_and_traces_the_epoch_once(tmp_path):
    trainer = Trainer(_model(), [Phase(mv.methods.build("vae", learning_rate=3e-3), 5)], batch_size=20, seed=0,
                      out_dir=tmp_path, progress=False)
    trainer.run(_images())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["loss"] < rows[0]["loss"] - 5.0
    assert trainer.trace_count == 1
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["phases"][0]["method"]["name"] == "vae" and config["seed"] == 0


def test_resume_continues_exactly(tmp_path):
    phases = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("iwae", num_samples=3), 2)]
    images = _images()
    straight, _ = Trainer(_model(), phases, batch_size=20, seed=3, progress=False).run(images)

    interrupted = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("iwae", num_samples=3), 1)]
    Trainer(_model(), interrupted, batch_size=20, seed=3, out_dir=tmp_path, progress=False).run(images)
    resumed, _ = Trainer(_model(), phases, batch_size=20, seed=3, out_dir=tmp_path, progress=False).run(
        images, resume=True)
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    model, method, params, _, _ = load_run(tmp_path)
    assert method.name == "iwae" and model == _model()
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_given_parameters_are_not_consumed():
    trainer = Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, progress=False)
    start = trainer.init()
    trained, _ = trainer.run(_images(), params=start)
    again, _ = trainer.run(_images(), params=start)  # would raise "Array has been deleted" if start were donated
    for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, out_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.run(_images(), resume=True)


def test_dynamic_binarisation_accepts_grey_images_and_static_does_not():
    grey = np.random.default_rng(0).random((40, 8, 8, 1)).astype(np.float32)
    Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, binarize="dynamic",
            progress=False).run(grey)
    with pytest.raises(ValueError, match="binar"):
        Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=20, progress=False).run(grey)


@pytest.mark.parametrize("method", ["vae", "gradmala"])
def test_python_loop_matches_scan(method):
    """``loop="python"`` (one jitted step per batch) trains on the same batches, binarisations and keys as the
    scanned epoch: the same parameters, method state and epoch metrics, up to float reassociation."""
    grey = np.random.default_rng(1).random((100, 8, 8, 1)).astype(np.float32)
    options = mv.methods.select_options(method, {"num_mcmc_steps": 2})
    phases = [Phase(mv.methods.build("vae"), 1), Phase(mv.methods.build(method, **options), 2)]
    results = {}
    for loop in ("scan", "python"):
        trainer = Trainer(_model(), phases, batch_size=20, seed=4, binarize="dynamic", progress=False, loop=loop)
        results[loop] = trainer.run(grey)
        assert trainer.loop == loop and trainer.trace_count == 2  # one trace per phase
    leaves = [jax.tree_util.tree_leaves(results[loop]) for loop in ("scan", "python")]
    assert len(leaves[0]) == len(leaves[1])
    for a, b in zip(*leaves):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-4, atol=2e-5)


def test_auto_loop_avoids_scan_only_for_convolutional_models_on_cpu():
    conv = mv.models.VAE((28, 28, 1), 4, architecture="conv")
    on_cpu = jax.default_backend() == "cpu"
    assert Trainer(conv, [], progress=False).loop == ("python" if on_cpu else "scan")
    assert Trainer(_model(), [], progress=False).loop == "scan"
    assert Trainer(conv, [], progress=False, loop="scan").loop == "scan"


def test_bad_trainer_arguments():
    with pytest.raises(ValueError, match="unknown loop 'while'"):
        Trainer(_model(), [], loop="while")
    with pytest.raises(ValueError, match="binarisation"):
        Trainer(_model(), [], binarize="otsu")
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(_model(), [Phase(mv.methods.build("vae"), 1)], batch_size=100, progress=False).run(_images(50))


def test_two_host_devices_shard_the_batch(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, jax, mcmcvae as mv
        from mcmcvae.train import Phase, Trainer
        assert jax.local_device_count() == 2
        rng = np.random.default_rng(0)
        x = (rng.random((80, 8, 8, 1)) < 0.5).astype(np.float32)
        model = mv.models.VAE((8, 8, 1), 2, hidden_sizes=(16,))
        params, _ = Trainer(model, [Phase(mv.methods.build("vae"), 2)], batch_size=20, progress=False).run(x)
        leaf = jax.tree_util.tree_leaves(params)[0]
        print("DEVICES", len(leaf.sharding.device_set), bool(np.all(np.isfinite(np.asarray(leaf)))))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DEVICES 2 True" in out.stdout
    with pytest.raises(ValueError, match="multiple of the 2 local devices"):
        exec_env = "import jax; from mcmcvae.train import Trainer; import mcmcvae as mv; " \
                   "Trainer(mv.models.VAE((8,8,1),2), [], batch_size=3)"
        res = subprocess.run([sys.executable, "-c", exec_env], env=env, capture_output=True, text=True, timeout=120)
        raise ValueError(res.stderr)


class _RecordIndices:
    """A method that trains nothing and records, per training image, how often it was stepped on and the pixel
    value it saw there: the trainer must hand it each batch's own training-set indices."""

    name = "record"

    def __init__(self, num_data):
        self.num_data = num_data

    def init(self, rng_key, model, params):
        return {"visits": jax.numpy.zeros(self.num_data), "seen": jax.numpy.zeros(self.num_data)}

    def step(self, rng_key, model, params, state, batch):
        images, indices = batch
        return params, {"visits": state["visits"].at[indices].add(1.0),
                        "seen": state["seen"].at[indices].add(images[:, 0, 0, 0])}, {"loss": jax.numpy.zeros(())}

    def config(self):
        return {"name": self.name, "num_data": self.num_data}


def test_methods_with_per_image_state_get_each_batch_s_indices():
    n = 40
    images = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 8, 8, 1)).copy()
    model = mv.models.VAE((8, 8, 1), 2, hidden_sizes=(), likelihood="gaussian")
    _, state = Trainer(model, [Phase(_RecordIndices(n), 3)], batch_size=10, seed=0, progress=False).run(images)
    np.testing.assert_array_equal(np.asarray(state["visits"]), np.full(n, 3.0))  # every image once an epoch
    np.testing.assert_allclose(np.asarray(state["seen"]), 3.0 * np.arange(n) / n, rtol=1e-6)
    with pytest.raises(ValueError, match="num_data=30 training images but is given 40; build it with num_data=40"):
        Trainer(model, [Phase(_RecordIndices(30), 1)], batch_size=10, progress=False).run(images)


# ------------------------------------------------------------------------- nothing lost, nothing silent
from mcmcvae.train import CheckpointWarning, RunInUseError, _RunLock  # noqa: E402


def _vae_phases(epochs, learning_rate=1e-3):
    return [Phase(mv.methods.build("vae", learning_rate=learning_rate), epochs)]


def _leaves_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_run_directory_has_one_owner_at_a_time(tmp_path):
    holder = _RunLock(tmp_path)
    try:
        trainer = Trainer(_model(), _vae_phases(1), batch_size=20, out_dir=tmp_path, progress=False)
        with pytest.raises(RunInUseError, match=f"in use by another training run \\(pid {os.getpid()} on host"):
            trainer.run(_images(40))
        assert not (tmp_path / "config.json").exists()  # the refused run wrote nothing
    finally:
        holder.release()
    trainer.run(_images(40))  # released (as by a process that ended): the directory is free again
    assert [r["global_epoch"] for r in mv.train.read_metrics(tmp_path)] == [1]


def _damage(run_dir, step, how):
    files = sorted((p for p in (run_dir / "checkpoints" / str(step)).rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    target = files[-1]  # the largest file: the arrays
    data = bytearray(target.read_bytes())
    if how == "flip":
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, how):
    images = _images(100)
    straight, _ = Trainer(_model(), _vae_phases(4), batch_size=20, seed=1, progress=False).run(images)
    Trainer(_model(), _vae_phases(3), batch_size=20, seed=1, out_dir=tmp_path, progress=False).run(images)
    _damage(tmp_path, 3, how)
    with pytest.warns(CheckpointWarning, match="checkpoint 3 of .* (does not match its checksum|cannot be read)"):
        resumed, _ = Trainer(_model(), _vae_phases(4), batch_size=20, seed=1, out_dir=tmp_path,
                             progress=False).run(images, resume=True)
    _leaves_equal(straight, resumed)  # epoch 3 was trained again from checkpoint 2
    assert [r["global_epoch"] for r in mv.train.read_metrics(tmp_path)] == [1, 2, 3, 4]  # no duplicate, no gap
    assert any((tmp_path / "corrupt-checkpoints").iterdir())  # set aside, not deleted
    _, _, params, _, config = load_run(tmp_path)
    _leaves_equal(straight, params)
    assert config["trained"] == {"phase": 0, "epoch": 4, "global_epoch": 4, "total_epochs": 4, "finished": True}


def test_no_intact_checkpoint_is_a_clear_refusal(tmp_path):
    images = _images(100)
    Trainer(_model(), _vae_phases(2), batch_size=20, out_dir=tmp_path, progress=False).run(images)
    _damage(tmp_path, 1, "flip")
    _damage(tmp_path, 2, "truncate")
    with pytest.warns(CheckpointWarning), pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        load_run(tmp_path)
    with pytest.warns(CheckpointWarning), pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        Trainer(_model(), _vae_phases(3), batch_size=20, out_dir=tmp_path, progress=False).run(images, resume=True)


def test_a_row_beyond_the_checkpoint_is_removed_on_resume(tmp_path):
    """A kill after the metrics row but before its checkpoint completes: the row is not duplicated."""
    images = _images(100)
    Trainer(_model(), _vae_phases(2), batch_size=20, out_dir=tmp_path, progress=False).run(images)
    rows = (tmp_path / "metrics.jsonl").read_text()
    (tmp_path / "metrics.jsonl").write_text(rows + rows.splitlines()[-1].replace('"global_epoch": 2',
                                                                                  '"global_epoch": 3') + "\n{\"ph")
    Trainer(_model(), _vae_phases(3), batch_size=20, out_dir=tmp_path, progress=False).run(images, resume=True)
    assert [r["global_epoch"] for r in mv.train.read_metrics(tmp_path)] == [1, 2, 3]


@pytest.mark.parametrize("change,field", [
    (dict(learning_rate=1e-2), "phases[0].method.learning_rate (stored 0.001, requested 0.01)"),
    (dict(seed=5), "seed (stored 0, requested 5)"),
    (dict(model=mv.models.VAE((8, 8, 1), 3, hidden_sizes=(32,))), "model.latent_dim (stored 2, requested 3)"),
    (dict(method="iwae"), "phases[0].method.name"),
    (dict(extra_config={"train_size": 50}), "train_size (stored absent, requested 50)"),
])
def test_resume_refuses_a_changed_run_and_lists_the_fields(tmp_path, change, field):
    images = _images(100)
    Trainer(_model(), _vae_phases(1), batch_size=20, out_dir=tmp_path, progress=False).run(images)
    stored = (tmp_path / "config.json").read_text()
    phases = [Phase(mv.methods.build(change.get("method", "vae"), learning_rate=change.get("learning_rate", 1e-3)),
                    2)]
    trainer = Trainer(change.get("model", _model()), phases, batch_size=20, seed=change.get("seed", 0),
                      out_dir=tmp_path, progress=False, extra_config=change.get("extra_config"))
    with pytest.raises(ValueError, match="cannot resume .* differs from the stored one in") as error:
        trainer.run(images, resume=True)
    assert field in str(error.value)
    assert (tmp_path / "config.json").read_text() == stored  # never rewritten to claim the new values
    # growing the epochs (and showing progress) changes nothing already computed: allowed
    Trainer(_model(), _vae_phases(2), batch_size=20, out_dir=tmp_path, progress=True).run(images, resume=True)


def test_resume_refuses_to_change_a_finished_phase_s_epochs(tmp_path):
    images = _images(100)
    two = [Phase(mv.methods.build("vae"), 1), Phase(mv.methods.build("iwae", num_samples=2), 1)]
    Trainer(_model(), two, batch_size=20, out_dir=tmp_path, progress=False).run(images)
    longer = [Phase(mv.methods.build("vae"), 2), Phase(mv.methods.build("iwae", num_samples=2), 2)]
    with pytest.raises(ValueError, match="phase 0 \\(vae\\) finished after 1 epochs, not the 2 requested"):
        Trainer(_model(), longer, batch_size=20, out_dir=tmp_path, progress=False).run(images, resume=True)


class _Poisoned:
    """vae whose update turns NaN on the batches holding training image 0 (or on every batch)."""

    def __init__(self, num_data, always=False):
        self.inner, self.num_data, self.always, self.name = mv.methods.build("vae"), num_data, always, "poisoned"

    def init(self, rng_key, model, params):
        return self.inner.init(rng_key, model, params)

    def step(self, rng_key, model, params, state, batch):
        params, state, metrics = self.inner.step(rng_key, model, params, state, batch)
        bad = jnp.bool_(True) if self.always else jnp.any(batch.indices == 0)
        params = jax.tree_util.tree_map(lambda p: jnp.where(bad, jnp.nan, p), params)
        return params, state, metrics

    def config(self):
        return {"name": self.name, "num_data": self.num_data}


import jax.numpy as jnp  # noqa: E402


def test_non_finite_updates_are_skipped_and_counted_exactly_per_epoch():
    images = _images(100)
    params, state = Trainer(_model(), [Phase(_Poisoned(100), 3)], batch_size=20, progress=False).run(images)
    assert all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves((params, state)))


def test_skips_per_epoch_and_the_loss_of_the_steps_taken(tmp_path):
    images = _images(100)
    Trainer(_model(), [Phase(_Poisoned(100), 3)], batch_size=20, out_dir=tmp_path, progress=False).run(images)
    rows = mv.train.read_metrics(tmp_path)
    assert [r["nonfinite_updates"] for r in rows] == [1, 1, 1]  # one of the 5 batches holds image 0, each epoch
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_an_epoch_of_only_skipped_updates_stops_the_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="every one of the 5 updates of epoch 1 .* lower the learning rate"):
        Trainer(_model(), [Phase(_Poisoned(100, always=True), 2)], batch_size=20, out_dir=out,
                progress=False).run(_images(100))
    assert not out.exists()  # a run that never saved a checkpoint leaves no half-made directory


@pytest.mark.parametrize("learning_rate", [float("nan"), float("inf"), 0.0, -1e-3])
def test_bad_learning_rates_are_refused(learning_rate):
    with pytest.raises(ValueError, match="learning rate must be a positive finite number"):
        Trainer(_model(), _vae_phases(1, learning_rate), batch_size=20, progress=False)


def test_a_huge_learning_rate_writes_nothing_non_finite(tmp_path):
    try:
        Trainer(_model(), _vae_phases(3, 1e4), batch_size=20, out_dir=tmp_path, progress=False).run(_images(100))
    except FloatingPointError:
        pass  # every update of an epoch overflowed: a clear stop, and what was saved is finite
    if (tmp_path / "checkpoints").exists():
        _, _, params, state, _ = load_run(tmp_path)
        assert all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves((params, state)))
    for row in mv.train.read_metrics(tmp_path):
        assert np.isfinite(row["loss"])


@pytest.mark.parametrize("options,message", [
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(batch_size=-10), "batch_size must be a positive integer, got -10"),
    (dict(phases=_vae_phases(-1)), "num_epochs=-1"),
])
def test_bad_sizes_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Trainer(_model(), options.pop("phases", _vae_phases(1)), progress=False, **options)


def test_too_large_batches_are_refused_and_no_epochs_train_nothing(tmp_path):
    with pytest.raises(ValueError, match="lower batch_size"):
        Trainer(_model(), _vae_phases(1), batch_size=50, out_dir=tmp_path / "b", progress=False).run(_images(40))
    assert not (tmp_path / "b").exists()
    trainer = Trainer(_model(), _vae_phases(0), batch_size=20, progress=False)  # e.g. only a method's state
    params, _ = trainer.run(_images(40))
    _leaves_equal(params, trainer.init())


def test_a_foreign_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"name": "something else"}')
    with pytest.raises(ValueError, match="not the configuration of an mcmcvae training run .*model"):
        load_run(tmp_path)
