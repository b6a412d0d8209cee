"""Run one reproduction: ``python experiments/run.py NAME [--budget B] [--quick] [--out DIR] [--workers N]``.

``python experiments/run.py list`` lists them with their one-line descriptions. Run it from the repository root:
an experiment writes ``results/NAME.json`` (rows in the public schema) and ``results/NAME.md`` under the current
directory, or under ``--out``, and keeps its training runs (checkpoints, cached evaluations) under ``runs/``, so
that an interrupted experiment run again resumes where it stopped.

An experiment is any module in this folder that defines, at its top level, ``DESCRIPTION`` (a one-line string) and
``run(*, quick, out_dir)`` returning the paths it wrote; one with several budgets also takes ``budget`` (a name
such as ``paper`` or ``cpu``; ``--quick`` is the tiny budget every experiment has, the one the tests run). Its
name is the file's stem with ``-`` for ``_`` (``table1_loglik.py`` is ``table1-loglik``), so a new experiment is
one new file. Experiments import their neighbours by module name (``import common``): this folder is on the path.

A long experiment can also split into independent parts: ``parts(*, quick, budget)`` returns the budget's name and
one dict of keyword arguments per part, and ``run_part(**part, budget=..., out_dir=...)`` trains and evaluates one
part, keeping what it computes under ``runs/`` and writing no results file. ``--workers N`` then runs the parts in
N processes side by side, each on its own share of the CPU cores (one core each: XLA's CPU backend single-threaded,
which is faster per core than two processes contending for every core), marks each finished part under
``runs/NAME/BUDGET/parts/`` (with its log beside it) so that a later invocation skips it, and finally runs the
experiment itself, which restores the parts' runs and writes the results. Killed at any point, the same command
resumes: parts restart from their checkpoints and cached evaluations.

A part whose ``run_part`` returns result rows also leaves a record of them under ``results/parts/NAME/BUDGET/``
(``common.write_part_record``), with the budget's settings and the code that computed it; an experiment that
collects through ``common.part_rows`` needs only the records, so parts computed on other machines are collected by
bringing their records together, and the runner skips a part that has one.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import inspect
import json
import os
import pathlib
import subprocess
import sys
import time
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


def has_parts(module: ModuleType) -> bool:
    """Whether an experiment module splits into parts that can run side by side (``parts`` and ``run_part``)."""
    return callable(getattr(module, "parts", None)) and callable(getattr(module, "run_part", None))


def _label(part: dict) -> str:
    """A part's name in file names: ``dataset-mnist_seed-3`` (:func:`common.part_label`)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import common  # imported here, not at the top: listing the experiments imports nothing heavy

    return common.part_label(part)


def _core_groups(workers: int, cores=None) -> list[list[int]]:
    """The CPU cores of each worker: the available cores dealt out in turn (a worker gets at least one)."""
    if cores is None:  # the cores this process may use (every core where the platform cannot pin: not Linux)
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = sorted(cores)
    return [cores[i::workers] or [cores[i % len(cores)]] for i in range(workers)]


def run_one_part(name: str, index: int, *, budget: str, out_dir=None, directory=HERE) -> dict:
    """Run part ``index`` of experiment ``name`` at ``budget`` in this process and mark it done; returns the part.

    When the part returns result rows (a list of dicts), they are also kept in the part's record under
    ``results/parts/NAME/BUDGET/`` (:func:`common.write_part_record`), from which the experiment collects them
    without its checkpoints. A part marked done before records existed, run again, only restores its runs and
    cached evaluations: its record then keeps the minutes, code and finishing time of the marker, which computed it.

    ``minutes`` is the time of the process that finished the part. The marker and the record also say how many
    times the part was started (``starts``, from the ``--- started`` lines :func:`run_parts` writes to its log): a
    part interrupted and resumed took longer than ``minutes``, by its earlier processes' time, which is not measured.
    """
    module = load(name, directory)
    budget_name, parts = module.parts(budget=budget)
    part = parts[index]
    folder = _parts_dir(module, budget_name, out_dir)
    import common  # (on the path: _parts_dir put it there)

    marker = folder / f"{_label(part)}.done"
    log = folder / f"{_label(part)}.log"
    starts = max(1, log.read_text().count("--- started ")) if log.exists() else 1
    earlier = json.loads(marker.read_text()) if marker.exists() else None
    finished = time.gmtime(marker.stat().st_mtime) if earlier is not None else None
    code = common.code_state()  # the code this process imported, recorded before it runs
    tic = time.perf_counter()
    rows = module.run_part(**part, budget=budget_name, out_dir=out_dir)
    done = {"part": part, "minutes": (time.perf_counter() - tic) / 60, "starts": starts, **code}
    if earlier is not None:
        done = {**done, **{k: earlier[k] for k in ("minutes", "revision", "uncommitted") if k in earlier}}
    if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
        settings = getattr(module, "BUDGETS", {}).get(budget_name, {})
        common.write_part_record(module.NAME, budget_name, part, rows, settings=settings, minutes=done["minutes"],
                                 starts=starts, code={k: done[k] for k in ("revision", "uncommitted") if k in done},
                                 finished=finished, out_dir=out_dir)
    if earlier is None:  # (an earlier marker stays as it is: its time is when the part finished)
        temporary = marker.with_suffix(".tmp")
        temporary.write_text(json.dumps(done) + "\n")
        temporary.replace(marker)
    return part


def _parts_dir(module: ModuleType, budget_name: str, out_dir) -> pathlib.Path:
    """Where a budget's part markers and logs go: ``parts/`` beside the experiment's runs of that budget."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import common  # imported here, not at the top: listing the experiments imports nothing heavy

    folder = common.runs_dir(module.NAME, out_dir) / budget_name / "parts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_parts(name: str, *, workers: int, quick: bool = False, out_dir=None, budget: str | None = None,
              directory=HERE, poll_seconds: float = 5.0, cores=None) -> list:
    """Run experiment ``name``'s unfinished parts in ``workers`` processes side by side, then the experiment
    itself (which collects them); returns the paths it wrote.

    A part that fails stops the scheduling of new ones; those running are let finish, and the error names the
    failed parts and their logs. Nothing is collected until every part has finished.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    module = load(name, directory)
    if not has_parts(module):
        raise ValueError(f"experiment {name!r} does not split into parts; run it without --workers")
    if quick and budget is not None:
        raise ValueError(f"--quick is a budget of its own; give either --quick or --budget {budget}")
    budget_name, parts = module.parts(quick=quick, budget=budget)
    folder = _parts_dir(module, budget_name, out_dir)
    import common  # (on the path: _parts_dir put it there)

    settings = getattr(module, "BUDGETS", {}).get(budget_name, {})
    # a part with a record is done; one made under other settings is refused now, not after hours of the others
    recorded = [common.part_rows(module.NAME, budget_name, p, settings, out_dir) is not None for p in parts]
    pending = [(i, p) for i, p in enumerate(parts) if not recorded[i] and not (folder / f"{_label(p)}.done").exists()]
    print(f"{name} --budget {budget_name}: {len(parts) - len(pending)} of {len(parts)} parts already done; "
          f"running {len(pending)} in {min(workers, max(len(pending), 1))} processes", flush=True)
    free = _core_groups(workers, cores)
    running, failed = {}, []
    try:
        while pending or running:
            while pending and free and not failed:
                index, part = pending.pop(0)
                group = free.pop(0)
                env = dict(os.environ)
                if len(group) == 1:  # one core: XLA's CPU backend single-threaded, as measured fastest per core
                    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                        "intra_op_parallelism_threads=1").strip()
                code = (f"import os, sys; hasattr(os, 'sched_setaffinity') and os.sched_setaffinity(0, {group!r}); "
                        f"sys.path.insert(0, {str(HERE)!r}); "
                        f"import run; run.run_one_part({name!r}, {index}, budget={budget_name!r}, "
                        f"out_dir={None if out_dir is None else str(out_dir)!r}, directory={str(directory)!r})")
                log = folder / f"{_label(part)}.log"
                with open(log, "a") as handle:
                    handle.write(f"--- started {time.strftime('%Y-%m-%d %H:%M:%S')} on cores {group}\n")
                    handle.flush()
                    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=handle,
                                               stderr=subprocess.STDOUT)
                running[process] = (part, group, log, time.perf_counter())
                print(f"  started {_label(part)} on cores {group} (log: {log})", flush=True)
            if not running:
                break
            time.sleep(poll_seconds)
            for process in [p for p in running if p.poll() is not None]:
                part, group, log, tic = running.pop(process)
                free.append(group)
                minutes = (time.perf_counter() - tic) / 60
                if process.returncode == 0:
                    print(f"  finished {_label(part)} in {minutes:.1f} min", flush=True)
                else:
                    failed.append(f"{_label(part)} (exit status {process.returncode}; log: {log})")
                    print(f"  FAILED {failed[-1]}", flush=True)
    finally:  # interrupted (Ctrl-C, an error here): the parts still running stop, to resume next time
        for process in running:
            process.terminate()
        for process in running:
            process.wait()
    if failed:
        raise RuntimeError(f"{len(failed)} part(s) of {name} failed, so nothing was collected: "
                           + "; ".join(failed) + ". Fix the cause and run the same command again: finished parts "
                           "are skipped and the failed ones resume from their checkpoints.")
    return run(name, quick=quick, out_dir=out_dir, budget=None if quick else budget, directory=directory)


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
    parser.add_argument("--workers", type=int, default=None,
                        help="for experiments that split into parts: run the unfinished parts in this many "
                             "processes side by side, each on its share of the CPU cores, then collect them "
                             "(resumable: run the same command again after an interruption)")
    return parser


def main(argv=None, *, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.name == "list":
            if args.budget is not None or args.quick or args.out is not None or args.workers is not None:
                raise ValueError("list takes no options")
            experiments = discover()
            width = max(len(name) for name in experiments)
            for experiment in experiments.values():
                print(f"{experiment.name:<{width}}  {experiment.description}")
            return 0
        if args.workers is None:
            paths = run(args.name, quick=args.quick, out_dir=args.out, budget=args.budget)
        else:
            paths = run_parts(args.name, workers=args.workers, quick=args.quick, out_dir=args.out,
                              budget=args.budget)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
