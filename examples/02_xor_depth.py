"""XOR: why networks need a hidden layer.

A single layer draws one straight line through the input plane, and no straight line
separates XOR's classes: trained, it ends at chance (loss log 2, every probability 0.5).
One hidden layer of a few tanh units bends the input space so that the output layer can
separate the classes: 100%. Both train the same way (full-batch Adam, cross-entropy),
from several random starts. The accuracy shown counts a tie as half a point: where
p(true class) is within 0.001 of 0.5, the larger of two equal logits is float noise, and
``model.evaluate``'s argmax had reported a single layer at 25%, 50% or 75% by chance of
that noise. A start counts as solving XOR only if every point's p(true class) > 0.501, a
decision and not a tie.

    python examples/02_xor_depth.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse

import numpy as np

import fastnn as fnn
from fastnn import nn, optim
from _common import example_parser, print_table

MODELS = {
    "single layer (2 -> 2)": lambda: nn.Sequential(nn.Dense(2, 2)),
    "hidden layer (2 -> 4 tanh -> 2)": lambda: nn.Sequential(nn.Dense(2, 4, activation="tanh"),
                                                             nn.Dense(4, 2)),
}


def parse_args() -> argparse.Namespace:
    return example_parser(__doc__, quick="a few seconds: fewer epochs and restarts",
                          seed="seed of the first run").parse_args()


MARGIN = 1e-3  # p(true class) must exceed 0.5 + MARGIN: a tie (p = 0.5) is not a decision


def probability_of_1(model, X: np.ndarray) -> np.ndarray:
    """p(y = 1) from the two logits (a softmax), in float64."""
    logits = model.predict(X).astype(np.float64)
    return 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))


def decided_accuracy(model, X: np.ndarray, y: np.ndarray) -> float:
    """The share of points whose p(true class) exceeds 0.5 + MARGIN."""
    p1 = probability_of_1(model, X)
    p_true = np.where(y == 1, p1, 1 - p1)
    return float(np.mean(p_true > 0.5 + MARGIN))


def accuracy_ties_halved(model, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy where a point within MARGIN of p = 0.5 (a tie) counts one half."""
    p1 = probability_of_1(model, X)
    p_true = np.where(y == 1, p1, 1 - p1)
    return float(np.mean(np.where(p_true > 0.5 + MARGIN, 1.0,
                                  np.where(p_true < 0.5 - MARGIN, 0.0, 0.5))))


def train(build, X: np.ndarray, y: np.ndarray, seed: int, epochs: int):
    fnn.seed(seed)  # the initial weights
    model = build()
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=0.1), metrics=["accuracy"])
    history = model.fit(X, y, epochs=epochs, batch_size=None, verbose=0, seed=seed)
    return model, history


def main() -> None:
    args = parse_args()
    epochs, restarts = (300, 5) if args.quick else (1000, 10)
    X, y, _, _ = fnn.datasets.load("xor")

    rows, results = [], {}
    for name, build in MODELS.items():
        model, history = train(build, X, y, args.seed, epochs)
        loss, acc = model.evaluate(X, y)["loss"], accuracy_ties_halved(model, X, y)
        p1 = probability_of_1(model, X)
        solved = sum(decided_accuracy(train(build, X, y, args.seed + k, epochs)[0], X, y) == 1.0
                     for k in range(restarts))
        params = sum(p.size for p in model.parameters())
        rows.append([name, params, f"{loss:.4f}", " ".join(f"{p:.2f}" for p in p1),
                     f"{acc:.0%}", f"{solved}/{restarts}"])
        results[name] = (model, history, acc)

    print(f"XOR, inputs {X.astype(int).tolist()} -> targets {y.tolist()}; "
          f"full-batch Adam (lr 0.1), {epochs} epochs\n")
    print_table(["model", "params", "loss", "p(y=1) per point", "accuracy (tie 1/2)",
                 "seeds at 100%"], rows)
    single, hidden = (results[name][2] for name in MODELS)
    print(f"\nsingle layer: {single:.0%} (no straight line separates XOR: it stays at "
          f"chance, loss log 2 = 0.6931); one hidden layer: {hidden:.0%}")

    from matplotlib.figure import Figure  # the Agg canvas: a PNG file, never a window

    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    grid = np.linspace(-0.5, 1.5, 201, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    for ax, (name, (model, history, acc)) in zip(axes, results.items()):
        p1 = probability_of_1(model, points)
        ax.contourf(gx, gy, p1.reshape(gx.shape), levels=np.linspace(0, 1, 21), cmap="RdBu_r")
        if np.ptp(p1) > 2 * MARGIN:  # a boundary exists (not a flat p = 0.5 everywhere)
            ax.contour(gx, gy, p1.reshape(gx.shape), levels=[0.5], colors="k")
        else:
            ax.text(0.5, 0.5, f"p(y=1) = {p1.mean():.2f} everywhere:\nno line separates XOR",
                    ha="center", va="center", bbox={"facecolor": "white"})
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", vmin=0, vmax=1, edgecolors="k", s=120)
        ax.set_title(f"{name}: accuracy {acc:.0%}", fontsize="medium")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        axes[2].plot(np.arange(1, len(history.history["loss"]) + 1), history.history["loss"],
                     label=name)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_title("training loss")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize="small")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "xor_decision_boundaries.png"
    fig.savefig(path, dpi=100)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
