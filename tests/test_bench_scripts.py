"""The benchmark scripts name the machine they ran on: the CPU as fastnn reads it, its
caches and per-core FMA peak, and the GEMM blocking, on screen and in their JSON."""
import json
import os
from pathlib import Path

import fastnn

from _ref import run_python

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_gemm_prints_and_records_the_cpu(tmp_path):
    before = set(BENCH.joinpath("results").glob("gemm-*.json")) if BENCH.joinpath("results").exists() else set()
    out = run_python(None, args=[str(BENCH / "bench_gemm.py"), "--squares", "40", "--no-mlp",
                                 "--threads", "1", "--repeats", "1"],
                     env_extra={"PYTHONPATH": str(BENCH) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0, out.stderr[-2000:]
    first = out.stdout.splitlines()[0]
    cpu = fastnn.config()["cpu"]
    assert first.startswith("CPU: ") and cpu["model_name"] in first and "GFLOP/s per core" in first
    assert f"kc={fastnn.config()['blocking']['kc']}" in first
    written = sorted(set(BENCH.joinpath("results").glob("gemm-*.json")) - before)
    assert written, out.stdout
    machine = json.loads(written[-1].read_text())["machine"]
    for f in written:
        f.unlink()
    assert machine["cpu_detail"]["cache_spec"] == cpu["cache_spec"]
    assert machine["cpu_detail"]["model_name"] == cpu["model_name"]
    assert machine["fma_peak_per_core"] > 0
