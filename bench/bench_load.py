"""Training on a busy machine: one epoch of `fit` with the cores idle, and beside another
process that keeps one of them busy, as a learner's notebook on shared cores meets it.
`--model mlp` (short parallel regions: tens of microseconds) or `--model cnn` (regions of
milliseconds, where the thread that shares the busy core is slowed in mid-region).

Each configuration runs in a fresh process (OpenMP reads its settings at start-up),
in interleaved rounds; the table gives medians. The training process and the busy one
are pinned so that they share exactly one core, whatever the machine's size.

    python bench/bench_load.py [--model mlp|cnn] [--rounds 5] [--samples N] [--batch 32]

Configurations: fastnn as shipped (the oversubscription guard on), the guard off
(FASTNN_ADAPTIVE_THREADS=0: libgomp's default waiting, what fastnn did before),
OMP_WAIT_POLICY=passive with the guard off, and one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import cpu_name, description, machine_line, positive_int, write_json

CONFIGS = {
    "fastnn (guard on)": {},
    "guard off": {"FASTNN_ADAPTIVE_THREADS": "0"},
    "guard off, passive": {"FASTNN_ADAPTIVE_THREADS": "0", "OMP_WAIT_POLICY": "passive"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}

WORKER = r"""
import json, sys, time
import numpy as np
import fastnn as fnn
from fastnn import nn, optim
samples, batch, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
y = rng.integers(0, 10, samples)
fnn.seed(0)
if kind == "cnn":
    X = rng.random((samples, 3, 32, 32), dtype=np.float32)
    block = lambda c_in, c_out: [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU()]
    model = nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dense(64 * 8 * 8, 10))
else:
    X = rng.random((samples, 784), dtype=np.float32)
    model = nn.Sequential(nn.Dense(784, 256, activation="relu"),
                          nn.Dense(256, 128, activation="relu"), nn.Dense(128, 10))
model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3))
model.fit(X[:batch * 20], y[:batch * 20], epochs=1, batch_size=batch, verbose=0)   # warm-up
t0 = time.perf_counter()
model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "pauses": fnn.config()["load_pauses"]}))
"""


def run_worker(env_extra: dict, cpus: list[int], samples: int, batch: int, model: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "FASTNN_ADAPTIVE_THREADS", "OMP_NUM_THREADS")}
    env.update(env_extra)
    env.setdefault("OMP_NUM_THREADS", str(len(cpus)))
    out = subprocess.run([sys.executable, "-c", WORKER, str(samples), str(batch), model], env=env,
                         check=True, capture_output=True, text=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_hog(cpu: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            preexec_fn=lambda: os.sched_setaffinity(0, [cpu]))


def main() -> int:
    ap = argparse.ArgumentParser(description=description(__doc__))
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--samples", type=positive_int, default=None,
                    help="samples in the timed epoch (default: 20000 for mlp, 1024 for cnn)")
    ap.add_argument("--batch", type=positive_int, default=32)
    args = ap.parse_args()
    if args.samples is None:
        args.samples = 1024 if args.model == "cnn" else 20000
    print(machine_line())
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        print("needs two CPUs")
        return 1
    times: dict[tuple[str, str], list[float]] = {}
    pauses: dict[tuple[str, str], list[int]] = {}
    for r in range(args.rounds):
        for load in ("idle", "one core busy"):
            hog = start_hog(cpus[-1]) if load != "idle" else None
            try:
                time.sleep(0.2)
                names = list(CONFIGS)
                names = names[r % len(names):] + names[:r % len(names)]  # rotate the order
                for name in names:
                    res = run_worker(CONFIGS[name], cpus, args.samples, args.batch, args.model)
                    times.setdefault((name, load), []).append(res["seconds"])
                    pauses.setdefault((name, load), []).append(res["pauses"])
            finally:
                if hog:
                    hog.kill()
                    hog.wait()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    described = ("conv 32-32-pool-64-pool on 3x32x32 with batch norm" if args.model == "cnn"
                 else "784-256-128-10")
    print(f"== {cpu_name()}; fit, one epoch of {args.samples} samples, {described}, Adam, "
          f"batch {args.batch}, 2 threads on CPUs {cpus}; medians of {args.rounds} rounds ==")
    base_idle = statistics.median(times[("guard off", "idle")])
    print(f"{'configuration':22s} {'idle s':>8s} {'busy s':>8s} {'idle/before':>12s} "
          f"{'busy/idle':>10s} {'pauses idle':>12s} {'pauses busy':>12s}")
    rows = []
    for name in CONFIGS:
        idle = statistics.median(times[(name, "idle")])
        busy = statistics.median(times[(name, "one core busy")])
        p_idle = statistics.median(pauses[(name, "idle")])
        p_busy = statistics.median(pauses[(name, "one core busy")])
        print(f"{name:22s} {idle:8.3f} {busy:8.3f} {idle / base_idle:12.3f} {busy / idle:10.2f} "
              f"{p_idle:12.0f} {p_busy:12.0f}")
        rows.append({"config": name, "idle_s": idle, "busy_s": busy,
                     "idle_runs": times[(name, "idle")], "busy_runs": times[(name, "one core busy")],
                     "pauses_idle": pauses[(name, "idle")],
                     "pauses_busy": pauses[(name, "one core busy")]})
    write_json("load", {"cpu": cpu_name(), "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
