"""Bad values at every public entry point, from Python and from the command line: each is refused with a
message that names the problem and the fix; the command line shows no traceback and makes no directory."""

import jax
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.cli import main
from mcmcvae.evaluate.runs import test_ais_log_likelihood as ais_log_likelihood
from mcmcvae.evaluate.runs import test_log_likelihood as is_log_likelihood
from mcmcvae.train import Phase, Trainer, load_run

MODEL = mv.models.VAE((28, 28, 1), 2, hidden_sizes=(8,))
METHOD = mv.methods.build("vae")
PARAMS = MODEL.init(jax.random.key(0))


def _binary(n=4):
    return (np.random.default_rng(0).random((n, 28, 28, 1)) < 0.5).astype(np.float32)


def _with_nan():
    images = _binary()
    images[1, 3, 3, 0] = np.nan
    return images


IMAGES = {
    "flat (n, 784)": (_binary().reshape(4, 784), r"reshape them with images.reshape\(-1, 28, 28, 1\)"),
    "one image without batch axis": (_binary()[0], r"images\[None\]"),
    "0-255 pixels": (_binary() * 255, "divide 8-bit images by 255"),
    "uint8 0-255 pixels": ((_binary() * 255).astype(np.uint8), "divide 8-bit images by 255"),
    "NaN pixel": (_with_nan(), "1 NaN or infinite pixels"),
    "grey pixels, Bernoulli": (np.full((4, 28, 28, 1), 0.3, np.float32), "needs binary pixels"),
    "no images": (np.zeros((0, 28, 28, 1), np.float32), "hold no image"),
    "strings": (np.full((4, 28, 28, 1), "a"), "numeric"),
}


@pytest.mark.parametrize("case", list(IMAGES))
def test_bad_images_for_the_log_likelihood(case):
    images, message = IMAGES[case]
    with pytest.raises((ValueError, TypeError), match=message):
        is_log_likelihood(jax.random.key(0), MODEL, METHOD, PARAMS, None, images, num_samples=4)


@pytest.mark.parametrize("case", ["flat (n, 784)", "0-255 pixels", "NaN pixel", "grey pixels, Bernoulli"])
def test_bad_images_for_ais_and_training(case):
    images, message = IMAGES[case]
    with pytest.raises(ValueError, match=message):
        ais_log_likelihood(jax.random.key(0), MODEL, METHOD, PARAMS, None, images, num_temperatures=3)
    with pytest.raises(ValueError, match=message):
        Trainer(MODEL, [Phase(METHOD, 1)], batch_size=2, progress=False).run(images)


@pytest.mark.parametrize("options,message", [
    (dict(num_samples=0), "num_samples must be a positive integer, got 0"),
    (dict(num_samples=2.5), "num_samples must be a positive integer"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(batch_size=-3), "batch_size must be a positive integer"),
    (dict(variance_factor=float("nan")), "variance_factor must be a positive finite number"),
    (dict(variance_factor=0.0), "variance_factor must be a positive finite number"),
    (dict(scale_factor=-1.0), "scale_factor must be a positive finite number"),
])
def test_bad_options_for_the_log_likelihood(options, message):
    with pytest.raises(ValueError, match=message):
        is_log_likelihood(jax.random.key(0), MODEL, METHOD, PARAMS, None, _binary(), **options)


@pytest.mark.parametrize("images,message", [
    (np.array([[0.0, 255.0]]), "divide 8-bit images by 255"),
    (np.array([[0.0, np.nan]]), "NaN or infinite"),
    (np.array([[0.5, np.inf]]), "NaN or infinite"),
])
def test_bad_images_for_the_binarisers(images, message):
    with pytest.raises(ValueError, match=message):
        mv.data.binarize_static(images)
    with pytest.raises(ValueError, match=message):
        mv.data.binarize_dynamic(jax.random.key(0), images)


@pytest.mark.parametrize("options,message", [
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(batch_size=-10), "batch_size must be a positive integer, got -10"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(seed="one"), "seed must be an integer"),
    (dict(phases=[Phase(METHOD, -1)]), "num_epochs=-1"),
    (dict(phases=[Phase(METHOD, 1.5)]), "num_epochs=1.5"),
    (dict(phases=[Phase(mv.methods.build("vae", learning_rate=float("nan")), 1)]), "learning rate must be"),
])
def test_bad_trainer_options(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Trainer(MODEL, options.pop("phases", [Phase(METHOD, 1)]), progress=False, **options)


def test_runs_that_cannot_train(tmp_path):
    with pytest.raises(ValueError, match="lower batch_size"):
        Trainer(MODEL, [Phase(METHOD, 1)], batch_size=5, out_dir=tmp_path / "b", progress=False).run(_binary())
    with pytest.raises(ValueError, match="needs an out_dir"):
        Trainer(MODEL, [Phase(METHOD, 1)], batch_size=2, progress=False).run(_binary(), resume=True)
    assert not any(tmp_path.iterdir())


def test_load_run_on_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_run(tmp_path)


# ------------------------------------------------------------------------------------------- command line
_TRAIN = ["train", "--dataset", "linear_hvae", "--latent-sizes", "2,3", "--method", "vae", "--batch-size", "50",
          "--train-size", "200", "--no-progress"]

CLI = {
    "--batch-size 0": (["--batch-size=0"], "--batch-size: expected a positive integer"),
    "--batch-size -10": (["--batch-size=-10"], "--batch-size: expected a positive integer"),
    "--batch-size larger than the data": (["--batch-size=500"], "lower batch_size"),
    "--epochs 0": (["--epochs=0"], "no epoch to train"),
    "--epochs -1": (["--epochs=-1"], "--epochs: expected a non-negative integer"),
    "--mcmc-epochs 0 with an MCMC method": (["--method=gradmala", "--mcmc-epochs=0"], "set --mcmc-epochs"),
    "--learning-rate nan": (["--learning-rate=nan"], "--learning-rate: expected a positive finite number"),
    "--learning-rate inf": (["--learning-rate=inf"], "--learning-rate: expected a positive finite number"),
    "--learning-rate -1e-3": (["--learning-rate=-1e-3"], "--learning-rate: expected a positive finite number"),
    "--learning-rate 0": (["--learning-rate=0"], "--learning-rate: expected a positive finite number"),
    "--learning-rate abc": (["--learning-rate=abc"], "--learning-rate: expected a positive number"),
    "--num-samples 0": (["--num-samples=0"], "--num-samples: expected a positive integer"),
    "--train-size 0": (["--train-size=0"], "--train-size: expected a positive integer"),
    "--latent-dim -2": (["--latent-dim=-2"], "--latent-dim: expected a positive integer"),
    "--hidden-sizes 0": (["--hidden-sizes=0"], "--hidden-sizes shape image models"),
    "--latent-sizes 0,2": (["--latent-sizes=0,2"], "--latent-sizes takes comma-separated positive integers"),
    "--resume with nothing to resume": (["--resume"], "holds no checkpoint"),
}


@pytest.mark.parametrize("case", list(CLI))
def test_bad_train_values_on_the_command_line(tmp_path, capsys, case):
    extra, message = CLI[case]
    out = tmp_path / "run"
    assert main([*_TRAIN, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # no half-made run directory


@pytest.mark.parametrize("args,message", [
    (["evaluate", "DIR", "--num-samples", "0"], "--num-samples: expected a positive integer"),
    (["evaluate", "DIR", "--num-images", "0"], "--num-images: expected a positive integer"),
    (["evaluate", "DIR", "--tau", "-1"], "--tau: expected a positive"),
    (["evaluate", "DIR"], "no config.json"),
    (["report", "DIR"], "no config.json"),
    (["evaluate", "DIR", "--step-size", "0.1"], "needs --method ais"),
])
def test_bad_evaluate_and_report_values_on_the_command_line(tmp_path, capsys, args, message):
    assert main([a.replace("DIR", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
