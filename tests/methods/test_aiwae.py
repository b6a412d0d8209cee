"""AIWAE: AIS weights on a linear Gaussian model, the decoder's gradient, memory constant in T, and the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.cli import AMORTISED, main
from mcmcvae.methods import aiwae

DIM, DATA_DIM, NOISE = 2, 4, 0.5


def _linear_gaussian(seed=0, loc_offset=0.5, scale_factor=2.0):
    """``mv.models.VAE`` with no hidden layers and a Gaussian likelihood, p(x | z) = N(z W + b, s^2 I), and a
    poor fixed q0 (the posterior mean shifted by ``loc_offset``, its standard deviations times ``scale_factor``)."""
    rng = np.random.default_rng(seed)
    model = mv.models.VAE((DATA_DIM, 1, 1), DIM, hidden_sizes=(), likelihood="gaussian", likelihood_scale=NOISE)
    params = model.init(jax.random.key(seed))
    weight, bias = rng.normal(size=(DIM, DATA_DIM)), rng.normal(size=DATA_DIM)
    params["decoder"] = {"decoder/out": {"w": jnp.asarray(weight, jnp.float32), "b": jnp.asarray(bias, jnp.float32)}}
    covariance = np.linalg.inv(np.eye(DIM) + weight @ weight.T / NOISE**2)
    loc_w = weight.T @ covariance / NOISE**2
    std = np.sqrt(np.diag(covariance)) * scale_factor
    params["encoder"] = {
        "encoder/loc": {"w": jnp.asarray(loc_w, jnp.float32), "b": jnp.asarray(-bias @ loc_w + loc_offset, jnp.float32)},
        "encoder/raw_scale": {"w": jnp.zeros((DATA_DIM, DIM), jnp.float32),
                              "b": jnp.asarray(np.log(np.expm1(std - 1e-4)), jnp.float32)}}
    x = jnp.asarray(rng.normal(size=DIM) @ weight + bias + NOISE * rng.normal(size=DATA_DIM), jnp.float32)
    return model, params, x.reshape(DATA_DIM, 1, 1)


def _exact_log_marginal(decoder, x):
    """log N(x; b, W^T W + s^2 I), differentiable in the decoder's parameters."""
    weight, bias = decoder["decoder/out"]["w"], decoder["decoder/out"]["b"]
    covariance = weight.T @ weight + NOISE**2 * jnp.eye(DATA_DIM)
    return jax.scipy.stats.multivariate_normal.logpdf(x.reshape(-1), bias, covariance)


def _ais(model, params, x, num_temperatures, num_chains, step_size=0.15, seed=0):
    images = jnp.broadcast_to(x, (num_chains, *x.shape))
    loc, scale = model.encode(params, images)
    z0 = loc + scale * jax.random.normal(jax.random.key(seed), loc.shape)
    log_h = jnp.full((num_temperatures - 1,), np.log(step_size), jnp.float32)
    return aiwae.annealed_log_weights(jax.random.key(seed + 1), lambda z, xx: model.log_joint(params, xx, z), images,
                                      z0, loc, scale, log_h, num_integration_steps=5)


@pytest.mark.slow
def test_ais_weights_reach_the_exact_log_likelihood_as_t_grows():
    model, params, x = _linear_gaussian()
    exact = float(_exact_log_marginal(params["decoder"], x))
    run = jax.jit(_ais, static_argnums=(0, 3, 4))
    gaps = []
    for num_temperatures in (2, 30):
        log_w, _, acceptance = run(model, params, x, num_temperatures, 2000)
        log_w = np.asarray(log_w, np.float64)
        mean_log_w, se_log_w = log_w.mean(), log_w.std() / np.sqrt(log_w.size)
        assert mean_log_w < exact + 4 * se_log_w  # E[log w] is a lower bound of log p(x) ...
        gaps.append(exact - mean_log_w)
        if num_temperatures == 30:  # ... while E[w] = p(x): log mean w within its delta-method error
            normalised = np.exp(log_w - log_w.max()) / np.exp(log_w - log_w.max()).sum()
            se = np.sqrt(max(log_w.size * np.sum(normalised**2) - 1.0, 0.0) / log_w.size)
            estimate = np.log(np.mean(np.exp(log_w - log_w.max()))) + log_w.max()
            assert abs(estimate - exact) < 4 * se + 0.01, (estimate, exact, se)
            assert 0.3 < float(jnp.mean(acceptance)) <= 1.0
    assert gaps[0] > gaps[1] > 0.0, gaps  # ... and the gap closes as T grows


@pytest.mark.slow
def test_self_normalised_decoder_gradient_matches_the_exact_score():
    model, params, x = _linear_gaussian(seed=1)
    exact = jax.grad(_exact_log_marginal)(params["decoder"], x)
    num_chains = 4000

    @jax.jit
    def per_chain():
        log_w, z, _ = _ais(model, params, x, 10, num_chains)
        grads = jax.vmap(jax.grad(lambda dec, zz: model.log_joint({**params, "decoder": dec}, x, zz)),
                         in_axes=(None, 0))(params["decoder"], z)
        return jax.nn.softmax(log_w), grads

    weights, grads = per_chain()
    for g, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(exact)):
        w = np.asarray(weights, np.float64).reshape(-1, *([1] * (g.ndim - 1)))
        estimate = np.sum(w * np.asarray(g, np.float64), axis=0)
        se = np.sqrt(np.sum(w**2 * (np.asarray(g, np.float64) - estimate) ** 2, axis=0))  # delta method
        assert np.all(np.abs(estimate - np.asarray(want)) < 4 * se + 1e-3), (estimate, want, se)


def _compiled_step(num_temperatures, num_samples=3):
    model, params, x = _linear_gaussian()
    method = mv.methods.build("aiwae", num_samples=num_samples, num_temperatures=num_temperatures)
    state = method.init(jax.random.key(0), model, params)
    images = jnp.broadcast_to(x, (16, *x.shape))
    compiled = jax.jit(lambda k, p, s: method.step(k, model, p, s, images)).lower(
        jax.random.key(1), params, state).compile()
    return compiled, params, state


def test_one_step_and_memory_constant_in_t():
    small, _, _ = _compiled_step(3)
    large, params, state = _compiled_step(30)
    small_bytes = small.memory_analysis().temp_size_in_bytes
    large_bytes = large.memory_analysis().temp_size_in_bytes
    assert large_bytes <= small_bytes * 1.05 + 1024, (small_bytes, large_bytes)  # no backward pass over the chain

    new_params, new_state, metrics = large(jax.random.key(1), params, state)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves((new_params, metrics)))
    assert new_state["log_step_size"].shape == (29,)
    # each temperature's step size moved towards acceptance 0.6: up where the chains accepted more often
    assert float(metrics["acceptance_rate"]) > 0.6 and bool(jnp.all(new_state["log_step_size"] > state["log_step_size"]))
    assert metrics["ais_bound"] > metrics["elbo"] - 1.0


def _epochs(name):
    """One epoch of the method alone: as the method's own --epochs if the CLI treats it as amortised, else as
    --mcmc-epochs after zero VAE epochs."""
    return ["--epochs", "1"] if name in AMORTISED else ["--epochs", "0", "--mcmc-epochs", "1"]



@pytest.mark.slow
def test_cli_trains_aiwae(tmp_path, mnist_available):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--method", "aiwae", "--out", str(out), *_epochs("aiwae"),
                 "--num-samples", "2", "--num-leapfrog-steps", "1", "--train-size", "100", "--batch-size", "50",
                 "--hidden-sizes", "", "--latent-dim", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["aiwae"] and np.isfinite(rows[-1]["ais_bound"])
