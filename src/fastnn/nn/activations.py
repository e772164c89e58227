"""Activation layers: Sigmoid, ReLU, Tanh, LeakyReLU, ELU, GELU, Softplus (element-wise) and
Softmax (rows)."""

from __future__ import annotations

import numpy as np

from .. import _C
from .._checks import as_float32, non_negative
from .module import Workspace, WorkspaceLayer


class _Activation(WorkspaceLayer):
    """Base of the activation layers: caches the output y, from which f' is computed.
    Subclasses implement ``_apply(x, out)`` and ``_derive(y, g, out)``, ``out`` None or
    the array to write into."""

    activation = "identity"
    _forward_caches = ("_y",)

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    @property
    def last_output(self) -> np.ndarray | None:
        """The output of the last forward call, which backward uses (None before one)."""
        return self._y

    def _apply(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _derive(self, y: np.ndarray, g: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        self._y = self._apply(x, self.output(workspace, internal, "output", x.shape))
        return self._y

    def _adopt_output(self, y: np.ndarray) -> np.ndarray:
        """Sequential's fusion: the layer before computed this one's output, y, as well."""
        self._y = y
        return y

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        if self._y is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        if not input_grad:
            return None
        g = as_float32(grad_out, lambda: f"{self!r} grad_out")
        if g.shape != self._y.shape:
            raise ValueError(f"{self!r}: grad_out has shape {g.shape}; expected {self._y.shape} "
                             "(the shape of the last forward output)")
        return self._derive(self._y, g, self.output(workspace, internal, "grad_x", g.shape))


class _Elementwise(_Activation):
    alpha = 0.0

    def _apply(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return _C.activation_forward(self.activation, x, self.alpha, out=out)

    def _derive(self, y: np.ndarray, g: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return _C.activation_backward(self.activation, y, g, self.alpha, out=out)


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``, element-wise."""

    activation = "sigmoid"


class ReLU(_Elementwise):
    """``max(x, 0)``, element-wise."""

    activation = "relu"


class Tanh(_Elementwise):
    """``tanh(x)``, element-wise."""

    activation = "tanh"


class LeakyReLU(_Elementwise):
    """``x`` if x > 0 else ``negative_slope * x``, element-wise."""

    activation = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        # >= 0: the backward pass reads the derivative from the output's sign, which a
        # negative slope flips for x < 0
        self.alpha = non_negative(negative_slope, "LeakyReLU: negative_slope")

    @property
    def negative_slope(self) -> float:
        return self.alpha

    def get_config(self) -> dict:
        return {"negative_slope": self.alpha}

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.alpha})"


class _KeepsInput(_Elementwise):
    """An activation whose derivative needs its input x, which it keeps besides the output."""

    _forward_caches = ("_y", "_x")

    def __init__(self) -> None:
        super().__init__()
        self._x: np.ndarray | None = None

    def _apply(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        self._x = x
        return super()._apply(x, out)

    def _derive(self, y: np.ndarray, g: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return _C.activation_backward(self.activation, y, g, self.alpha, x=self._x, out=out)


class ELU(_KeepsInput):
    """``x`` if x > 0 else ``alpha * (exp(x) - 1)``, element-wise. Its derivative is taken
    from x (from the output, ``y + alpha``, it was lost below x = -17, where exp(x) - 1
    rounds to -1)."""

    activation = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = non_negative(alpha, "ELU: alpha")  # >= 0, as LeakyReLU's slope

    def get_config(self) -> dict:
        return {"alpha": self.alpha}

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"


class GELU(_KeepsInput):
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, element-wise (the tanh
    approximation, torch's ``GELU(approximate="tanh")``). Its derivative needs x, which
    it keeps besides the output."""

    activation = "gelu"


class Softplus(_Elementwise):
    """``log(1 + exp(x))``, element-wise: a smooth ReLU."""

    activation = "softplus"


class Softmax(_Activation):
    """Row-wise softmax of a (batch, classes) array.

    For classification, prefer raw logits with ``losses.CrossEntropy``, which fuses a
    numerically stable log-softmax into the loss.
    """

    activation = "softmax"

    def _apply(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        self.output_shape(x.shape)
        return _C.softmax_forward(x)  # rarely inside a model: new arrays will do

    def output_shape(self, input_shape: tuple) -> tuple:
        # export_onnx and summary ask here: a (batch, 2, 3) input had been exported
        if len(input_shape) != 2:
            raise ValueError(f"Softmax: expected input of shape (batch, classes); got "
                             f"{tuple(input_shape)}")
        return input_shape

    def _derive(self, y: np.ndarray, g: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return _C.softmax_backward(y, g)
