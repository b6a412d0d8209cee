r"""The linear hierarchical VAE of section 6.7: exact Gaussian prior, marginal, posterior and log-likelihood.

The model is the top-down model of :mod:`mcmcvae.hierarchical.base` with every block linear and constant scales
(so it is jointly Gaussian):

.. math::

    z^1 \sim N(0, I), \qquad
    d^l = z^{l-1} A_l + d^{l-1} B_l + a_l \;(d^l \in \mathbb{R}^{d_l},\; B_2 = 0), \qquad
    z^l \sim N(d^l, \operatorname{diag}(\sigma_l^2)), \qquad
    x \sim N(z^L W + d^L V + b, \sigma_x^2 I).

Stacking the layers, ``z = G z + c + S eps`` with ``G`` strictly block-lower-triangular (the prior means' linear
maps), ``c`` their offsets and ``S = diag(sigma)``; and ``x = H z + b + sigma_x eps_x``. :class:`LinearGaussian`
holds ``(G, c, S, H, b, sigma_x)``, read off the model's own mean functions by ``jax.jacfwd`` (exact for affine
maps, so the formulas and the NumPyro model cannot drift apart), and gives in closed form

.. math::

    \mu_z = (I - G)^{-1} c, \qquad \Sigma_z = (I - G)^{-1} S^2 (I - G)^{-\top}, \\
    x \sim N(\mu_x, \Sigma_x), \quad \mu_x = H \mu_z + b, \quad \Sigma_x = H \Sigma_z H^\top + \sigma_x^2 I, \\
    \Sigma_{z|x} = \big(\Sigma_z^{-1} + \sigma_x^{-2} H^\top H\big)^{-1}  \quad\text{(eq. 12)}, \qquad
    \mu_{z|x} = \Sigma_{z|x}\big(\Sigma_z^{-1}\mu_z + \sigma_x^{-2} H^\top (x - b)\big),

with ``Sigma_z^{-1} = (I - G)^T S^{-2} (I - G)`` formed without inverting anything, and the exact
``log p(x) = log N(x; mu_x, Sigma_x)``. The posterior covariance does not depend on ``x``.

The linear encoder (section 6.7.2) is the residual posterior with linear blocks and constant scales:
``d'^L = x E_L + e_L``, ``d'^l = d'^{l+1} E_l + e_l`` and
``Delta mu_l = d'^l P_l + d^l Q_l + p_l``, ``Delta sigma_l = exp(rho_l)``, so ``q`` is Gaussian too, with
cross-layer dependence through ``d^l`` and a diagonal covariance within each layer given the layers above.

:func:`make_dataset` draws the synthetic ``linear_hvae`` data from a fixed generating model.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.hierarchical.base import TopDownModel, fill_params
from mcmcvae.types import Array, Params, PRNGKey

__all__ = [
    "LinearGaussian",
    "LinearHVAE",
    "LinearHVAEDataset",
    "condition_number",
    "generating_params",
    "make_dataset",
]


class LinearGaussian(NamedTuple):
    r"""A linear Gaussian latent model ``z = G z + c + S eps``, ``x = H z + b + sigma_x eps_x``.

    Attributes
    ----------
    prior_weights
        ``G``, ``(d, d)``, strictly lower triangular.
    prior_offset
        ``c``, ``(d,)``.
    prior_scale
        The diagonal of ``S``, ``(d,)``.
    observation_weights
        ``H``, ``(D, d)``.
    observation_offset
        ``b``, ``(D,)``.
    observation_scale
        ``sigma_x``, a scalar.
    """

    prior_weights: Array
    prior_offset: Array
    prior_scale: Array
    observation_weights: Array
    observation_offset: Array
    observation_scale: Array

    @property
    def latent_dim(self) -> int:
        return self.prior_offset.shape[-1]

    def _unit_lower(self) -> Array:
        return jnp.eye(self.latent_dim) - self.prior_weights

    def prior_mean(self) -> Array:
        """``mu_z = (I - G)^{-1} c``."""
        return jax.scipy.linalg.solve_triangular(self._unit_lower(), self.prior_offset, lower=True)

    def prior_covariance(self) -> Array:
        """``Sigma_z = (I - G)^{-1} S^2 (I - G)^{-T}``."""
        factor = jax.scipy.linalg.solve_triangular(self._unit_lower(), jnp.diag(self.prior_scale), lower=True)
        return factor @ factor.T

    def prior_precision(self) -> Array:
        """``Sigma_z^{-1} = (I - G)^T S^{-2} (I - G)``."""
        whitened = self._unit_lower() / self.prior_scale[:, None]
        return whitened.T @ whitened

    def marginal_mean(self) -> Array:
        """``mu_x = H mu_z + b``."""
        return self.observation_weights @ self.prior_mean() + self.observation_offset

    def marginal_covariance(self) -> Array:
        """``Sigma_x = H Sigma_z H^T + sigma_x^2 I``."""
        h = self.observation_weights
        return h @ self.prior_covariance() @ h.T + jnp.square(self.observation_scale) * jnp.eye(h.shape[0])

    def posterior_precision(self) -> Array:
        """``Sigma_{z|x}^{-1} = Sigma_z^{-1} + sigma_x^{-2} H^T H``, the same for every ``x``."""
        h = self.observation_weights
        return self.prior_precision() + h.T @ h / jnp.square(self.observation_scale)

    def posterior_covariance(self) -> Array:
        """``Sigma_{z|x}`` of eq. (12)."""
        factor = jnp.linalg.cholesky(self.posterior_precision())
        inverse_factor = jax.scipy.linalg.solve_triangular(factor, jnp.eye(self.latent_dim), lower=True)
        return inverse_factor.T @ inverse_factor

    def posterior_mean(self, x: Array) -> Array:
        """``mu_{z|x}`` for ``x (D,)`` or a batch ``(n, D)``."""
        whitened = self._unit_lower() / self.prior_scale[:, None]
        prior_term = whitened.T @ (self.prior_offset / self.prior_scale)
        data_term = (x - self.observation_offset) @ self.observation_weights / jnp.square(self.observation_scale)
        factor = jnp.linalg.cholesky(self.posterior_precision())
        return jax.scipy.linalg.cho_solve((factor, True), (prior_term + data_term).T).T

    def log_marginal(self, x: Array) -> Array:
        """The exact ``log p(x) = log N(x; mu_x, Sigma_x)`` for ``x (D,)`` or ``(n, D)``."""
        return jax.scipy.stats.multivariate_normal.logpdf(x, self.marginal_mean(), self.marginal_covariance())

    def log_joint(self, x: Array, z: Array) -> Array:
        """``log N(z; mu_z, Sigma_z) + log N(x; H z + b, sigma_x^2 I)`` (an independent check of the model)."""
        prior = jax.scipy.stats.multivariate_normal.logpdf(z, self.prior_mean(), self.prior_covariance())
        mean = z @ self.observation_weights.T + self.observation_offset
        likelihood = jnp.sum(jax.scipy.stats.norm.logpdf(x, mean, self.observation_scale), axis=-1)
        return prior + likelihood

    def rescale_observations(self, offset, scale) -> LinearGaussian:
        """The model of ``offset + scale * x``: what a model learnt on affinely mapped data says about the data."""
        return self._replace(observation_weights=scale * self.observation_weights,
                             observation_offset=offset + scale * self.observation_offset,
                             observation_scale=scale * self.observation_scale)


def condition_number(matrix) -> float:
    """``lambda_max / lambda_min`` of a symmetric positive definite matrix, computed on the host in float64."""
    eigenvalues = np.linalg.eigvalsh(np.asarray(matrix, np.float64))
    return float(eigenvalues[-1] / eigenvalues[0])


@dataclasses.dataclass(frozen=True)
class LinearHVAE(TopDownModel):
    """The linear hierarchical VAE of section 6.7, with exact Gaussian quantities (:meth:`linear_gaussian`).

    Parameters
    ----------
    image_shape
        ``(D, 1, 1)``: data are vectors of length ``D``.
    latent_sizes
        ``(d_1, ..., d_L)``, e.g. ``(10, 20)``; the state ``d^l`` has ``d_l`` coordinates.
    likelihood_scale
        ``sigma_x`` (its initial value when ``learn_likelihood_scale``).
    learn_likelihood_scale
        Learn ``sigma_x`` (default) or hold it fixed.
    init_scale
        Standard deviation of the initial weights times ``sqrt(fan_in)``.

    Examples
    --------
    >>> import jax
    >>> from mcmcvae.hierarchical import LinearHVAE
    >>> model = LinearHVAE(image_shape=(40, 1, 1), latent_sizes=(10, 20))
    >>> params = jax.jit(model.init)(jax.random.key(0))
    >>> exact = jax.jit(model.linear_gaussian)(params)
    >>> exact.posterior_covariance().shape
    (30, 30)
    """

    image_shape: tuple[int, int, int]
    latent_sizes: tuple[int, ...]
    likelihood: str = "gaussian"
    likelihood_scale: float = 1.0
    learn_likelihood_scale: bool = True
    init_scale: float = 1.0

    KIND = "linear_hvae"

    def __post_init__(self):
        self._check_common()
        if self.likelihood != "gaussian":
            raise ValueError(f"LinearHVAE has a Gaussian likelihood, got likelihood={self.likelihood!r}")
        if self.image_shape[1:] != (1, 1):
            raise ValueError(f"LinearHVAE takes vector data of shape (D, 1, 1), got image_shape={self.image_shape}")

    # ------------------------------------------------------------------------------------------- params
    def _block_shapes(self) -> dict:
        sizes, D, L = self.latent_sizes, self.image_shape[0], len(self.latent_sizes)
        prior, encoder = {}, {}
        for l in range(2, L + 1):
            block = {"z_weight": (sizes[l - 2], sizes[l - 1]), "bias": (sizes[l - 1],)}
            if l >= 3:
                block["state_weight"] = (sizes[l - 2], sizes[l - 1])
            prior[f"state_{l}"] = block
            prior[f"log_scale_{l}"] = (sizes[l - 1],)
        encoder[f"bottom_up_{L}"] = {"weight": (D, sizes[-1]), "bias": (sizes[-1],)}
        for l in range(L - 1, 0, -1):
            encoder[f"bottom_up_{l}"] = {"weight": (sizes[l], sizes[l - 1]), "bias": (sizes[l - 1],)}
        for l in range(1, L + 1):
            block = {"up_weight": (sizes[l - 1], sizes[l - 1]), "bias": (sizes[l - 1],), "log_scale": (sizes[l - 1],)}
            if l >= 2:
                block["state_weight"] = (sizes[l - 1], sizes[l - 1])
            encoder[f"posterior_{l}"] = block
        decoder = {"z_weight": (sizes[-1], D), "bias": (D,)}
        if L >= 2:
            decoder["state_weight"] = (sizes[-1], D)
        return {"encoder": encoder, "decoder": decoder, "prior": prior}

    def _init_blocks(self, rng_key: PRNGKey):
        """Weights ``N(0, init_scale^2 / fan_in)``; biases and log-scales zero (every scale starts at one)."""
        shapes = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), self._block_shapes(),
                                        is_leaf=lambda s: isinstance(s, tuple))
        return fill_params(rng_key, shapes, init_scale=self.init_scale)

    # ----------------------------------------------------------------------------------------------- hooks
    def _prior_head(self, params, layer, state):
        scale = jnp.exp(params["prior"][f"log_scale_{layer + 1}"])
        return state, jnp.broadcast_to(scale, state.shape)

    def _next_state(self, params, layer, z_layer, state):
        block = params["prior"][f"state_{layer + 2}"]
        out = z_layer @ block["z_weight"] + block["bias"]
        if state is not None:
            out = out + state @ block["state_weight"]
        return out

    def _bottom_up(self, params, images):
        enc, L = params["encoder"], self.num_layers
        h = images.reshape(*images.shape[:-3], -1) @ enc[f"bottom_up_{L}"]["weight"] + enc[f"bottom_up_{L}"]["bias"]
        out = [h]
        for l in range(L - 1, 0, -1):
            h = h @ enc[f"bottom_up_{l}"]["weight"] + enc[f"bottom_up_{l}"]["bias"]
            out.append(h)
        return out[::-1]

    def _posterior_delta(self, params, layer, state, bottom_up):
        block = params["encoder"][f"posterior_{layer + 1}"]
        loc = bottom_up @ block["up_weight"] + block["bias"]
        if state is not None:
            loc = loc + state @ block["state_weight"]
        return loc, jnp.broadcast_to(jnp.exp(block["log_scale"]), loc.shape)

    def _decode(self, params, z_last, state):
        dec = params["decoder"]
        flat = z_last @ dec["z_weight"] + dec["bias"]
        if state is not None:
            flat = flat + state @ dec["state_weight"]
        return flat.reshape(*flat.shape[:-1], *self.image_shape)

    # ------------------------------------------------------------------------------------------ exact
    def linear_gaussian(self, params: Params) -> LinearGaussian:
        """The model's ``(G, c, S, H, b, sigma_x)``, read off its mean functions with ``jax.jacfwd``."""
        zero = jnp.zeros(self.latent_dim)

        def prior_means(z):
            return jnp.concatenate(self.prior_layers(params, z)[0], axis=-1)

        def observation_mean(z):
            return self.decode(params, z).reshape(-1)

        scale = jnp.concatenate(self.prior_layers(params, zero)[1], axis=-1)
        return LinearGaussian(jax.jacfwd(prior_means)(zero), prior_means(zero), scale,
                              jax.jacfwd(observation_mean)(zero), observation_mean(zero),
                              self._likelihood_scale(params))

    def log_marginal(self, params: Params, images: Array) -> Array:
        """The exact ``log p(x)`` of each data point ``images (n, D, 1, 1)``, ``(n,)``."""
        return self.linear_gaussian(params).log_marginal(images.reshape(images.shape[0], -1))

    def mean_image(self, params: Params, z: Array) -> Array:
        """The mean ``H z + b`` of ``p(x | z)`` (vector data: nothing is clipped)."""
        return self.decode(params, z)

    def validate_images(self, images) -> None:
        """Vector data ``(n, D, 1, 1)``, finite; any real values (no [0, 1] range as for images)."""
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"data must have shape (n, {self.image_shape[0]}, 1, 1), got {images.shape}; "
                             "reshape vectors x (n, D) with x[:, :, None, None]")
        if not np.all(np.isfinite(images)):
            raise ValueError("data contain NaN or infinite values; clean or drop those points")


# ---------------------------------------------------------------------------------------------- data
class LinearHVAEDataset(NamedTuple):
    """Synthetic ``linear_hvae`` data and the model that generated them.

    Attributes
    ----------
    images
        ``(n, D, 1, 1)`` float32 draws of ``x``.
    latents
        ``(n, d)`` the ``z`` they were drawn with.
    model, params
        The generating :class:`LinearHVAE` and its parameters (``model.linear_gaussian(params)`` is exact).
    """

    images: np.ndarray
    latents: np.ndarray
    model: LinearHVAE
    params: Params


def generating_params(model: LinearHVAE, seed: int = 0) -> Params:
    r"""The documented generating model's parameters for ``model.latent_sizes`` (a fixed function of ``seed``).

    Drawn on the host with ``numpy.random.default_rng(seed)``, in the order of ``model``'s parameter tree:
    ``A_l``, ``B_l``, ``W`` and ``V`` have i.i.d. ``N(0, 1/fan_in)`` entries, the offsets ``a_l`` and ``b`` i.i.d.
    ``N(0, 1)`` entries, the prior scales of the lower layers are ``sigma_l = 0.5`` (``z^1 ~ N(0, I)``) and the
    observation standard deviation is ``model.likelihood_scale`` (0.5 for :func:`make_dataset`). The encoder's
    weights are ``N(0, 1/fan_in)`` too (they play no part in the data).
    """
    rng = np.random.default_rng(seed)
    shapes = model._block_shapes()

    def draw(path, shape):
        name = jax.tree_util.keystr(path)
        if "log_scale" in name:
            return jnp.asarray(np.full(shape, np.log(0.5)), jnp.float32)
        if "bias" in name:
            return jnp.asarray(rng.standard_normal(shape), jnp.float32)
        return jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[0]), jnp.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes, is_leaf=lambda s: isinstance(s, tuple))
    params["likelihood"] = {}
    if model.learn_likelihood_scale:
        params["likelihood"] = {"log_scale": jnp.asarray(np.log(model.likelihood_scale), jnp.float32)}
    return params


def make_dataset(latent_sizes=(10, 20), *, data_dim: int | None = None, num_samples: int = 1000,
                 observation_std: float = 0.5, seed: int = 0, split: str = "train") -> LinearHVAEDataset:
    r"""The synthetic ``linear_hvae`` data: draws of ``x`` from a fixed linear hierarchical model.

    The generating model is a :class:`LinearHVAE` with the given ``latent_sizes``, data dimension
    ``D = data_dim`` (default ``2 d_L``, twice the lowest layer's size), observation standard deviation
    ``observation_std`` (0.5) and the parameters of :func:`generating_params` ``(seed)``. The ``"train"`` and
    ``"test"`` splits share the model and use independent draws: ``z = (I - G)^{-1}(c + S eps)``,
    ``x = H z + b + sigma_x eps_x`` with the model's exact :class:`LinearGaussian` structure and noise from
    ``numpy.random.default_rng([seed, 1])`` (train) or ``[seed, 2]`` (test).

    Parameters
    ----------
    latent_sizes
        ``(d_1, ..., d_L)`` of the generating model, e.g. ``(10, 20)`` or ``(50, 100)``.
    data_dim
        ``D``.
    num_samples
        Data points (1000 in the paper).
    observation_std
        ``sigma_x`` of the generating model.
    seed
        Fixes the generating model; the splits' draws also derive from it.
    split
        ``"train"`` or ``"test"``.

    Returns
    -------
    LinearHVAEDataset

    Examples
    --------
    >>> from mcmcvae.hierarchical import make_dataset
    >>> data = make_dataset((10, 20))
    >>> data.images.shape
    (1000, 40, 1, 1)
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    latent_sizes = tuple(int(s) for s in latent_sizes)
    data_dim = 2 * latent_sizes[-1] if data_dim is None else int(data_dim)
    model = LinearHVAE(image_shape=(data_dim, 1, 1), latent_sizes=latent_sizes, likelihood_scale=observation_std,
                       learn_likelihood_scale=False)
    params = generating_params(model, seed)
    exact = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), jax.jit(model.linear_gaussian)(params))
    rng = np.random.default_rng([seed, {"train": 1, "test": 2}[split]])
    noise = exact.prior_offset + exact.prior_scale * rng.standard_normal((num_samples, model.latent_dim))
    latents = np.linalg.solve(np.eye(model.latent_dim) - exact.prior_weights, noise.T).T
    images = (latents @ exact.observation_weights.T + exact.observation_offset
              + exact.observation_scale * rng.standard_normal((num_samples, data_dim)))
    return LinearHVAEDataset(images[:, :, None, None].astype(np.float32), latents.astype(np.float32), model, params)
