"""The command line: ``fastnn train ...`` (also ``python -m fastnn train ...``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import fastnn


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as "
                                         f"128,64; got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be >= 1; got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn: train neural networks "
                                     "whose numeric work runs in C++ kernels.")
    parser.add_argument("--version", action="version", version=f"fastnn {fastnn.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train an MLP classifier and report its test "
                                "accuracy")
    train.add_argument("--data", default="digits", choices=fastnn.datasets.available(),
                       help="dataset (default: %(default)s)")
    train.add_argument("--hidden", type=_hidden_sizes, default="128,64",
                       help='hidden layer sizes, comma-separated; "" for none '
                       "(default: 128,64)")
    train.add_argument("--activation", default="relu",
                       choices=["relu", "leaky_relu", "sigmoid", "tanh"],
                       help="hidden layers' activation (default: %(default)s)")
    train.add_argument("--optimizer", default="adam",
                       choices=["sgd", "momentum", "nesterov", "adam"],
                       help="(default: %(default)s)")
    train.add_argument("--lr", type=float, default=1e-3,
                       help="learning rate (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=32,
                       help="(default: %(default)s)")
    train.add_argument("--epochs", type=_positive_int, default=30, help="(default: %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="seed of the initialisation and "
                       "the shuffling (default: %(default)s)")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="kernel threads (default: OMP_NUM_THREADS or all cores)")
    train.add_argument("--data-path", default=None, metavar="DIR",
                       help='directory of MNIST-format IDX files (for --data mnist)')
    commands.add_parser("datasets", help="list the datasets and whether each is available here")
    return parser


def _datasets() -> int:
    rows = []
    for name in fastnn.datasets.available():
        meta = fastnn.datasets.info(name)
        here = fastnn.datasets.is_available(name)
        shape = "x".join(map(str, meta.image_shape)) if meta.image_shape else "points"
        rows.append((name, "yes" if here else "no", shape, str(len(meta.classes)),
                     meta.source if here else f"{meta.source}; to get it: {meta.how_to_get}"))
    header = ("dataset", "here", "shape", "classes", "source")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.threads is not None:
        fastnn.set_num_threads(args.threads)
    X_train, y_train, X_test, y_test = fastnn.datasets.load(args.data, seed=args.seed,
                                                            path=args.data_path)
    fastnn.seed(args.seed)
    sizes = [X_train.shape[1], *args.hidden, int(y_train.max()) + 1]
    layers = [fastnn.nn.Dense(n_in, n_out, activation=args.activation)
              for n_in, n_out in zip(sizes[:-2], sizes[1:-1])]
    model = fastnn.nn.Sequential(*layers, fastnn.nn.Dense(sizes[-2], sizes[-1]))
    model.compile(loss="cross_entropy", optimizer=fastnn.optim.get(args.optimizer, lr=args.lr))
    cfg = fastnn.config()
    threads = cfg["num_threads"]
    print(f"fastnn {cfg['version']} - {cfg['isa']} - {threads} thread{'s' * (threads != 1)} - "
          f"{args.data}: {len(X_train)} train / {len(X_test)} test samples")
    model.summary()
    model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    result = model.evaluate(X_test, y_test)
    print(f"test loss {result['loss']:.4f} - test accuracy {result['accuracy']:.4f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _datasets() if args.command == "datasets" else _train(args)
    except (ImportError, ValueError) as e:
        print(f"fastnn: error: {e}", file=sys.stderr)
        return 1
