"""Batching (full batch, single sample, mini-batch) and train/validation splits."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ._checks import as_float32, numeric, positive_int
from ._random import resolve


def _pair(X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    X = as_float32(X, "X")
    y = numeric(y, "y")
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise ValueError(f"X and y must have the same number of samples; got X {X.shape} "
                         f"and y {y.shape}")
    return X, y


def batches(X: np.ndarray, y: np.ndarray, batch_size: int | None = 32, shuffle: bool = True,
            seed: int | np.random.Generator | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """An iterator over (X batch, y batch) pairs covering the data once (one epoch).

    X batches are C-contiguous float32; y keeps its dtype. batch_size=None gives the
    whole set at once (batch gradient descent), 1 one sample at a time (stochastic), n
    mini-batches of n (the last may be smaller). shuffle draws a new order from ``seed``:
    an int, a NumPy Generator, or None for the global generator (``fastnn.seed``).
    """
    X, y = _pair(X, y)
    size = len(X) if batch_size is None else positive_int(batch_size, "batch_size")
    order = resolve(seed).permutation(len(X)) if shuffle else None
    return _iterate(X, y, size, order)


def _iterate(X: np.ndarray, y: np.ndarray, size: int, order: np.ndarray | None
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(X), size):
        if order is None:
            yield X[start:start + size], y[start:start + size]
        else:
            idx = order[start:start + size]
            yield X[idx], y[idx]


def train_val_split(X: np.ndarray, y: np.ndarray, val_fraction: float = 0.2,
                    shuffle: bool = True, seed: int | np.random.Generator | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split into (X_train, y_train, X_val, y_val), the last ``val_fraction`` of the samples
    (after a shuffle drawn from ``seed`` when shuffle=True) going to validation."""
    X, y = _pair(X, y)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    n = len(X)
    n_val = int(round(n * val_fraction))
    if n_val == 0 or n_val == n:
        raise ValueError(f"val_fraction={val_fraction} of {n} samples leaves an empty "
                         "training or validation set")
    order = resolve(seed).permutation(n) if shuffle else np.arange(n)
    train, val = order[:n - n_val], order[n - n_val:]
    return X[train], y[train], X[val], y[val]
