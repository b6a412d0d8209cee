"""The top-down hierarchical VAE: NumPyro log joint, the closed-form per-layer KL, and training through the
shared trainer with the unchanged MCMC methods."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers

import mcmcvae as mv
from mcmcvae import hierarchical
from mcmcvae.train import Phase, Trainer, load_run

SIZES = (2, 3, 2)


@pytest.fixture(scope="module")
def tiny():
    model = hierarchical.TopDownHVAE(image_shape=(6, 6, 1), latent_sizes=SIZES, hidden_sizes=(16,),
                                     block_hidden_sizes=(8,), state_size=8)
    params = model.init(jax.random.key(0))
    # non-trivial biases, so that Delta mu, Delta sigma and sigma_l differ from their initial 0, 1, 1
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a + 0.1 * rng.standard_normal(a.shape), jnp.float32),
                                    params)
    images = (jax.random.uniform(jax.random.key(1), (3, 6, 6, 1)) < 0.4).astype(jnp.float32)
    return model, params, images


def test_log_joint_equals_the_numpyro_trace(tiny):
    model, params, _ = tiny

    @jax.jit
    def compare(key):
        trace = handlers.trace(handlers.seed(model.model, key)).get_trace(params)
        expected = sum(jnp.sum(site["fn"].log_prob(site["value"])) for site in trace.values()
                       if site["type"] == "sample")
        z = jnp.concatenate([trace[f"z{l}"]["value"] for l in range(1, len(SIZES) + 1)])
        return expected, model.log_joint(params, trace["x"]["value"], z), z.shape

    for seed in range(3):
        expected, got, shape = compare(jax.random.key(seed))
        assert shape == (sum(SIZES),)
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_closed_form_kl_matches_numpyro_and_monte_carlo(tiny):
    """Eq. (10) per layer equals NumPyro's Normal KL, and a Monte Carlo average of log q - log p over draws of
    that layer (earlier layers held fixed) within 4.5 standard errors."""
    model, params, images = tiny
    n, d, draws = images.shape[0], model.latent_dim, 20_000
    base = jax.random.normal(jax.random.key(2), (n, d))
    repeated = jnp.tile(images, (draws, 1, 1, 1))
    passed = jax.jit(model.posterior_pass)

    reference = passed(params, images, base)
    numpyro_kl = jnp.stack([
        jnp.sum(dist.kl_divergence(dist.Normal(reference.loc[:, s], reference.scale[:, s]),
                                   dist.Normal(reference.prior_loc[:, s], reference.prior_scale[:, s])), axis=-1)
        for s in model.layer_slices], axis=-1)
    np.testing.assert_allclose(reference.kl, numpyro_kl, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(reference.kl) > 1e-2)  # the test would be empty with q = p
    assert np.all(np.asarray(reference.kl) < 1e2)  # and float32 cancellation would swamp very large ones

    for layer, s in enumerate(model.layer_slices):
        fresh = jax.random.normal(jax.random.fold_in(jax.random.key(3), layer), (draws * n, s.stop - s.start))
        noise = jnp.tile(base, (draws, 1)).at[:, s].set(fresh)
        out = passed(params, repeated, noise)
        z = out.z[:, s]
        log_ratio = (jax.scipy.stats.norm.logpdf(z, out.loc[:, s], out.scale[:, s])
                     - jax.scipy.stats.norm.logpdf(z, out.prior_loc[:, s], out.prior_scale[:, s])).sum(-1)
        log_ratio = np.asarray(log_ratio, np.float64).reshape(draws, n)
        error = np.abs(log_ratio.mean(0) - np.asarray(reference.kl[:, layer]))
        assert np.all(error < 4.5 * log_ratio.std(0) / np.sqrt(draws) + 1e-5), (layer, error)


def test_q_log_density_and_shapes(tiny):
    model, params, images = tiny
    d = sum(SIZES)

    @jax.jit
    def everything(key):
        k_q, k_noise, k_prior = jax.random.split(key, 3)
        z, log_q = model.sample_q0(k_q, params, images, 5)
        loc, scale = model.encode(params, images)
        mean_path = model.posterior_pass(params, images, jnp.zeros((3, d))).z
        out = model.posterior_pass(params, images, jax.random.normal(k_noise, (3, d)))
        expected = jnp.sum(jax.scipy.stats.norm.logpdf(out.z, out.loc, out.scale), axis=-1)
        return z, log_q, loc, scale, mean_path, out.log_q, expected, model.sample_prior(k_prior, params, 4)

    z, log_q, loc, scale, mean_path, log_q_pass, expected, prior_draws = everything(jax.random.key(4))
    assert z.shape == (5, 3, d) and log_q.shape == (5, 3)
    assert loc.shape == scale.shape == (3, d) and np.all(np.asarray(scale) > 0)
    np.testing.assert_allclose(mean_path, loc)  # zero noise is the mean path encode reports
    np.testing.assert_allclose(log_q_pass, expected, rtol=1e-5)  # log q: the layers' Normal log densities
    assert prior_draws.shape == (4, d)


def test_config_round_trip_and_checks():
    model = hierarchical.TopDownHVAE(image_shape=(6, 6, 1), latent_sizes=(2, 3), hidden_sizes=(16,))
    config = json.loads(json.dumps(model.config()))
    assert config["kind"] == "topdown_hvae"
    assert mv.models.from_config(config) == model
    with pytest.raises(ValueError, match="latent_sizes"):
        hierarchical.TopDownHVAE(image_shape=(6, 6, 1), latent_sizes=())
    with pytest.raises(ValueError, match="likelihood"):
        hierarchical.TopDownHVAE(image_shape=(6, 6, 1), latent_sizes=(2,), likelihood="poisson")
    with pytest.raises(ValueError, match="binar"):
        model.validate_images(np.full((2, 6, 6, 1), 0.5))


def test_gradmala_trains_through_the_trainer_with_the_prior_frozen(tmp_path):
    """One epoch of gradmala (lower-triangular C) on a tiny three-layer model through the shared trainer,
    wrapped in FreezeParams: the prior stays exactly as it was, decoder and encoder move, one trace, and
    load_run rebuilds model and method from the run directory."""
    model = hierarchical.TopDownHVAE(image_shape=(6, 6, 1), latent_sizes=SIZES, hidden_sizes=(16,),
                                     block_hidden_sizes=(8,), state_size=8)
    images = (np.random.default_rng(0).random((40, 6, 6, 1)) < 0.4).astype(np.float32)
    inner = mv.methods.build("gradmala", num_mcmc_steps=2, preconditioner="lower_triangular")
    method = hierarchical.FreezeParams(inner, groups=("prior",))
    assert method.name == "gradmala"
    trainer = Trainer(model, [Phase(method, 1)], batch_size=20, seed=0, out_dir=tmp_path, progress=False)
    start = jax.tree_util.tree_map(np.array, trainer.init())
    params, state = trainer.run(images, params=jax.tree_util.tree_map(jnp.array, start))
    assert trainer.trace_count == 1

    for a, b in zip(jax.tree_util.tree_leaves(params["prior"]), jax.tree_util.tree_leaves(start["prior"])):
        np.testing.assert_array_equal(a, b)
    for group in ("decoder", "encoder"):
        assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params[group]),
                                                            jax.tree_util.tree_leaves(start[group])))
    kernel = method.kernel_parameters(model, state)
    assert kernel.scale.shape == (sum(SIZES), sum(SIZES)) and np.all(np.isfinite(kernel.matrix()))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["nonfinite_updates"] == 0 and 0.0 < metrics[-1]["acceptance_rate"] <= 1.0

    loaded_model, loaded_method, loaded_params, _, config = load_run(tmp_path)
    assert loaded_model == model and loaded_method == method  # the frozen groups too
    assert config["phases"][0]["method"]["frozen_groups"] == ["prior"]
    for a, b in zip(jax.tree_util.tree_leaves(loaded_params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)
