"""Shared plumbing for the benchmarks: thread control for every library, medians, JSON."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import fastnn

RESULTS = Path(__file__).resolve().parent / "results"


def description(doc: str) -> str:
    """A script's --help description: its docstring's first paragraph, not its first line
    (which stopped mid-sentence)."""
    return " ".join(doc.split("\n\n")[0].split())


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a usage error otherwise, not a traceback later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text}")
    return value


def positive_ints(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 1 ("512,1024")."""
    return [positive_int(part) for part in text.split(",")]


def thread_counts(text: str) -> list[int]:
    """An argparse type: comma-separated thread counts, each in [1, fastnn.max_num_threads()]."""
    counts = positive_ints(text)
    top = fastnn.max_num_threads()
    if max(counts) > top:
        raise argparse.ArgumentTypeError(f"at most {top} threads here; got {text}")
    return counts


def try_import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_mlp(torch, weights, device: str = "cpu"):
    """PyTorch's ReLU MLP holding `weights` ([(W (out, in), b)] as NumPy arrays): Linear and
    ReLU layers, the last Linear without ReLU, on `device`."""
    layers = []
    for k, (w, b) in enumerate(weights):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if k < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(device)


@contextmanager
def threads(n: int, torch=None) -> Iterator[None]:
    """Run fastnn, NumPy's BLAS and PyTorch on n threads each."""
    from threadpoolctl import threadpool_limits

    before = fastnn.get_num_threads()
    fastnn.set_num_threads(n)
    torch_before = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        fastnn.set_num_threads(before)
        if torch:
            torch.set_num_threads(torch_before)


def warm_up(fn: Callable[[], object], seconds: float = 0.02) -> float:
    """Call fn for `seconds` and return its fastest call. On a VM a vCPU that idled (through
    a pause, or between libraries) takes up to a host scheduler tick to wake (0.2-8 ms seen
    on a 2-vCPU KVM guest): the first calls after an idle spell time the hypervisor, not
    the library, and a calibration from one such call ran 3 calls a round instead of 500."""
    end = time.perf_counter() + seconds
    best = float("inf")
    while True:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if t0 >= end:
            return max(best, 1e-7)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int,
                min_seconds: float = 0.2) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Time every library once per round, the libraries interleaved within each round, so
    that a noisy spell on the shared machine hits all of them alike.

    Returns the median seconds per call of each library and, per round, the seconds of each
    (for medians of per-round ratios)."""
    inner = {}
    for name, fn in fns.items():  # calibrate: enough calls for min_seconds / rounds a sample
        time.sleep(0.05)
        inner[name] = max(1, int(min_seconds / rounds / warm_up(fn)))
    per_round = []
    for _ in range(rounds):
        sample = {}
        for name, fn in fns.items():
            # Past the other runtimes' spin-waits (OpenBLAS's threads spin ~0.1 s after a call),
            # which would otherwise take a core from this one.
            time.sleep(0.25)
            warm_up(fn)
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            sample[name] = (time.perf_counter() - t0) / inner[name]
        per_round.append(sample)
    medians = {name: statistics.median(r[name] for r in per_round) for name in fns}
    return medians, per_round


def speedups(per_round: list[dict[str, float]], ours: str = "fastnn") -> dict[str, float]:
    """``{"vs_<rival>": median over rounds of (rival's time) / (our time)}`` for each rival:
    medians of ratios, as ``ratio_to_best``, so the two never contradict each other (a
    ratio of median speeds had put fastnn/best above fastnn/torch with torch the best)."""
    return {f"vs_{name}": statistics.median(r[name] / r[ours] for r in per_round)
            for name in per_round[0] if name != ours}


def ratio_to_best(per_round: list[dict[str, float]], ours: str = "fastnn") -> float:
    """Median over rounds of (best competitor's time) / (our time): above 1 means faster."""
    return statistics.median(min(t for n, t in r.items() if n != ours) / r[ours]
                             for r in per_round)


def cpu_name() -> str:
    """The CPU as fastnn reads it (cpuid's brand string, family/model: a VM may hide the
    marketing name) and the ISA fastnn runs on it."""
    cpu = fastnn.config()["cpu"]
    return (f"{cpu['model_name'] or platform.processor() or platform.machine()} "
            f"({cpu['vendor']} family {cpu['family']} model {cpu['model']}, {fastnn.config()['isa']})")


def machine_line() -> str:
    """One line for the top of every benchmark's output: the CPU, its caches, the measured
    FMA peak of one core, and the GEMM blocking in use (and where it came from)."""
    cfg = fastnn.config()
    cpu, blk = cfg["cpu"], cfg["blocking"]
    feats = ",".join(f for f, on in cpu["features"].items() if on) or "none"
    caches = ", ".join(f"L{c['level']} {c['size'] >> 10}K/{c['ways']}w" for c in cpu["caches"])
    return (f"CPU: {cpu_name()}; features {feats}; caches {caches} [{cpu['cache_source']}]; "
            f"FMA peak {fastnn._C.fma_peak_per_core():.0f} GFLOP/s per core; "
            f"GEMM {blk['isa']} {blk['mr']}x{blk['nr']} kc={blk['kc']} nc={blk['nc']} mc={blk['mc']} "
            f"({blk['source']}); {cfg['num_threads']} thread{'s' * (cfg['num_threads'] != 1)}")


def machine_info() -> dict:
    info = {"cpu": cpu_name(), "cpu_detail": fastnn.config()["cpu"],
            "fma_peak_per_core": fastnn._C.fma_peak_per_core(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "fastnn": fastnn.config(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture")}
                        for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        pass
    return info


def warn_openblas_env() -> None:
    if os.environ.get("OPENBLAS_CORETYPE"):
        print("note: OPENBLAS_CORETYPE is set, which slows NumPy's OpenBLAS here; for a fair run: "
              "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python", " ".join(sys.argv), file=sys.stderr)


def write_json(name: str, payload: dict) -> Path:
    """bench/results/NAME-DATE.json, with the machine's description (CPU, caches, peak)."""
    payload = {"machine": machine_info(), **payload}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path
