"""Conv2d: 2-D convolution over NCHW images, on the GEMM."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _C
from .. import init as _init
from .._checks import as_float32, positive_int
from .._random import generator
from .. import memory
from .. import precision as _precision
from .layers import (_ACTIVATIONS, _ActivationName, _check_grad, _check_parameter_shapes,
                     _check_same_memory)
from .module import Parameter, Workspace, WorkspaceLayer, reserve_parameters


# The kernels' bound on a window's sizes, strides, padding and dilation (csrc's geometry
# checks): past it, an error at construction naming the layer's argument.
_GEOMETRY_MAX = 1 << 30


def _pair(value: Any, name: str, low: int) -> tuple[int, int]:
    """An int or a pair of ints, each in [low, 2**30], as (h, w)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r:.100}")
    for v in pair:
        if (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                or not low <= v <= _GEOMETRY_MAX):
            raise ValueError(f"{name} must be an int in [{low}, 2**30] or a pair of them; "
                             f"got {value!r:.100}")
    return int(pair[0]), int(pair[1])


def _check_output_size(layer: Any, input_shape: tuple, shape: tuple) -> None:
    """An output no array can hold (a padding of 10**9) named here, not by NumPy's
    allocation ("array is too big")."""
    if None not in shape and math.prod(shape) > (2**63 - 1) // 8:  # int64's, in bytes (np.iinfo per call: 6 us)
        raise ValueError(f"{layer!r}: an input of shape {input_shape} gives an output of shape "
                         f"{shape}, more values than an array can hold")


class Conv2d(WorkspaceLayer):
    """2-D convolution of (batch, in_channels, height, width) images, as
    ``torch.nn.Conv2d``: ``weight`` is (out_channels, in_channels / groups, kh, kw) and
    ``bias`` (out_channels,), under torch's names, so a torch state dict loads one-to-one.

    padding: an int or (h, w) pair of zeros around the image, "valid" (0) or "same" (the
    output keeps the input's size; stride 1 and an odd kernel, dilated, are needed for the
    padding to be symmetric). groups splits the channels into that many independent
    convolutions; groups == in_channels is a depthwise convolution, with loops of its own.
    activation: as Dense's (applied to each image's output right after its GEMM, while
    it is in cache). init: as Dense's, with fan_in = in_channels / groups * kh * kw and
    fan_out = out_channels * kh * kw, as ``torch.nn.init`` counts them (He normal for
    rectifiers, Glorot uniform otherwise); the bias starts at zero.

    The convolution is a GEMM per image: the weight (out_channels x in_channels kh kw) times
    the image's im2col block, whose columns are the output pixels' input patches, built and
    multiplied while it is in cache; the product is the image's output, to which the bias and
    activation are applied. Backward multiplies the output gradient by the blocks (the weight's
    gradient, summed over the batch in a fixed order) and by the weight (the patches' gradient,
    summed back into the image). At stride 1 and dilation 1 (padding under the kernel size),
    AVX-512 and AVX2 run a direct convolution instead, on the zero-padded image, for the forward
    pass and the input's gradient (the output's gradient convolved with the flipped weight),
    and for the weight's gradient too with at most 16 output channels per group (LeNet's),
    where each patch value would feed too few multiply-adds for the GEMM to pay.
    """

    activation = _ActivationName()
    # what the weight's shape and the padding follow from: fixed once built (an int stride
    # set afterwards, as torch takes it, had failed in a zip with a bare TypeError)
    _FIXED = frozenset({"in_channels", "out_channels", "kernel_size", "stride", "padding",
                        "dilation", "groups", "padding_mode"})

    _forward_caches = ("_x", "_z", "_y")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._FIXED and name in self.__dict__:
            raise AttributeError(f"{self!r}: {name} is fixed once the layer is built (its "
                                 f"weight's shape and padding follow from it); build a new "
                                 f"Conv2d(..., {name}={value!r})")
        super().__setattr__(name, value)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 activation: str | None = None,
                 init: str | _init.Initializer | None = None) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "Conv2d: in_channels")
        self.out_channels = positive_int(out_channels, "Conv2d: out_channels")
        self.groups = positive_int(groups, "Conv2d: groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"Conv2d: groups={self.groups} must divide in_channels="
                             f"{self.in_channels} and out_channels={self.out_channels}")
        self.kernel_size = _pair(kernel_size, "Conv2d: kernel_size", 1)
        self.stride = _pair(stride, "Conv2d: stride", 1)
        self.dilation = _pair(dilation, "Conv2d: dilation", 1)
        self.padding_mode = padding if isinstance(padding, str) else None
        if isinstance(padding, str):
            if padding == "valid":
                self.padding = (0, 0)
            elif padding == "same":
                if self.stride != (1, 1):
                    raise ValueError(f"Conv2d: padding='same' needs stride 1; got {self.stride}")
                span = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
                if any(s % 2 for s in span):
                    raise ValueError("Conv2d: padding='same' with an even (dilated) kernel "
                                     f"{self.kernel_size} would pad one side more than the "
                                     "other; use an odd kernel or an explicit padding")
                self.padding = (span[0] // 2, span[1] // 2)
            else:
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid'; "
                                 f"got {padding!r}")
        else:
            self.padding = _pair(padding, "Conv2d: padding", 0)
        self.activation = activation
        self.init = init
        kh, kw = self.kernel_size
        cg = self.in_channels // self.groups
        shape = (self.out_channels, cg, kh, kw)
        fan_in, fan_out = cg * kh * kw, self.out_channels * kh * kw  # torch.nn.init's, groups too
        if init is None:
            init = "he_normal" if _ACTIVATIONS[self.activation]["he_init"] else "xavier_uniform"
        reserve_parameters(self.out_channels * (cg * kh * kw + bool(bias)),
                           f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})")
        w = memory.to_host(_init.get(init)(shape, fan_in, fan_out, generator()))
        if w.shape != shape:
            raise ValueError(f"Conv2d: init {init!r} returned shape {w.shape}; expected {shape}")
        self.weight = Parameter(w, "weight")
        self.bias = Parameter(memory.zeros(self.out_channels), "bias") if bias else None
        self._x: np.ndarray | None = None
        self._z: np.ndarray | None = None  # the pre-activation, when f' needs it (gelu, elu)
        self._y: np.ndarray | None = None  # the output

    @property
    def depthwise(self) -> bool:
        return self.groups == self.in_channels and self.groups > 1

    @property
    def last_output(self) -> np.ndarray | None:
        """The output of the last forward call (None before one)."""
        return self._y

    def _geometry(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def _check_input(self, x: Any) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape (batch, {self.in_channels}, "
                             f"height, width); got {x.shape}")
        self.output_shape(x.shape)  # an image smaller than the kernel: the error names both
        return x

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        x = self._check_input(x)
        self._check_parameters()
        _check_same_memory(self, x, self.weight.data)
        fused = not _ACTIVATIONS[self.activation]["backward_needs_input"]
        bias = None if self.bias is None else self.bias.data
        shape = self.output_shape(x.shape)
        out = self.output(workspace, internal, "output", shape)
        z = None if fused or workspace is None else workspace.array("pre_activation", shape)
        act = self.activation if fused else "identity"
        self._precision = _precision.current()  # backward's too; depthwise has no GEMM
        if self.depthwise:
            if act == "identity":
                y = z = _C.depthwise_conv2d_forward(x, self.weight.data, bias,
                                                    **self._geometry(), out=out if fused else z)
            else:  # the activation in place on the output
                y = _C.depthwise_conv2d_forward(x, self.weight.data, bias, **self._geometry(),
                                                out=out)
                y = _C.activation_forward(act, y, self._alpha, out=y)
        else:
            z = y = _C.conv2d_forward(x, self.weight.data, bias, **self._geometry(),
                                      groups=self.groups, activation=act,
                                      activation_alpha=self._alpha, out=out if fused else z,
                                      precision=self._precision)
        if not fused:
            y = _C.activation_forward(self.activation, z, self._alpha, out=out)
        self._x, self._z, self._y = x, None if fused else z, y
        return y

    def _check_parameters(self) -> None:
        # forward and backward: the weights may have been assigned anew in between (backward
        # had blamed grad_y's shape)
        _check_parameter_shapes(self, (
            ("weight", self.weight, (self.out_channels, self.in_channels // self.groups, *self.kernel_size)),
            ("bias", self.bias, (self.out_channels,))))

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        if self._x is None or self._y is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        self._check_parameters()
        g = _check_grad(self, grad_out, self._y.shape)
        weight_grad, beta = self.weight.grad_to_write()
        bias_grad = None
        if self.bias is not None:
            bias_grad, bias_beta = self.bias.grad_to_write()
            if bias_beta == 0.0:
                bias_grad.fill(0.0)  # the kernels add to it
        if self.activation != "identity":
            g = _C.activation_backward(self.activation, self._y, g, self._alpha, x=self._z,
                                       out=None if workspace is None else
                                       workspace.array("grad_z", g.shape))
        out = self.output(workspace, internal, "grad_x", self._x.shape) if input_grad else None
        if self.depthwise:
            return _C.depthwise_conv2d_backward(self._x, self.weight.data, g, weight_grad,
                                                grad_bias=bias_grad, beta=beta,
                                                input_grad=input_grad, **self._geometry(),
                                                out=out)
        return _C.conv2d_backward(self._x, self.weight.data, g, weight_grad, grad_bias=bias_grad,
                                  beta=beta, input_grad=input_grad, **self._geometry(),
                                  groups=self.groups, out=out, precision=self._precision)

    def get_config(self) -> dict:
        """Constructor arguments; a callable ``init`` is left out (the weights are saved)."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding_mode or list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups,
                "bias": self.bias is not None,
                "activation": None if self.activation == "identity" else self.activation,
                "init": self.init if isinstance(self.init, str) else None}

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 4 or input_shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape (batch, {self.in_channels}, "
                             f"height, width); got {input_shape}")
        out = []
        for size, k, s, p, d in zip(input_shape[2:], self.kernel_size, self.stride,
                                    self.padding, self.dilation):
            if size is None:
                out.append(None)
                continue
            span = d * (k - 1) + 1
            if size + 2 * p < span:
                raise ValueError(f"{self!r}: the input's {input_shape[2]}x{input_shape[3]} "
                                 f"image (padding {self.padding}) is smaller than the "
                                 f"{k}-wide kernel (dilation {d}); got input shape {input_shape}")
            out.append((size + 2 * p - span) // s + 1)
        shape = (input_shape[0], self.out_channels, *out)
        _check_output_size(self, input_shape, shape)
        return shape

    def __repr__(self) -> str:
        kh, kw = self.kernel_size
        extra = "" if self.stride == (1, 1) else f", stride={self.stride}"
        if self.padding_mode:
            extra += f", padding={self.padding_mode!r}"
        elif self.padding != (0, 0):
            extra += f", padding={self.padding}"
        extra += "" if self.dilation == (1, 1) else f", dilation={self.dilation}"
        extra += "" if self.groups == 1 else f", groups={self.groups}"
        extra += "" if self.bias is not None else ", bias=False"
        extra += "" if self.activation == "identity" else f", activation={self.activation!r}"
        kernel = kh if kh == kw else (kh, kw)
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={kernel}{extra})"
