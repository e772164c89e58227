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
    """As ``empty``, filled with ``value``: for a numeric dtype a real number the dtype holds
    as it is (ValueError naming ``value`` and the dtype otherwise: NumPy's cast had made 1e30
    inf in float16 and failed naming nothing for int32)."""
    if np.dtype(dtype).kind in "iuf":
        value = _fill_value(value, "memory.full: value", dtype)
    out = empty(shape, dtype, like=like, device=device)
    out.fill(value)
    return out


def _fill_value(value: Any, name: str, dtype: Any = np.float32) -> float | int:
    """``value`` to fill an array of ``dtype`` (integer or float) with: a real number
    (TypeError naming ``name`` for a string, a bool, a complex number) that ``dtype`` holds as
    it is (ValueError naming ``name`` otherwise): for float32 NaN, infinities and finite values
    at most its largest in size; for an integer dtype a whole number in its range, returned as
    an int (a float would round 2**53 + 1)."""
    from ._checks import _within_float32, number  # _checks imports this module

    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        whole = int(value)
    else:
        try:
            real = number(value, name)
        except OverflowError:  # float() of an int beyond float64's range named nothing
            raise ValueError(f"{name} (an integer of {int(value).bit_length()} bits) does not "
                             f"fit {dtype}: it holds {_holds(dtype)}") from None
        if dtype == np.float32:
            return _within_float32(real, name) if math.isfinite(real) else real
        if dtype.kind == "f":
            if math.isfinite(real) and abs(real) > float(np.finfo(dtype).max):
                raise ValueError(f"{name} {real:g} does not fit {dtype}: it holds "
                                 f"{_holds(dtype)}")
            return real
        if not real.is_integer():  # NaN and the infinities too
            raise ValueError(f"{name} {real} does not fit {dtype}: it holds {_holds(dtype)}")
        whole = int(real)
    info = np.iinfo(dtype)
    if not info.min <= whole <= info.max:
        raise ValueError(f"{name} {value} does not fit {dtype}: it holds {_holds(dtype)}")
    return whole


def _holds(dtype: np.dtype) -> str:
    """What an array of numeric ``dtype`` holds, for an error message."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return f"whole numbers in [{info.min}, {info.max}]"
    return f"numbers at most {float(np.finfo(dtype).max):.4g} in size, the infinities and NaN"


def _as_dtype(x: Any, dtype: Any, name: str) -> Any:
    """``x``'s values (host data) as an array of numeric ``dtype``, refused with a ValueError
    naming ``name`` where the cast would change them (NumPy's cast wrapped 300 round to 44 in
    uint8, truncated 2.9 to 2 and made NaN int64's smallest, with a warning at most): float32
    as ``_checks.as_float32``; an integer dtype takes whole numbers in its range; another
    float dtype values within its range or not finite."""
    from ._checks import as_float32, numeric  # _checks imports this module

    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return as_float32(x, name)
    arr = numeric(x, name)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.dtype.kind == "f":
            # the exclusive upper bound is exact in floating point; float(info.max) is not
            upper = 2.0 ** (info.bits - (info.min < 0))
            fits = (arr == np.trunc(arr)) & (arr >= info.min) & (arr < upper)  # NaN: False
        else:
            fits = (arr >= info.min) & (arr <= info.max)
    else:
        fits = ~np.isfinite(arr) | (np.abs(arr) <= np.finfo(dtype).max)
    if not fits.all():
        bad = arr[~fits]
        raise ValueError(f"{name} ({arr.dtype}) holds values {dtype} cannot hold, such as "
                         f"{', '.join(map(str, bad[:3].tolist()))}: {dtype} holds "
                         f"{_holds(dtype)}")
    return arr.astype(dtype, copy=False)


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
