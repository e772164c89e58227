"""Type stubs for fastnn._C, the C++ extension.

Every array argument is a NumPy array, or, for the ops a model's training step calls, a
DeviceArray (or the fastnn.Tensor holding one): gemm, gemm_reference, activation_forward and
_backward, column_sum, softmax_forward and _backward, cross_entropy, cross_entropy_soft, mse,
binary_cross_entropy, dropout_forward and _backward, the sgd/adam/adagrad/rmsprop steps,
add_penalty_grad, sum_squares, sum_abs, scale_, clip_, gather_rows, conv2d_forward and
_backward, the depthwise ones, max/avg pooling forward and backward, batchnorm_forward and
_backward. Then every array of the call must be on the first one's device (float32, or
int64 where indices or labels are; ValueError naming both devices otherwise), the csrc/cuda
kernel runs on a GPU (the CPU's on host memory), and a new result is of the first array's
kind (a Tensor for a Tensor). Inputs of any float dtype or memory layout
are converted once to C-contiguous, aligned float32; a conversion that cannot allocate
raises MemoryError, any other failed conversion TypeError, naming the argument. Arrays
marked "in place" must already be C-contiguous, aligned, writeable float32 (they are the
storage of parameters and buffers), and a wrong one raises TypeError/ValueError naming
the argument. Label and index arrays are integer arrays, copied before they are checked
(another thread may change the caller's array while the kernel runs).
An array a call writes may not overlap any other array argument of the call (ValueError
naming both), except where documented as "may be x itself" (exactly the same array).
The GIL is released inside every kernel (gemm keeps it for a product under 2**18
multiply-adds, a few microseconds).
"""

from typing import Any, Literal, Optional, Sequence

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
ActivationName = Literal["identity", "linear", "sigmoid", "relu", "tanh", "leaky_relu", "elu",
                         "gelu", "softplus"]
IsaName = Literal["avx512", "avx2", "generic"]
Precision = Literal["fp32", "bf16"]
Bf16Path = Literal["amx", "avx512_bf16", "fp32"]

__version__: str  # pyproject.toml's version, compiled in
AUGMENT_STREAM_PER_IMAGE: int  # counter-stream elements each image of augment_images takes

def activations() -> dict[str, dict]:
    """The activation table: name -> {"canonical": the name of the same function listed first
    ("linear" -> "identity"), "alpha": its default parameter, "backward_needs_input": whether
    its derivative needs x (not only y = f(x)), "he_init": whether Dense's default init is He's}."""

def config() -> dict:
    """{'isa': str, 'isa_supported': list[str], 'openmp': bool, 'num_threads': int,
    'load_pauses': int, 'flush_denormals': bool, 'cpu': dict (vendor, model_name, family, model, stepping,
    features, caches, cache_spec, cache_source), 'blocking': dict (as blocking()), 'bf16': str}"""

def cuda_info() -> dict:
    """The CUDA build's device: built, available, reason (why not); the CUDA build adds
    architectures, runtime, driver and cuBLAS versions, device_count and, with a device,
    device, memory_bytes and compute_capability. Queried once."""
def cuda_selftest() -> None:
    """Run one kernel of this build on device 0 and check its output; RuntimeError saying
    why not (not built, no driver, no device, no code for its compute capability)."""
def cuda_arch_runs(archs: str, major: int, minor: int) -> bool:
    """Whether code built for archs ("80-real,90") runs at compute capability major.minor."""

# Device arrays (csrc/python/tensor.cpp): the storage of fastnn.Tensor. Device "cpu" or
# "cuda[:N]" (RuntimeError saying why where this build or machine has none); dtypes float32,
# int64, int32, uint8; C-contiguous.
class DeviceArray:
    @staticmethod
    def empty(shape: Sequence[int], dtype: str, device: str) -> DeviceArray: ...
    @staticmethod
    def from_numpy(array: npt.ArrayLike, device: str) -> DeviceArray:
        """A copy of array in device memory."""
    @staticmethod
    def from_dlpack(capsule: Any) -> DeviceArray:
        """A producer's unconsumed "dltensor" capsule taken without a copy (kept alive)."""
    def numpy(self) -> np.ndarray:
        """A copy on the host."""
    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Any = None) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def view_rows(self, begin: int, end: int) -> DeviceArray:
        """Rows [begin, end) as a view that shares the memory."""
    def reshape(self, shape: Sequence[int]) -> DeviceArray:
        """The same memory with another shape of as many elements."""
    def fill_(self, value: float) -> None:
        """Every element set to value, in place (float32 only)."""
    def copy_(self, src: Any) -> None:
        """This array's values from src (a DeviceArray on any device, or a NumPy array)."""
    shape: tuple[int, ...]
    dtype: str
    device: str
    data_ptr: int
    nbytes: int
def device_memory_stats(device: str) -> dict:
    """The caching allocator's in_use_bytes, cached_bytes, device_allocs and reuses."""
def device_empty_cache(device: str) -> None:
    """Every cached block of the device back to it."""

def set_num_threads(n: int) -> None:
    """ValueError unless 1 <= n <= max_num_threads()."""
def get_num_threads() -> int: ...
def set_flush_denormals(on: bool) -> None:
    """Whether the kernels flush denormal floats to zero (FTZ and DAZ inside each region)."""
def max_num_threads() -> int:
    """4 per online CPU: the most threads the kernels take (OMP_NUM_THREADS is clamped to it,
    with a RuntimeWarning at import)."""
def set_isa(name: IsaName) -> None:
    """Force the ISA of every kernel family: the GEMM's microkernel, the copies the
    elementwise kernels run, and the bf16 path (fp32 off AVX-512, the automatic one on it,
    unless FASTNN_BF16 or set_bf16_path chose it); ValueError if this CPU cannot run it.
    FASTNN_ISA does the same at import."""

def get_isa() -> str: ...
def supported_isas() -> list[str]: ...
def _elementwise_isa() -> str:
    """The ISA whose copies the elementwise kernels (activations, softmax, losses, optimizers,
    reductions, dropout) run now: always get_isa(), which they follow (for the tests)."""

# The GEMM blocking of one ISA ("" or omitted: the active one; ValueError for an ISA this
# CPU does not run). kc: the k-block cap, nc: the column block, mc: the row block.
def blocking(isa: str = "") -> dict:
    """{'isa', 'mr', 'nr', 'kc', 'nc', 'mc', 'source'}: source 'model' (the cache model's),
    'tuned' (fastnn.tune's, or the tuning file's) or 'override'."""
def set_blocking(kc: int, nc: int, mc: Optional[int] = None, *,
                 source: Literal["override", "tuned"] = "override", isa: str = "") -> None:
    """Replace the blocking: 1 <= kc <= 65536, 1 <= nc, mc <= 2**20 (ValueError otherwise); nc
    and mc are rounded up to multiples of NR and MR; mc=None keeps the current mc."""
def reset_blocking(isa: str = "") -> None:
    """Back to the cache model's blocking (source 'model')."""
def model_blocking(isa: str = "", cache: Optional[str] = None) -> tuple[int, int, int]:
    """(kc, nc, mc) the cache model gives for a geometry such as '48K:12,2M:16,300M:15'
    (default: this CPU's); ValueError for a malformed one."""
def fma_peak_per_core(isa: str = "") -> float:
    """Measured float32 FMA peak of one core (GFLOP/s) on the ISA's widest vectors, measured
    once per ISA (0.1 s) and remembered."""

# C = act(alpha * op(a) @ op(b) + beta * c + bias). With out=None a new (m, n) array is
# returned (beta is then ignored); otherwise out must be float32 (m, n) with unit column
# stride (a row slice of a larger array is fine), updated in place. bias: (n,) or None;
# activation as in activation_forward, applied to each tile while it is in cache.
# Strided and transposed float32 views of a and b are used without a copy.
def gemm(a: npt.ArrayLike, b: npt.ArrayLike, out: Optional[F32] = None, *,
         transpose_a: bool = False, transpose_b: bool = False,
         alpha: float = 1.0, beta: float = 0.0, bias: Optional[npt.ArrayLike] = None,
         activation: ActivationName = "identity", activation_alpha: float = 0.01,
         precision: Precision = "fp32") -> F32:
    """precision="bf16": a and b rounded to bfloat16 as they are packed, fp32 accumulation,
    on bf16_path()'s kernel (ValueError for another precision). a a DeviceArray (or
    fastnn.Tensor): b, out and bias on its device, C-contiguous, fp32 only; cuBLAS's SGEMM
    (TF32 off) and the epilogue on a GPU; a DeviceArray returned."""
def set_matmul_precision(precision: Literal["fp32", "tf32"]) -> None:
    """'tf32': a GPU's fp32 GEMMs may use TF32 tensor cores; 'fp32' (default): not."""
def get_matmul_precision() -> str: ...
def gemm_reference(a: npt.ArrayLike, b: npt.ArrayLike, out: Optional[F32] = None, *,
                   transpose_a: bool = False, transpose_b: bool = False,
                   alpha: float = 1.0, beta: float = 0.0, bias: Optional[npt.ArrayLike] = None,
                   activation: ActivationName = "identity",
                   activation_alpha: float = 0.01, precision: Precision = "fp32") -> F32:
    """The triple loop in float64; precision="bf16": on the bf16-rounded a and b."""

# bfloat16 (csrc/cpu/gemm/bf16.h).
def bf16_convert(x: npt.ArrayLike, *, vector: bool = True) -> npt.NDArray[np.uint16]:
    """x's float32 values rounded to bfloat16 (nearest, ties to even; NaN stays a quiet NaN,
    subnormals are rounded, not flushed), as their uint16 bits: the vector conversion that
    packing uses (on a CPU with AVX512_BF16; elsewhere the reference), or (vector=False) the
    scalar reference."""
def bf16_path() -> Bf16Path:
    """The bf16 GEMM path in use: bf16_auto_path() unless FASTNN_BF16 or set_bf16_path
    chose another; FASTNN_ISA=avx2|generic (or set_isa) makes it fp32."""
def bf16_path_description() -> str:
    """bf16_path(), and for "fp32" why (config()["bf16"])."""
def bf16_auto_path() -> Bf16Path:
    """The path fastnn picked for this CPU: amx where it runs, else avx512_bf16 where it runs
    and its dot products measured at least 1.5x the float32 FMA rate, else fp32."""
def _bf16_choice(amx: bool, avx512_bf16: bool, dot_gflops: float, fma_gflops: float) -> Bf16Path:
    """bf16_auto_path's rule, for given kernels and measured rates (for the tests)."""
def supported_bf16_paths() -> list[str]: ...
def set_bf16_path(name: Bf16Path | Literal["auto"]) -> None:
    """Force the bf16 path (ValueError naming why, for a path this CPU does not run), as
    FASTNN_BF16 at import; "auto": back to the one picked for this CPU and the ISA in use,
    which set_isa moves again."""
def bf16_blocking(name: Literal["amx", "avx512_bf16"]) -> tuple[int, int, int]:
    """(kc, nc, mc) of a bf16 kernel: blocking.h's model_blocking_bf16 for this CPU."""

def column_sum(x: npt.ArrayLike, out: F32, beta: float = 0.0) -> None:
    """In place: out[j] = beta * out[j] + sum_i x[i, j] (the bias gradient)."""

def activation_forward(name: ActivationName, x: npt.ArrayLike, alpha: float = 0.01, *,
                       out: Optional[F32] = None) -> F32:
    """y = f(x), of x's shape (into out, which may be x itself); alpha is leaky_relu's
    negative slope. x a DeviceArray (or fastnn.Tensor): every array on its device, and a
    DeviceArray returned (csrc/cuda/activation.cu on a GPU); likewise activation_backward,
    sgd_step and adam_step."""

def activation_backward(name: ActivationName, y: npt.ArrayLike, grad_y: npt.ArrayLike,
                        alpha: float = 0.01, x: Optional[npt.ArrayLike] = None,
                        out: Optional[F32] = None, bias_grad: Optional[F32] = None) -> F32:
    """grad_x = f'(x) * grad_y, computed from the forward output y ("gelu", "elu": from x, required).
    out: in place, y's shape, into which grad_x goes (it may be grad_y, y or x itself);
    returned. bias_grad: in place, (columns,) of a 2-D y: grad_x's column sums are added to
    it in the same pass (a Dense layer's bias gradient)."""

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
    integers in [0, classes); ValueError names the first one out of range. logits a
    DeviceArray: labels one there too (int64, int32 or uint8); the gradient a DeviceArray;
    on a GPU the mean is summed in a fixed order (csrc/cuda/loss.cu)."""

def argmax_matches(logits: npt.ArrayLike, labels: npt.ArrayLike) -> int:
    """How many rows of logits (rows, classes) have their label as argmax (ties to the first
    maximum, as NumPy's; a row holding a NaN counts as a miss); labels checked as
    cross_entropy checks them."""
def cross_entropy_soft(logits: npt.ArrayLike, target: npt.ArrayLike) -> tuple[float, F32]:
    """The same with a (m, classes) target distribution (one-hot or soft)."""

def sgd_step(param: F32, grad: F32, velocity: Optional[F32], *, lr: float,
             momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
             segments: Optional[npt.NDArray[np.int64]] = None) -> None:
    """In place, PyTorch's SGD. velocity (same shape) is required when momentum > 0.
    segments: the parameters a flat buffer holds, (S, 3) rows of (offset, rows, cols) in
    order and disjoint, to split the threads by their rows (speed only; elements outside
    every segment are left alone). The other optimizer steps take it too."""

def adam_step(param: F32, grad: F32, m: F32, v: F32, *, lr: float, beta1: float,
              beta2: float, eps: float, weight_decay: float, step: int,
              decoupled: bool = False, segments: Optional[npt.NDArray[np.int64]] = None) -> None:
    """In place, PyTorch's Adam (L2 weight decay added to the gradient); step counts from 1.
    decoupled=True is AdamW (see below)."""

def fma_peak_gflops(threads: int = 1, seconds: float = 0.5) -> float:
    """Measured float32 AVX-512 FMA peak (GFLOP/s) on `threads` threads (1 <= threads <=
    max_num_threads()); 0.0 without AVX-512."""

# ---- added for the course's tools (issue 4) ------------------------------------------------
# Activation names also include "elu" (alpha = its scale, default 1.0 when used via layers),
# "gelu" (tanh approximation as in torch's approximate="tanh") and "softplus".
# activation_backward(name, y, grad_y, alpha=0.01, x=None): "gelu" and "elu" need x, the
# forward input; every other activation works from y alone (x may be given and is then ignored).

# Counter-based random numbers (Philox4x32-10): element i of a call with (seed, offset)
# depends only on (seed, offset + i), never on the thread count.
def random_uniform(n: int, seed: int, offset: int = 0) -> F32:
    """n floats in [0, 1): elements offset, offset + 1, ... (modulo 2**64) of the stream
    that dropout and augmentation draw from."""

def dropout_forward(x: npt.ArrayLike, p: float, seed: int, offset: int, *,
                    out: Optional[F32] = None) -> F32:
    """Inverted dropout: y = x / (1 - p) where uniform(seed, offset + i) >= p, else 0. x a
    DeviceArray: out there, a DeviceArray returned, the same mask on every device."""

def dropout_backward(grad_y: npt.ArrayLike, p: float, seed: int, offset: int, *,
                     out: Optional[F32] = None) -> F32:
    """The same mask (regenerated, not stored) applied to grad_y, scaled by 1 / (1 - p)."""

def sum_squares(x: npt.ArrayLike) -> float:
    """sum(x**2) accumulated in double over fixed chunks (thread-count independent)."""

def sum_abs(x: npt.ArrayLike) -> float:
    """sum |x| in double (an L1 penalty), the same value whatever the thread count."""

def scale_(x: F32, factor: float) -> None:
    """In place: x *= factor."""

def axpby_(y: F32, x: npt.ArrayLike, a: float, b: float) -> None:
    """In place: y = a * y + b * x (x of y's shape; y itself allowed)."""

def clip_(x: F32, low: float, high: float) -> None:
    """In place: x = min(max(x, low), high)."""

def add_penalty_grad(param: npt.ArrayLike, grad: F32, l1: float, l2: float) -> float:
    """grad += l1 * sign(param) + 2 * l2 * param (in place); returns the penalty
    l1 * sum|param| + l2 * sum(param**2) (Keras's kernel_regularizer convention)."""

def adagrad_step(param: F32, grad: F32, sum_sq: F32, *, lr: float, eps: float,
                 weight_decay: float, lr_decay: float, step: int,
                 segments: Optional[npt.NDArray[np.int64]] = None) -> None:
    """In place, torch.optim.Adagrad (initial_accumulator_value 0)."""

def rmsprop_step(param: F32, grad: F32, square_avg: F32, momentum_buf: Optional[F32],
                 grad_avg: Optional[F32], *, lr: float, alpha: float, eps: float,
                 weight_decay: float, momentum: float, centered: bool,
                 segments: Optional[npt.NDArray[np.int64]] = None) -> None:
    """In place, torch.optim.RMSprop. momentum_buf required when momentum > 0, grad_avg when
    centered."""

# adam_step gains decoupled: bool = False. True is AdamW: param *= 1 - lr * weight_decay
# before the Adam update, and the gradient is left without the decay term.

def augment_images(x: npt.ArrayLike, *, seed: int, offset: int, max_shift: float = 0.0,
                   flip: bool = False, max_rotation: float = 0.0,
                   noise_std: float = 0.0) -> F32:
    """A randomly transformed copy of a batch of images (N, H, W) or (N, C, H, W): per image
    a shift of up to max_shift pixels in each direction, a horizontal flip with probability
    1/2, a rotation of up to max_rotation degrees (one affine map, bilinear sampling, zeros
    outside), then Gaussian noise of std noise_std. Image i draws from the stream at
    offset + i * 8 (geometry) and its noise from a disjoint range, so the result depends
    only on (seed, offset). In detail, with u = random_uniform(8 * N, seed, offset) and
    g = u[8 i: 8 i + 4]: shift (dx, dy) = max_shift * (2 g[0] - 1, 2 g[1] - 1) (dx to the
    right, dy down), flip when flip and g[2] < 0.5, angle max_rotation * (2 g[3] - 1) degrees
    (positive turns clockwise as displayed); content is flipped, then rotated about
    ((W - 1) / 2, (H - 1) / 2), then shifted."""

# ---- the training step (issue 6) -----------------------------------------------------------
# activation_backward(name, y, grad_y, alpha=0.01, x=None, out=None, bias_grad=None):
# out (float32, y's shape; may be grad_y, y or x itself) receives the result in place; with
# bias_grad (float32 (cols,), y 2-D) the same pass also adds the column sums of the result
# to bias_grad: a Dense layer's activation gradient and bias gradient in one sweep.

def gather_rows(x: npt.ArrayLike, index: npt.ArrayLike, out: Optional[F32] = None) -> F32:
    """out[i] = x[index[i]] (rows of any trailing shape), copied in parallel; index is
    range-checked. A mini-batch of shuffled samples without a NumPy fancy-index pass. x a
    DeviceArray (or Tensor) of any dtype: index an int64 DeviceArray there (checked on the
    device) or host integers (checked here, copied over without a wait), out of x's dtype on
    x's device; one of x's kind returned."""

# ---- convolution, pooling, batch norm (issue 13): NCHW arrays ----------------------------
Pair = int | tuple[int, int]

def conv2d_reference(x: npt.ArrayLike, weight: npt.ArrayLike, bias: Optional[npt.ArrayLike] = None,
                     *, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1,
                     groups: int = 1) -> F32:
    """torch.nn.functional.conv2d as a direct sum in double: the reference of the fast paths.
    weight (out_channels, channels / groups, kh, kw); ValueError naming the shapes when the
    padded image is smaller than the dilated kernel or groups does not divide the channels."""
def conv2d_forward(x: npt.ArrayLike, weight: npt.ArrayLike, bias: Optional[npt.ArrayLike] = None,
                   *, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1, groups: int = 1,
                   activation: ActivationName = "identity", activation_alpha: float = 0.01,
                   out: Optional[F32] = None, precision: Precision = "fp32") -> F32:
    """torch.nn.functional.conv2d, then the activation: image by image, each image's im2col block
    multiplied by the weight on the GEMM while it is in cache (precision 'bf16': bfloat16
    products on the GEMM; the direct kernels of stride 1 stay float32)."""
def conv2d_backward(x: npt.ArrayLike, weight: npt.ArrayLike, grad_y: npt.ArrayLike,
                    grad_weight: F32, *, grad_bias: Optional[F32] = None, beta: float = 0.0,
                    input_grad: bool = True, stride: Pair = 1, padding: Pair = 0,
                    dilation: Pair = 1, groups: int = 1, out: Optional[F32] = None,
                    precision: Precision = "fp32") -> Optional[F32]:
    """From grad_y (the output's gradient, after the activation's derivative): grad_weight (in
    place) = beta * grad_weight + dL/dweight, grad_bias (in place) += dL/dbias; returns dL/dx
    (None with input_grad=False). The batch's weight gradient is summed in a fixed order: the
    same bits whatever the thread count."""
def depthwise_conv2d_forward(x: npt.ArrayLike, weight: npt.ArrayLike,
                             bias: Optional[npt.ArrayLike] = None, *, stride: Pair = 1,
                             padding: Pair = 0, dilation: Pair = 1,
                             out: Optional[F32] = None) -> F32:
    """Convolution with groups == channels: weight (channels * multiplier, 1, kh, kw)."""
def depthwise_conv2d_backward(x: npt.ArrayLike, weight: npt.ArrayLike, grad_y: npt.ArrayLike,
                              grad_weight: F32, *, grad_bias: Optional[F32] = None,
                              beta: float = 0.0, input_grad: bool = True, stride: Pair = 1,
                              padding: Pair = 0, dilation: Pair = 1,
                              out: Optional[F32] = None) -> Optional[F32]:
    """grad_weight (in place) = beta * grad_weight + dL/dweight, grad_bias (in place) +=
    dL/dbias; returns dL/dx (into out when given), or None with input_grad=False."""
def maxpool2d_forward(x: npt.ArrayLike, kernel_size: Pair, *, stride: Optional[Pair] = None,
                      padding: Pair = 0, out: Optional[F32] = None,
                      argmax_out: Optional[npt.NDArray[np.int64]] = None
                      ) -> tuple[F32, npt.NDArray[np.int64]]:
    """(y, argmax) as torch.nn.functional.max_pool2d (floor mode; padding at most half the
    window, never chosen): the first of equal maxima, NaN wins; argmax indexes the input plane.
    out / argmax_out: float32 / int64 arrays of the output's shape to write into."""
def maxpool2d_backward(grad_y: npt.ArrayLike, argmax: npt.ArrayLike,
                       input_shape: tuple[int, int, int, int], kernel_size: Pair, *,
                       stride: Optional[Pair] = None, padding: Pair = 0,
                       out: Optional[F32] = None) -> F32:
    """Each output's gradient added to the input value it took (argmax range-checked)."""
def avgpool2d_forward(x: npt.ArrayLike, kernel_size: Pair, *, stride: Optional[Pair] = None,
                      padding: Pair = 0, out: Optional[F32] = None) -> F32:
    """Each window's mean, the padding counted (torch's count_include_pad=True)."""
def avgpool2d_backward(grad_y: npt.ArrayLike, input_shape: tuple[int, int, int, int],
                       kernel_size: Pair, *, stride: Optional[Pair] = None,
                       padding: Pair = 0, out: Optional[F32] = None) -> F32:
    """avgpool2d_forward's adjoint."""
def batchnorm_forward(x: npt.ArrayLike, weight: Optional[npt.ArrayLike],
                      bias: Optional[npt.ArrayLike], running_mean: F32, running_var: F32,
                      save_mean: F32, save_invstd: F32, *, training: bool, momentum: float = 0.1,
                      eps: float = 1e-5, relu: bool = False, out: Optional[F32] = None) -> F32:
    """torch.nn.functional.batch_norm over axis 1 of (batch, channels, ...): in training the
    batch's statistics (more than one value per channel needed), which move the running ones
    in place by momentum (toward the unbiased variance); else the running ones. save_mean and
    save_invstd (in place) receive the statistics used. relu=True (CPU arrays only): returns
    relu of the result, computed in the same pass, bit for bit what activation_forward gives."""
def batchnorm_backward(x: npt.ArrayLike, grad_y: npt.ArrayLike, weight: Optional[npt.ArrayLike],
                       save_mean: npt.ArrayLike, save_invstd: npt.ArrayLike, *, training: bool,
                       grad_weight: Optional[F32] = None, grad_bias: Optional[F32] = None,
                       beta: float = 0.0, input_grad: bool = True, relu: bool = False,
                       bias: Optional[npt.ArrayLike] = None,
                       out: Optional[F32] = None) -> Optional[F32]:
    """grad_weight / grad_bias (in place) = beta * themselves + the gradient; returns dL/dx
    (None with input_grad=False), through the batch's statistics in training. relu=True (CPU
    arrays only): batchnorm_forward(..., relu=True) ran with this weight and bias (None: 0);
    grad_y is then the gradient at its output, zeroed first where that output was 0 (as
    activation_backward("relu", ...)), which is found from x and the saved statistics, bit for
    bit, rather than read back."""
