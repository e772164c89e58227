"""Pooling over NCHW images: MaxPool2d, AvgPool2d, GlobalAvgPool2d."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C
from .._checks import as_float32
from .conv import _pair
from .layers import _check_grad
from .module import Workspace, WorkspaceLayer


class _Pool2d(WorkspaceLayer):
    """What MaxPool2d and AvgPool2d share: the window, its checks and shapes."""

    def __init__(self, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, f"{name}: kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, f"{name}: stride", 1)
        self.padding = _pair(padding, f"{name}: padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding {self.padding} must be at most half the kernel "
                             f"{self.kernel_size}")
        self._shape: tuple | None = None

    def _check_input(self, x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        """x as float32 and the output's shape."""
        x = as_float32(x, lambda: f"{self!r} input")
        if x.ndim != 4:
            raise ValueError(f"{self!r}: expected input of shape (batch, channels, height, "
                             f"width); got {x.shape}")
        return x, self.output_shape(x.shape)

    def _geometry(self) -> dict:
        return {"stride": self.stride, "padding": self.padding}

    def _output_grad(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out checked against the last forward's output."""
        if self._shape is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return _check_grad(self, grad_out, self._out)

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 4:
            raise ValueError(f"{self!r}: expected input of shape (batch, channels, height, "
                             f"width); got {input_shape}")
        out = []
        for size, k, s, p in zip(input_shape[2:], self.kernel_size, self.stride, self.padding):
            if size is not None and size + 2 * p < k:
                raise ValueError(f"{self!r}: the input's {input_shape[2]}x{input_shape[3]} "
                                 f"image (padding {self.padding}) is smaller than the "
                                 f"{self.kernel_size} window; got input shape {input_shape}")
            out.append(None if size is None else (size + 2 * p - k) // s + 1)
        return (*input_shape[:2], *out)

    def get_config(self) -> dict:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}

    def __repr__(self) -> str:
        kh, kw = self.kernel_size
        extra = "" if self.stride == self.kernel_size else f", stride={self.stride}"
        extra += "" if self.padding == (0, 0) else f", padding={self.padding}"
        return f"{type(self).__name__}(kernel_size={kh if kh == kw else (kh, kw)}{extra})"


class MaxPool2d(_Pool2d):
    """Each window's maximum, as ``torch.nn.MaxPool2d`` (floor mode; padding, at most half
    the window, never wins): the first of equal maxima, and NaN wins. stride defaults to
    the window. Backward sends each output's gradient to the input value it took."""

    _forward_caches = ("_argmax", "_shape", "_out")

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        x, shape = self._check_input(x)
        y, self._argmax = _C.maxpool2d_forward(
            x, self.kernel_size, **self._geometry(),
            out=self.output(workspace, internal, "output", shape),
            argmax_out=None if workspace is None else workspace.array("argmax", shape, np.int64))
        self._shape, self._out = x.shape, y.shape
        return y

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        g = self._output_grad(grad_out)
        if not input_grad:
            return None
        return _C.maxpool2d_backward(g, self._argmax, self._shape, self.kernel_size,
                                     **self._geometry(),
                                     out=self.output(workspace, internal, "grad_x", self._shape))


class AvgPool2d(_Pool2d):
    """Each window's mean, as ``torch.nn.AvgPool2d`` (floor mode; the padding counts in the
    mean, torch's default). stride defaults to the window."""

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        x, shape = self._check_input(x)
        y = _C.avgpool2d_forward(x, self.kernel_size, **self._geometry(),
                                 out=self.output(workspace, internal, "output", shape))
        self._shape, self._out = x.shape, y.shape
        return y

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        g = self._output_grad(grad_out)
        if not input_grad:
            return None
        return _C.avgpool2d_backward(g, self._shape, self.kernel_size, **self._geometry(),
                                     out=self.output(workspace, internal, "grad_x", self._shape))


class GlobalAvgPool2d(WorkspaceLayer):
    """(batch, channels, height, width) -> (batch, channels): each channel's mean over the
    image (Keras's GlobalAveragePooling2D; torch's AdaptiveAvgPool2d(1) then Flatten)."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple | None = None

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        if x.ndim != 4 or 0 in x.shape[2:]:
            raise ValueError(f"{self!r}: expected input of shape (batch, channels, height, "
                             f"width) with at least one pixel; got {x.shape}")
        self._shape = x.shape
        out = self.output(workspace, internal, "output", (*x.shape[:2], 1, 1))
        return _C.avgpool2d_forward(x, x.shape[2:], out=out).reshape(x.shape[:2])

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        g = _check_grad(self, grad_out, self._shape[:2])
        if not input_grad:
            return None
        return _C.avgpool2d_backward(g.reshape(*self._shape[:2], 1, 1), self._shape,
                                     self._shape[2:],
                                     out=self.output(workspace, internal, "grad_x", self._shape))

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 4:
            raise ValueError(f"{self!r}: expected input of shape (batch, channels, height, "
                             f"width); got {input_shape}")
        return tuple(input_shape[:2])
