"""Linear Gaussian models whose marginal likelihood and posterior are known exactly.

``p(z) = N(0, I_d)``, ``p(x | z) = N(W z + b, sigma^2 I_D)``, so ``p(x) = N(x; b, W W^T + sigma^2 I)`` and
``p(z | x) = N(Sigma W^T (x - b) / sigma^2, Sigma)`` with ``Sigma = (I + W^T W / sigma^2)^{-1}``.
Exact values are computed in float64 with NumPy/SciPy; the estimators run in float32.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
    weight: np.ndarray  # W, (D, d)
    bias: np.ndarray  # b, (D,)
    noise_scale: float  # sigma
    data: np.ndarray  # (n, D), drawn from the model

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    def log_joint(self, x, z):
        """``log p(x, z)`` in float32 JAX, ``(D,), (d,) -> scalar``."""
        weight = jnp.asarray(self.weight, jnp.float32)
        bias = jnp.asarray(self.bias, jnp.float32)
        d, data_dim = self.weight.shape[1], self.weight.shape[0]
        log_prior = -0.5 * jnp.sum(z**2) - 0.5 * d * math.log(2 * math.pi)
        residual = (x - weight @ z - bias) / self.noise_scale
        log_lik = -0.5 * jnp.sum(residual**2) - data_dim * (math.log(self.noise_scale) + 0.5 * math.log(2 * math.pi))
        return log_prior + log_lik

    def log_marginal(self, x) -> float:
        covariance = self.weight @ self.weight.T + self.noise_scale**2 * np.eye(self.weight.shape[0])
        return float(multivariate_normal(self.bias, covariance).logpdf(np.asarray(x, np.float64)))

    def posterior(self, x) -> tuple[np.ndarray, np.ndarray]:
        precision = np.eye(self.latent_dim) + self.weight.T @ self.weight / self.noise_scale**2
        covariance = np.linalg.inv(precision)
        mean = covariance @ self.weight.T @ (np.asarray(x, np.float64) - self.bias) / self.noise_scale**2
        return mean, covariance


def _make(seed: int, *, latent_dim: int, data_dim: int, noise_scale: float, orthogonal: bool, num_points: int = 7):
    rng = np.random.default_rng(seed)
    if orthogonal:
        # orthogonal columns make W^T W, hence the posterior covariance, diagonal
        basis, _ = np.linalg.qr(rng.normal(size=(data_dim, latent_dim)))
        weight = basis * rng.uniform(0.5, 2.5, size=latent_dim)
    else:
        weight = rng.normal(size=(data_dim, latent_dim))
    bias = rng.normal(size=data_dim)
    latents = rng.normal(size=(num_points, latent_dim))
    data = latents @ weight.T + bias + noise_scale * rng.normal(size=(num_points, data_dim))
    return LinearGaussian(weight, bias, noise_scale, data.astype(np.float32))


@pytest.fixture(scope="session")
def diagonal_posterior_model() -> LinearGaussian:
    """d = 4, D = 10, orthogonal columns: the diagonal Gaussian posterior is an exact proposal."""
    return _make(0, latent_dim=4, data_dim=10, noise_scale=0.5, orthogonal=True)


@pytest.fixture(scope="session")
def correlated_model() -> LinearGaussian:
    """d = 3, D = 8, Gaussian W: the posterior covariance is not diagonal."""
    return _make(1, latent_dim=3, data_dim=8, noise_scale=0.5, orthogonal=False)
