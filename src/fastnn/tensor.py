"""Arrays in device memory: ``fastnn.Tensor``, made by ``fastnn.asarray(x, device="cuda")`` or
``tensor.to("cuda")``, read back with ``.numpy()``, and handed to and taken from PyTorch, CuPy
and NumPy without a copy through DLPack (``__dlpack__``, ``__dlpack_device__``,
``fastnn.from_dlpack``) and ``__cuda_array_interface__``.

CPU arrays stay NumPy arrays: ``asarray(x)`` and ``from_dlpack`` of a CPU tensor give one.
Device memory comes from a caching allocator (``memory_stats``): a freed block is reused by
the next request of its size, so that a steady state allocates nothing from the device.
A Tensor holds float32 data or the integer types labels come in (int64, int32, uint8),
C-contiguous; ``t[a:b]``, ``t[i]`` and ``t.reshape(...)`` are views that share its memory
(the unit an optimizer's flat buffer is cut into), ``fill_`` and ``copy_`` write in place.
Ops on Tensors, at the level of ``fastnn._C`` (each returns a Tensor where it makes a new
array): the GEMM with its bias and activation epilogue (cuBLAS) and its reference, the
elementwise activations forward and backward, the column sum of the bias gradient, the
softmax cross-entropy, dropout (the CPU's masks), the SGD and Adam steps and the mini-batch
gather (csrc/cuda); on them the layers an MLP is made of, ``CrossEntropy`` and those
optimizers run, so that ``model.to("cuda")`` and ``fit(..., device="cuda")`` train there.
"""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from . import _C
from .memory import _as_dtype, _fill_value
from ._checks import torch_hint
from ._device import check_device

_DLPACK_CPU, _DLPACK_CUDA = 1, 2
_DTYPES = {name: np.dtype(name) for name in ("float32", "int64", "int32", "uint8")}
_LEGACY_DEFAULT_STREAM = 1  # DLPack's and __cuda_array_interface__'s name for it


class Tensor:
    """An array in device memory (see the module's docstring). Not made directly: use
    ``fastnn.asarray(x, device=...)`` or ``fastnn.from_dlpack(x)``."""

    __slots__ = ("_array", "_base")

    def __init__(self, array: _C.DeviceArray, base: Tensor | None = None) -> None:
        if not isinstance(array, _C.DeviceArray):
            raise TypeError("Tensor wraps device memory: make one with fastnn.asarray(x, "
                            f"device='cuda') or fastnn.from_dlpack(x), got {type(array).__name__}")
        self._array = array
        self._base = base  # the tensor whose memory this view shares (None: its own)

    @property
    def base(self) -> Tensor | None:
        """The tensor whose memory this one is a view of (None when it owns its memory), as
        NumPy's ``ndarray.base``."""
        return self._base

    def _view(self, array: _C.DeviceArray) -> Tensor:
        return Tensor(array, self if self._base is None else self._base)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self._array.dtype]

    @property
    def device(self) -> str:
        """"cuda:N" (or "cpu" for a DeviceArray made on the CPU by the tests)."""
        return self._array.device

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self._array.nbytes

    def numpy(self) -> np.ndarray:
        """A copy in host memory, as a NumPy array."""
        return self._array.numpy()

    def to(self, device: Any) -> Tensor | np.ndarray:
        """This tensor on ``device``: itself where it already is, a NumPy array for "cpu",
        else a copy on the other device."""
        device = check_device(device, "Tensor.to")
        if device == "cpu":
            return self.numpy()
        if _canonical(device) == self.device:
            return self
        return Tensor(_C.DeviceArray.from_numpy(self.numpy(), _canonical(device)))

    def __getitem__(self, index: Any) -> Tensor:
        """A view of rows, sharing the memory: ``t[i]`` (row i, one dimension fewer) or
        ``t[a:b]`` (rows a to b; a step of 1)."""
        rows = self.shape[0] if self.shape else 0
        if not self.shape:
            raise IndexError("a 0-d tensor has no rows to index")
        if isinstance(index, slice):
            begin, end, step = index.indices(rows)
            if step != 1:
                raise ValueError(f"Tensor rows take a step of 1 (a view in place); got {step}")
            return self._view(self._array.view_rows(begin, max(begin, end)))
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index) + rows if index < 0 else int(index)
            if not 0 <= i < rows:
                raise IndexError(f"row {index} is out of range for a tensor of {rows} rows")
            return self._view(self._array.view_rows(i, i + 1).reshape(list(self.shape[1:])))
        raise TypeError(f"Tensor indices are a row or a slice of rows; got {type(index).__name__}")

    def reshape(self, *shape: Any) -> Tensor:
        """The same memory with another shape of as many elements (a view); one dimension
        may be -1, inferred from the others (as NumPy's and torch's reshape)."""
        dims = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        dims = [operator.index(d) for d in dims]
        if dims.count(-1) > 1:
            raise ValueError(f"reshape: at most one dimension may be -1; got {tuple(dims)}")
        if -1 in dims:
            known = math.prod(d for d in dims if d != -1)
            if known <= 0 or self.size % known:
                raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} "
                                 f"({self.size} elements) into {tuple(dims)}")
            dims[dims.index(-1)] = self.size // known
        return self._view(self._array.reshape(dims))

    def fill_(self, value: float) -> Tensor:
        """Every element set to ``value``, in place (float32 tensors): a real number, of
        float32's range where finite (ValueError beyond it, where the cast made it inf)."""
        self._array.fill_(self._fill_value(value, "Tensor.fill_: value"))
        return self

    def fill(self, value: float) -> None:
        """``fill_`` under NumPy's name, so that code written for arrays runs on tensors."""
        self._array.fill_(self._fill_value(value, "Tensor.fill: value"))

    def _fill_value(self, value: Any, name: str) -> float:
        # another dtype is the kernel's TypeError (fill_ takes float32 tensors only)
        return _fill_value(value, name) if self.dtype == _DTYPES["float32"] else float(value)

    def copy(self) -> Tensor:
        """A new tensor on the same device holding these values."""
        out = Tensor(_C.DeviceArray.empty(list(self.shape), self.dtype.name, self.device))
        out._array.copy_(self._array)
        return out

    def __setitem__(self, index: Any, value: Any) -> None:
        """``t[...] = src`` and ``t[a:b] = src``: ``copy_`` into all of it or into rows a to b
        (src a Tensor, or an array of that shape on the host)."""
        (self if index is Ellipsis else self[index]).copy_(value)

    def copy_(self, src: Any) -> Tensor:
        """This tensor's values from ``src`` (a Tensor on any device, or an array of its shape
        on the host), in place. Host values this tensor's dtype cannot hold are a ValueError:
        beyond float32's range for a float32 tensor (the cast made them inf); for an integer
        one NaN, infinities, fractions and values beyond its range (the cast wrapped 300 to
        44 in uint8, made 1e30 int64's smallest and truncated 2.9 to 2)."""
        if isinstance(src, Tensor):
            self._array.copy_(src._array)
        else:
            self._array.copy_(_as_dtype(src, self.dtype, "Tensor.copy_: src"))
        return self

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Any = None) -> Any:
        return self._array.__dlpack__(stream=stream, max_version=max_version,
                                      dl_device=dl_device, copy=copy)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()

    @property
    def __cuda_array_interface__(self) -> dict:
        """Version 3 of Numba's protocol, which CuPy and PyTorch read: a CUDA tensor only."""
        if not self.device.startswith("cuda"):
            raise AttributeError(f"a tensor on {self.device} has no __cuda_array_interface__")
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self._array.data_ptr, False),
                "strides": None, "version": 3, "stream": _LEGACY_DEFAULT_STREAM}

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(f"a fastnn.Tensor on {self.device} is not a NumPy array: call .numpy() "
                        "for a copy in host memory")

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape}, dtype={self.dtype.name}, device={self.device!r})"


def _canonical(device: str) -> str:
    return "cuda:0" if device == "cuda" else device


def asarray(x: Any, dtype: Any = None, *, device: Any = None) -> Tensor | np.ndarray:
    """``x`` as an array on ``device``: a NumPy array for the CPU (None or "cpu"), a Tensor
    for "cuda" / "cuda:N" (a copy into device memory; a Tensor already there is returned as it
    is). Floating-point data become float32 unless ``dtype`` says otherwise; a Tensor holds
    float32, int64, int32 or uint8."""
    if isinstance(x, Tensor):
        if device is None:
            return x if dtype is None or np.dtype(dtype) == x.dtype else asarray(x.numpy(), dtype, device=x.device)
        return x.to(device) if dtype is None else asarray(x.numpy(), dtype, device=device)
    device = "cpu" if device is None else check_device(device, "asarray: device")
    numeric_dtype = dtype is not None and np.dtype(dtype).kind in "iuf"
    try:  # to a numeric dtype by _as_dtype below, which checks the values
        arr = np.asarray(x, dtype=None if numeric_dtype else dtype)
    except (TypeError, RuntimeError) as err:  # a torch tensor of bfloat16, or requiring grad
        if not torch_hint(x):
            raise
        raise TypeError(f"asarray: argument 'x' cannot be made a NumPy array: {err}"
                        f"{torch_hint(x)}") from None
    if numeric_dtype or (dtype is None and arr.dtype.kind == "f"):
        # NumPy's cast had made 1e40 inf in float32, 300 44 in uint8 and 2.9 2 in int64
        arr = _as_dtype(arr, np.float32 if dtype is None else dtype, "asarray: argument 'x'")
    if device == "cpu":
        return arr
    return Tensor(_C.DeviceArray.from_numpy(arr, _canonical(device)))


def from_dlpack(x: Any) -> Tensor | np.ndarray:
    """Take an array of another library by DLPack, without a copy: a CPU tensor (PyTorch's,
    NumPy's) as a NumPy array sharing its memory (``np.from_dlpack``: any dtype and strides
    NumPy holds; bfloat16 is a TypeError), a CUDA tensor (PyTorch's, CuPy's) as a Tensor
    sharing its memory, kept alive while either uses it (C-contiguous float32, int64, int32
    or uint8)."""
    if not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__"):
        raise TypeError(f"from_dlpack: argument 'x' must support DLPack (__dlpack__ and "
                        f"__dlpack_device__), got {type(x).__name__}")
    kind, index = x.__dlpack_device__()
    if kind == _DLPACK_CPU:
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError) as err:  # NumPy's words name no argument
            if not torch_hint(x):
                raise
            raise TypeError(f"from_dlpack: argument 'x' cannot be taken as a NumPy array: "
                            f"{err}{torch_hint(x)}") from None
    if kind != _DLPACK_CUDA:
        raise ValueError(f"from_dlpack: argument 'x' is on DLPack device type {kind}; fastnn "
                         "takes the CPU (1) and CUDA (2)")
    check_device(f"cuda:{index}", "from_dlpack: argument 'x'")
    return Tensor(_C.DeviceArray.from_dlpack(x.__dlpack__(stream=_LEGACY_DEFAULT_STREAM)))


def memory_stats(device: str = "cuda") -> dict:
    """The caching allocator's counts on ``device``: in_use_bytes, cached_bytes (freed and
    kept), device_allocs (blocks taken from the device) and reuses (requests the cache
    served)."""
    return _C.device_memory_stats(_canonical(check_device(device, "memory_stats: device")))


def empty_cache(device: str = "cuda") -> None:
    """Give the cached blocks of ``device`` back to it (as ``torch.cuda.empty_cache``)."""
    _C.device_empty_cache(_canonical(check_device(device, "empty_cache: device")))
