"""Peak memory of training on Fashion-MNIST: fastnn's fit against the same model trained by
PyTorch, each in a fresh process, as the peak RSS during training above the RSS just
before it (the peak is reset after imports and data loading, so the dataset itself, the
same for both, is not counted; the model, its optimizer state and the training are). Linux only (/proc/self/clear_refs).

    python bench/bench_memory.py [--epochs 1] [--batch 128] [--hidden 512,256]
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> float:
    """Reset the peak RSS (Linux: clear_refs 5) and return the current RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def peak_mib() -> float:
    return _status_mib("VmHWM")


def probe(framework: str, epochs: int, batch: int, hidden: list[int]) -> None:
    import fastnn
    X, y, _, _ = fastnn.datasets.load("fashion-mnist")
    sizes = [784, *hidden, 10]
    if framework == "torch":
        import torch  # imported before the reset: only the model and the training count
    base = reset_peak()
    if framework == "torch":
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        layers = []
        for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(i, o))
            if k < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            order = torch.randperm(len(Xt))
            for s in range(0, len(Xt), batch):
                idx = order[s:s + batch]
                loss = loss_fn(model(Xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    else:
        layers = [fastnn.nn.Dense(i, o, activation="relu" if k < len(sizes) - 2 else None)
                  for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:]))]
        model = fastnn.nn.Sequential(*layers)
        model.compile(loss="cross_entropy", optimizer=fastnn.optim.Adam(lr=1e-3),
                      metrics=["accuracy"])
        model.fit(X, y, epochs=epochs, batch_size=batch, verbose=0)
    print(peak_mib() - base)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", default="512,256")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        hidden = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        hidden = [0]
    if min(hidden) < 1:  # usage errors here, not a probe's traceback
        p.error(f"argument --hidden: expected sizes >= 1 such as 512,256; got {args.hidden!r}")
    for name in ("epochs", "batch"):
        if getattr(args, name) < 1:
            p.error(f"argument --{name}: expected an integer >= 1; got {getattr(args, name)}")
    if args.probe:
        probe(args.probe, args.epochs, args.batch, hidden)
        return 0
    from common import machine_line, write_json  # not in the probes: they measure one framework

    print(machine_line())
    print(f"Fashion-MNIST, 784-{args.hidden}-10, Adam, batch {args.batch}, {args.epochs} epoch(s)")
    results = {}
    for framework in ("fastnn", "torch"):
        runs = []
        for _ in range(3):
            out = subprocess.run([sys.executable, __file__, "--probe", framework, "--epochs",
                                  str(args.epochs), "--batch", str(args.batch), "--hidden",
                                  args.hidden], capture_output=True, text=True, check=True)
            runs.append(float(out.stdout.strip().splitlines()[-1]))
        results[framework] = float(np.median(runs))
        print(f"{framework:7s} peak RSS growth during training: {results[framework]:7.1f} MiB "
              f"(median of 3 processes)")
    print(f"fastnn / torch: {results['fastnn'] / results['torch']:.2f}")
    print(f"wrote {write_json('memory', {'args': vars(args), 'peak_rss_growth_mib': results})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
