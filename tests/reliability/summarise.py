"""Run the fault-injection suite and write its figures into ``docs/reliability.md``.

``python tests/reliability/summarise.py`` (from the repository root, with the package importable) runs
``pytest -m faults tests/reliability`` with a JUnit report, counts the probes of each class (one test module per
class) and their outcomes, and replaces the part of ``docs/reliability.md`` between the ``probes`` markers with
the tables. Every figure on that page comes from this run; exits non-zero if a probe failed.
"""

from __future__ import annotations

import collections
import pathlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- probes:begin (written by tests/reliability/summarise.py) -->", "<!-- probes:end -->"
CLASSES = {
    "test_faults_kill": "SIGKILL at chosen and random instants (subprocesses), during checkpoint writes too",
    "test_faults_concurrency": "two runs into one directory",
    "test_faults_corruption": "corrupted or truncated checkpoints, checksums, metrics, configs and data files",
    "test_faults_nonfinite": "NaN and infinity in data, gradients, updates and log densities; huge learning rates",
    "test_faults_inputs": "bad values at the Python API and on the command line",
}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "junit.xml"
        tic = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-m", "faults", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={report}", str(ROOT / "tests" / "reliability")], cwd=ROOT, check=False)
        seconds = time.perf_counter() - tic
        cases = ET.parse(report).getroot().iter("testcase")
        outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        names: dict[str, list[str]] = collections.defaultdict(list)
        for case in cases:
            module = case.get("classname").rsplit(".", 1)[-1]
            failed = case.find("failure") is not None or case.find("error") is not None
            skipped = case.find("skipped") is not None
            outcome = "failed" if failed else "skipped" if skipped else "passed"
            outcomes[module][outcome] += 1
            names[module].append(f"{case.get('name')}" + ("" if outcome == "passed" else f" ({outcome.upper()})"))
    total = collections.Counter()
    lines = [BEGIN, "", "| class of probe | probes | clear error or correct result, nothing lost | failed | skipped |",
             "|---|---:|---:|---:|---:|"]
    for module, title in CLASSES.items():
        c = outcomes.get(module, collections.Counter())
        total.update(c)
        lines.append(f"| {title} | {sum(c.values())} | {c['passed']} | {c['failed']} | {c['skipped']} |")
    lines.append(f"| **all** | **{sum(total.values())}** | **{total['passed']}** | **{total['failed']}** | "
                 f"**{total['skipped']}** |")
    lines += ["", f"Run: `python tests/reliability/summarise.py`, {seconds:.0f} s wall time on this machine "
                  f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}).", ""]
    for module, title in CLASSES.items():
        lines += [f"<details><summary>{title}: the {len(names[module])} probes</summary>", ""]
        lines += [f"- `{name}`" for name in names[module]] + ["", "</details>", ""]
    lines.append(END)
    text = DOC.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + "\n".join(lines) + text[stop:])
    print(f"wrote {DOC}: {sum(total.values())} probes, {total['failed']} failed")
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
