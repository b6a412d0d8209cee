"""Run one reproduction: ``python experiments/run.py NAME [--budget B] [--quick] [--out DIR]``.

``python experiments/run.py list`` lists them with their one-line descriptions. Run it from the repository root:
an experiment writes ``results/NAME.json`` (rows in the public schema) and ``results/NAME.md`` under the current
directory, or under ``--out``, and keeps its training runs (checkpoints, cached evaluations) under ``runs/``, so
that an interrupted experiment run again resumes where it stopped.

An experiment is any module in this folder that defines, at its top level, ``DESCRIPTION`` (a one-line string) and
``run(*, quick, out_dir)`` returning the paths it wrote; one with several budgets also takes ``budget`` (a name
such as ``paper`` or ``cpu``; ``--quick`` is the tiny budget every experiment has, the one the tests run). Its
name is the file's stem with ``-`` for ``_`` (``table1_loglik.py`` is ``table1-loglik``), so a new experiment is
one new file. Experiments import their neighbours by module name (``import common``): this folder is on the path.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import inspect
import pathlib
import sys
from types import ModuleType
from typing import NamedTuple

HERE = pathlib.Path(__file__).resolve().parent


class Experiment(NamedTuple):
    """One experiment script: its name, file and one-line description."""

    name: str
    path: pathlib.Path
    description: str


def discover(directory=HERE) -> dict[str, Experiment]:
    """Every experiment in ``directory``, by name, in file order.

    A file is read, not imported, to tell whether it is an experiment (a top-level ``DESCRIPTION = "..."`` and
    ``def run``), so that listing runs nothing and a script that is not an experiment is never executed.
    """
    found = {}
    for path in sorted(pathlib.Path(directory).glob("*.py")):
        if path.name.startswith("_") or path.resolve() == pathlib.Path(__file__).resolve():
            continue
        description, has_run = None, False
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "DESCRIPTION"
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                description = node.value.value
            elif isinstance(node, ast.FunctionDef) and node.name == "run":
                has_run = True
        if description is not None and has_run:
            name = path.stem.replace("_", "-")
            found[name] = Experiment(name, path, description)
    return found


def load(name: str, directory=HERE) -> ModuleType:
    """Import experiment ``name`` from ``directory``; an unknown name is refused with the valid ones."""
    experiments = discover(directory)
    if name not in experiments:
        close = difflib.get_close_matches(name.replace("_", "-"), experiments, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown experiment {name!r}{hint}; valid experiments: {', '.join(experiments)} "
                         "('list' describes them)")
    path = experiments[name].path
    folder = str(path.parent)
    if sys.path[:1] != [folder]:
        sys.path.insert(0, folder)  # the experiments import their neighbours (common, table1_loglik, ...)
    module = importlib.import_module(path.stem)
    if pathlib.Path(module.__file__).resolve() != path.resolve():
        raise ValueError(f"the module {path.stem!r} was imported from {module.__file__}, not {path}: rename one "
                         "of the two")
    keywords = {p.name for p in inspect.signature(module.run).parameters.values() if p.kind is p.KEYWORD_ONLY}
    if not {"quick", "out_dir"} <= keywords:
        raise ValueError(f"{path} is not a runnable experiment: its run must take the keyword-only arguments "
                         f"quick and out_dir (and budget, where it has several budgets)")
    return module


def takes_budget(module: ModuleType) -> bool:
    """Whether an experiment module's ``run`` chooses between several budgets (takes ``budget``)."""
    return "budget" in inspect.signature(module.run).parameters


def run(name: str, *, quick: bool = False, out_dir=None, budget: str | None = None, directory=HERE) -> list:
    """Run experiment ``name``; returns the paths it wrote.

    ``budget`` names one of the experiment's budgets, for experiments that have several; ``quick`` is the tiny
    budget every experiment has. Giving both, or a budget to an experiment with one, is an error.
    """
    module = load(name, directory)
    if budget is None:
        return module.run(quick=quick, out_dir=out_dir)
    if not takes_budget(module):
        raise ValueError(f"experiment {name!r} has one budget; drop --budget (or use --quick for its tiny one)")
    if quick:
        raise ValueError(f"--quick is a budget of its own; give either --quick or --budget {budget}")
    return module.run(quick=False, out_dir=out_dir, budget=budget)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run one reproduction (writes results/NAME.json and "
                                     "results/NAME.md), or list them: python experiments/run.py list")
    parser.add_argument("name", help="the experiment's name, or 'list' to list them")
    parser.add_argument("--budget", default=None,
                        help="for experiments with several budgets: paper (the paper's schedule), cpu, or one of the "
                             "experiment's own (an unknown one is refused with the valid ones)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="directory for the results files (default: results/ under the current directory)")
    return parser


def main(argv=None, *, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.name == "list":
            if args.budget is not None or args.quick or args.out is not None:
                raise ValueError("list takes no options")
            experiments = discover()
            width = max(len(name) for name in experiments)
            for experiment in experiments.values():
                print(f"{experiment.name:<{width}}  {experiment.description}")
            return 0
        paths = run(args.name, quick=args.quick, out_dir=args.out, budget=args.budget)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
