"""Convolutional training steps side by side: fastnn and PyTorch (CPU) in one process, on
the same data from the same weights.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_conv.py [--quick]

Models: LeNet-5 on 28x28x1 images, and a three-block VGG-style network (conv-BN-ReLU twice
then max-pool, 32/64/128 channels) on 32x32x3. A step is forward, softmax cross-entropy,
backward and an SGD-with-momentum update. The two frameworks first run 10 steps from the same
weights on the same batches, and their losses must agree (the same computation); then they
are timed in interleaved rounds, and the table reports median samples/s and the ratio. A
second table profiles fastnn's layers one by one: forward and backward GFLOP/s and the share
of the measured FMA peak. JSON goes to bench/results/.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fastnn
from fastnn import _C, losses, nn, optim
from fastnn.nn.module import Workspace
from common import (description, machine_line, thread_counts, threads, try_import_torch,
                    warn_openblas_env, write_json)

LR, MOMENTUM = 0.002, 0.9


def lenet() -> list:
    """(fastnn layers, input shape) of LeNet-5 (ReLU, max pooling)."""
    return [nn.Conv2d(1, 6, 5, padding=2, activation="relu"), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, activation="relu"), nn.MaxPool2d(2), nn.Flatten(),
            nn.Dense(400, 120, activation="relu"), nn.Dense(120, 84, activation="relu"),
            nn.Dense(84, 10)]


def vgg() -> list:
    layers = []
    cin = 3
    for cout in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.Flatten(), nn.Dense(128 * 4 * 4, 10)]


MODELS = {"lenet5": (lenet, (1, 28, 28)), "vgg3": (vgg, (3, 32, 32))}


def torch_twin(torch, model: nn.Sequential):
    """The same network in torch, with fastnn's weights (fused activations become layers)."""
    t = torch.nn
    layers = []
    full = model.state_dict()
    for i, layer in enumerate(model.layers):
        if isinstance(layer, nn.Conv2d):
            tl = t.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, bias=layer.bias is not None)
        elif isinstance(layer, nn.Dense):
            tl = t.Linear(layer.in_features, layer.out_features)
        elif isinstance(layer, nn.BatchNorm2d):
            tl = t.BatchNorm2d(layer.num_features)
        elif isinstance(layer, nn.MaxPool2d):
            tl = t.MaxPool2d(layer.kernel_size)
        elif isinstance(layer, nn.Flatten):
            tl = t.Flatten()
        elif isinstance(layer, nn.ReLU):
            tl = t.ReLU()
        else:
            raise TypeError(layer)
        state = {k.split(".", 1)[1]: torch.tensor(v) for k, v in full.items()
                 if k.split(".")[0] == str(i)}
        if state:
            tl.load_state_dict(state)
        layers.append(tl)
        if getattr(layer, "activation", "identity") == "relu":
            layers.append(t.ReLU())
    return t.Sequential(*layers)


class FastnnNet:
    def __init__(self, build, seed=0):
        fastnn.seed(seed)
        self.model = nn.Sequential(*build())
        self.opt = optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.loss_fn = losses.CrossEntropy()

    def step(self, x, y):
        loss = self.loss_fn(self.model(x), y)
        self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.opt.step()
        self.opt.zero_grad()
        return loss


class TorchNet:
    def __init__(self, torch, fnet: FastnnNet):
        self.torch = torch
        self.model = torch_twin(torch, fnet.model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def step(self, x, y):
        t = self.torch
        loss = self.loss_fn(self.model(t.from_numpy(x)), t.from_numpy(y))
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.opt.step()
        return loss.item()


def data(shape, n=1024, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, *shape), dtype=np.float32)
    y = np.argmax(X.reshape(n, -1)[:, :10] + 0.1 * rng.random((n, 10)), axis=1)
    return X, y


def batches(n, batch, count, seed):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, batch, replace=False) for _ in range(count)]


def check_same_loss(torch, build, X, y):
    """Ten steps from the same weights on the same batches: the first loss must agree to
    1e-5 (the same computation), the later ones to 1e-2 (float32 rounding, different in the
    two, is amplified by training: batch norm's a little more)."""
    f = FastnnNet(build)
    t = TorchNet(torch, f)
    for k, i in enumerate(batches(len(X), 32, 10, seed=3)):
        a, b = f.step(X[i], y[i]), t.step(X[i], y[i])
        tol = 1e-5 if k == 0 else 1e-2
        assert abs(a - b) <= tol * abs(b) + 1e-6, f"step {k}: fastnn loss {a}, torch {b}"


def time_rounds(nets, X, y, batch, rounds, steps):
    idx = batches(len(X), batch, steps + 3, seed=4)
    inputs = [(np.ascontiguousarray(X[i]), y[i]) for i in idx]
    for net in nets.values():
        for xb, yb in inputs[:3]:
            net.step(xb, yb)
    names = list(nets)
    per_round = []
    for r in range(rounds):
        times = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(0.25)
            samples = []
            for xb, yb in inputs[3:]:
                t0 = time.perf_counter()
                nets[name].step(xb, yb)
                samples.append(time.perf_counter() - t0)
            times[name] = statistics.median(samples)
        per_round.append(times)
    return per_round


def layer_flops(layer, in_shape) -> tuple[float, float]:
    """(forward, backward) flops of one layer for an input of in_shape: 2 per multiply-add;
    backward is the weight gradient and the input gradient."""
    out = layer.output_shape(in_shape)
    if isinstance(layer, nn.Conv2d):
        macs = np.prod(out) * layer.in_channels // layer.groups * np.prod(layer.kernel_size)
        return 2.0 * macs, 4.0 * macs
    if isinstance(layer, nn.Dense):
        macs = in_shape[0] * layer.in_features * layer.out_features
        return 2.0 * macs, 4.0 * macs
    return 0.0, 0.0


def profile_layers(build, shape, batch, reps=20):
    """fastnn's layers one at a time: median ms and GFLOP/s of forward and backward. Each of
    the `reps` rounds runs every layer once, in order, so that a slow spell of a shared machine
    falls on all the layers of a round rather than on the reps of one. The layers run as in a
    training step, their outputs and input gradients in a workspace made on the first round,
    and the output's gradient is made (and reset to ones) outside the timed backward: fresh
    16 MiB arrays, page faults and all, were about a tenth of a (32, 32)-channel layer's
    forward and backward at batch 128."""
    fastnn.seed(0)
    model = nn.Sequential(*build())
    x0 = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    workspace = Workspace()
    workspace.place(x0)
    fwd = [[] for _ in model.layers]
    bwd = [[] for _ in model.layers]
    shapes, grads = [], []
    for _ in range(reps):
        x = x0
        for i, layer in enumerate(model.layers):
            t0 = time.perf_counter()
            y = layer.forward_with(x, workspace.part(i), True)
            t1 = time.perf_counter()
            if len(grads) <= i:
                shapes.append(x.shape)
                grads.append(np.ones_like(y))
            else:
                grads[i].fill(1.0)
            workspace.reading(grads[i])
            t2 = time.perf_counter()
            layer.backward_with(grads[i], workspace.part(i), True, True)
            t3 = time.perf_counter()
            fwd[i].append(t1 - t0)
            bwd[i].append(t3 - t2)
            x = y
    rows = []
    for i, layer in enumerate(model.layers):
        ff, bf = layer_flops(layer, shapes[i])
        tf, tb = statistics.median(fwd[i]), statistics.median(bwd[i])
        rows.append({"layer": repr(layer), "in_shape": list(shapes[i]), "forward_ms": 1e3 * tf,
                     "backward_ms": 1e3 * tb, "forward_gflops": ff / tf / 1e9,
                     "backward_gflops": bf / tb / 1e9})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__))
    p.add_argument("--quick", action="store_true", help="batch 32 only, fewer rounds")
    p.add_argument("--threads", type=thread_counts, default=[1, 2], help="e.g. 1,2")
    args = p.parse_args(argv)
    warn_openblas_env()
    torch = try_import_torch()
    if torch is None:
        print("PyTorch is not installed: pip install torch==2.13.0")
        return 1
    print(machine_line())
    batches_ = [32] if args.quick else [32, 128]
    rounds, steps = (7, 5) if args.quick else (7, 8)  # rounds interleaved: medians of 7
    rows, layers = [], []
    for nthreads in args.threads:
        peak = _C.fma_peak_gflops(nthreads, 0.3)
        print(f"\n== {nthreads} thread(s); measured FMA peak {peak:.0f} GFLOP/s ==")
        print(f"{'model':8s} {'batch':>5s} {'fastnn smp/s':>13s} {'torch smp/s':>12s} {'/torch':>7s}")
        with threads(nthreads, torch):
            for name, (build, shape) in MODELS.items():
                X, y = data(shape)
                check_same_loss(torch, build, X, y)
                for batch in batches_:
                    f = FastnnNet(build)
                    nets = {"fastnn": f, "torch": TorchNet(torch, f)}
                    per_round = time_rounds(nets, X, y, batch, rounds, steps)
                    rate = {k: batch / statistics.median(r[k] for r in per_round) for k in nets}
                    ratio = statistics.median(r["torch"] / r["fastnn"] for r in per_round)
                    rows.append({"model": name, "batch": batch, "threads": nthreads,
                                 "samples_per_s": rate, "vs_torch": ratio})
                    print(f"{name:8s} {batch:5d} {rate['fastnn']:13,.0f} {rate['torch']:12,.0f} "
                          f"{ratio:7.2f}", flush=True)
                for batch in batches_:
                    prof = profile_layers(build, shape, batch)
                    for r in prof:
                        r.update(model=name, batch=batch, threads=nthreads,
                                 forward_share=r["forward_gflops"] / peak,
                                 backward_share=r["backward_gflops"] / peak)
                    layers += prof
        print(f"\nfastnn per layer ({nthreads} thread(s)): forward / backward ms, GFLOP/s, % of peak")
        for r in (r for r in layers if r["threads"] == nthreads):
            if r["forward_gflops"] > 0:
                print(f"  {r['model']:6s} b{r['batch']:<4d} {r['layer'][:46]:46s} "
                      f"{r['forward_ms']:7.3f} / {r['backward_ms']:7.3f} ms  "
                      f"{r['forward_gflops']:6.1f} / {r['backward_gflops']:6.1f} GFLOP/s  "
                      f"{100 * r['forward_share']:3.0f}% / {100 * r['backward_share']:3.0f}%")
    path = write_json("conv", {"rows": rows, "layers": layers})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
