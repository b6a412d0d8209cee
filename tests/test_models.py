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


def _logits_and_binary_data():
    """Logits over [-80, 80] (both tails far beyond where sigmoid rounds to 0 or 1), exact zeros, and 0/1 data."""
    logits = jnp.concatenate([jnp.linspace(-80.0, 80.0, 161),
                              20.0 * jax.random.normal(jax.random.key(0), (639,)), jnp.zeros(16)])
    logits = logits.reshape(2, 3, 17, 8, 1)  # (batch..., H, W, C) with a channel axis of 1, as images have
    data = (jax.random.uniform(jax.random.key(1), logits.shape) < 0.5).astype(jnp.float32)
    return logits, data


@pytest.mark.parametrize("jit", [False, True])
def test_bernoulli_log_prob_equals_numpyros(jit):
    from mcmcvae.models import BernoulliLogits

    logits, data = _logits_and_binary_data()
    ours = lambda l: BernoulliLogits(l).to_event(3).log_prob(data).sum()  # noqa: E731
    numpyros = lambda l: dist.BernoulliLogits(l).to_event(3).log_prob(data).sum()  # noqa: E731
    elementwise = (lambda l: BernoulliLogits(l).log_prob(data), lambda l: dist.BernoulliLogits(l).log_prob(data))
    if jit:
        ours, numpyros = jax.jit(ours), jax.jit(numpyros)
        elementwise = tuple(map(jax.jit, elementwise))
    # exact in float64: x l - max(l, 0) - log1p(exp(-|l|))
    l64, x64 = np.asarray(logits, np.float64), np.asarray(data, np.float64)
    exact = x64 * l64 - np.maximum(l64, 0) - np.log1p(np.exp(-np.abs(l64)))
    np.testing.assert_allclose(elementwise[0](logits), exact, rtol=1e-6, atol=1e-30)
    # NumPyro's max(l, 0) + log1p(exp(-|l|)) - x l loses up to an ulp of |l| to cancellation (it rounds
    # -3.06e-7 at l = 15 to 0); ours does not, so the two agree to that rounding, and their sums to float32 rounding
    ulp_of_logits = np.finfo(np.float32).eps * np.abs(np.asarray(logits))
    assert np.all(np.abs(elementwise[0](logits) - elementwise[1](logits)) <= ulp_of_logits + 1e-7)
    np.testing.assert_allclose(ours(logits), numpyros(logits), rtol=1e-6)
    # the gradient is x - sigmoid(l) (written without cancellation), also at l = 0, where NumPyro's clip gives
    # x - 0 or x - 1 instead of x - 1/2
    expected_grad = jnp.where(data > 0, jax.nn.sigmoid(-logits), -jax.nn.sigmoid(logits))
    np.testing.assert_allclose(jax.grad(ours)(logits), expected_grad, rtol=1e-6, atol=1e-30)
    away_from_zero = logits != 0
    np.testing.assert_allclose(jax.grad(ours)(logits)[away_from_zero], jax.grad(numpyros)(logits)[away_from_zero],
                               rtol=1e-5, atol=1e-7)


def test_bernoulli_log_prob_of_exact_probabilities():
    from mcmcvae.models import bernoulli_log_prob

    logits = jnp.array([0.0, 0.0, 80.0, -80.0, 80.0, -80.0])
    data = jnp.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    expected = np.array([-np.log(2.0), -np.log(2.0), -np.exp(-80.0), -np.exp(-80.0), -80.0, -80.0], np.float32)
    np.testing.assert_allclose(bernoulli_log_prob(logits, data), expected, rtol=1e-6)


def test_bernoulli_log_prob_does_not_hide_non_finite_logits():
    """NumPyro scores l = +inf, x = 1 as 0; ours gives a non-finite value so that the caller's guard counts it."""
    from mcmcvae.models import bernoulli_log_prob

    logits = jnp.array([jnp.inf, jnp.inf, -jnp.inf, -jnp.inf, jnp.nan, jnp.nan])
    data = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    for fn in (bernoulli_log_prob, jax.jit(bernoulli_log_prob)):
        assert not np.any(np.isfinite(fn(logits, data)))
    model = VAE((2, 2, 1), 2, hidden_sizes=(4,))
    params = model.init(jax.random.key(0))
    params["decoder"] = jax.tree.map(lambda a: jnp.full_like(a, jnp.inf), params["decoder"])
    # jitted, as in training (eagerly, NumPyro's argument validation rejects the logits first)
    assert not np.isfinite(jax.jit(model.log_joint)(params, jnp.ones((2, 2, 1)), jnp.ones(2)))


def test_bernoulli_models_use_the_cheaper_log_prob(x):
    from mcmcvae.models import BernoulliLogits

    model = VAE((28, 28, 1), 3, hidden_sizes=(8,))
    params = model.init(jax.random.key(0))
    likelihood = model.likelihood_distribution(params, model.decode(params, jnp.ones((1, 3)))[0])
    assert isinstance(likelihood.base_dist, BernoulliLogits) and likelihood.event_shape == (28, 28, 1)
    reference = dist.BernoulliLogits(likelihood.base_dist.logits).to_event(3).log_prob(x[0])
    np.testing.assert_allclose(likelihood.log_prob(x[0]), reference, rtol=1e-6)
