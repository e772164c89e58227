"""Functional ops for the ``forward`` of a model of your own (exported as ``fastnn.relu``,
``fastnn.add``, ...): ``relu``, ``sigmoid``, ``tanh``, ``softmax``, ``add``, ``mul``,
``concat``, ``reshape``, ``flatten``.

Called inside the recorded forward pass of a Module that has no ``backward`` of its own
(see ``fastnn.nn.Module``), each call is recorded with its backward pass, so the model's
backward is derived; elsewhere they simply compute. Inputs are float32 arrays (converted
when they are not); ``add`` and ``mul`` broadcast as NumPy does, and one of their operands
may be a constant (a number or an array not computed from the input), which gets no
gradient. Any input may also be an ``nn.Parameter`` of the model (a learnable scale or
shift, ``fnn.mul(h, self.alpha)`` as torch's ``h * self.alpha``): the backward pass adds
its gradient to its ``grad``. The activations run the kernels of the activation layers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from . import _C
from ._checks import as_float32
from .nn.autograd import active
from .nn.module import Parameter

__all__ = ["add", "concat", "flatten", "mul", "relu", "reshape", "sigmoid", "softmax", "tanh"]

Backward = Callable[[np.ndarray, list[bool]], list["np.ndarray | None"]]


def _op(name: str, inputs: Sequence[Any], forward: Callable[..., np.ndarray],
        backward: Backward) -> np.ndarray:
    """``forward(*inputs)``, recorded with ``backward`` inside a recorded forward pass
    (an input may be a Parameter of the model: its values, and its gradient recorded)."""
    tape = active()
    if tape is None:
        return forward(*(a.data if isinstance(a, Parameter) else a for a in inputs))
    return tape.call_op(name, inputs, forward, backward)


def _grad(g: np.ndarray) -> np.ndarray:
    # np.asarray, not np.ascontiguousarray: that made a 0-d gradient (1,), which the
    # kernels refused for a 0-d value's backward (a scalar gate through fnn.sigmoid)
    return np.asarray(g, dtype=np.float32, order="C")


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    y = None

    def forward(xp: Any) -> np.ndarray:
        nonlocal y
        y = _C.activation_forward(name, as_float32(xp, f"fnn.{name}: x"), 0.0)
        return y

    def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
        return [_C.activation_backward(name, y, _grad(g), 0.0)]

    return _op(name, [x], forward, backward)


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, element-wise."""
    return _activation("relu", x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, element-wise."""
    return _activation("sigmoid", x)


def tanh(x: np.ndarray) -> np.ndarray:
    """``tanh(x)``, element-wise."""
    return _activation("tanh", x)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a (batch, classes) array. For classification, hand raw logits
    to ``losses.CrossEntropy`` instead, which is numerically stabler."""
    y = None

    def forward(xp: Any) -> np.ndarray:
        nonlocal y
        xp = as_float32(xp, "fnn.softmax: x")
        if xp.ndim != 2:
            raise ValueError(f"fnn.softmax: x must be 2-D (batch, classes); got shape {xp.shape}")
        y = _C.softmax_forward(xp)
        return y

    def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
        return [_C.softmax_backward(y, _grad(g))]

    return _op("softmax", [x], forward, backward)


def _operand(value: Any, name: str) -> np.ndarray:
    if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
        return value
    return as_float32(value, name)


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The gradient of an operand of ``shape`` that broadcasting stretched to g's shape:
    summed over the stretched axes."""
    if g.shape == shape:
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _binary(name: str, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _operand(a, f"fnn.{name}: a"), _operand(b, f"fnn.{name}: b")
    try:
        np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        raise ValueError(f"fnn.{name}: a and b must have broadcastable shapes; got "
                         f"{np.shape(a)} and {np.shape(b)}") from None
    return a, b


def add(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """``a + b``, element-wise with broadcasting (a residual connection:
    ``fnn.add(x, self.block(x))``)."""
    shapes: list[tuple] = []

    def forward(ap: Any, bp: Any) -> np.ndarray:
        ap, bp = _binary("add", ap, bp)
        shapes[:] = [np.shape(ap), np.shape(bp)]
        return np.add(ap, bp, dtype=np.float32)

    def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
        return [_unbroadcast(g, s) if n else None for s, n in zip(shapes, need)]

    return _op("add", [a, b], forward, backward)


def mul(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """``a * b``, element-wise with broadcasting (a gate, a scale: ``fnn.mul(h, 0.5)``)."""
    operands: list[Any] = []

    def forward(ap: Any, bp: Any) -> np.ndarray:
        operands[:] = _binary("mul", ap, bp)
        return np.multiply(*operands, dtype=np.float32)

    def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
        a_, b_ = operands
        return [_unbroadcast(np.multiply(g, b_, dtype=np.float32), np.shape(a_)) if need[0]
                else None,
                _unbroadcast(np.multiply(g, a_, dtype=np.float32), np.shape(b_)) if need[1]
                else None]

    return _op("mul", [a, b], forward, backward)


def concat(arrays: Sequence[np.ndarray], axis: int = 1) -> np.ndarray:
    """The arrays joined along ``axis`` (default 1: features or channels, after the batch
    axis), as ``np.concatenate``: two heads side by side, ``fnn.concat([h1, h2])``."""
    if not isinstance(arrays, (list, tuple)) or not arrays:
        raise TypeError(f"fnn.concat: arrays must be a non-empty list of arrays; got "
                        f"{type(arrays).__name__}")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"fnn.concat: axis must be an integer; got {type(axis).__name__} {axis!r:.60}")
    sizes: list[int] = []
    where: list[int] = []

    def forward(*parts: Any) -> np.ndarray:
        parts = [as_float32(p, f"fnn.concat: arrays[{i}]") for i, p in enumerate(parts)]
        ndim = parts[0].ndim
        if not -ndim <= axis < ndim:
            raise ValueError(f"fnn.concat: axis must be in [{-ndim}, {ndim}); got {axis}")
        try:
            out = np.concatenate(parts, axis=axis)
        except ValueError:
            raise ValueError(f"fnn.concat: the arrays' shapes must agree except along axis "
                             f"{axis}; got {[p.shape for p in parts]}") from None
        where[:] = [axis % ndim]
        sizes[:] = [p.shape[where[0]] for p in parts]
        return out

    def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
        pieces = np.split(g, np.cumsum(sizes)[:-1], axis=where[0])
        return [p if n else None for p, n in zip(pieces, need)]

    return _op("concat", list(arrays), forward, backward)


def reshape(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``x`` with the whole ``shape`` (batch axis included; one entry may be -1), as
    ``np.reshape``: e.g. ``fnn.reshape(x, (-1, 1, 8, 8))`` turns rows into images."""
    before: list[tuple] = []

    def forward(xp: Any) -> np.ndarray:
        xp = as_float32(xp, "fnn.reshape: x")
        try:
            out = xp.reshape(shape)
        except (TypeError, ValueError):
            raise ValueError(f"fnn.reshape: cannot reshape x of shape {xp.shape} "
                             f"({xp.size} values) to {shape!r}") from None
        before[:] = [xp.shape]
        return out

    def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
        return [g.reshape(before[0])]

    return _op("reshape", [x], forward, backward)


def flatten(x: np.ndarray) -> np.ndarray:
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...), as ``nn.Flatten``."""
    before: list[tuple] = []

    def forward(xp: Any) -> np.ndarray:
        xp = as_float32(xp, "fnn.flatten: x")
        if xp.ndim < 1:
            raise ValueError(f"fnn.flatten: x needs a batch axis; got shape {xp.shape}")
        before[:] = [xp.shape]
        return xp.reshape(len(xp), math.prod(xp.shape[1:]))

    def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
        return [g.reshape(before[0])]

    return _op("flatten", [x], forward, backward)
