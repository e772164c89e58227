"""Dense: the fully connected layer, with an optional fused activation."""

from __future__ import annotations

import math

import numpy as np

from .. import _C
from .._checks import as_float32, positive_int
from .._random import generator
from .module import Module, Parameter

_ACTIVATIONS = {
    None: "identity",
    "identity": "identity",
    "linear": "identity",
    "sigmoid": "sigmoid",
    "relu": "relu",
    "tanh": "tanh",
    "leaky_relu": "leaky_relu",
}
LEAKY_RELU_SLOPE = 0.01


class Dense(Module):
    """``y = activation(x @ W.T + b)`` for ``x`` of shape (batch, in_features).

    ``weight`` is (out_features, in_features) and ``bias`` (out_features,), as in
    ``torch.nn.Linear``. activation: None/"linear", "sigmoid", "relu", "tanh" or
    "leaky_relu" (slope 0.01; use a ``LeakyReLU`` layer for another slope).

    Initialisation (from ``fastnn.seed``'s generator): He normal,
    N(0, 2 / in_features), for relu and leaky_relu, which keeps activations' variance
    constant through ReLU layers; Glorot uniform, U(-a, a) with
    a = sqrt(6 / (in_features + out_features)), otherwise. The bias starts at zero.
    """

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        key = activation.lower() if isinstance(activation, str) else activation
        if key not in _ACTIVATIONS:
            names = ", ".join(repr(k) for k in _ACTIVATIONS)
            raise ValueError(f"Dense: unknown activation {activation!r}; expected one of {names}")
        self.activation = _ACTIVATIONS[key]
        shape = (self.out_features, self.in_features)
        if self.activation in ("relu", "leaky_relu"):
            w = generator().normal(0.0, math.sqrt(2.0 / self.in_features), shape)
        else:
            limit = math.sqrt(6.0 / (self.in_features + self.out_features))
            w = generator().uniform(-limit, limit, shape)
        self.weight = Parameter(w, "weight")
        self.bias = Parameter(np.zeros(self.out_features), "bias") if bias else None
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float32(x, f"{self!r} input")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (batch, {self.in_features}); "
                             f"got {x.shape}")
        # Bias and activation are applied by the GEMM to each tile while it is in cache.
        y = _C.gemm(x, self.weight.data, transpose_b=True,
                    bias=None if self.bias is None else self.bias.data,
                    activation=self.activation, activation_alpha=LEAKY_RELU_SLOPE)
        self._x, self._y = x, y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._x is None or self._y is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        g = as_float32(grad_out, f"{self!r} grad_out")
        if g.shape != self._y.shape:
            raise ValueError(f"{self!r}: grad_out has shape {g.shape}; expected {self._y.shape} "
                             "(the shape of the last forward output)")
        if self.activation != "identity":
            g = _C.activation_backward(self.activation, self._y, g, LEAKY_RELU_SLOPE)
        _C.gemm(g, self._x, out=self.weight.grad, transpose_a=True, beta=1.0)
        if self.bias is not None:
            _C.column_sum(g, self.bias.grad, beta=1.0)
        return _C.gemm(g, self.weight.data)

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (batch, {self.in_features}); "
                             f"got {input_shape}")
        return (input_shape[0], self.out_features)

    def __repr__(self) -> str:
        extra = "" if self.activation == "identity" else f", activation={self.activation!r}"
        extra += "" if self.bias is not None else ", bias=False"
        return f"Dense({self.in_features}, {self.out_features}{extra})"
