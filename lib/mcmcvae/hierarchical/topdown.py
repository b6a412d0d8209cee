r"""The top-down hierarchical VAE of section 5 with MLP blocks (Haiku networks, NumPyro model).

Blocks (``act`` is the activation, ReLU by default; ``s`` is ``state_size``):

- prior (theta): ``d^2 = MLP(z^1)``, ``d^l = d^{l-1} + MLP([z^{l-1}, act(d^{l-1})])`` for ``l >= 3`` (residual
  states), and ``(mu_l, sigma_l) = Linear(act(d^l))`` with ``sigma_l = softplus(.) + 1e-4``;
- encoder (phi0): ``d'^L = MLP_x(x)``, ``d'^l = MLP(d'^{l+1})``, and
  ``(Delta mu_l, Delta sigma_l) = MLP([act(d^l), d'^l])`` (``MLP(d'^1)`` at the top);
- decoder (theta): the likelihood's parameters ``MLP_x([z^L, act(d^L)])``.

``MLP_x`` uses ``hidden_sizes`` (the image-sized networks), the other blocks ``block_hidden_sizes``. Scale heads
start at one, so a fresh model has ``q = p`` in every layer. With ``L = 1`` the model is a plain VAE with a
standard normal prior.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from mcmcvae.hierarchical import TopDownHVAE
>>> model = TopDownHVAE(image_shape=(28, 28, 1), latent_sizes=(5, 10))
>>> params = jax.jit(model.init)(jax.random.key(0))
>>> images = jnp.zeros((3, 28, 28, 1))
>>> z, log_q = jax.jit(model.sample_q0)(jax.random.key(1), params, images)  # z ~ q(z | x), all layers
>>> z.shape, jax.jit(model.log_joint_batch)(params, images, z).shape
((3, 15), (3,))
"""

from __future__ import annotations

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.hierarchical.base import TopDownModel, fill_params, positive_scale
from mcmcvae.types import PRNGKey

__all__ = ["TopDownHVAE"]

_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "softplus": jax.nn.softplus, "elu": jax.nn.elu}


@dataclasses.dataclass(frozen=True)
class TopDownHVAE(TopDownModel):
    """A top-down hierarchical VAE with ``L = len(latent_sizes)`` stochastic layers and MLP blocks.

    Parameters
    ----------
    image_shape
        ``(H, W, C)`` of one data point (``(D, 1, 1)`` for vectors).
    latent_sizes
        ``(d_1, ..., d_L)``, top layer first; the flat latent has ``d = sum d_l`` coordinates.
    hidden_sizes
        Hidden layers of the networks that read or write the data (``MLP_x``: first bottom-up block, decoder).
    block_hidden_sizes
        Hidden layers of the other blocks (``h_l``, upper bottom-up blocks, residual posterior heads).
    state_size
        Width of the deterministic states ``d^l`` and ``d'^l``.
    activation
        ``"relu"`` (default), ``"tanh"``, ``"softplus"`` or ``"elu"``.
    likelihood, likelihood_scale, learn_likelihood_scale
        As for :class:`mcmcvae.models.VAE`: ``"bernoulli"``, ``"logistic256"`` or ``"gaussian"``.
    """

    image_shape: tuple[int, int, int]
    latent_sizes: tuple[int, ...]
    hidden_sizes: tuple[int, ...] = (200, 200)
    block_hidden_sizes: tuple[int, ...] = (100,)
    state_size: int = 100
    activation: str = "relu"
    likelihood: str = "bernoulli"
    likelihood_scale: float = 0.1
    learn_likelihood_scale: bool = False

    KIND = "topdown_hvae"

    def __post_init__(self):
        self._check_common()
        object.__setattr__(self, "hidden_sizes", tuple(int(s) for s in self.hidden_sizes))
        object.__setattr__(self, "block_hidden_sizes", tuple(int(s) for s in self.block_hidden_sizes))
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {sorted(_ACTIVATIONS)}")
        if self.state_size < 1:
            raise ValueError(f"state_size must be positive, got {self.state_size}")

    # ------------------------------------------------------------------------------------------ networks
    @property
    def _act(self):
        return _ACTIVATIONS[self.activation]

    def _mlp(self, hidden, out, name, activate_final=False):
        return hk.nets.MLP((*hidden, out), activation=self._act, activate_final=activate_final, name=name)

    @property
    def _prior_nets(self) -> hk.MultiTransformed:
        sizes, s = self.latent_sizes, self.state_size

        def build():
            states = {l: self._mlp(self.block_hidden_sizes, s, f"state_{l}") for l in range(2, len(sizes) + 1)}
            heads = {l: hk.Linear(2 * sizes[l - 1], name=f"prior_{l}") for l in range(2, len(sizes) + 1)}

            def state_fn(l, z_prev, d_prev):
                if d_prev is None:
                    return states[l](z_prev)
                return d_prev + states[l](jnp.concatenate([z_prev, self._act(d_prev)], axis=-1))

            def head_fn(l, d):
                loc, raw = jnp.split(heads[l](self._act(d)), 2, axis=-1)
                return loc, positive_scale(raw)

            def init_all():
                d = None
                for l in range(2, len(sizes) + 1):
                    d = state_fn(l, jnp.zeros((1, sizes[l - 2])), d)
                    head_fn(l, d)

            return init_all, {"state": state_fn, "head": head_fn}

        return hk.multi_transform(build)

    @property
    def _encoder_nets(self) -> hk.MultiTransformed:
        sizes, s, L = self.latent_sizes, self.state_size, len(self.latent_sizes)

        def build():
            first = self._mlp(self.hidden_sizes, s, "bottom_up_x", activate_final=True)
            ups = {l: self._mlp(self.block_hidden_sizes, s, f"bottom_up_{l}", activate_final=True)
                   for l in range(1, L)}
            deltas = {l: self._mlp(self.block_hidden_sizes, 2 * sizes[l - 1], f"posterior_{l}")
                      for l in range(1, L + 1)}

            def bottom_up_fn(images):
                h = first(images.reshape(*images.shape[:-3], -1))
                out = [h]
                for l in range(L - 1, 0, -1):
                    h = ups[l](h)
                    out.append(h)
                return out[::-1]  # [d'^1, ..., d'^L]

            def delta_fn(l, d, d_up):
                inputs = d_up if d is None else jnp.concatenate([self._act(d), d_up], axis=-1)
                loc, raw = jnp.split(deltas[l](inputs), 2, axis=-1)
                return loc, positive_scale(raw)

            def init_all():
                ups_out = bottom_up_fn(jnp.zeros((1, *self.image_shape)))
                for l in range(1, L + 1):
                    delta_fn(l, None if l == 1 else jnp.zeros((1, s)), ups_out[l - 1])

            return init_all, {"bottom_up": bottom_up_fn, "delta": delta_fn}

        return hk.multi_transform(build)

    @property
    def _decoder_net(self) -> hk.Transformed:
        out = int(np.prod(self.image_shape))

        def decode(z_last, d):
            inputs = z_last if d is None else jnp.concatenate([z_last, self._act(d)], axis=-1)
            flat = self._mlp(self.hidden_sizes, out, "decoder")(inputs)
            return flat.reshape(*flat.shape[:-1], *self.image_shape)

        return hk.transform(decode)

    def _init_blocks(self, rng_key: PRNGKey):
        """Haiku's parameter structure (by ``jax.eval_shape``, nothing compiled), filled by :func:`fill_params`:
        weights ``N(0, 1/fan_in)``, biases zero."""
        key = jax.random.key(0)
        d = None if self.num_layers == 1 else jnp.zeros((1, self.state_size))
        shapes = {
            "encoder": jax.eval_shape(self._encoder_nets.init, key),
            "decoder": jax.eval_shape(self._decoder_net.init, key, jnp.zeros((1, self.latent_sizes[-1])), d),
            "prior": jax.eval_shape(self._prior_nets.init, key) if self.num_layers > 1 else {},
        }
        return fill_params(rng_key, shapes)

    # ----------------------------------------------------------------------------------------------- hooks
    def _prior_head(self, params, layer, state):
        return self._prior_nets.apply["head"](params["prior"], None, layer + 1, state)

    def _next_state(self, params, layer, z_layer, state):
        return self._prior_nets.apply["state"](params["prior"], None, layer + 2, z_layer, state)

    def _bottom_up(self, params, images):
        return self._encoder_nets.apply["bottom_up"](params["encoder"], None, images)

    def _posterior_delta(self, params, layer, state, bottom_up):
        return self._encoder_nets.apply["delta"](params["encoder"], None, layer + 1, state, bottom_up)

    def _decode(self, params, z_last, state):
        return self._decoder_net.apply(params["decoder"], None, z_last, state)
