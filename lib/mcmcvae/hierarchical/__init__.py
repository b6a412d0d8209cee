"""Hierarchical VAEs (Hirt, Kreouzis and Dellaportas, Stat. Comput. 2024, sections 5 and 6.7).

- :class:`TopDownHVAE`: the top-down hierarchical VAE with deterministic residual states, MLP blocks and the
  residual posterior of eq. (9), whose per-layer KL divergence has the closed form of eq. (10);
- :class:`LinearHVAE`: the same with linear blocks, so that the prior, marginal and posterior are Gaussian and
  known exactly (:class:`LinearGaussian`, eq. 12), and :func:`make_dataset` for the synthetic ``linear_hvae``
  data;
- :class:`FreezeParams`: keep parameter groups (the prior) fixed during a phase;
- :func:`log_likelihood`: importance sampling with the hierarchical ``q(z | x)`` as the proposal.

Both models implement the model interface of :class:`mcmcvae.models.VAE` on the flat joint latent
``z = concat(z^1, ..., z^L)``, so every method in :mod:`mcmcvae.methods` and the trainer use them unchanged.
Importing this package registers the kinds ``"topdown_hvae"`` and ``"linear_hvae"`` with
:func:`mcmcvae.models.register`.

Examples
--------
>>> from mcmcvae import hierarchical
>>> model = hierarchical.TopDownHVAE(image_shape=(28, 28, 1), latent_sizes=(5, 10))
>>> model.latent_dim
15
"""

from mcmcvae import models as _models
from mcmcvae.hierarchical.base import PosteriorPass, TopDownModel, residual_normal_kl
from mcmcvae.hierarchical.linear import (
    LinearGaussian,
    LinearHVAE,
    LinearHVAEDataset,
    condition_number,
    generating_params,
    make_dataset,
)
from mcmcvae.hierarchical.topdown import TopDownHVAE
from mcmcvae.hierarchical.training import FreezeParams, log_likelihood

__all__ = [
    "FreezeParams",
    "LinearGaussian",
    "LinearHVAE",
    "LinearHVAEDataset",
    "PosteriorPass",
    "TopDownHVAE",
    "TopDownModel",
    "condition_number",
    "generating_params",
    "log_likelihood",
    "make_dataset",
    "residual_normal_kl",
]

_models.register(TopDownHVAE.KIND, TopDownHVAE)
_models.register(LinearHVAE.KIND, LinearHVAE)
