"""HVAE: the flow, its exact bound on a linear Gaussian model, tightening with K, memory, and the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcmcvae as mv
from mcmcvae.cli import AMORTISED, main
from mcmcvae.methods import hvae

DIM, DATA_DIM, NOISE = 2, 4, 0.5


def _linear_gaussian(seed=0, loc_offset=1.0, scale_factor=2.0):
    """``mv.models.VAE`` with no hidden layers and a Gaussian likelihood: p(x | z) = N(W z + b, s^2 I).

    The encoder is set to a deliberately poor fixed q0: the exact posterior mean shifted by ``loc_offset`` and
    its standard deviations times ``scale_factor``.
    """
    rng = np.random.default_rng(seed)
    model = mv.models.VAE((DATA_DIM, 1, 1), DIM, hidden_sizes=(), likelihood="gaussian", likelihood_scale=NOISE)
    params = model.init(jax.random.key(seed))
    weight, bias = rng.normal(size=(DIM, DATA_DIM)), rng.normal(size=DATA_DIM)  # decoder: x = z @ weight + bias
    params["decoder"] = {"decoder/out": {"w": jnp.asarray(weight, jnp.float32), "b": jnp.asarray(bias, jnp.float32)}}
    covariance = np.linalg.inv(np.eye(DIM) + weight @ weight.T / NOISE**2)
    # posterior mean = (x - b) @ weight.T @ covariance / s^2, a linear encoder
    loc_w = weight.T @ covariance / NOISE**2
    std = np.sqrt(np.diag(covariance)) * scale_factor
    enc = params["encoder"]
    enc["encoder/loc"] = {"w": jnp.asarray(loc_w, jnp.float32),
                            "b": jnp.asarray(-bias @ loc_w + loc_offset, jnp.float32)}
    enc["encoder/raw_scale"] = {"w": jnp.zeros((DATA_DIM, DIM), jnp.float32),
                                  "b": jnp.asarray(np.log(np.expm1(std - 1e-4)), jnp.float32)}
    x = jnp.asarray((rng.normal(size=DIM) @ weight + bias + NOISE * rng.normal(size=DATA_DIM)), jnp.float32)
    return model, params, x.reshape(DATA_DIM, 1, 1), (weight, bias, covariance)


def _exact(x, truth):
    weight, bias, covariance = truth
    x = np.asarray(x, np.float64).reshape(-1)
    marginal_cov = weight.T @ weight + NOISE**2 * np.eye(DATA_DIM)
    r = x - bias
    log_px = -0.5 * (r @ np.linalg.solve(marginal_cov, r) + np.linalg.slogdet(2 * np.pi * marginal_cov)[1])
    mean = r @ weight.T @ covariance / NOISE**2
    return log_px, mean


def _exact_bound(model, params, flow_params, x, truth, num_steps, tempering):
    """log p(x) - KL(q_K(z, rho) || p(z | x) N(rho; 0, I)): the flow is affine here, so q_K is Gaussian."""
    log_px, post_mean = _exact(x, truth)
    loc, scale = model.encode(params, x[None])
    eps = hvae.step_sizes(flow_params, num_steps)
    initial_scale, factors = hvae.momentum_scales(flow_params, num_steps, tempering)

    def affine_map(v):
        z_k, rho_k, _, _ = hvae.flow(lambda z: model.log_joint(params, x, z), loc[0] + scale[0] * v[:DIM], v[DIM:],
                                     eps, initial_scale, factors)
        return jnp.concatenate([z_k, rho_k])

    shift = affine_map(jnp.zeros(2 * DIM))
    matrix = jax.jacfwd(affine_map)(jnp.zeros(2 * DIM))
    q_cov = matrix @ matrix.T
    p_cov = jax.scipy.linalg.block_diag(jnp.asarray(truth[2], jnp.float32), jnp.eye(DIM))
    p_mean = jnp.concatenate([jnp.asarray(post_mean, jnp.float32), jnp.zeros(DIM)])
    diff = shift - p_mean
    kl = 0.5 * (jnp.trace(jnp.linalg.solve(p_cov, q_cov)) + diff @ jnp.linalg.solve(p_cov, diff) - 2 * DIM
                + jnp.linalg.slogdet(p_cov)[1] - jnp.linalg.slogdet(q_cov)[1])
    return log_px - kl


def test_flow_is_the_leapfrog_with_tempering_and_has_unit_jacobian():
    def logdensity(z):
        return -0.25 * jnp.sum(z**4) - 0.5 * jnp.sum(z**2)

    flow_params = hvae.init_flow(3, 4, tempering="free", share_step_sizes=False, initial_step_size=0.2)
    flow_params["step_size_logits"] = flow_params["step_size_logits"] + jnp.linspace(-1, 1, 12).reshape(4, 3)
    z0, gamma0 = jnp.array([0.3, -1.0, 0.8]), jnp.array([1.0, 0.5, -0.2])

    @jax.jit
    def run(f):
        eps = hvae.step_sizes(f, 4)
        initial_scale, factors = hvae.momentum_scales(f, 4, "free")
        grad = jax.grad(logdensity)
        z, rho = z0, initial_scale * gamma0
        for k in range(4):  # the paper's Algorithm 1, by hand
            rho_half = rho + 0.5 * eps[k] * grad(z)
            z = z + eps[k] * rho_half
            rho = factors[k] * (rho_half + 0.5 * eps[k] * grad(z))
        jac = jax.jacfwd(lambda v: jnp.concatenate(
            hvae.flow(logdensity, v[:3], v[3:], eps, initial_scale, factors)[:2]))(jnp.concatenate([z0, gamma0]))
        return (z, rho), hvae.flow(logdensity, z0, gamma0, eps, initial_scale, factors), jnp.linalg.slogdet(jac)[1]

    (z, rho), (z_k, rho_k, log_joint_k, finite), log_det = run(flow_params)
    np.testing.assert_allclose(z_k, z, rtol=1e-5)
    np.testing.assert_allclose(rho_k, rho, rtol=1e-5)
    assert bool(finite) and np.isclose(log_joint_k, logdensity(z))
    assert abs(float(log_det)) < 1e-4  # (z0, gamma0) -> (z_K, rho_K) preserves volume


@pytest.mark.parametrize("tempering", ["fixed", "free", "none"])
def test_tempering_schedules(tempering):
    flow_params = hvae.init_flow(2, 5, tempering=tempering, initial_inverse_temperature=0.04)
    initial_scale, factors = hvae.momentum_scales(flow_params, 5, tempering)
    assert np.isclose(float(initial_scale * jnp.prod(factors)), 1.0, rtol=1e-5)  # beta_K = 1
    if tempering == "fixed":  # sqrt(1 / beta_k) = (1 - T0) k^2 / K^2 + T0 with T0 = 5
        temperatures = initial_scale * jnp.cumprod(jnp.concatenate([jnp.ones(1), factors]))
        np.testing.assert_allclose(temperatures, 5.0 - 4.0 * np.arange(6) ** 2 / 25, rtol=1e-5)
    elif tempering == "free":
        assert np.isclose(float(initial_scale) ** -2, 0.04, rtol=1e-4) and bool(jnp.all(factors < 1))
    else:
        assert float(initial_scale) == 1.0 and bool(jnp.all(factors == 1))
    assert bool(jnp.all((hvae.step_sizes(flow_params, 5) > 0) & (hvae.step_sizes(flow_params, 5) < 0.5)))


@pytest.mark.slow
def test_bound_estimators_match_the_exact_bound_below_log_likelihood():
    model, params, x, truth = _linear_gaussian()
    flow_params = hvae.init_flow(DIM, 3, tempering="fixed", initial_step_size=0.2, initial_inverse_temperature=0.5)
    exact = float(jax.jit(lambda f: _exact_bound(model, params, f, x, truth, 3, "fixed"))(flow_params))
    log_px, _ = _exact(x, truth)
    assert exact < log_px - 0.05  # q0 is poor, and three steps do not fix it entirely
    images = jnp.broadcast_to(x, (4000, *x.shape))

    @jax.jit
    def estimates(key):
        return [hvae.hvae_bound(key, model, params, flow_params, images, num_steps=3, tempering="fixed",
                                rao_blackwellised=rb) for rb in (True, False)]

    for values, finite in estimates(jax.random.key(1)):
        assert bool(jnp.all(finite))
        mean, se = float(values.mean()), float(values.std() / np.sqrt(values.size))
        assert abs(mean - exact) < 4 * se, (mean, exact, se)


@pytest.mark.slow
def test_optimised_bound_tightens_with_k_and_stays_below_log_likelihood():
    model, params, x, truth = _linear_gaussian(seed=1)
    log_px, _ = _exact(x, truth)
    images = jnp.broadcast_to(x, (20000, *x.shape))
    elbo = float(jax.jit(lambda k: jnp.mean(mv.methods.elbo.log_weights(k, model, params, images, 1)))(
        jax.random.key(0)))
    optimiser = optax.adam(0.05)
    bounds = [elbo]
    for num_steps in (1, 4):
        init = hvae.init_flow(DIM, num_steps, tempering="free", share_step_sizes=False, initial_step_size=0.05,
                              initial_inverse_temperature=0.5)

        def loss(f, k=num_steps):
            return -_exact_bound(model, params, f, x, truth, k, "free")

        @jax.jit
        def fit(f):
            def body(carry, _):
                f, opt = carry
                g = jax.grad(loss)(f)
                updates, opt = optimiser.update(g, opt, f)
                return (optax.apply_updates(f, updates), opt), None
            (f, _), _ = jax.lax.scan(body, (f, optimiser.init(f)), None, length=300)
            return -loss(f)

        bounds.append(float(fit(init)))
    assert bounds[0] < bounds[1] - 0.1 < bounds[2] - 0.2, bounds
    assert bounds[2] <= log_px + 1e-4


def _epochs(name):
    """One epoch of the method alone: as the method's own --epochs if the CLI treats it as amortised, else as
    --mcmc-epochs after zero VAE epochs."""
    return ["--epochs", "1"] if name in AMORTISED else ["--epochs", "0", "--mcmc-epochs", "1"]



@pytest.mark.slow
def test_cli_trains_hvae(tmp_path, mnist_available):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--method", "hvae", "--out", str(out), *_epochs("hvae"),
                 "--num-mcmc-steps", "2", "--train-size", "100", "--batch-size", "50", "--hidden-sizes", "",
                 "--latent-dim", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["hvae"] and np.isfinite(rows[-1]["loss"]) and rows[-1]["nonfinite_flows"] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["phases"][-1]["method"] == {**mv.methods.build("hvae", num_mcmc_steps=2).config()}
