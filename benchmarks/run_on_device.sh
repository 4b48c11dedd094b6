#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with .whl/ (benchmarks/device_wheels.sh) carried along:
#
#     bash benchmarks/run_on_device.sh            # results and log go to $OUT (or ./device_results)
#
# Installs the carried wheels into a private folder (the machine's own packages are left untouched), makes
# xaiutils importable from source, prints the card, runs the tests marked `gpu` (they are skipped everywhere
# else, CI included), then measures VGG-16 fine-tuning throughput at 224² through the real training loop against
# synthetic tensors (target ratio >= 0.85), and how far GPU explanation maps move from the CPU's with TF32
# off and on (benchmarks/gpu_attribution_precision.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_results}
mkdir -p "$OUT"
SITE=${SITE:-/tmp/xaiutils-site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi: not a GPU machine"; } \
    | tee "$OUT/gpu.csv"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
# Only the files that hold `gpu` tests are collected: the others import packages a GPU image need not have.
tests_rc=0
mapfile -t GPU_TEST_FILES < <(grep -l "mark.gpu" tests/test_*.py)
python3 -m pytest -p no:cacheprovider -m gpu -v "${GPU_TEST_FILES[@]}" 2>&1 | tee "$OUT/gpu_tests.log" \
    || tests_rc=$?  # the measurement still runs; the script's status reports the tests
python3 benchmarks/gpu_finetune_throughput.py --image-size 224 --width 1.0 "$@" \
    --out "$OUT/gpu_finetune_throughput.json" 2>&1 | tee "$OUT/gpu_finetune_throughput.log"
python3 benchmarks/gpu_attribution_precision.py --out "$OUT/gpu_attribution_precision.json"
exit "$tests_rc"
