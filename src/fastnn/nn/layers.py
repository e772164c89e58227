"""Dense (the fully connected layer, with an optional fused activation), Dropout, Flatten,
Reshape."""

from __future__ import annotations

import math

import numpy as np

from .. import _C
from .. import init as _init
from .. import memory
from .. import precision as _precision
from .._checks import as_float32, non_negative, number, positive_int, stream_seed
from .._random import generator
from .module import Module, Parameter, Workspace, WorkspaceLayer, reserve_parameters

# The activations Dense accepts, from the C++ table (name -> canonical name, default alpha,
# whether backward needs the pre-activation z, whether He's init is the default).
_ACTIVATIONS: dict[str, dict] = _C.activations()


def _resolve_activation(activation: str | None, owner: str) -> tuple[str, float]:
    """(canonical name, default alpha) of an activation name or None (identity)."""
    key = activation.lower() if isinstance(activation, str) else activation
    key = "identity" if key is None else key
    if key == "softmax":  # Keras's spelling for a classifier's last layer
        raise ValueError(
            f"{owner}: activation='softmax' is not available in a layer; leave the last layer "
            "linear (activation=None) and use loss='cross_entropy', which applies the softmax "
            "itself (numerically stable); for probabilities, apply fastnn.nn.Softmax() to "
            "model.predict(X)")
    if key not in _ACTIVATIONS:
        names = ", ".join(repr(k) for k in [None, *_ACTIVATIONS])
        raise ValueError(f"{owner}: unknown activation {activation!r}; expected one of {names}")
    return _ACTIVATIONS[key]["canonical"], _ACTIVATIONS[key]["alpha"]


def _check_grad(layer: Module, grad_out: np.ndarray, shape: tuple) -> np.ndarray:
    g = as_float32(grad_out, lambda: f"{layer!r} grad_out")
    if g.shape != shape:
        raise ValueError(f"{layer!r}: grad_out has shape {g.shape}; expected {shape} "
                         "(the shape of the last forward output)")
    return g


class _ActivationName:
    """The ``activation`` attribute of Dense and Conv2d: assigning it resolves the name and
    its alpha as the constructor does (``dense.activation = "elu"`` had kept leaky_relu's
    alpha: wrong outputs, and a saved model that predicted otherwise once loaded; "Tanh" a
    KeyError at the forward pass)."""

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        return self if layer is None else layer._activation

    def __set__(self, layer: Any, value: str | None) -> None:
        layer._activation, layer._alpha = _resolve_activation(value, type(layer).__name__)


def _check_same_memory(layer: Module, x: object, weight: object) -> None:
    """ValueError naming ``layer`` and both places where its input and its weight are not in
    one memory (a NumPy batch given to a model moved to a device, or the reverse): the kernel
    had named its own argument ('b', 'weight') and said a Tensor is not a NumPy array."""
    if type(x) is np.ndarray and type(weight) is np.ndarray:  # every step of a CPU model
        return
    if memory.is_tensor(x) == memory.is_tensor(weight) and memory.device_of(x) == memory.device_of(weight):
        return

    def where(a: object) -> str:
        return f"on {a.device} (a fastnn Tensor)" if memory.is_tensor(a) else "in host memory (a NumPy array)"

    move = (f"fastnn.asarray(x, device={weight.device!r})" if memory.is_tensor(weight)
            else "x.numpy()")
    raise ValueError(f"{layer!r}: the input is {where(x)} but the layer is {where(weight)}: "
                     f"move the input ({move}) or the model (model.to(...)); fit, evaluate and "
                     "predict move each batch themselves")


def _check_parameter_shapes(layer: Module, expected: tuple) -> None:
    """ValueError naming ``layer`` unless each (name, parameter or None, shape) of
    ``expected`` has its shape: a parameter's data may have been assigned anew."""
    for name, p, want in expected:
        if p is not None and not isinstance(p, Parameter):  # an array's .data is a memoryview
            raise TypeError(f"{layer!r}: {name} must be a fastnn.nn.Parameter; got "
                            f"{type(p).__name__} (to replace its values, assign to "
                            f"layer.{name}.data)")
        if p is not None and getattr(p.data, "shape", None) != want:
            raise ValueError(f"{layer!r}: {name} must have shape {want}; got "
                             f"{getattr(p.data, 'shape', type(p.data).__name__)}")


class Dense(WorkspaceLayer):
    """``y = activation(x @ W.T + b)`` for ``x`` of shape (batch, in_features).

    ``weight`` is (out_features, in_features) and ``bias`` (out_features,), as in
    ``torch.nn.Linear``. activation: None/"linear", "sigmoid", "relu", "tanh",
    "leaky_relu" (slope 0.01; use a ``LeakyReLU`` layer for another), "elu" (alpha 1),
    "gelu" (tanh approximation) or "softplus". Bias and activation run inside the GEMM,
    on each tile while it is in cache (for gelu and elu only the bias: their derivatives
    need the pre-activation, which the layer then keeps).

    init: a ``fastnn.init`` name or a function (shape, fan_in, fan_out, rng) for the
    weight, drawn from ``fastnn.seed``'s generator. The default is He normal,
    N(0, 2 / in_features), for relu, leaky_relu, elu and gelu, which keeps activations'
    variance constant through ReLU-like layers, and Glorot uniform,
    U(-a, a) with a = sqrt(6 / (in_features + out_features)), for sigmoid, tanh,
    softplus and linear. The bias starts at zero.

    l1, l2: penalties ``l1 * sum|W| + l2 * sum(W^2)`` on the weight (not the bias), as
    Keras's ``kernel_regularizer``: ``backward`` adds their gradient to ``weight.grad``
    (once between two ``zero_grad``, however often the layer runs in a step, as the loss
    counts the penalty once) and ``regularization_loss()`` gives their value, which
    training adds to the loss. Reset gradients with ``zero_grad()`` (the model's or the
    optimizer's), not by writing zeros into ``grad``: that is no reset to the layer, whose
    later passes then add no penalty gradient until the next ``zero_grad``.
    """

    activation = _ActivationName()

    _forward_caches = ("_x", "_z", "_y")

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 bias: bool = True, init: str | _init.Initializer | None = None,
                 l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.activation = activation
        self.l1, self.l2 = non_negative(l1, "Dense: l1"), non_negative(l2, "Dense: l2")
        self.init = init
        if init is None:
            init = "he_normal" if _ACTIVATIONS[self.activation]["he_init"] else "xavier_uniform"
        shape = (self.out_features, self.in_features)
        reserve_parameters(self.out_features * (self.in_features + bool(bias)),
                           f"Dense({self.in_features}, {self.out_features})")
        w = memory.to_host(_init.get(init)(shape, self.in_features, self.out_features, generator()))
        if w.shape != shape:
            raise ValueError(f"Dense: init {init!r} returned shape {w.shape}; expected {shape}")
        self.weight = Parameter(w, "weight")
        self.bias = Parameter(memory.zeros(self.out_features), "bias") if bias else None
        self._x: np.ndarray | None = None
        self._z: np.ndarray | None = None
        self._y: np.ndarray | None = None

    @property
    def last_output(self) -> np.ndarray | None:
        """The output of the last forward call, which backward uses (None before one)."""
        return self._y

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            hint = "; images? put nn.Flatten() before it" if x.ndim > 2 else ""
            raise ValueError(f"{self!r}: expected input of shape (batch, {self.in_features}); "
                             f"got {x.shape}{hint}")
        self._check_parameters()
        _check_same_memory(self, x, self.weight.data)
        fused = not _ACTIVATIONS[self.activation]["backward_needs_input"]
        self._precision = _precision.current()  # backward's too, as torch.autocast's
        shape = (len(x), self.out_features)
        out = self.output(workspace, internal, "output", shape)
        z = None if fused or workspace is None else workspace.array("pre_activation", shape)
        y = _C.gemm(x, self.weight.data, out if fused else z, transpose_b=True,
                    bias=None if self.bias is None else self.bias.data,
                    activation=self.activation if fused else "identity",
                    activation_alpha=self._alpha, precision=self._precision)
        self._x, self._z = x, None if fused else y
        if not fused:
            y = _C.activation_forward(self.activation, y, self._alpha, out=out)
        self._y = y
        return y

    def _check_parameters(self) -> None:
        # forward and backward: the weights may have been assigned anew in between
        w, b = self.weight, self.bias
        if (type(w) is Parameter and type(w.data) is np.ndarray
                and w.data.shape == (self.out_features, self.in_features)
                and (b is None or type(b) is Parameter and type(b.data) is np.ndarray
                     and b.data.shape == (self.out_features,))):
            return  # as every step finds them, without the general check's calls
        _check_parameter_shapes(self, (("weight", self.weight, (self.out_features, self.in_features)),
                                       ("bias", self.bias, (self.out_features,))))

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        if self._x is None or self._y is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        self._check_parameters()
        g = _check_grad(self, grad_out, self._y.shape)
        bias_grad = None
        if self.bias is not None:
            bias_grad, beta = self.bias.grad_to_write()
            if beta == 0.0:
                bias_grad.fill(0.0)  # out_features floats; the kernels below add to it
        if self.activation != "identity":
            # f'(z) * g and the bias gradient in one pass
            out = workspace.array("grad_z", g.shape) if workspace is not None else None
            g = _C.activation_backward(self.activation, self._y, g, self._alpha, x=self._z,
                                       out=out, bias_grad=bias_grad)
        elif bias_grad is not None:
            _C.column_sum(g, bias_grad, beta=1.0)
        weight_grad, beta = self.weight.grad_to_write()
        _C.gemm(g, self._x, out=weight_grad, transpose_a=True, beta=beta,
                precision=self._precision)
        if (self.l1 or self.l2) and self.weight.penalty_due():
            _C.add_penalty_grad(self.weight.data, self.weight.grad, self.l1, self.l2)
        if not input_grad:
            return None
        return _C.gemm(g, self.weight.data, self.output(workspace, internal, "grad_x", self._x.shape),
                       precision=self._precision)

    def regularization_loss(self) -> float:
        """``l1 * sum|W| + l2 * sum(W^2)`` for the current weight (0.0 without penalties)."""
        w = self.weight.data
        return ((self.l1 * _C.sum_abs(w) if self.l1 else 0.0)
                + (self.l2 * _C.sum_squares(w) if self.l2 else 0.0))

    def get_config(self) -> dict:
        """Constructor arguments; a callable ``init`` is left out (the weights are saved)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": None if self.activation == "identity" else self.activation,
                "bias": self.bias is not None,
                "init": self.init if isinstance(self.init, str) else None,
                "l1": self.l1, "l2": self.l2}

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (batch, {self.in_features}); "
                             f"got {input_shape}")
        return (input_shape[0], self.out_features)

    def __repr__(self) -> str:
        extra = "" if self.activation == "identity" else f", activation={self.activation!r}"
        extra += "" if self.bias is not None else ", bias=False"
        extra += "".join(f", {k}={v}" for k, v in (("l1", self.l1), ("l2", self.l2)) if v)
        return f"Dense({self.in_features}, {self.out_features}{extra})"


class Dropout(WorkspaceLayer):
    """Inverted dropout: in training, each entry is zeroed with probability ``p`` and the
    others are scaled by 1 / (1 - p) (p in float32, as the masks use it), so the expected
    output equals the input; in
    evaluation mode (``eval()``) the layer is the identity.

    Masks come from a counter-based generator (Philox): the layer's ``seed`` (drawn from
    ``fastnn.seed``'s generator when the layer is built, unless given) and an ``offset``
    that advances by the input's size at every training forward. The same seed gives
    the same masks whatever the thread count; backward regenerates the mask instead of
    storing it. ``offset`` is saved with the model, so a resumed training continues the
    same stream of masks.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None, offset: int = 0) -> None:
        super().__init__()
        p = number(p, "Dropout: p")
        if not 0.0 <= p <= 1.0 - 2.0**-24:  # above, p rounds to 1.0 in float32: nothing kept
            raise ValueError("Dropout: p must be in [0, 1), at most 1 - 2**-24 (the masks' "
                             f"resolution); got {p!r}")
        self.p = p
        self.seed = stream_seed(seed, "Dropout")
        if (isinstance(offset, bool) or not isinstance(offset, (int, np.integer))
                or not 0 <= offset < 2**64):
            raise ValueError(f"Dropout: offset must be an integer in [0, 2**64); got {offset!r}")
        self.offset = int(offset)  # where the mask stream resumes (a saved model continues it)
        self._shape: tuple | None = None
        self._mask_offset: int | None = None  # None: the last forward was the identity

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask_offset = None
            return x
        out = _C.dropout_forward(x, self.p, self.seed, self.offset,
                                 out=self.output(workspace, internal, "output", x.shape))
        # after the call: a failed one leaves the stream where it was; modulo 2**64, as the
        # kernel's counter (an offset past it could not be used, nor saved and loaded again)
        self._mask_offset, self.offset = self.offset, (self.offset + x.size) % 2**64
        return out

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        g = _check_grad(self, grad_out, self._shape)
        if not input_grad:
            return None
        if self._mask_offset is None:
            return g
        return _C.dropout_backward(g, self.p, self.seed, self._mask_offset,
                                   out=self.output(workspace, internal, "grad_x", g.shape))

    def get_config(self) -> dict:
        return {"p": self.p, "seed": self.seed, "offset": self.offset}

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class Flatten(Module):
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...), e.g. images before a Dense layer;
    backward restores the input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        if x.ndim < 1:
            raise ValueError(f"{self!r}: input needs a batch dimension; got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(len(x), math.prod(x.shape[1:]))  # not -1: it fails on an empty batch

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        flat = (self._shape[0], math.prod(self._shape[1:]))
        g = _check_grad(self, grad_out, flat)
        return g.reshape(self._shape) if input_grad else None

    def output_shape(self, input_shape: tuple) -> tuple:
        rest = input_shape[1:]
        return (input_shape[0], None if None in rest else math.prod(rest))


class Reshape(Module):
    """(batch, *in_shape) -> (batch, *shape), as Keras's Reshape: ``shape`` is one sample's,
    one entry may be -1 (inferred); e.g. Reshape((1, 28, 28)) makes flat 784-pixel rows
    into images for Conv2d. Backward restores the input's shape."""

    def __init__(self, shape: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if (not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer))
                             or (d < 1 and d != -1) for d in shape)
                or sum(d == -1 for d in shape) > 1):
            raise ValueError(f"Reshape: shape must be positive ints, one of them may be -1; "
                             f"got {shape!r}")
        self.shape = tuple(int(d) for d in shape)
        self._shape: tuple | None = None

    def _target(self, input_shape: tuple) -> tuple:
        size = math.prod(input_shape[1:])
        known = math.prod(d for d in self.shape if d != -1)
        if -1 in self.shape:
            if size % known:
                raise ValueError(f"{self!r}: {size} values per sample do not fill {self.shape}; "
                                 f"got input shape {input_shape}")
            return tuple(size // known if d == -1 else d for d in self.shape)
        if known != size:
            raise ValueError(f"{self!r}: {size} values per sample (input shape {input_shape}) "
                             f"cannot be reshaped to {self.shape} ({known} values)")
        return self.shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        if x.ndim < 1:
            raise ValueError(f"{self!r}: input needs a batch dimension; got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(len(x), *self._target(x.shape))

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        out = (self._shape[0], *self._target(self._shape))
        g = _check_grad(self, grad_out, out)
        return g.reshape(self._shape) if input_grad else None

    def output_shape(self, input_shape: tuple) -> tuple:
        if None in input_shape[1:]:  # an unknown size: the -1 stays unknown too
            return (input_shape[0], *(None if d == -1 else d for d in self.shape))
        return (input_shape[0], *self._target(tuple(input_shape)))

    def get_config(self) -> dict:
        return {"shape": list(self.shape)}

    def __repr__(self) -> str:
        return f"Reshape({self.shape})"
