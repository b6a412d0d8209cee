"""Algorithm 1: what each parameter group learns from, frozen kernels in evaluation, resume, names."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcmcvae as mv
from mcmcvae.methods.base import make_optimizer
from mcmcvae.train import Phase, Trainer

NAMES = ("mala", "hmc", "dsmala", "dshmc", "gradmala", "gradhmc")


def _setup(name, **options):
    model = mv.models.VAE((6, 6, 1), 3, hidden_sizes=(16,), prior="mog", num_components=2)
    params = model.init(jax.random.key(0))
    images = (jax.random.uniform(jax.random.key(1), (8, 6, 6, 1)) < 0.4).astype(jnp.float32)
    if name.endswith("hmc"):
        options = {"num_integration_steps": 2, **options}
    method = mv.methods.build(name, num_mcmc_steps=3, **options)
    return model, params, images, method, method.init(jax.random.key(2), model, params)


@pytest.mark.parametrize("name", NAMES)
def test_names_and_one_step(name):
    model, params, images, method, state = _setup(name)
    assert method.name == name
    new_params, new_state, metrics = jax.jit(lambda k, p, s: method.step(k, model, p, s, images))(
        jax.random.key(3), params, state)
    assert 0.0 <= float(metrics["acceptance_rate"]) <= 1.0
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves((new_params, metrics)))
    assert int(metrics["nonfinite_updates"]) == 0


@pytest.mark.parametrize("name", ["gradmala", "dshmc"])
def test_theta_learns_at_the_chain_end_and_the_encoder_by_the_elbo(name):
    model, params, images, method, state = _setup(name)
    key = jax.random.key(4)
    new_params, _, _ = jax.jit(lambda k, p, s: method.step(k, model, p, s, images))(key, params, state)

    # Rebuild the step by hand: z0 from q0, K kernel steps, then separate Adam steps.
    k_eps, k_chain = jax.random.split(key)
    z0, _ = model.sample_q0(k_eps, params, images)
    z_k = jax.jit(lambda k, p, z, s: method._sample_and_adapt(k, model, p, images, z, s)[0])(
        k_chain, params, z0, state["kernel"])
    theta = {k: params[k] for k in ("decoder", "prior", "likelihood")}
    theta_grads = jax.grad(lambda t: -jnp.mean(model.log_joint_batch({**params, **t}, images, z_k)))(theta)
    updates, _ = make_optimizer(method.learning_rate).update(theta_grads, state["theta_opt"], theta)
    expected_theta = optax.apply_updates(theta, updates)

    def negative_elbo(encoder_params):
        p = {**params, "encoder": encoder_params}
        z, log_q = model.sample_q0(k_eps, p, images)
        return -jnp.mean(model.log_joint_batch(p, images, z) - log_q)

    enc_grads = jax.grad(negative_elbo)(params["encoder"])
    updates, _ = make_optimizer(method.learning_rate).update(enc_grads, state["encoder_opt"], params["encoder"])
    expected_encoder = optax.apply_updates(params["encoder"], updates)

    for got, want in [(new_params["decoder"], expected_theta["decoder"]), (new_params["prior"], expected_theta["prior"]),
                      (new_params["encoder"], expected_encoder)]:
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # and the chain did move: the decoder's gradient at z_K differs from its gradient at z0
    at_z0 = jax.grad(lambda t: -jnp.mean(model.log_joint_batch({**params, **t}, images, z0)))(theta)
    assert not np.allclose(jax.tree_util.tree_leaves(at_z0)[0], jax.tree_util.tree_leaves(theta_grads)[0])


def test_speed_measure_moves_the_kernel_and_evaluation_does_not():
    model, params, images, method, state = _setup("gradmala", preconditioner="lower_triangular")
    _, new_state, metrics = jax.jit(lambda k, p, s: method.step(k, model, p, s, images))(
        jax.random.key(5), params, state)
    before = method.kernel_parameters(model, state)
    after = method.kernel_parameters(model, new_state)
    assert after.scale.shape == (3, 3)
    assert not np.allclose(before.log_step_size, after.log_step_size)
    assert "beta" in metrics and "log_abs_det" in metrics

    snapshot = jax.tree_util.tree_map(np.array, new_state)
    proposal = jax.jit(lambda k, p, s: method.proposal(k, model, p, s, images))
    loc1, scale1 = proposal(jax.random.key(6), params, new_state)
    loc2, _ = proposal(jax.random.key(6), params, new_state)
    np.testing.assert_array_equal(loc1, loc2)  # a pure function of the key: nothing adapted in between
    for a, b in zip(jax.tree_util.tree_leaves(snapshot), jax.tree_util.tree_leaves(new_state)):
        np.testing.assert_array_equal(a, np.asarray(b))
    np.testing.assert_allclose(scale1, model.encode(params, images)[1])


def test_dual_averaging_restart_option_starts_each_batch_from_h_equal_one():
    model, params, images, method, state = _setup("dsmala", restart_dual_averaging=True)
    step = jax.jit(lambda k, p, s: method.step(k, model, p, s, images))
    _, s1, _ = step(jax.random.key(7), params, state)
    _, s2, _ = step(jax.random.key(7), params, s1)
    # with a restart, the second batch's adaptation ignores the first's
    da1, da2 = s1["kernel"].dual_averaging, s2["kernel"].dual_averaging
    np.testing.assert_allclose(da1.log_step_size, da2.log_step_size, rtol=1e-6)
    carrying = _setup("dsmala")[3]
    _, carried, _ = jax.jit(lambda k, p, s: carrying.step(k, model, p, s, images))(jax.random.key(7), params, s1)
    assert not np.allclose(carried["kernel"].dual_averaging.log_step_size, da1.log_step_size)


def test_dual_averaged_step_size_factor_option_of_gradhmc():
    model, params, images, method, state = _setup("gradhmc", dual_averaged_step_size=True)
    assert method.name == "gradhmc" and method.config()["dual_averaged_step_size"] is True
    assert isinstance(method.tuner, mv.adaptation.DualAveragedStepSize)
    step = jax.jit(lambda k, p, s: method.step(k, model, p, s, images))
    _, s1, metrics = step(jax.random.key(3), params, state)
    _, s2, _ = step(jax.random.key(4), params, s1)
    # one dual-averaging step per kernel step (BlackJAX counts from 1)
    assert int(s2["kernel"].factor.step) == int(state["kernel"].factor.step) + 2 * 3
    tuned = method.kernel_parameters(model, s2)
    np.testing.assert_allclose(
        float(tuned.log_step_size),
        float(s2["kernel"].inner.params.log_step_size + s2["kernel"].factor.log_step_size_avg), rtol=1e-6)
    assert float(metrics["step_size_factor"]) > 0 and 0.0 <= float(metrics["acceptance_rate"]) <= 1.0
    np.testing.assert_allclose(float(metrics["step_size"]), float(method.kernel_parameters(model, s1).step_size),
                               rtol=1e-6)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="preconditioner"):
        mv.methods.build("gradmala", preconditioner="full")
    with pytest.raises(TypeError, match="gradhmc takes no option 'step_size_adaptation'"):
        mv.methods.build("gradhmc", step_size_adaptation="dual_averaging")
    with pytest.raises(ValueError, match="num_mcmc_steps"):
        mv.methods.build("gradhmc", num_mcmc_steps=0)
    with pytest.raises(ValueError, match="unknown method 'gradmla' \\(did you mean 'gradmala'\\?\\); valid methods"):
        mv.methods.build("gradmla")


def test_misspelt_and_unused_options_raise_with_the_closest_name():
    with pytest.raises(TypeError, match="gradhmc takes no option 'preconditoner'; did you mean 'preconditioner'\\?"):
        mv.methods.build("gradhmc", preconditoner="lower_triangular")
    with pytest.raises(TypeError, match="'num_mcmc_stpes'; did you mean 'num_mcmc_steps'"):
        mv.methods.build("gradhmc", num_mcmc_stpes=3)
    # dual averaging keeps C = I, so dshmc takes no preconditioner (and records none)
    with pytest.raises(TypeError, match="dshmc takes no option 'preconditioner'"):
        mv.methods.build("dshmc", preconditioner="lower_triangular")
    assert "preconditioner" not in mv.methods.build("dshmc").config()
    with pytest.raises(TypeError, match="mala takes no option 'num_integration_steps'"):
        mv.methods.build("mala", num_integration_steps=3)
    with pytest.raises(TypeError, match="vae takes no option 'num_mcmc_steps'"):
        mv.methods.build("vae", num_mcmc_steps=3)
    assert set(mv.methods.options("gradhmc")) >= {"preconditioner", "num_integration_steps", "dual_averaged_step_size"}


@pytest.mark.parametrize("name", mv.methods.METHODS)
def test_config_rebuilds_the_same_method(name):
    chosen = {"learning_rate": 3e-3}
    if name.startswith("grad"):
        chosen.update(preconditioner="lower_triangular", dual_averaged_step_size=True)
    method = mv.methods.build(name, **chosen)
    config = method.config()
    assert config["name"] == name and config["learning_rate"] == 3e-3
    rebuilt = mv.methods.from_config(config)
    assert rebuilt.config() == config and type(rebuilt) is type(method) and rebuilt == method
    if isinstance(method, mv.methods.MCMC):
        assert type(rebuilt.tuner) is type(method.tuner) and rebuilt.kernel is method.kernel


def test_config_rebuilds_frozen_groups_and_old_configs():
    from mcmcvae.hierarchical import FreezeParams

    frozen = FreezeParams(mv.methods.build("gradmala", num_mcmc_steps=5), ("prior", "likelihood"))
    rebuilt = mv.methods.from_config(frozen.config())
    assert isinstance(rebuilt, FreezeParams) and rebuilt.groups == ("prior", "likelihood")
    assert rebuilt.method.num_mcmc_steps == 5
    # a config written before methods took tuners
    old = {"name": "gradhmc", "algorithm": "hmc", "tuning": "speed_measure", "num_mcmc_steps": 4,
           "num_integration_steps": 3, "preconditioner": "lower_triangular", "learning_rate": 0.001,
           "encoder_learning_rate": None, "kernel_learning_rate": 0.01, "step_size": 0.05,
           "target_acceptance_rate": None, "restart_dual_averaging": False, "stop_gradient_proposal_grad": False,
           "step_size_adaptation": "dual_averaging", "num_proposal_chains": 16}
    method = mv.methods.from_config(old)
    assert isinstance(method.tuner, mv.adaptation.DualAveragedStepSize) and method.num_mcmc_steps == 4
    assert method.tuner.inner.preconditioner == "lower_triangular"
    assert mv.methods.from_config({"name": "iwae", "learning_rate": 1e-3, "num_samples": 7,
                                   "importance_weighted": True}).num_samples == 7
    with pytest.raises(ValueError, match="cannot rebuild method 'mcmc'"):
        mv.methods.from_config(mv.methods.MCMC(mv.adaptation.fixed(mv.kernels.mala)).config())


def _binary(n=200, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((3, 6, 6, 1)) < 0.5
    return (protos[rng.integers(0, 3, n)] ^ (rng.random((n, 6, 6, 1)) < 0.05)).astype(np.float32)


@pytest.mark.parametrize("dual_averaged_step_size", [False, True])
def test_resume_in_the_middle_of_the_mcmc_phase_continues_exactly(tmp_path, dual_averaged_step_size):
    model = mv.models.VAE((6, 6, 1), 2, hidden_sizes=(16,))
    images = _binary()

    def phases(mcmc_epochs):
        return [Phase(mv.methods.build("vae"), 1),
                Phase(mv.methods.build("gradhmc", num_mcmc_steps=2, preconditioner="lower_triangular",
                                       dual_averaged_step_size=dual_averaged_step_size), mcmc_epochs)]

    straight, straight_state = Trainer(model, phases(3), batch_size=20, seed=1, progress=False).run(images)
    Trainer(model, phases(1), batch_size=20, seed=1, out_dir=tmp_path, progress=False).run(images)
    resumed, resumed_state = Trainer(model, phases(3), batch_size=20, seed=1, out_dir=tmp_path,
                                     progress=False).run(images, resume=True)
    for a, b in zip(jax.tree_util.tree_leaves((straight, straight_state)),
                    jax.tree_util.tree_leaves((resumed, resumed_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gradmala", "gradhmc"])
def test_short_mcmc_training_improves_on_its_pretrained_vae(name):
    """On an MNIST subset, a short MCMC phase raises the held-out log-likelihood of its VAE checkpoint.

    The comparison is paired (same held-out images, same importance-sampling keys) and must exceed four standard
    errors of the per-image differences.
    """
    from mcmcvae.evaluate.runs import test_log_likelihood

    try:
        data = mv.data.binarize_static(mv.data.load("mnist", "train").images[:1600])
    except mv.data.DataNotFoundError:
        pytest.skip("MNIST is not in the data directory: run `mcmcvae data fetch mnist`")
    train, held_out = data[:1500], data[1500:]
    model = mv.models.VAE((28, 28, 1), 5, hidden_sizes=(64,))
    vae = mv.methods.build("vae", learning_rate=3e-3)
    pretrained, vae_state = Trainer(model, [Phase(vae, 3)], batch_size=50, seed=0, progress=False).run(train)
    method = mv.methods.build(name, learning_rate=3e-3, num_mcmc_steps=4)
    trained, state = Trainer(model, [Phase(method, 1)], batch_size=50, seed=0, progress=False).run(
        train, params=pretrained)
    key = jax.random.key(1)
    before = test_log_likelihood(key, model, vae, pretrained, vae_state, held_out, num_samples=100)
    after = test_log_likelihood(key, model, method, trained, state, held_out, num_samples=100)
    diff = after["per_image"] - before["per_image"]
    assert diff.mean() > 4 * diff.std(ddof=1) / np.sqrt(diff.size)


def _step_recomputing_the_start(method, rng_key, model, params, state, images):
    """``MCMC.step`` as written before the chains reused the ELBO pass's gradient at z0: the encoder's gradient
    by ``jax.value_and_grad`` of the negative ELBO, and the chains' start evaluated afresh by the kernel's init."""
    from mcmcvae.methods.base import apply_gradients, nonfinite_count

    k_eps, k_chain = jax.random.split(rng_key)

    def negative_elbo(encoder_params):
        p = {**params, "encoder": encoder_params}
        z0, log_q = model.sample_q0(k_eps, p, images)
        return -jnp.mean(model.log_joint_batch(p, images, z0) - log_q), z0

    (negative_value, z0), encoder_grads = jax.value_and_grad(negative_elbo, has_aux=True)(params["encoder"])
    z_k, kernel_state, diagnostics = method._sample_and_adapt(
        k_chain, model, params, images, jax.lax.stop_gradient(z0), state["kernel"])
    theta = {k: params[k] for k in ("decoder", "prior", "likelihood")}
    theta_loss, theta_grads = jax.value_and_grad(
        lambda t: -jnp.mean(model.log_joint_batch({**params, **t}, images, z_k)))(theta)
    encoder_params, encoder_opt = apply_gradients(make_optimizer(method.learning_rate), encoder_grads,
                                                  state["encoder_opt"], params["encoder"])
    theta, theta_opt = apply_gradients(make_optimizer(method.learning_rate), theta_grads, state["theta_opt"], theta)
    metrics = {"loss": negative_value, "elbo": -negative_value, "log_joint_at_chain_end": -theta_loss,
               **diagnostics, "nonfinite_updates": nonfinite_count(encoder_opt) + nonfinite_count(theta_opt)}
    return ({**params, **theta, "encoder": encoder_params},
            {"encoder_opt": encoder_opt, "theta_opt": theta_opt, "kernel": kernel_state}, metrics)


@pytest.mark.parametrize("prior", ["mog", "vamp"])  # the VampPrior's log p(x, z) depends on the encoder too
@pytest.mark.parametrize("name", ["gradmala", "gradhmc"])
def test_the_chains_start_from_the_elbo_pass_with_unchanged_results(name, prior):
    model = mv.models.VAE((6, 6, 1), 3, hidden_sizes=(16,), prior=prior, num_components=2)
    params = model.init(jax.random.key(0))
    images = (jax.random.uniform(jax.random.key(1), (8, 6, 6, 1)) < 0.4).astype(jnp.float32)
    method = mv.methods.build(name, num_mcmc_steps=3, **({"num_integration_steps": 2} if name == "gradhmc" else {}))
    state = method.init(jax.random.key(2), model, params)
    key = jax.random.key(3)
    got = jax.jit(lambda k, p, s: method.step(k, model, p, s, images))(key, params, state)
    expected = jax.jit(lambda k, p, s: _step_recomputing_the_start(method, k, model, p, s, images))(
        key, params, state)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)  # float32 rounding of reordered sums
    # and the start really is the ELBO pass's: log p(x, z0) and its gradient are evaluated once, not twice
    jaxpr = str(jax.make_jaxpr(lambda k, p, s: method.step(k, model, p, s, images))(key, params, state))
    reference = str(jax.make_jaxpr(lambda k, p, s: _step_recomputing_the_start(method, k, model, p, s, images))(
        key, params, state))
    assert jaxpr.count("dot_general") < reference.count("dot_general")
