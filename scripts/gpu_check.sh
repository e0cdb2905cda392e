#!/usr/bin/env bash
# The GPU check: the whole product on a bare, lent CUDA machine, in one go, under 7 minutes.
#
# Runs, each step under `timeout` (`--plan` lists them with their limits and exits):
#   the GPU tests; `smash search --device cuda` with a foreground worker on a SQLite file
#   (HyperNet training, then a racing search), `smash retrain` of the best architecture,
#   `smash ls --json` and `smash show`; the host-overhead, step and scoring benchmarks at
#   GPU size; a two-GPU DDP smoke test where two GPUs are visible; then one summary table.
# Exits 1 with one line before doing anything when CUDA is missing, and 1 at the end when
# any step failed. Everything printed also goes to $OUT/gpu_check.log; at most 8 result
# files land in $OUT (the device tool brings $OUT back), or in results/gpu/.
#
# The machine has python3 (3.12) with torch, numpy, scipy, pytest, typer and rich, and no
# network. The database stack travels as wheels, fetched here once by
# `python scripts/gpu_wheels.py` into .gpu-wheels/ (git-ignored) and installed there with
# `pip install --no-index --target` into a temporary folder put on PYTHONPATH beside the
# image's torch. Real CIFAR-10 images for the scoring benchmark are read from ../shared,
# else from .gpu-data/ (`mkdir -p .gpu-data && cp ../shared/data/cifar10-subset/*.npz
# .gpu-data/`), else the built-in synthetic set is written there as npz. The NAS-Bench-201
# table comes from the same places (`cp ../shared/data/nas-bench-201/nats-tss-200ep.csv
# .gpu-data/`); without it the nb201 step fails with one line:
#   python scripts/gpu_wheels.py
#   device run: carry [".gpu-wheels", ".gpu-data"], command "bash scripts/gpu_check.sh"
set -uo pipefail
cd "$(dirname "$0")/.."

# name, limit in seconds, what it runs. All limits together stay within 420 s.
STEPS=(
    "cuda 15 CUDA is visible to python3 (before anything else)"
    "install 20 the wheels into a temporary folder; engine, storage, runner and CLI import"
    "gpu-tests 50 pytest tests/engine/test_gpu.py (no host sync, bf16, SMASH = derived)"
    "search 60 smash search --device cuda: HyperNet training, racing search, SQLite"
    "retrain 30 smash retrain of the best architecture"
    "browse 15 smash ls --json, smash show"
    "host-overhead 25 benchmarks/host_overhead.py: ops and host ms per step"
    "step-throughput 30 benchmarks/step_throughput.py --preset paper --batch 50"
    "score-throughput 50 benchmarks/score_throughput.py: full, racing, search racing"
    "nb201 105 benchmarks/nb201_quality.py at full size: C=16, N=5, all 6,466 cells"
    "ddp 10 DDP smoke test on two GPUs (skipped on one)"
    "summary 10 one table of every figure"
)
RESULTS=(gpu_check.log summary.txt architectures.json host_overhead.json step_throughput.json score_throughput.json nb201_quality.json ddp.json)
BUDGET=420
DDP_ENTRY=scripts/ddp_smoke.py  # two ranks against one process (tests/engine/test_ddp.py runs it on the CPU)

total_limit() {
    local sum=0 step
    for step in "${STEPS[@]}"; do
        read -r _ limit _ <<<"$step"
        sum=$((sum + limit))
    done
    echo "$sum"
}

print_plan() {
    local step name limit what
    for step in "${STEPS[@]}"; do
        read -r name limit what <<<"$step"
        printf '  %-17s %4ss  %s\n' "$name" "$limit" "$what"
    done
    echo "  step limits together: $(total_limit)s (budget ${BUDGET}s); results: ${RESULTS[*]}"
}

if [ "${1:-}" = "--plan" ]; then
    print_plan
    [ "$(total_limit)" -le "$BUDGET" ]
    exit
fi

export PY=${PYTHON:-python3}
# Before anything else: without CUDA there is nothing to check.
cuda_start=$SECONDS
if ! timeout 15 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is false or torch is missing); nothing was run" >&2
    exit 1
fi

export OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE=$!
export PYTHONUNBUFFERED=1
export WORK
WORK=$(mktemp -d)
export SMASH_HOME="$WORK/home" SITE="$WORK/site" DB="$WORK/smash.db" DDP_ENTRY
export WHEELS=${GPU_WHEELS:-.gpu-wheels}
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DATA=../shared/data/cifar10-subset TRUTH=../shared/data/nas-bench-201/nats-tss-200ep.csv
[ -f "$DATA/train.npz" ] || DATA=.gpu-data
[ -f "$TRUTH" ] || TRUTH=.gpu-data/nats-tss-200ep.csv
export STATUS="$WORK/status.tsv"

echo "gpu_check $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname), $(date -u +%FT%TZ)"
print_plan
if [ "$(total_limit)" -gt "$BUDGET" ]; then
    echo "gpu_check: the step limits add up to more than ${BUDGET}s"
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

smash() { "$PY" -c 'from smash_tui.cli import main; main()' "$@"; }

step_install() {
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: run python scripts/gpu_wheels.py here and carry $WHEELS"; return 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || return 1
    "$PY" - <<'EOF'
import importlib, os, time
site = os.environ["SITE"]
for name in ["engine.jobs", "storage.db", "storage.queue", "smash_tui.runner.worker", "smash_tui.cli"]:
    start = time.perf_counter()
    importlib.import_module(name)
    print(f"  import {name}: {time.perf_counter() - start:.2f}s")
import platformdirs, sqlalchemy, alembic
for module in (sqlalchemy, alembic, platformdirs):
    where = "the wheels" if module.__file__.startswith(site) else module.__file__
    print(f"  {module.__name__} {getattr(module, '__version__', '?')} from {where}")
EOF
}

step_gpu_tests() {
    "$PY" -m pytest -p no:cacheprovider -o addopts="" -q tests/engine/test_gpu.py
}

step_search() {
    # Options that do not depend on names being renamed (HyperNet size, the staged strategy).
    smash search --db "$DB" --device cuda --dataset synthetic --synthetic-train 5000 \
        --synthetic-test 1000 --val-size 1000 --preset small --epochs 2 --max-steps 150 \
        --eval-archs 2 --archs 48 --racing --search-batch 16 --seed 0 --name gpu-check --json
}

best_id() {
    smash ls --db "$DB" --sort err --limit 1 --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])'
}

step_retrain() {
    local id
    id=$(best_id) || return 1
    echo "best architecture: $id"
    smash retrain "$id" --db "$DB" --device cuda --epochs 2 --json
}

step_browse() {
    local id
    smash ls --db "$DB" --json >"$OUT/architectures.json" || return 1
    "$PY" -c 'import json, sys; rows = json.load(open(sys.argv[1])); print(f"smash ls: {len(rows)} architectures")' "$OUT/architectures.json"
    id=$(best_id) || return 1
    smash show "$id" --db "$DB"
}

step_host_overhead() {
    "$PY" benchmarks/host_overhead.py --device cuda --steps 20 --out "$OUT/host_overhead.json"
}

step_step_throughput() {
    "$PY" benchmarks/step_throughput.py --preset paper --batch 50 --steps 30 --out "$OUT/step_throughput.json"
}

step_score_throughput() {
    local data=$DATA
    if [ ! -f "$data/train.npz" ]; then
        data="$WORK/synthetic"
        echo "no CIFAR-10 subset at ../shared or .gpu-data: scoring the built-in synthetic set"
        "$PY" - "$data" <<'EOF' || return 1
import sys
from pathlib import Path
import numpy as np
from engine.data.synthetic import generate
folder = Path(sys.argv[1])
folder.mkdir(parents=True)
for split, n, seed in (("train", 10000, 0), ("test", 2000, 1)):
    images, labels = generate(n, np.random.default_rng(seed))
    np.savez(folder / f"{split}.npz", x=images.transpose(0, 2, 3, 1), y=labels)
EOF
    fi
    "$PY" benchmarks/score_throughput.py --data "$data" --archs 64 --train-steps 150 --search-batch 32 --out "$OUT/score_throughput.json"
}

step_nb201() {
    # The proxy's ranking of every distinct NAS-Bench-201 cell at the benchmark's own size,
    # beside weight sharing, params and FLOPs (the CPU default is nb201-tiny and K = 200).
    if [ ! -f "$DATA/train.npz" ] || [ ! -f "$TRUTH" ]; then
        echo "no CIFAR-10 subset or NAS-Bench-201 table at ../shared or .gpu-data: nothing to rank against"
        return 1
    fi
    "$PY" benchmarks/nb201_quality.py --device cuda --data "$DATA" --truth "$TRUTH" --preset nb201 \
        --archs 6466 --out "$OUT/nb201_quality.json"  # the CPU protocol otherwise: 4 epochs, batch 64
}

step_ddp() {
    local gpus
    gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())') || return 1
    if [ "$gpus" -lt 2 ]; then
        echo "skipped: $gpus GPU visible, the DDP smoke test needs two"
        return 0
    fi
    # NCCL on two GPUs; TF32 convolutions round more than the CPU's fp32, hence 1e-4.
    "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 "$DDP_ENTRY" --tolerance 1e-4 --out "$OUT/ddp.json"
}

step_summary() {
    "$PY" - "$STATUS" "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
status, out = Path(sys.argv[1]), Path(sys.argv[2])
def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {}
rows = []
for line in status.read_text().splitlines():
    name, rc, seconds, limit = line.split("\t")
    rows.append((f"step {name}", "ok" if rc == "0" else f"FAILED (exit {rc})", f"{seconds}s of {limit}s"))
host, step, score = load("host_overhead.json"), load("step_throughput.json"), load("score_throughput.json")
nb201 = load("nb201_quality.json")
archs = load("architectures.json") or []
def fig(source, key, fmt, unit=""):
    return fmt.format(source[key]) + unit if key in source else "-"
rows += [
    ("train step: host ms (batch 1, 8x8)", fig(host, "train_host_ms", "{:.2f}"), f"until done {fig(host, 'train_step_ms', '{:.2f}')} ms"),
    ("train step: ops dispatched", fig(host, "train_ops", "{:.0f}"), f"compute {fig(host, 'train_compute_ops', '{:.0f}')}"),
    ("score step: host ms", fig(host, "score_host_ms", "{:.2f}"), f"until done {fig(host, 'score_step_ms', '{:.2f}')} ms"),
    ("score step: ops dispatched", fig(host, "score_ops", "{:.0f}"), f"compute {fig(host, 'score_compute_ops', '{:.0f}')}"),
    (f"{step.get('preset')} step, batch {step.get('batch')}: ms", fig(step, "median_step_ms", "{:.1f}"), f"{fig(step, 'images_per_s', '{:.0f}')} img/s"),
    (f"{step.get('preset')} step, batch {step.get('batch')}: GFLOP/s", fig(step, "gflop_per_s", "{:.0f}"), f"{fig(step, 'gflop_per_image', '{:.2f}')} GFLOP/img"),
    ("scoring: archs/min full", fig(score, "full_archs_per_min", "{:.1f}"), f"{fig(score, 'gflop_per_s', '{:.0f}')} GFLOP/s"),
    ("scoring: archs/min racing", fig(score, "racing_archs_per_min", "{:.1f}"), f"same top-10: {score.get('top10_equal', '-')}"),
    ("scoring: archs/min search racing", fig(score, "search_racing_archs_per_min", "{:.1f}"), f"same top-10: {score.get('search_top10_equal', '-')}"),
    (f"nb201, K={nb201.get('k', '-')}: SMASH tau / rho", f"{fig(nb201, 'kendall_tau', '{:.3f}')} / {fig(nb201, 'spearman_rho', '{:.3f}')}", f"top-10 {fig(nb201, 'top10_mean_acc', '{:.2f}', '%')}, {fig(nb201, 'seconds', '{:.0f}', ' s')}"),
    ("nb201: weight sharing / params tau", f"{fig(nb201, 'baseline_tau', '{:.3f}')} / {fig(nb201, 'params_tau', '{:.3f}')}", f"anchors: one-shot 0.484, params 0.58"),
]
if archs:
    best = min((a for a in archs if a.get("err") is not None), key=lambda a: a["err"], default=None)
    retrained = [a for a in archs if a.get("acc") is not None]
    rows.append(("search: architectures scored", str(len(archs)), f"best {best['id']}: err {best['err']:.1f}%" if best else "-"))
    rows.append(("retrain: test accuracy", f"{retrained[0]['acc']:.1f}%" if retrained else "-", f"architecture {retrained[0]['id']}" if retrained else ""))
width = max(len(r[0]) for r in rows)
print("summary")
for name, value, note in rows:
    print(f"  {name:{width}}  {value:>22}  {note}")
EOF
}

export -f smash best_id step_install step_gpu_tests step_search step_retrain step_browse \
    step_host_overhead step_step_throughput step_score_throughput step_nb201 step_ddp step_summary

failed=0
# The CUDA check above counts as the first step.
printf 'cuda\t0\t%s\t15\n' "$((SECONDS - cuda_start))" >"$STATUS"
for entry in "${STEPS[@]:1}"; do
    read -r name limit _ <<<"$entry"
    echo "=== $name (limit ${limit}s)"
    start=$SECONDS
    timeout --kill-after=5 "$limit" bash -o pipefail -c "step_${name//-/_}"
    rc=$?
    elapsed=$((SECONDS - start))
    [ "$rc" -eq 124 ] && echo "=== $name: stopped at its ${limit}s limit"
    echo "=== $name: exit $rc after ${elapsed}s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$elapsed" "$limit" >>"$STATUS"
    [ "$rc" -eq 0 ] || failed=1
done
echo "results in $OUT: ${RESULTS[*]}"
if [ "$failed" -ne 0 ]; then
    echo "gpu_check: FAILED: $(awk -F '\t' '$2 != 0 {printf "%s ", $1}' "$STATUS")"
else
    echo "gpu_check: all steps passed"
fi
rm -rf "$WORK"
exec >&- 2>&-
wait "$TEE"  # the log is complete before the device tool collects it
exit "$failed"
