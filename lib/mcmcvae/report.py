"""One trained run at a glance: ``RUN_DIR/report.md`` with figures and a table of diagnostics.

:func:`write_report` (the command ``mcmcvae report RUN_DIR``) loads a run written by :class:`mcmcvae.train.Trainer`
and its test images, and writes, beside ``config.json``:

- ``report.md``: the run's configuration and a table of the test log-likelihood, the IWAE bound ``L_k`` from
  ``q0``, the ELBO, the variational gap ``log p(x) - L_k`` (Ding and Freedman 2019) and the inference gap
  ``log p(x) - ELBO``, the effective sample sizes of the importance weights, and the active units (Burda et al.
  2016), with the figures below it;
- ``report.json``: the same numbers;
- ``report-samples.png`` (decoded prior draws), ``report-reconstructions.png`` (test images and the decoded
  ``q0`` means), ``report-traversals.png`` (latent traversals through the first test image's ``q0`` mean,
  most active units first) and ``report-training.png`` (the curves of ``metrics.jsonl``).

The test log-likelihood comes from ``RUN_DIR/eval.json`` (written by ``mcmcvae evaluate``) when that file, scored on the same checkpoint,
describes the same test images (the first ``num_images``); otherwise it is computed here by importance sampling
with the method's proposal and ``num_samples`` samples. Nothing trains or adapts, and the files of
``mcmcvae evaluate`` are left alone.
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from mcmcvae.data.datasets import LINEAR_HVAE  # the synthetic vector dataset: no image figures
from mcmcvae.evaluate.runs import load_evaluation_images

__all__ = ["write_report", "MAX_TRAVERSAL_ROWS"]

MAX_TRAVERSAL_ROWS = 16  # latent units shown in the traversal figure (the most active ones)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _mean_and_standard_error(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), se


def _saved_log_likelihood(run_dir: pathlib.Path, num_images: int, trained_epochs: int) -> dict | None:
    """``eval.json`` when it holds the test log-likelihood of the same first ``num_images`` test images, scored
    on the checkpoint the report reads (an ``eval.json`` of an earlier epoch is stale)."""
    path = run_dir / "eval.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved.get("split", "test") != "test" or saved.get("num_images") != num_images:
        return None
    if not isinstance(saved.get("test_log_likelihood"), int | float):
        return None
    if saved.get("trained_epochs", trained_epochs) != trained_epochs:
        return None
    return saved


def write_report(run_dir, *, num_samples: int = 5000, num_images: int = 1000, seed: int = 0,
                 batch_size: int = 100, traversal_steps: int = 9, traversal_radius: float = 3.0) -> dict:
    r"""Write ``RUN_DIR/report.md``, ``report.json`` and the report's PNGs; return the numbers.

    Diagnostics on the first ``num_images`` test images (:func:`mcmcvae.evaluate.runs.load_evaluation_images`):

    - test log-likelihood: from ``eval.json`` if it covers the same images, else importance sampling with the
      method's proposal (:func:`mcmcvae.evaluate.runs.test_log_likelihood`, ``num_samples`` samples,
      ``tau = 1.5``);
    - ``L_k`` with ``k = num_samples`` draws from ``q0``, the ELBO and the effective sample size of those
      weights, from one pass (:func:`mcmcvae.evaluate.diagnostics.bound_diagnostics`); with ``k = 5000``,
      ``-L_k`` is Ding and Freedman's NVLB;
    - variational gap ``log p(x) - L_k`` and inference gap ``log p(x) - ELBO``
      (:func:`mcmcvae.evaluate.diagnostics.variational_gap`), means over the images;
    - active units ``A_u > 0.01`` (:func:`mcmcvae.evaluate.diagnostics.active_units`; exact ``q0`` means for a
      :class:`mcmcvae.models.VAE`, 100 draws per image otherwise).

    Parameters
    ----------
    run_dir
        A run directory with ``config.json`` and ``checkpoints/`` (``mcmcvae train --out``).
    num_samples
        ``k`` of ``L_k``, and ``S`` of the log-likelihood when it is computed here.
    num_images
        Test images evaluated (the first ones).
    seed
        Seed of every random draw of the report.
    batch_size
        Images per jitted call.
    traversal_steps, traversal_radius
        Columns and half-width of the latent traversals (:func:`mcmcvae.figures.latent_traversal`).

    Returns
    -------
    dict
        The numbers of ``report.json`` (JSON-ready), with ``report`` the path of ``report.md``.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` holds no ``config.json`` or no checkpoint.
    ValueError
        For non-positive ``num_samples``, ``num_images`` or ``batch_size``, or a config without a dataset.

    Examples
    --------
    A report on a small run (one epoch on 200 MNIST images, after ``mcmcvae data fetch mnist``; ``mcmcvae
    train`` makes real ones), over 20 test images:

    >>> import mcmcvae as mv
    >>> from mcmcvae.report import write_report
    >>> from mcmcvae.train import Phase, Trainer
    >>> images = mv.data.load_images("mnist", "train", binarize="static", num_images=200)
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> _ = Trainer(model, [Phase(mv.methods.build("vae"), 1)], out_dir="runs/vae", progress=False,
    ...             binarize="static", extra_config={"dataset": "mnist"}).run(images)
    >>> results = write_report("runs/vae", num_samples=100, num_images=20)
    >>> results["report"], results["num_images"], results["latent_dim"]
    ('runs/vae/report.md', 20, 2)
    >>> bool(results["log_k_bound"] >= results["elbo"])  # L_k >= ELBO on the same draws
    True
    """
    from mcmcvae.evaluate.diagnostics import active_units, bound_diagnostics, variational_gap
    from mcmcvae.evaluate.importance import bits_per_dim
    from mcmcvae.evaluate.runs import test_log_likelihood
    from mcmcvae.figures import plot_training_curves
    from mcmcvae.models import VAE
    from mcmcvae.train import load_run

    run_dir = pathlib.Path(run_dir)
    num_samples = _check_positive_int(num_samples, "num_samples")
    num_images = _check_positive_int(num_images, "num_images")
    batch_size = _check_positive_int(batch_size, "batch_size")
    model, method, params, state, config = load_run(run_dir)
    trained = config["trained"]
    if not trained["finished"]:
        warnings.warn(f"{run_dir} is unfinished: reporting on its checkpoint after epoch {trained['global_epoch']} "
                      f"of {trained['total_epochs']}", UserWarning, stacklevel=2)
    images = load_evaluation_images(config, split="test", num_images=num_images)
    model.validate_images(images)
    n = int(images.shape[0])
    k_samples, k_bound, k_units, k_likelihood = jax.random.split(jax.random.key(seed), 4)

    # ---------------------------------------------------------------------------------------- numbers
    bound = bound_diagnostics(k_bound, model, params, images, num_samples=num_samples, batch_size=batch_size)
    units = active_units(k_units, model, params, images, num_samples=None if isinstance(model, VAE) else 100,
                         batch_size=batch_size)
    saved = _saved_log_likelihood(run_dir, n, trained["global_epoch"])
    if saved is not None:
        log_likelihood = float(saved["test_log_likelihood"])
        log_likelihood_se = float(saved.get("standard_error", float("nan")))
        estimator = saved.get("estimator", "importance")
        detail = (f"S = {saved['num_samples']}" if "num_samples" in saved else
                  f"T = {saved.get('num_temperatures')}, K = {saved.get('num_chains')}")
        source = f"eval.json ({estimator}, {detail})"
        proposal_ess = saved.get("effective_sample_size")
        # the same images in the same order: the mean of the per-image gaps is the difference of the means
        gap = log_likelihood - float(jnp.mean(bound.log_k_bound))
        inference_gap = log_likelihood - float(jnp.mean(bound.elbo))
        gap_se = inference_gap_se = None
    else:
        summary = test_log_likelihood(k_likelihood, model, method, params, state, images,
                                      num_samples=num_samples, batch_size=batch_size)
        per_image = summary["per_image"]
        source = f"importance sampling here (S = {num_samples}, {summary['proposal']} proposal, tau = 1.5)"
        proposal_ess = summary.get("effective_sample_size")
        log_likelihood, log_likelihood_se = _mean_and_standard_error(per_image)
        gap, gap_se = _mean_and_standard_error(variational_gap(per_image, np.asarray(bound.log_k_bound)))
        inference_gap, inference_gap_se = _mean_and_standard_error(variational_gap(per_image,
                                                                                   np.asarray(bound.elbo)))
    bound_mean, bound_se = _mean_and_standard_error(bound.log_k_bound)
    elbo_mean, elbo_se = _mean_and_standard_error(bound.elbo)
    ess_mean = float(jnp.mean(bound.effective_sample_size))
    activity = np.asarray(units.activity, np.float64)
    phases = [(p["method"]["name"], int(p["num_epochs"])) for p in config["phases"]]
    results = {
        "run_dir": str(run_dir), "dataset": config["dataset"], "method": method.name,
        "epochs": sum(e for _, e in phases), "phases": [{"method": m, "num_epochs": e} for m, e in phases],
        "trained_epochs": trained["global_epoch"], "finished": trained["finished"],
        "num_images": n, "num_samples": num_samples, "seed": seed,
        "test_log_likelihood": log_likelihood, "test_log_likelihood_standard_error": log_likelihood_se,
        "test_log_likelihood_source": source,
        "log_k_bound": bound_mean, "log_k_bound_standard_error": bound_se,
        "elbo": elbo_mean, "elbo_standard_error": elbo_se,
        "variational_gap": gap, "inference_gap": inference_gap,
        "effective_sample_size": ess_mean, "effective_sample_size_fraction": ess_mean / num_samples,
        "proposal_effective_sample_size": None if proposal_ess is None else float(proposal_ess),
        "active_units": units.num_active, "latent_dim": int(activity.shape[0]), "activity": activity.tolist(),
    }
    if model.likelihood != "bernoulli":
        results["bits_per_dim"] = float(bits_per_dim(log_likelihood, model.data_dim))
    if hasattr(model, "log_marginal"):  # linear models know their log-likelihood exactly
        results["exact_test_log_likelihood"] = float(np.mean(model.log_marginal(params, jnp.asarray(images))))

    # ---------------------------------------------------------------------------------------- figures
    traversal_units = np.argsort(-activity, kind="stable")[:MAX_TRAVERSAL_ROWS]
    figures = {}
    if config["dataset"] != LINEAR_HVAE:  # vectors, not images: only the training curves
        figures.update(_image_figures(run_dir, model, params, images, traversal_units, k_samples, method.name,
                                      traversal_steps, traversal_radius))
    if (run_dir / "metrics.jsonl").exists():
        figures["training"] = plot_training_curves(run_dir / "metrics.jsonl", run_dir / "report-training.png")
    results["figures"] = {name: path.name for name, path in figures.items()}
    results["traversal_units"] = [int(u) for u in traversal_units]

    report_path = run_dir / "report.md"
    report_path.write_text(_markdown(results, config, gap_se, inference_gap_se))
    results["report"] = str(report_path)
    (run_dir / "report.json").write_text(json.dumps(results, indent=2))
    return results


def _image_figures(run_dir, model, params, images, traversal_units, rng_key, method_name, traversal_steps,
                   traversal_radius) -> dict:
    """Samples, reconstructions and latent traversals as PNGs in ``run_dir``; returns their paths by name."""
    from mcmcvae.figures import latent_traversal, save_image_grid

    @jax.jit  # one compiled call rather than dozens of op-by-op ones
    def figure_arrays(key, params, shown):
        samples = model.mean_image(params, model.sample_prior(key, params, 100))
        loc = model.encode(params, shown)[0]
        return samples, model.mean_image(params, loc), loc[0]

    shown = images[:50]
    samples, reconstructions, center = map(np.asarray, figure_arrays(rng_key, params, jnp.asarray(shown)))
    pairs = np.stack([shown, reconstructions], 1).reshape(2 * len(shown), *images.shape[1:])
    traversal = latent_traversal(model, params, center, num_steps=traversal_steps, radius=traversal_radius,
                                 dimensions=traversal_units)
    units = ", ".join(map(str, traversal_units))
    return {
        "samples": save_image_grid(samples, run_dir / "report-samples.png", title=f"{method_name}: samples (means)"),
        "reconstructions": save_image_grid(pairs, run_dir / "report-reconstructions.png",
                                           title="data | reconstruction (q0 mean)"),
        "traversals": save_image_grid(traversal, run_dir / "report-traversals.png", num_columns=traversal_steps,
                                      title=f"units {units}: +-{traversal_radius:g}"),
    }


def _format(value: float, se: float | None = None) -> str:
    return f"{value:.2f}" if se is None or not math.isfinite(se) else f"{value:.2f} ± {se:.2f}"


def _markdown(results: dict, config: dict, gap_se, inference_gap_se) -> str:
    k, n = results["num_samples"], results["num_images"]
    model_config = config.get("model", {})
    model_line = ", ".join(f"{key} {value}" for key, value in model_config.items()
                           if key in ("kind", "latent_dim", "architecture", "hidden_sizes", "prior", "likelihood"))
    phases = "; ".join(f"{p['method']} {p['num_epochs']}" for p in results["phases"])
    train_size = config.get("train_size")
    run_rows = [
        ("method", results["method"]),
        ("dataset", f"{results['dataset']} (binarize {config.get('binarize', 'none')}; "
                    + (f"first {train_size} training images)" if train_size else "all training images)")),
        ("epochs", f"{results['epochs']} ({phases})"),
        ("model", model_line),
        ("batch size, seed", f"{config.get('batch_size')}, {config.get('seed')}"),
    ]
    proposal_ess = results["proposal_effective_sample_size"]
    diagnostics = [
        ("test log-likelihood (nats)", _format(results["test_log_likelihood"],
                                               results["test_log_likelihood_standard_error"]),
         results["test_log_likelihood_source"]),
        (f"L_k bound, k = {k} (nats)", _format(results["log_k_bound"], results["log_k_bound_standard_error"]),
         f"draws from q0; NVLB = -L_k = {-results['log_k_bound']:.2f}"),
        ("ELBO (nats)", _format(results["elbo"], results["elbo_standard_error"]),
         f"mean log weight of the {k} draws"),
        ("variational gap (nats)", _format(results["variational_gap"], gap_se),
         "log p(x) - L_k (Ding and Freedman)"),
        ("inference gap (nats)", _format(results["inference_gap"], inference_gap_se), "log p(x) - ELBO"),
        ("ESS of the q0 weights", f"{results['effective_sample_size']:.2f}",
         f"of k = {k} ({100 * results['effective_sample_size_fraction']:.2f}%), mean over images"),
    ]
    if proposal_ess is not None:
        diagnostics.append(("ESS of the log-likelihood's weights", f"{proposal_ess:.2f}", "mean over images"))
    diagnostics.append(("active units", f"{results['active_units']} of {results['latent_dim']}",
                        "Cov_x(E_q[z_u]) > 0.01 (Burda et al.)"))
    if "exact_test_log_likelihood" in results:
        diagnostics.insert(1, ("exact test log-likelihood (nats)", f"{results['exact_test_log_likelihood']:.2f}",
                               "closed form of the learnt linear model"))
    if "bits_per_dim" in results:
        diagnostics.append(("bits/dim", f"{results['bits_per_dim']:.3f}", "from the test log-likelihood"))
    activity = ", ".join(f"{u}: {a:.3f}" for u, a in enumerate(results["activity"]))
    lines = [
        f"# Report: {pathlib.Path(results['run_dir']).name}",
        "",
        f"Written by `mcmcvae report` (seed {results['seed']}); regenerate with "
        f"`mcmcvae report {results['run_dir']} --num-samples {k} --num-images {n}`.",
        "",
        "## Run",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in run_rows),
        "",
        f"## Diagnostics on the first {n} test images",
        "",
        "| quantity | value | notes |",
        "| --- | --- | --- |",
        *(f"| {name} | {value} | {note} |" for name, value, note in diagnostics),
        "",
        f"Activity per unit: {activity}.",
        "",
        "## Figures",
        "",
    ]
    captions = {
        "samples": "Decoded means of 100 prior draws.",
        "reconstructions": "Test images and the decoded q0 means, in pairs.",
        "traversals": (f"Latent traversals through the first test image's q0 mean, one row per unit "
                       f"(units {', '.join(map(str, results['traversal_units']))}, most active first)."),
        "training": "Training curves from metrics.jsonl.",
    }
    for name, file_name in results["figures"].items():
        lines += [f"![{name}]({file_name})", "", captions[name], ""]
    return "\n".join(lines)
