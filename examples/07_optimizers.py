"""Optimizers compared: SGD, momentum, Nesterov, Adagrad, RMSprop, Adam and AdamW.

All of them follow the gradient; they differ in what they do with it. Momentum keeps a
running velocity (Nesterov looks ahead along it), Adagrad and RMSprop divide each weight's
step by the size of its past gradients, Adam does both, AdamW adds decoupled weight decay.
Each runs at a learning rate that suits it, from the same initial weights and batch order
(one experiments.compare per optimizer), on a Fashion-MNIST subset.

    python examples/07_optimizers.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse

import fastnn as fnn
from fastnn import experiments, nn, plot
from _common import example_parser, print_table

# name -> (learning rate, the update for a gradient g; optim.get's default settings)
OPTIMIZERS = {
    "sgd": (0.1, "w -= lr g"),
    "momentum": (0.01, "v = 0.9 v + g;  w -= lr v"),
    "nesterov": (0.01, "v = 0.9 v + g;  w -= lr (g + 0.9 v)"),
    "adagrad": (0.03, "s += g^2;  w -= lr g / sqrt(s)"),
    "rmsprop": (0.001, "s = 0.99 s + 0.01 g^2;  w -= lr g / sqrt(s)"),
    "adam": (0.001, "m, s = averages of g, g^2;  w -= lr m / sqrt(s)"),
    "adamw": (0.001, "adam, and w -= lr 0.01 w (decoupled weight decay)"),
}
TARGET = 0.85


def parse_args() -> argparse.Namespace:
    return example_parser(__doc__, quick="a few seconds: fewer epochs and samples",
                          seed="data split, initial weights, shuffling").parse_args()


def build() -> nn.Sequential:
    return nn.Sequential(nn.Dense(784, 128, activation="relu"), nn.Dense(128, 10))


def main() -> None:
    args = parse_args()
    X_train, y_train, X_val, y_val, _, _ = fnn.datasets.load("fashion-mnist", validation=0.1,
                                                             seed=args.seed)
    n_train, n_val, epochs = (2000, 1000, 2) if args.quick else (12000, 2000, 10)
    data = (X_train[:n_train], y_train[:n_train], X_val[:n_val], y_val[:n_val])

    print("The optimizers and their updates (g: the gradient of a weight w):\n")
    print_table(["optimizer", "lr", "update"],
                [[name, f"{lr:g}", rule] for name, (lr, rule) in OPTIMIZERS.items()], left=3)
    print(f"\nFashion-MNIST subset: {n_train} training, {n_val} validation images; 784-128-10 "
          f"ReLU network, batches of 32, {epochs} epochs\n")
    runs = []
    for name, (lr, _) in OPTIMIZERS.items():
        result = experiments.compare(build, data, optimizers=[name], lrs=[lr], batch_sizes=[32],
                                     epochs=epochs, seed=args.seed, target_accuracy=TARGET,
                                     verbose=False)
        runs += result.runs
    comparison = experiments.Comparison(runs=runs, target_accuracy=TARGET)
    print(comparison.table())
    finite = [r for r in runs if not r.diverged]
    best = max(finite, key=lambda r: r.final_val_accuracy or 0.0)
    fastest = min(finite, key=lambda r: r.epoch_reached_target or epochs + 1)
    print(f"\nbest final validation accuracy: {best.optimizer} ({best.final_val_accuracy:.2%}); "
          f"first to {TARGET:.0%}: "
          + (f"{fastest.optimizer} (epoch {fastest.epoch_reached_target})"
             if fastest.epoch_reached_target else "none"))

    args.out.mkdir(parents=True, exist_ok=True)
    path = plot.comparison(comparison, args.out / "optimizers.png",
                           title=f"optimizers on Fashion-MNIST ({n_train} images)").path
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
