"""The learnable step size and preconditioner shared by the MALA and HMC kernels.

Both kernels are parametrised by a step size ``h > 0`` and a matrix ``C`` (Hirt, Kreouzis and Dellaportas,
"Learning variational autoencoders via MCMC speed measures", Stat. Comput. 2024, Sections 2-3): MALA proposes
``z' = z - (h^2 / 2) C C^T grad U(z) + h C v`` and HMC uses the inverse mass matrix ``C C^T``. ``C`` is either
diagonal or lower triangular, so that every operation the kernels need is a matrix-vector product or a
triangular solve, never an inverse.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mcmcvae.types import Array, ArrayLike

__all__ = ["Preconditioner"]


# Full float32 products on every backend: the acceptance ratio relies on ``C v`` and ``C^T p`` being the maps the
# proposal used, and TF32-style reduced precision on GPUs would make that only approximately true.
_matvec = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def _float_dtype(dtype):
    return jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)


class Preconditioner(NamedTuple):
    r"""Step size ``h`` and matrix ``C`` of a preconditioned MALA or HMC kernel.

    The fields are plain arrays, so a ``Preconditioner`` is a pytree that crosses ``jit``, ``vmap`` and
    ``grad`` boundaries; both fields are differentiable. The kind of ``C`` is read from ``scale.ndim``, a static
    property, so one traced kernel serves every value of the parameters.

    Attributes
    ----------
    log_step_size
        ``Array[()]``: ``log h``. Optimising the log keeps ``h`` positive.
    scale
        ``Array[(d,)]``: the diagonal of a diagonal ``C``; or ``Array[(d, d)]``: a lower-triangular ``C``. Only
        the lower triangle of a full ``scale`` is read (``jnp.tril``), so no gradient ever reaches the upper
        part.

    Notes
    -----
    All operations dispatch on ``scale.ndim``:

    ==========================  =========================  ===========================================
    method                      result                     cost (diagonal / lower triangular)
    ==========================  =========================  ===========================================
    ``apply(v)``                ``C v``                    ``O(d)`` / ``O(d^2)``
    ``apply_transpose(v)``      ``C^T v``                  ``O(d)`` / ``O(d^2)``
    ``solve(v)``                ``C^{-1} v``               ``O(d)`` / triangular solve
    ``solve_transpose(v)``      ``C^{-T} v``               ``O(d)`` / triangular solve
    ``covariance_apply(g)``     ``C C^T g``                ``O(d)`` / ``O(d^2)``
    ``log_abs_det()``           ``log |det C|``            ``sum log |diag C|``
    ==========================  =========================  ===========================================

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmcvae.kernels import Preconditioner
    >>> precond = Preconditioner.diagonal(3, step_size=0.5, scale=jnp.array([1.0, 2.0, 4.0]))
    >>> precond.apply(jnp.ones(3))
    Array([1., 2., 4.], dtype=float32)
    >>> full = Preconditioner.lower_triangular(3, step_size=0.5)
    >>> full.matrix().shape
    (3, 3)
    """

    log_step_size: Array
    scale: Array

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def diagonal(cls, dim: int, step_size: ArrayLike = 0.1, scale: ArrayLike = 1.0, *, dtype=None) -> Preconditioner:
        """A diagonal ``C = diag(scale)``.

        Parameters
        ----------
        dim
            The dimension ``d`` of the positions.
        step_size
            The step size ``h > 0``.
        scale
            A scalar (``C = scale * I``) or a ``(d,)`` array, the diagonal of ``C``.
        dtype
            Floating dtype of both fields; default the JAX default float (float32).
        """
        dtype = _float_dtype(dtype)
        scale = jnp.asarray(scale, dtype)
        if scale.ndim > 1 or (scale.ndim == 1 and scale.shape != (dim,)):
            raise ValueError(f"Preconditioner.diagonal: scale must be a scalar or have shape ({dim},), got {scale.shape}")
        return cls(_log_step_size(step_size, dtype), jnp.broadcast_to(scale, (dim,)))

    @classmethod
    def lower_triangular(
        cls, dim: int, step_size: ArrayLike = 0.1, scale: ArrayLike | None = None, *, dtype=None
    ) -> Preconditioner:
        """A lower-triangular ``C``.

        Parameters
        ----------
        dim
            The dimension ``d`` of the positions.
        step_size
            The step size ``h > 0``.
        scale
            ``None`` for the identity; a scalar or a ``(d,)`` array for a diagonal start; or a ``(d, d)`` array,
            of which the lower triangle is kept (e.g. a Cholesky factor of a covariance).
        dtype
            Floating dtype of both fields; default the JAX default float (float32).
        """
        dtype = _float_dtype(dtype)
        if scale is None:
            matrix = jnp.eye(dim, dtype=dtype)
        else:
            scale = jnp.asarray(scale, dtype)
            if scale.ndim == 0 or scale.shape == (dim,):
                matrix = jnp.diag(jnp.broadcast_to(scale, (dim,)))
            elif scale.shape == (dim, dim):
                matrix = jnp.tril(scale)
            else:
                raise ValueError(
                    f"Preconditioner.lower_triangular: scale must be None, a scalar, ({dim},) or ({dim}, {dim}), "
                    f"got {scale.shape}"
                )
        return cls(_log_step_size(step_size, dtype), matrix)

    # -- properties ---------------------------------------------------------------------------------------------

    @property
    def step_size(self) -> Array:
        """The step size ``h = exp(log_step_size)``."""
        return jnp.exp(self.log_step_size)

    @property
    def dim(self) -> int:
        """The dimension ``d`` (static)."""
        return self.scale.shape[-1]

    @property
    def is_diagonal(self) -> bool:
        """Whether ``C`` is stored as its diagonal (static: read from ``scale.ndim``)."""
        return self.scale.ndim == 1

    def _lower(self) -> Array:
        return jnp.tril(self.scale)

    # -- operations ---------------------------------------------------------------------------------------------

    def matrix(self) -> Array:
        """``C`` as a dense ``(d, d)`` array."""
        if self.is_diagonal:
            return jnp.diag(self.scale)
        return self._lower()

    def apply(self, v: Array) -> Array:
        """``C v``."""
        if self.is_diagonal:
            return self.scale * v
        return _matvec(self._lower(), v)

    def apply_transpose(self, v: Array) -> Array:
        """``C^T v``."""
        if self.is_diagonal:
            return self.scale * v
        return _matvec(self._lower().T, v)

    def solve(self, v: Array) -> Array:
        """``C^{-1} v``, by a triangular solve."""
        if self.is_diagonal:
            return v / self.scale
        return jax.scipy.linalg.solve_triangular(self._lower(), v, lower=True)

    def solve_transpose(self, v: Array) -> Array:
        """``C^{-T} v``, by a triangular solve (HMC's initial momentum ``p0 = C^{-T} v``)."""
        if self.is_diagonal:
            return v / self.scale
        return jax.scipy.linalg.solve_triangular(self._lower(), v, lower=True, trans="T")

    def covariance_apply(self, g: Array) -> Array:
        """``C C^T g``: the preconditioned drift of MALA and HMC's velocity ``M^{-1} p``."""
        return self.apply(self.apply_transpose(g))

    def log_abs_det(self) -> Array:
        """``log |det C| = sum_i log |C_ii|``."""
        diagonal = self.scale if self.is_diagonal else jnp.diagonal(self.scale)
        return jnp.sum(jnp.log(jnp.abs(diagonal)))


def _log_step_size(step_size: ArrayLike, dtype) -> Array:
    step_size = jnp.asarray(step_size, dtype)
    if step_size.ndim != 0:
        raise ValueError(f"Preconditioner: step_size must be a scalar, got shape {step_size.shape}")
    return jnp.log(step_size)
