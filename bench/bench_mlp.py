"""The whole training step side by side: fastnn, PyTorch (CPU) and a NumPy network written
by hand, in one process, on the same data from the same initial weights.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_mlp.py [--quick]

A step gathers a shuffled batch, runs forward, softmax cross-entropy, backward and the
optimizer update; no framework computes the gradient of the input batch, which nothing uses.
First, for each model and optimizer, the three are run for 50 steps from the same weights on
the same batches and must reach the same loss (same work, no shortcut). Then they are timed
in interleaved rounds (fastnn, PyTorch, NumPy, fastnn, ...), so that a slow spell of this
shared machine hits all three alike; each round gives each framework's median step time and
the ratios of that round, and the table reports medians over the rounds: samples/s, the
ratios, and fastnn's share of the measured FMA peak (flops of the step: 2 per weight per
sample for forward, 2 for the weight gradient, 2 for the input gradient of every layer but
the first). Peak memory is measured separately, one fresh process per framework, as the
growth of the peak RSS during training. JSON goes to bench/results/.

    python bench/bench_mlp.py --precision bf16 [--quick]

compares mixed precision instead: fastnn with bf16 products (the path in use, AMX or
AVX512_BF16, is printed and in the JSON) against fastnn fp32, PyTorch fp32 and PyTorch's bf16
autocast (oneDNN), from the same weights on the same batches. Its check: 50 steps in each,
whose losses must stay within bf16's rounding of the fp32 ones.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

import fastnn
from fastnn import _C, losses, nn, optim
from common import (description, machine_line, positive_int, thread_counts, threads, torch_mlp,
                    try_import_torch, warn_openblas_env, write_json)

MODELS = {"784-256-128-10": [784, 256, 128, 10], "784-512-256-10": [784, 512, 256, 10],
          "784-1024-1024-10": [784, 1024, 1024, 10]}
BATCHES = [32, 128, 512]
OPTIMIZERS = {"adam": dict(lr=1e-3), "sgd-momentum": dict(lr=0.01, momentum=0.9)}
N_SAMPLES = 8192


def initial_weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, np.sqrt(2.0 / i), (o, i)).astype(np.float32),
             np.zeros(o, np.float32)) for i, o in zip(sizes[:-1], sizes[1:])]


def data(seed=0):
    """Random inputs whose labels a network can learn (the argmax of a random projection),
    so that the 50-step check compares losses that really move."""
    rng = np.random.default_rng(seed)
    X = rng.random((N_SAMPLES, 784), dtype=np.float32)
    y = np.argmax((X - 0.5) @ rng.standard_normal((784, 10)), axis=1)
    return X, y


# ---------------------------------------------------------------------------- the three
class FastnnNet:
    def __init__(self, weights, opt_name, precision="fp32"):
        self.precision = precision
        layers = []
        for k, (w, b) in enumerate(weights):
            last = k == len(weights) - 1
            dense = nn.Dense(w.shape[1], w.shape[0], activation=None if last else "relu")
            dense.weight.data[...] = w
            dense.bias.data[...] = b
            layers.append(dense)
        self.model = nn.Sequential(*layers)
        cfg = OPTIMIZERS[opt_name]
        self.opt = (optim.Adam(self.model.parameters(), **cfg) if opt_name == "adam"
                    else optim.SGD(self.model.parameters(), **cfg))
        self.loss_fn = losses.CrossEntropy()
        self.x_buf = None

    def step(self, X, y, idx):
        # the batch is gathered as fit gathers it: in C++, into a buffer reused across steps
        if self.x_buf is None or len(self.x_buf) != len(idx):
            self.x_buf = np.empty((len(idx), X.shape[1]), np.float32)
        xb, yb = _C.gather_rows(X, idx, out=self.x_buf), y[idx]
        with fastnn.precision.using(self.precision):
            loss = self.loss_fn(self.model(xb), yb)
            # as fit does, and as PyTorch does for an input that needs no gradient
            self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.opt.step()
        self.opt.zero_grad()
        return loss


class TorchNet:
    def __init__(self, torch, weights, opt_name, bf16=False):
        self.torch, self.bf16 = torch, bf16
        self.model = torch_mlp(torch, weights)
        cfg = OPTIMIZERS[opt_name]
        self.opt = (torch.optim.Adam(self.model.parameters(), **cfg) if opt_name == "adam"
                    else torch.optim.SGD(self.model.parameters(), **cfg))
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def step(self, X, y, idx):
        t = self.torch
        xb, yb = t.from_numpy(X[idx]), t.from_numpy(y[idx])
        with t.autocast("cpu", dtype=t.bfloat16, enabled=self.bf16):
            loss = self.loss_fn(self.model(xb), yb)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.opt.step()
        return loss.item()


class NumpyNet:
    """The network a learner writes by hand: NumPy arrays, BLAS matmuls, explicit backprop."""

    def __init__(self, weights, opt_name):
        self.params = [a.copy() for wb in weights for a in wb]
        self.opt_name, self.cfg = opt_name, OPTIMIZERS[opt_name]
        self.state = [[np.zeros_like(p), np.zeros_like(p)] for p in self.params]
        self.t = 0

    def step(self, X, y, idx):
        xb, yb = X[idx], y[idx]
        acts = [xb]
        n_layers = len(self.params) // 2
        for k in range(n_layers):
            z = acts[-1] @ self.params[2 * k].T + self.params[2 * k + 1]
            acts.append(np.maximum(z, 0) if k < n_layers - 1 else z)
        z = acts[-1]
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(yb)), yb]))
        g = p
        g[np.arange(len(yb)), yb] -= 1
        g /= len(yb)
        grads = [None] * len(self.params)
        for k in reversed(range(n_layers)):
            grads[2 * k] = g.T @ acts[k]
            grads[2 * k + 1] = g.sum(axis=0)
            if k:
                g = (g @ self.params[2 * k]) * (acts[k] > 0)
        self.t += 1
        for p_, g_, (m, v) in zip(self.params, grads, self.state):
            if self.opt_name == "adam":
                m *= 0.9
                m += 0.1 * g_
                v *= 0.999
                v += 0.001 * g_ * g_
                mhat = m / (1 - 0.9 ** self.t)
                vhat = v / (1 - 0.999 ** self.t)
                p_ -= self.cfg["lr"] * mhat / (np.sqrt(vhat) + 1e-8)
            else:
                m *= self.cfg["momentum"]
                m += g_
                p_ -= self.cfg["lr"] * m
        return float(loss)


def make(name, torch, weights, opt_name):
    """fastnn, torch, numpy, or fastnn-bf16 / torch-bf16 (bf16 products, fp32 weights)."""
    if name.startswith("fastnn"):
        return FastnnNet(weights, opt_name, "bf16" if name.endswith("bf16") else "fp32")
    if name.startswith("torch"):
        return TorchNet(torch, weights, opt_name, bf16=name.endswith("bf16"))
    return NumpyNet(weights, opt_name)


def batch_indices(batch, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.choice(N_SAMPLES, batch, replace=False) for _ in range(steps)]


# ---------------------------------------------------------------------------- checks, timing
def check_same_loss(frameworks, torch, sizes, opt_name, X, y):
    """Run 50 steps in each framework from the same weights on the same batches. The first
    10 losses must agree to 1e-3 (the same computation) with the NumPy network, written from
    the formulas; PyTorch's Adam rounds its first steps differently on some CPUs (2.13 on an
    AMD EPYC family 25 model 1, AVX2: 0.27% by step 5, where fastnn and NumPy agree to 1e-6),
    so PyTorch gets 1e-2. After 50 steps float32 rounding, amplified by training, separates
    even PyTorch from the NumPy network by up to ~1%, so the last loss must agree to 3%.
    With bf16 products (fastnn-bf16, torch-bf16) each operand carries bf16's relative
    rounding of 2^-9: their losses must agree with fastnn fp32's to 2e-2 early, 5e-2 late."""
    idx = batch_indices(64, 50)
    curves = {}
    for name in frameworks:
        net = make(name, torch, initial_weights(sizes), opt_name)
        curves[name] = np.array([net.step(X, y, i) for i in idx])
        assert curves[name][-1] < curves[name][0], f"{name} did not learn in 50 steps"
    ref = curves["fastnn"]
    for name, curve in curves.items():
        early = np.max(np.abs(curve[:10] - ref[:10]) / np.abs(ref[:10]))
        late = abs(curve[-1] - ref[-1]) / abs(ref[-1])
        bf16 = name.endswith("bf16")
        assert early <= (2e-2 if bf16 else 1e-2 if name == "torch" else 1e-3) and \
            late <= (5e-2 if bf16 else 3e-2), \
            f"{name} vs fastnn: first 10 losses differ by {early:.2g}, the 50th by {late:.2g}"
    return {name: float(curve[-1]) for name, curve in curves.items()}


def time_rounds(nets, X, y, batch, rounds, steps):
    """Median seconds per step of each net over `rounds` interleaved rounds of `steps` steps,
    and each round's times; the order of the nets rotates from round to round."""
    idx = batch_indices(batch, steps + 5, seed=2)
    for net in nets.values():
        for i in idx[:5]:
            net.step(X, y, i)
    names = list(nets)
    per_round = []
    for r in range(rounds):
        times = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(0.25)  # OpenBLAS threads spin ~0.1 s (2^28 cycles) before they sleep
            samples = []
            for i in idx[5:]:
                t0 = time.perf_counter()
                nets[name].step(X, y, i)
                samples.append(time.perf_counter() - t0)
            times[name] = statistics.median(samples)
        per_round.append(times)
    return per_round


def step_flops(sizes, batch):
    """Multiply-adds x 2 of one training step: forward and weight gradient of every layer,
    input gradient of every layer but the first."""
    weights = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    return 2.0 * batch * (2 * sum(weights) + sum(weights[1:]))


def phase_profile(sizes, batch, opt_name, X, y, steps=200, precision="fp32"):
    """Median ms of each phase of fastnn's step (gather, forward, loss, backward, optimizer
    step, zero_grad), and the GFLOP/s of forward and backward: where a step's time goes."""
    net = FastnnNet(initial_weights(sizes), opt_name, precision)
    buf = np.empty((batch, X.shape[1]), np.float32)
    times = {k: [] for k in ("gather", "forward", "loss", "backward", "step", "zero_grad")}
    # data()'s product leaves OpenBLAS's threads spinning for ~0.1 s: on 2 cores they took
    # one from fastnn's and inflated every phase (Adam's step read 0.24 ms for 0.17)
    time.sleep(0.25)
    for i in batch_indices(batch, steps, seed=3):
        t = [time.perf_counter()]
        xb, yb = _C.gather_rows(X, i, out=buf), y[i]
        t.append(time.perf_counter())
        with fastnn.precision.using(precision):
            out = net.model(xb)
            t.append(time.perf_counter())
            net.loss_fn(out, yb)
            grad = net.loss_fn.backward()
            t.append(time.perf_counter())
            net.model.backward(grad, input_grad=False)
            t.append(time.perf_counter())
        net.opt.step()
        t.append(time.perf_counter())
        net.opt.zero_grad()
        t.append(time.perf_counter())
        for k, a, b in zip(times, t, t[1:]):
            times[k].append(1e3 * (b - a))
    ms = {k: statistics.median(v[10:]) for k, v in times.items()}
    weights = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    fwd = 2.0 * batch * sum(weights)
    bwd = step_flops(sizes, batch) - fwd
    return ms, fwd / ms["forward"] / 1e6, bwd / ms["backward"] / 1e6


def peak_memory_mb(framework, model, batch, opt_name, nthreads):
    """Peak RSS growth (MiB) of 100 training steps in a fresh process."""
    cmd = [sys.executable, __file__, "--memory-probe", f"{framework},{model},{batch},{opt_name},{nthreads}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=sys.path[0])
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def memory_probe(spec):
    framework, model, batch, opt_name, nthreads = spec.split(",")
    torch = try_import_torch() if framework.startswith("torch") else None
    if torch:
        torch.set_num_threads(int(nthreads))
    fastnn.set_num_threads(int(nthreads))
    X, y = data()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net = make(framework, torch, initial_weights(MODELS[model]), opt_name)
    for i in batch_indices(int(batch), 100):
        net.step(X, y, i)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024.0)


def phases_spec(text: str) -> tuple[str, int, str]:
    """--phases MODEL,BATCH,OPT, each checked (a usage error, not a KeyError later)."""
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MODEL,BATCH,OPT; got {text!r}")
    model, batch, opt = parts
    if model not in MODELS:
        raise argparse.ArgumentTypeError(f"model {model!r} is not one of {', '.join(MODELS)}")
    if opt not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"optimizer {opt!r} is not one of {', '.join(OPTIMIZERS)}")
    return model, positive_int(batch), opt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__))
    p.add_argument("--quick", action="store_true", help="one model, short timings")
    p.add_argument("--threads", type=thread_counts, default=[2, 1], help="e.g. 2,1")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (slow)")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: fastnn's bf16 products against fastnn fp32 and PyTorch fp32 and "
                   "bf16 autocast")
    p.add_argument("--phases", metavar="MODEL,BATCH,OPT", type=phases_spec,
                   help="only profile fastnn's step by phase, e.g. 784-512-256-10,512,adam")
    args = p.parse_args(argv)
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return 0
    print(machine_line())
    if args.phases:
        model, batch, opt_name = args.phases
        X, y = data()
        for nthreads in args.threads:
            with threads(nthreads):
                ms, fwd, bwd = phase_profile(MODELS[model], batch, opt_name, X, y,
                                             precision=args.precision)
            print(f"{nthreads} thread(s) {model} batch {batch} {opt_name} {args.precision}: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in ms.items()) +
                  f" ms; forward {fwd:.0f} GFLOP/s, backward {bwd:.0f} GFLOP/s")
        return 0
    warn_openblas_env()
    torch = try_import_torch()
    bf16 = args.precision == "bf16"
    if bf16:  # the first is the one whose speed-ups the table gives
        frameworks = ["fastnn-bf16", "fastnn"] + (["torch-bf16", "torch"] if torch else [])
        print(f"bf16 path: {fastnn.config()['bf16']}")
    else:
        frameworks = ["fastnn", "torch", "numpy"] if torch else ["fastnn", "numpy"]
    base, rivals = frameworks[0], frameworks[1:]
    X, y = data()
    models = {"784-512-256-10": MODELS["784-512-256-10"]} if args.quick else MODELS
    rounds, steps = (5, 20) if args.quick else (9, 30)
    rows = []
    for nthreads in args.threads:
        peak = _C.fma_peak_gflops(nthreads, 0.3)
        print(f"\n== {nthreads} thread(s); measured FMA peak {peak:.0f} GFLOP/s ==")
        print(f"{'model':18s} {'opt':13s} {'batch':>5s} " +
              " ".join(f"{f + ' smp/s':>17s}" for f in frameworks) +
              " ".join(f"{'/' + f:>12s}" for f in rivals) +
              f" {'%fp32pk' if bf16 else '%peak':>7s}")
        with threads(nthreads, torch):
            for model, sizes in models.items():
                for opt_name in OPTIMIZERS:
                    check_same_loss(frameworks, torch, sizes, opt_name, X, y)
                    for batch in BATCHES:
                        nets = {name: make(name, torch, initial_weights(sizes), opt_name)
                                for name in frameworks}
                        per_round = time_rounds(nets, X, y, batch, rounds, steps)
                        rate = {f: batch / statistics.median(r[f] for r in per_round)
                                for f in frameworks}
                        ratio = {f: statistics.median(r[f] / r[base] for r in per_round)
                                 for f in rivals}
                        flops = step_flops(sizes, batch) * rate[base] / batch
                        share = flops / 1e9 / peak if peak else None
                        row = {"model": model, "optimizer": opt_name, "batch": batch,
                               "threads": nthreads, "rounds": rounds,
                               "samples_per_s": rate, "share_of_peak": share,
                               "vs": ratio, "vs_torch": ratio.get("torch"),
                               "vs_numpy": ratio.get("numpy")}
                        if args.memory:
                            row["peak_mib"] = {f: peak_memory_mb(f, model, batch, opt_name, nthreads)
                                               for f in frameworks}
                        rows.append(row)
                        print(f"{model:18s} {opt_name:13s} {batch:5d} " +
                              " ".join(f"{rate[f]:17,.0f}" for f in frameworks) +
                              " ".join(f"{ratio[f]:12.2f}" for f in rivals) +
                              f" {100 * (share or 0):6.0f}%"
                              + (f"  MiB {row['peak_mib']}" if args.memory else ""), flush=True)
    extra = {"precision": args.precision, "bf16_path": _C.bf16_path()} if bf16 else {}
    path = write_json("mlp-bf16" if bf16 else "mlp", {"rows": rows, **extra})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
