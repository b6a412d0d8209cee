"""Reproductions, one module each, run by ``mcmcvae experiment NAME``.

Every experiment writes ``NAME.json`` (a list of rows ``{"experiment", "dataset", "method", "metric", "value",
"std", "num_seeds"}``) and ``NAME.md`` (the table, budgets, machine, published anchors and discussion) into
``results/`` or ``--out``. ``--quick`` runs the same code with tiny budgets (the tests use it).
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["REGISTRY", "describe", "run"]

# name -> module in this package; the module has DESCRIPTION and run(*, quick, out_dir) -> list of paths
REGISTRY = {
    "vae-baseline": "vae_baseline",
    "benchmark": "benchmark",
    "table1-loglik": "table1_loglik",
    "table1-lr": "table1_lr",
    "table1-acceptance": "table1_acceptance",
    "table2-kid": "table2_kid",
    "table3-augmentation": "table3_augmentation",
    "hvae-gaussian": "hvae_gaussian",
    "hvae-mnist": "hvae_mnist",
    "aiwae": "aiwae",
    "vcd": "vcd",
    "linear-hvae": "linear_hvae",
    "nonlinear-hvae": "nonlinear_hvae",
}


def describe() -> dict[str, str]:
    """Each registered experiment's one-line description."""
    return {name: import_module(f"{__name__}.{module}").DESCRIPTION for name, module in REGISTRY.items()}


def run(name: str, *, quick: bool = False, out_dir=None, budget: str | None = None):
    """Run experiment ``name``; returns the paths written.

    ``budget`` names one of the experiment's budgets (e.g. ``paper`` or ``cpu``) for experiments that have several;
    ``quick`` is the smoke-test budget every experiment has.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(REGISTRY)}")
    module = import_module(f"{__name__}.{REGISTRY[name]}")
    if budget is None:
        return module.run(quick=quick, out_dir=out_dir)
    if not hasattr(module, "BUDGETS"):
        raise ValueError(f"experiment {name!r} has one budget; drop --budget (or use --quick)")
    return module.run(quick=quick, out_dir=out_dir, budget=budget)
