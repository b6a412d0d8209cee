"""Speed-measure adaptation on an ill-conditioned Gaussian: the figure of docs/kernels.md.

The target is a rotated 20-dimensional Gaussian whose covariance has condition number 500. Starting from
``C = I`` and ``h = 0.1``, the speed measure tunes a lower-triangular ``C`` for MALA and for HMC (L = 3) with
its default settings, 64 chains and 4000 steps, and the script records at every step the condition number of
``C^T Sigma^{-1} C`` (1 for a perfect whitening), the acceptance rate averaged over chains and ``beta``.

    python experiments/kernels_figure.py                 # writes docs/figures/kernels_adaptation.png
    python experiments/kernels_figure.py --quick --out /tmp/figure.png

The seed is fixed (``--seed``, default 0); the final numbers are printed and saved next to the figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import mcmcvae as mv

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "figures" / "kernels_adaptation.png"


def ill_conditioned_gaussian(dim: int, condition_number: float, seed: int) -> np.ndarray:
    """``Sigma = Q diag(geomspace(1, condition_number, dim)) Q^T`` with a random rotation ``Q``."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.geomspace(1.0, condition_number, dim)) @ q.T


def adapt(rng_key, algorithm, covariance: np.ndarray, num_chains: int, num_steps: int, **options):
    """Run the speed-measure adaptation with ``lax.scan``, recording ``cond(C^T Sigma^{-1} C)`` at every step."""
    dim = covariance.shape[0]
    precision = jnp.asarray(np.linalg.inv(covariance), jnp.float32)
    logdensity_fn = lambda z: -0.5 * z @ (precision @ z)  # noqa: E731
    tuner = mv.adaptation.speed_measure(algorithm, logdensity_fn, preconditioner="lower_triangular", **options)
    key_init, key_run = jax.random.split(rng_key)
    chol = jnp.asarray(np.linalg.cholesky(covariance), jnp.float32)
    positions = jax.random.normal(key_init, (num_chains, dim)) @ chol.T  # the chains start in the target

    def transformed_condition_number(state):
        c = tuner.final(state).matrix()
        eigenvalues = jnp.linalg.eigvalsh(c.T @ precision @ c)
        return eigenvalues[-1] / eigenvalues[0]

    @jax.jit
    def run(key):
        def one_step(carry, step):
            chains, state = carry
            chains, state, info = tuner.update(jax.random.fold_in(key, step), state, chains)
            record = (transformed_condition_number(state), jnp.mean(info.acceptance_rate), info.beta)
            return (chains, state), record

        carry = (tuner.init_chains(positions), tuner.init(dim))
        (_, state), records = jax.lax.scan(one_step, carry, jnp.arange(num_steps))
        return state, records

    state, (condition_numbers, acceptance, beta) = run(key_run)
    return tuner, state, np.asarray(condition_numbers), np.asarray(acceptance), np.asarray(beta)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=4000)
    parser.add_argument("--num-chains", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="100 steps, 8 chains: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_steps, args.num_chains = 100, 8

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    covariance = ill_conditioned_gaussian(20, 500.0, args.seed)
    runs = {
        "MALA, lower-triangular C": (mv.kernels.mala, {}),
        "HMC (L = 3), lower-triangular C": (mv.kernels.hmc, {"num_integration_steps": 3}),
    }
    key = jax.random.key(args.seed)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    window = max(1, args.num_steps // 100)
    summary = {"seed": args.seed, "num_steps": args.num_steps, "num_chains": args.num_chains, "runs": {}}
    for index, (label, (algorithm, options)) in enumerate(runs.items()):
        start = time.perf_counter()
        tuner, state, condition_numbers, acceptance, beta = adapt(
            jax.random.fold_in(key, index), algorithm, covariance, args.num_chains, args.num_steps, **options
        )
        seconds = time.perf_counter() - start
        last = max(1, min(500, args.num_steps // 8))
        summary["runs"][label] = {
            "final_condition_number": float(condition_numbers[-1]),
            f"mean_acceptance_last_{last}_steps": float(acceptance[-last:].mean()),
            "target_acceptance_rate": tuner.target_acceptance_rate,
            "final_beta": float(beta[-1]),
            "final_step_size": float(tuner.final(state).step_size),
            "seconds_including_compilation": round(seconds, 1),
        }
        (line,) = axes[0].plot(np.arange(1, args.num_steps + 1), condition_numbers, label=label)
        steps = np.arange(len(smooth(acceptance, window))) + window
        axes[1].plot(steps, smooth(acceptance, window), color=line.get_color())
        axes[1].axhline(tuner.target_acceptance_rate, color=line.get_color(), linestyle=":", linewidth=1)
        axes[2].plot(np.arange(1, args.num_steps + 1), beta, color=line.get_color())
        print(label, json.dumps(summary["runs"][label]))

    axes[0].set(xscale="log", yscale="log", xlabel="step", title=r"cond$(C^T \Sigma^{-1} C)$ (initially 500)")
    axes[0].legend(fontsize=8)
    axes[1].set(xscale="log", xlabel="step", ylim=(0, 1.02),
                title=f"acceptance rate (mean over chains, {window}-step average)")
    axes[2].set(xscale="log", yscale="log", xlabel="step", title=r"$\beta$")
    fig.suptitle(
        f"Speed-measure adaptation, rotated 20-d Gaussian, cond 500; {args.num_chains} chains, seed {args.seed} "
        "(dotted: target acceptance)",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
