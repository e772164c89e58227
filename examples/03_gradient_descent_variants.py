"""Batch, stochastic and mini-batch gradient descent.

The update is the same, w -= lr * gradient; only the number of samples behind each
gradient changes. Batch GD (batch_size=None) averages the whole training set: one smooth
but expensive update per epoch. Stochastic GD (batch_size=1) updates after every sample:
many cheap, noisy updates. Mini-batch GD (batch_size=32) sits in between and makes the
best use of the vectorised kernels. Same data, initial weights, order and learning rate.

    python examples/03_gradient_descent_variants.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn import nn, optim
from _common import example_parser, learning_rate, print_table

VARIANTS = {"batch GD": None, "stochastic GD": 1, "mini-batch GD": 32}


def parse_args() -> argparse.Namespace:
    p = example_parser(__doc__, quick="a few seconds: fewer epochs and samples",
                       seed="initial weights and shuffling")
    p.add_argument("--lr", type=learning_rate, default=0.05, help="the learning rate of every variant")
    return p.parse_args()


class Recorder(fnn.callbacks.Callback):
    """After every epoch: the loss over the whole training set (with the weights at the end
    of the epoch) and the training time so far, the time of that evaluation left out;
    after every update: the loss of its batch. ``updates``, ``samples`` and ``trained``
    (seconds) count every update run, those of an epoch fit stopped on a NaN/Inf loss
    included (it calls no on_epoch_end for that epoch)."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        super().__init__()
        self.X, self.y = X, y
        self.seconds, self.losses, self.batch_losses = [0.0], [], []
        self.updates, self.samples, self.trained = 0, 0, 0.0

    def on_train_begin(self, logs=None) -> None:
        self.losses.append(self.model.evaluate(self.X, self.y)["loss"])  # the starting point

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.epoch, self.done, self.start = epoch, 0, time.perf_counter()

    def on_batch_end(self, batch, logs=None) -> None:
        self.trained = self.seconds[-1] + time.perf_counter() - self.start
        self.done += logs["size"]
        self.updates += 1
        self.samples += logs["size"]
        self.batch_losses.append((self.epoch + self.done / len(self.X), logs["loss"]))

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(self.trained)
        self.losses.append(self.model.evaluate(self.X, self.y)["loss"])


def main() -> None:
    args = parse_args()
    X_train, y_train, X_test, y_test = fnn.datasets.load("mnist-5k", seed=args.seed)
    epochs = 3 if args.quick else 20
    if args.quick:
        X_train, y_train = X_train[:1000], y_train[:1000]

    rows, records, stopped = [], {}, {}
    for name, batch_size in VARIANTS.items():
        fnn.seed(args.seed)  # the same initial weights for every variant
        model = nn.Sequential(nn.Dense(784, 64, activation="relu"), nn.Dense(64, 10))
        model.compile(loss="cross_entropy", optimizer=optim.GD(lr=args.lr), metrics=["accuracy"])
        rec = Recorder(X_train, y_train)
        history = model.fit(X_train, y_train, epochs=epochs, batch_size=batch_size,
                            seed=args.seed, verbose=0, callbacks=[rec])
        train_loss = rec.losses[-1]
        if history.stop_reason is not None:  # fit stopped on a NaN/Inf loss or weights
            # rec.losses ends before the epoch that broke: fit's own loss of that epoch
            train_loss = history.history["loss"][-1]
            stopped[name] = len(history.history["loss"])
        updates = 1 if batch_size is None else -(-len(X_train) // batch_size)
        test_acc = model.evaluate(X_test, y_test)["accuracy"]
        # the rates of the updates run: a stopped variant ran fewer than planned
        rows.append([name, "all" if batch_size is None else batch_size, updates,
                     rec.updates, f"{train_loss:.4f}", f"{test_acc:.2%}",
                     f"{rec.trained:.2f}", f"{1e6 * rec.trained / rec.updates:.0f}",
                     f"{rec.samples / rec.trained:,.0f}"])
        records[name] = rec

    print(f"mnist-5k: {len(X_train)} training images, 784-64-10 ReLU network, plain gradient "
          f"descent (lr {args.lr}), {epochs} epochs, same initial weights\n")
    print_table(["variant", "batch", "updates/epoch", "updates", "train loss", "test acc",
                 "time (s)", "us/update", "samples/s"], rows)
    diverged = [name for name, rec in records.items() if name in stopped
                or not np.isfinite(rec.losses[-1]) or rec.losses[-1] > rec.losses[0]]
    if diverged:  # the lesson below is about variants that learn
        print()
        for name, epoch in stopped.items():
            print(f"{name}: the loss or the weights became NaN/Inf in epoch {epoch} of "
                  f"{epochs}; fit stopped there (its updates, time and rates are those run)")
        print(f"at lr {args.lr}, {', '.join(diverged)} diverged (the loss ended above where "
              "it began, or not a number): a smaller --lr compares the variants.")
    else:
        print("\nper epoch, more updates learn more; per second, mini-batches win: batch GD "
              "updates rarely,\nstochastic GD pays the per-update overhead for every sample "
              "and its gradient is noisy.")

    from matplotlib.figure import Figure  # the Agg canvas: a PNG file, never a window

    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax_epoch, ax_time, ax_noise = fig.subplots(1, 3)
    for k, (name, rec) in enumerate(records.items()):
        ax_epoch.plot(np.arange(len(rec.losses)), rec.losses, marker=".", label=name)
        ax_time.plot(rec.seconds[1:], rec.losses[1:], marker=".", label=name)
        shown = [(e, v) for e, v in rec.batch_losses if e <= 1.0]  # the first epoch
        style = {"linestyle": "none", "marker": ".", "markersize": 3, "alpha": 0.4, "zorder": 1} \
            if VARIANTS[name] == 1 else {"marker": "o", "markersize": 4, "zorder": 2}
        ax_noise.plot(*zip(*shown), color=f"C{k}", label=name, **style)
    ax_epoch.set_xlabel("epoch")
    ax_time.set_xscale("log")
    ax_time.set_xlabel("training time (s, log scale; one point per epoch)")
    ax_noise.set_xlabel("epoch (first epoch, one point per update)")
    ax_epoch.set_title("training-set loss per epoch")
    ax_time.set_title("training-set loss against wall time")
    ax_noise.set_title("loss of each update's batch")
    for ax in (ax_epoch, ax_time, ax_noise):
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gradient_descent_variants.png"
    fig.savefig(path, dpi=100)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
