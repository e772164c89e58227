"""Data-parallel training on MPI: 1 process x 1 thread, 1 process x 2 threads and
`mpirun -np 2` x 1 thread, on the same synthetic data, for 784-512-256-10 and
784-1024-1024-10 with Adam at global batches 256 and 1024.

Prints samples/s, the scaling of 2 processes over one (1 thread each), the all-reduce time
per step as `fit(distributed=True)` does it (on one machine, weighted sums of the flat
gradients in shared memory) and its share of the step, the ring of MPI messages that fit
uses between machines, MPI_Allreduce alone on the same buffer, and MPI's own one-way
transfer of the same bytes on loopback (an osu-style ping-pong, half the round trip),
each after every rank has written its buffer as backward does; then the ring all-reduce
cost model, 2(N-1)/N x bytes / bandwidth + 2(N-1) x latency, for 8 and 64 machines at 10
and 100 Gb/s, with the per-rank batch above which the measured computation outlasts it.

    python bench/bench_distributed.py [--steps 60] [--rounds 3]

Needs mpirun (OpenMPI) and mpi4py (`pip install "fastnn-learn[mpi]"`). The machine is shared and
noisy: the three configurations are interleaved over rounds and medians reported.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

MODELS = {"784-512-256-10": (784, 512, 256, 10), "784-1024-1024-10": (784, 1024, 1024, 10)}
BATCHES = (256, 1024)
LATENCY_S = 20e-6   # per message between machines over TCP (the model's assumption)


def worker(steps: int) -> None:
    """Run under mpirun or alone: time fit on every model and batch, print JSON on rank 0.
    A fit runs two epochs of `steps` steps and the second is timed: what fit does once per
    call (checking and scanning the data: 36 ms for these 188 MB, on every rank) is not
    training speed, and it weighed 5% of a 60-step epoch in 2 processes, 3% in one."""
    import fastnn
    from fastnn import distributed as dist, nn, optim
    from fastnn.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    world, rank = dist.world_size(), dist.rank()
    results = []
    for name, sizes in MODELS.items():
        for batch in BATCHES:
            rng = np.random.default_rng(0)
            n = batch * steps
            X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
            y = rng.integers(0, sizes[-1], n)
            fastnn.seed(0)
            layers = [nn.Dense(a, b, activation="relu") for a, b in zip(sizes[:-2], sizes[1:-1])]
            model = nn.Sequential(*layers, nn.Dense(sizes[-2], sizes[-1]))
            model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3))
            per_rank = batch // world
            kwargs = dict(batch_size=per_rank, verbose=0, seed=0, distributed=world > 1)
            model.fit(X[:batch * 5], y[:batch * 5], epochs=1, **kwargs)   # warm-up
            timer = EpochTimer()
            dist.barrier()
            model.fit(X, y, epochs=2, callbacks=[timer], **kwargs)
            seconds = timer.seconds[-1]   # the second epoch: steady training
            all_reduce = dist._all_reduces.get(model.compiled.optimizer._flat)
            grad = model.compiled.optimizer._flat.grad
            row = {"model": name, "batch": batch, "world": world,
                   "threads": fastnn.get_num_threads(), "samples_per_s": n / seconds,
                   "step_s": seconds / steps, "gradient_bytes": grad.nbytes}
            if world > 1:
                row.update(_allreduce_times(all_reduce))
            results.append(row)
    if rank == 0:
        print("RESULT " + json.dumps(results), flush=True)


def _allreduce_times(fits: Any, repeats: int = 30) -> dict:
    """Median seconds of fit's gradient all-reduce ``fits`` (on one machine, the sums in
    shared memory), of the ring of MPI messages that fit uses between machines, of
    MPI_Allreduce alone and of MPI's one-way send of the same bytes. Before each
    repetition every rank writes its whole buffer, as backward does before fit's all-reduce:
    a buffer left in the cache of the core that last reduced it would flatter them all."""
    from mpi4py import MPI

    from fastnn import distributed

    comm = MPI.COMM_WORLD
    weights = np.full(comm.Get_size(), 1.0 / comm.Get_size())
    written = fits.grad.copy()
    ring = distributed._RingAllReduce(written.copy())
    buf = ring.grad

    def mpi_reduce() -> None:   # MPI's all-reduce alone
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def ping() -> None:   # a round trip of the same bytes; half of it is one transfer
        if comm.Get_rank() == 0:
            comm.Send(buf, dest=1)
            comm.Recv(buf, source=1)
        elif comm.Get_rank() == 1:
            comm.Recv(buf, source=0)
            comm.Send(buf, dest=0)

    def median(fn, target, scale=1.0):
        times = []
        for _ in range(repeats):
            np.copyto(target, written)
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * scale)
        return float(np.median(comm.allreduce(np.array(times)) / comm.Get_size()))

    median(lambda: fits(weights), fits.grad)
    return {"allreduce_kind": type(fits).__name__.strip("_"),
            "allreduce_s": median(lambda: fits(weights), fits.grad),
            "ring_s": median(lambda: ring(weights), buf),
            "mpi_allreduce_s": median(mpi_reduce, buf), "one_way_s": median(ping, buf, 0.5)}


def _mpirun() -> list[str]:
    cmd = ["mpirun", "-np", "2", "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def _run(cmd: list[str], threads: int) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def ring_model(gradient_bytes: int, machines: int, gbit_per_s: float) -> float:
    """Seconds of one ring all-reduce of ``gradient_bytes`` over ``machines``."""
    return (2 * (machines - 1) / machines * gradient_bytes / (gbit_per_s * 1e9 / 8)
            + 2 * (machines - 1) * LATENCY_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--steps", type=int, default=60, help="timed steps per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name}: expected an integer >= 1; got {getattr(args, name)}")
    if args.worker:
        worker(args.steps)
        return 0
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import machine_line, write_json

    if shutil.which("mpirun") is None:
        raise SystemExit("bench_distributed needs mpirun: apt-get install openmpi-bin libopenmpi-dev")
    print(machine_line())
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(args.steps)]
    configs = {"1 proc x 1 thread": (me, 1), "1 proc x 2 threads": (me, 2),
               "2 procs x 1 thread": (_mpirun() + me, 1)}
    rounds: dict[str, list[list[dict]]] = {k: [] for k in configs}
    for _ in range(args.rounds):
        for key, (cmd, threads) in configs.items():
            rounds[key].append(_run(cmd, threads))

    def med(key: str, i: int, field: str) -> float:
        return statistics.median(r[i][field] for r in rounds[key])

    rows = []
    print(f"\n{'model':18s} {'batch':>5s} {'1p x 1t':>9s} {'1p x 2t':>9s} {'2p x 1t':>9s}  "
          f"{'2p/1p':>6s} {'2p/2t':>6s}  {'allreduce':>9s} {'share':>6s} {'ring':>9s} {'MPI alone':>9s} "
          f"{'one-way':>8s} {'ratio':>6s}")
    for i, base in enumerate(rounds["1 proc x 1 thread"][0]):
        one, two_t, two_p = (med(k, i, "samples_per_s") for k in configs)
        ar, ping = med("2 procs x 1 thread", i, "allreduce_s"), med("2 procs x 1 thread", i, "one_way_s")
        mpi_ar = med("2 procs x 1 thread", i, "mpi_allreduce_s")
        ring = med("2 procs x 1 thread", i, "ring_s")
        kind = rounds["2 procs x 1 thread"][0][i]["allreduce_kind"]
        step = med("2 procs x 1 thread", i, "step_s")
        row = {"model": base["model"], "batch": base["batch"], "samples_per_s_1p1t": one,
               "samples_per_s_1p2t": two_t, "samples_per_s_2p1t": two_p, "scaling_2p": two_p / one,
               "vs_2_threads": two_p / two_t, "allreduce_ms": ar * 1e3, "allreduce_share": ar / step,
               "allreduce_kind": kind, "ring_ms": ring * 1e3, "mpi_allreduce_ms": mpi_ar * 1e3,
               "one_way_ms": ping * 1e3, "allreduce_over_one_way": ar / ping,
               "gradient_bytes": base["gradient_bytes"]}
        rows.append(row)
        print(f"{row['model']:18s} {row['batch']:5d} {one:9,.0f} {two_t:9,.0f} {two_p:9,.0f}  "
              f"{row['scaling_2p']:5.2f}x {row['vs_2_threads']:5.2f}x  {ar * 1e3:7.3f}ms "
              f"{ar / step:6.1%} {ring * 1e3:7.3f}ms {mpi_ar * 1e3:7.3f}ms {ping * 1e3:6.3f}ms "
              f"{ar / ping:5.2f}x")
    print("(samples/s; 2p/1p: scaling of 2 processes over one, target 1.8x at batch 1024; "
          f"allreduce: per step as fit does it ({kind}), and its share of the step; "
          "ring: the all-reduce fit uses between machines; MPI alone: "
          "MPI_Allreduce of the same buffer; one-way: MPI's transfer of the same bytes; "
          "ratio: allreduce / one-way, target <= 1.5x)")

    print(f"\nring all-reduce model, {LATENCY_S * 1e6:.0f} us per message; per-rank batch "
          "above which one rank's measured computation (1 thread) outlasts the all-reduce:")
    model_rows = []
    for i, base in enumerate(rounds["1 proc x 1 thread"][0]):
        if base["batch"] != BATCHES[-1]:
            continue
        rate = med("1 proc x 1 thread", i, "samples_per_s")
        for machines in (8, 64):
            for gbit in (10, 100):
                t = ring_model(base["gradient_bytes"], machines, gbit)
                model_rows.append({"model": base["model"], "machines": machines, "gbit_per_s": gbit,
                                   "allreduce_ms": t * 1e3, "break_even_batch_per_rank": t * rate})
                print(f"  {base['model']:18s} {machines:3d} machines {gbit:4d} Gb/s: "
                      f"{t * 1e3:7.2f} ms per step; computation outlasts it from "
                      f"{t * rate:6.0f} samples per rank ({base['gradient_bytes'] / 1e6:.1f} MB of gradient)")
    path = write_json("distributed", {"rows": rows, "ring_model": model_rows,
                                      "steps": args.steps, "rounds": args.rounds})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
