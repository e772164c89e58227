"""A single neuron, and the activation functions that make networks non-linear.

A neuron computes y = f(w . x + b): a weighted sum of its inputs plus a bias, passed
through an activation f. Backpropagation needs f'(z) too, so every activation comes with
its derivative. Here both run through fastnn's C++ kernels (the nn activation layers'
forward and backward), are checked against finite differences, tabulated and plotted.

    python examples/01_neuron_and_activations.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse

import numpy as np

import fastnn as fnn
from fastnn import nn
from _common import example_parser, print_table

# name -> (layer, a short formula); LeakyReLU gets slope 0.1 so that it shows in the plot.
ACTIVATIONS = {
    "sigmoid": (nn.Sigmoid(), "1 / (1 + e^-x)"),
    "tanh": (nn.Tanh(), "tanh x"),
    "relu": (nn.ReLU(), "max(x, 0)"),
    "leaky_relu": (nn.LeakyReLU(0.1), "x if x > 0 else 0.1 x"),
    "elu": (nn.ELU(1.0), "x if x > 0 else e^x - 1"),
    "gelu": (nn.GELU(), "x * Phi(x) (tanh approx.)"),
    "softplus": (nn.Softplus(), "log(1 + e^x)"),
}


def parse_args() -> argparse.Namespace:
    return example_parser(__doc__, quick="a few seconds (a coarser grid)",
                          seed="seed of the neuron's random inputs").parse_args()


def value_and_derivative(layer: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(x) by the layer's forward kernel, f'(x) by its backward kernel (grad_out = 1)."""
    y = layer.forward(x)
    dy = layer.backward(np.ones_like(x))
    return y, dy


def single_neuron(seed: int) -> None:
    """One sigmoid neuron with 3 inputs: forward, backward, and the same by hand."""
    neuron = nn.Dense(3, 1, activation="sigmoid")
    w, b = np.array([0.5, -1.0, 2.0], np.float32), np.float32(0.1)
    neuron.weight.data[...] = w
    neuron.bias.data[...] = b
    X = np.random.default_rng(seed).normal(size=(4, 3)).astype(np.float32)

    y = neuron(X)[:, 0]                               # fastnn: GEMM + bias + sigmoid
    neuron.zero_grad()
    neuron.backward(np.ones((4, 1), np.float32))      # d(sum y)/d(parameters)
    z = X @ w + b                                     # by hand, in NumPy
    y_hand = 1 / (1 + np.exp(-z))
    dz = y_hand * (1 - y_hand)                        # sigmoid'(z) = y (1 - y)
    assert np.allclose(y, y_hand, atol=1e-6), (y, y_hand)
    assert np.allclose(neuron.weight.grad[0], dz @ X, atol=1e-5)
    assert np.allclose(neuron.bias.grad[0], dz.sum(), atol=1e-5)

    print(f"A single neuron: y = sigmoid(w . x + b), w = {w.tolist()}, b = {b:g}\n")
    print_table(["x1", "x2", "x3", "z = w.x + b", "y = f(z)", "dy/dz"],
                [[f"{x1:+.3f}", f"{x2:+.3f}", f"{x3:+.3f}", f"{zi:+.4f}", f"{yi:.4f}",
                  f"{di:.4f}"] for (x1, x2, x3), zi, yi, di in zip(X, z, y, dz)])
    grad_w = ", ".join(f"{g:+.4f}" for g in neuron.weight.grad[0])
    print(f"\nbackward: dL/dw = [{grad_w}], "
          f"dL/db = {neuron.bias.grad[0]:.4f} for L = sum(y) (matches the NumPy version)\n")


def main() -> None:
    args = parse_args()
    fnn.seed(args.seed)
    single_neuron(args.seed)

    x = np.linspace(-4, 4, 161 if args.quick else 801, dtype=np.float32)
    points = np.array([-2.0, 0.0, 2.0], np.float32)
    rows, curves = [], {}
    for name, (layer, formula) in ACTIVATIONS.items():
        y, dy = value_and_derivative(layer, x)
        curves[name] = (y, dy)
        # The derivative against central differences (away from the kinks at 0).
        h = np.float32(1e-2)
        away = np.abs(x) > 2 * h
        plus, minus = value_and_derivative(layer, x + h)[0], value_and_derivative(layer, x - h)[0]
        numeric = (plus - minus) / (2 * h)
        err = float(np.max(np.abs(numeric - dy)[away]))
        vals, ders = value_and_derivative(layer, points)
        rows.append([name, formula, *(f"{v:+.4f}" for v in vals), *(f"{d:.4f}" for d in ders),
                     f"{err:.1e}"])
    print("Activation functions, computed by fastnn's kernels (f' from the backward pass):\n")
    print_table(["activation", "f(x)", "f(-2)", "f(0)", "f(2)", "f'(-2)", "f'(0)", "f'(2)",
                 "|f' - finite diff|"], rows, left=2)
    print("\nsigmoid and tanh saturate (f' -> 0 for large |x|: gradients vanish); relu's f' is"
          " 0 or 1 (a unit with z < 0 stops learning);\nleaky_relu, elu, gelu and softplus keep"
          " a gradient for negative inputs.")

    from matplotlib.figure import Figure  # the Agg canvas: a PNG file, never a window

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_f, ax_d = fig.subplots(1, 2)
    for name, (y, dy) in curves.items():
        ax_f.plot(x, y, label=name)
        ax_d.plot(x, dy, label=name)
    ax_f.set_title("activation f(x)")
    ax_d.set_title("derivative f'(x) (fastnn backward)")
    ax_f.set_ylim(-1.5, 4)
    for ax in (ax_f, ax_d):
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    ax_f.legend(fontsize="small")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "activations.png"
    fig.savefig(path, dpi=100)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
