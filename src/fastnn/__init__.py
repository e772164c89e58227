"""fastnn: a deep-learning library whose numeric work runs in C++ (OpenMP) kernels.

Subpackages: ``nn`` (layers, Sequential), ``functional`` (``relu``, ``add``, ``concat``, ...,
exported here, for the forward of a model of your own), ``init``, ``optim``, ``schedulers``, ``losses``,
``metrics``, ``data``, ``datasets``, ``callbacks``, ``diagnostics``, ``io`` (``load``),
``tuning`` (``tune``: the GEMM blocking timed on this CPU, saved and loaded at import),
``memory`` (where every array fastnn allocates comes from: aligned, on a device),
``distributed`` (data-parallel training on MPI), ``precision`` (``autocast``: bf16 GEMMs).
Optional packages (tqdm, safetensors, scikit-learn) are imported only when used.
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    from . import _C
except ImportError as err:  # src/fastnn imported as it is, without a build
    raise ImportError(
        f"fastnn's C++ extension is not built next to {__path__[0]}. Install the package: "
        "pip install . (or pip install -e . to work on it) from the repository") from err

from . import data, functional, losses, memory, nn, optim
from . import precision as _precision
from .functional import add, concat, flatten, mul, relu, reshape, sigmoid, softmax, tanh
from ._checks import as_float32, flag, thread_count
from ._random import seed
from .precision import autocast
from . import tuning as _tuning
from .tuning import tune
from .tensor import Tensor, asarray, from_dlpack

__version__: str = _C.__version__  # pyproject.toml's version, compiled in by the build

__all__ = ["add", "concat", "flatten", "mul", "relu", "reshape", "sigmoid", "softmax", "tanh",
           "autocast", "callbacks", "config", "data", "datasets", "diagnostics", "distributed", "experiments",
           "functional", "get_matmul_precision", "get_num_threads", "init", "io", "load", "losses",
           "matmul", "max_num_threads",
           "memory", "metrics", "nn", "optim", "plot", "precision", "schedulers", "seed", "set_flush_denormal",
           "set_matmul_precision",
           "set_num_threads", "tune", "Tensor", "asarray", "from_dlpack", "__version__"]

# Submodules that most programs never touch (or that nn loads when it needs them) are
# imported on first access, fastnn.<name> or ``from fastnn import <name>`` (PEP 562), to
# keep ``import fastnn`` fast; ``load`` is fastnn.io.load.
_LAZY_SUBMODULES = frozenset({"callbacks", "datasets", "diagnostics", "distributed",
                              "experiments", "init", "io", "metrics", "plot", "schedulers"})

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import (callbacks, datasets, diagnostics, distributed, experiments, init, io,
                   metrics, plot, schedulers)
    from .io import load


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # also sets fastnn.<name>
    if name == "load":
        from .io import load

        globals()["load"] = load
        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_SUBMODULES, "load"})


def matmul(a: np.ndarray, b: np.ndarray, *, transpose_a: bool = False,
           transpose_b: bool = False, precision: str = "fp32") -> np.ndarray:
    """``op(a) @ op(b)`` for 2-D arrays, in float32, with fastnn's GEMM (op: optional transpose).

    ``precision="bf16"`` rounds a and b to bfloat16 (nearest even) as the GEMM packs them and
    accumulates the products in float32: on AMX or AVX512_BF16 (``config()["bf16"]`` names
    the path; ``FASTNN_BF16=amx|avx512_bf16|fp32`` forces one). A CPU with neither runs the
    float32 product, with a one-time warning. The result is float32 either way."""
    precision = _precision.check(precision, "matmul: precision")
    if precision == "bf16":
        _precision.warn_if_emulated("matmul")
    return _C.gemm(_gemm_operand(a, "matmul: a"), _gemm_operand(b, "matmul: b"),
                   transpose_a=flag(transpose_a, "matmul: transpose_a"),
                   transpose_b=flag(transpose_b, "matmul: transpose_b"), precision=precision)


def _gemm_operand(x: object, name: str) -> object:
    """``x`` for the GEMM, checked to fit float32 where it could hold more (float64 data, a
    list): the GEMM's own cast made 1e39 inf with only NumPy's warning. Arrays of float32 or
    narrower types, strided ones included, and Tensors go to it as they are (no copy)."""
    if memory.is_tensor(x) or (isinstance(x, np.ndarray) and not (x.dtype.kind == "f"
                                                                  and x.dtype.itemsize > 4)):
        return x
    return as_float32(x, name)


def config() -> dict:
    """The build and runtime configuration: version, isa (the GEMM path in use), bf16 (the
    bf16 GEMM path: "amx", "avx512_bf16", or "fp32 (why)"),
    isa_supported, openmp, num_threads, flush_denormals (see set_flush_denormal), cuda (a dict:
    built, available, and the reason when not; the CUDA build adds the device's name, memory,
    compute capability and the driver, runtime and cuBLAS versions), matmul_precision
    (see set_matmul_precision),
    cpu (vendor, model, features, caches as detected or overridden by FASTNN_CACHE) and
    blocking (the active ISA's kc, nc, mc; source "model", "tuned" or "override"; and
    tuning_file, the file a tuned blocking was loaded from or saved to, else None)."""
    cfg = {"version": __version__, **_C.config(), "cuda": _C.cuda_info(),
           "matmul_precision": _C.get_matmul_precision()}
    cfg["blocking"]["tuning_file"] = _tuning.applied_file(cfg["blocking"])
    return cfg


def set_matmul_precision(precision: str) -> None:
    """"fp32" (the default): the GPU's fp32 GEMMs compute in full fp32, as on the CPU.
    "tf32": they may round their operands to TF32 on tensor cores (torch's
    ``allow_tf32``): several times faster on an Ampere or later GPU, about 1e-3 relative
    error instead of 1e-6. The CPU's GEMM is fp32 either way."""
    if not isinstance(precision, str):
        raise TypeError("set_matmul_precision: precision must be a str ('fp32' or 'tf32'), got "
                        f"{type(precision).__name__}")
    _C.set_matmul_precision(precision)


def get_matmul_precision() -> str:
    """"fp32" or "tf32" (see set_matmul_precision)."""
    return _C.get_matmul_precision()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the kernels (``OMP_NUM_THREADS`` sets the default), 1 <= n <=
    max_num_threads(); ValueError outside that range. A forked process (multiprocessing's
    'fork' start method) keeps the count: OpenMP's thread pool, which a fork does not copy,
    is released before it, and both processes start a new one. Only a fork from inside a
    parallel region (another library's) leaves the child on one thread
    (``config()["forked_after_threads"]``)."""
    n = thread_count(n, "n")
    if n > 1 and not _C.config()["openmp"]:
        warnings.warn("fastnn was built without OpenMP: it runs on one thread", RuntimeWarning,
                      stacklevel=2)
    elif n > 1 and _C.config()["forked_after_threads"]:
        warnings.warn("this process was forked from inside a parallel region, and OpenMP's "
                      "threads do not survive a fork: fastnn runs on one "
                      "thread here (start worker processes with multiprocessing's 'spawn' or "
                      "'forkserver' method to use more)", RuntimeWarning, stacklevel=2)
    _C.set_num_threads(n)


def set_flush_denormal(mode: bool) -> None:
    """Whether the kernels flush denormal floats (below 1.2e-38) to zero: on by default (as
    TensorFlow's, and as ``torch.set_flush_denormal(True)``), because an Intel core takes
    16-27x longer for every denormal result and training makes them routinely (Adam's
    moments of weights behind dead units decay through them). ``False`` keeps IEEE gradual
    underflow; ``FASTNN_FLUSH_DENORMALS=0`` sets that at import. Only values below 1.2e-38
    change."""
    if not isinstance(mode, (bool, np.bool_)):
        raise TypeError(f"set_flush_denormal: mode must be a bool, got {type(mode).__name__}")
    _C.set_flush_denormals(bool(mode))


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return _C.get_num_threads()


def max_num_threads() -> int:
    """The most threads set_num_threads takes: 4 per online CPU (more would only make
    thread creation fail). A larger ``OMP_NUM_THREADS`` is clamped to it, with a warning."""
    return _C.max_num_threads()


def _warn_on_unknown_switches() -> None:
    """The on/off environment switches read in C++ (csrc/parallel.cpp): off for 0, off,
    false or no, on otherwise, and a value that is neither said so."""
    import os
    import warnings

    for name in ("FASTNN_FLUSH_DENORMALS", "FASTNN_ADAPTIVE_THREADS"):
        value = os.environ.get(name)
        # ASCII spaces only, as the C++ strips them: a no-break space had passed this
        # check as "0" while the kernels read the switch as on
        if value is not None and value.strip(" \t\n\r\f\v").lower() not in (
                "", "0", "1", "off", "on", "false", "true", "no", "yes"):
            warnings.warn(f"{name}={value!r} is not on or off (1/0, on/off, true/false, "
                          "yes/no): it stays on", RuntimeWarning, stacklevel=3)


_warn_on_unknown_switches()
_tuning._load_at_import()  # last: the file's blocking over the model's, never an error
