#!/usr/bin/env bash
# The one prepared run for a machine with a GPU (the lent H200: its python3 already has
# PyTorch, nvidia-cublas, scikit-build-core, pybind11, numpy, pytest and hypothesis, and no
# package registry is reachable there). Builds fastnn with FASTNN_CUDA=ON into a folder of its
# own, then runs the CUDA tests (the self-test kernel on the device, the device query, device
# arrays and their DLPack exchange with PyTorch and CuPy, the allocator, the errors "cuda"
# gives, the ops held to the CPU's, models trained on the device (fit, evaluate, predict, to)
# against the CPU's), then
# bench/bench_gpu.py, then the device-op tests once more under compute-sanitizer's memcheck,
# and writes every log, the bench's JSON and the built package (site.tgz, so that a later run
# with unchanged C++ can skip the build: FASTNN_SITE_TGZ=path) to $OUT (default
# /tmp/gpu_check). Meant to take well under 8 minutes on 16 cores.
#   Usage: OUT=dir [BENCH=0] [FASTNN_SITE_TGZ=site.tgz] bash scripts/gpu_check.sh [pytest -k expression]
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
site=/tmp/fastnn-cuda-site
select=(${1:+-k "$1"})
status=0
stamp() { echo "== $(date +%T) $*"; }
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"

{ nvidia-smi; nvcc --version; "$py" --version; "$py" -c 'import torch; print("torch", torch.__version__)'; } \
  > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

stamp build
rm -rf "$site"
if [ -n "${FASTNN_SITE_TGZ:-}" ]; then
  mkdir -p "$site" && tar xzf "$FASTNN_SITE_TGZ" -C "$site"
elif ! "$py" -m pip install --no-build-isolation --no-deps --target "$site" "$repo" \
      -C build-dir=/tmp/fastnn-cuda-build -C cmake.define.FASTNN_CUDA=ON > "$out/build.log" 2>&1; then
  echo "gpu_check.sh: the CUDA build failed (build.log):"; tail -60 "$out/build.log"; exit 1
else
  tar czf "$out/site.tgz" -C "$site" fastnn
fi
export PYTHONPATH="$site"
cd /tmp  # away from the repository's src/: the build just made is the one tested
stamp config
"$py" -c 'import fastnn, json, sys
assert fastnn.__file__.startswith(sys.argv[1]), f"imported {fastnn.__file__}, not the build in {sys.argv[1]}"
cuda = fastnn.config()["cuda"]
print(json.dumps(cuda, indent=1))
sys.exit(0 if cuda["available"] else "gpu_check.sh: no usable GPU: " + cuda["reason"])' "$site" \
  2>&1 | tee -a "$out/machine.txt" || status=1  # on the GPU machine, no GPU is a failure
stamp tests
cuda_tests=("$repo/tests/test_cuda.py" "$repo/tests/test_tensor.py" "$repo/tests/test_device_ops.py"
            "$repo/tests/test_device_training.py" "$repo/tests/test_bench_scripts.py::test_bench_gpu_fastnn_step_trains_as_torch_does"
            "$repo/tests/test_layers.py::test_to_another_device_says_what_this_build_has")
timeout "${TESTS_TIMEOUT:-150}" "$py" -m pytest -q -rs -p no:cacheprovider --durations=8 "${select[@]}" "${cuda_tests[@]}" 2>&1 \
  | tee "$out/tests.log" || status=1
stamp bench
# the bench: fastnn's ops against PyTorch eager and torch.compile, and the GEMM against cuBLAS
if [ "${BENCH:-1}" = 1 ]; then  # BENCH=0: a rerun for the tests alone
  timeout "${BENCH_TIMEOUT:-200}" "$py" "$repo/bench/bench_gpu.py" --rounds 3 2>&1 | tee "$out/bench_gpu.log" || status=1
  cp "$repo"/bench/results/gpu-*.json "$out/" 2>/dev/null
fi
stamp memcheck
# out-of-bounds reads and writes of the kernels on awkward shapes (left out: the long MLP runs,
# the CLI, and the allocation count, which grew under the sanitizer alone: 229 blocks in 75 steps)
timeout "${MEMCHECK_TIMEOUT:-75}" compute-sanitizer --tool memcheck --print-limit 20 \
  "$py" -m pytest -q -x -p no:cacheprovider -m cuda -k "not hundred and not cli and not allocates and not follows" \
  "$repo/tests/test_device_ops.py" \
  "$repo/tests/test_device_training.py" \
  > "$out/memcheck.log" 2>&1 || status=1
tail -15 "$out/memcheck.log"
stamp done
exit "$status"
