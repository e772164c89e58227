"""Where fastnn's arrays come from.

Every array the library allocates for a model (parameters and their gradients, optimizer
state, the arrays a model run reuses, training batches) is made here, so that where it
lives and how it is laid out are decided in one place. Layers, losses and optimizers never
call ``np.empty`` or ``np.asarray`` themselves; a layer of your own should use these too.

On the CPU the arrays are NumPy arrays whose data start on a 64-byte boundary (``ALIGNMENT``:
a cache line, and one AVX-512 vector). NumPy's own start 16 bytes past one, so that every
vector load of a row a kernel reads in place straddles two cache lines: on an Intel Xeon that
cost the product dY W of a batch-32 backward pass 10% and the small products' dot kernels 20%.
The CUDA build adds device arrays (``fastnn.Tensor``) behind the same functions: an array made
``like`` a Tensor, or for a ``device`` "cuda", is a Tensor on that device (from the caching
allocator), so that a layer written with these functions runs on either.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._device import check_device

ALIGNMENT = 64  # bytes

__all__ = ["ALIGNMENT", "asarray", "device_of", "empty", "empty_like", "full", "is_aligned",
           "is_tensor", "owner", "to_host", "zeros", "zeros_like"]


def _C() -> Any:
    from . import _C as ext

    return ext


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    elif hasattr(shape, "__iter__") and not isinstance(shape, (str, bytes)):
        shape = tuple(shape)  # 3.0 had been tuple()'s "'float' object is not iterable"
    else:
        raise TypeError(f"shape must be an integer or a tuple of integers; got "
                        f"{type(shape).__name__} {shape!r:.100}")
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"shape must hold integers >= 0; got {shape}")
    return tuple(int(n) for n in shape)


_TENSOR: list = []  # [fastnn.tensor.Tensor], imported on first use (tensor imports this module)


def _tensor_type() -> type:
    if not _TENSOR:
        from .tensor import Tensor

        _TENSOR.append(Tensor)
    return _TENSOR[0]


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a ``fastnn.Tensor`` (device memory) rather than a host array."""
    return type(x).__name__ == "Tensor" and isinstance(x, _tensor_type())


def empty(shape: int | Sequence[int], dtype: Any = np.float32, *, like: Any = None,
          device: Any = None) -> Any:
    """A new C-contiguous array of ``shape`` and ``dtype`` (float32 unless said otherwise),
    its values undefined, on the device of ``like`` (an array) or ``device`` (default the
    CPU): a NumPy array with its data aligned to ``ALIGNMENT`` bytes, or a Tensor."""
    shape, dtype = _shape(shape), np.dtype(dtype)
    if like is not None and is_tensor(like):
        return _tensor_type()(_C().DeviceArray.empty(list(shape), dtype.name, like.device))
    where = device_of(like) if like is not None else "cpu" if device is None else device
    where = check_device(where, "memory.empty: device")
    if where != "cpu":
        return _tensor_type()(_C().DeviceArray.empty(list(shape), dtype.name,
                                                     "cuda:0" if where == "cuda" else where))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes + ALIGNMENT > np.iinfo(np.intp).max:  # NumPy: "Maximum allowed dimension exceeded"
        raise ValueError(f"shape {shape} of {dtype} needs {nbytes:,} bytes, more than an "
                         "array can hold")
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def zeros(shape: int | Sequence[int], dtype: Any = np.float32, *, like: Any = None,
          device: Any = None) -> np.ndarray:
    """As ``empty``, filled with zeros."""
    out = empty(shape, dtype, like=like, device=device)
    out.fill(0)
    return out


def full(shape: int | Sequence[int], value: float, dtype: Any = np.float32, *,
         like: Any = None, device: Any = None) -> np.ndarray:
    """As ``empty``, filled with ``value`` (for float32, a real number whose finite values
    must lie within float32's range: ValueError otherwise, where NumPy's cast made it inf)."""
    if np.dtype(dtype) == np.float32:
        value = _fill_value(value, "memory.full: value")
    out = empty(shape, dtype, like=like, device=device)
    out.fill(value)
    return out


def _fill_value(value: Any, name: str) -> float:
    """``value`` to fill a float32 array with: a real number (TypeError naming ``name`` for
    a string, a bool, a complex number), NaN and infinities as they are, and a finite value
    at most float32's largest in size (ValueError naming ``name``: the cast made it inf)."""
    from ._checks import _within_float32, number  # _checks imports this module

    value = number(value, name)
    return _within_float32(value, name) if math.isfinite(value) else value


def _array(a: Any, owner: str) -> None:
    """TypeError naming ``owner`` unless ``a`` is a NumPy array or a Tensor (a list had been
    an AttributeError on .dtype, .size or .base)."""
    if not (isinstance(a, np.ndarray) or is_tensor(a)):
        raise TypeError(f"memory.{owner}: a must be a NumPy array or a fastnn.Tensor; got "
                        f"{type(a).__name__} {a!r:.100}")


def empty_like(a: Any, dtype: Any = None) -> np.ndarray:
    """A new aligned array of ``a``'s shape (and dtype, unless given), on ``a``'s device."""
    _array(a, "empty_like")
    return empty(np.shape(a), a.dtype if dtype is None else dtype, like=a)


def zeros_like(a: Any, dtype: Any = None) -> np.ndarray:
    """As ``empty_like``, filled with zeros."""
    _array(a, "zeros_like")
    return zeros(np.shape(a), a.dtype if dtype is None else dtype, like=a)


def asarray(x: Any, dtype: Any = None, *, copy: bool = False, like: Any = None) -> Any:
    """``x`` as a C-contiguous array (of ``dtype`` where given): ``x`` itself when it already is
    one and ``copy`` is False (the caller's array is used where it is, aligned or not), else a
    new aligned array holding its values. With ``like`` (an array), on its device: a Tensor
    ``like`` makes ``x`` a Tensor there (host data copied over); a Tensor ``x`` stays one."""
    if is_tensor(x) or (like is not None and is_tensor(like)):
        target = like if like is not None and is_tensor(like) else x
        dtype = np.dtype(x.dtype if dtype is None else dtype)
        if is_tensor(x) and x.device == target.device and x.dtype == dtype and not copy:
            return x
        out = empty(np.shape(x), dtype, like=target)
        if is_tensor(x) and x.dtype != dtype:
            x = x.numpy()
        out.copy_(x)
        return out
    if not copy:
        arr = np.asarray(x, dtype=dtype)
        if arr.flags.c_contiguous:
            return arr
    else:
        arr = np.asarray(x, dtype=dtype)
    out = empty(arr.shape, arr.dtype)
    out[...] = arr
    return out


def device_of(x: Any) -> str:
    """The device an array lives on: a Tensor's ("cuda:0"), "cpu" for NumPy arrays and
    anything NumPy takes."""
    return x.device if is_tensor(x) else "cpu"


def to_host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array in host memory (no copy for one already there; a Tensor's
    values copied back)."""
    return x.numpy() if is_tensor(x) else np.asarray(x)


def is_aligned(a: Any) -> bool:
    """Whether ``a``'s data start on an ``ALIGNMENT``-byte boundary (an empty array has no
    data to align: always; a Tensor's allocator aligns every block)."""
    _array(a, "is_aligned")
    return is_tensor(a) or a.size == 0 or a.ctypes.data % ALIGNMENT == 0


def owner(a: Any) -> Any:
    """The array that owns ``a``'s memory (``a`` itself, or the base of a view of it)."""
    _array(a, "owner")
    if is_tensor(a):
        return a if a.base is None else a.base
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a
