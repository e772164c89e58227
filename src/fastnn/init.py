"""Weight initialisers: functions ``(shape, fan_in, fan_out, rng) -> float32 array``.

``fan_in`` is the number of inputs of each unit (a Dense layer's ``in_features``) and
``fan_out`` the number of outputs (``out_features``). ``zeros``, ``xavier_*``/``glorot_*``
and ``he_*``/``kaiming_*`` are initialisers themselves; ``constant(value)``,
``normal(std)`` and ``uniform(limit)`` build one. The formulas are PyTorch's
(``torch.nn.init``; its Kaiming gain sqrt(2) for ReLU; plain, not truncated, normals):

=================  =========================================
xavier_uniform     U(-a, a), a = sqrt(6 / (fan_in + fan_out))
xavier_normal      N(0, 2 / (fan_in + fan_out))
he_uniform         U(-a, a), a = sqrt(6 / fan_in)
he_normal          N(0, 2 / fan_in)
=================  =========================================

Xavier/Glorot keeps the variance of activations and gradients roughly constant through
layers of sigmoid/tanh units; He/Kaiming does so for ReLU-like units, which zero half
their inputs. ``get(name)`` returns an initialiser by name.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import memory
from ._checks import non_negative

TYPE_CHECKING = False
if TYPE_CHECKING:
    Initializer = Callable[[tuple, int, int, np.random.Generator], np.ndarray]


def __getattr__(name: str) -> object:
    # The type alias Initializer, Callable[[tuple, int, int, np.random.Generator],
    # np.ndarray], is made on first access: np.random (numpy.random) is a costly import
    # that ``import fastnn`` need not pay. Here it appears only in annotations.
    if name == "Initializer":
        alias = Callable[[tuple, int, int, np.random.Generator], np.ndarray]
        globals()["Initializer"] = alias
        return alias
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Initializer"})


def zeros(shape: tuple, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """All zeros (a bias; for weights it leaves every unit of a layer identical)."""
    return memory.zeros(shape)


def constant(value: float) -> Initializer:
    """An initialiser filling the array with ``value``."""
    value = float(value)

    def init(shape: tuple, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
        return memory.full(shape, value)

    return init


def normal(std: float = 0.05) -> Initializer:
    """An initialiser drawing from N(0, std^2) (default 0.05, as Keras's RandomNormal)."""
    std = non_negative(std, "std")

    def init(shape: tuple, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, std, shape).astype(np.float32)

    return init


def uniform(limit: float = 0.05) -> Initializer:
    """An initialiser drawing from U(-limit, limit) (default 0.05, as Keras's RandomUniform)."""
    limit = non_negative(limit, "limit")

    def init(shape: tuple, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-limit, limit, shape).astype(np.float32)

    return init


def xavier_uniform(shape: tuple, fan_in: int, fan_out: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Glorot uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    return uniform(math.sqrt(6.0 / (fan_in + fan_out)))(shape, fan_in, fan_out, rng)


def xavier_normal(shape: tuple, fan_in: int, fan_out: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Glorot normal: N(0, 2 / (fan_in + fan_out))."""
    return normal(math.sqrt(2.0 / (fan_in + fan_out)))(shape, fan_in, fan_out, rng)


def he_uniform(shape: tuple, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """He (Kaiming) uniform: U(-a, a) with a = sqrt(6 / fan_in)."""
    return uniform(math.sqrt(6.0 / fan_in))(shape, fan_in, fan_out, rng)


def he_normal(shape: tuple, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """He (Kaiming) normal: N(0, 2 / fan_in)."""
    return normal(math.sqrt(2.0 / fan_in))(shape, fan_in, fan_out, rng)


glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
kaiming_uniform = he_uniform
kaiming_normal = he_normal

_NAMES: dict[str, Initializer] = {
    "zeros": zeros,
    "normal": normal(),
    "uniform": uniform(),
    "xavier_uniform": xavier_uniform,
    "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_normal": xavier_normal,
    "he_uniform": he_uniform,
    "kaiming_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_normal": he_normal,
}


def get(name: str | Initializer) -> Initializer:
    """An initialiser by name (case-insensitive): zeros, normal (std 0.05), uniform
    (limit 0.05), xavier_uniform/glorot_uniform, xavier_normal/glorot_normal,
    he_uniform/kaiming_uniform, he_normal/kaiming_normal. A callable is returned as is."""
    if callable(name):
        return name
    if not isinstance(name, str):
        raise TypeError(f"init must be a name or a callable (shape, fan_in, fan_out, rng); "
                        f"got {type(name).__name__}")
    key = name.lower()
    if key not in _NAMES:
        raise ValueError(f"unknown init {name!r}; expected one of {', '.join(_NAMES)}")
    return _NAMES[key]
