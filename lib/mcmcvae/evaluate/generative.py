r"""The generative side of a trained model: images drawn from it, and their KID against held-out images.

Protocol of Hirt, Kreouzis and Dellaportas (2024, section 6.3): one image is generated for every held-out image
(a prior draw ``z ~ p(z)``, decoded to the mean of ``p(x | z)``: Bernoulli probabilities, or the clipped mean
of a logistic or Gaussian likelihood), both sets are resized and passed through the FID Inception-V3
(:func:`mcmcvae.evaluate.inception_features`), and KID (:func:`mcmcvae.evaluate.kid`) compares the two
sets of 2048-d features. The paper resized to 150 x 150, which is this module's default; the network's native
size is 299, and KIDs at different sizes are not comparable.

Generated images are decoded means, not Bernoulli draws: the mean is the model's picture of a digit, while a
binary draw adds pixel noise that the Inception features (trained on natural images) would read as texture.
"""

from __future__ import annotations

import jax
import numpy as np

from mcmcvae.types import Params, PRNGKey

__all__ = ["generate_images", "model_kid", "KID_RESIZE_TO"]

KID_RESIZE_TO = 150  # the speed-measure paper's input size for KID


def generate_images(rng_key: PRNGKey, model, params: Params, num_images: int, *, batch_size: int = 500) -> np.ndarray:
    r"""``num_images`` images from the model: ``z_i ~ p(z)``, decoded to the mean of ``p(x | z_i)``.

    Batch ``b`` draws its latents with ``fold_in(rng_key, b)``; one jitted function serves every batch (the last
    one is drawn whole and cut), so the images depend only on ``rng_key``, ``num_images`` and ``batch_size``.

    Parameters
    ----------
    rng_key
        A ``jax.random.key``.
    model
        Any model with ``sample_prior(key, params, n)`` and ``mean_image(params, z)``
        (:class:`mcmcvae.models.VAE`, :class:`mcmcvae.hierarchical.TopDownHVAE`).
    params
        Its parameters.
    num_images
        How many images.
    batch_size
        Images decoded per call.

    Returns
    -------
    np.ndarray
        ``(num_images, H, W, C)`` float32 in ``[0, 1]``.

    Examples
    --------
    >>> import jax
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))  # a trained model's parameters in practice
    >>> images = mv.evaluate.generate_images(jax.random.key(1), model, params, 10)
    >>> images.shape, bool((0 <= images).all() and (images <= 1).all())
    ((10, 28, 28, 1), True)
    """
    if isinstance(num_images, bool) or int(num_images) != num_images or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    num_images, batch_size = int(num_images), min(int(batch_size), int(num_images))

    @jax.jit
    def batch(key, params):
        return model.mean_image(params, model.sample_prior(key, params, batch_size))

    out = [np.asarray(batch(jax.random.fold_in(rng_key, b), params))
           for b in range(-(-num_images // batch_size))]
    return np.concatenate(out)[:num_images].astype(np.float32)


def model_kid(rng_key: PRNGKey, model, params: Params, reference_images=None, *, reference_features=None,
              num_images: int | None = None, resize_to: int = KID_RESIZE_TO, resize_method: str = "bilinear",
              num_subsets: int = 100, subset_size: int = 1000, batch_size: int = 50) -> dict:
    r"""KID between a model's generated images and held-out images (the paper's protocol).

    .. math:: \mathrm{KID} = \widehat{\mathrm{MMD}}^2_u\big(f(x^{\mathrm{test}}_{1..n}),\,
              f(\bar x_{1..n})\big), \qquad \bar x_i = \mathbb E[x \mid z_i],\ z_i \sim p(z),

    with ``f`` the Inception-V3 pool features and the cubic polynomial kernel, averaged over ``num_subsets``
    subsets of ``subset_size`` (see :func:`mcmcvae.evaluate.kid`).

    Parameters
    ----------
    rng_key
        Split into the generation key and the KID subsets' key.
    model, params
        The trained model (see :func:`generate_images`).
    reference_images
        Held-out images ``(n, H, W, C)`` in ``[0, 1]``; not needed when ``reference_features`` is given.
    reference_features
        Their Inception features ``(n, 2048)`` at the same ``resize_to`` and ``resize_method``, when already
        computed (experiments compute them once per dataset and reuse them for every method).
    num_images
        Generated images; default: as many as reference images.
    resize_to, resize_method, batch_size
        Passed to :func:`mcmcvae.evaluate.inception_features`.
    num_subsets, subset_size
        Passed to :func:`mcmcvae.evaluate.kid` (``subset_size`` is capped at the smaller set).

    Returns
    -------
    dict
        ``kid`` and ``kid_std`` (floats), ``num_generated``, ``num_reference``, ``resize_to``, ``subset_size``,
        ``num_subsets``, and ``generated_features`` (``np.ndarray``) for reuse.

    Raises
    ------
    ValueError
        If neither or both of ``reference_images`` and ``reference_features`` are given.

    Examples
    --------
    A small, untrained model against random binary images, at the smallest Inception input (in practice: a
    trained model, 1000 or more test images and the default ``resize_to``):

    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))
    >>> reference = (np.random.default_rng(0).uniform(size=(8, 28, 28, 1)) < 0.2).astype(np.float32)
    >>> result = mv.evaluate.model_kid(jax.random.key(1), model, params, reference, resize_to=75, num_subsets=10)
    >>> result["num_generated"], result["subset_size"]
    (8, 8)
    >>> result["kid"] > 3 * result["kid_std"]  # grey blurs are far from binary noise (papers print 1000 x KID)
    True
    """
    from mcmcvae.evaluate.inception import inception_features
    from mcmcvae.evaluate.mmd import kid

    if (reference_images is None) == (reference_features is None):
        raise ValueError("give exactly one of reference_images and reference_features")
    if reference_features is None:
        reference_features = inception_features(reference_images, batch_size=batch_size, resize_to=resize_to,
                                                resize_method=resize_method)
    reference_features = np.asarray(reference_features, np.float32)
    num_images = reference_features.shape[0] if num_images is None else num_images
    generate_key, kid_key = jax.random.split(rng_key)
    generated = generate_images(generate_key, model, params, num_images)
    generated_features = np.asarray(inception_features(generated, batch_size=batch_size, resize_to=resize_to,
                                                       resize_method=resize_method))
    subset_size = min(int(subset_size), reference_features.shape[0], generated_features.shape[0])
    mean, std = kid(reference_features, generated_features, num_subsets=num_subsets, subset_size=subset_size,
                    rng_key=kid_key)
    return {"kid": float(mean), "kid_std": float(std), "num_generated": int(generated_features.shape[0]),
            "num_reference": int(reference_features.shape[0]), "resize_to": int(resize_to),
            "subset_size": subset_size, "num_subsets": int(num_subsets), "generated_features": generated_features}
