"""Vanishing gradients: a deep sigmoid network against ReLU with He initialisation.

Backpropagation multiplies by each layer's weights and activation derivative on the way
back. A sigmoid's derivative is at most 0.25: with small weights (normal init, std 0.05)
the gradient shrinks by orders of magnitude and the first layers barely learn; Glorot
init helps only a little. ReLU (derivative 1 where active) with He init (variance
2 / fan_in) keeps its size. fit(..., diagnostics=True) records the norms and warns.

    python examples/08_vanishing_gradients.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import fastnn as fnn
from fastnn import diagnostics, nn, optim, plot
from _common import example_parser, print_table

DEPTH, WIDTH = 6, 64  # hidden layers, units per hidden layer
NETWORKS = {  # name -> (activation, init), also the figures' file names
    "sigmoid_normal": ("sigmoid", "normal"),
    "sigmoid_glorot": ("sigmoid", "xavier_uniform"),
    "relu_he": ("relu", "he_normal"),
}


def parse_args() -> argparse.Namespace:
    return example_parser(__doc__, quick="a few seconds: fewer epochs and samples",
                          seed="data split, initial weights, shuffling").parse_args()


def build(activation: str, init: str) -> nn.Sequential:
    layers, width = [], 784
    for _ in range(DEPTH):
        layers.append(nn.Dense(width, WIDTH, activation=activation, init=init))
        width = WIDTH
    layers.append(nn.Dense(width, 10, init=init))
    return nn.Sequential(*layers)


def main() -> None:
    args = parse_args()
    X_train, y_train, X_test, y_test = fnn.datasets.load("mnist-5k", seed=args.seed)
    epochs = 3 if args.quick else 20
    if args.quick:
        X_train, y_train = X_train[:1000], y_train[:1000]

    print(f"mnist-5k: {len(X_train)} training images; 784-{'-'.join([str(WIDTH)] * DEPTH)}-10 "
          f"networks, plain SGD (lr 0.1), batches of 32, {epochs} epochs\n")
    histories, summary, caught = {}, [], {}
    for name, (activation, init) in NETWORKS.items():
        fnn.seed(args.seed)
        model = build(activation, init)
        model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1), metrics=["accuracy"])
        with warnings.catch_warnings(record=True) as messages:
            warnings.simplefilter("always", diagnostics.GradientWarning)
            history = model.fit(X_train, y_train, epochs=epochs, batch_size=32, seed=args.seed,
                                verbose=0, diagnostics=True)
        caught[name] = [str(m.message) for m in messages
                        if issubclass(m.category, diagnostics.GradientWarning)]
        histories[name] = history
        layers = list(history.diagnostics)
        first = history.diagnostics[layers[0]]
        last = history.diagnostics[layers[-1]]
        summary.append([name, activation, init, f"{first['grad_norm'][0]:.2e}",
                        f"{last['grad_norm'][0]:.2e}",
                        f"{last['grad_norm'][0] / first['grad_norm'][0]:.3g}",
                        f"{first['update_ratio'][0]:.1e}",
                        f"{model.evaluate(X_test, y_test)['accuracy']:.2%}",
                        "yes" if caught[name] else "no"])

    print("Gradient norm of the first and the last layer's weight, epoch 1 (mean over batches):\n")
    print_table(["network", "activation", "init", "first layer", "last layer", "last/first",
                 "1st-layer step/w", "test acc", "warned"], summary, left=3)

    print("\nPer layer, epoch 1 (layer 0 is next to the input, the last one is the output):\n")
    layers = list(histories["relu_he"].diagnostics)
    print_table(["layer", *NETWORKS],
                [[layer, *(f"{histories[n].diagnostics[layer]['grad_norm'][0]:.2e}"
                           for n in NETWORKS)] for layer in layers])

    print("\nThe warnings fit(..., diagnostics=True) gave:")
    for name, messages in caught.items():
        for message in messages or ["(none)"]:
            print(f"  {name}: GradientWarning: {message}" if messages else f"  {name}: {message}")

    args.out.mkdir(parents=True, exist_ok=True)
    paths = [plot.gradient_flow(histories[name], args.out / f"gradient_flow_{name}.png",
                                title=f"gradient flow: {name}, weight gradient norm per layer").path
             for name in ("sigmoid_normal", "relu_he")]

    from matplotlib.figure import Figure  # the Agg canvas: a PNG file, never a window

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, history in histories.items():
        norms = [history.diagnostics[layer]["grad_norm"][0] for layer in layers]
        ax.plot(np.arange(len(layers)), norms, marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer (input side on the left)")
    ax.set_ylabel("weight gradient norm, epoch 1")
    ax.set_title("the gradient on its way back to the input")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(args.out / "gradient_norm_by_layer.png")
    fig.savefig(paths[-1], dpi=100)
    print("\nfigures: " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
