#!/usr/bin/env bash
# One GPU, a fixed time budget: install the cuda extra (from a wheel folder when there is no network), run the
# GPU-relevant tests, the benchmark, and the paper-budget slice of Table 1 (MNIST, 90 + 10 epochs, the nine
# methods, seeds 0-2 trained at once by mv.train.fit_seeds, S = 10000 on all test images). Each step gets what is
# left of the budget and is stopped when it runs out; gpu-run.json / gpu-run.md record, with the device's name,
# what each step finished (the Table 1 slice's finished runs by name, when it did not finish whole). Interrupted
# training resumes from its checkpoints when the script is run again.
#
# Usage: scripts/gpu.sh [--dry-run] [--seconds N] [--out DIR] [--python PY] [--wheels DIR]
#   --dry-run    the same steps at a tiny size on whatever device JAX has (a CPU in CI): no install, a few tests,
#                `benchmark --quick`, table1-loglik's gpu-dry-run budget; results go to --out (a temporary folder
#                by default), never to results/
#   --seconds N  the time budget of the steps after installing (default 540, inside 10 minutes of device time)
#   --out DIR    where the results files go (default results/; runs go to runs/ as for any experiment)
#   --python PY  the interpreter (default .venv/bin/python when present, else python3)
#   --wheels DIR install from this wheel folder without a network (default .whl/ when present); prepare it on a
#                machine with a network, the same Python version and Linux x86-64:
#                  pip download -d .whl ".[cuda,dev]" "setuptools>=68" wheel
# The GPU-relevant tests can be replaced with GPU_TESTS="tests/x.py ..." (pytest arguments).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
BUDGET=540
OUT=""
PY=""
WHEELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --seconds) BUDGET="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown option $1 (see scripts/gpu.sh --help)" >&2; exit 2 ;;
    esac
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu.sh: --seconds takes a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;; esac
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -z "$OUT" ]; then
    if [ "$DRY_RUN" = 1 ]; then OUT=$(mktemp -d); else OUT=results; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu-run.tsv"  # step, status, seconds, detail: gpu-run.json / .md are written from it at the end
: > "$LOG"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$LOG"; echo "== $1: $2 ($3 s) $4"; }

# ------------------------------------------------------------------------------------------------ install
has_gpu() { "$PY" -c 'import jax, sys; sys.exit(0 if jax.devices()[0].platform == "gpu" else 1)' 2>/dev/null; }
if [ "$DRY_RUN" = 0 ]; then
    if has_gpu; then
        record install "skipped" 0 "jax already sees a GPU in $PY"
    else
        tic=$SECONDS
        if [ "$PY" = python3 ] && [ ! -x .venv/bin/python ]; then python3 -m venv .venv && PY=.venv/bin/python; fi
        if [ -z "$WHEELS" ] && [ -d .whl ]; then WHEELS=.whl; fi
        if [ -n "$WHEELS" ]; then
            "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e ".[cuda,dev]"
        else
            "$PY" -m pip install -q -e ".[cuda,dev]"
        fi
        rc=$?
        if [ $rc != 0 ]; then
            record install "failed (pip exit $rc)" $((SECONDS - tic)) "wheels: ${WHEELS:-the network}"
        else
            record install ok $((SECONDS - tic)) "wheels: ${WHEELS:-the network}"
        fi
    fi
    if ! has_gpu; then
        echo "gpu.sh: JAX in $PY sees no GPU (devices: $("$PY" -c 'import jax; print(jax.devices())' 2>&1 | tail -n 1)); "\
"install the cuda extra (see --wheels) or use --dry-run on a CPU" >&2
        exit 3
    fi
fi
DEVICE=$("$PY" -c 'import jax; d = jax.devices()[0]; print(f"{len(jax.devices())} x {d.device_kind} ({d.platform})")')
echo "== device: $DEVICE; budget $BUDGET s; results in $OUT"

# --------------------------------------------------------------------------------------------- the steps
START=$SECONDS
# step NAME CAP_SECONDS COMMAND...: runs COMMAND for at most min(CAP, what is left of the budget)
step() {
    local name=$1 cap=$2; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    # a dry run checks the steps, not their speed: its steps share the budget with no caps of their own, so that a
    # loaded CPU (CI runs the suite on every core) does not stop a step the GPU's caps were sized for
    [ "$DRY_RUN" = 1 ] && cap=$left
    local limit=$(( cap < left ? cap : left ))
    if [ "$limit" -lt 5 ]; then record "$name" "not run: time budget spent" 0 ""; return 1; fi
    local tic=$SECONDS
    timeout --signal=TERM --kill-after=15 "$limit" "$@"
    local rc=$?
    local took=$((SECONDS - tic))
    case $rc in
        0) record "$name" ok "$took" "" ;;
        124|137) record "$name" "stopped at its time limit" "$took" "limit $limit s" ;;
        *) record "$name" "failed (exit $rc)" "$took" "" ;;
    esac
    return $rc
}

if [ "$DRY_RUN" = 1 ]; then
    TESTS=${GPU_TESTS:-tests/test_replicas.py::test_bad_replica_arguments_are_refused}
    BENCH=(--quick)
    SLICE=gpu-dry-run
    SLICE_OUT=(--out "$OUT")
else
    TESTS=${GPU_TESTS:-tests/test_train.py tests/test_fit.py tests/test_replicas.py tests/kernels tests/evaluate}
    BENCH=()
    SLICE=gpu-slice
    SLICE_OUT=()
    [ "$OUT" != "$(pwd)/results" ] && SLICE_OUT=(--out "$OUT")
fi

# shellcheck disable=SC2086  # TESTS is a list of pytest arguments
step tests 120 "$PY" -m pytest -q -x -m "not slow" -p no:cacheprovider $TESTS

BENCH_OUT=$(mktemp -d)
EXPERIMENTS=$("$PY" experiments/run.py list 2>/dev/null)  # read whole: grep -q would close the pipe early
if grep -q '^benchmark ' <<< "$EXPERIMENTS"; then
    if step benchmark 150 "$PY" experiments/run.py benchmark "${BENCH[@]}" --out "$BENCH_OUT"; then
        for ext in json md; do cp "$BENCH_OUT/benchmark.$ext" "$OUT/benchmark-gpu.$ext"; done
    fi
else
    record benchmark "not run: no benchmark experiment in experiments/" 0 ""
fi
rm -rf "$BENCH_OUT"

step "table1-loglik $SLICE" 100000 "$PY" experiments/run.py table1-loglik --budget "$SLICE" "${SLICE_OUT[@]}"

# ----------------------------------------------------------------------------------------------- summary
RUNS=runs/table1-loglik/$SLICE
[ "$DRY_RUN" = 1 ] || [ "$OUT" != "$(pwd)/results" ] && RUNS="$OUT/runs/table1-loglik/$SLICE"
"$PY" - "$LOG" "$OUT" "$DEVICE" "$BUDGET" "$RUNS" "$DRY_RUN" <<'EOF'
import json, pathlib, sys

log, out, device, budget, runs, dry = sys.argv[1:]
steps = [dict(zip(("step", "status", "seconds", "detail"), line.split("\t")))
         for line in pathlib.Path(log).read_text().splitlines() if line]
for s in steps:
    s["seconds"] = int(s["seconds"])
finished = []  # the slice's runs that trained and were evaluated, whether or not the whole slice finished
for path in sorted(pathlib.Path(runs).glob("*/eval.json")) if pathlib.Path(runs).is_dir() else []:
    summary = json.loads(path.read_text())
    value = summary.get("test_log_likelihood", summary.get("result", {}).get("test_log_likelihood"))
    finished.append({"run": path.parent.name, "test_log_likelihood": value})
record = {"device": device, "dry_run": dry == "1", "budget_seconds": int(budget), "steps": steps,
          "table1_slice_runs_evaluated": finished}
pathlib.Path(out, "gpu-run.json").write_text(json.dumps(record, indent=1) + "\n")
lines = [f"# scripts/gpu.sh{' --dry-run' if dry == '1' else ''}", "",
         f"Device: {device}. Time budget {budget} s for the steps.", "",
         "| step | status | seconds |", "| --- | --- | --- |"]
lines += [f"| {s['step']} | {s['status']}{' (' + s['detail'] + ')' if s['detail'] else ''} | {s['seconds']} |"
          for s in steps]
lines += ["", f"Table 1 slice: {len(finished)} run(s) trained and evaluated (in `{runs}`):", ""]
lines += [f"- {r['run']}: {r['test_log_likelihood']}" for r in finished]
pathlib.Path(out, "gpu-run.md").write_text("\n".join(lines) + "\n")
EOF
echo "== wrote $OUT/gpu-run.json and $OUT/gpu-run.md"
if grep -q $'\tfailed' "$LOG"; then exit 1; fi
exit 0
