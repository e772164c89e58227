"""Overfitting and its cures: L2, dropout, data augmentation.

With 500 training images a 784-256-256-10 network learns them by heart: training loss
~0 and 100% accuracy, while the validation loss stalls and climbs; the gap is overfitting.
L2 (a penalty on large weights) and dropout (random units off in training) make
memorising harder; augmentation (random shifts and rotations, new every epoch) makes new
data out of the old and closes the gap most. Curves are measured in evaluation mode.

    python examples/09_overfitting_cures.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse

import numpy as np

import fastnn as fnn
from fastnn import data, losses, metrics, nn, optim
from _common import example_parser, print_table

N_TRAIN, N_VAL = 500, 1000
VARIANTS = {  # name -> (l2, dropout (input, hidden), augmentation)
    "no regularisation": (0.0, (0.0, 0.0), False),
    "L2 (5e-3)": (5e-3, (0.0, 0.0), False),
    "dropout (0.2, 0.5)": (0.0, (0.2, 0.5), False),
    "augmentation": (0.0, (0.0, 0.0), True),
    "all three": (5e-3, (0.2, 0.5), True),
}


def parse_args() -> argparse.Namespace:
    return example_parser(__doc__, quick="a few seconds: fewer epochs",
                          seed="data split, initial weights, shuffling").parse_args()


def build(l2: float, dropout: tuple[float, float]) -> nn.Sequential:
    p_in, p_hidden = dropout
    layers: list[nn.Module] = [nn.Dropout(p_in)] if p_in else []
    for width_in, width_out in ((784, 256), (256, 256)):
        layers.append(nn.Dense(width_in, width_out, activation="relu", l2=l2))
        if p_hidden:
            layers.append(nn.Dropout(p_hidden))
    layers.append(nn.Dense(256, 10, l2=l2))
    return nn.Sequential(*layers)


class Curves(fnn.callbacks.Callback):
    """After every epoch, in evaluation mode (no dropout, no augmentation): cross-entropy
    (without the L2 penalty, so that all variants compare) and accuracy, on the training
    and on the validation set."""

    def __init__(self, train: tuple, val: tuple) -> None:
        super().__init__()
        self.sets = {"train": train, "val": val}
        self.values: dict[str, list[float]] = {f"{s}_{m}": [] for s in self.sets
                                               for m in ("loss", "accuracy")}
        self.loss = losses.CrossEntropy()

    def on_epoch_end(self, epoch, logs=None) -> None:
        for name, (X, y) in self.sets.items():
            logits = self.model.predict(X)
            self.values[f"{name}_loss"].append(self.loss(logits, y))
            self.values[f"{name}_accuracy"].append(metrics.accuracy(y, logits))


def main() -> None:
    args = parse_args()
    X, y, _, _ = fnn.datasets.load("mnist-5k", seed=args.seed)  # already shuffled by the seed
    train = X[:N_TRAIN], y[:N_TRAIN]
    val = X[N_TRAIN:N_TRAIN + N_VAL], y[N_TRAIN:N_TRAIN + N_VAL]
    epochs = 10 if args.quick else 60

    print(f"mnist-5k: {N_TRAIN} training images (of 4,000), {N_VAL} validation images; "
          f"784-256-256-10 ReLU network, SGD with momentum 0.9 (lr 0.01), batches of 32, "
          f"{epochs} epochs\n")
    rows, curves = [], {}
    for name, (l2, dropout, augment) in VARIANTS.items():
        fnn.seed(args.seed)  # the same initial weights for every variant
        model = build(l2, dropout)
        model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.01, momentum=0.9))
        recorder = Curves(train, val)
        aug = data.Augment((28, 28), max_shift=2, max_rotation=10, seed=args.seed) if augment \
            else None
        model.fit(*train, epochs=epochs, batch_size=32, seed=args.seed, verbose=0,
                  augment=aug, callbacks=[recorder])
        v = recorder.values
        rows.append([name, f"{v['train_accuracy'][-1]:.2%}", f"{v['val_accuracy'][-1]:.2%}",
                     f"{v['train_accuracy'][-1] - v['val_accuracy'][-1]:+.2%}",
                     f"{v['train_loss'][-1]:.4f}", f"{v['val_loss'][-1]:.4f}",
                     f"{v['val_loss'][-1] - v['train_loss'][-1]:+.4f}",
                     f"{min(v['val_loss']):.4f} @{int(np.argmin(v['val_loss'])) + 1}"])
        curves[name] = v

    print_table(["variant", "train acc", "val acc", "acc gap", "train loss", "val loss",
                 "loss gap", "best val loss @epoch"], rows)
    gaps = {name: c["val_loss"][-1] - c["train_loss"][-1] for name, c in curves.items()}
    best = max(curves, key=lambda name: curves[name]["val_accuracy"][-1])
    print(f"\nfinal train-validation loss gap: {gaps['no regularisation']:.3f} without "
          f"regularisation, smallest with {min(gaps, key=gaps.get)} ({min(gaps.values()):.3f});"
          f"\nhighest validation accuracy: {best}, {curves[best]['val_accuracy'][-1]:.2%} "
          "(the smallest gap need not be the best model: too much regularisation underfits)")

    from matplotlib.figure import Figure  # the Agg canvas: a PNG file, never a window
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(3.4 * len(curves), 6), layout="constrained")
    axes = fig.subplots(2, len(curves), sharey="row")
    epochs_axis = np.arange(1, epochs + 1)
    for col, (name, v) in enumerate(curves.items()):
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row][col]
            ax.plot(epochs_axis, v[f"train_{metric}"], label="train")
            ax.plot(epochs_axis, v[f"val_{metric}"], label="validation")
            ax.fill_between(epochs_axis, v[f"train_{metric}"], v[f"val_{metric}"], alpha=0.15,
                            color="C3")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row == 0:
                ax.set_title(name, fontsize="medium")
            else:
                ax.set_yscale("log")
                ax.set_xlabel("epoch")
            if col == 0:
                ax.set_ylabel(metric)
                ax.legend(fontsize="small")
    fig.suptitle(f"{N_TRAIN} training images: the shaded gap is overfitting")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "overfitting_cures.png"
    fig.savefig(path, dpi=100)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
