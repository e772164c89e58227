"""Datasets that load without a network: ``load(name)`` -> (X_train, y_train, X_test, y_test).

X is float32 (samples, features); y is int64 class labels (samples,).
"""

from __future__ import annotations

import numpy as np


def _xor(seed: int) -> tuple[np.ndarray, ...]:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return X, y, X.copy(), y.copy()


def _digits(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise ImportError('the "digits" dataset needs scikit-learn: pip install "fastnn[data]" '
                          "(or pip install scikit-learn)") from e
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=seed)
    return (np.ascontiguousarray(X_train), y_train, np.ascontiguousarray(X_test), y_test)


_LOADERS = {"digits": _digits, "xor": _xor}


def available() -> list[str]:
    """The names ``load`` accepts."""
    return sorted(_LOADERS)


def load(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load a dataset as (X_train, y_train, X_test, y_test).

    - "digits": scikit-learn's 8x8 digits (1,797 images, 64 features scaled to [0, 1],
      10 classes), split 80/20 stratified by class with ``seed``; needs scikit-learn.
    - "xor": the four XOR points, labels 0/1 (use them with CrossEntropy on 2 outputs,
      or BinaryCrossEntropy on 1 output); the test set is the training set. ``seed``
      is unused.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return _LOADERS[key](seed)
