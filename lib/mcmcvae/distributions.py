"""Distributions that NumPyro does not ship.

NumPyro has no discretised logistic distribution, so :class:`DiscretizedLogistic` is written here, as a
NumPyro ``Distribution`` so that models use it like any other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes

__all__ = ["DiscretizedLogistic", "logistic_scale_from_variance"]


def logistic_scale_from_variance(variance: float) -> float:
    """Scale s of a logistic distribution with the given variance, ``Var = s^2 pi^2 / 3``."""
    return float(jnp.sqrt(3.0 * variance) / jnp.pi)


class DiscretizedLogistic(dist.Distribution):
    r"""A logistic distribution discretised onto ``num_bins`` evenly spaced values in [0, 1].

    Bin ``k`` is the value ``x_k = k / (num_bins - 1)`` and receives the logistic mass of
    ``[x_k - w/2, x_k + w/2]`` with ``w = 1 / (num_bins - 1)``; the first and last bins take the tails down to
    ``-inf`` and up to ``+inf``, so the probabilities of the bins sum to one exactly:

    .. math:: P(x_k) = \sigma\left(\frac{x_k + w/2 - \mu}{s}\right) - \sigma\left(\frac{x_k - w/2 - \mu}{s}\right).

    This is the likelihood of Kingma et al. (2016) and Salimans et al. (2017) for 8-bit images (``num_bins=256``).
    The difference of sigmoids is evaluated as
    ``log sigma(a) + log sigma(-b) + log(1 - exp(b - a))``, which is stable for every ``a > b``.

    Parameters
    ----------
    loc
        Location mu, on the [0, 1] scale of the data.
    scale
        Logistic scale s > 0 (the variance is ``s^2 pi^2 / 3``).
    num_bins
        Number of values, 256 for 8-bit data.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmcvae.distributions import DiscretizedLogistic
    >>> d = DiscretizedLogistic(0.5, 0.1)
    >>> float(d.log_prob(jnp.array(128 / 255)))  # the bin at the mode holds about w / (4 s) = 0.0098
    -4.625
    >>> float(jnp.exp(d.log_prob(jnp.arange(256) / 255)).sum())  # the bins' probabilities sum to one
    1.0
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    reparametrized_params = []

    def __init__(self, loc, scale, *, num_bins: int = 256, validate_args=None):
        self.loc, self.scale = promote_shapes(loc, scale)
        self.num_bins = int(num_bins)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def log_prob(self, value):
        half_width = 0.5 / (self.num_bins - 1)
        inv_scale = 1.0 / self.scale
        upper = (value + half_width - self.loc) * inv_scale
        lower = (value - half_width - self.loc) * inv_scale
        # Interior bins; the argument of log1p is clipped so the unused branches of `where` stay finite.
        interior = (
            jax.nn.log_sigmoid(upper)
            + jax.nn.log_sigmoid(-lower)
            + jnp.log(-jnp.expm1(jnp.minimum(lower - upper, -1e-12)))
        )
        first = jax.nn.log_sigmoid(upper)  # mass of (-inf, x_0 + w/2]
        last = jax.nn.log_sigmoid(-lower)  # mass of [x_K - w/2, +inf)
        return jnp.where(value < half_width, first, jnp.where(value > 1.0 - half_width, last, interior))

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        noise = jax.random.logistic(key, shape)
        continuous = self.loc + self.scale * noise
        bins = jnp.clip(jnp.round(continuous * (self.num_bins - 1)), 0, self.num_bins - 1)
        return bins / (self.num_bins - 1)

    @property
    def mean(self):
        # The mean of the clipped, quantised variable has no closed form; the location is what decoders report.
        return jnp.clip(self.loc, 0.0, 1.0) * jnp.ones(self.batch_shape)
