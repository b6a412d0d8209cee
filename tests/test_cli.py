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
    (["experiment", "table9"], "valid experiments: vae-baseline"),
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


def test_experiment_list(capsys):
    assert main(["experiment", "list"]) == 0
    assert "vae-baseline" in capsys.readouterr().out
