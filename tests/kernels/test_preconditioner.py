"""Preconditioner: construction, the dense-matrix meaning of every operation, and differentiability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.kernels import Preconditioner

DIM = 4


def _random_preconditioner(kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "diagonal":
        return Preconditioner.diagonal(DIM, step_size=0.3, scale=rng.uniform(0.5, 2.0, DIM))
    matrix = np.tril(rng.normal(size=(DIM, DIM))) + np.diag(rng.uniform(1.0, 2.0, DIM))
    # Garbage above the diagonal must be ignored by every operation.
    full = matrix + np.triu(rng.normal(size=(DIM, DIM)) * 10.0, k=1)
    return Preconditioner(jnp.log(jnp.float32(0.3)), jnp.asarray(full, jnp.float32))


def _dense(precond):
    scale = np.asarray(precond.scale, np.float64)
    return np.diag(scale) if scale.ndim == 1 else np.tril(scale)


def test_diagonal_constructor():
    precond = Preconditioner.diagonal(3, step_size=0.5)
    assert precond.log_step_size.shape == () and precond.log_step_size.dtype == jnp.float32
    assert precond.scale.shape == (3,) and precond.scale.dtype == jnp.float32
    np.testing.assert_allclose(precond.step_size, 0.5, rtol=1e-6)
    np.testing.assert_array_equal(precond.scale, np.ones(3))
    np.testing.assert_array_equal(Preconditioner.diagonal(3, scale=2.0).scale, 2.0 * np.ones(3))
    np.testing.assert_array_equal(Preconditioner.diagonal(3, scale=jnp.arange(1.0, 4.0)).scale, [1, 2, 3])
    assert precond.is_diagonal and precond.dim == 3


def test_lower_triangular_constructor():
    precond = Preconditioner.lower_triangular(3, step_size=0.5)
    assert precond.scale.shape == (3, 3) and precond.scale.dtype == jnp.float32
    np.testing.assert_array_equal(precond.scale, np.eye(3))
    np.testing.assert_array_equal(Preconditioner.lower_triangular(3, scale=2.0).scale, 2.0 * np.eye(3))
    np.testing.assert_array_equal(Preconditioner.lower_triangular(3, scale=jnp.arange(1.0, 4.0)).scale, np.diag([1, 2, 3]))
    full = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(Preconditioner.lower_triangular(3, scale=full).scale, np.tril(full))
    assert not precond.is_diagonal and precond.dim == 3


@pytest.mark.parametrize(
    "build",
    [
        lambda: Preconditioner.diagonal(3, scale=jnp.ones(4)),
        lambda: Preconditioner.diagonal(3, scale=jnp.ones((3, 3))),
        lambda: Preconditioner.lower_triangular(3, scale=jnp.ones((3, 4))),
        lambda: Preconditioner.diagonal(3, step_size=jnp.ones(3)),
    ],
)
def test_bad_shapes_raise(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("kind", ["diagonal", "lower_triangular"])
def test_operations_match_dense_matrix(kind):
    precond = _random_preconditioner(kind)
    dense = _dense(precond)
    v = np.random.default_rng(1).normal(size=DIM)
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(precond.matrix(), dense, **tol)
    np.testing.assert_allclose(precond.apply(v), dense @ v, **tol)
    np.testing.assert_allclose(precond.apply_transpose(v), dense.T @ v, **tol)
    np.testing.assert_allclose(precond.solve(v), np.linalg.solve(dense, v), **tol)
    np.testing.assert_allclose(precond.solve_transpose(v), np.linalg.solve(dense.T, v), **tol)
    np.testing.assert_allclose(precond.covariance_apply(v), dense @ dense.T @ v, **tol)
    np.testing.assert_allclose(precond.log_abs_det(), np.linalg.slogdet(dense)[1], **tol)
    np.testing.assert_allclose(precond.step_size, 0.3, rtol=1e-6)


def test_diagonal_and_lower_triangular_agree():
    diagonal = _random_preconditioner("diagonal")
    full = Preconditioner.lower_triangular(DIM, step_size=0.3, scale=diagonal.scale)
    v = jnp.asarray(np.random.default_rng(2).normal(size=DIM), jnp.float32)
    for name in ("apply", "apply_transpose", "solve", "solve_transpose", "covariance_apply"):
        np.testing.assert_allclose(getattr(diagonal, name)(v), getattr(full, name)(v), rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(diagonal.log_abs_det(), full.log_abs_det(), rtol=1e-6)
    np.testing.assert_allclose(diagonal.matrix(), full.matrix())


@pytest.mark.parametrize("kind", ["diagonal", "lower_triangular"])
def test_gradients_are_finite_and_skip_the_upper_triangle(kind):
    precond = _random_preconditioner(kind)
    v = jnp.asarray(np.random.default_rng(3).normal(size=DIM), jnp.float32)

    def objective(p):
        total = p.step_size * jnp.sum(p.apply(v)) + jnp.sum(p.apply_transpose(v) ** 2)
        total += jnp.sum(p.solve(v)) + jnp.sum(p.solve_transpose(v)) + jnp.sum(p.covariance_apply(v))
        return total + p.log_abs_det() + jnp.sum(p.matrix())

    grads = jax.jit(jax.grad(objective))(precond)
    assert grads.log_step_size.shape == () and grads.scale.shape == precond.scale.shape
    assert np.all(np.isfinite(grads.scale)) and np.isfinite(grads.log_step_size)
    assert np.any(grads.scale != 0.0)
    if kind == "lower_triangular":
        np.testing.assert_array_equal(np.triu(grads.scale, k=1), 0.0)


def test_is_a_pytree_that_vmaps():
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs), *[Preconditioner.lower_triangular(DIM, step_size=s) for s in (0.1, 0.2)]
    )
    v = jnp.ones(DIM)
    out = jax.vmap(lambda p: p.step_size * p.solve_transpose(v))(stacked)
    np.testing.assert_allclose(out, np.array([[0.1] * DIM, [0.2] * DIM]), rtol=1e-6)
