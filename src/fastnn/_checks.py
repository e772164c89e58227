"""Argument checks shared by layers, losses, optimizers and the training loop, and the
guards of their sections that a Ctrl-C must not cut in two."""

from __future__ import annotations

import _signal  # signal's functions without their Python wrappers: see deferred_interrupt
import math
import numbers
import signal
from typing import Any, Callable, Union

import numpy as np

from . import memory

_NUMERIC_KINDS = "biuf"
_F32 = np.dtype(np.float32)
# The kernels take every hyperparameter as a float32: a value beyond its largest became inf,
# and a positive one below its smallest normal number became 0 (the kernels flush
# subnormals: fastnn.config()["flush_denormals"]).
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)

# What an error message calls an argument: the text, or a function that makes it, for the
# checks every layer call makes (a layer's repr costs more than the check itself).
Name = Union[str, Callable[[], str]]


def _text(name: Name) -> str:
    return name if isinstance(name, str) else name()


def numeric(x: object, name: Name) -> np.ndarray:
    """``x`` as a NumPy array; TypeError naming ``name`` unless it holds real numbers."""
    try:
        arr = memory.to_host(x)
    except ValueError as err:  # NumPy's own words name no argument (a ragged list)
        raise ValueError(f"{_text(name)} cannot be made an array: {err}") from None
    except (TypeError, RuntimeError) as err:  # a torch tensor of bfloat16, or one that requires grad
        if not torch_hint(x):
            raise
        raise TypeError(f"{_text(name)} cannot be made a NumPy array: {err}{torch_hint(x)}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{_text(name)} must be a numeric array; got dtype {arr.dtype}"
                        f"{_conversion_hint(x, _text(name))}")
    return arr


def torch_hint(x: object) -> str:
    """How to pass a torch tensor NumPy cannot take as it is."""
    if type(x).__module__.split(".")[0] != "torch":
        return ""
    if getattr(x, "requires_grad", False):
        return " (a torch tensor that requires grad: pass tensor.detach())"

    def has(bit: str) -> bool:  # x.is_conj(), x.is_neg(); False where torch lacks them
        try:
            return bool(getattr(x, bit)())
        except Exception:  # an older torch, or no tensor
            return False

    dtype = getattr(x, "dtype", None)
    device = getattr(x, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        return (f" (a torch tensor on {device}: pass tensor.cpu(), or take it where it is "
                "with fastnn.from_dlpack(tensor))")
    if getattr(dtype, "is_complex", False):  # .float() would drop the imaginary parts
        conj = ("; it is a conjugate view: tensor.resolve_conj() makes it one NumPy takes"
                if has("is_conj") else "")
        return (f" (a torch tensor of {dtype}: fastnn takes real float32 data, and "
                "tensor.float() would drop the imaginary parts: pass the real values you "
                f"mean, such as tensor.real or tensor.abs(){conj})")
    if has("is_neg"):  # a lazily negated view, of any dtype
        return " (a torch tensor with its negative bit set: pass tensor.resolve_neg())"
    if getattr(dtype, "is_floating_point", False):  # bfloat16, float8: exact in float32
        return f" (a torch tensor of {dtype}: pass tensor.float())"
    return (f" (a torch tensor of {dtype if dtype is not None else 'another kind'}, which "
            "NumPy cannot take: fastnn takes float32 data and integer labels)")


def _conversion_hint(x: object, name: str) -> str:
    """How to pass what came as objects: a sparse matrix, a pandas frame of nullable
    dtypes (both reach NumPy as an array of objects)."""
    if hasattr(x, "toarray") and hasattr(x, "nnz"):
        return f" (a sparse matrix: pass {name}.toarray())"
    if hasattr(x, "to_numpy") and hasattr(x, "dtypes" if hasattr(x, "columns") else "dtype"):
        return f' (pandas: pass {name}.to_numpy("float32"), after filling any missing values)'
    return ""


def as_float32(x: object, name: Name) -> np.ndarray:
    """``x`` as a C-contiguous float32 array (no copy when it already is one); a float32
    Tensor is taken where it is (TypeError for another dtype: no conversion on a device).
    Finite values beyond float32's range are a ValueError naming ``name`` (NumPy's cast
    made them infinite with only a warning)."""
    if type(x) is np.ndarray and x.dtype == _F32 and x.flags.c_contiguous:
        return x
    if memory.is_tensor(x):
        if x.dtype != _F32:
            raise TypeError(f"{_text(name)} must be float32 on {x.device}; got dtype {x.dtype} "
                            "(convert it: fastnn.asarray(x, np.float32, device=...))")
        return x
    arr = numeric(x, name)
    try:
        with np.errstate(over="raise"):
            return memory.asarray(arr, np.float32)
    except MemoryError as err:  # NumPy's names no argument
        raise MemoryError(f"{_text(name)}: its float32 copy ({arr.dtype} {arr.shape} given) "
                          f"needs {arr.size * 4 / 2**20:,.0f} MiB more: {err}") from None
    except FloatingPointError:
        finite = np.abs(arr[np.isfinite(arr)])
        raise ValueError(f"{_text(name)} holds values beyond float32's range (magnitude at most "
                         f"{F32_MAX:.4g}; fastnn computes in float32), up to {finite.max():.4g}: "
                         "scale the data first") from None


def flag(value: object, name: str) -> bool:
    """``value`` as a bool: True, False or NumPy's; a string ("False" is truthy) or a number
    is a TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r:.60}")
    return bool(value)


def number(value: object, name: str) -> float:
    """``value`` as a float: a real number (int, float, Fraction, NumPy's, a 0-d array of
    them); a string, a bool or a complex number is a TypeError naming ``name``
    (``float("0.1")`` and ``float(True)`` would pass, and a NumPy complex would lose its
    imaginary part with a warning)."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r:.100}")
    return float(value)


def float32_number(value: object, name: str) -> float:
    """``number(value)``, finite and within float32's range (the kernels' type);
    ValueError naming ``name`` otherwise."""
    value = number(value, name)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return _within_float32(value, name)


def float32_epsilon(value: object, name: str) -> float:
    """An epsilon added to a denominator: ``float32_number(value)`` of at least float32's
    smallest normal number (1e-50 was 0 to the kernels, and their quotients NaN)."""
    value = float32_number(value, name)
    if value < F32_TINY:
        raise ValueError(f"{name} must be > 0 and at least {F32_TINY:.4g} (float32's smallest "
                         f"normal number: the kernels compute in float32); got {value}")
    return value


def positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1; TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return int(value)


def thread_count(value: object, name: str) -> int:
    """``value`` as a thread count in [1, fastnn.max_num_threads()] (4 per online CPU);
    TypeError/ValueError naming ``name`` otherwise."""
    from . import _C
    n, top = positive_int(value, name), _C.max_num_threads()
    if n > top:
        raise ValueError(f"{name} must be at most {top} (4 threads per online CPU); got {n}")
    return n


def non_negative(value: object, name: str) -> float:
    """``value`` as a float >= 0 within float32's range (fastnn's type); TypeError/
    ValueError naming ``name`` otherwise (``number``'s types)."""
    try:
        value = number(value, name)
    except TypeError:
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r:.100}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return _within_float32(value, name)


def _within_float32(value: float, name: str) -> float:
    if abs(value) > F32_MAX:
        raise ValueError(f"{name} must be at most {F32_MAX:.4g} in size (float32's largest: "
                         f"fastnn computes in float32); got {value}")
    return value


def stream_seed(seed: object, owner: str) -> int:
    """The seed of a random stream (dropout masks, augmentation): ``seed`` checked, or
    for None one drawn from the global generator, so ``fastnn.seed`` fixes it."""
    if seed is None:
        from ._random import generator
        return int(generator().integers(0, 2**63))
    if (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
            or not 0 <= seed < 2**64):
        raise ValueError(f"{owner}: seed must be an integer in [0, 2**64) or None; got {seed!r}")
    return int(seed)


def outside_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn``, called right here, that names the first
    caller outside fastnn (a warning raised at a varying depth inside it: a constructor
    of a subclass, a method called from another)."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1  # the caller of this function is level 1 of its warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class deferred_interrupt:
    """Within the block (``with deferred_interrupt():``), a Ctrl-C (SIGINT) waits for its
    end, and is then handed to the handler it was meant for (Python's raises
    KeyboardInterrupt there). For short sections that change state in several steps (every
    layer's mode, an optimizer's step count and update, a restore): an interrupt between
    two of them, as notebook users send mid-cell, left the state half changed, silently.
    Never around long work: Ctrl-C must stay prompt. Outside the main thread (which alone
    runs signal handlers), or where SIGINT's handler is not a Python function (ignored,
    the default action, one set from C), the block simply runs.

    A class calling ``_signal`` (signal's own functions wrap it in Python, and their enum
    lookups took microseconds): the fewer steps before the handler is in place, the fewer
    places an interrupt can still land before it."""

    def __enter__(self) -> None:
        self.received: list[Any] = []  # the frame of a SIGINT received, for the handler
        self.previous = _signal.getsignal(signal.SIGINT)
        if not callable(self.previous):
            self.previous = None
            return
        try:
            _signal.signal(signal.SIGINT, self._record)
        except ValueError:  # not the main thread, where alone handlers are set
            self.previous = None

    def _record(self, signum: int, frame: Any) -> None:
        self.received.append(frame)

    def __exit__(self, *exc_info: object) -> None:
        if self.previous is not None:
            _signal.signal(signal.SIGINT, self.previous)
            if self.received:
                self.previous(signal.SIGINT, self.received[0])


def cache_home(setting: str) -> str:
    """The user's cache folder: ``$XDG_CACHE_HOME`` when absolute (the XDG spec ignores a
    relative one), else ``~/.cache``. RuntimeError naming ``setting`` (the variable that
    places the file instead) where there is no home folder to find: no HOME and no password
    entry (a container run under a random uid), where expanduser left "~" as it was and
    files went to a folder named "~" in the working one."""
    import os

    base = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):
        return base
    home = os.path.expanduser("~")
    if not os.path.isabs(home):
        raise RuntimeError(f"no home folder to keep fastnn's files in (HOME is not set and this "
                           f"user has no password entry): set {setting} or XDG_CACHE_HOME to "
                           "an absolute folder")
    return os.path.join(home, ".cache")
