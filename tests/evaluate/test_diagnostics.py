"""Active units, the IWAE bound L_k, effective sample sizes and gaps, against exact linear Gaussian values.

The model is the linear Gaussian of ``conftest.py`` with an amortised Gaussian ``q(z | x) = N(A x + c,
diag(s^2))`` in the interface of :class:`mcmcvae.models.VAE` (``encode``, ``sample_q0``, ``log_joint_batch``).
With ``A``, ``c`` and ``s`` set from the exact posterior, everything the diagnostics estimate has a closed form:
``log p(x)``, the ELBO ``log p(x) - KL(q || p(z | x))``, and the moments ``E_q[(w / p(x))^n]`` that fix
``E[L_k]`` and ``ESS / k`` to first order in ``1 / k``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from mcmcvae.evaluate.diagnostics import (
    active_units,
    bound_diagnostics,
    generalisation_gap,
    log_k_bound,
    variational_gap,
)
from mcmcvae.evaluate.importance import dataset_importance_estimate, importance_estimate

_TRACES: dict[str, int] = {}


@dataclasses.dataclass(frozen=True)
class LinearGaussianVAE:
    """``p(z) = N(0, I_d)``, ``p(x | z) = N(W z + b, sigma^2 I_D)``, ``q(z | x) = N(A x + c, diag(s^2))``.

    Hashable (the arrays live in ``params``), as the diagnostics' jitted functions need. ``tag`` tells apart
    instances whose traces a test counts.
    """

    latent_dim: int
    data_dim: int
    noise_scale: float
    tag: str = ""

    @property
    def image_shape(self):
        return (self.data_dim,)

    def encode(self, params, images):
        loc = images @ params["gain"].T + params["offset"]
        return loc, jnp.broadcast_to(params["scale"], loc.shape)

    def sample_q0(self, rng_key, params, images, num_samples=None):
        loc, scale = self.encode(params, images)
        shape = loc.shape if num_samples is None else (num_samples, *loc.shape)
        z = loc + scale * jax.random.normal(rng_key, shape)
        return z, jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), axis=-1)

    def log_joint(self, params, x, z):
        log_prior = jnp.sum(jax.scipy.stats.norm.logpdf(z))
        mean = params["weight"] @ z + params["bias"]
        return log_prior + jnp.sum(jax.scipy.stats.norm.logpdf(x, mean, self.noise_scale))

    def log_joint_batch(self, params, images, z):
        _TRACES[self.tag] = _TRACES.get(self.tag, 0) + 1  # runs at trace time only
        return jax.vmap(self.log_joint, in_axes=(None, 0, 0))(params, images, z)


def _vae(linear, *, shift=0.0, scale_factor=1.0, tag=""):
    """The model and parameters whose q is the exact posterior, shifted by ``shift`` posterior sds and widened."""
    precision = np.eye(linear.latent_dim) + linear.weight.T @ linear.weight / linear.noise_scale**2
    covariance = np.linalg.inv(precision)
    gain = covariance @ linear.weight.T / linear.noise_scale**2
    posterior_sd = np.sqrt(np.diag(covariance))
    params = {"weight": linear.weight, "bias": linear.bias, "gain": gain,
              "offset": -gain @ linear.bias + shift * posterior_sd, "scale": scale_factor * posterior_sd}
    model = LinearGaussianVAE(linear.latent_dim, linear.weight.shape[0], linear.noise_scale, tag)
    return model, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def _standardised_moment(order, scale_factor, shift, num_dims):
    r"""``E_q[(p(z|x) / q(z))^{order - 1}]`` = ``int p^order q^(1 - order)`` for a diagonal Gaussian posterior
    ``p`` and ``q = N(mean + shift sd, (scale_factor sd)^2)``, per dimension in standardised units:
    ``(2 pi)^(-1/2) c^(n-1) sqrt(pi / a) exp(b^2 / (4 a) + e)`` with ``a = n/2 - (n-1)/(2 c^2)``,
    ``b = -(n-1) delta / c^2``, ``e = (n-1) delta^2 / (2 c^2)``; finite when ``a > 0``."""
    n, c, delta = order, scale_factor, shift
    a = n / 2 - (n - 1) / (2 * c**2)
    assert a > 0
    b, e = -(n - 1) * delta / c**2, (n - 1) * delta**2 / (2 * c**2)
    one_dim = c ** (n - 1) * math.sqrt(math.pi / a) * math.exp(b**2 / (4 * a) + e) / math.sqrt(2 * math.pi)
    return one_dim**num_dims


# Shifted by one posterior sd and 1.5 times as wide: the weights are light-tailed (E[w^4] finite), L_k rises by
# tenths of a nat between k = 10 and 1000, and ESS / k is near 0.15. Two values of k: two compilations.
SHIFT, SCALE_FACTOR, REPLICATES, KS = 1.0, 1.5, 60, (10, 1000)


@pytest.fixture(scope="module")
def wide_proposal_runs(diagonal_posterior_model):
    """``bound_diagnostics`` for each k on the 7 data points repeated 60 times (independent keys per row)."""
    linear = diagonal_posterior_model
    model, params = _vae(linear, shift=SHIFT, scale_factor=SCALE_FACTOR)
    images = np.tile(linear.data, (REPLICATES, 1))
    exact = np.array([linear.log_marginal(x) for x in linear.data])
    runs = {k: bound_diagnostics(jax.random.key(k), model, params, images, num_samples=k) for k in KS}
    return linear, model, images, exact, runs


def _replicate_means(values, exact=0.0):
    """Per replicate, the mean over the 7 data points of ``values - exact``; returns (mean, standard error)."""
    per_replicate = (np.asarray(values, np.float64).reshape(REPLICATES, -1) - exact).mean(axis=1)
    return per_replicate.mean(), per_replicate.std(ddof=1) / math.sqrt(REPLICATES)


def test_log_k_bound_increases_with_k_and_stays_below_the_exact_log_likelihood(wide_proposal_runs):
    linear, _, _, exact, runs = wide_proposal_runs
    dims = linear.latent_dim
    kl = dims * (-math.log(SCALE_FACTOR) + (SCALE_FACTOR**2 + SHIFT**2) / 2 - 0.5)  # KL(q || posterior)
    # the mean log weight is unbiased for the ELBO = log p(x) - KL (every k, here from the k = 1000 run)
    elbo_gap, elbo_se = _replicate_means(runs[1000].elbo, exact)
    assert abs(elbo_gap + kl) < 4 * elbo_se, (elbo_gap, -kl, elbo_se)
    gaps = {k: _replicate_means(runs[k].log_k_bound, exact) for k in KS}
    # Burda et al.: ELBO <= E[L_10] <= E[L_1000] <= log p(x), steps of 2.6 and 0.25 nats, far beyond the noise
    (g10, s10), (g1000, s1000) = gaps[10], gaps[1000]
    assert g10 - elbo_gap > 4 * math.hypot(s10, elbo_se)
    assert g1000 - g10 > 4 * math.hypot(s10, s1000)
    for k in KS:
        assert gaps[k][0] < 3 * gaps[k][1], (k, gaps[k])  # below log p(x) within noise
    # and close to it: E[L_k] - log p(x) = -Var(w / p) / (2k) + O(k^-2)
    variance = _standardised_moment(2, SCALE_FACTOR, SHIFT, dims) - 1
    assert abs(g1000 + variance / 2000) < 4 * s1000, (g1000, -variance / 2000, s1000)


def test_effective_sample_size_estimates_the_inverse_second_moment(wide_proposal_runs):
    linear, _, _, _, runs = wide_proposal_runs
    dims, k = linear.latent_dim, 1000
    # ESS / k = mean(u)^2 / mean(u^2), u = w / p(x): to first order in 1/k (delta method) its mean is
    # 1/m2 + ((m2 - 1)/m2 - 2 (m3 - m2)/m2^2 + (m4 - m2^2)/m2^3) / k, m_n = E_q[u^n]
    m2, m3, m4 = (_standardised_moment(n, SCALE_FACTOR, SHIFT, dims) for n in (2, 3, 4))
    expected = 1 / m2 + ((m2 - 1) / m2 - 2 * (m3 - m2) / m2**2 + (m4 - m2**2) / m2**3) / k
    fraction, se = _replicate_means(np.asarray(runs[k].effective_sample_size) / k)
    assert 0.1 < expected < 0.2
    assert abs(fraction - expected) < 4 * se, (fraction, expected, se)
    for run_k, run in runs.items():
        ess = np.asarray(run.effective_sample_size)
        assert np.all(ess >= 1 - 1e-4) and np.all(ess <= run_k * (1 + 1e-5))


def test_exact_posterior_gives_exact_bound_and_full_effective_sample_size(diagonal_posterior_model,
                                                                         wide_proposal_runs):
    linear = diagonal_posterior_model
    _, _, images, _, _ = wide_proposal_runs  # the same shapes, model and k: the compiled function is reused
    model, params = _vae(linear)
    result = bound_diagnostics(jax.random.key(1), model, params, images, num_samples=1000)
    exact = np.tile([linear.log_marginal(x) for x in linear.data], REPLICATES)
    # every weight equals p(x): only float32 rounding separates the values from the exact ones
    np.testing.assert_allclose(np.asarray(result.log_k_bound), exact, atol=2e-3)
    np.testing.assert_allclose(np.asarray(result.elbo), exact, atol=2e-3)
    np.testing.assert_allclose(np.asarray(result.effective_sample_size), 1000, rtol=1e-4)
    # a proposal shifted by two posterior sds and half as wide (E_q[w^2] is infinite): a handful of draws carry
    # all the weight
    poor_model, poor_params = _vae(linear, shift=2.0, scale_factor=0.5)
    poor = bound_diagnostics(jax.random.key(2), poor_model, poor_params, images, num_samples=1000)
    poor_ess = np.asarray(poor.effective_sample_size)
    assert poor_ess.mean() < 10 and np.all(poor_ess >= 1 - 1e-4)  # under 1% of k, against all of k above
    # and L_k lies below log p(x) on average (Jensen), by far more than its standard error
    gap = np.asarray(poor.log_k_bound, np.float64) - exact
    assert gap.mean() + 3 * gap.std(ddof=1) / math.sqrt(len(gap)) < 0


def test_bound_matches_its_definition_for_any_batching(correlated_model):
    linear = correlated_model
    model, params = _vae(linear, shift=0.5, scale_factor=1.3, tag="definition")
    key, num_samples, chunk_size = jax.random.key(3), 10, 4  # three chunks, the last with two masked slots
    # 7 images in batches of 3: the last batch is padded, and one trace serves all three
    result = bound_diagnostics(key, model, params, linear.data, num_samples=num_samples, chunk_size=chunk_size,
                               batch_size=3)
    again = log_k_bound(key, model, params, linear.data, num_samples=num_samples, chunk_size=chunk_size, batch_size=3)
    assert _TRACES["definition"] == 1  # log_k_bound reused the compiled function
    np.testing.assert_array_equal(np.asarray(again), np.asarray(result.log_k_bound))
    assert result.log_k_bound.shape == result.elbo.shape == result.effective_sample_size.shape == (7,)

    # the same draws, weighed in float64: image i, chunk c uses fold_in(fold_in(key, i), c)
    loc, scale = (np.asarray(a, np.float64) for a in model.encode(params, jnp.asarray(linear.data)))
    weight, bias = np.asarray(params["weight"], np.float64), np.asarray(params["bias"], np.float64)
    noise = np.stack([np.concatenate([np.asarray(jax.random.normal(
        jax.random.fold_in(jax.random.fold_in(key, i), c), (chunk_size, 1, 3)))[:, 0] for c in range(3)])
        for i in range(7)])[:, :num_samples]  # (7, k, d)
    z = loc[:, None] + scale[:, None] * noise
    log_q = norm.logpdf(z, loc[:, None], scale[:, None]).sum(-1)
    log_p = norm.logpdf(z).sum(-1) + norm.logpdf(linear.data[:, None], z @ weight.T + bias, linear.noise_scale).sum(-1)
    log_w = log_p - log_q
    lse = np.logaddexp.reduce(log_w, axis=1)
    # float32 against float64: log weights of size ~20 agree to ~1e-5
    np.testing.assert_allclose(np.asarray(result.log_k_bound), lse - math.log(num_samples), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(result.elbo), log_w.mean(axis=1), rtol=1e-5, atol=1e-4)
    ess = np.exp(2 * lse - np.logaddexp.reduce(2 * log_w, axis=1))
    np.testing.assert_allclose(np.asarray(result.effective_sample_size), ess, rtol=1e-4)


def test_importance_estimate_effective_sample_size(diagonal_posterior_model):
    linear = diagonal_posterior_model
    x = linear.data[0]
    mean, covariance = linear.posterior(x)
    scale = np.sqrt(np.diag(covariance)).astype(np.float32)
    estimate = jax.jit(lambda key, loc, sd: importance_estimate(key, lambda z: linear.log_joint(x, z), loc, sd, 300,
                                                                chunk_size=64))
    exact_proposal = estimate(jax.random.key(0), mean.astype(np.float32), scale)
    np.testing.assert_allclose(float(exact_proposal.effective_sample_size), 300, rtol=1e-4)
    np.testing.assert_allclose(float(exact_proposal.log_likelihood), linear.log_marginal(x), atol=2e-3)
    poor = estimate(jax.random.key(0), (mean + 2 * scale).astype(np.float32), 0.5 * scale)
    assert 1 <= float(poor.effective_sample_size) < 30
    # the dataset version: point i is importance_estimate with fold_in(key, i), as for dataset_log_likelihood
    posterior_encoder = lambda _: (jnp.asarray(mean, jnp.float32), jnp.asarray(scale))  # noqa: E731
    both = dataset_importance_estimate(jax.random.key(4), linear.log_joint, posterior_encoder, linear.data[:1],
                                       num_samples=300, chunk_size=64)
    direct = estimate(jax.random.fold_in(jax.random.key(4), 0), mean.astype(np.float32), scale)
    np.testing.assert_allclose(np.asarray(both.log_likelihood), [float(direct.log_likelihood)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(both.effective_sample_size), [float(direct.effective_sample_size)],
                               rtol=1e-5)


# ---------------------------------------------------------------------------------------------- active units
def _units_model():
    """d = 4 latents of which only 0 and 2 depend on x; the other two are the prior (mean 0, sd 1) for every x."""
    rng = np.random.default_rng(11)
    data_dim, latent_dim = 10, 4
    gain = rng.normal(size=(latent_dim, data_dim)) / math.sqrt(data_dim)
    gain[[1, 3]] = 0.0
    params = {"weight": rng.normal(size=(data_dim, latent_dim)), "bias": np.zeros(data_dim), "gain": gain,
              "offset": rng.normal(size=latent_dim), "scale": np.array([0.5, 1.0, 0.3, 1.0])}
    images = rng.normal(size=(200, data_dim)).astype(np.float32)
    model = LinearGaussianVAE(latent_dim, data_dim, 1.0, tag="units")
    return model, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params), images


def test_active_units_counts_exactly_the_informative_dimensions():
    model, params, images = _units_model()
    n = len(images)
    means = images.astype(np.float64) @ np.asarray(params["gain"], np.float64).T
    exact = means.var(axis=0)  # Cov_x of the exact q mean; 0 for units 1 and 3
    assert exact[0] > 0.1 and exact[2] > 0.1

    exact_path = active_units(jax.random.key(0), model, params, images, num_samples=None)
    np.testing.assert_allclose(np.asarray(exact_path.activity), exact, rtol=1e-4, atol=1e-6)
    assert exact_path.is_active.tolist() == [True, False, True, False] and exact_path.num_active == 2

    # Monte Carlo means from S = 50 draws: uncorrected, the variance over images of the collapsed units would
    # be about sigma^2 / S = 0.02 > 0.01 and they would count as active; the estimate subtracts that term.
    num_samples = 50
    sampled = active_units(jax.random.key(1), model, params, images, num_samples=num_samples, batch_size=64)
    assert sampled.is_active.tolist() == [True, False, True, False] and sampled.num_active == 2
    # error of the corrected estimate (to leading order): 2 Cov_i(m, e) + (Var_i(e) - E) - (correction - E),
    # with e ~ N(0, sigma^2 / S): variances 4 A v / n, 2 v^2 / n and 2 v^2 / (n (S - 1)) for v = sigma^2 / S
    v = np.asarray(params["scale"], np.float64) ** 2 / num_samples
    sd = np.sqrt(4 * exact * v / n + 2 * v**2 / n + 2 * v**2 / (n * (num_samples - 1)))
    assert np.all(np.abs(np.asarray(sampled.activity) - exact) < 4 * sd), (np.asarray(sampled.activity), exact, sd)


def test_active_units_rejects_bad_input():
    model, params, images = _units_model()
    key = jax.random.key(0)
    for threshold in (-0.1, float("nan"), float("inf"), "0.01", True):
        with pytest.raises(ValueError, match="threshold must be a finite number"):
            active_units(key, model, params, images, threshold=threshold)
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        active_units(key, model, params, images, num_samples=1)
    with pytest.raises(ValueError, match="at least 2 images"):
        active_units(key, model, params, images[:1])
    with pytest.raises(ValueError, match=r"images must have shape \(n, 10\)"):
        active_units(key, model, params, images[:, :5])
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        log_k_bound(key, model, params, images, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        bound_diagnostics(key, model, params, images, num_samples=10, chunk_size=0)
    with pytest.raises(ValueError, match=r"one image per row"):
        bound_diagnostics(key, model, params, images[0], num_samples=10)

    class Unhashable(LinearGaussianVAE):
        __hash__ = None  # as for a dataclass with eq and without frozen

    with pytest.raises(ValueError, match="model must be hashable"):
        log_k_bound(key, Unhashable(4, 10, 1.0), params, images, num_samples=10)


# ------------------------------------------------------------------------------------------------------ gaps
def test_gaps():
    log_likelihood, bound = np.array([-90.0, -100.0, -95.0]), np.array([-91.5, -100.5, -97.0])
    np.testing.assert_allclose(np.asarray(variational_gap(log_likelihood, bound)), [1.5, 0.5, 2.0])
    with pytest.raises(ValueError, match="same shape"):
        variational_gap(log_likelihood, bound[:2])
    train, test = np.array([-88.0, -90.0]), np.array([-91.0, -92.0, -93.0])
    np.testing.assert_allclose(float(generalisation_gap(train, test)), -89.0 + 92.0)
    np.testing.assert_allclose(float(generalisation_gap(-89.0, -92.0)), 3.0)
    with pytest.raises(ValueError, match="at least one value"):
        generalisation_gap(np.zeros(0), test)


# ------------------------------------------------------------------------------- MCMC chain diagnostics
def _ar1_chains(rhos, num_samples=4000, num_chains=4, seed=0):
    """Stationary AR(1) chains ``x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t``, one coordinate per ``rho``:
    ``(num_samples, num_chains, len(rhos))``, ESS ``= N (1 - rho) / (1 + rho)`` for ``N`` draws in all."""
    rng = np.random.default_rng(seed)
    rhos = np.asarray(rhos)
    noise = rng.normal(size=(num_samples, num_chains, rhos.size))
    x = np.empty_like(noise)
    x[0] = noise[0]
    for t in range(1, num_samples):
        x[t] = rhos * x[t - 1] + np.sqrt(1 - rhos**2) * noise[t]
    return x


def test_chain_diagnostics_is_blackjax_and_numpyro_on_known_chains():
    import blackjax.diagnostics
    import numpyro.diagnostics

    from mcmcvae.evaluate.diagnostics import chain_diagnostics

    rhos = [0.0, 0.5, 0.8]
    draws = _ar1_chains(rhos, num_samples=10_000)
    result = chain_diagnostics(draws)
    assert result.effective_sample_size.shape == (3,) and result.potential_scale_reduction.shape == (3,)
    chains_first = jnp.asarray(draws.transpose(1, 0, 2), jnp.float32)
    # The same estimator (only the summation order of the transposed layout differs).
    np.testing.assert_allclose(result.effective_sample_size, blackjax.diagnostics.effective_sample_size(chains_first),
                               rtol=1e-5)
    np.testing.assert_allclose(result.potential_scale_reduction,
                               blackjax.diagnostics.potential_scale_reduction(chains_first), rtol=1e-6)
    np.testing.assert_allclose(result.effective_sample_size,
                               numpyro.diagnostics.effective_sample_size(draws.transpose(1, 0, 2)), rtol=1e-3)
    np.testing.assert_allclose(result.potential_scale_reduction,
                               numpyro.diagnostics.gelman_rubin(draws.transpose(1, 0, 2)), rtol=1e-4)
    # Against the closed form N (1 - rho) / (1 + rho): the estimated autocorrelation time's relative sd is about
    # sqrt(2 (2 M + 1) / N) over a window of M ~ 5 tau lags (tau = 9 for rho = 0.8, N = 40000): below 0.07, so
    # 20 % is three of them.
    exact = draws.shape[0] * draws.shape[1] * (1 - np.array(rhos)) / (1 + np.array(rhos))
    np.testing.assert_allclose(result.effective_sample_size, exact, rtol=0.2)
    assert np.all(np.abs(np.asarray(result.potential_scale_reduction) - 1) < 0.01)


def test_chain_diagnostics_flags_chains_that_disagree():
    from mcmcvae.evaluate.diagnostics import chain_diagnostics

    draws = _ar1_chains([0.5, 0.5], num_samples=500)
    draws[:, 0, 1] += 3.0  # one chain sits elsewhere in coordinate 1
    rhat = np.asarray(chain_diagnostics(draws).potential_scale_reduction)
    assert rhat[0] < 1.01 and rhat[1] > 1.5


def test_chain_diagnostics_rejects_bad_shapes():
    from mcmcvae.evaluate.diagnostics import chain_diagnostics

    with pytest.raises(ValueError, match="num_samples, n_chains, d"):
        chain_diagnostics(np.zeros((100, 4)))
    with pytest.raises(ValueError, match="at least 2 chains"):
        chain_diagnostics(np.zeros((100, 1, 3)))
