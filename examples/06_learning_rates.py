"""Learning rates compared: too small, about right, too large.

The learning rate scales every step of gradient descent. Too small, and the loss creeps
down; about right, and it falls fast; too large, and each step overshoots further until
the loss overflows (NaN): training diverges. experiments.compare runs every rate from the
same initial weights and batch order; the learning-rate range test (the loss while the
rate grows exponentially, in one short run) points at a good rate.

    python examples/06_learning_rates.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np

import fastnn as fnn
from fastnn import experiments, nn, optim, plot
from _common import example_parser, print_table

LRS = (0.001, 0.01, 0.1, 1.0)


def parse_args() -> argparse.Namespace:
    return example_parser(__doc__, quick="a few seconds: fewer epochs and samples",
                          seed="data split, initial weights, shuffling").parse_args()


def build() -> nn.Sequential:
    # Leaky ReLU: a too-large step then blows the activations up (with plain ReLU, units
    # may instead "die", output 0 for every input, and the loss stalls at chance).
    return nn.Sequential(nn.Dense(784, 128, activation="leaky_relu"),
                         nn.Dense(128, 128, activation="leaky_relu"),
                         nn.Dense(128, 10))


def verdict(run: experiments.Run, best: experiments.Run) -> str:
    if run.diverged:
        return "too large: the loss overflowed (diverged)"
    if run is best:
        return "about right: the best validation accuracy"
    if run.lr < best.lr:
        return "too small: slow progress"
    return "large: unstable"


class BatchLosses(fnn.callbacks.Callback):
    """The loss of every mini-batch."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_batch_end(self, batch, logs=None) -> None:
        self.losses.append(logs["loss"])


def first_epoch(data: tuple, lr: float, seed: int) -> list[float]:
    """The batch losses of one epoch at ``lr`` (same start as compare's runs), up to the
    first NaN/Inf."""
    fnn.seed(seed)
    model = build()
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=lr))
    losses = BatchLosses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "the loss became nan": expected
        model.fit(data[0], data[1], epochs=1, batch_size=32, seed=seed, verbose=0,
                  callbacks=[losses])
    finite = [v for v in losses.losses if math.isfinite(v)]
    return losses.losses[:len(finite) + 1]


def first_epoch_figure(batches: dict[float, list[float]], out: Path) -> Path:
    from matplotlib.figure import Figure  # the Agg canvas: a PNG file, never a window

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for k, (lr, losses) in enumerate(batches.items()):
        finite = [v for v in losses if math.isfinite(v)]
        ax.plot(np.arange(1, len(finite) + 1), finite, color=f"C{k}", lw=1, label=f"lr {lr:g}")
        if len(finite) < len(losses):  # mark where the loss became NaN/Inf
            ax.plot(len(finite), finite[-1], "x", color=f"C{k}", markersize=12, mew=3)
            ax.annotate("NaN", (len(finite), finite[-1]), textcoords="offset points",
                        xytext=(8, -4), color=f"C{k}")
    ax.set_yscale("log")
    ax.set_xlabel("update (first epoch)")
    ax.set_ylabel("batch loss")
    ax.set_title("first epoch, batch by batch: a too-large rate diverges")
    ax.grid(alpha=0.3)
    ax.legend()
    path = out / "learning_rates_first_epoch.png"
    fig.savefig(path, dpi=100)
    return path


def main() -> None:
    args = parse_args()
    X_train, y_train, X_val, y_val, _, _ = fnn.datasets.load("mnist-5k", validation=0.1,
                                                             seed=args.seed)
    epochs = 3 if args.quick else 20
    if args.quick:
        X_train, y_train = X_train[:1000], y_train[:1000]
    data = (X_train, y_train, X_val, y_val)

    args.out.mkdir(parents=True, exist_ok=True)
    print(f"mnist-5k: {len(X_train)} training, {len(X_val)} validation images; 784-128-128-10 "
          f"leaky-ReLU network, plain SGD, batches of 32, {epochs} epochs\n")
    result = experiments.compare(build, data, optimizers=["sgd"], lrs=LRS, batch_sizes=[32],
                                 epochs=epochs, seed=args.seed, target_accuracy=0.9,
                                 verbose=False, plot=str(args.out / "learning_rates.png"))
    print(result.table())

    finite = [r for r in result.runs if not r.diverged]
    best = max(finite, key=lambda r: r.best_val_accuracy or 0.0)
    print()
    print_table(["lr", "first loss", "last loss", "verdict"],
                [[f"{r.lr:g}", f"{r.history.history['loss'][0]:.4g}", f"{r.final_loss:.4g}",
                  verdict(r, best)] for r in result.runs])

    # The per-epoch curves cannot show a run that blows up within its first epoch: watch
    # every rate's first epoch batch by batch.
    batches = {lr: first_epoch(data, lr, args.seed) for lr in LRS}
    steps = batches[LRS[-1]]
    shown = " -> ".join(f"{v:.3g}" for v in steps) if len(steps) <= 8 else \
        " -> ".join(f"{v:.3g}" for v in steps[:4]) + " -> ... -> " + \
        " -> ".join(f"{v:.3g}" for v in steps[-4:])
    print(f"\nlr {LRS[-1]:g}, the first epoch's batch losses: {shown} "
          f"({'NaN/Inf' if not math.isfinite(steps[-1]) else 'finite'} after {len(steps)} "
          "updates): each step overshoots further")

    fnn.seed(args.seed)
    test = experiments.lr_range_test(build(), data, optimizer="sgd", start_lr=1e-4,
                                     end_lr=10.0, steps=80 if args.quick else 200,
                                     seed=args.seed)
    lowest = test.lrs[int(np.argmin(test.losses))]
    print(f"\nlearning-rate range test: {len(test.lrs)} mini-batch steps, lr from "
          f"{test.lrs[0]:.1e} up to {test.lrs[-1]:.2g}, where the loss blew up\n")
    print_table(["rule", "lr"], [
        ["steepest fall of the smoothed loss (fastnn's suggested_lr)", f"{test.suggested_lr:.3g}"],
        ["lowest loss / 10", f"{lowest / 10:.3g}"],
    ])
    paths = [args.out / "learning_rates.png", first_epoch_figure(batches, args.out),
             plot.lr_range(test, args.out / "lr_range_test.png").path]
    print("\nfigures: " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
