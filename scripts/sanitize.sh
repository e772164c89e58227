#!/usr/bin/env bash
# The test suite, fuzz test included, against an extension built with AddressSanitizer and
# UBSan (CMake option FASTNN_SANITIZE). Its own virtual environment and build directory
# (build/sanitize/) keep it apart from the normal build. Exits non-zero on a failing test
# or on any sanitizer report.   Usage: bash scripts/sanitize.sh [--build-only | extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build/sanitize
venv="$dir/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
# Without build isolation the CMake cache stays valid between runs: only changed files rebuild.
# CMake from its wheel: scikit-build-core gives `cmake -E capabilities` 5 s to answer, and a
# cmake found on the PATH may be a shim that starts an interpreter (pyenv's did), which ran
# past that niced beside the suite in CI (2026-12-07: "Could not find CMake"). The wheel's
# binary is found first, by import, and started directly.
pip install -q "scikit-build-core>=0.10" "pybind11>=2.13.6" "cmake>=3.18"
# Not stripped, and -g1 (line tables: what a report's stack needs) rather than -g; the
# optimization levels (kernels -O1, bindings -O0) are CMakeLists.txt's: a clean build on a
# 2-core Xeon took 402 s with -g at -O3, 197 s with -g1 and the bindings at -O1, and takes
# about 120 s (this whole step of CI, tests included: 389 s) with these levels.
pip install -q --no-build-isolation -e ".[test]" -C build-dir="$dir/cmake" \
  -C cmake.define.FASTNN_SANITIZE=ON -C cmake.build-type=RelWithDebInfo \
  "-Ccmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
# --build-only: stop here (.ci/run builds this while the main suite runs, then tests)
if [ "${1:-}" = "--build-only" ]; then exit 0; fi

# Python itself is not instrumented, so the ASan runtime must be loaded first; libstdc++ too,
# or ASan's __cxa_throw interceptor fails on the first C++ exception the bindings raise.
cxx="${CXX:-c++}"
asan="$("$cxx" -print-file-name=libasan.so)"
stdcxx="$("$cxx" -print-file-name=libstdc++.so)"
for lib in "$asan" "$stdcxx"; do
  [ -e "$lib" ] || { echo "sanitize.sh: $cxx has no $lib" >&2; exit 2; }
done
export LD_PRELOAD="$asan $stdcxx"
# Leaks are not checked: CPython keeps its allocations until exit by design.
# allocator_may_return_null: a huge allocation fails as malloc does (numpy's MemoryError, which
# the tests expect) instead of ASan aborting on it.
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=0:abort_on_error=0:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ext="$(python -c 'import fastnn._C as c; print(c.__file__)')"
# ldd without LD_PRELOAD (under it, ldd lists libasan for any library), and not as
# `ldd | grep -q`: under pipefail, grep's early exit can kill ldd with SIGPIPE, a false failure.
deps="$(env -u LD_PRELOAD ldd "$ext")"
[[ "$deps" == *libasan* ]] || { printf 'sanitize.sh: %s is not built with ASan:\n%s\n' "$ext" "$deps" >&2; exit 2; }
export MPLBACKEND=Agg
log="$dir/pytest.log"
# Left out under the sanitizer only, for their run time, not their content: test_examples.py,
# test_readme.py and test_notebooks.py run the course's example scripts, README's commands
# and the notebooks, and the tests marked slow are whole trainings to an accuracy and
# benchmarks in subprocesses (253 of 696 s under ASan on a 2-core Xeon, 2026-12-06);
# test_bench_scripts.py, test_cli_config.py, test_distributed.py and test_experiments.py drive
# the bench scripts, the command line, mpirun and the experiment helpers in Python (40 of the
# 100 s of the slowest tests without ASan; CI had reached 30 minutes on a busy host,
# 2026-12-06). Every kernel they call is tested directly, and fuzzed, in the tests that do run.
# So are the kernels under the training loop, diagnostics, the tuner, schedulers, datasets,
# checkpoints, ONNX and TensorBoard export and the precision switch (their files: 58 s under
# ASan), and two tests of results rather than memory: parallel calls agreeing (25 s) and the
# portable ISA's GEMM under other CPUs' blockings (45 s; AVX2 and AVX-512 stay). CI took 33.6
# minutes on a host running at half speed, 2026-12-06, 13.7 of them in this step.
status=0
skip_files=(examples readme notebooks bench_scripts cli_config distributed experiments training
            diagnostics tuning learner_hints schedulers datasets datasets_download package
            checkpoint onnx_export tensorboard precision)
ignore=()
for f in "${skip_files[@]}"; do ignore+=("--ignore=tests/test_$f.py"); done
deselect=(--deselect tests/test_gemm_paths.py::test_repeated_parallel_calls_agree)
for cpu in sapphire-rapids zen4 zen5 skylake-client avx2-laptop; do
  deselect+=(--deselect "tests/test_blocking.py::test_gemm_under_model_blocking_of_real_cpus[generic-$cpu]")
done
# --capture=sys: a report written to fd 2 by a dying test would otherwise be lost with its capture.
python -m pytest -q -p no:cacheprovider --capture=sys "${ignore[@]}" "${deselect[@]}" -m "not slow" "$@" 2>&1 \
  | tee "$log" || status=$?
unset LD_PRELOAD

# A report in a subprocess (the fuzz test runs its cases in one) shows up only in the output.
if grep -qE "ERROR: AddressSanitizer|runtime error:|UndefinedBehaviorSanitizer" "$log"; then
  echo "sanitize.sh: sanitizer report(s) above (full log: $log)" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
