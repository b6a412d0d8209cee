"""The main job: a plain VAE against the same VAE refined by gradMALA, on MNIST, in a few CPU minutes.

Both models start from one pre-trained VAE (``--vae-epochs`` of the ELBO). From there, one copy trains on for
``--mcmc-epochs`` more epochs as a plain VAE; the other trains as many epochs with ``gradmala``: K steps of MALA
from the encoder's q0 refine each posterior sample, and the kernel's step size h and diagonal preconditioner C
are learnt by the entropy speed measure (Hirt, Kreouzis and Dellaportas 2024, Algorithm 1). Same seed, same
batches, same number of epochs.

Both are then evaluated on the same test images with the same estimator: importance sampling with ``--num-samples``
draws per image from N(m(x), 1.5 sigma(x)^2), where sigma(x) is the encoder's and m(x) is the method's estimate of
the posterior mean (the encoder's mean for the VAE; the mean of 16 K-step chains for gradmala, the paper's
section 6.2). The script prints a table, writes it to ``OUT/results.md`` and ``OUT/results.json``, and draws
``OUT/comparison.png``: test images, each model's reconstructions and samples, and the per-image differences of
the log-likelihoods.

Run from the repository root: ``python scripts/main.py`` (``bash scripts/main.sh`` sets up and fetches MNIST
first).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import numpy as np

import mcmcvae as mv
from mcmcvae.train import Phase, Trainer

EVALUATION_KEY = 12345  # the one fixed binarisation of the test images that `mcmcvae evaluate` also uses


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/main"))
    parser.add_argument("--vae-epochs", type=int, default=8, help="pre-training epochs of the plain VAE")
    parser.add_argument("--mcmc-epochs", type=int, default=2, help="epochs after pre-training, for both models")
    parser.add_argument("--num-mcmc-steps", type=int, default=5, help="K, gradmala's MALA steps per sample")
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (default all)")
    parser.add_argument("--num-images", type=int, default=1000, help="test images evaluated (the first N)")
    parser.add_argument("--num-samples", type=int, default=1000, help="S, importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def evaluate(model, method, params, state, images, num_samples, seed):
    """Importance-sampling log-likelihood of each image, and the proposals' means (for reconstructions)."""
    key = jax.random.key(seed)
    result = mv.evaluate.test_log_likelihood(key, model, method, params, state, images, num_samples=num_samples)
    locs, _ = mv.evaluate.method_proposals(jax.random.fold_in(key, 1), model, method, params, state, images[:10])
    return result, locs


def comparison_figure(path, model, images, runs, differences):
    """Test images; each model's reconstructions and samples; histogram of per-image log-likelihood gains."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcmcvae.figures import image_grid

    rows = [("test images", images[:10])]
    means = {"vae": "the encoder's mean", "gradmala": "the mean of the K-step chains"}
    for name, run in runs.items():
        rows.append((f"{name}: reconstructions from m(x), {means.get(name, 'the proposal mean')}",
                     run["reconstructions"]))
    for name, run in runs.items():
        rows.append((f"{name}: samples", run["samples"]))
    fig = plt.figure(figsize=(9.5, 0.75 * len(rows) + 0.4))
    grid_axes = fig.add_gridspec(len(rows), 2, width_ratios=(2.2, 1), wspace=0.25, hspace=0.35)
    for i, (title, row) in enumerate(rows):
        ax = fig.add_subplot(grid_axes[i, 0])
        ax.imshow(image_grid(row, num_columns=10)[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.axis("off")
    ax = fig.add_subplot(grid_axes[:, 1])
    ax.hist(differences, bins=40, color="tab:blue")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.axvline(float(np.mean(differences)), color="tab:red", linewidth=1.2, label=f"mean {np.mean(differences):+.2f}")
    ax.set_xlabel("log p(x): gradmala - vae (nats)", fontsize=8)
    ax.set_ylabel("test images", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    out = args.out
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: delete it (bash scripts/main.sh does) or pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    train = mv.data.load_images("mnist", "train", num_images=args.train_size)  # grey levels: binarised per batch
    test = mv.data.binarize_dynamic(jax.random.key(EVALUATION_KEY),
                                    mv.data.load_images("mnist", "test", num_images=args.num_images))
    test = np.asarray(test, np.float32)
    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=10)  # 200-200 MLPs, Bernoulli, N(0, I)
    common = dict(batch_size=100, seed=args.seed, binarize="dynamic")
    extra = {"dataset": "mnist", "train_size": args.train_size}

    print(f"pre-training a VAE: {args.vae_epochs} epochs on {len(train)} MNIST images", flush=True)
    vae = mv.methods.build("vae")
    pretrained, _ = Trainer(model, [Phase(vae, args.vae_epochs)], out_dir=out / "pretrain", extra_config=extra,
                            **common).run(train)

    methods = {"vae": vae, "gradmala": mv.methods.build("gradmala", num_mcmc_steps=args.num_mcmc_steps)}
    runs = {}
    for name, method in methods.items():
        print(f"{name}: {args.mcmc_epochs} more epochs from the pre-trained VAE", flush=True)
        start = time.perf_counter()
        params, state = Trainer(model, [Phase(method, args.mcmc_epochs)], out_dir=out / name,
                                extra_config={**extra, "initialised_from": str(out / "pretrain")},
                                **common).run(train, params=pretrained)
        train_seconds = time.perf_counter() - start
        print(f"{name}: test log-likelihood of {len(test)} images, S = {args.num_samples}", flush=True)
        result, locs = evaluate(model, method, params, state, test, args.num_samples, args.seed)
        samples = mv.evaluate.generate_images(jax.random.key(args.seed), model, params, 10)
        runs[name] = {
            "per_image": result.pop("per_image"), "summary": result, "train_seconds": train_seconds,
            "reconstructions": np.asarray(jax.jit(model.mean_image)(params, locs)), "samples": samples,
            "kernel": None if name == "vae" else method.kernel_parameters(model, state),
        }

    differences = runs["gradmala"]["per_image"] - runs["vae"]["per_image"]  # the same images, paired
    diff_mean = float(differences.mean())
    diff_se = float(differences.std(ddof=1) / np.sqrt(len(differences)))
    training = {"vae": f"{args.vae_epochs} VAE + {args.mcmc_epochs} VAE epochs",
                "gradmala": f"{args.vae_epochs} VAE + {args.mcmc_epochs} gradmala epochs (K = {args.num_mcmc_steps})"}
    lines = [
        f"MNIST (dynamically binarised), VAE with d = 10 and 200-200 MLPs, {len(train)} training images.",
        f"Test log-likelihood of the first {len(test)} test images (one fixed binarisation), importance sampling",
        f"with S = {args.num_samples} samples per image from N(m(x), 1.5 sigma(x)^2): m(x) is the encoder's mean "
        "(vae) or the mean of 16 K-step chains (gradmala).",
        "",
        "| method | training | test log-likelihood (nats) | standard error | training time (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, run in runs.items():
        s = run["summary"]
        lines.append(f"| {name} | {training[name]} | {s['test_log_likelihood']:.2f} | {s['standard_error']:.2f} | "
                     f"{run['train_seconds']:.0f} |")
    kernel = runs["gradmala"]["kernel"]
    lines += [
        "",
        f"gradmala - vae, per image on the same images: {diff_mean:+.2f} +- {diff_se:.2f} nats "
        f"(higher is better; better on {int((differences > 0).sum())} of {len(differences)} images).",
        f"gradmala's learnt step size h = {float(kernel.step_size):.3f}; diagonal of C from "
        f"{float(np.min(kernel.scale)):.2f} to {float(np.max(kernel.scale)):.2f}.",
        f"Total {time.perf_counter() - tic:.0f} s on {platform.machine()} ({jax.default_backend()}, "
        f"{jax.device_count()} device(s)). Figure: comparison.png.",
    ]
    table = "\n".join(lines)
    figure = comparison_figure(out / "comparison.png", model, test, runs, differences)
    (out / "results.md").write_text("# Main job: vae against gradmala\n\n" + table + "\n")
    (out / "results.json").write_text(json.dumps({
        "settings": vars(args) | {"out": str(out)},
        "methods": {name: {"training": training[name], "train_seconds": run["train_seconds"], **run["summary"]}
                    for name, run in runs.items()},
        "gradmala_minus_vae": {"mean": diff_mean, "standard_error": diff_se},
        "figure": figure.name,
    }, indent=2))
    print("\n" + table)
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'} and {figure}")


if __name__ == "__main__":
    main()
