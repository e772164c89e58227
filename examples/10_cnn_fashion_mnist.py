"""Fashion-MNIST with a convolutional network: at least 92% test accuracy in 5 epochs.

The same images, split and training recipe (Adam lr 1e-3 with cosine decay, batches of 64,
5 epochs) go through an MLP (784-512-256-10) and a CNN. The CNN sees each image as a
28x28 grid: two blocks of two 3x3 convolutions (32, then 64 filters, each followed by
batch norm and ReLU) and a 2x2 max pooling, then Dense 128 with dropout 0.3 and Dense 10.
It has fewer parameters than the MLP and is more accurate, but costs more arithmetic per
image. The figures show what its first layer learned (its 32 filters), what those filters
make of one test image (its feature maps), and the confusion matrix.

    python examples/10_cnn_fashion_mnist.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn import metrics, nn, optim, plot, schedulers
from _common import example_parser, print_table

TARGET = 0.92
EPOCHS = 5


def parse_args() -> argparse.Namespace:
    return example_parser(__doc__, quick="a few seconds: 2 epochs on 3,000 images",
                          seed="validation split, weights, shuffling, dropout").parse_args()


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Dense(784, 512, activation="relu"),
                         nn.Dense(512, 256, activation="relu"),
                         nn.Dense(256, 10))


def cnn() -> nn.Sequential:
    def conv_bn_relu(c_in: int, c_out: int) -> list:
        # No bias: the batch norm's shift takes its place.
        return [nn.Conv2d(c_in, c_out, 3, padding="same", bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU()]

    return nn.Sequential(nn.Reshape((1, 28, 28)),
                         *conv_bn_relu(1, 32), *conv_bn_relu(32, 32), nn.MaxPool2d(2),
                         *conv_bn_relu(32, 64), *conv_bn_relu(64, 64), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dense(64 * 7 * 7, 128, activation="relu"),
                         nn.Dropout(0.3), nn.Dense(128, 10))


class EpochTimes(fnn.callbacks.Callback):
    """Wall time of each epoch (training and validation)."""

    def on_train_begin(self, logs=None) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self.start)
        print(f"  epoch {epoch + 1}: loss {logs['loss']:.4f}, val_accuracy "
              f"{logs['val_accuracy']:.2%}, {self.seconds[-1]:.1f}s", flush=True)


def train(name: str, model: nn.Sequential, data: tuple, epochs: int, seed: int) -> tuple:
    X_train, y_train, X_val, y_val = data
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3), metrics=["accuracy"])
    print(f"\n{name}:")
    times = EpochTimes()
    history = model.fit(X_train, y_train, epochs=epochs, batch_size=64, seed=seed,
                        validation_data=(X_val, y_val), verbose=0,
                        callbacks=[schedulers.CosineLR(total_epochs=epochs), times])
    return history, float(np.median(times.seconds))


def main() -> None:
    args = parse_args()
    classes = fnn.datasets.info("fashion-mnist").classes
    X_train, y_train, X_val, y_val, X_test, y_test = fnn.datasets.load(
        "fashion-mnist", validation=0.1, seed=args.seed)
    epochs = 2 if args.quick else EPOCHS
    if args.quick:
        X_train, y_train, X_val, y_val = X_train[:3000], y_train[:3000], X_val[:500], y_val[:500]
        X_test, y_test = X_test[:2000], y_test[:2000]
    data = (X_train, y_train, X_val, y_val)
    print(f"Fashion-MNIST: {len(X_train)} training, {len(X_val)} validation, {len(X_test)} test "
          f"images; Adam (lr 1e-3, cosine decay), batches of 64, {epochs} epochs, "
          f"{fnn.get_num_threads()} thread(s)")

    rows, models = [], {}
    for name, build in (("MLP 784-512-256-10", mlp), ("CNN 2x(conv-conv-pool), 128", cnn)):
        fnn.seed(args.seed)
        model = build()
        history, per_epoch = train(name, model, data, epochs, args.seed)
        test = model.evaluate(X_test, y_test)
        rows.append([name, f"{sum(p.size for p in model.parameters()):,}", f"{per_epoch:.1f}",
                     f"{history.history['val_accuracy'][-1]:.2%}", f"{test['accuracy']:.2%}"])
        models[name] = (model, history, test)
    print()
    print_table(["model", "params", "s/epoch", "val acc", "test acc"], rows)

    model, history, test = models[rows[1][0]]
    print()
    model.summary((784,))
    pred = model.predict(X_test).argmax(axis=1)
    cm = metrics.confusion_matrix(y_test, pred, num_classes=10)
    worst = [(cm[i, j], classes[i], classes[j]) for i in range(10) for j in range(10) if i != j]
    count, true, predicted = max(worst)
    print(f"\nthe CNN's most frequent mistake: {true} taken for {predicted} ({count} times)")
    reached = "reached" if test["accuracy"] >= TARGET else "NOT reached"
    print(f"CNN test accuracy: {test['accuracy']:.2%} (target {TARGET:.0%} in {EPOCHS} epochs: "
          f"{reached}{', a --quick run is too short for it' if args.quick else ''})")

    # What the first block sees in one test image: the 32 maps after conv, batch norm, ReLU.
    image = X_test[:1]
    model.eval()
    maps = model[:4](image)[0]
    args.out.mkdir(parents=True, exist_ok=True)
    figures = [
        plot.training_curves(history, args.out / "cnn_curves.png",
                             title="Fashion-MNIST, CNN"),
        plot.filters(model[1].weight.data, args.out / "cnn_first_layer_filters.png",
                     title="the first layer's 32 learned 3x3 filters"),
        plot.feature_maps(maps, args.out / "cnn_feature_maps.png", image=image.reshape(28, 28),
                          title=f"a test image ({classes[y_test[0]]}) after the first "
                                "convolution, batch norm and ReLU"),
        plot.confusion_matrix(cm, args.out / "cnn_confusion.png", classes=classes),
    ]
    print("\nfigures: " + ", ".join(str(fig.path) for fig in figures))


if __name__ == "__main__":
    main()
