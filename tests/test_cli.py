"""End to end through the command line, on a small subset of the real MNIST files."""

import json

import pytest

from mcmcvae.cli import main


def test_train_evaluate_and_resume(tmp_path, mnist_available, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "mnist", "--method", "vae", "--out", str(out), "--epochs", "2",
            "--train-size", "500", "--batch-size", "50", "--hidden-sizes", "64", "--latent-dim", "4", "--no-progress"]
    assert main(args) == 0
    assert main(args) == 2  # the directory already holds a run: refused without --resume
    assert "--resume" in capsys.readouterr().err
    longer = [a if a != "2" else "3" for a in args]
    assert main(longer + ["--resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_epoch"] for r in rows] == [1, 2, 3]

    assert main(["evaluate", str(out), "--num-samples", "20", "--num-images", "30"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["num_images"] == 30 and result["num_samples"] == 20
    assert -800 < result["test_log_likelihood"] < -50
    assert (out / "samples.png").stat().st_size > 1000
    assert "log-likelihood" in capsys.readouterr().out

    assert main(["evaluate", str(out), "--method", "ais", "--num-temperatures", "20", "--num-chains", "4",
                 "--num-leapfrog-steps", "2", "--num-images", "30"]) == 0
    ais = json.loads((out / "eval.json").read_text())
    assert ais["estimator"] == "ais" and ais["num_temperatures"] == 20 and ais["num_images"] == 30
    assert 0.0 < ais["acceptance_rate"] <= 1.0
    assert -800 < ais["test_log_likelihood"] < -50
    assert "AIS acceptance rate" in capsys.readouterr().out and ais["step_size"] == "adapted"
    assert main(["evaluate", str(out), "--method", "ais", "--num-temperatures", "20", "--num-chains", "4",
                 "--num-leapfrog-steps", "2", "--num-images", "30", "--step-size", "0.2"]) == 0
    fixed = json.loads((out / "eval.json").read_text())
    assert fixed["step_size"] == 0.2 and fixed["acceptance_rate"] != ais["acceptance_rate"]
    assert main(["evaluate", str(out), "--step-size", "0.2"]) == 2
    assert "--step-size fixes AIS's leapfrog step: it needs --method ais" in capsys.readouterr().err


def test_linear_hvae_trains_and_evaluates_with_its_exact_log_likelihood(tmp_path, capsys):
    out = tmp_path / "linear"
    assert main(["train", "--dataset", "linear_hvae", "--latent-sizes", "2,3", "--method", "vae", "--epochs", "25",
                 "--batch-size", "50", "--learning-rate", "1e-2", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["kind"] == "linear_hvae" and config["latent_sizes"] == [2, 3]
    assert main(["evaluate", str(out), "--num-samples", "200", "--num-images", "50"]) == 0
    result = json.loads((out / "eval.json").read_text())
    # importance sampling is a stochastic lower bound of the learnt model's exact log-likelihood; with a trained
    # q, 200 samples in 5 dimensions and tau = 1.5 a tight one (measured: within 0.01 nats)
    assert result["num_images"] == 50 and result["proposal"] == "hierarchical q"
    assert result["exact_test_log_likelihood"] - 0.2 < result["test_log_likelihood"]
    assert result["test_log_likelihood"] < result["exact_test_log_likelihood"] + 0.02
    assert "exact test log-likelihood" in capsys.readouterr().out
    assert main(["train", "--dataset", "linear_hvae", "--likelihood", "bernoulli", "--method", "vae",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "Gaussian likelihood" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["train", "--dataset", "mnist", "--method", "gibbs", "--out", "x"], "valid methods: vae, iwae, mala"),
    (["train", "--dataset", "imagenet", "--method", "vae", "--out", "x"], "mnist"),
])
def test_unknown_names_list_the_valid_ones(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_evaluate_needs_a_run_directory(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MCMCVAE_DATA", str(tmp_path))
    assert main(["train", "--dataset", "fashion_mnist", "--method", "vae", "--out", str(tmp_path / "r")]) == 2
    assert "mcmcvae data fetch fashion_mnist" in capsys.readouterr().err


def test_experiment_forwards_to_the_clones_runner(capsys, monkeypatch):
    """``mcmcvae experiment`` runs experiments/run.py of the clone above the current directory, options and errors
    included, and says what to do where there is no clone."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root / "tests")  # found by searching upwards
    assert main(["experiment", "list"]) == 0
    assert "vae-baseline" in capsys.readouterr().out
    assert main(["experiment", "table9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcmcvae experiment: error: unknown experiment 'table9'") and "vae-baseline" in err
    assert main(["experiment", "--budget", "cpu", "benchmark"]) == 2  # options before the name reach it too
    assert "has one budget" in capsys.readouterr().err


def test_experiment_outside_a_clone_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "list"]) == 2
    err = capsys.readouterr().err
    assert f"no experiments/run.py in {tmp_path} or any folder above it" in err and "clone" in err


# ------------------------------------------------------------------------------- user errors, never tracebacks
_LINEAR = ["train", "--dataset", "linear_hvae", "--latent-sizes", "2,3", "--method", "vae", "--batch-size", "50",
           "--train-size", "200", "--no-progress"]


@pytest.mark.parametrize("option,value", [
    ("--batch-size", "0"), ("--batch-size", "-10"), ("--epochs", "-1"), ("--learning-rate", "nan"),
    ("--learning-rate", "-1e-3"), ("--learning-rate", "0"), ("--learning-rate", "inf"), ("--num-samples", "0"),
    ("--train-size", "0"), ("--latent-dim", "0"), ("--mcmc-epochs", "-2"),
])
def test_bad_train_values_are_usage_errors_that_make_no_directory(tmp_path, capsys, option, value):
    out = tmp_path / "run"
    assert main([*_LINEAR, "--out", str(out), f"{option}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected a" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--epochs", "0"], "no epoch to train"),
    (["--batch-size", "300"], "lower batch_size"),
])
def test_runs_that_cannot_train_make_no_directory(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main([*_LINEAR, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("args", [["evaluate", "RUN", "--num-samples", "0"], ["evaluate", "RUN", "--tau", "nan"],
                                  ["evaluate", "RUN", "--batch-size", "-1"]])
def test_bad_evaluate_values_are_usage_errors(tmp_path, capsys, args):
    assert main([a.replace("RUN", str(tmp_path)) for a in args]) == 2
    assert "expected a positive" in capsys.readouterr().err


def test_resume_lock_unfinished_and_foreign_runs(tmp_path, capsys):
    from mcmcvae.train import _RunLock

    out = tmp_path / "run"
    assert main([*_LINEAR, "--out", str(out), "--epochs", "1"]) == 0
    stored = (out / "config.json").read_text()
    # a changed run is refused, naming the field; config.json is not rewritten
    assert main([*_LINEAR, "--out", str(out), "--epochs", "2", "--learning-rate", "0.01", "--resume"]) == 2
    assert "phases[0].method.learning_rate (stored 0.001, requested 0.01)" in capsys.readouterr().err
    assert (out / "config.json").read_text() == stored
    # a directory in use is refused, naming the holder
    holder = _RunLock(out)
    try:
        assert main([*_LINEAR, "--out", str(out), "--epochs", "2", "--resume"]) == 2
        assert "in use by another training run (pid" in capsys.readouterr().err
    finally:
        holder.release()
    # an unfinished run (1 of 2 epochs) is scored with a warning and eval.json says which epoch
    config = json.loads(stored)
    config["phases"][0]["num_epochs"] = 2
    (out / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(out), "--num-samples", "10", "--num-images", "20"]) == 0
    assert "is unfinished: scoring its checkpoint after epoch 1 of 2" in capsys.readouterr().err
    result = json.loads((out / "eval.json").read_text())
    assert result["trained_epochs"] == 1 and result["total_epochs"] == 2 and result["finished"] is False
    # a foreign config.json is a clear error for every command that reads runs
    (out / "config.json").write_text('{"learning_rate": 0.1}')
    for command in (["evaluate", str(out)], ["report", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "is not the configuration of an mcmcvae training run" in err and "KeyError" not in err
