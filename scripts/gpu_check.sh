#!/usr/bin/env bash
# The GPU check, run on a lent H100/H200 in one go (under 8 minutes): the GPU tests, then the
# step, scoring and search-quality benchmarks at GPU-sized settings, each printing its figures.
#
# The device machine has python3 with torch, numpy, scipy and pytest, and no network; the
# engine needs nothing else. Real CIFAR-10 images are read from ../shared when present, else
# from .gpu-data/ (copy ../shared/data/cifar10-subset there, ignored by git, and carry it):
#   mkdir -p .gpu-data && cp ../shared/data/cifar10-subset/*.npz .gpu-data/
#   device run: command "bash scripts/gpu_check.sh", carry [".gpu-data"]
# Figures land in $OUT (the device tool brings them back) or results/gpu/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
DATA=../shared/data/cifar10-subset
[ -f "$DATA/train.npz" ] || DATA=.gpu-data
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    [ "$rc" -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

step gpu-tests 150 $PY -m pytest -p no:cacheprovider -o addopts="" -q tests/engine/test_gpu.py tests/engine/test_network.py
step step-throughput 60 $PY benchmarks/step_throughput.py --preset paper --batch 50 --steps 40 --out "$OUT/step_throughput.json"
step step-throughput-varop-full-space 60 $PY benchmarks/step_throughput.py --preset paper-varop --batch 50 --steps 40 --progress 1 --out "$OUT/step_throughput_varop_full.json"
if [ -f "$DATA/train.npz" ]; then
    step score-throughput 120 $PY benchmarks/score_throughput.py --data "$DATA" --archs 200 --train-steps 400 --out "$OUT/score_throughput.json"
    step quality 200 $PY benchmarks/quality.py --data "$DATA" --preset small --hypernet-epochs 15 --archs 200 --retrain 10 --epochs 10 --out "$OUT/quality.json"
else
    echo "no CIFAR-10 subset at ../shared or .gpu-data: skipping the scoring and quality benchmarks"
    status=1
fi
echo "figures in $OUT"
exit $status
