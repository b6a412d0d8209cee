"""The ``mcmcvae`` command line: ``train``, ``evaluate``, ``report``, ``data fetch`` and ``experiment``.

``experiment`` forwards to the research scripts' runner, ``python experiments/run.py``, of the clone it is run in.

Heavy imports (JAX, Haiku, NumPyro) happen inside the sub-commands, so ``mcmcvae --help`` and
``mcmcvae data fetch`` start quickly.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import warnings

__all__ = ["main", "build_parser"]

# Methods trained from scratch; the others run after --epochs of plain VAE training.
AMORTISED = ("vae", "iwae", "hvae", "aiwae")
from mcmcvae.data.datasets import LINEAR_HVAE  # the synthetic dataset, with its own (linear hierarchical) model


def _integer_at_least(minimum: int, words: str):
    """argparse type: an integer >= ``minimum`` (a bad value is a usage error, before any file is read or
    written)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {words} integer, got {text!r}")
        return value

    return parse


_positive_int = _integer_at_least(1, "positive")
_count = _integer_at_least(0, "non-negative")


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, scales, factors; NaN and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from mcmcvae.data.datasets import DATASETS
    from mcmcvae.methods import METHODS

    parser = argparse.ArgumentParser(prog="mcmcvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model with one method", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--dataset", required=True, help=f"one of: {', '.join((*DATASETS, LINEAR_HVAE))}")
    train.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    train.add_argument("--out", required=True, type=pathlib.Path, help="run directory (config, metrics, checkpoints)")
    train.add_argument("--prior", default="standard", choices=("standard", "mog", "vamp"))
    train.add_argument("--likelihood", default=None, choices=("bernoulli", "logistic256", "gaussian"),
                       help="default: bernoulli for images, gaussian for linear_hvae (its only likelihood)")
    train.add_argument("--likelihood-scale", type=_positive_float, default=0.1,
                       help="logistic scale s or Gaussian std of the likelihood")
    train.add_argument("--learn-likelihood-scale", action="store_true")
    train.add_argument("--architecture", default="mlp", choices=("mlp", "conv"))
    train.add_argument("--hidden-sizes", default="200,200",
                       help="comma-separated MLP layer sizes ('' for none: linear encoder and decoder)")
    train.add_argument("--latent-dim", type=_positive_int, default=10)
    train.add_argument("--latent-sizes", default="10,20",
                       help="linear_hvae: comma-separated layer sizes d_1,...,d_L of the generating and the learnt "
                            "linear hierarchical model (data dimension 2 d_L)")
    train.add_argument("--epochs", type=_count, default=10, help="plain-VAE epochs (the method's own for vae/iwae)")
    train.add_argument("--mcmc-epochs", type=_count, default=0, help="epochs of the MCMC method after the VAE epochs")
    train.add_argument("--num-mcmc-steps", type=_positive_int, default=None,
                       help="K, kernel steps per batch (default: the method's, 10 for Algorithm 1, 8 for vcd)")
    train.add_argument("--num-leapfrog-steps", type=_positive_int, default=None,
                       help="L, leapfrog steps per HMC step (default: the method's, 2 for Algorithm 1, 5 for vcd)")
    train.add_argument("--preconditioner", default="diagonal", choices=("diagonal", "lower_triangular"))
    train.add_argument("--num-samples", type=_positive_int, default=None, help="k importance samples (iwae)")
    train.add_argument("--learning-rate", type=_positive_float, default=1e-3)
    train.add_argument("--batch-size", type=_positive_int, default=100)
    train.add_argument("--binarize", default=None, choices=("static", "dynamic", "none"),
                       help="default: static (threshold 0.5) for a Bernoulli likelihood, none otherwise")
    train.add_argument("--train-size", type=_positive_int, default=None, help="keep the first N training images")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = sub.add_parser("evaluate", help="test log-likelihood of a trained run; writes DIR/eval.json",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    evaluate.add_argument("run_dir", type=pathlib.Path)
    evaluate.add_argument("--method", default="importance", choices=("importance", "ais"),
                          help="estimator: importance sampling, or annealed importance sampling from the same proposal")
    evaluate.add_argument("--num-samples", type=_positive_int, default=5000, help="S, importance samples per image")
    evaluate.add_argument("--num-temperatures", type=_positive_int, default=100,
                          help="T, AIS temperatures (--method ais)")
    evaluate.add_argument("--num-chains", type=_positive_int, default=16, help="K, AIS chains per image (--method ais)")
    evaluate.add_argument("--num-leapfrog-steps", type=_positive_int, default=5,
                          help="leapfrog steps per AIS HMC transition (--method ais)")
    evaluate.add_argument("--step-size", type=float, default=None,
                          help="fixed AIS leapfrog step size, in units of the proposal's scale, for an exactly "
                               "unbiased estimate of p(x) (--method ais; default: adapted per temperature)")
    evaluate.add_argument("--split", default="test", choices=("test", "train"))
    evaluate.add_argument("--tau", type=_positive_float, default=1.5, help="factor on the proposal's variance")
    evaluate.add_argument("--num-images", type=_positive_int, default=None, help="evaluate only the first N images")
    evaluate.add_argument("--batch-size", type=_positive_int, default=100)
    evaluate.add_argument("--seed", type=int, default=0)

    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download the datasets that can be fetched here")
    fetch.add_argument("names", nargs="*", help=f"datasets (default: all of {', '.join(DATASETS)})")

    experiment = sub.add_parser("experiment", add_help=False,
                                help="from a clone: run a reproduction (forwards to python experiments/run.py)")
    experiment.add_argument("args", nargs=argparse.REMAINDER,
                            help="NAME [--budget B] [--quick] [--out DIR], or list (see python experiments/run.py -h)")

    report = sub.add_parser("report", help="diagnostics and figures of a trained run; writes DIR/report.md",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    report.add_argument("run_dir", type=pathlib.Path)
    report.add_argument("--num-samples", type=int, default=5000,
                        help="k of the L_k bound (5000: the NVLB), and S of the log-likelihood without eval.json")
    report.add_argument("--num-images", type=int, default=1000, help="evaluate the first N test images")
    report.add_argument("--batch-size", type=int, default=100)  # write_report checks its own counts
    report.add_argument("--seed", type=int, default=0)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"mcmcvae: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    """Run one command; user errors (bad values, files, a busy run directory, a run that cannot progress) print
    ``mcmcvae: error: ...`` and return 2, warnings print one ``mcmcvae: warning: ...`` line each."""
    from mcmcvae.train import RunInUseError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["experiment"]:  # everything after it is the runner's, options first included
        return _experiment(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage error (or the help): return its status
        return exit_.code if isinstance(exit_.code, int) else 2
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return {"train": _train, "evaluate": _evaluate, "data": _data, "report": _report}[args.command](args)
        except (ValueError, TypeError, OSError, FloatingPointError, RunInUseError) as error:
            print(f"mcmcvae: error: {error}", file=sys.stderr)
            return 2


# ------------------------------------------------------------------------------------------------ train
def load_training_images(dataset: str, *, split: str, binarize: str, train_size: int | None = None, seed: int = 0,
                         latent_sizes=(10, 20)):
    """Images of a dataset split, cut to ``train_size`` and binarised as the run asks (static: threshold 0.5);
    :func:`mcmcvae.data.load_images` with the CLI's ``--binarize`` words."""
    import mcmcvae as mv

    return mv.data.load_images(dataset, split, binarize="static" if binarize == "static" else "none",
                               num_images=train_size, latent_sizes=latent_sizes)


def _train(args) -> int:
    import mcmcvae as mv
    from mcmcvae.train import Phase, Trainer

    method_name = args.method
    mv.methods.build(method_name)  # an unknown name fails here, before any data is read
    if args.epochs + (0 if method_name in AMORTISED else args.mcmc_epochs) < 1:
        raise ValueError("the run has no epoch to train: set --epochs (or --mcmc-epochs) to at least 1")
    latent_sizes = _int_list(args.latent_sizes, "--latent-sizes")
    if args.dataset == LINEAR_HVAE:
        if args.likelihood not in (None, "gaussian") or args.binarize not in (None, "none"):
            raise ValueError("linear_hvae is real-valued with a Gaussian likelihood: drop --likelihood/--binarize")
        unused = [option for option, value, default in (
            ("--architecture", args.architecture, "mlp"), ("--hidden-sizes", args.hidden_sizes, "200,200"),
            ("--latent-dim", args.latent_dim, 10), ("--prior", args.prior, "standard"),
            ("--likelihood-scale", args.likelihood_scale, 0.1),
            ("--learn-likelihood-scale", args.learn_likelihood_scale, False)) if value != default]
        if unused:
            raise ValueError(f"{', '.join(unused)} shape image models; linear_hvae's model is set by --latent-sizes: "
                             "drop them")
        binarize = "none"
        images = load_training_images(args.dataset, split="train", binarize=binarize, train_size=args.train_size,
                                      latent_sizes=latent_sizes)
        model = mv.hierarchical.LinearHVAE(image_shape=images.shape[1:], latent_sizes=latent_sizes)
    else:
        likelihood = args.likelihood or "bernoulli"
        binarize = args.binarize or ("static" if likelihood == "bernoulli" else "none")
        images = load_training_images(args.dataset, split="train", binarize=binarize, train_size=args.train_size)
        model = mv.models.VAE(
            image_shape=images.shape[1:], latent_dim=args.latent_dim, architecture=args.architecture,
            hidden_sizes=tuple(_int_list(args.hidden_sizes, "--hidden-sizes", allow_empty=True)), prior=args.prior,
            likelihood=likelihood, likelihood_scale=args.likelihood_scale,
            learn_likelihood_scale=args.learn_likelihood_scale,
        )
    options = {"learning_rate": args.learning_rate, "num_mcmc_steps": args.num_mcmc_steps,
               "num_integration_steps": args.num_leapfrog_steps, "preconditioner": args.preconditioner}
    if args.num_samples is not None:
        options["num_samples"] = args.num_samples
    options["num_data"] = images.shape[0]  # vcd's per-image control variates
    # each method gets only the options it takes (mv.methods.build is strict); unset ones keep its defaults
    options = mv.methods.select_options(method_name, {k: v for k, v in options.items() if v is not None})
    if method_name in AMORTISED:
        phases = [Phase(mv.methods.build(method_name, **options), args.epochs)]
    else:
        if args.mcmc_epochs < 1:
            raise ValueError(f"method {method_name!r} trains in --mcmc-epochs after --epochs of VAE; set --mcmc-epochs")
        phases = [Phase(mv.methods.build("vae", learning_rate=args.learning_rate), args.epochs),
                  Phase(mv.methods.build(method_name, **options), args.mcmc_epochs)]
    trainer = Trainer(model, phases, batch_size=args.batch_size, seed=args.seed, binarize=binarize,
                      out_dir=args.out, progress=not args.no_progress,
                      extra_config={"dataset": args.dataset, "train_size": args.train_size,
                                    **({"latent_sizes": latent_sizes} if args.dataset == LINEAR_HVAE else {})})
    trainer.run(images, resume=args.resume)
    rows = mv.train.read_metrics(args.out)
    last = rows[-1]
    skipped = sum(r.get("nonfinite_updates", 0) for r in rows)
    note = f"; {skipped} non-finite updates skipped (see metrics.jsonl)" if skipped else ""
    print(f"trained {method_name} on {args.dataset} ({images.shape[0]} images) for "
          f"{sum(p.num_epochs for p in phases)} epochs: final loss {last.get('loss', float('nan')):.3f}{note}; "
          f"run in {args.out}")
    return 0


def _int_list(text: str, option: str, *, allow_empty: bool = False) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated positive integers, got {text!r}") from None
    if (not values and not allow_empty) or (values and min(values) < 1):
        raise ValueError(f"{option} takes comma-separated positive integers, got {text!r}")
    return values


# --------------------------------------------------------------------------------------------- evaluate
def _evaluate(args) -> int:
    import jax
    import numpy as np

    import mcmcvae as mv
    from mcmcvae.evaluate.runs import load_evaluation_images, test_ais_log_likelihood, test_log_likelihood
    from mcmcvae.figures import save_image_grid
    from mcmcvae.train import load_run

    if args.step_size is not None and (args.method != "ais" or not args.step_size > 0):
        raise ValueError(f"--step-size fixes AIS's leapfrog step: it needs --method ais and a positive value, got "
                         f"--method {args.method} --step-size {args.step_size}")
    model, method, params, state, config = load_run(args.run_dir)
    trained = config["trained"]
    if not trained["finished"]:
        print(f"mcmcvae: warning: {args.run_dir} is unfinished: scoring its checkpoint after epoch "
              f"{trained['global_epoch']} of {trained['total_epochs']}", file=sys.stderr)
    images = load_evaluation_images(config, split=args.split, num_images=args.num_images)
    dataset = config["dataset"]
    model.validate_images(images)
    key = jax.random.key(args.seed)
    if args.method == "ais":
        summary = test_ais_log_likelihood(key, model, method, params, state, images,
                                          num_temperatures=args.num_temperatures, num_chains=args.num_chains,
                                          num_leapfrog_steps=args.num_leapfrog_steps, variance_factor=args.tau,
                                          batch_size=args.batch_size, step_size=args.step_size)
    else:
        summary = test_log_likelihood(key, model, method, params, state, images, num_samples=args.num_samples,
                                      variance_factor=args.tau, batch_size=args.batch_size)
    summary.pop("per_image")
    if args.method == "ais":
        summary["step_size"] = "adapted" if args.step_size is None else args.step_size
    summary.update({"split": args.split, "dataset": dataset, "method": method.name, "seed": args.seed,
                    "trained_epochs": trained["global_epoch"], "total_epochs": trained["total_epochs"],
                    "finished": trained["finished"]})
    if dataset == LINEAR_HVAE:  # the learnt linear model's log-likelihood is also known exactly
        summary[f"exact_{args.split}_log_likelihood"] = float(np.mean(model.log_marginal(params, images)))
    (args.run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    rows = [("dataset", dataset), ("method", method.name), ("split", args.split),
            ("images", summary["num_images"]),
            *([("AIS temperatures x chains", f"{args.num_temperatures} x {args.num_chains}"),
               ("AIS acceptance rate", f"{summary['acceptance_rate']:.3f}")] if args.method == "ais" else
              [("importance samples", summary["num_samples"])]),
            (f"{args.split} log-likelihood (nats)",
             f"{summary['test_log_likelihood']:.2f} +- {summary['standard_error']:.2f}")]
    if f"exact_{args.split}_log_likelihood" in summary:
        rows.append((f"exact {args.split} log-likelihood", f"{summary[f'exact_{args.split}_log_likelihood']:.2f}"))
    if "bits_per_dim" in summary:
        rows.append(("bits/dim", f"{summary['bits_per_dim']:.3f}"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    if dataset == LINEAR_HVAE:  # vectors, not images: no grids
        print(f"wrote {args.run_dir / 'eval.json'}")
        return 0
    samples = model.mean_image(params, model.sample_prior(jax.random.fold_in(key, 1), params, 100))
    save_image_grid(np.asarray(samples), args.run_dir / "samples.png", title=f"{method.name}: samples from the prior")
    shown = images[:50]
    reconstructions = model.mean_image(params, model.encode(params, shown)[0])
    pairs = np.stack([shown, np.asarray(reconstructions)], 1).reshape(2 * len(shown), *images.shape[1:])
    save_image_grid(pairs, args.run_dir / "reconstructions.png", title="data | reconstruction (q0 mean)")
    print(f"wrote {args.run_dir / 'eval.json'}, {args.run_dir / 'samples.png'}, {args.run_dir / 'reconstructions.png'}")
    return 0


# ------------------------------------------------------------------------------------------------- data
def _data(args) -> int:
    from mcmcvae.data import fetch

    reports = fetch(args.names or None)
    width = max(len(r.name) for r in reports)
    for report in reports:
        print(f"{report.name:<{width}}  {report.status:<17}  {report.message}")
    requested_failed = [r for r in reports if r.status not in ("ok", "already present") and args.names]
    return 1 if requested_failed else 0


# ------------------------------------------------------------------------------------------- experiment
def _experiment(argv: list[str]) -> int:
    """Forward ``argv`` to the research scripts' runner, ``experiments/run.py`` of the clone holding the current
    directory (the library itself holds no experiments)."""
    import importlib.util

    cwd = pathlib.Path.cwd()
    runner = next((d / "experiments" / "run.py" for d in (cwd, *cwd.parents)
                   if (d / "experiments" / "run.py").is_file()), None)
    if runner is None:
        print(f"mcmcvae experiment: error: no experiments/run.py in {cwd} or any folder above it: the reproductions "
              "are research scripts in a clone of the mcmcvae repository; run 'python experiments/run.py NAME' (or "
              "this command) inside one", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("mcmcvae_experiments_runner", runner)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv, prog="mcmcvae experiment")


# ----------------------------------------------------------------------------------------------- report
def _report(args) -> int:
    from mcmcvae.report import write_report

    results = write_report(args.run_dir, num_samples=args.num_samples, num_images=args.num_images, seed=args.seed,
                           batch_size=args.batch_size)
    print(f"test log-likelihood {results['test_log_likelihood']:.2f}, L_{results['num_samples']} "
          f"{results['log_k_bound']:.2f}, variational gap {results['variational_gap']:.2f} nats; "
          f"{results['active_units']} of {results['latent_dim']} units active")
    print(f"wrote {results['report']} and {', '.join(results['figures'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
