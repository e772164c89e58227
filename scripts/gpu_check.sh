#!/usr/bin/env bash
# The one prepared run for a machine with a GPU (the lent H200: its python3 already has
# PyTorch, nvidia-cublas, scikit-build-core, pybind11, numpy, pytest and hypothesis, and no
# package registry is reachable there). Builds fastnn with FASTNN_CUDA=ON into a folder of its
# own, then runs the CUDA tests (the self-test kernel on the device, the device query, device
# arrays and their DLPack exchange with PyTorch and CuPy, the allocator, the errors "cuda"
# gives, the ops built so far held to the CPU's: GEMM, activations, cross-entropy, dropout,
# SGD, Adam, the gather, and 200 training steps against the CPU's), then bench/bench_gpu.py,
# and writes every log and the bench's JSON to $OUT (default /tmp/gpu_check). Meant to take
# well under 8 minutes on 16 cores.   Usage: OUT=dir bash scripts/gpu_check.sh
# Not here yet, because not built yet: the other CUDA ops (conv, pooling, batch norm), the
# layers and fit on device arrays, and the CUDA graph.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
site=/tmp/fastnn-cuda-site
status=0

{ nvidia-smi; nvcc --version; "$py" --version; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

rm -rf "$site"
if ! "$py" -m pip install --no-build-isolation --no-deps --target "$site" "$repo" \
      -C build-dir=/tmp/fastnn-cuda-build -C cmake.define.FASTNN_CUDA=ON > "$out/build.log" 2>&1; then
  echo "gpu_check.sh: the CUDA build failed (build.log):"; tail -40 "$out/build.log"; exit 1
fi
export PYTHONPATH="$site"
cd /tmp  # away from the repository's src/: the build just made is the one tested
"$py" -c 'import fastnn, json, sys
assert fastnn.__file__.startswith(sys.argv[1]), f"imported {fastnn.__file__}, not the build in {sys.argv[1]}"
cuda = fastnn.config()["cuda"]
print(json.dumps(cuda, indent=1))
sys.exit(0 if cuda["available"] else "gpu_check.sh: no usable GPU: " + cuda["reason"])' "$site" \
  2>&1 | tee "$out/cuda_config.json" || status=1  # on the GPU machine, no GPU is a failure
"$py" -m pytest -q -rs -p no:cacheprovider "$repo/tests/test_cuda.py" "$repo/tests/test_tensor.py" \
  "$repo/tests/test_device_ops.py" \
  "$repo/tests/test_layers.py::test_to_another_device_says_what_this_build_has" 2>&1 \
  | tee "$out/tests.log" || status=1
# the bench: fastnn's ops against PyTorch eager and torch.compile, and the GEMM against cuBLAS
timeout 300 "$py" "$repo/bench/bench_gpu.py" --rounds 3 2>&1 | tee "$out/bench_gpu.log" || status=1
cp "$repo"/bench/results/gpu-*.json "$out/" 2>/dev/null
exit "$status"
