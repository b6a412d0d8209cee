"""VCD and Hoffman: the VCD gradient at the exact posterior, control variates, the shared decoder update,
frozen proposals, and the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.cli import main
from mcmcvae.methods import vcd

DIM, DATA_DIM, NOISE = 2, 4, 0.5


def _linear_gaussian(seed=0, loc_offset=0.0, scale_factor=1.0):
    """``mv.models.VAE`` with no hidden layers and a Gaussian likelihood, p(x | z) = N(z W + b, s^2 I), with
    orthogonal rows of W so that the posterior covariance is diagonal; the encoder is the exact posterior,
    shifted by ``loc_offset`` and with its standard deviations times ``scale_factor``."""
    rng = np.random.default_rng(seed)
    model = mv.models.VAE((DATA_DIM, 1, 1), DIM, hidden_sizes=(), likelihood="gaussian", likelihood_scale=NOISE)
    params = model.init(jax.random.key(seed))
    basis, _ = np.linalg.qr(rng.normal(size=(DATA_DIM, DIM)))
    weight, bias = (basis * np.array([0.8, 1.6])).T, rng.normal(size=DATA_DIM)
    params["decoder"] = {"decoder/out": {"w": jnp.asarray(weight, jnp.float32), "b": jnp.asarray(bias, jnp.float32)}}
    covariance = np.linalg.inv(np.eye(DIM) + weight @ weight.T / NOISE**2)
    assert np.allclose(covariance, np.diag(np.diag(covariance)))
    loc_w = weight.T @ covariance / NOISE**2
    std = np.sqrt(np.diag(covariance)) * scale_factor
    params["encoder"] = {
        "encoder/loc": {"w": jnp.asarray(loc_w, jnp.float32), "b": jnp.asarray(-bias @ loc_w + loc_offset, jnp.float32)},
        "encoder/raw_scale": {"w": jnp.zeros((DATA_DIM, DIM), jnp.float32),
                              "b": jnp.asarray(np.log(np.expm1(std - 1e-4)), jnp.float32)}}
    x = jnp.asarray(rng.normal(size=DIM) @ weight + bias + NOISE * rng.normal(size=DATA_DIM), jnp.float32)
    return model, params, x.reshape(DATA_DIM, 1, 1)


def _vcd_gradients(model, params, x, num_samples=3000, baseline=-5.0):
    """Per-sample encoder gradients of the VCD surrogate (one image, t = 8 HMC steps of L = 5) and the VCD."""
    method = mv.methods.build("vcd")
    log_h = jnp.log(0.3)

    def one(key):
        k_eps, k_chain = jax.random.split(key)
        images = x[None]
        noise = jax.random.normal(k_eps, (1, DIM))
        loc, scale = model.encode(params, images)
        z_t, _, acceptance, _ = vcd.run_hmc(k_chain, lambda z, xx: model.log_joint(params, xx, z), images,
                                            loc + scale * noise, log_h, num_steps=method.num_mcmc_steps,
                                            num_integration_steps=method.num_integration_steps)
        grads, (value, _, _) = jax.grad(vcd.vcd_encoder_loss, has_aux=True)(
            params["encoder"], model, params, images, noise, z_t, jnp.full((1,), baseline))
        return grads, value, jnp.mean(acceptance)

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), num_samples))


@pytest.mark.slow
def test_vcd_gradient_vanishes_at_the_exact_posterior_only():
    results = {}
    for label, scale_factor in (("exact", 1.0), ("too wide", 1.5)):
        model, params, x = _linear_gaussian(scale_factor=scale_factor)
        grads, value, acceptance = _vcd_gradients(model, params, x)
        assert float(jnp.mean(acceptance)) > 0.5
        z_scores = []
        for g in jax.tree_util.tree_leaves(grads):
            g = np.asarray(g, np.float64).reshape(g.shape[0], -1)
            se = g.std(0) / np.sqrt(g.shape[0])
            z_scores.append(np.abs(g.mean(0)) / np.where(se > 0, se, 1.0))
        results[label] = (np.concatenate(z_scores), float(jnp.mean(value)), float(jnp.std(value) / np.sqrt(value.size)))
    z_exact, vcd_exact, se_exact = results["exact"]
    z_wide, vcd_wide, se_wide = results["too wide"]
    assert np.all(z_exact < 4.5), z_exact  # zero in expectation, within Monte Carlo error, for every parameter
    assert np.max(z_wide) > 8.0, z_wide  # and clearly not zero when q0 is wrong
    assert abs(vcd_exact) < 4 * se_exact + 1e-3 and vcd_wide > 4 * se_wide  # the divergence itself: 0, then > 0


def _symmetric_kl_gradient(model, params, exact, images):
    """The encoder gradient of KL(q0 || p) + KL(p || q0), p the exact posterior (diagonal Gaussians)."""
    def symmetric_kl(encoder):
        loc, scale = model.encode({**params, "encoder": encoder}, images)
        p_loc, p_scale = model.encode(exact, images)

        def kl(m1, s1, m2, s2):
            return jnp.sum(jnp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5)

        return kl(loc, scale, p_loc, p_scale) + kl(p_loc, p_scale, loc, scale)

    return jax.grad(symmetric_kl)(params["encoder"])


@pytest.mark.slow
def test_vcd_gradient_terms_have_the_right_signs():
    """Each term of eq. 12 checked against a gradient known in closed form, with q0 off the posterior: with no
    MCMC (z_t = z0) the divergence is 0 for every q0, so the expected gradient is 0 (this fixes the sign of the
    score-function term against the ELBO's); with z_t an exact posterior draw independent of z0 it is the gradient
    of KL(q0 || p) + KL(p || q0) (this fixes the sign of the -log q0(z_t) term). Tolerances from the Monte Carlo
    error of 20000 draws; each check is also shown to reject the other's answer."""
    model, params, x = _linear_gaussian(loc_offset=0.7, scale_factor=1.5)
    _, exact, _ = _linear_gaussian()
    images = x[None]
    p_loc, p_scale = model.encode(exact, images)
    num_samples = 20_000

    def one(key, exact_z_t):
        k_noise, k_t = jax.random.split(key)
        noise = jax.random.normal(k_noise, (1, DIM))
        loc, scale = model.encode(params, images)
        z_t = jnp.where(exact_z_t, p_loc + p_scale * jax.random.normal(k_t, (1, DIM)), loc + scale * noise)
        grads, _ = jax.grad(vcd.vcd_encoder_loss, has_aux=True)(params["encoder"], model, params, images, noise,
                                                                 jax.lax.stop_gradient(z_t), jnp.zeros((1,)))
        return grads

    analytic = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(
        _symmetric_kl_gradient(model, params, exact, images))])
    for exact_z_t, expected, other in ((False, np.zeros_like(analytic), analytic),
                                       (True, analytic, np.zeros_like(analytic))):
        keys = jax.random.split(jax.random.key(int(exact_z_t)), num_samples)
        grads = jax.jit(jax.vmap(lambda k: one(k, exact_z_t)))(keys)
        g = np.concatenate([np.asarray(leaf, np.float64).reshape(num_samples, -1)
                            for leaf in jax.tree_util.tree_leaves(grads)], axis=1)
        mean, se = g.mean(0), g.std(0) / np.sqrt(num_samples)
        keep = se > 0  # parameters the gradient never reaches (the scale's weights at a zero input) are exact
        assert np.allclose(mean[~keep], expected[~keep], atol=1e-5)
        z_expected = np.abs(mean - expected)[keep] / se[keep]
        z_other = np.abs(mean - other)[keep] / se[keep]
        assert np.all(z_expected < 4.5), (exact_z_t, z_expected)  # 20 parameters: a false alarm rate near 1e-4
        assert np.max(z_other) > 10.0, (exact_z_t, z_other)  # and the check can tell the two answers apart


def test_control_variate_is_global_then_per_data_point():
    method = mv.methods.build("vcd", num_data=6, control_variate_wait=2)
    state = {"global": jnp.zeros(()), "local": jnp.zeros(6), "iteration": jnp.zeros((), jnp.int32)}
    indices = jnp.array([1, 4])
    for step, f in enumerate([jnp.array([-10.0, -20.0]), jnp.array([-30.0, -10.0])]):
        np.testing.assert_allclose(method._baseline(state, 2, indices), state["global"])  # global stage
        expected = 0.9 * state["global"] + 0.1 * f.mean()
        state = method._update_control_variate(state, f, indices)
        np.testing.assert_allclose(state["global"], expected, rtol=1e-6)
        np.testing.assert_allclose(state["local"], expected, rtol=1e-6)  # every point follows the global value
    switched = state["local"]
    np.testing.assert_allclose(method._baseline(state, 2, indices), switched[indices])
    state = method._update_control_variate(state, jnp.array([-1.0, -2.0]), indices)
    np.testing.assert_allclose(state["local"][indices], 0.9 * switched[indices] + 0.1 * jnp.array([-1.0, -2.0]),
                               rtol=1e-6)
    np.testing.assert_allclose(np.delete(np.asarray(state["local"]), [1, 4]), np.delete(np.asarray(switched), [1, 4]))
    # without indices (a caller that does not know them) the control variate stays global
    assert method._baseline(state, 2, None).shape == (2,)
    np.testing.assert_allclose(method._baseline(state, 2, None), state["global"])


def test_vcd_and_hoffman_share_the_decoder_update_and_differ_in_the_encoder():
    model, params, x = _linear_gaussian(loc_offset=0.7, scale_factor=2.0)
    images = jnp.broadcast_to(x, (8, *x.shape))
    out = {}
    for name in ("vcd", "hoffman"):
        method = mv.methods.build(name)
        state = method.init(jax.random.key(0), model, params)
        out[name] = jax.jit(lambda k, p, s, m=method: m.step(k, model, p, s, images))(jax.random.key(1), params, state)
        assert method.name == name
    (p_vcd, s_vcd, m_vcd), (p_hof, s_hof, m_hof) = out["vcd"], out["hoffman"]
    for a, b in zip(jax.tree_util.tree_leaves(p_vcd["decoder"]), jax.tree_util.tree_leaves(p_hof["decoder"])):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # same key, same chains, same theta gradient
    # (Adam's first step is +-lr whatever the gradient's size, so compare its moment estimates, i.e. gradients)
    moments = zip(jax.tree_util.tree_leaves(s_vcd["encoder_opt"]), jax.tree_util.tree_leaves(s_hof["encoder_opt"]))
    assert any(a.dtype == jnp.float32 and not np.allclose(a, b) for a, b in moments)
    assert float(m_vcd["vcd"]) > 0.0 and int(s_vcd["control_variate"]["iteration"]) == 1
    # the step size moved towards acceptance 0.9: up from 0.5 / d = 0.25 if the chains accepted more often
    moved_up = float(s_hof["log_step_size"]) > np.log(0.25)
    assert moved_up == (float(m_hof["acceptance_rate"]) > 0.9)


def test_proposal_is_frozen_and_moves_towards_the_posterior():
    model, params, x = _linear_gaussian(loc_offset=0.7, scale_factor=2.0)
    method = mv.methods.build("hoffman", num_proposal_chains=64)
    state = method.init(jax.random.key(0), model, params)
    images = x[None]
    proposal = jax.jit(lambda k, s: method.proposal(k, model, params, s, images))
    loc, scale = proposal(jax.random.key(2), state)
    loc_again, _ = proposal(jax.random.key(2), state)
    np.testing.assert_array_equal(loc, loc_again)
    q0_loc, q0_scale = model.encode(params, images)
    post_loc, _ = model.encode(_linear_gaussian()[1], images)
    np.testing.assert_allclose(scale, q0_scale, rtol=1e-6)
    assert float(jnp.linalg.norm(loc - post_loc)) < 0.3 * float(jnp.linalg.norm(q0_loc - post_loc))



def test_trainer_keeps_one_control_variate_per_training_image():
    """Under the shared trainer vcd reaches its per-point stage: with the wait at 0, one epoch over 20 images in
    batches of 10 moves every image's own control variate away from 0 by (1 - 0.9) f(z_t)."""
    from mcmcvae.train import Phase, Trainer

    model = mv.models.VAE((DATA_DIM, 1, 1), DIM, hidden_sizes=(), likelihood="gaussian", likelihood_scale=NOISE)
    images = np.random.default_rng(3).random((20, DATA_DIM, 1, 1)).astype(np.float32)
    method = mv.methods.build("vcd", num_data=20, control_variate_wait=0, num_mcmc_steps=2, num_integration_steps=2)
    _, state = Trainer(model, [Phase(method, 1)], batch_size=10, seed=0, progress=False).run(images)
    local = np.asarray(state["control_variate"]["local"])
    assert local.shape == (20,) and np.all(local != 0.0) and int(state["control_variate"]["iteration"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vcd", "hoffman"])
def test_cli_trains_after_vae_epochs(name, tmp_path, mnist_available):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--method", name, "--out", str(out), "--epochs", "0",
                 "--mcmc-epochs", "1", "--num-mcmc-steps", "2", "--num-leapfrog-steps", "2", "--train-size", "100",
                 "--batch-size", "50", "--hidden-sizes", "", "--latent-dim", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == [name] and 0.0 < rows[-1]["acceptance_rate"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["phases"][-1]["method"]["num_mcmc_steps"] == 2
    if name == "vcd":  # one control variate per training image
        assert config["phases"][-1]["method"]["num_data"] == 100
