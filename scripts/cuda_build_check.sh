#!/usr/bin/env bash
# The CUDA build, where there is nvcc but no GPU (CI and development machines): build it with
# FASTNN_CUDA=ON in its own virtual environment and build directory (build/cuda/), cuBLAS from
# the nvidia-cublas wheel; load it and run tests/test_cuda.py and test_tensor.py against it:
# it says it is built, for which architectures, and why no device is usable here, and its
# device arrays work on the CPU and refuse "cuda" with that reason. A GPU machine
# runs scripts/gpu_check.sh instead.   Usage: bash scripts/cuda_build_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || { echo "cuda_build_check.sh: no nvcc on the PATH: the CUDA build cannot be checked" >&2; exit 2; }

dir=build/cuda
venv="$dir/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
# CMake from its wheel, started directly (see sanitize.sh: a PATH shim can miss the 5 s)
pip install -q "scikit-build-core>=0.10" "pybind11>=2.13.6" "cmake>=3.18" numpy pytest nvidia-cublas
# --no-build-isolation: the build finds cuBLAS in this environment's nvidia-cublas wheel
pip install -q --no-build-isolation --no-deps . -C build-dir="$dir/cmake" \
  -C cmake.define.FASTNN_CUDA=ON
cd "$dir"  # away from src/: the installed package is the one tested
python -c 'import fastnn, json; print("fastnn.config()[\"cuda\"]:", json.dumps(fastnn.config()["cuda"]))'
python -m pytest -q -p no:cacheprovider -rs ../../tests/test_cuda.py ../../tests/test_tensor.py \
  ../../tests/test_device_ops.py
