"""Argument checks shared by layers, losses and the training loop."""

from __future__ import annotations

import numpy as np

_NUMERIC_KINDS = "biuf"


def numeric(x: object, name: str) -> np.ndarray:
    """``x`` as a NumPy array; TypeError naming ``name`` unless it holds real numbers."""
    arr = np.asarray(x)
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    return arr


def as_float32(x: object, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.asarray(numeric(x, name), dtype=np.float32, order="C")


def positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1; TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return int(value)
