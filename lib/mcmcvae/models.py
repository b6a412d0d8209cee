r"""The VAE model: NumPyro priors and likelihoods around Haiku networks.

A :class:`VAE` is a frozen, hashable description (architecture, latent dimension, prior, likelihood); its
parameters are a plain dict with one entry per group, so that training methods can give each group its own
optimiser:

``{"encoder": ..., "decoder": ..., "prior": ..., "likelihood": ...}``

The generative model is written once, as a NumPyro model (:meth:`VAE.model`),

.. math:: z \sim p_\theta(z), \qquad x \mid z \sim p_\theta(x \mid z),

and :meth:`VAE.log_joint` evaluates ``log p(x, z)`` for one data point through
``numpyro.infer.util.log_density``. Network parameters enter the model as arguments (NumPyro has no Haiku
adapter). The encoder gives the diagonal Gaussian warm start ``q0(z | x) = N(mu(x), diag(sigma(x)^2))``.

Priors: ``standard`` (N(0, I)), ``mog`` (a mixture of ``num_components`` Gaussians with learnable means and
scales and equal weights), ``vamp`` (the VampPrior of Tomczak and Welling 2018: the encoder's q0 averaged over
``num_components`` learnable pseudo-inputs). Likelihoods: ``bernoulli`` (binary data), ``logistic256``
(:class:`mcmcvae.distributions.DiscretizedLogistic`, fixed or learnable scale) and ``gaussian`` (fixed or
learnable standard deviation).
"""

from __future__ import annotations

import dataclasses
import math
from importlib import import_module
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.util import validate_sample
from numpyro.infer.util import log_density

from mcmcvae import nets
from mcmcvae.distributions import DiscretizedLogistic
from mcmcvae.types import Array, Params, PRNGKey

__all__ = ["VAE", "PRIORS", "LIKELIHOODS", "BernoulliLogits", "bernoulli_log_prob", "likelihood_distribution",
           "validate_images", "from_config", "register"]

PRIORS = ("standard", "mog", "vamp")
LIKELIHOODS = ("bernoulli", "logistic256", "gaussian")


@dataclasses.dataclass(frozen=True)
class VAE:
    """A variational autoencoder: Haiku encoder and decoder, NumPyro prior and likelihood.

    Parameters
    ----------
    image_shape
        ``(H, W, C)`` of one image.
    latent_dim
        Dimension d of z.
    architecture
        ``"mlp"`` (default, ``hidden_sizes`` dense layers) or ``"conv"``.
    hidden_sizes, activation
        MLP sizes (default 200-200) and activation (default ReLU), for encoder and decoder alike.
    prior
        ``"standard"``, ``"mog"`` or ``"vamp"``; ``num_components`` mixture components (default 50 for ``mog``,
        500 for ``vamp``).
    likelihood
        ``"bernoulli"``, ``"logistic256"`` or ``"gaussian"``; ``likelihood_scale`` is the logistic scale s or the
        Gaussian standard deviation, learnt when ``learn_likelihood_scale``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=10)
    >>> params = jax.jit(model.init)(jax.random.key(0))
    >>> sorted(params)  # one parameter group per optimiser
    ['decoder', 'encoder', 'likelihood', 'prior']
    >>> x = jnp.zeros((28, 28, 1)); z = jnp.zeros(10)
    >>> jax.jit(model.log_joint)(params, x, z).shape  # log p(x, z), a scalar
    ()
    """

    image_shape: tuple[int, int, int]
    latent_dim: int
    architecture: str = "mlp"
    hidden_sizes: tuple[int, ...] = (200, 200)
    activation: str = "relu"
    prior: str = "standard"
    num_components: int | None = None
    likelihood: str = "bernoulli"
    likelihood_scale: float = 0.1
    learn_likelihood_scale: bool = False

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        object.__setattr__(self, "hidden_sizes", tuple(int(s) for s in self.hidden_sizes))
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (H, W, C), got {self.image_shape}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {self.latent_dim}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of {PRIORS}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.architecture not in nets.ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; choose one of {nets.ARCHITECTURES}")
        if self.num_components is None:
            object.__setattr__(self, "num_components", {"mog": 50, "vamp": 500}.get(self.prior, 0))
        if self.likelihood_scale <= 0:
            raise ValueError(f"likelihood_scale must be positive, got {self.likelihood_scale}")

    # ----------------------------------------------------------------------------------------------- networks
    @property
    def _net_options(self) -> dict[str, Any]:
        if self.architecture == "mlp":
            return {"hidden_sizes": self.hidden_sizes, "activation": self.activation}
        return {"activation": self.activation}

    @property
    def encoder(self):
        return nets.make_encoder(self.architecture, self.latent_dim, **self._net_options)

    @property
    def decoder(self):
        return nets.make_decoder(self.architecture, self.image_shape, **self._net_options)

    @property
    def data_dim(self) -> int:
        return int(np.prod(self.image_shape))

    def init(self, rng_key: PRNGKey) -> Params:
        """Initial parameters ``{"encoder", "decoder", "prior", "likelihood"}``."""
        k_enc, k_dec, k_prior = jax.random.split(rng_key, 3)
        params = {
            # jitted: Haiku's init run op by op compiles dozens of tiny programs
            "encoder": jax.jit(self.encoder.init)(k_enc, jnp.zeros((1, *self.image_shape))),
            "decoder": jax.jit(self.decoder.init)(k_dec, jnp.zeros((1, self.latent_dim))),
            "prior": {},
            "likelihood": {},
        }
        k = self.num_components
        if self.prior == "mog":
            params["prior"] = {
                "means": jax.random.normal(k_prior, (k, self.latent_dim)),
                "log_scales": jnp.zeros((k, self.latent_dim)),
            }
        elif self.prior == "vamp":
            # Pseudo-inputs live on the logit scale so that sigmoid keeps them in the data's [0, 1] range.
            params["prior"] = {"pseudo_inputs": 0.1 * jax.random.normal(k_prior, (k, *self.image_shape))}
        if self.learn_likelihood_scale and self.likelihood != "bernoulli":
            params["likelihood"] = {"log_scale": jnp.asarray(math.log(self.likelihood_scale), jnp.float32)}
        return params

    def encode(self, params: Params, images: Array) -> tuple[Array, Array]:
        """``q0(z | x)`` for a batch ``(n, H, W, C)``: returns ``(loc, scale)``, each ``(n, d)``."""
        return self.encoder.apply(params["encoder"], None, images)

    def sample_q0(self, rng_key: PRNGKey, params: Params, images: Array, num_samples: int | None = None):
        """Reparameterised draws from q0(z | x) and their log densities.

        Returns ``z`` of shape ``(n, d)`` (or ``(num_samples, n, d)``) and ``log q0(z | x)`` of shape ``(n,)``
        (or ``(num_samples, n)``). Methods draw their warm starts through this, so models whose q0 is not one
        diagonal Gaussian (hierarchical VAEs) plug into the same methods.
        """
        loc, scale = self.encode(params, images)
        shape = loc.shape if num_samples is None else (num_samples, *loc.shape)
        z = loc + scale * jax.random.normal(rng_key, shape, loc.dtype)
        return z, jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), axis=-1)

    def decode(self, params: Params, z: Array) -> Array:
        """Likelihood parameters for a batch of latents ``(n, d)``: ``(n, H, W, C)``."""
        return self.decoder.apply(params["decoder"], None, z)

    # ------------------------------------------------------------------------------------------ distributions
    def prior_distribution(self, params: Params) -> dist.Distribution:
        """``p(z)`` as a NumPyro distribution with event shape ``(d,)``."""
        if self.prior == "standard":
            return dist.Normal(jnp.zeros(self.latent_dim), 1.0).to_event(1)
        mixing = dist.Categorical(logits=jnp.zeros(self.num_components))
        if self.prior == "mog":
            components = dist.Normal(params["prior"]["means"], jnp.exp(params["prior"]["log_scales"]))
        else:
            pseudo_images = jax.nn.sigmoid(params["prior"]["pseudo_inputs"])
            loc, scale = self.encode(params, pseudo_images)
            components = dist.Normal(loc, scale)
        return dist.MixtureSameFamily(mixing, components.to_event(1))

    def _likelihood_scale(self, params: Params) -> Array:
        return likelihood_scale(params, self.likelihood_scale)

    def likelihood_distribution(self, params: Params, decoded: Array) -> dist.Distribution:
        """``p(x | z)`` given the decoder output for one or more latents; event shape ``(H, W, C)``."""
        return likelihood_distribution(self.likelihood, decoded, self._likelihood_scale(params))

    def model(self, params: Params, x: Array | None = None):
        """The NumPyro model of one data point: ``z ~ p(z)``, ``x ~ p(x | z)``."""
        z = numpyro.sample("z", self.prior_distribution(params))
        decoded = self.decode(params, z[None])[0]
        return numpyro.sample("x", self.likelihood_distribution(params, decoded), obs=x)

    # ------------------------------------------------------------------------------------------- densities
    def log_joint(self, params: Params, x: Array, z: Array) -> Array:
        """``log p(x, z)`` of one data point ``x (H, W, C)`` at ``z (d,)``, via NumPyro's ``log_density``."""
        value, _ = log_density(self.model, (params, x), {}, {"z": z})
        return value

    def log_joint_batch(self, params: Params, images: Array, z: Array) -> Array:
        """``log p(x_i, z_i)`` for a batch: ``images (n, H, W, C)``, ``z (n, d)`` -> ``(n,)``."""
        return jax.vmap(self.log_joint, in_axes=(None, 0, 0))(params, images, z)

    def mean_image(self, params: Params, z: Array) -> Array:
        """The mean (Bernoulli: probabilities) of ``p(x | z)`` for latents ``(n, d)``: what a sample grid shows."""
        decoded = self.decode(params, z)
        if self.likelihood == "bernoulli":
            return jax.nn.sigmoid(decoded)
        return jnp.clip(decoded, 0.0, 1.0)

    def sample_prior(self, rng_key: PRNGKey, params: Params, num_samples: int) -> Array:
        """``num_samples`` draws of z from the prior, ``(n, d)``."""
        return self.prior_distribution(params).sample(rng_key, (num_samples,))

    # -------------------------------------------------------------------------------------------- checking
    def validate_images(self, images) -> None:
        """Raise a ``ValueError`` naming the problem and the fix if ``images`` do not suit this model."""
        validate_images(images, self.image_shape, self.likelihood)

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description from which :func:`from_config` rebuilds the model."""
        out = {"kind": "vae", **dataclasses.asdict(self)}
        out["image_shape"] = list(self.image_shape)
        out["hidden_sizes"] = list(self.hidden_sizes)
        return out


def likelihood_scale(params: Params, fixed_scale: float) -> Array:
    """The likelihood's scale: learnt (``params["likelihood"]["log_scale"]``) when present, else ``fixed_scale``."""
    if "log_scale" in params["likelihood"]:
        return jnp.exp(params["likelihood"]["log_scale"])
    return jnp.asarray(fixed_scale, jnp.float32)


def bernoulli_log_prob(logits: Array, value: Array) -> Array:
    r"""Elementwise ``log Bernoulli(value | sigmoid(logits))``, for finite logits.

    .. math:: \log p(x \mid l) = x l - \operatorname{softplus}(l), \qquad
              \operatorname{softplus}(l) = \max(l, 0) + \log(1 + e^{-|l|}),

    which is exact for every finite ``l`` (``e^{-|l|} <= 1`` cannot overflow) and equals NumPyro's
    ``BernoulliLogits.log_prob`` to float rounding. NumPyro guards against infinite logits (``isfinite`` and two
    ``where``s around the same expression), so that ``l = +inf, x = 1`` scores 0; here non-finite logits give
    NaN or an infinity, as any arithmetic would, so that a decoder that has diverged is counted by the caller's
    guard instead of being scored as if it were fine. The gradient with respect to ``logits`` is
    ``x - sigmoid(l)`` (a custom JVP: exact at ``l = 0``, where differentiating ``max`` and ``|.|`` is not).

    The arrays are broadcast and flattened before the elementwise work and reshaped afterwards: XLA:CPU
    vectorises an elementwise loop along the minor-most axis, which for images ``(H, W, 1)`` has length 1, and
    the flat form makes importance sampling over (images x samples x pixels) arrays about twice as fast.

    Parameters
    ----------
    logits
        Log-odds ``l``, any shape.
    value
        Observations ``x`` (0 or 1), broadcastable with ``logits``.

    Returns
    -------
    Array
        The log-probabilities, of the broadcast shape.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmcvae as mv
    >>> [round(float(v), 3) for v in mv.models.bernoulli_log_prob(jnp.array([0.0, 2.0, -80.0]),
    ...                                                            jnp.array([1.0, 0.0, 0.0]))]
    [-0.693, -2.127, -0.0]
    """
    logits = jnp.asarray(logits)
    value = jnp.asarray(value, jnp.result_type(logits.dtype, jnp.float32))
    shape = jnp.broadcast_shapes(logits.shape, value.shape)
    flat_logits = jnp.broadcast_to(logits, shape).reshape(-1)
    flat_value = jnp.broadcast_to(value, shape).reshape(-1)
    return _flat_bernoulli_log_prob(flat_logits, flat_value).reshape(shape)


@jax.custom_jvp
def _flat_bernoulli_log_prob(logits: Array, value: Array) -> Array:
    return value * logits - jnp.maximum(logits, 0) - jnp.log1p(jnp.exp(-jnp.abs(logits)))


@_flat_bernoulli_log_prob.defjvp
def _flat_bernoulli_log_prob_jvp(primals, tangents):
    # d/dl = x - sigmoid(l), written as x sigmoid(-l) - (1 - x) sigmoid(l) so that neither term cancels; autodiff
    # of max(l, 0) and |l| would give sigmoid(0) = 0 or 1 instead of 1/2 at l = 0 (as NumPyro's clip does)
    logits, value = primals
    logits_dot, value_dot = tangents
    exp_neg_abs = jnp.exp(-jnp.abs(logits))
    out = value * logits - jnp.maximum(logits, 0) - jnp.log1p(exp_neg_abs)
    sigmoid_abs = 1 / (1 + exp_neg_abs)  # sigmoid(|l|)
    sigmoid_neg_abs = exp_neg_abs * sigmoid_abs  # sigmoid(-|l|)
    positive = logits >= 0
    sigmoid = jnp.where(positive, sigmoid_abs, sigmoid_neg_abs)
    sigmoid_neg = jnp.where(positive, sigmoid_neg_abs, sigmoid_abs)
    return out, (value * sigmoid_neg - (1 - value) * sigmoid) * logits_dot + logits * value_dot


class BernoulliLogits(dist.BernoulliLogits):
    """NumPyro's ``BernoulliLogits`` with the cheaper log-probability :func:`bernoulli_log_prob`.

    Everything else (sampling, ``probs``, ``mean``, support, enumeration) is NumPyro's; ``to_event`` gives an
    ``Independent`` whose ``log_prob`` sums the event's pixels as one flat axis. The likelihood of every Bernoulli
    model of the library (training and evaluation alike) is this distribution, ``.to_event(3)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpyro.distributions as dist
    >>> import mcmcvae as mv
    >>> logits, x = jnp.array([-3.0, 0.5, 40.0]), jnp.array([0.0, 1.0, 1.0])
    >>> bool(jnp.allclose(mv.models.BernoulliLogits(logits).log_prob(x), dist.BernoulliLogits(logits).log_prob(x)))
    True
    """

    @validate_sample
    def log_prob(self, value: Array) -> Array:
        return bernoulli_log_prob(self.logits, value)

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> dist.Distribution:
        """NumPyro's ``to_event``, giving an ``Independent`` that sums the event's pixels as one flat axis."""
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if reinterpreted_batch_ndims == 0:
            return self
        return _IndependentBernoulliLogits(self, reinterpreted_batch_ndims)


class _IndependentBernoulliLogits(dist.Independent):
    """``BernoulliLogits(logits).to_event(n)``: the log-probabilities of the ``n`` event axes, flattened, summed.

    Summing the elementwise values over ``(H, W, C)`` would make XLA:CPU compute them in that shape, with the
    minor-most axis of length ``C = 1`` (see :func:`bernoulli_log_prob`); the flat event axis keeps the loop
    vectorised.
    """

    @validate_sample
    def log_prob(self, value: Array) -> Array:
        logits = self.base_dist.logits
        value = jnp.asarray(value, jnp.result_type(logits.dtype, jnp.float32))
        shape = jnp.broadcast_shapes(jnp.shape(logits), value.shape)
        flat_shape = (*shape[: len(shape) - self.reinterpreted_batch_ndims], -1)
        flat_logits = jnp.broadcast_to(logits, shape).reshape(flat_shape)
        flat_value = jnp.broadcast_to(value, shape).reshape(flat_shape)
        return jnp.sum(_flat_bernoulli_log_prob(flat_logits, flat_value), axis=-1)


def likelihood_distribution(likelihood: str, decoded: Array, scale: Array) -> dist.Distribution:
    """The observation distribution of every model, event shape ``(H, W, C)``.

    ``decoded`` holds Bernoulli logits or the logistic/Gaussian locations; ``scale`` is the logistic scale s or the
    Gaussian standard deviation (unused for ``bernoulli``). Bernoulli pixels use :class:`BernoulliLogits`, whose
    log-probability skips NumPyro's guard against infinite logits.
    """
    if likelihood == "bernoulli":
        base = BernoulliLogits(decoded)
    elif likelihood == "logistic256":
        base = DiscretizedLogistic(decoded, scale)
    else:
        base = dist.Normal(decoded, scale)
    return base.to_event(3)


def validate_images(images, image_shape: tuple[int, ...], likelihood: str) -> None:
    """Check a host-side image array against a model: dtype, shape, finiteness, range and (Bernoulli) binarity.

    Called before training and evaluation, never inside jitted code.

    Raises
    ------
    TypeError
        For a non-numeric dtype.
    ValueError
        Naming the problem and the fix: a flat ``(n, 784)`` array (reshape to ``(n, 28, 28, 1)``), no images,
        NaN or infinite pixels, pixels outside [0, 1] (divide 8-bit images by 255), grey pixels for a Bernoulli
        likelihood (binarise them).
    """
    images = np.asarray(images)
    if images.dtype.kind not in "biuf":
        raise TypeError(f"images must be a numeric array of pixel intensities in [0, 1], got dtype {images.dtype}")
    shape = ", ".join(map(str, image_shape))
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        fix = "reshape flat vectors to (n, H, W, C) with the model's image_shape"
        if images.ndim >= 2 and int(np.prod(images.shape[1:])) == int(np.prod(image_shape)):
            fix = f"reshape them with images.reshape(-1, {shape})"
        elif images.ndim == len(image_shape) and tuple(images.shape) == tuple(image_shape):
            fix = "a single image needs a leading batch axis: images[None]"
        raise ValueError(f"images must have shape (n, {shape}), got {images.shape}; {fix}")
    if images.shape[0] == 0:
        raise ValueError("images hold no image (n = 0); pass at least one")
    if not np.all(np.isfinite(images)):
        bad = int(np.sum(~np.isfinite(images)))
        raise ValueError(f"images contain {bad} NaN or infinite pixels; clean or drop those images before training")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"pixels must lie in [0, 1], found [{lo}, {hi}]; divide 8-bit images by 255")
    if likelihood == "bernoulli" and not np.all((images == 0.0) | (images == 1.0)):
        raise ValueError(
            "a Bernoulli likelihood needs binary pixels (0 or 1) but the data are grey-scale; binarise them "
            "(mv.data.binarize_static, or --binarize static|dynamic on the command line) or choose "
            "--likelihood logistic256|gaussian"
        )


# Model kinds by the "kind" key of their config; other modules add theirs with `register`.
_KINDS: dict[str, type] = {"vae": VAE}
_LAZY_KINDS = {"topdown_hvae": "mcmcvae.hierarchical", "linear_hvae": "mcmcvae.hierarchical"}


def register(kind: str, cls: type) -> None:
    """Make ``from_config`` rebuild models whose config has ``"kind": kind`` as ``cls(**config)``."""
    _KINDS[kind] = cls


def from_config(config: dict[str, Any]):
    """Rebuild a model from its ``config()`` (as saved in a run's ``config.json``)."""
    options = dict(config)
    kind = options.pop("kind", "vae")
    if kind not in _KINDS and kind in _LAZY_KINDS:  # registering modules load on first use
        import_module(_LAZY_KINDS[kind])
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(sorted(_KINDS))}")
    return _KINDS[kind](**options)
