#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels that a GPU machine's Python lacks for
# benchmarks/gpu_finetune_throughput.py and the tests marked `gpu`, at the versions pinned in requirements.txt,
# into .whl/ (git-ignored).
#
# Why only these: the benchmark imports xaiutils.domain.synth/models/train. Beyond what a CUDA PyTorch image ships
# (torch, torchvision, numpy, scipy, pandas, scikit-learn, tqdm, pytest, ...), that closure needs nibabel and
# nilearn (the MNI152 template ships inside nilearn's wheel); the `gpu` tests add captum (xaiutils.domain.explain).
# All three are pure Python, so one wheel fits any CPython 3.
# xaiutils itself travels as source (PYTHONPATH), so nothing is built on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(nibabel nilearn captum)
PINS=()
for name in "${PACKAGES[@]}"; do
    pin=$(grep -E "^${name}==" requirements.txt) || { echo "device_wheels: no pin for ${name} in requirements.txt" >&2; exit 1; }
    PINS+=("$pin")
done
if [ "${1:-}" = "--print" ]; then printf '%s\n' "${PINS[@]}"; exit 0; fi
PY=${PY:-python3}
rm -rf .whl.partial && mkdir .whl.partial
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl.partial "${PINS[@]}"
rm -rf .whl && mv .whl.partial .whl  # all or nothing: a failed download leaves no half-filled .whl/
ls -l .whl
