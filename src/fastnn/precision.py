"""Mixed precision: the arithmetic of the layers' matrix products.

"fp32" (the default): float32 products, as always. "bf16": the GEMMs of the forward and
backward passes (Dense, and Conv2d's GEMM path) round their operands to bfloat16 (float32's
range, 8 significant bits) as they pack them, multiply on the CPU's bf16 instructions (AMX
tiles or AVX512_BF16, ``fastnn.config()["bf16"]`` names the path) and accumulate and write
float32. Weights, gradients, optimizer state, losses and the elementwise kernels stay
float32: PyTorch's ``torch.autocast("cpu", dtype=torch.bfloat16)`` with float32 master
weights. ``model.compile(..., precision="bf16")`` sets it for ``fit``, ``evaluate`` and
``predict`` of that model: a compiled model runs them in its compiled precision ("fp32"
unless compile said otherwise) inside an autocast block too, as a Keras model keeps its
dtype policy; ``with fastnn.autocast("bf16"):`` sets it for the code in the block (direct
calls of a model or layer, their backward, an uncompiled model's ``predict``). A CPU without bf16
instructions, or whose bf16 instructions are no faster than its float32 ones (AVX512_BF16
without AMX on an Intel Xeon), runs the float32 products, with a one-time warning.
"""
from __future__ import annotations

import contextlib
import threading
import warnings

from . import _C

PRECISIONS = ("fp32", "bf16")
_local = threading.local()
_warned = False


def check(precision: object, name: str = "precision") -> str:
    """``precision`` as one of PRECISIONS, or a clear error naming ``name``."""
    if not isinstance(precision, str):
        raise TypeError(f"{name} must be a str, 'fp32' or 'bf16'; got "
                        f"{type(precision).__name__}")
    if precision.lower() not in PRECISIONS:
        raise ValueError(f"{name} must be 'fp32' or 'bf16'; got {precision!r}")
    return precision.lower()


def current() -> str:
    """The precision of the layers' GEMMs in this thread now."""
    return getattr(_local, "precision", "fp32")


def warn_if_emulated(what: str, stacklevel: int = 2) -> None:
    """Once per process: say that ``what`` asked for bf16 where it runs in float32 because
    fastnn chose that for this CPU (no bf16 instructions, or none faster than float32's);
    not when FASTNN_BF16, FASTNN_ISA or set_bf16_path chose float32 on a CPU that has a
    bf16 path."""
    global _warned
    if _warned or _C.bf16_path() != "fp32" or _C.bf16_auto_path() != "fp32":
        return
    _warned = True
    warnings.warn(f"{what}: precision='bf16' runs float32 products here: "
                  f"{_C.bf16_path_description()}", RuntimeWarning, stacklevel=stacklevel + 1)


class using(contextlib.ContextDecorator):
    """The layers' GEMMs in ``precision`` ("fp32" or "bf16") inside the ``with`` block (this
    thread); fit, evaluate and predict run theirs so. (A class, not a generator: a training
    loop of one's own may enter it every step.)"""

    def __init__(self, precision: str) -> None:
        self.precision = check(precision, "precision.using: precision")  # not a gemm error, later
        # the precisions to restore, one per open ``with`` in each thread (as autocast's)
        self._saved = threading.local()

    def _recreate_cm(self) -> using:  # each call of a decorated function enters its own
        return using(self.precision)

    def __enter__(self) -> None:
        self._saved.__dict__.setdefault("stack", []).append(current())
        _local.precision = self.precision

    def __exit__(self, *exc: object) -> None:
        _local.precision = self._saved.stack.pop()


class autocast(contextlib.ContextDecorator):
    """Run the layers' GEMMs in ``precision`` inside a ``with`` block (this thread), as
    ``torch.autocast``: ``with fastnn.autocast("bf16"): loss = model(X)...``, or as a
    decorator of a function. A layer's backward uses the precision of its forward. A
    compiled model's fit, evaluate and predict keep its compiled precision inside the block
    (see the module's docstring); gradient_check always computes in float32.

    One object may be entered again, after its block or inside it, and from several
    threads: each ``with`` restores the precision that its own entry found."""

    def __init__(self, precision: str = "bf16") -> None:
        self.precision = check(precision)
        if self.precision == "bf16":
            warn_if_emulated("autocast")
        # the precisions to restore, one per open ``with`` of this object in each thread
        # (a generator-made context manager could be entered once only)
        self._saved = threading.local()

    def __enter__(self) -> None:
        stack = self._saved.__dict__.setdefault("stack", [])
        stack.append(current())
        _local.precision = self.precision

    def __exit__(self, *exc: object) -> None:
        _local.precision = self._saved.stack.pop()

    def __repr__(self) -> str:
        return f"fastnn.autocast({self.precision!r})"
