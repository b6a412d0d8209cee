"""Gaussian targets with a known covariance, for the adaptation tests.

``pi = N(0, Sigma)`` with ``Sigma = Q diag(sigma^2) Q^T``, the variances log-spaced so that ``cond(Sigma)`` is
exact, and ``Q`` a random rotation (or the identity for an axis-aligned target). A preconditioner ``C`` whitens
the target when ``C^T Sigma^{-1} C`` is a multiple of the identity, so its condition number measures what the
adaptation achieved.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest


@dataclasses.dataclass(frozen=True)
class GaussianTarget:
    covariance: np.ndarray  # float64

    @property
    def dim(self) -> int:
        return self.covariance.shape[0]

    @property
    def precision(self) -> np.ndarray:
        return np.linalg.inv(self.covariance)

    def logdensity_fn(self, dtype=jnp.float32):
        precision = jnp.asarray(self.precision, dtype)
        return lambda z: -0.5 * z @ (precision @ z)

    def transformed_condition_number(self, matrix) -> float:
        """``cond(C^T Sigma^{-1} C)`` in float64."""
        c = np.asarray(matrix, np.float64)
        eigenvalues = np.linalg.eigvalsh(c.T @ self.precision @ c)
        return float(eigenvalues.max() / eigenvalues.min())

    def sample(self, rng_key_seed: int, num: int) -> np.ndarray:
        rng = np.random.default_rng(rng_key_seed)
        return rng.standard_normal((num, self.dim)) @ np.linalg.cholesky(self.covariance).T


def gaussian(dim: int, condition_number: float, *, rotate: bool, seed: int = 0) -> GaussianTarget:
    variances = np.geomspace(1.0, condition_number, dim)
    if rotate:
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    else:
        q = np.eye(dim)
    return GaussianTarget((q * variances) @ q.T)


@pytest.fixture(scope="session")
def make_gaussian():
    return gaussian
