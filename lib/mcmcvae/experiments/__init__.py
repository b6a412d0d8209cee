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
}


def describe() -> dict[str, str]:
    """Each registered experiment's one-line description."""
    return {name: import_module(f"{__name__}.{module}").DESCRIPTION for name, module in REGISTRY.items()}


def run(name: str, *, quick: bool = False, out_dir=None):
    """Run experiment ``name``; returns the paths written."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(REGISTRY)}")
    return import_module(f"{__name__}.{REGISTRY[name]}").run(quick=quick, out_dir=out_dir)
