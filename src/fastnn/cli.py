"""The command line (also ``python -m fastnn``):

    fastnn train     train an MLP or a CNN on a dataset and report its test accuracy
    fastnn compare   compare optimizers / learning rates / batch sizes on one dataset
    fastnn datasets  list the datasets and whether each is available here
    fastnn tune      time GEMM blockings on this CPU and save the fastest (fastnn.tune)
    fastnn export    write a saved model as an ONNX graph (fastnn.onnx_export)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import fastnn
from fastnn._checks import thread_count
from fastnn._device import check_device

ACTIVATIONS = [name for name, a in fastnn._C.activations().items() if a["canonical"] != "identity"]
OPTIMIZERS = ["gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
SCHEDULES = ["none", "step", "exponential", "cosine", "plateau"]
# --model: (3x3 convolutions per block, default --conv widths, batch norm, default --hidden);
# lenet's two blocks are its own 5x5 convolutions. --conv, --batch-norm, --hidden override.
MODELS = {"mlp": (1, [], False, [128, 64]),
          "lenet": (1, [6, 16], False, [120, 84]),
          "cnn": (2, [32, 64], True, [128])}


def _list_of(convert: Callable[[str], object], example: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        parts = text.split(",")
        try:
            if not all(part.strip() for part in parts):  # "8,,4" is not 8,4
                raise ValueError("an empty entry")
            values = [convert(part) for part in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list such as "
                                             f"{example}; got {text!r}") from None
        return values
    return parse


def _optimizer_names(text: str) -> list[str]:
    """--optimizers checked as --optimizer is, before any data is loaded (an unknown name had
    failed after, naming no option; " adam" after a comma had been unknown)."""
    names = [name.strip().lower() for name in _list_of(str, "sgd,adam")(text)]
    unknown = [name for name in names if name not in OPTIMIZERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"invalid choice {unknown[0]!r} (choose from "
                                         f"{', '.join(OPTIMIZERS)})")
    return names


def _hidden_sizes(text: str) -> list[int]:
    if not text.strip():  # "" for none, as --help says
        return []
    sizes = _list_of(int, "128,64")(text)
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be >= 1; got {text!r}")
    return sizes


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1)
_seed = _int_at_least(0)


def _thread_count(text: str) -> int:
    try:
        return thread_count(_positive_int(text), "--threads")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _number(valid: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: a finite float for which ``valid`` holds; argparse's error then
    names the flag, not the library's parameter."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and valid(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value
    return parse


_POSITIVE = _number(lambda v: v > 0, "a number > 0")
_NON_NEGATIVE = _number(lambda v: v >= 0, "a number >= 0")
_FRACTION = _number(lambda v: 0 <= v < 1, "a number in [0, 1)")


def _init_name(text: str) -> str:
    import fastnn.init

    try:
        fastnn.init.get(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", choices=fastnn.datasets.available(),
                   help="dataset (default: %(default)s; see `fastnn datasets`)")
    p.add_argument("--data-path", default=None, metavar="DIR",
                   help="directory of MNIST-format IDX files (mnist, kmnist, fashion-mnist); "
                        "without it they come from the cache, downloaded the first time")
    p.add_argument("--model", default="mlp", choices=sorted(MODELS),
                   help="mlp: --hidden Dense layers, after --conv blocks if given; lenet: "
                        "LeNet-5 (6 and 16 5x5 filters, each then 2x2 max pooling; Dense 120, "
                        "84); cnn: blocks of two 3x3 convolutions, each with batch norm, then "
                        "2x2 max pooling (--conv 32,64), Dense 128 (default: %(default)s)")
    p.add_argument("--conv", type=_hidden_sizes, default=None, metavar="C1,C2,...",
                   help="convolution blocks before the Dense layers, on image datasets: each a "
                        "3x3 Conv2d with this many filters (padding 'same', the activation), "
                        "batch norm with --batch-norm, then 2x2 max pooling")
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm2d in each --conv block")
    p.add_argument("--hidden", type=_hidden_sizes, default=None,
                   help='hidden Dense layer sizes, comma-separated; "" for none (default: 128,64; '
                        'lenet 120,84; cnn 128)')
    p.add_argument("--activation", default="relu", choices=ACTIVATIONS,
                   help="hidden layers' activation (default: %(default)s)")
    p.add_argument("--init", type=_init_name, default=None,
                   help="weight initialiser (default: He for the ReLU family, Glorot otherwise; "
                   "e.g. normal, xavier_uniform, he_normal)")
    p.add_argument("--dropout", type=_FRACTION, default=0.0,
                   help="dropout after each hidden layer")
    p.add_argument("--l1", type=_NON_NEGATIVE, default=0.0,
                   help="L1 penalty on the weight of every Dense layer (not the convolutions)")
    p.add_argument("--l2", type=_NON_NEGATIVE, default=0.0,
                   help="L2 penalty on the weight of every Dense layer (not the convolutions)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="(default: %(default)s)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the initialisation, the "
                   "shuffling and the splits (default: %(default)s)")
    p.add_argument("--threads", type=_thread_count, default=None,
                   help="kernel threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--precision", default="fp32", choices=fastnn.precision.PRECISIONS,
                   help="the layers' matrix products: fp32, or bf16 (bfloat16 products "
                   "accumulated in float32, on AMX or AVX512_BF16; float32 weights) "
                   "(default: %(default)s)")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="where to train: cpu, cuda or cuda:N (the CUDA build; default: cpu)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn: train neural networks "
                                     "whose numeric work runs in C++ kernels.")
    parser.add_argument("--version", action="version", version=f"fastnn {fastnn.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train an MLP or CNN classifier and report its "
                                "test accuracy")
    _model_options(train)
    train.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, type=lambda s: s.strip().lower(),
                       help="(default: %(default)s)")
    train.add_argument("--lr", type=_POSITIVE, default=1e-3,
                       help="learning rate (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=32,
                       help="(default: %(default)s); the training set size is batch GD, 1 "
                       "is stochastic GD")
    train.add_argument("--clip-norm", type=_POSITIVE, default=None,
                       help="clip gradients by global norm")
    train.add_argument("--schedule", default="none", choices=SCHEDULES,
                       help="learning-rate schedule: step (x0.1 every third of the epochs), "
                       "exponential (x0.95 per epoch), cosine, plateau (x0.1 after 3 epochs "
                       "without val_loss improvement; loss without validation)")
    train.add_argument("--augment", type=_augment_values, default=None,
                       metavar="SHIFT,ROTATION[,NOISE]",
                       help="image augmentation per batch: max shift in pixels, max rotation in "
                       "degrees, Gaussian noise std, e.g. 2,10 or 2,10,0.05")
    train.add_argument("--validation-split", type=_FRACTION, default=0.1,
                       help="fraction held out for validation (default: %(default)s; none "
                       "where the training set is too small to split)")
    train.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                       help="stop when val_loss (loss without validation) has not improved "
                       "for PATIENCE epochs, and keep the best weights")
    train.add_argument("--diagnostics", action="store_true",
                       help="record per-layer gradient norms, dead and saturated units, and warn "
                       "on vanishing or exploding gradients")
    train.add_argument("--save", default=None, metavar="PATH",
                       help="save the trained model (safetensors), load it with fastnn.load")
    train.add_argument("--plot", default=None, metavar="PNG", help="save the training curves")
    train.add_argument("--distributed", action="store_true",
                       help="train data-parallel over the processes of mpirun -np N "
                       "(--batch-size per process; rank 0 prints and saves)")

    compare = commands.add_parser("compare", help="compare optimizers, learning rates and "
                                  "batch sizes from the same initial weights")
    _model_options(compare)
    compare.set_defaults(epochs=5)
    compare.add_argument("--optimizers", type=_optimizer_names, default="sgd,momentum,adam",
                         help=f"comma-separated, of {', '.join(OPTIMIZERS)} (default: %(default)s)")
    compare.add_argument("--lr", type=_list_of(_POSITIVE, "0.1,0.01"), default="0.01",
                         help="learning rates, comma-separated (default: %(default)s)")
    compare.add_argument("--batch-size", type=_list_of(_positive_int, "32,128"), default="32",
                         help="batch sizes, comma-separated (default: %(default)s)")
    compare.add_argument("--target", type=_number(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
                         default=None,
                         help="report the first epoch reaching this validation accuracy")
    compare.add_argument("--plot", default=None, metavar="PNG", help="save the curves side by side")

    commands.add_parser("datasets", help="list the datasets and whether each is available here")

    tune = commands.add_parser("tune", help="time GEMM blockings around the cache model's on "
                               "this CPU and save the fastest to the tuning file")
    tune.add_argument("--seconds", type=_POSITIVE, default=60.0,
                      help="time budget (default: %(default)s)")
    tune.add_argument("--threads", type=_thread_count, default=None,
                      help="threads to time on (default: OMP_NUM_THREADS or all cores)")
    export = commands.add_parser("export", help="write a model saved by fastnn (safetensors) as "
                                 "an ONNX graph for onnxruntime (needs the onnx package)")
    export.add_argument("model", metavar="MODEL", help="a model file of model.save / fastnn train --save")
    export.add_argument("--onnx", required=True, metavar="PATH", help="the ONNX file to write")
    export.add_argument("--input-shape", type=_list_of(_positive_int, "1,28,28"), default=None,
                        help="one sample's shape, comma-separated (default: the first Dense "
                        "layer's in_features; needed for a model starting with a convolution)")
    return parser


def _export(args: argparse.Namespace) -> int:
    from fastnn.onnx_export import OPSET

    args.onnx = _output_path(args.onnx, "--onnx")  # "" had been read as the working folder
    if _same_file(args.onnx, args.model):
        raise ValueError(f"export: --onnx {args.onnx} is MODEL itself; writing the ONNX graph "
                         "there would replace the saved model: give another file name")
    try:
        model = fastnn.load(args.model)
    except OSError as e:  # a missing or unreadable file: a message, not a traceback
        raise ValueError(f"export: cannot read MODEL {args.model!r}: {e}") from e
    shape = args.input_shape
    if shape is None:
        first = model.layers[0] if isinstance(model, fastnn.nn.Sequential) and model.layers else model
        if not isinstance(first, fastnn.nn.Dense):
            raise ValueError(f"export: --input-shape is needed for a model whose first layer "
                             f"is {first!r} (one sample's shape, e.g. --input-shape 1,28,28)")
        shape = [first.in_features]
    path = model.export_onnx(args.onnx, shape)
    print(f"wrote {path} (ONNX opset {OPSET}, input (batch, "
          f"{', '.join(map(str, shape))}))")
    return 0


def _load(args: argparse.Namespace, validation: float) -> tuple:
    try:
        return fastnn.datasets.load(args.data, seed=args.seed, path=args.data_path,
                                    validation=validation)
    except ValueError as err:  # in the command's words, not the API's (path=)
        if args.data_path is not None and "takes no path" in str(err):
            raise ValueError(f"--data-path: {str(err).replace('path=', '--data-path')}") from None
        raise


def _classes(args: argparse.Namespace, *labels: np.ndarray) -> int:
    """Outputs for every class the dataset names and every label of the arrays: counted from
    the training labels alone, a --data-path test set with a class they lack failed only
    after the training."""
    named = len(fastnn.datasets.info(args.data).classes)
    return max([named] + [int(y.max()) + 1 for y in labels if len(y)])


def _builder(args: argparse.Namespace, n_in: int, n_out: int) -> Callable[[], fastnn.nn.Sequential]:
    """A function building the model that the options describe (see MODELS)."""
    nn = fastnn.nn
    convs_per_block, widths, batch_norm, hidden = MODELS[args.model]
    if args.model == "lenet" and args.conv:
        raise ValueError("--conv does not apply to --model lenet (its convolutions are fixed)")
    widths = args.conv or widths
    batch_norm = batch_norm or args.batch_norm
    hidden = args.hidden if args.hidden is not None else hidden
    image = fastnn.datasets.info(args.data).image_shape
    if widths and image is None:
        raise ValueError(f"--model {args.model}{' --conv' * bool(args.conv)} needs an image "
                         f"dataset; {args.data!r} is points")
    channels = (1, *image) if image is not None and len(image) == 2 else image
    if args.model == "lenet" and min(channels[1:]) < 12:  # 5x5 (padded), pool, 5x5, pool: 12 at least
        raise ValueError(f"--model lenet needs images of 12 x 12 pixels or more (it was made for "
                         f"28 x 28: fashion-mnist, mnist); {args.data!r} has "
                         f"{channels[1]} x {channels[2]}")

    def conv_blocks() -> list:
        if args.model == "lenet":
            c = channels[0]
            return [nn.Conv2d(c, 6, 5, padding=2, activation=args.activation, init=args.init),
                    nn.MaxPool2d(2),
                    nn.Conv2d(6, 16, 5, activation=args.activation, init=args.init),
                    nn.MaxPool2d(2)]
        layers, c = [], channels[0]
        for width in widths:
            for _ in range(convs_per_block):
                # A bias before batch norm is subtracted again with the batch mean.
                layers.append(nn.Conv2d(c, width, 3, padding="same", init=args.init,
                                        bias=not batch_norm,
                                        activation=None if batch_norm else args.activation))
                if batch_norm:
                    layers += [nn.BatchNorm2d(width), _activation_layer(args.activation)]
                c = width
            layers.append(nn.MaxPool2d(2))
        return layers

    def build() -> nn.Sequential:
        layers: list = []
        if widths:
            layers = [nn.Reshape(channels), *conv_blocks(), nn.Flatten()]
        n = nn.Sequential(*layers).output_shape((None, n_in))[1] if layers else n_in
        for size in hidden:
            layers.append(nn.Dense(n, size, activation=args.activation, init=args.init,
                                   l1=args.l1, l2=args.l2))
            if args.dropout:
                layers.append(nn.Dropout(args.dropout))
            n = size
        layers.append(nn.Dense(n, n_out, l1=args.l1, l2=args.l2))
        return nn.Sequential(*layers)
    return build


def _activation_layer(name: str) -> fastnn.nn.Module:
    """The layer applying activation `name` (after a batch norm)."""
    nn = fastnn.nn
    layers = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU,
              "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus}
    return layers[fastnn._C.activations()[name]["canonical"]]()


def _schedule(name: str, epochs: int, monitor: str):
    from fastnn import schedulers
    return {"none": None,
            "step": lambda: schedulers.StepLR(max(1, epochs // 3)),
            "exponential": lambda: schedulers.ExponentialLR(0.95),
            "cosine": lambda: schedulers.CosineLR(epochs),
            "plateau": lambda: schedulers.ReduceLROnPlateau(monitor, patience=3)}[name]


def _augment_values(text: str) -> list[float]:
    values = _list_of(float, "2,10 or 2,10,0.05")(text)
    if not 2 <= len(values) <= 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected SHIFT,ROTATION[,NOISE], numbers >= 0 such "
                                         f"as 2,10 or 2,10,0.05; got {text!r}")
    return values


def _augment(values: list[float] | None, data: str, seed: int | None = None):
    if not values:
        return None
    shape = fastnn.datasets.info(data).image_shape
    if shape is None:
        raise ValueError(f"--augment needs an image dataset; {data!r} is points")
    try:
        return fastnn.data.Augment(shape, max_shift=values[0], max_rotation=values[1],
                                   noise_std=values[2] if len(values) == 3 else 0.0, seed=seed)
    except ValueError as err:
        raise ValueError(f"--augment: {err}") from None


def _banner(args: argparse.Namespace, n_train: int, n_test: int, held_out: str = "test",
            n_val: int = 0) -> None:
    """The first line: version, ISA, threads, and the samples trained on and held out
    (``held_out`` names the second set: "test" or "validation"; ``n_val``, when not 0, the
    validation samples split off the training ones, before the test set)."""
    cfg = fastnn.config()
    threads = cfg["num_threads"]
    validation = f"{n_val} validation / " if n_val else ""
    isa = f"{cfg['isa']}, bf16 products on {cfg['bf16']}" if args.precision == "bf16" else cfg["isa"]
    print(f"fastnn {cfg['version']} - {isa} - {threads} thread{'s' * (threads != 1)} - "
          f"{args.data}: {n_train} train / {validation}{n_test} {held_out} samples")


def _check_device(args: argparse.Namespace) -> None:
    """--device checked before any data is loaded: a device this build or machine lacks is a
    usage error (its reason printed, no traceback)."""
    if args.device is not None:
        try:
            check_device(args.device, "--device")
        except RuntimeError as e:
            raise ValueError(str(e)) from None


def _message(e: BaseException) -> str:
    """An error's words for the one line the command prints: an OSError whose message names
    its file already ("cannot write 'x': ...") without its "[Errno 17]"."""
    if isinstance(e, OSError) and e.strerror and e.filename is None:
        return e.strerror
    return str(e)


def _output_path(path: str, option: str, plot: bool = False) -> str:
    """``path`` checked before any training: a name, not a folder, its folder not a file; for
    a plot, the file savefig writes (plot._figure_path) in a format matplotlib writes."""
    if not path.strip():  # "" had been taken as the option not given: nothing written, silently
        raise ValueError(f"{option} {path!r} names no file")
    if plot:
        from fastnn.plot import _figure_path  # ImportError (no matplotlib): what to install
        try:
            p = _figure_path(path)
        except ValueError as e:
            raise ValueError(f"{option} {e}") from None
    else:
        p = Path(path).expanduser()  # as io.save reads it
        # Path() drops a trailing separator: "newdir/" had been written as a file "newdir"
        if p.is_dir() or path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
            name = "model.onnx" if option == "--onnx" else "model.safetensors"
            raise ValueError(f"{option} {path} is a folder; give a file name such as "
                             f"{p / name}")
    folder = next((q for q in p.parents if q.exists()), None)
    if folder is not None and not folder.is_dir():
        raise ValueError(f"{option} {path}: {folder} is a file, not a folder")
    if folder is not None:  # a file made and removed there now, not after the training
        import tempfile

        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise ValueError(f"{option} {path}: cannot write in {folder} ({e.strerror})") from None
    try:  # what the writers refuse (/dev/null, a FIFO), refused now, not after the training
        fastnn.io.check_output_path(p)
    except OSError as e:
        raise ValueError(f"{option} {_message(e)}") from None
    if plot:
        from matplotlib.backend_bases import FigureCanvasBase
        formats = FigureCanvasBase.get_supported_filetypes()
        if p.suffix[1:].lower() not in formats:
            raise ValueError(f"{option} {path}: matplotlib writes {', '.join(sorted(formats))}; "
                             f"not {p.suffix!r}")
    return str(p)


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file: one path once resolved (links, "."
    and ".."), or, where both exist, one file by two names (a hard link)."""
    p, q = Path(a).expanduser(), Path(b).expanduser()
    return p.resolve() == q.resolve() or (p.exists() and q.exists() and os.path.samefile(p, q))


def _check_batch_norm(args: argparse.Namespace) -> None:
    if args.batch_norm and (args.model == "lenet" or not (args.conv or MODELS[args.model][1])):
        raise ValueError("--batch-norm puts BatchNorm2d in --conv blocks: give --conv (or "
                         "--model cnn)" if args.model != "lenet" else
                         "--batch-norm does not apply to --model lenet (its layers are fixed)")


def _train(args: argparse.Namespace) -> int:
    _check_device(args)
    _check_batch_norm(args)
    if args.save is not None:
        args.save = _output_path(args.save, "--save")
        fastnn.io._safetensors()  # its ImportError says what to install, before any training
    if args.plot is not None:
        given, args.plot = args.plot, _output_path(args.plot, "--plot", plot=True)
        # the model had been written, then replaced by the curves, both reported saved
        if args.save is not None and _same_file(args.save, args.plot):
            raise ValueError(f"--plot {given} writes {args.plot}, the file --save names; the "
                             "curves would replace the saved model: give each its own file")
    _augment(args.augment, args.data, seed=0)  # checked before the data and the summary
    X_train, y_train, X_test, y_test = _load(args, 0.0)
    fastnn.seed(args.seed)
    model = _builder(args, X_train.shape[1], _classes(args, y_train, y_test))()
    model.compile(loss="cross_entropy",
                  optimizer=fastnn.optim.get(args.optimizer, lr=args.lr, clip_norm=args.clip_norm),
                  metrics=["accuracy"], precision=args.precision)
    split = args.validation_split
    if split and round(len(X_train) * split) in (0, len(X_train)):
        print(f"note: --validation-split {split} of {len(X_train)} training samples leaves "
              "an empty training or validation set; training without validation")
        split = 0.0
    n_val = int(round(len(X_train) * split))  # as fit's data.train_val_split counts them
    _banner(args, len(X_train) - n_val, len(X_test), n_val=n_val)
    monitor = "val_loss" if split else "loss"  # what plateau and early stopping watch
    callbacks = []
    schedule = _schedule(args.schedule, args.epochs, monitor)
    if schedule is not None:
        callbacks.append(schedule())
    if args.early_stopping:
        callbacks.append(fastnn.callbacks.EarlyStopping(monitor, patience=args.early_stopping))
    model.summary(X_train.shape[1:])
    history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=split, seed=args.seed,
                        callbacks=callbacks, augment=_augment(args.augment, args.data),
                        diagnostics=args.diagnostics, distributed=args.distributed,
                        device=args.device)
    result = model.evaluate(X_test, y_test)
    # evaluate's loss holds the L1/L2 penalty, as Keras's does: said so, not passed off as
    # the test data's cross-entropy
    penalty = " (incl. the L1/L2 penalty)" if model.regularization_loss() > 0 else ""
    print(f"test loss{penalty} {result['loss']:.4f} - test accuracy {result['accuracy']:.4f}")
    if args.diagnostics:
        _print_diagnostics(history)
    diverged = history.stop_reason is not None  # weights or loss not finite: fit stopped
    if args.save and diverged:  # as fit's checkpoints: a broken model replaces nothing
        print(f"the model was not saved to {args.save}: training diverged (see the warning "
              "above); lower --lr", file=sys.stderr)
    elif args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    if args.plot:
        from fastnn import plot
        title = f"{args.data}: {args.model}, {args.optimizer} lr={args.lr:g}"
        print(f"saved the curves to {plot.training_curves(history, args.plot, title).path}")
    return 1 if diverged else 0


def _print_diagnostics(history) -> None:
    # as wide as the longest name: "12:BatchNorm2d" had pushed its row's columns right
    width = max([12] + [len(layer) for layer in history.diagnostics])
    print(f"{'layer':{width}s} {'grad norm':>10s} {'weight norm':>11s} {'update/weight':>13s} "
          f"{'dead':>6s} {'saturated':>9s}   (last epoch)")
    for layer, d in history.diagnostics.items():
        last = {k: v[-1] for k, v in d.items() if v}
        fmt = lambda k, w, spec: format(last[k], spec).rjust(w) if k in last else "-".rjust(w)  # noqa: E731
        print(f"{layer:{width}s} {fmt('grad_norm', 10, '.3g')} {fmt('weight_norm', 11, '.3g')} "
              f"{fmt('update_ratio', 13, '.2e')} {fmt('dead_fraction', 6, '.0%')} "
              f"{fmt('saturated_fraction', 9, '.0%')}")


def _compare(args: argparse.Namespace) -> int:
    _check_device(args)
    _check_batch_norm(args)
    if args.plot is not None:
        args.plot = _output_path(args.plot, "--plot", plot=True)
    X_train, y_train, X_test, y_test = _load(args, 0.0)
    # The split datasets.load(validation=0.1) makes, which refuses to leave a set empty.
    X_tr, y_tr, X_val, y_val = fastnn.datasets._stratified_split(X_train, y_train, 0.1, args.seed)
    held_out = "validation"
    if len(X_val) and len(X_tr):
        X_train, y_train = X_tr, y_tr
    else:  # xor's 4 points: nothing to hold out
        print(f"note: {args.data}'s {len(X_train)} training samples are too few to hold out "
              "a validation set; the runs are validated on its test set")
        X_val, y_val, held_out = X_test, y_test, "test"
    _banner(args, len(X_train), len(X_val), held_out)
    build = _builder(args, X_train.shape[1], _classes(args, y_train, y_val, y_test))
    fastnn.experiments.compare(build, (X_train, y_train, X_val, y_val),
                               optimizers=args.optimizers, lrs=args.lr,
                               batch_sizes=args.batch_size, epochs=args.epochs, seed=args.seed,
                               target_accuracy=args.target, plot=args.plot,
                               precision=args.precision, device=args.device)
    if args.plot and os.path.exists(args.plot):  # compare warned if the report failed
        print(f"saved the curves to {args.plot}")
    return 0


def _datasets() -> int:
    rows = []
    for name in fastnn.datasets.available():
        meta = fastnn.datasets.info(name)
        here = fastnn.datasets.is_available(name)
        shape = "x".join(map(str, meta.image_shape)) if meta.image_shape else "points"
        # the API's words in the command's: the folder itself, the command that downloads
        source = meta.source.replace("data_dir()", str(fastnn.datasets.data_dir()))
        how = (meta.how_to_get.replace(f'load("{name}")', f"fastnn train --data {name}")
               .replace(f"load('{name}')", f"fastnn train --data {name}"))
        rows.append((name, "yes" if here else "no", shape, str(len(meta.classes)),
                     source if here else f"{source}; to get it: {how}"))
    header = ("dataset", "here", "shape", "classes", "source")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    return 0


def _tune(args: argparse.Namespace) -> int:
    cfg = fastnn.config()
    cpu = cfg["cpu"]
    print(f"CPU: {cpu['vendor']} {cpu['model_name']} (family {cpu['family']} model "
          f"{cpu['model']} stepping {cpu['stepping']}); caches {cpu['cache_spec']} "
          f"({cpu['cache_source']}); ISA {cfg['isa']}")
    result = fastnn.tune(args.seconds, threads=args.threads)
    show = lambda b: f"kc {b['kc']}, nc {b['nc']}, mc {b['mc']}"  # noqa: E731
    print(f"model's blocking: {show(result['model'])}")
    plural = lambda n, word: f"{n} {word}{'s' * (n != 1)}"  # noqa: E731
    print(f"tuned blocking:   {show(result['winner'])} ({plural(result['candidates'], 'candidate')}, "
          f"{plural(result['rounds'], 'round')}, {result['threads']} thread"
          f"{'s' * (result['threads'] != 1)}, {result['seconds']:.1f} s)")
    print(f"speedup over the model's: {result['speedup']:.3f}x")
    print(f"saved to {result['path']}")
    return 0


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line prints it: its words, not fastnn's source line."""
    return f"fastnn: {category.__name__}: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    import warnings

    previous, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:
        fastnn.set_num_threads(args.threads)
    try:
        if args.command == "datasets":
            return _datasets()
        if args.command == "tune":
            return _tune(args)
        if args.command == "export":
            return _export(args)
        if args.command == "train" and args.distributed and not fastnn.distributed.is_main():
            args.save = args.plot = None  # rank 0 reports and writes; this rank trains alike
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return _train(args)
        return _train(args) if args.command == "train" else _compare(args)
    except (ImportError, ValueError, NotImplementedError, OSError) as e:
        print(f"fastnn: error: {_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: a line and the shell's code for SIGINT, no traceback
        print("fastnn: interrupted", file=sys.stderr)
        return 130
    except MemoryError as e:  # a network too large for this machine: say which settings make it
        advice = ("the network or the batch is too large for this machine; use fewer or smaller "
                  "--hidden or --conv layers, or a smaller --batch-size"
                  if args.command in ("train", "compare") else "not enough memory for it here")
        print(f"fastnn: error: out of memory ({e}): {advice}", file=sys.stderr)
        return 1
