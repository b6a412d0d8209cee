#!/usr/bin/env bash
# The decided runs of results/README.md, one after another, on the CPU: each experiment's parts (datasets, seeds,
# cases) run side by side, one process per worker, each pinned to its share of the cores, then the experiment
# collects them and writes its results file; seed-verdicts is recomputed at the end. Every part resumes from its
# checkpoints and cached evaluations, and a finished part is skipped, so a session that ends mid-way loses at
# most the part in progress: run the same command again to go on.
#
# Usage: scripts/decided-runs.sh [--workers N] [--python PY] [EXPERIMENT ...]
#   --workers N   processes side by side (default: the number of CPU cores this process may use)
#   --python PY   the interpreter (default .venv/bin/python when present, else python3)
#   EXPERIMENT    a subset, in this order: table1-loglik table2-kid vae-baseline vcd nonlinear-hvae
# Runs niced, so a test run or an editor beside it keeps its share. Measured costs are in results/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")
PY=""
SELECTED=()
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "decided-runs.sh: unknown option $1 (see scripts/decided-runs.sh --help)" >&2; exit 2 ;;
        *) SELECTED+=("$1"); shift ;;
    esac
done
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

# experiment and its decided budget, in the order they run
DECIDED=("table1-loglik cpu" "table2-kid cpu" "vae-baseline full" "vcd cpu" "nonlinear-hvae cpu")
if [ ${#SELECTED[@]} -gt 0 ]; then
    for name in "${SELECTED[@]}"; do
        found=0
        for entry in "${DECIDED[@]}"; do [ "${entry%% *}" = "$name" ] && found=1; done
        if [ $found = 0 ]; then
            echo "decided-runs.sh: $name has no decided run; choose from: ${DECIDED[*]%% *}" >&2; exit 2
        fi
    done
fi

for entry in "${DECIDED[@]}"; do
    name=${entry%% *}
    budget=${entry##* }
    if [ ${#SELECTED[@]} -gt 0 ] && ! printf '%s\n' "${SELECTED[@]}" | grep -qx "$name"; then
        continue
    fi
    echo "=== $(date -u '+%Y-%m-%d %H:%M:%S') $name --budget $budget --workers $WORKERS"
    nice "$PY" experiments/run.py "$name" --budget "$budget" --workers "$WORKERS"
done
echo "=== $(date -u '+%Y-%m-%d %H:%M:%S') seed-verdicts"
nice "$PY" experiments/run.py seed-verdicts
