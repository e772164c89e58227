"""fastnn on the GPU against PyTorch on the same GPU: the training step of an MLP with Adam
(784-512-256-10 at batch 128, 1024 and 8192; 784-4096-4096-10 at 8192), fastnn's against
PyTorch eager and torch.compile(mode="reduce-overhead"), and LeNet-5's at batch 128 against
PyTorch eager, from the same weights on the same batches, the first losses checked to agree
before anything is timed; and the GEMM (and fastnn's own tiled SGEMM) against cuBLAS through
torch.matmul, squares 1024-8192.

fastnn's step is timed twice: "fastnn" is the step fit(device="cuda") runs (a Sequential of
Dense layers moved to the GPU: its forward and backward, the loss, Adam, the batch gathered on
the device, the labels copied over and the loss read back each step); "fastnn ops" is the same
step written with the device ops of fastnn._C directly. Neither is captured as a CUDA graph yet.

    python bench/bench_gpu.py [--rounds 5] [--quick]

Needs fastnn's CUDA build, a GPU and PyTorch with CUDA; prints why not otherwise (exit 2).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import description, machine_line, positive_int, torch_mlp, try_import_torch, write_json  # noqa: E402

import fastnn  # noqa: E402
from fastnn import _C  # noqa: E402

MODELS = [("784-512-256-10", 128), ("784-512-256-10", 1024), ("784-512-256-10", 8192),
          ("784-4096-4096-10", 8192)]
SQUARES = [1024, 2048, 4096, 8192]
REFERENCE_UP_TO = 8192
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)


def why_not() -> str:
    """Why this machine cannot run the bench ('' when it can)."""
    cuda = fastnn.config()["cuda"]
    if not cuda["available"]:
        return f"fastnn's CUDA is not usable here: {cuda['reason']}"
    torch = try_import_torch()
    if torch is None or not torch.cuda.is_available():
        return "PyTorch with CUDA is needed for the comparison (torch.cuda.is_available() is False)"
    return ""


def gpu_seconds(sync, fn, calls: int) -> float:
    """Seconds per call of fn over `calls` calls, the GPU drained (sync) before and after."""
    sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - t0) / calls


def interleaved_gpu(sync, fns: dict, rounds: int, min_seconds: float = 0.3) -> tuple[dict, list]:
    """Each framework once per round, interleaved; calls per sample calibrated first."""
    calls = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn()
        calls[name] = max(3, int(min_seconds / rounds / max(gpu_seconds(sync, fn, 3), 1e-7)))
    per_round = [{name: gpu_seconds(sync, fn, calls[name]) for name, fn in fns.items()}
                 for _ in range(rounds)]
    return {n: statistics.median(r[n] for r in per_round) for n in fns}, per_round


def initial_weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((o, i)) * np.sqrt(2.0 / i)).astype(np.float32), np.zeros(o, np.float32))
            for i, o in zip(sizes[:-1], sizes[1:])]


class FastnnModelStep:
    """One step of fit's loop on the GPU (train._train_epoch's body) with Adam: for a ReLU MLP
    holding `weights`, or for `model` (a fastnn Sequential)."""

    def __init__(self, weights, device="cuda", model=None):
        from fastnn import nn

        if model is None:
            last = len(weights) - 1
            layers = []
            for k, (w, b) in enumerate(weights):
                layer = nn.Dense(w.shape[1], w.shape[0], None if k == last else "relu")
                layer.weight.data[...], layer.bias.data[...] = w, b
                layers.append(layer)
            model = nn.Sequential(*layers)
        self.model = model
        self.model.compile(loss="cross_entropy", optimizer=fastnn.optim.Adam(
            lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"]))
        if device == "cpu":  # the tests' check against PyTorch: the device path on host memory
            from fastnn.nn.module import place
            from fastnn.tensor import Tensor

            place(self.model, Tensor(_C.DeviceArray.empty([0], "float32", "cpu")))
        else:
            self.model.to(device)
        self.cfg, self.batch = self.model.compiled, None

    def __call__(self, X, y, idx) -> float:
        if self.batch is None or len(self.batch) != len(idx):
            self.batch = fastnn.memory.empty((len(idx), *X.shape[1:]), like=X)
        xb = _C.gather_rows(X, idx, out=self.batch)
        loss = self.cfg.loss(self.model(xb), y[idx])
        self.model.backward(self.cfg.loss.backward(), input_grad=False)
        self.cfg.optimizer.step()
        self.cfg.optimizer.zero_grad()
        return loss


class FastnnStep:
    """One Adam training step of a ReLU MLP from fastnn's device ops: the batch gathered on the
    device, its labels copied over, the bias gradients' zeros copied over. On "cpu" the same
    calls run on NumPy arrays (what tests/test_bench_scripts.py checks against PyTorch)."""

    def __init__(self, weights, device="cuda"):
        self.device = device
        self.params = []
        for w, b in weights:
            self.params += [fastnn.asarray(w, device=device), fastnn.asarray(b, device=device)]
        self.state = [[fastnn.asarray(np.zeros(p.shape, np.float32), device=device) for _ in range(2)]
                      for p in self.params]
        self.bias_sizes = [b.size for _, b in weights]
        self.count = 0

    def __call__(self, X, y, idx) -> float:
        layers = len(self.params) // 2
        acts = [_C.gather_rows(X, idx)]
        for k in range(layers):
            acts.append(_C.gemm(acts[-1], self.params[2 * k], transpose_b=True, bias=self.params[2 * k + 1],
                                activation="identity" if k == layers - 1 else "relu"))
        loss, g = _C.cross_entropy(acts[-1], fastnn.asarray(y[idx], device=self.device))
        grads = [None] * len(self.params)
        for k in reversed(range(layers)):
            db = fastnn.asarray(np.zeros(self.bias_sizes[k], np.float32), device=self.device)
            g = _C.activation_backward("identity" if k == layers - 1 else "relu", acts[k + 1], g, bias_grad=db)
            grads[2 * k], grads[2 * k + 1] = _C.gemm(g, acts[k], transpose_a=True), db
            if k:
                g = _C.gemm(g, self.params[2 * k])
        self.count += 1
        for p, grad, (m, v) in zip(self.params, grads, self.state):
            _C.adam_step(p, grad, m, v, **ADAM, step=self.count)
        return loss


def torch_step(torch, weights, compiled: bool, device: str = "cuda"):
    model = torch_mlp(torch, weights, device)
    opt = torch.optim.Adam(model.parameters(), lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]),
                           eps=ADAM["eps"], capturable=compiled)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    return torch.compile(step, mode="reduce-overhead") if compiled else step


def bench_mlp(torch, name, batch, rounds, steps_data=64, device="cuda", compile_too=True):
    sizes = [int(s) for s in name.split("-")]
    rng = np.random.default_rng(1)
    n = batch * steps_data
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n)
    order = [rng.permutation(n)[:batch] for _ in range(steps_data)]
    weights = initial_weights(sizes)
    Xd = fastnn.asarray(X, device=device)
    Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    idx_t = [torch.from_numpy(i).to(device) for i in order]
    model, ops = FastnnModelStep(weights, device), FastnnStep(weights, device)
    Xm = Xd
    if device == "cpu":  # the model's step on the device path (host memory), the ops' on NumPy
        from fastnn.tensor import Tensor

        Xm = Tensor(_C.DeviceArray.from_numpy(X, "cpu"))
    eager = torch_step(torch, weights, compiled=False, device=device)
    runs = {"fastnn": lambda i: model(Xm, y, order[i]), "fastnn ops": lambda i: ops(Xd, y, order[i]),
            "torch": lambda i: eager(Xt[idx_t[i]], yt[idx_t[i]])}
    if compile_too:
        compiled = torch_step(torch, weights, compiled=True, device=device)
        runs["torch.compile"] = lambda i: compiled(Xt[idx_t[i]], yt[idx_t[i]])
    first = {k: float(fn(0)) for k, fn in runs.items()}  # the same first batch, the same weights
    for k, v in first.items():
        if abs(v - first["torch"]) > 1e-3 * max(1.0, abs(first["torch"])):
            raise ValueError(f"{name} b{batch}: first losses differ: {first}")
    counters = {k: iter(range(1, 10**9)) for k in runs}
    fns = {k: (lambda k=k: runs[k](next(counters[k]) % steps_data)) for k in runs}
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    medians, per_round = interleaved_gpu(sync, fns, rounds)
    row = {"model": name, "batch": batch, "first_losses": first,
           **{f"{k}_samples_per_s": batch / t for k, t in medians.items()},
           "vs_torch": statistics.median(r["torch"] / r["fastnn"] for r in per_round),
           "ops_vs_torch": statistics.median(r["torch"] / r["fastnn ops"] for r in per_round)}
    if "torch.compile" in medians:
        row["vs_torch_compile"] = statistics.median(r["torch.compile"] / r["fastnn"] for r in per_round)
    return row


def lenet(torch, device):
    """LeNet-5 on 28x28x1 (padding 2 on the first conv), fastnn's and torch's with torch's initial
    weights in both."""
    from fastnn import nn

    t = torch.nn
    theirs = t.Sequential(t.Conv2d(1, 6, 5, padding=2), t.ReLU(), t.MaxPool2d(2), t.Conv2d(6, 16, 5), t.ReLU(),
                          t.MaxPool2d(2), t.Flatten(), t.Linear(400, 120), t.ReLU(), t.Linear(120, 84), t.ReLU(),
                          t.Linear(84, 10))
    ours = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2, activation="relu"), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5, activation="relu"), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dense(400, 120, "relu"), nn.Dense(120, 84, "relu"), nn.Dense(84, 10))
    for p, q in zip(ours.parameters(), theirs.parameters()):
        p.data[...] = q.detach().numpy()
    return ours, theirs.to(device)


def bench_cnn(torch, batch, rounds, steps_data=32, device="cuda"):
    """fit's step for LeNet-5 with Adam against PyTorch eager's, the same weights and batches."""
    rng = np.random.default_rng(3)
    n = batch * steps_data
    X = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    order = [rng.permutation(n)[:batch] for _ in range(steps_data)]
    ours, theirs = lenet(torch, device)
    model = FastnnModelStep(None, device, model=ours)
    Xm = fastnn.asarray(X, device=device) if device != "cpu" else None
    if device == "cpu":  # the device path in host memory, for the tests
        from fastnn.tensor import Tensor

        Xm = Tensor(_C.DeviceArray.from_numpy(X, "cpu"))
    opt = torch.optim.Adam(theirs.parameters(), lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"])
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    idx_t = [torch.from_numpy(i).to(device) for i in order]

    def eager(i):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(theirs(Xt[idx_t[i]]), yt[idx_t[i]])
        loss.backward()
        opt.step()
        return loss.detach()

    runs = {"fastnn": lambda i: model(Xm, y, order[i]), "torch": eager}
    first = {k: float(fn(0)) for k, fn in runs.items()}
    if abs(first["fastnn"] - first["torch"]) > 1e-3 * max(1.0, abs(first["torch"])):
        raise ValueError(f"LeNet-5 b{batch}: first losses differ: {first}")
    counters = {k: iter(range(1, 10**9)) for k in runs}
    fns = {k: (lambda k=k: runs[k](next(counters[k]) % steps_data)) for k in runs}
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    medians, per_round = interleaved_gpu(sync, fns, rounds)
    return {"model": "LeNet-5", "batch": batch, "first_losses": first,
            **{f"{k}_samples_per_s": batch / t for k, t in medians.items()},
            "vs_torch": statistics.median(r["torch"] / r["fastnn"] for r in per_round)}


def bench_gemm(torch, size, rounds):
    rng = np.random.default_rng(size)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    da, db = fastnn.asarray(a, device="cuda"), fastnn.asarray(b, device="cuda")
    dc = fastnn.asarray(np.zeros((size, size), np.float32), device="cuda")
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    tc = torch.empty((size, size), device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32
    fns = {"fastnn": lambda: _C.gemm(da, db, dc), "cublas": lambda: torch.matmul(ta, tb, out=tc)}
    if size <= REFERENCE_UP_TO:  # fastnn's own tiled SGEMM, the readable reference
        fns["reference"] = lambda: _C.gemm_reference(da, db, dc)
    medians, per_round = interleaved_gpu(torch.cuda.synchronize, fns, rounds)
    flops = 2.0 * size ** 3
    row = {"size": size, "fastnn_tflops": flops / medians["fastnn"] / 1e12,
           "cublas_tflops": flops / medians["cublas"] / 1e12,
           "vs_cublas": statistics.median(r["cublas"] / r["fastnn"] for r in per_round)}
    if "reference" in medians:
        row["reference_tflops"] = flops / medians["reference"] / 1e12
        row["reference_vs_cublas"] = statistics.median(r["cublas"] / r["reference"] for r in per_round)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--quick", action="store_true", help="the smallest model and square only")
    args = parser.parse_args(argv)
    print(machine_line())
    reason = why_not()
    if reason:
        print(f"bench_gpu: {reason}", file=sys.stderr)
        return 2
    torch = try_import_torch()
    print(f"GPU: {fastnn.config()['cuda']['device']}; torch {torch.__version__}")
    models = MODELS[:1] if args.quick else MODELS
    squares = SQUARES[:1] if args.quick else SQUARES
    rows = []
    print(f"\n{'model':18s} {'batch':>6s} {'fastnn':>12s} {'fastnn ops':>12s} {'torch':>12s} {'compile':>12s} "
          f"{'/torch':>7s} {'/compile':>9s} {'ops/torch':>10s}   (samples/s)")
    for name, batch in models:
        try:
            r = bench_mlp(torch, name, batch, args.rounds)
        except Exception as e:  # one failing configuration must not hide the others' numbers
            print(f"{name:18s} {batch:6d} failed: {type(e).__name__}: {e}")
            rows.append({"model": name, "batch": batch, "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append(r)
        print(f"{name:18s} {batch:6d} {r['fastnn_samples_per_s']:12,.0f} {r['fastnn ops_samples_per_s']:12,.0f} "
              f"{r['torch_samples_per_s']:12,.0f} {r.get('torch.compile_samples_per_s', float('nan')):12,.0f} "
              f"{r['vs_torch']:6.2f}x {r.get('vs_torch_compile', float('nan')):8.2f}x {r['ops_vs_torch']:9.2f}x")
    print(f"\n{'model':18s} {'batch':>6s} {'fastnn':>12s} {'torch':>12s} {'/torch':>7s}   (samples/s)")
    try:
        cnn = bench_cnn(torch, 128, args.rounds)
        print(f"{'LeNet-5':18s} {128:6d} {cnn['fastnn_samples_per_s']:12,.0f} {cnn['torch_samples_per_s']:12,.0f} "
              f"{cnn['vs_torch']:6.2f}x")
    except Exception as e:  # its numbers are one row: the others stand without them
        print(f"{'LeNet-5':18s} {128:6d} failed: {type(e).__name__}: {e}")
        cnn = {"model": "LeNet-5", "batch": 128, "error": f"{type(e).__name__}: {e}"}
    rows.append(cnn)
    gemms = []
    print(f"\n{'square':>6s} {'fastnn TFLOP/s':>15s} {'cuBLAS (torch)':>15s} {'ratio':>6s} {'reference':>10s} {'ratio':>6s}")
    for size in squares:
        g = bench_gemm(torch, size, args.rounds)
        gemms.append(g)
        print(f"{size:6d} {g['fastnn_tflops']:15.1f} {g['cublas_tflops']:15.1f} {g['vs_cublas']:5.2f}x "
              f"{g.get('reference_tflops', float('nan')):10.2f} {g.get('reference_vs_cublas', float('nan')):5.3f}x")
    path = write_json("gpu", {"gpu": fastnn.config()["cuda"], "torch": torch.__version__, "mlp": rows,
                              "gemm": gemms, "rounds": args.rounds})
    print(f"\nwrote {path}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
