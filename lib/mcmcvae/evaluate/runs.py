"""Dataset-level evaluation of a trained model and method.

The importance proposal for each image comes from the method (:meth:`Method.proposal`): the encoder's q0 for
amortised methods, or a Gaussian centred on the chain's estimate of the posterior mean for MCMC methods (paper
section 6.2), with its variance widened by ``variance_factor`` (tau = 1.5) or its standard deviation by
``scale_factor`` (the VCD paper's 1.2). Evaluation only reads parameters; nothing adapts or trains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.evaluate.ais import dataset_ais_log_likelihood
from mcmcvae.evaluate.importance import _map_blocks, bits_per_dim, dataset_importance_estimate

__all__ = ["method_proposals", "test_log_likelihood", "test_ais_log_likelihood", "summarise_log_likelihoods",
           "load_evaluation_images"]

_DYNAMIC_EVALUATION_KEY = 12345  # one fixed binarisation of the evaluation images of dynamically binarised runs


def load_evaluation_images(config: dict, *, split: str = "test", num_images: int | None = None) -> np.ndarray:
    """The images a run is evaluated on: its dataset's ``split``, the first ``num_images``, binarised as trained.

    ``static`` runs get the 0.5 threshold; ``dynamic`` runs one fixed Bernoulli draw (key 12345), the same for
    every run and every command (``mcmcvae evaluate``, ``mcmcvae report``), so their numbers describe the same
    images. ``linear_hvae`` is the synthetic data of :func:`mcmcvae.hierarchical.make_dataset` with the run's
    ``latent_sizes`` (see :func:`mcmcvae.data.load_images`).

    Parameters
    ----------
    config
        The run's ``config.json`` as a dict (:func:`mcmcvae.train.load_run` returns it).

    Raises
    ------
    ValueError
        If the config names no dataset, or ``num_images`` is not a positive integer.
    """
    from mcmcvae.data import binarize_dynamic, load_images

    if "dataset" not in config:
        raise ValueError("the run's config.json names no dataset; runs made with `mcmcvae train` record one "
                         "(from Python, pass extra_config={'dataset': NAME} to the Trainer)")
    binarize = config.get("binarize", "none")
    images = load_images(config["dataset"], split, binarize="static" if binarize == "static" else "none",
                         num_images=num_images, latent_sizes=config.get("latent_sizes", (10, 20)))
    if binarize == "dynamic":
        images = binarize_dynamic(jax.random.key(_DYNAMIC_EVALUATION_KEY), images)
    return np.asarray(images, np.float32)


def _checked_images(model, images, **counts) -> np.ndarray:
    """The images as float32 after the model's own check (shape, dtype, range, NaN, binarity), and the counts
    checked to be positive integers: the public estimators fail here with a message naming the fix, never with a
    finite but meaningless number."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    raw = np.asarray(images)
    model.validate_images(raw)
    return raw.astype(np.float32)


def _check_factors(**factors) -> None:
    for name, value in factors.items():
        if not (isinstance(value, int | float | np.floating) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def method_proposals(rng_key, model, method, params, state, images, *, batch_size: int = 100):
    """Each image's proposal ``(loc, scale)``, ``(n, d)`` each, from the method, batch by batch.

    Batch ``b`` uses the key ``fold_in(rng_key, b)``; the last batch is padded (its final image repeated), and
    one compiled program maps over all batches (no Python loop, one transfer back).
    """
    def batch_proposal(indices, batch):
        key = jax.random.fold_in(rng_key, indices[0] // min(batch_size, len(images)))
        return method.proposal(key, model, params, state, batch)

    locs, scales = _map_blocks(batch_proposal, jnp.asarray(images, jnp.float32), batch_size)
    return np.asarray(locs), np.asarray(scales)


def test_log_likelihood(rng_key, model, method, params, state, images, *, num_samples: int = 5000,
                        variance_factor: float = 1.5, scale_factor: float = 1.0, batch_size: int = 100,
                        chunk_size: int | None = None) -> dict:
    """Importance-sampling log-likelihood of every image; returns a summary dict and the per-image values.

    The proposal is the method's (:func:`method_proposals`), widened by the factors. A hierarchical model's
    ``q(z | x)`` is no single diagonal Gaussian, so for those (models with ``sample_q``) the samples come from
    ``q`` itself with every layer's conditional variance times ``variance_factor``
    (:func:`mcmcvae.hierarchical.log_likelihood`), for every method, as the hierarchical experiments evaluate;
    the summary then says ``proposal = "hierarchical q"`` and has no effective sample size.

    ``images`` must suit the model (its ``validate_images``): ``(n, H, W, C)`` intensities in [0, 1], finite, and
    binary for a Bernoulli likelihood; anything else raises a ``ValueError`` that names the fix.

    Returns
    -------
    dict
        ``test_log_likelihood`` (mean, nats), ``standard_error``, ``num_images``, ``num_samples``, the proposal
        factors, ``bits_per_dim`` for non-Bernoulli likelihoods, and ``per_image`` (numpy array);
        ``effective_sample_size`` and ``min_effective_sample_size``, the mean and the smallest over images of
        each image's ``(sum w)^2 / sum w^2``, from the same weights (no second pass). Every value but
        ``per_image`` is a JSON-ready number; per-image effective sample sizes come from
        :func:`mcmcvae.evaluate.importance.dataset_importance_estimate`.
    """
    images = _checked_images(model, images, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size)
    _check_factors(variance_factor=variance_factor, scale_factor=scale_factor)
    if hasattr(model, "sample_q"):
        from mcmcvae.hierarchical import log_likelihood as hierarchical_log_likelihood

        if scale_factor != 1.0:
            raise ValueError("hierarchical models widen q by variance_factor only; leave scale_factor at 1")
        per_image = hierarchical_log_likelihood(rng_key, model, params, images, num_samples=num_samples,
                                                chunk_size=chunk_size, batch_size=batch_size,
                                                variance_factor=variance_factor)
        summary = summarise_log_likelihoods(np.asarray(per_image, np.float64), model)
        summary.update(estimator="importance", proposal="hierarchical q", num_samples=int(num_samples),
                       variance_factor=float(variance_factor), scale_factor=1.0)
        return summary
    k_proposal, k_is = jax.random.split(rng_key)
    locs, scales = method_proposals(k_proposal, model, method, params, state, images, batch_size=batch_size)
    inputs = (jnp.asarray(images, jnp.float32), jnp.asarray(locs), jnp.asarray(scales))
    estimate = dataset_importance_estimate(
        k_is,
        lambda data, z: model.log_joint(params, data[0], z),
        lambda data: (data[1], data[2]),
        inputs,
        num_samples=num_samples,
        batch_size=batch_size,
        chunk_size=chunk_size,
        variance_factor=variance_factor,
        scale_factor=scale_factor,
    )
    summary = summarise_log_likelihoods(np.asarray(estimate.log_likelihood, np.float64), model)
    ess = np.asarray(estimate.effective_sample_size, np.float64)
    summary.update(estimator="importance", proposal="method", num_samples=int(num_samples),
                   variance_factor=float(variance_factor), scale_factor=float(scale_factor), effective_sample_size=float(ess.mean()),
                   min_effective_sample_size=float(ess.min()))
    return summary


def test_ais_log_likelihood(rng_key, model, method, params, state, images, *, num_temperatures: int = 100,
                            num_chains: int = 16, num_leapfrog_steps: int = 5, variance_factor: float = 1.5,
                            batch_size: int = 100, **options) -> dict:
    """AIS log-likelihood of every image, annealing from the method's proposal (widened by ``variance_factor``).

    The start distribution of image ``i``'s chains is the Gaussian that importance sampling would use
    (:func:`method_proposals`); :func:`mcmcvae.evaluate.ais.dataset_ais_log_likelihood` anneals from it to
    ``p(x_i, z)`` over ``num_temperatures`` sigmoidal temperatures with HMC transitions of
    ``num_leapfrog_steps`` leapfrog steps whose step size adapts per image across temperatures. Nothing trains.

    Returns
    -------
    dict
        The keys of :func:`test_log_likelihood` (``test_log_likelihood``, ``standard_error``, ``num_images``,
        ``per_image``, ``bits_per_dim`` for non-Bernoulli likelihoods), with ``estimator = "ais"``,
        ``num_temperatures``, ``num_chains``, ``num_leapfrog_steps`` and the mean HMC ``acceptance_rate``.
    """
    images = _checked_images(model, images, num_temperatures=num_temperatures, num_chains=num_chains,
                             num_leapfrog_steps=num_leapfrog_steps, batch_size=batch_size)
    _check_factors(variance_factor=variance_factor)
    k_proposal, k_ais = jax.random.split(rng_key)
    locs, scales = method_proposals(k_proposal, model, method, params, state, images, batch_size=batch_size)
    result = dataset_ais_log_likelihood(
        k_ais,
        lambda data, z: model.log_joint(params, data[0], z),
        lambda data: (data[1], data[2]),
        (np.asarray(images, np.float32), locs, scales),
        num_temperatures=num_temperatures,
        num_chains=num_chains,
        num_leapfrog_steps=num_leapfrog_steps,
        batch_size=batch_size,
        variance_factor=variance_factor,
        **options,
    )
    per_image = np.asarray(result.log_likelihood, np.float64)
    summary = summarise_log_likelihoods(per_image, model)
    summary.update(estimator="ais", num_temperatures=int(num_temperatures), num_chains=int(num_chains),
                   num_leapfrog_steps=int(num_leapfrog_steps), variance_factor=float(variance_factor),
                   acceptance_rate=float(np.mean(result.acceptance_rate)))
    return summary


def summarise_log_likelihoods(per_image: np.ndarray, model) -> dict:
    """What every dataset-level estimator reports: the mean, its standard error over images, bits/dim."""
    summary = {
        "test_log_likelihood": float(per_image.mean()),
        "standard_error": float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0,
        "num_images": int(len(per_image)),
        "per_image": per_image,
    }
    if model.likelihood != "bernoulli":
        summary["bits_per_dim"] = float(bits_per_dim(per_image.mean(), model.data_dim))
    return summary
