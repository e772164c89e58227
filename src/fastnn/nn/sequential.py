"""Sequential: a stack of layers, with Keras-style compile / fit / evaluate / predict."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .. import memory
from .activations import ReLU
from .module import Module, Workspace, WorkspaceLayer, overridden, run_lock
from .normalization import _BatchNorm


def _runs_its_own(layer: Module) -> bool:
    """Whether a model run calls the layer's workspace-aware passes (its class's forward and
    backward not replaced)."""
    return not (overridden(layer, "forward", WorkspaceLayer) or overridden(layer, "backward", WorkspaceLayer))


class Sequential(Module):
    """Layers applied one after the other: ``Sequential(Dense(64, 128, "relu"), Dense(128, 10))``.

    ``forward`` runs the layers in order, ``backward`` runs their backward passes in
    reverse. Supports ``len``, iteration and indexing (a slice gives a Sequential
    sharing the same layers). ``compile``, ``fit``, ``evaluate``, ``predict`` and ``save``
    are those of ``fastnn.train``; ``fastnn.load(path)`` rebuilds a saved model.

    What one layer hands the next, forward and backward, lives in the model's workspace
    and is reused from step to step: once the first steps have sized it, a training step
    of the built-in layers allocates only the model's output and the loss's gradient (an
    epoch's smaller last batch uses the start of each array). What the model returns never
    does: an output that
    would (a model ending in Dropout, Flatten or another layer that returns its input)
    is copied. A layer may belong to several models (slices, nesting), each with its own
    workspace; its forward and backward caches are those of its last call, whichever
    model made it.

    Each layer instance may appear only once in a model, nested Sequentials included: a
    layer keeps what its backward pass needs from its last call only, so one instance at
    two places (``act = nn.Tanh()`` used twice, a habit from PyTorch, where autograd
    records every call) would silently give wrong gradients. The constructor raises a
    ValueError naming both places, and ``fit`` again if ``layers`` changed since; create
    one instance per place.

    ``backward`` is for the last ``forward``: a RuntimeError names a layer that ran again
    in between (called itself, by a model sharing it, by predict, evaluate or gradient_check),
    whose caches
    then hold that call's batch (the gradients came from it, silently).
    """

    _forward_caches = ("_layer_runs",)
    # each layer and its forward count at the end of the last forward (None: none yet)
    _layer_runs: list[tuple[Module, int]] | None = None

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.compiled: Any = None  # fastnn.train.Compiled once compile() ran
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self.layers: list[Module] = list(layers)
        self._input_shape: tuple | None = None
        self._fused: frozenset[int] = frozenset()  # the last forward's (see _relu_fusions)
        self._workspace = Workspace()  # for the runs this model is called for
        self._checked_layers: tuple[int, ...] | None = None
        self.check_layers_unique()

    def check_layers_unique(self) -> None:
        """TypeError for a layer that is not a Module, ValueError naming both places where one
        layer instance appears twice (see the class's docstring). The constructor checks, every
        forward again when this model's own ``layers`` list changed since (an instance appended
        twice gave wrong gradients in a loop of one's own; an array appended, AttributeErrors;
        a nested model checks its own list when it runs), and ``fit`` the whole tree."""
        self._check_types()
        places: dict[int, str] = {}
        for name, module in self.named_modules():
            if name and id(module) in places:
                raise ValueError(
                    f"Sequential: layers {places[id(module)]} and {name} are the same "
                    f"{type(module).__name__} instance ({module!r}); a layer keeps what its "
                    "backward pass needs from its last call only, so each place needs its "
                    "own: create a new instance for each")
            places[id(module)] = name
        self._checked_layers = tuple(map(id, self.layers))

    def _check_types(self) -> None:
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} must be a fastnn.nn.Module; "
                                f"got {type(layer).__name__}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The layers applied in order: a new array, never one the layers reuse."""
        with run_lock(self):
            y = self._forward(x, self._workspace, False)
            return y.copy() if self._workspace.holds(y) else y

    def forward_with(self, x: np.ndarray, workspace: Workspace, internal: bool) -> np.ndarray:
        """``forward`` inside a model run: the layers' arrays live in parts of ``workspace``,
        the last one's too when ``internal`` (see ``Module.forward_with``)."""
        if overridden(self, "forward", Sequential):
            return self.forward(x)
        self._forward_calls += 1  # as a layer's (WorkspaceLayer.forward_with)
        return self._forward(x, workspace, internal)

    def _relu_fusions(self, x: Any) -> frozenset[int]:
        """The indices of the batch norm layers that also compute the ReLU layer after them
        (one pass over the output instead of two, forward and backward: the VGG-style step of
        bench_conv.py 1% faster at batch 128, 3.5% at batch 32, 2 threads on a Zen 5):
        built-in layers, neither's forward or backward replaced, on CPU arrays. Both then
        give what they give apart, bit for bit."""
        if memory.is_tensor(x):
            return frozenset()
        return frozenset(i for i in range(len(self.layers) - 1)
                         if isinstance(self.layers[i], _BatchNorm) and type(self.layers[i + 1]) is ReLU
                         and _runs_its_own(self.layers[i]) and _runs_its_own(self.layers[i + 1]))

    def _forward(self, x: np.ndarray, workspace: Workspace, internal: bool) -> np.ndarray:
        if getattr(self, "_checked_layers", None) != tuple(map(id, self.layers)):
            self.check_layers_unique()
        self._input_shape = np.shape(x)[1:]
        workspace.place(x)
        last = len(self.layers) - 1
        self._fused = fused = self._relu_fusions(x)
        for i, layer in enumerate(self.layers):
            if i - 1 in fused:  # a ReLU whose output the batch norm before it computed
                x = layer._adopt_output(x)
            elif i in fused:  # the ReLU's output is handed on (or returned, if it is last)
                x = layer._forward_fused_relu(x, workspace.part(i), internal or i + 1 < last)
            else:
                x = layer.forward_with(x, workspace.part(i), internal or i < last)
        self._layer_runs = [(layer, layer._forward_calls) for layer in self.layers]
        return x

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the layers in reverse; returns the gradient for the input
        (a new array), or None with input_grad=False (training does not need it, and the
        first Dense layer then skips a third of its backward work)."""
        with run_lock(self):
            g = self._backward(grad_out, self._workspace, False, input_grad)
            return g.copy() if g is not None and self._workspace.holds(g) else g

    def backward_with(self, grad_out: np.ndarray, workspace: Workspace, internal: bool,
                      input_grad: bool = True) -> np.ndarray | None:
        """``backward`` inside a model run (see ``Module.backward_with``)."""
        if overridden(self, "backward", Sequential):
            return super().backward_with(grad_out, workspace, internal, input_grad)
        return self._backward(grad_out, workspace, internal, input_grad)

    def _backward(self, grad_out: np.ndarray, workspace: Workspace, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        if not self.layers:  # the identity, as torch's empty Sequential
            return grad_out if input_grad else None
        runs = self._layer_runs
        if runs is not None and runs != [(layer, layer._forward_calls) for layer in self.layers]:
            self._raise_ran_since(runs)
        fused = self._fused
        for i in range(len(self.layers) - 1, 0, -1):
            if i - 1 in fused:  # the batch norm before applies the ReLU's derivative
                continue
            workspace.reading(grad_out)
            grad_out = self.layers[i].backward_with(grad_out, workspace.part(i), True)
        workspace.reading(grad_out)
        grad_in = self.layers[0].backward_with(grad_out, workspace.part(0), internal, input_grad)
        workspace.reading(None)
        return grad_in

    def _raise_ran_since(self, runs: list[tuple[Module, int]]) -> None:
        """RuntimeError naming the first layer that is not as the last forward left it."""
        for i, layer in enumerate(self.layers):
            if i >= len(runs) or runs[i][0] is not layer:
                raise RuntimeError(f"Sequential.backward: layer {i} ({layer!r:.80}) was not in "
                                   "this place at the last forward pass (the layers changed "
                                   "since): run the forward pass again")
            if layer._forward_calls != runs[i][1]:
                raise RuntimeError(
                    f"Sequential.backward: layer {i} ({layer!r:.80}) ran again since this "
                    "model's last forward pass (called itself, by a model sharing it, by "
                    "predict, evaluate or gradient_check), so it holds that call's batch, not "
                    "this one's: run the forward pass again before backward")
        raise RuntimeError("Sequential.backward: the layers changed since the last forward "
                           "pass (one was removed): run the forward pass again")

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The layers, named by their index ("0", "1", ...) as in torch.nn.Sequential."""
        self._check_types()  # every walk of the model (modes, parameters, save): one appended since
        return ((str(i), layer) for i, layer in enumerate(self.layers))

    def get_config(self) -> dict:
        """``{"layers": [{"class": "Dense", "config": {...}}, ...]}``."""
        return {"layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sequential:
        """The model described by ``get_config``'s dict (new weights). Layer classes are
        looked up in ``fastnn.nn`` only."""
        from .. import nn

        entries = config.get("layers") if isinstance(config, Mapping) else None
        if not isinstance(entries, list):
            raise ValueError("Sequential.from_config: expected {'layers': [...]}; "
                             f"got {config!r:.200}")
        layers = []
        for i, entry in enumerate(entries):
            name = entry.get("class") if isinstance(entry, Mapping) else None
            layer_cls = getattr(nn, name, None) if isinstance(name, str) else None
            if not (isinstance(layer_cls, type) and issubclass(layer_cls, Module)):
                raise ValueError(f"Sequential.from_config: layers[{i}] must be "
                                 "{'class': <a fastnn.nn layer>, 'config': {...}}; "
                                 f"got {entry!r:.200}")
            layer_config = entry.get("config", {})
            if not isinstance(layer_config, Mapping):
                raise ValueError(f"Sequential.from_config: layers[{i}]['config'] must be a "
                                 f"dict; got {layer_config!r:.200}")
            layers.append(layer_cls.from_config(layer_config))
        return cls(*layers)

    def output_shape(self, input_shape: tuple) -> tuple:
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    def summary(self, input_shape: tuple | int | None = None, *,
                print_fn: Callable[[str], None] | None = print) -> str:
        """Print and return a table of the layers, their output shapes and parameter counts
        (and the values held in buffers, which are not trained, where there are any).

        input_shape: the shape of one sample (without the batch dimension). By default
        the shape seen by the last forward pass, or else the first layer's
        ``in_features``. ``print_fn=None`` only returns the table.
        """
        self._check_types()
        first_in = getattr(self.layers[0], "in_features", None) if self.layers else None
        if input_shape is None:
            input_shape = self._input_shape
            if first_in is not None and input_shape != (first_in,):  # a first layer replaced since
                input_shape = None
        if input_shape is None and first_in is not None:
            input_shape = (first_in,)
        if input_shape is None:
            raise ValueError("summary: pass input_shape (the shape of one sample) "
                             "or run the model once")
        dims = (input_shape,) if isinstance(input_shape, (int, np.integer)) else input_shape
        if (not isinstance(dims, (tuple, list)) or not dims
                or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                       for d in dims)):
            raise ValueError("summary: input_shape must be one sample's shape, positive ints "
                             f"such as (1, 28, 28) or 784; got {input_shape!r:.100}")
        shape = (None, *(int(d) for d in dims))
        rows = [("Layer", "Output shape", "Params")]
        total = buffered = 0
        counted: set[int] = set()  # a parameter two layers share counts once in the total
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            count = sum(p.size for p in layer.parameters())
            total += sum(p.size for p in layer.parameters() if id(p) not in counted)
            counted.update(map(id, layer.parameters()))
            buffered += sum(b.size for b in layer.buffers())
            rows.append((f"{i}: {layer!r}", str(shape), f"{count:,}"))
        widths = [max(len(row[c]) for row in rows) for c in range(3)]

        def fmt(row: tuple[str, str, str]) -> str:
            return "  ".join((row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                              row[2].rjust(widths[2])))

        rule = "-" * (sum(widths) + 4)
        lines = [fmt(rows[0]), rule, *map(fmt, rows[1:]), rule, f"Total params: {total:,}"]
        if buffered:
            lines.append(f"Buffers (not trained): {buffered:,} values")
        table = "\n".join(lines)
        if print_fn is not None:
            print_fn(table)
        return table

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __repr__(self) -> str:
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"
