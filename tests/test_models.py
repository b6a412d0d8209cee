import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers

from mcmcvae.models import VAE


@pytest.fixture(scope="module")
def x():
    return (jax.random.uniform(jax.random.key(0), (4, 28, 28, 1)) < 0.3).astype(jnp.float32)


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic256", "gaussian"])
def test_log_joint_equals_prior_plus_likelihood(prior, likelihood, x):
    model = VAE((28, 28, 1), 4, prior=prior, likelihood=likelihood, num_components=3,
                learn_likelihood_scale=likelihood != "bernoulli", hidden_sizes=(16,))
    params = model.init(jax.random.key(1))
    z = jax.random.normal(jax.random.key(2), (4, 4))
    got = model.log_joint_batch(params, x, z)
    decoded = model.decode(params, z)
    expected = model.prior_distribution(params).log_prob(z) + model.likelihood_distribution(params, decoded).log_prob(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    grads = jax.grad(lambda p: model.log_joint_batch(p, x, z).sum())(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_log_joint_agrees_with_a_numpyro_trace(x):
    model = VAE((28, 28, 1), 3, hidden_sizes=(8,))
    params = model.init(jax.random.key(0))
    z = jnp.array([0.1, -0.3, 0.7])
    trace = handlers.trace(handlers.substitute(model.model, data={"z": z})).get_trace(params, x[0])
    total = sum(site["fn"].log_prob(site["value"]).sum() for site in trace.values() if site["type"] == "sample")
    np.testing.assert_allclose(model.log_joint(params, x[0], z), total, rtol=1e-6)


def test_mog_prior_is_an_equal_weight_mixture():
    model = VAE((28, 28, 1), 2, prior="mog", num_components=2, hidden_sizes=(4,))
    params = model.init(jax.random.key(0))
    z = jnp.array([0.3, -1.0])
    means, scales = params["prior"]["means"], jnp.exp(params["prior"]["log_scales"])
    components = dist.Normal(means, scales).to_event(1).log_prob(z)
    expected = jax.nn.logsumexp(components) - jnp.log(2.0)
    np.testing.assert_allclose(model.prior_distribution(params).log_prob(z), expected, rtol=1e-6)


def test_defaults_match_the_papers():
    assert VAE((28, 28, 1), 10, prior="mog").num_components == 50
    assert VAE((28, 28, 1), 10, prior="vamp").num_components == 500
    assert VAE((28, 28, 1), 10).hidden_sizes == (200, 200)


def test_config_round_trip():
    model = VAE((32, 32, 3), 8, architecture="conv", likelihood="logistic256", learn_likelihood_scale=True)
    from mcmcvae.models import from_config

    assert from_config(model.config()) == model
    # A fresh process that imports only mcmcvae.models must rebuild a hierarchical model from its config.
    from mcmcvae.hierarchical import TopDownHVAE

    config = json.dumps(TopDownHVAE((8, 8, 1), (2, 3), hidden_sizes=(16,)).config())
    child = subprocess.run([sys.executable, "-c", "import json, sys; from mcmcvae.models import from_config; "
                            "print(type(from_config(json.loads(sys.argv[1]))).__name__)", config],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "TopDownHVAE"
    with pytest.raises(ValueError, match="unknown model kind"):
        from_config({**model.config(), "kind": "flow"})


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 28, 28)), "shape"),
    (np.full((2, 28, 28, 1), np.nan), "NaN"),
    (np.full((2, 28, 28, 1), 255.0), r"\[0, 1\]"),
    (np.full((2, 28, 28, 1), 0.5), "binar"),
])
def test_validate_images_names_problem_and_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        VAE((28, 28, 1), 10).validate_images(bad)


def test_grey_images_are_fine_for_continuous_likelihoods():
    VAE((28, 28, 1), 10, likelihood="logistic256").validate_images(np.full((2, 28, 28, 1), 0.5))


@pytest.mark.parametrize("kwargs,match", [
    ({"prior": "flow"}, "unknown prior"), ({"likelihood": "poisson"}, "unknown likelihood"),
    ({"architecture": "vit"}, "unknown architecture"), ({"latent_dim": 0}, "latent_dim"),
])
def test_bad_configuration(kwargs, match):
    options = {"image_shape": (28, 28, 1), "latent_dim": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        VAE(**options)
