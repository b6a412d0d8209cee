"""The leapfrog integrator: against a dense reference, reversibility, and how it stops on non-finite values."""

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.kernels.integrators import IntegratorState, leapfrog

DIM = 3
INVERSE_MASS = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, -0.1], [0.0, -0.1, 2.0]])
PRECISION = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])


def logdensity(z):
    return -0.5 * z @ (PRECISION @ z) - 0.1 * jnp.sum(z**4)


def _start(position, momentum):
    position = jnp.asarray(position, jnp.float32)
    return IntegratorState(position, jnp.asarray(momentum, jnp.float32), *jax.value_and_grad(logdensity)(position))


@jax.jit
def _forward_and_back(state, step_size):
    forward = leapfrog(logdensity, lambda p: INVERSE_MASS @ p, step_size, 4, state)
    flipped = forward.end._replace(momentum=-forward.end.momentum)
    back = leapfrog(logdensity, lambda p: INVERSE_MASS @ p, step_size, 4, flipped)
    return forward, back


def test_leapfrog_matches_dense_reference_and_is_reversible():
    z0, p0, h = np.array([0.5, -1.0, 0.3]), np.array([1.0, 0.2, -0.4]), 0.2
    forward, back = _forward_and_back(_start(z0, p0), h)

    def grad(z):
        return -PRECISION @ z - 0.4 * z**3

    z, p, positions = z0, p0, [z0]
    for _ in range(4):
        p = p + 0.5 * h * grad(z)
        z = z + h * INVERSE_MASS @ p
        p = p + 0.5 * h * grad(z)
        positions.append(z)
    assert forward.is_finite and back.is_finite
    np.testing.assert_allclose(forward.end.position, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(forward.end.momentum, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(forward.end.logdensity_grad, grad(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(forward.midpoint, positions[2], rtol=1e-5, atol=1e-6)
    # Time reversal: flipping the momentum and integrating again returns to the start.
    np.testing.assert_allclose(back.end.position, z0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back.end.momentum, -p0, rtol=1e-5, atol=1e-5)


def test_leapfrog_stops_at_the_last_finite_state():
    start = _start([0.5, -1.0, 0.3], [1.0, 0.2, -0.4])
    forward, _ = _forward_and_back(start, 1e12)
    assert not forward.is_finite
    for got, want in zip(jax.tree.leaves(forward.end), jax.tree.leaves(start)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(forward.midpoint, start.position)
