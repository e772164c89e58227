"""The simple network made wider and deeper, on mnist-5k.

Start from 784-32-10 (one hidden layer of 32 ReLU units) and grow it wider (128, 512
units), deeper (2 and 4 hidden layers of 128) or both (512-512). Parameters grow fast
with width (the first layer alone has 784 x width weights), test accuracy slowly: past
~100k parameters the training score is ~100% and extra capacity buys little on 4,000
images. Every variant trains alike (Adam, lr 1e-3, batches of 32, same data order).

    python examples/04_deeper_wider_mnist5k.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn import nn, optim
from _common import example_parser, label_points, positive_int, print_table

VARIANTS = {  # name -> hidden layer widths
    "784-32-10": (32,),
    "784-128-10": (128,),
    "784-512-10": (512,),
    "784-128-128-10": (128, 128),
    "784-128-128-128-128-10": (128, 128, 128, 128),
    "784-512-512-10": (512, 512),
}


def parse_args() -> argparse.Namespace:
    p = example_parser(__doc__, quick="a few seconds: fewer epochs and samples",
                       seed="data split, initial weights, shuffling")
    p.add_argument("--epochs", type=positive_int, default=None, help="default 20 (--quick: 2)")
    return p.parse_args()


def build(hidden: tuple[int, ...]) -> nn.Sequential:
    layers, width = [], 784
    for units in hidden:
        layers.append(nn.Dense(width, units, activation="relu"))
        width = units
    layers.append(nn.Dense(width, 10))
    return nn.Sequential(*layers)


def main() -> None:
    args = parse_args()
    X_train, y_train, X_test, y_test = fnn.datasets.load("mnist-5k", seed=args.seed)
    epochs = args.epochs or (2 if args.quick else 20)
    if args.quick:
        X_train, y_train = X_train[:1000], y_train[:1000]

    rows, runs = [], {}
    for name, hidden in VARIANTS.items():
        fnn.seed(args.seed)
        model = build(hidden)
        model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3), metrics=["accuracy"])
        start = time.perf_counter()
        # The test set is only watched here (no choice is made from it), to draw the curves.
        history = model.fit(X_train, y_train, epochs=epochs, batch_size=32, seed=args.seed,
                            validation_data=(X_test, y_test), verbose=0)
        seconds = time.perf_counter() - start
        params = sum(p.size for p in model.parameters())
        train_acc = model.evaluate(X_train, y_train)["accuracy"]
        test_acc = history.history["val_accuracy"][-1]
        rows.append([name, len(hidden), f"{params:,}", f"{train_acc:.2%}", f"{test_acc:.2%}",
                     f"{train_acc - test_acc:+.2%}", f"{seconds:.2f}"])
        runs[name] = (params, test_acc, history)

    print(f"mnist-5k: {len(X_train)} training and {len(X_test)} test images, Adam (lr 1e-3), "
          f"batches of 32, {epochs} epochs\n")
    print("the largest variant:")
    build(VARIANTS["784-128-128-128-128-10"]).summary()
    print()
    print_table(["network", "hidden layers", "params", "train acc", "test acc", "gap",
                 "time (s)"], rows)
    best = max(runs, key=lambda k: runs[k][1])
    print(f"\nbest test accuracy: {best} ({runs[best][1]:.2%}); "
          f"parameters range from {min(r[0] for r in runs.values()):,} to "
          f"{max(r[0] for r in runs.values()):,}")

    from matplotlib.figure import Figure  # the Agg canvas: a PNG file, never a window
    from matplotlib.ticker import MaxNLocator, NullFormatter

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_curve, ax_params = fig.subplots(1, 2)
    for k, (name, (params, test_acc, history)) in enumerate(runs.items()):
        acc = history.history["val_accuracy"]
        ax_curve.plot(np.arange(1, len(acc) + 1), acc, marker=".", color=f"C{k}", label=name)
        ax_params.scatter(params, test_acc, color=f"C{k}", s=60, label=name)
    ax_curve.set_xlabel("epoch")
    ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_curve.set_title("test accuracy per epoch")
    ax_params.set_xscale("log")
    ax_params.xaxis.set_minor_formatter(NullFormatter())
    ax_params.set_xlabel("parameters (log scale)")
    ax_params.set_title("final test accuracy against size")
    for ax in (ax_curve, ax_params):
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    ax_curve.legend(fontsize="small")
    fig.suptitle(f"wider and deeper networks on mnist-5k ({len(X_train)} training images)")
    label_points(ax_params, [r[0] for r in runs.values()], [r[1] for r in runs.values()],
                 list(runs), colors=[f"C{k}" for k in range(len(runs))])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "deeper_wider_mnist5k.png"
    fig.savefig(path, dpi=100)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
