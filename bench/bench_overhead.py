"""Per-step overhead: a tiny model (4-8-2, batch 1) where the kernels cost nothing, so the
time per training step is the framework's own overhead; and the time of `import fastnn`.

    python bench/bench_overhead.py
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

import fastnn
from fastnn import losses, nn, optim
from common import description, machine_line, try_import_torch, write_json


def per_step(step, repeats=7, steps=2000) -> float:
    for _ in range(200):
        step()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        samples.append((time.perf_counter() - t0) / steps)
    return statistics.median(samples)


def import_time(module: str, repeats: int = 5) -> float:
    """Median wall time of `import module` in a fresh interpreter (minus a bare start)."""
    def run(code):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t0
    bare = statistics.median(run("pass") for _ in range(repeats))
    return statistics.median(run(f"import {module}") for _ in range(repeats)) - bare


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=description(__doc__)).parse_args(argv)  # --help
    print(machine_line())
    rng = np.random.default_rng(0)
    x = rng.random((1, 4), dtype=np.float32)
    y = np.array([1])
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 2))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = losses.CrossEntropy()

    def fastnn_step():
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()

    results = {"fastnn_step_us": per_step(fastnn_step) * 1e6}
    torch = try_import_torch()
    if torch:
        torch.set_num_threads(1)
        tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
        tloss = torch.nn.CrossEntropyLoss()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def torch_step():
            loss = tloss(tmodel(tx), ty)
            topt.zero_grad()
            loss.backward()
            topt.step()

        results["torch_step_us"] = per_step(torch_step) * 1e6
        results["overhead_ratio"] = results["fastnn_step_us"] / results["torch_step_us"]
    results["import_fastnn_s"] = import_time("fastnn")
    if torch:
        results["import_torch_s"] = import_time("torch")
    for key, value in results.items():
        print(f"{key:18s} {value:10.3f}")
    print(f"wrote {write_json('overhead', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
