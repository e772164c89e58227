"""The benchmark scripts name the machine they ran on: the CPU as fastnn reads it, its
caches and per-core FMA peak, and the GEMM blocking, on screen and in their JSON."""
import json
import os
import sys
from pathlib import Path

import pytest

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


def test_the_ratios_to_each_rival_are_medians_of_ratios_as_the_ratio_to_the_best():
    """Found by an attack: bench_gemm's /numpy and /torch were ratios of median speeds and
    /best a median of per-round ratios, so /best printed above /torch with torch the best
    rival in every round (1.05 vs 1.25 on these three rounds)."""
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    rounds = [{"fastnn": 1.0, "numpy": 3.0, "torch": 1.05},
              {"fastnn": 2.0, "numpy": 6.0, "torch": 2.1},
              {"fastnn": 1.0, "numpy": 3.0, "torch": 2.5}]
    ratios = common.speedups(rounds)
    assert ratios == {"vs_numpy": 3.0, "vs_torch": 1.05}
    assert common.ratio_to_best(rounds) == 1.05 == ratios["vs_torch"]


def test_bench_gemm_random_shapes_are_seeded_and_summarized():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_gemm
    finally:
        sys.path.remove(str(BENCH))
    shapes = bench_gemm.random_shapes(30, seed=3)
    assert shapes == bench_gemm.random_shapes(30, seed=3) != bench_gemm.random_shapes(30, seed=4)
    for label, m, n, k, ta, tb in shapes:
        assert 2e5 <= 2 * m * n * k <= 3e9 and max(m, n, k) <= 4096 and label.startswith("random")
    assert {(ta, tb) for *_, ta, tb in shapes} == {(False, False), (False, True), (True, False), (True, True)}
    assert min(min(m, n, k) for _, m, n, k, _, _ in shapes) <= 16  # thin ones among them
    before = set(BENCH.joinpath("results").glob("gemm-*.json")) if BENCH.joinpath("results").exists() else set()
    out = run_python(None, args=[str(BENCH / "bench_gemm.py"), "--random", "2", "--seed", "3",
                                 "--threads", "1", "--repeats", "1"],
                     env_extra={"PYTHONPATH": str(BENCH) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0, out.stderr[-2000:]
    for f in set(BENCH.joinpath("results").glob("gemm-*.json")) - before:
        f.unlink()
    assert shapes[0][0] in out.stdout and shapes[1][0] in out.stdout
    assert "random shapes, 1 thread(s): median fastnn/best" in out.stdout
    assert "square" not in out.stdout and "MLP products" not in out.stdout


def test_bench_gemm_bf16_records_the_path_and_every_rival():
    before = set(BENCH.joinpath("results").glob("gemm-bf16-*.json")) if BENCH.joinpath("results").exists() else set()
    out = run_python(None, args=[str(BENCH / "bench_gemm.py"), "--precision", "bf16", "--squares", "40",
                                 "--no-mlp", "--threads", "1", "--repeats", "1"],
                     env_extra={"PYTHONPATH": str(BENCH) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0].startswith("CPU: ")
    assert f"bf16 path: {fastnn.config()['bf16']}" in out.stdout
    written = sorted(set(BENCH.joinpath("results").glob("gemm-bf16-*.json")) - before)
    assert written, out.stdout
    result = json.loads(written[-1].read_text())
    for f in written:
        f.unlink()
    assert result["bf16_path"] == fastnn._C.bf16_path() and result["machine"]["cpu_detail"]["model_name"]
    row = result["rows"][0]
    assert row["fastnn"] > 0 and row["fastnn_fp32"] > 0 and row["vs_fastnn_fp32"] > 0
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert row["torch_bf16"] > 0 and row["vs_torch_bf16"] > 0 and row["vs_torch"] > 0


@pytest.mark.slow
def test_bench_distributed_prints_the_cpu_and_every_configuration():
    from test_distributed import _mpirun

    if isinstance(_mpirun(), str):
        pytest.skip(_mpirun())
    before = set(BENCH.joinpath("results").glob("distributed-*.json")) if BENCH.joinpath("results").exists() else set()
    out = run_python(None, args=[str(BENCH / "bench_distributed.py"), "--steps", "2", "--rounds", "1"],
                     env_extra={"PYTHONPATH": str(BENCH) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.startswith("CPU: ") and "GFLOP/s per core" in out.stdout.splitlines()[0]
    written = sorted(set(BENCH.joinpath("results").glob("distributed-*.json")) - before)
    assert written, out.stdout
    payload = json.loads(written[-1].read_text())
    for f in written:
        f.unlink()
    rows = payload["rows"]
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in ("784-512-256-10", "784-1024-1024-10")
                                                         for b in (256, 1024)}
    for r in rows:   # every configuration ran and the all-reduce was timed
        assert r["samples_per_s_1p1t"] > 0 and r["samples_per_s_2p1t"] > 0 and r["samples_per_s_1p2t"] > 0
        assert 0 < r["mpi_allreduce_ms"] and 0 < r["one_way_ms"] and 0 < r["allreduce_share"] < 1
        assert r["ring_ms"] > 0 and r["allreduce_kind"] == "SharedAllReduce"  # one machine
    assert {(m["machines"], m["gbit_per_s"]) for m in payload["ring_model"]} == {(8, 10), (8, 100), (64, 10), (64, 100)}


def test_bench_mlp_bf16_nets_train_alike():
    """bench_mlp --precision bf16's check: fastnn's bf16 step and PyTorch's bf16 autocast (where
    PyTorch is installed) stay within bf16's rounding of fastnn fp32 over 50 steps."""
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        import bench_mlp
        from common import try_import_torch
    finally:
        sys.path.remove(str(BENCH))
    torch = try_import_torch()
    frameworks = ["fastnn", "fastnn-bf16"] + (["torch-bf16"] if torch else [])
    X, y = bench_mlp.data()
    sizes = bench_mlp.MODELS["784-256-128-10"]
    last = bench_mlp.check_same_loss(frameworks, torch, sizes, "adam", X, y)
    assert set(last) == set(frameworks)
    if fastnn._C.bf16_path() != "fp32":
        assert last["fastnn-bf16"] != last["fastnn"], "the bf16 net ran float32 products"


def test_bench_gpu_says_why_it_cannot_run_without_a_gpu():
    if fastnn.config()["cuda"]["available"]:
        pytest.skip("a usable GPU: scripts/gpu_check.sh runs the bench there")
    out = run_python(None, args=[str(BENCH / "bench_gpu.py"), "--quick"])
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout.startswith("CPU: ") and "bench_gpu: fastnn's CUDA is not usable here" in out.stderr


def test_bench_gpu_fastnn_step_trains_as_torch_does():
    """bench_gpu's fastnn steps, run on the CPU: fit's step with the model on device arrays in
    host memory, and the device ops' step on NumPy arrays: their first losses are PyTorch's from
    the same weights and batches."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(BENCH))
    import bench_gpu

    row = bench_gpu.bench_mlp(torch, "784-512-256-10", 32, rounds=1, steps_data=3, device="cpu",
                              compile_too=False)
    for name in ("fastnn", "fastnn ops"):
        assert abs(row["first_losses"][name] - row["first_losses"]["torch"]) < 1e-5, row["first_losses"]
    assert row["fastnn_samples_per_s"] > 0 and row["vs_torch"] > 0 and row["ops_vs_torch"] > 0
    cnn = bench_gpu.bench_cnn(torch, 8, rounds=1, steps_data=2, device="cpu")  # LeNet-5: torch's weights in both
    assert abs(cnn["first_losses"]["fastnn"] - cnn["first_losses"]["torch"]) < 1e-5, cnn["first_losses"]


@pytest.mark.parametrize("script, args, words", [
    ("bench_gemm.py", ["--threads", "0"], "argument --threads"),
    ("bench_gemm.py", ["--repeats", "0"], "argument --repeats"),  # had been a ZeroDivisionError
    ("bench_gemm.py", ["--random", "-3"], "argument --random"),  # had written an empty result
    ("bench_mlp.py", ["--phases", "784-512-10,512,adam"], "model '784-512-10' is not one of"),
    ("bench_mlp.py", ["--phases", "784-512-256-10,0,adam"], "argument --phases"),
    ("bench_conv.py", ["--threads", "1,x"], "argument --threads"),
    ("bench_memory.py", ["--batch", "-1"], "argument --batch"),
    ("bench_distributed.py", ["--rounds", "-1"], "argument --rounds"),
    ("bench_load.py", ["--samples", "0"], "argument --samples"),
    ("bench_overhead.py", ["--threads", "2"], "unrecognized arguments"),  # it took no options
])
def test_bench_arguments_out_of_range_are_usage_errors(script, args, words):
    before = set(BENCH.joinpath("results").glob("*.json")) if BENCH.joinpath("results").exists() else set()
    out = run_python(None, args=[str(BENCH / script), *args])
    assert out.returncode == 2, out.stderr[-2000:]
    assert words in out.stderr and "Traceback" not in out.stderr
    after = set(BENCH.joinpath("results").glob("*.json")) if BENCH.joinpath("results").exists() else set()
    assert after == before  # nothing run, nothing written
