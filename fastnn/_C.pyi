"""Type stubs for fastnn._C, the C++ extension.

Every array argument is a NumPy array. Inputs of any float dtype or memory layout
are converted once to C-contiguous float32; arrays marked "in place" must already be
C-contiguous float32 (they are the storage of parameters and buffers), and a wrong
one raises TypeError/ValueError naming the argument. Label arrays are integer arrays.
The GIL is released inside every kernel.
"""

from typing import Literal, Optional

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
ActivationName = Literal["identity", "sigmoid", "relu", "tanh", "leaky_relu"]
IsaName = Literal["avx512", "avx2", "generic"]

def config() -> dict:
    """{'isa': str, 'isa_supported': list[str], 'openmp': bool, 'num_threads': int, 'cuda': bool}"""

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_isa(name: IsaName) -> None:
    """Force a GEMM path (ValueError if this CPU cannot run it). FASTNN_ISA does the same at import."""

def get_isa() -> str: ...
def supported_isas() -> list[str]: ...

# C = act(alpha * op(a) @ op(b) + beta * c + bias). With out=None a new (m, n) array is
# returned (beta is then ignored); otherwise out must be float32 (m, n) with unit column
# stride (a row slice of a larger array is fine), updated in place. bias: (n,) or None;
# activation as in activation_forward, applied to each tile while it is in cache.
# Strided and transposed float32 views of a and b are used without a copy.
def gemm(a: npt.ArrayLike, b: npt.ArrayLike, out: Optional[F32] = None, *,
         transpose_a: bool = False, transpose_b: bool = False,
         alpha: float = 1.0, beta: float = 0.0, bias: Optional[npt.ArrayLike] = None,
         activation: ActivationName = "identity", activation_alpha: float = 0.01) -> F32: ...
def gemm_reference(a: npt.ArrayLike, b: npt.ArrayLike, out: Optional[F32] = None, *,
                   transpose_a: bool = False, transpose_b: bool = False,
                   alpha: float = 1.0, beta: float = 0.0, bias: Optional[npt.ArrayLike] = None,
                   activation: ActivationName = "identity",
                   activation_alpha: float = 0.01) -> F32: ...

def column_sum(x: npt.ArrayLike, out: F32, beta: float = 0.0) -> None:
    """In place: out[j] = beta * out[j] + sum_i x[i, j] (the bias gradient)."""

def activation_forward(name: ActivationName, x: npt.ArrayLike, alpha: float = 0.01) -> F32:
    """y = f(x), a new array of x's shape; alpha is leaky_relu's negative slope."""

def activation_backward(name: ActivationName, y: npt.ArrayLike, grad_y: npt.ArrayLike,
                        alpha: float = 0.01) -> F32:
    """grad_x = f'(x) * grad_y, computed from the forward output y."""

def softmax_forward(x: npt.ArrayLike) -> F32:
    """Row-wise stable softmax of a 2-D array."""

def softmax_backward(y: npt.ArrayLike, grad_y: npt.ArrayLike) -> F32:
    """grad_x = y * (grad_y - sum(grad_y * y, row))."""

# Losses return (mean loss, gradient of the mean loss with respect to the prediction).
def mse(pred: npt.ArrayLike, target: npt.ArrayLike) -> tuple[float, F32]: ...
def binary_cross_entropy(pred: npt.ArrayLike, target: npt.ArrayLike,
                         from_logits: bool = True) -> tuple[float, F32]: ...
def cross_entropy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, F32]:
    """Fused stable log-softmax + negative log-likelihood, mean over rows. labels: (m,)
    integers in [0, classes); ValueError names the first one out of range."""

def cross_entropy_soft(logits: npt.ArrayLike, target: npt.ArrayLike) -> tuple[float, F32]:
    """The same with a (m, classes) target distribution (one-hot or soft)."""

def sgd_step(param: F32, grad: F32, velocity: Optional[F32], *, lr: float,
             momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> None:
    """In place, PyTorch's SGD. velocity (same shape) is required when momentum > 0."""

def adam_step(param: F32, grad: F32, m: F32, v: F32, *, lr: float, beta1: float,
              beta2: float, eps: float, weight_decay: float, step: int) -> None:
    """In place, PyTorch's Adam (L2 weight decay added to the gradient); step counts from 1."""

def fma_peak_gflops(threads: int = 1, seconds: float = 0.5) -> float:
    """Measured float32 AVX-512 FMA peak (GFLOP/s) on `threads` threads; 0.0 without AVX-512."""
