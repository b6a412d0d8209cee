r"""What every top-down hierarchical VAE shares: the NumPyro model, the residual posterior and its KL.

Hirt, Kreouzis and Dellaportas (Stat. Comput. 2024), section 5. The latent is split into ``L`` layers
``z = (z^1, ..., z^L)`` (``z^1`` at the top, ``z^L`` next to the data) and the model runs top-down with
deterministic states ``d^l``:

.. math::

    z^1 \sim N(0, I), \qquad d^l = h_l(z^{l-1}, d^{l-1}) \;(l \ge 2), \qquad
    z^l = \mu_l(d^l) + \sigma_l(d^l) \odot \varepsilon_l, \qquad x \sim p(x \mid z^L, d^L).

The encoder computes bottom-up states ``d'^L = f_L(x)``, ``d'^l = f_l(d'^{l+1})`` and the residual posterior of
eq. (9) adjusts the prior's mean and scale layer by layer, sharing the top-down pass with the prior:

.. math::

    q(z^l \mid x, z^{<l}) = N\big(\mu_l(d^l) + \Delta\mu_l(d^l, d'^l),\;
                                  \sigma_l(d^l) \odot \Delta\sigma_l(d^l, d'^l)\big),

so that each layer's KL divergence has the closed form of eq. (10) (per coordinate ``i``),

.. math::

    \mathrm{KL}\big(q(z^l \mid x, z^{<l}) \,\|\, p(z^l \mid z^{<l})\big)
    = \tfrac12 \sum_i \Big(\frac{\Delta\mu_{l,i}^2}{\sigma_{l,i}^2} + \Delta\sigma_{l,i}^2
                          - \log \Delta\sigma_{l,i}^2 - 1\Big).

MCMC methods see one flat latent ``z = concat(z^1, ..., z^L)`` of dimension ``d = sum_l d_l``: ``log p(x, z)``
comes from the NumPyro model through ``numpyro.infer.util.log_density``, exactly as for
:class:`mcmcvae.models.VAE`, so :class:`mcmcvae.methods.MCMC` and the trainer run unchanged.

:class:`TopDownModel` implements all of this once; a concrete model (:class:`mcmcvae.hierarchical.TopDownHVAE`
with MLP blocks, :class:`mcmcvae.hierarchical.LinearHVAE` with linear maps) only says how its blocks compute
``(mu_l, sigma_l)``, ``h_l``, ``f_l``, ``(Delta mu_l, Delta sigma_l)`` and the observation's parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.util import log_density

from mcmcvae.models import likelihood_distribution, likelihood_scale
from mcmcvae.types import Array, Params, PRNGKey

__all__ = ["LIKELIHOODS", "MIN_SCALE", "SCALE_OFFSET", "PosteriorPass", "TopDownModel", "fill_params",
           "positive_scale", "residual_normal_kl"]

LIKELIHOODS = ("bernoulli", "logistic256", "gaussian")
# softplus(0 + SCALE_OFFSET) = 1: scale heads start at one, so a fresh model has q = p layer by layer.
SCALE_OFFSET = float(np.log(np.expm1(1.0)))
MIN_SCALE = 1e-4


def positive_scale(raw: Array) -> Array:
    """``softplus(raw + log(e - 1)) + 1e-4``: equals ~1 at ``raw = 0`` and never reaches zero."""
    return jax.nn.softplus(raw + SCALE_OFFSET) + MIN_SCALE


def fill_params(rng_key: PRNGKey, shapes, *, init_scale: float = 1.0):
    """Parameters for a pytree of shapes: weights ``N(0, init_scale^2 / fan_in)``, biases and log-scales zero.

    A leaf is a bias (or log-scale) when its name is ``b``, ``bias`` or contains ``log_scale``; every other leaf
    is a weight matrix whose first axis is ``fan_in``. All weights come from one draw of ``jax.random.normal``,
    split on the host when not traced: one small compilation instead of one per layer, which matters on CPUs
    where compiling Haiku's per-layer initialisers takes tens of seconds.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    shapes_only = [tuple(leaf.shape) for _, leaf in leaves]
    is_weight = []
    for path, _ in leaves:
        name = str(getattr(path[-1], "key", path[-1]))
        is_weight.append(not (name in ("b", "bias") or "log_scale" in name))
    total = sum(int(np.prod(s)) for s, w in zip(shapes_only, is_weight) if w)
    flat = jax.random.normal(rng_key, (max(total, 1),))
    xp = jnp if isinstance(flat, jax.core.Tracer) else np
    flat = flat if xp is jnp else np.asarray(flat)
    out, start = [], 0
    for shape, weight in zip(shapes_only, is_weight):
        size = int(np.prod(shape))
        if weight:
            value = flat[start:start + size].reshape(shape) * (init_scale / np.sqrt(shape[0]))
            start += size
        else:
            value = xp.zeros(shape, np.float32)
        out.append(jnp.asarray(value, jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, out)


def residual_normal_kl(delta_loc: Array, delta_scale: Array, prior_scale: Array) -> Array:
    r"""Eq. (10): ``KL(N(mu + Delta mu, (sigma Delta sigma)^2) || N(mu, sigma^2))`` summed over the last axis.

    Parameters
    ----------
    delta_loc, delta_scale
        The posterior's adjustments ``Delta mu`` and ``Delta sigma > 0`` of one layer, ``(..., d_l)``.
    prior_scale
        The prior's ``sigma``, ``(..., d_l)``.

    Returns
    -------
    Array
        ``(...)``, the KL divergence in nats.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmcvae.hierarchical import residual_normal_kl
    >>> residual_normal_kl(jnp.zeros(3), jnp.ones(3), jnp.ones(3))  # q = p
    Array(0., dtype=float32)
    """
    ratio = jnp.square(delta_scale)
    return 0.5 * jnp.sum(jnp.square(delta_loc / prior_scale) + ratio - jnp.log(ratio) - 1.0, axis=-1)


class PosteriorPass(NamedTuple):
    """One top-down pass of the hierarchical posterior for a batch (from :meth:`TopDownModel.posterior_pass`).

    Attributes
    ----------
    z
        ``(n, d)``, the flat joint latent drawn (or the mean path when the noise is zero).
    log_q
        ``(n,)``, ``log q(z | x) = sum_l log q(z^l | x, z^{<l})``.
    kl
        ``(n, L)``, the closed-form per-layer KL of eq. (10) at the drawn ``z^{<l}``.
    loc, scale
        ``(n, d)``, the posterior's per-layer means and scales, concatenated.
    prior_loc, prior_scale
        ``(n, d)``, the prior's ``mu_l(d^l)`` and ``sigma_l(d^l)`` along the same pass, concatenated.
    """

    z: Array
    log_q: Array
    kl: Array
    loc: Array
    scale: Array
    prior_loc: Array
    prior_scale: Array


@dataclasses.dataclass(frozen=True)
class TopDownModel:
    """Base class of the top-down hierarchical VAEs: the generic model, posterior and model interface.

    Subclasses are frozen dataclasses with the fields ``image_shape``, ``latent_sizes``, ``likelihood``,
    ``likelihood_scale`` and ``learn_likelihood_scale`` and implement the hooks ``_init_blocks``,
    ``_prior_head``, ``_next_state``, ``_bottom_up``, ``_posterior_delta`` and ``_decode``, each acting on the last
    axis of arrays with any leading (batch) shape. Layer indices in the hooks are 0-based (``layer = l - 1``).
    """

    KIND = "topdown_base"

    # ----------------------------------------------------------------------------------------- the shape
    @property
    def num_layers(self) -> int:
        """L."""
        return len(self.latent_sizes)

    @property
    def latent_dim(self) -> int:
        """``d = sum_l d_l``, the size of the flat joint latent the MCMC methods act on."""
        return int(sum(self.latent_sizes))

    @property
    def data_dim(self) -> int:
        return int(np.prod(self.image_shape))

    @property
    def layer_slices(self) -> tuple[slice, ...]:
        """Where each layer ``z^l`` sits in the flat ``z``."""
        ends = np.cumsum(self.latent_sizes)
        return tuple(slice(int(e - s), int(e)) for s, e in zip(self.latent_sizes, ends))

    def split(self, z: Array) -> list[Array]:
        """``[z^1, ..., z^L]`` from a flat ``z (..., d)``."""
        return [z[..., s] for s in self.layer_slices]

    def _check_common(self):
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        object.__setattr__(self, "latent_sizes", tuple(int(s) for s in self.latent_sizes))
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (H, W, C), got {self.image_shape}; use (D, 1, 1) for vectors")
        if not self.latent_sizes or min(self.latent_sizes) < 1:
            raise ValueError(f"latent_sizes must be one or more positive layer sizes, got {self.latent_sizes}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.likelihood_scale <= 0:
            raise ValueError(f"likelihood_scale must be positive, got {self.likelihood_scale}")

    # ------------------------------------------------------------------------------------ hooks (abstract)
    def _init_blocks(self, rng_key: PRNGKey) -> dict[str, Any]:
        """``{"encoder", "decoder", "prior"}`` parameter groups."""
        raise NotImplementedError

    def _prior_head(self, params: Params, layer: int, state: Array) -> tuple[Array, Array]:
        """``(mu_l(d^l), sigma_l(d^l))`` for ``layer >= 1``."""
        raise NotImplementedError

    def _next_state(self, params: Params, layer: int, z_layer: Array, state: Array | None) -> Array:
        """``d^{l+1} = h_{l+1}(z^l, d^l)``; ``state`` is None at the top (``layer = 0``)."""
        raise NotImplementedError

    def _bottom_up(self, params: Params, images: Array) -> list[Array]:
        """``[d'^1, ..., d'^L]`` from images ``(..., H, W, C)``."""
        raise NotImplementedError

    def _posterior_delta(self, params: Params, layer: int, state: Array | None,
                         bottom_up: Array) -> tuple[Array, Array]:
        """``(Delta mu_l, Delta sigma_l)`` from ``d^l`` (None at the top) and ``d'^l``."""
        raise NotImplementedError

    def _decode(self, params: Params, z_last: Array, state: Array | None) -> Array:
        """The likelihood's parameters ``(..., H, W, C)`` from ``z^L`` and ``d^L`` (None when L = 1)."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------- parameters
    def init(self, rng_key: PRNGKey) -> Params:
        """Initial parameters ``{"encoder", "decoder", "prior", "likelihood"}``.

        ``encoder`` (phi0: bottom-up nets and the residual heads Delta mu, Delta sigma) is trained by the ELBO;
        ``decoder``, ``prior`` (h_l, mu_l, sigma_l) and ``likelihood`` (theta) also at the chain's end by the MCMC
        methods.
        """
        params = dict(self._init_blocks(rng_key))
        params["likelihood"] = {}
        if self.learn_likelihood_scale and self.likelihood != "bernoulli":
            params["likelihood"] = {"log_scale": jnp.asarray(np.log(self.likelihood_scale), jnp.float32)}
        return params

    # ---------------------------------------------------------------------------------------- the prior
    def prior_layers(self, params: Params, z: Array) -> tuple[list[Array], list[Array], Array | None]:
        """The prior's conditionals along a given ``z (..., d)``: ``([mu_l], [sigma_l], d^L)``.

        ``mu_l`` and ``sigma_l`` are those of ``p(z^l | z^{<l})`` at the given ``z^{<l}``.
        """
        layers = self.split(z)
        state, locs, scales = None, [], []
        for layer, z_layer in enumerate(layers):
            loc, scale = self._layer_prior(params, layer, state, z_layer.shape[:-1])
            locs.append(loc)
            scales.append(scale)
            if layer + 1 < self.num_layers:
                state = self._next_state(params, layer, z_layer, state)
        return locs, scales, state

    def _layer_prior(self, params, layer, state, batch_shape):
        if layer == 0:
            size = self.latent_sizes[0]
            return jnp.zeros((*batch_shape, size)), jnp.ones((*batch_shape, size))
        return self._prior_head(params, layer, state)

    def _likelihood_scale(self, params: Params) -> Array:
        return likelihood_scale(params, self.likelihood_scale)

    def likelihood_distribution(self, params: Params, decoded: Array) -> dist.Distribution:
        """``p(x | z^L, d^L)`` given the decoder's output; event shape ``(H, W, C)``."""
        return likelihood_distribution(self.likelihood, decoded, self._likelihood_scale(params))

    def model(self, params: Params, x: Array | None = None):
        """The NumPyro model of one data point: ``z^1, ..., z^L`` top-down (sites ``"z1"`` ...), then ``x``."""
        state = None
        z_layer = None
        for layer in range(self.num_layers):
            loc, scale = self._layer_prior(params, layer, state, ())
            z_layer = numpyro.sample(f"z{layer + 1}", dist.Normal(loc, scale).to_event(1))
            if layer + 1 < self.num_layers:
                state = self._next_state(params, layer, z_layer, state)
        decoded = self._decode(params, z_layer, state)
        return numpyro.sample("x", self.likelihood_distribution(params, decoded), obs=x)

    def _sites(self, z: Array) -> dict[str, Array]:
        return {f"z{layer + 1}": value for layer, value in enumerate(self.split(z))}

    def log_joint(self, params: Params, x: Array, z: Array) -> Array:
        """``log p(x, z)`` of one data point ``x (H, W, C)`` at the flat ``z (d,)``, via NumPyro's ``log_density``."""
        value, _ = log_density(self.model, (params, x), {}, self._sites(z))
        return value

    def log_joint_batch(self, params: Params, images: Array, z: Array) -> Array:
        """``log p(x_i, z_i)`` for a batch: ``images (n, H, W, C)``, ``z (n, d)`` -> ``(n,)``."""
        return jax.vmap(self.log_joint, in_axes=(None, 0, 0))(params, images, z)

    def decode(self, params: Params, z: Array) -> Array:
        """The likelihood's parameters for flat latents ``(..., d)``: ``(..., H, W, C)``."""
        _, _, state = self.prior_layers(params, z)
        return self._decode(params, self.split(z)[-1], state)

    def mean_image(self, params: Params, z: Array) -> Array:
        """The mean of ``p(x | z)`` for latents ``(n, d)`` (Bernoulli: probabilities): what a sample grid shows."""
        decoded = self.decode(params, z)
        if self.likelihood == "bernoulli":
            return jax.nn.sigmoid(decoded)
        return jnp.clip(decoded, 0.0, 1.0)

    def sample_prior(self, rng_key: PRNGKey, params: Params, num_samples: int) -> Array:
        """``num_samples`` ancestral draws of the flat ``z`` from the NumPyro model, ``(n, d)``."""
        return self.sample_joint(rng_key, params, num_samples)[1]

    def sample_joint(self, rng_key: PRNGKey, params: Params, num_samples: int) -> tuple[Array, Array]:
        """``num_samples`` draws ``(x, z)`` of the generative model, ``(n, H, W, C)`` and ``(n, d)``."""
        def one(key):
            trace = handlers.trace(handlers.seed(self.model, key)).get_trace(params)
            z = jnp.concatenate([trace[f"z{layer + 1}"]["value"] for layer in range(self.num_layers)], axis=-1)
            return trace["x"]["value"], z

        return jax.vmap(one)(jax.random.split(rng_key, num_samples))

    # ------------------------------------------------------------------------------------ the posterior
    def posterior_pass(self, params: Params, images: Array, noise: Array, *, scale_factor: float = 1.0
                       ) -> PosteriorPass:
        r"""One top-down pass of ``q(z | x)`` for a batch, with the noise given.

        ``z^l = loc_l + scale_factor * scale_l * noise^l`` layer by layer, where ``loc_l = mu_l + Delta mu_l``
        and ``scale_l = sigma_l * Delta sigma_l`` are computed from ``d^l = h_l(z^{l-1}, d^{l-1})`` at the drawn
        ``z^{l-1}`` (eq. 9). ``scale_factor > 1`` widens every layer (an importance proposal); ``log_q`` is the
        log density of the widened ``q``, while ``kl`` and ``scale`` always describe ``q`` itself.

        Parameters
        ----------
        params
            The model's parameters.
        images
            ``(n, H, W, C)``.
        noise
            ``(n, d)`` standard normal draws; zeros give the mean path used by :meth:`encode`.
        scale_factor
            Multiplies every posterior scale when drawing ``z``.

        Returns
        -------
        PosteriorPass
        """
        bottom_up = self._bottom_up(params, images)
        return self._posterior_from_bottom_up(params, bottom_up, noise, scale_factor)

    def _posterior_from_bottom_up(self, params, bottom_up, noise, scale_factor=1.0) -> PosteriorPass:
        state = None
        out = {k: [] for k in ("z", "loc", "scale", "prior_loc", "prior_scale", "log_q", "kl")}
        batch_shape = noise.shape[:-1]
        for layer, eps in enumerate(self.split(noise)):
            prior_loc, prior_scale = self._layer_prior(params, layer, state, batch_shape)
            delta_loc, delta_scale = self._posterior_delta(params, layer, state, bottom_up[layer])
            loc, scale = prior_loc + delta_loc, prior_scale * delta_scale
            z_layer = loc + scale_factor * scale * eps
            out["log_q"].append(jnp.sum(jax.scipy.stats.norm.logpdf(z_layer, loc, scale_factor * scale), axis=-1))
            out["kl"].append(residual_normal_kl(delta_loc, delta_scale, prior_scale))
            for key, value in (("z", z_layer), ("loc", loc), ("scale", scale), ("prior_loc", prior_loc),
                               ("prior_scale", prior_scale)):
                out[key].append(value)
            if layer + 1 < self.num_layers:
                state = self._next_state(params, layer, z_layer, state)
        cat = {k: jnp.concatenate(out[k], axis=-1) for k in ("z", "loc", "scale", "prior_loc", "prior_scale")}
        return PosteriorPass(log_q=sum(out["log_q"]), kl=jnp.stack(out["kl"], axis=-1), **cat)

    def sample_q(self, rng_key: PRNGKey, params: Params, images: Array, num_samples: int | None = None, *,
                 scale_factor: float = 1.0) -> tuple[Array, Array]:
        """Reparameterised draws from the hierarchical ``q(z | x)`` (every scale times ``scale_factor``).

        Returns ``z`` ``(n, d)`` (or ``(num_samples, n, d)``) and ``log q(z | x)`` ``(n,)`` (or
        ``(num_samples, n)``). The bottom-up pass runs once for all ``num_samples``.
        """
        n = images.shape[0]
        bottom_up = self._bottom_up(params, images)
        if num_samples is None:
            noise = jax.random.normal(rng_key, (n, self.latent_dim))
            result = self._posterior_from_bottom_up(params, bottom_up, noise, scale_factor)
            return result.z, result.log_q
        noise = jax.random.normal(rng_key, (num_samples, n, self.latent_dim))
        result = jax.vmap(lambda e: self._posterior_from_bottom_up(params, bottom_up, e, scale_factor))(noise)
        return result.z, result.log_q

    def sample_q0(self, rng_key: PRNGKey, params: Params, images: Array, num_samples: int | None = None):
        """The methods' warm start: :meth:`sample_q` with ``q`` itself (``q0`` of Algorithm 1 is the hierarchical q)."""
        return self.sample_q(rng_key, params, images, num_samples)

    def encode(self, params: Params, images: Array) -> tuple[Array, Array]:
        """A diagonal Gaussian summary of ``q(z | x)`` per image: ``(loc, scale)``, each ``(n, d)``.

        The mean path: layer by layer, ``z^l`` is set to its conditional mean ``mu_l + Delta mu_l`` given the
        earlier layers at *their* conditional means, and ``scale`` holds the conditional scales
        ``sigma_l Delta sigma_l`` along that path. For a linear model the locations are the exact means of
        ``q``; the scales are conditional ones, so they understate ``q``'s marginal spread of the lower layers.
        :meth:`mcmcvae.methods.MCMC.proposal` uses this to start and scale its evaluation chains.
        """
        result = self.posterior_pass(params, images, jnp.zeros((images.shape[0], self.latent_dim)))
        return result.loc, result.scale

    def kl_divergences(self, rng_key: PRNGKey, params: Params, images: Array) -> Array:
        """Eq. (10) per layer, ``(n, L)``, along one draw ``z ~ q(z | x)`` (layer ``l``'s KL is conditional on
        the drawn ``z^{<l}``)."""
        noise = jax.random.normal(rng_key, (images.shape[0], self.latent_dim))
        return self.posterior_pass(params, images, noise).kl

    def elbo(self, rng_key: PRNGKey, params: Params, images: Array) -> Array:
        """The ELBO with the per-layer KL in closed form: ``log p(x | z) - sum_l KL_l`` at one ``z ~ q``, ``(n,)``."""
        noise = jax.random.normal(rng_key, (images.shape[0], self.latent_dim))
        result = self.posterior_pass(params, images, noise)

        def log_likelihood(x, z):
            return self.likelihood_distribution(params, self.decode(params, z)).log_prob(x)

        return jax.vmap(log_likelihood)(images, result.z) - jnp.sum(result.kl, axis=-1)

    # ---------------------------------------------------------------------------------------- checking
    def validate_images(self, images) -> None:
        """Raise a ``ValueError`` naming the problem and the fix if ``images`` do not suit this model."""
        from mcmcvae.models import validate_images

        validate_images(images, self.image_shape, self.likelihood)

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description from which :func:`mcmcvae.models.from_config` rebuilds the model."""
        out = {"kind": self.KIND}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out
