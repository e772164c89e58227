"""Batching (full batch, single sample, mini-batch), train/validation splits (random,
stratified for class labels) and image augmentation."""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Iterator

import numpy as np

from . import _C, memory
from ._checks import as_float32, flag, non_negative, number, numeric, positive_int, stream_seed
from ._random import check_seed, is_seed_object, resolve


def _pair(X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    X = as_float32(X, "X")
    y = numeric(y, "y")
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise ValueError(f"X and y must have the same number of samples; got X {X.shape} "
                         f"and y {y.shape}")
    return X, y


def batches(X: np.ndarray, y: np.ndarray, batch_size: int | None = 32, shuffle: bool = True,
            seed: int | np.random.Generator | None = None, reuse_buffers: bool = False
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """An iterator over (X batch, y batch) pairs covering the data once (one epoch).

    X batches are C-contiguous float32; y keeps its dtype. batch_size=None gives the
    whole set at once (batch gradient descent), 1 one sample at a time (stochastic), n
    mini-batches of n (the last may be smaller). shuffle draws a new order from ``seed``:
    an int, a NumPy Generator, or None for the global generator (``fastnn.seed``).
    Shuffled rows are gathered in C++; reuse_buffers=True gathers every batch into the
    same arrays (no allocation per batch: use each batch before asking for the next).
    """
    X, y = _pair(X, y)
    # max(1, ...): no samples, no batch (range()'s step of 0 had raised from here)
    size = max(1, len(X)) if batch_size is None else positive_int(batch_size, "batch_size")
    # flags checked: shuffle="no" was truthy, and shuffled
    shuffle = flag(shuffle, "batches: shuffle")
    reuse_buffers = flag(reuse_buffers, "batches: reuse_buffers")
    _checked_seed(seed, "batches: seed")
    order = resolve(seed, "batches: seed").permutation(len(X)) if shuffle else None
    return _iterate(X, y, size, order, reuse_buffers)


def _checked_seed(seed: object, owner: str) -> None:
    """``seed`` checked even where it is not used (shuffle=False): seed=-1 or 1.0 had been
    taken silently there, and refused only once shuffle=True."""
    if seed is not None and not is_seed_object(seed):
        check_seed(seed, owner)


def _iterate(X: np.ndarray, y: np.ndarray, size: int, order: np.ndarray | None,
             reuse: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if order is None:
        for start in range(0, len(X), size):
            yield X[start:start + size], y[start:start + size]
        return
    yield from _gathered(X, y, (order[start:start + size] for start in range(0, len(X), size)),
                         reuse)


def _gathered(X: np.ndarray, y: np.ndarray, indices: Iterable[np.ndarray],
              reuse: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(X[idx], y[idx]) for each idx of ``indices``; reuse: into the same arrays while the
    batches fit in them (a fresh array per step costs page faults on every batch). X and y
    may be Tensors: their rows are then gathered on their device."""
    x_buf = y_buf = None
    for idx in indices:
        n = len(idx)
        if not reuse or x_buf is None or n > len(x_buf):
            x_buf = memory.empty((n, *X.shape[1:]), like=X)
            y_buf = memory.empty((n, *y.shape[1:]), y.dtype, like=y)
        yb = (_C.gather_rows(y, idx, out=y_buf[:n]) if memory.is_tensor(y)
              else np.take(y, idx, axis=0, out=y_buf[:n]))
        yield _C.gather_rows(X, idx, out=x_buf[:n]), yb


def train_val_split(X: np.ndarray, y: np.ndarray, val_fraction: float = 0.2,
                    shuffle: bool = True, seed: int | np.random.Generator | None = None,
                    stratify: bool | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split into (X_train, y_train, X_val, y_val), ``round(n * val_fraction)`` samples
    going to validation.

    shuffle=True draws the split at random from ``seed`` (an int, a NumPy Generator, or
    None for the global generator); shuffle=False takes the last samples. stratify (by
    default: when y holds 1-D integer class labels) takes the validation samples class by
    class, so that each class keeps its share in both sets (to within one sample); the
    per-class counts are ``val_fraction`` of each class rounded so that they add up to
    the total (largest remainders first). Keras's ``validation_split``, by contrast,
    takes the last rows as they are, neither shuffled nor stratified. Both parts keep the
    drawn order (shuffled when shuffle=True).
    """
    X, y = _pair(X, y)
    val_fraction = number(val_fraction, "train_val_split: val_fraction")  # "0.2": a comparison's TypeError
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1); got {val_fraction}")
    shuffle = flag(shuffle, "train_val_split: shuffle")  # "False" was truthy, and shuffled
    if stratify is not None:
        stratify = flag(stratify, "train_val_split: stratify")
    _checked_seed(seed, "train_val_split: seed")
    n = len(X)
    n_val = int(round(n * val_fraction))
    if n_val == 0 or n_val == n:
        raise ValueError(f"val_fraction={val_fraction} of {n} samples leaves an empty "
                         "training or validation set")
    if stratify is None:
        stratify = y.ndim == 1 and y.dtype.kind in "biu"
    elif stratify and y.ndim != 1:
        raise ValueError(f"stratify=True needs class labels y of shape (n,); got {y.shape}")
    order = resolve(seed, "train_val_split: seed").permutation(n) if shuffle else np.arange(n)
    is_val = (_stratified_tail(y[order], n_val) if stratify
              else np.arange(n) >= n - n_val)
    return X[order[~is_val]], y[order[~is_val]], X[order[is_val]], y[order[is_val]]


def _stratified_tail(labels: np.ndarray, n_val: int) -> np.ndarray:
    """A mask choosing the last k_c samples of each class c in ``labels``' order, the k_c
    proportional to the class sizes and summing to n_val."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * (n_val / len(labels))
    take = np.floor(quota).astype(np.int64)
    extra = np.argsort(-(quota - take), kind="stable")[:n_val - take.sum()]
    take[extra] += 1
    # Position of each sample among the samples of its class, counted from the end.
    grouped = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(labels), np.int64)
    rank[grouped] = np.arange(len(labels)) - np.repeat(starts, counts)
    from_end = counts[inverse] - 1 - rank
    return from_end < take[inverse]


class Augment:
    """Random image augmentation applied to each training batch on the fly:
    ``fit(..., augment=Augment((8, 8), max_shift=1, max_rotation=10))``.

    image_shape: one image's shape, (height, width) or (channels, height, width). A batch
    may come as (n, *image_shape) or flattened, (n, prod(image_shape)); the result has
    the batch's shape. Labels are untouched: only the images change.

    Per image (in C++, ``fastnn._C.augment_images``): a shift of up to ``max_shift``
    pixels in each direction, a horizontal flip with probability 1/2 (``flip=True``), a
    rotation of up to ``max_rotation`` degrees (one affine map, bilinear sampling, zeros
    outside the image), then Gaussian noise of standard deviation ``noise_std``.

    Random numbers come from a counter-based generator: the instance's ``seed`` (drawn
    from ``fastnn.seed``'s generator when the object is built, unless given) and an
    ``offset`` that advances with every image transformed, so each batch gets fresh
    transformations and the same seed replays the same sequence, whatever the thread count.
    """

    def __init__(self, image_shape: tuple[int, ...], max_shift: float = 0,
                 flip: bool = False, max_rotation: float = 0, noise_std: float = 0,
                 seed: int | None = None) -> None:
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
        if len(shape) not in (2, 3):
            raise ValueError("Augment: image_shape must be (height, width) or (channels, "
                             f"height, width); got {image_shape!r}")
        self.image_shape = tuple(positive_int(d, "image_shape") for d in shape)
        c, h, w = self.image_shape if len(self.image_shape) == 3 else (0, 0, 0)
        if w in (1, 3, 4) and min(c, h) > 4:  # (8, 8, 3) flipped colour channels, silently
            warnings.warn(f"Augment: image_shape {self.image_shape} looks like (height, width, "
                          f"channels); Augment takes (channels, height, width), as the layers "
                          f"do: pass ({w}, {c}, {h}) and images of that layout (for channels-last "
                          "arrays, x.transpose(0, 3, 1, 2))", UserWarning, stacklevel=2)
        self.max_shift = non_negative(max_shift, "Augment: max_shift")
        height, width = self.image_shape[-2:]
        if self.max_shift >= min(height, width):
            raise ValueError(f"Augment: max_shift={max_shift!r} must be below the image's height "
                             f"and width ({height} x {width}): shifted that far, an image leaves "
                             "the frame (all zeros)")
        self.flip = flag(flip, "Augment: flip")
        self.max_rotation = non_negative(max_rotation, "Augment: max_rotation")
        self.noise_std = non_negative(noise_std, "Augment: noise_std")
        self.seed = stream_seed(seed, "Augment")
        self.offset = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """A randomly transformed float32 copy of the batch ``x``."""
        x = as_float32(x, "Augment: x")
        size = math.prod(self.image_shape)
        if x.shape[1:] != self.image_shape and (x.ndim != 2 or x.shape[1] != size):
            raise ValueError(f"Augment: expected a batch of shape (n, {size}) or "
                             f"(n, {', '.join(map(str, self.image_shape))}); got {x.shape}")
        images = x.reshape(len(x), *self.image_shape)
        out = _C.augment_images(images, seed=self.seed, offset=self.offset,
                                max_shift=self.max_shift, flip=self.flip,
                                max_rotation=self.max_rotation, noise_std=self.noise_std)
        # modulo 2**64, as the kernel's counter (Dropout's offset likewise)
        self.offset = (self.offset + _C.AUGMENT_STREAM_PER_IMAGE * len(x)) % 2**64
        return out.reshape(x.shape)

    def __repr__(self) -> str:
        return (f"Augment(image_shape={self.image_shape}, max_shift={self.max_shift}, "
                f"flip={self.flip}, max_rotation={self.max_rotation}, "
                f"noise_std={self.noise_std}, seed={self.seed})")
