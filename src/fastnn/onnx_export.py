"""ONNX export: a fastnn model as a standard ONNX graph (opset ``OPSET``), which
onnxruntime and other runtimes run (``model.export_onnx(path, input_shape)`` or
``fastnn export --onnx PATH MODEL.safetensors``).

Each layer maps to ONNX operators in evaluation mode: Dense to Gemm (transB=1, the weight
is (out, in)) and its activation, Conv2d to Conv, the pools to MaxPool / AveragePool
(count_include_pad=1, as fastnn's mean) / GlobalAveragePool, BatchNorm to
BatchNormalization with the running statistics, Dropout to nothing (the identity at
inference), Flatten and Reshape to Reshape. A layer without a mapping (a model with its own
``forward``, a layer of your own) raises a ValueError naming it. Needs the ``onnx`` package
(``pip install "fastnn-learn[onnx]"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import memory
from .io import user_path, write_atomic
from .nn import (ELU, GELU, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout,
                 Flatten, GlobalAvgPool2d, LeakyReLU, MaxPool2d, Module, ReLU, Reshape,
                 Sequential, Sigmoid, Softmax, Softplus, Tanh)
from .nn.module import overridden

OPSET = 17  # the opset the graph declares (GELU's tanh form is built from its primitives)
_DIM_MAX = 2**63 - 1  # ONNX's dimensions are int64 (beyond: onnx's bare "Value out of range")


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: pip install onnx "
                          "(or the extra: pip install \"fastnn-learn[onnx]\")") from err
    return onnx


class _Graph:
    """The nodes and initializers being built, with fresh value names."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: Any, dtype: Any = np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(
            np.ascontiguousarray(memory.to_host(value).astype(dtype, copy=False)), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _activation(g: _Graph, name: str, alpha: float, x: str, hint: str) -> str:
    """The ONNX nodes of fastnn's activation ``name`` (the C++ table's canonical names)."""
    if name == "identity":
        return x
    if name == "relu":
        return g.op("Relu", [x], hint)
    if name == "sigmoid":
        return g.op("Sigmoid", [x], hint)
    if name == "tanh":
        return g.op("Tanh", [x], hint)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], hint, alpha=float(alpha))
    if name == "elu":
        return g.op("Elu", [x], hint, alpha=float(alpha))
    if name == "softplus":
        return g.op("Softplus", [x], hint)
    if name == "gelu":
        # the tanh approximation (opset 20's Gelu(approximate="tanh") is too new for most
        # runtimes): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.op("Mul", [g.op("Mul", [x, x], hint), x], hint)
        inner = g.op("Add", [x, g.op("Mul", [cube, g.constant("c", 0.044715)], hint)], hint)
        t = g.op("Tanh", [g.op("Mul", [inner, g.constant("k", math.sqrt(2 / math.pi))], hint)],
                 hint)
        half_x = g.op("Mul", [x, g.constant("half", 0.5)], hint)
        return g.op("Mul", [half_x, g.op("Add", [t, g.constant("one", 1.0)], hint)], hint)
    raise ValueError(f"export_onnx: activation {name!r} has no ONNX mapping")


def _dense(g: _Graph, layer: Dense, x: str, hint: str) -> str:
    inputs = [x, g.constant(f"{hint}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.constant(f"{hint}.bias", layer.bias.data))
    y = g.op("Gemm", inputs, hint, transB=1)
    return _activation(g, layer.activation, layer._alpha, y, hint)


def _conv(g: _Graph, layer: Conv2d, x: str, hint: str) -> str:
    inputs = [x, g.constant(f"{hint}.weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.constant(f"{hint}.bias", layer.bias.data))
    ph, pw = layer.padding  # "same" is resolved to explicit, symmetric padding
    y = g.op("Conv", inputs, hint, kernel_shape=list(layer.kernel_size),
             strides=list(layer.stride), dilations=list(layer.dilation),
             pads=[ph, pw, ph, pw], group=layer.groups)
    return _activation(g, layer.activation, layer._alpha, y, hint)


def _pool(g: _Graph, layer: MaxPool2d | AvgPool2d, x: str, hint: str) -> str:
    ph, pw = layer.padding
    attrs: dict[str, Any] = {"kernel_shape": list(layer.kernel_size),
                             "strides": list(layer.stride), "pads": [ph, pw, ph, pw]}
    if isinstance(layer, AvgPool2d):
        attrs["count_include_pad"] = 1  # fastnn's (and torch's) mean counts the padding
        return g.op("AveragePool", [x], hint, **attrs)
    return g.op("MaxPool", [x], hint, **attrs)


def _batchnorm(g: _Graph, layer: BatchNorm1d | BatchNorm2d, x: str, hint: str) -> str:
    c = layer.num_features
    scale = layer.weight.data if layer.affine else np.ones(c, np.float32)
    bias = layer.bias.data if layer.affine else np.zeros(c, np.float32)
    return g.op("BatchNormalization",
                [x, g.constant(f"{hint}.weight", scale), g.constant(f"{hint}.bias", bias),
                 g.constant(f"{hint}.running_mean", layer.running_mean),
                 g.constant(f"{hint}.running_var", layer.running_var)],
                hint, epsilon=float(layer.eps))


def _reshape(g: _Graph, shape: tuple, x: str, hint: str) -> str:
    # 0 copies the batch dimension, so the graph takes any batch size
    return g.op("Reshape", [x, g.constant(f"{hint}.shape", [0, *shape], np.int64)], hint)


def _elementwise(op_type: str, **attrs: Callable[[Any], Any]) -> Callable:
    def convert(g: _Graph, layer: Module, x: str, hint: str) -> str:
        return g.op(op_type, [x], hint, **{k: f(layer) for k, f in attrs.items()})
    return convert


# layer class -> converter(graph, layer, input name, hint) -> output name (exact classes:
# a subclass may compute something else)
_CONVERTERS: dict[type, Callable] = {
    Dense: _dense,
    Conv2d: _conv,
    MaxPool2d: _pool,
    AvgPool2d: _pool,
    GlobalAvgPool2d: lambda g, layer, x, hint: _reshape(
        g, (-1,), g.op("GlobalAveragePool", [x], hint), hint),
    BatchNorm1d: _batchnorm,
    BatchNorm2d: _batchnorm,
    Dropout: lambda g, layer, x, hint: x,  # the identity in evaluation mode
    Flatten: lambda g, layer, x, hint: g.op("Flatten", [x], hint, axis=1),
    Reshape: lambda g, layer, x, hint: _reshape(g, layer.shape, x, hint),
    ReLU: _elementwise("Relu"),
    Sigmoid: _elementwise("Sigmoid"),
    Tanh: _elementwise("Tanh"),
    Softplus: _elementwise("Softplus"),
    LeakyReLU: _elementwise("LeakyRelu", alpha=lambda layer: float(layer.alpha)),
    ELU: _elementwise("Elu", alpha=lambda layer: float(layer.alpha)),
    GELU: lambda g, layer, x, hint: _activation(g, "gelu", 0.0, x, hint),
    Softmax: _elementwise("Softmax", axis=lambda layer: -1),
}


def _convert(g: _Graph, module: Module, x: str, path: str) -> str:
    """The ONNX nodes of ``module`` (named ``path`` in the model) applied to value ``x``."""
    if isinstance(module, Sequential) and not overridden(module, "forward", Sequential):
        for i, layer in enumerate(module.layers):
            x = _convert(g, layer, x, f"{path}.{i}" if path else str(i))
        return x
    convert = _CONVERTERS.get(type(module))
    if convert is None:
        where = f"layer {path!r} " if path else ""
        known = ", ".join(sorted(c.__name__ for c in _CONVERTERS))
        raise ValueError(
            f"export_onnx: {where}{module!r} ({type(module).__name__}) has no ONNX mapping; "
            f"the layers that export are Sequential, {known} (a model with its own forward "
            "or a layer of your own does not)")
    return convert(g, module, x, path or type(module).__name__)


def export_onnx(model: Module, path: str | Path, input_shape: tuple[int, ...] | list[int]
                ) -> Path:
    """Write ``model`` as an ONNX graph (opset ``OPSET``) to ``path`` and return the path.

    input_shape: one sample's shape, without the batch dimension (``(784,)`` for an MLP,
    ``(1, 28, 28)`` for a CNN); the graph takes any batch size (input ``"input"``, output
    ``"output"``, float32). The graph computes the model in evaluation mode (Dropout the
    identity, BatchNorm with its running statistics), as ``predict`` does; it is checked
    with ``onnx.checker`` before it is written. One difference: where a max-pooling window
    holds a NaN, fastnn (as torch) gives NaN and onnxruntime's MaxPool the largest of the
    other values. ValueError for a layer with no ONNX mapping
    (named) or an input_shape the model does not take; ImportError without onnx. The
    write is crash-safe (``fastnn.io.write_atomic``).
    """
    onnx = _onnx()
    if not isinstance(model, Module):
        raise TypeError(f"export_onnx: model must be a fastnn.nn.Module; got {type(model).__name__}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer))
                        or not 1 <= d <= _DIM_MAX for d in shape):
        raise ValueError(f"export_onnx: input_shape must be one sample's shape as positive ints "
                         f"of at most 2**63 - 1 (ONNX's int64 dimensions; no batch dimension), "
                         f"e.g. (784,) or (1, 28, 28); got {input_shape!r}")
    shape = tuple(int(d) for d in shape)
    out_shape = model.output_shape((None, *shape))  # ValueError where the model cannot take it
    if any(d is not None and d > _DIM_MAX for d in out_shape[1:]):  # a Flatten's product
        raise ValueError(f"export_onnx: input_shape {shape} gives the output shape "
                         f"{out_shape[1:]}, with a dimension beyond 2**63 - 1 (ONNX's int64 "
                         "dimensions)")
    g = _Graph(onnx)
    y = _convert(g, model, "input", "")
    # a model that is the identity (all Dropout) still needs a node for its output
    g.nodes.append(onnx.helper.make_node("Identity", [y], ["output"], name="output"))
    float32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        g.nodes, type(model).__name__,
        [onnx.helper.make_tensor_value_info("input", float32, ["batch", *shape])],
        [onnx.helper.make_tensor_value_info(
            "output", float32, ["batch", *(d if d is not None else "?" for d in out_shape[1:])])],
        g.initializers)
    proto = onnx.helper.make_model(graph, producer_name="fastnn",
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(proto, full_check=True)
    return write_atomic(user_path(path), proto.SerializeToString())
