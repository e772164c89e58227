"""The recorder that gives a Module with only a ``forward`` its backward pass.

While such a module's ``forward`` runs, every call of a sub-module (a layer, a Sequential,
a module with a hand-written backward) and of a ``fastnn.functional`` op is recorded on a
``Tape``: its inputs, its output and how to backpropagate through it. The module's
``backward`` then replays the tape in reverse, adding up the gradients of a value used
more than once. Values recorded during the forward pass are ``Recorded`` arrays (an
ndarray subclass) whose NumPy operations raise while recording, so that an operation the
tape cannot differentiate is an error, never a silently wrong gradient; what ``forward``
finally returns is a plain ndarray.

A layer keeps what its backward pass needs from its last call only. When one instance is
called more than once in a forward pass (shared weights), the replay recomputes the
forward of each earlier call from its recorded input just before that call's backward.
Layers whose forward changes state or draws random numbers (Dropout and BatchNorm in
training mode) cannot be recomputed that way, so calling one twice in a training forward,
or in a call that shares a layer with another call, raises a ValueError: create one
instance per call.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import _C
from .._checks import as_float32
from .module import Module, Parameter, Workspace

# The tape of the forward pass being recorded (None outside one).
_active: ContextVar[Tape | None] = ContextVar("fastnn_tape", default=None)

# What to write instead of a NumPy operation on a recorded value.
_INSTEAD = {
    "add": "fnn.add(a, b)", "subtract": "fnn.add(a, fnn.mul(b, -1.0))",
    "multiply": "fnn.mul(a, b)", "divide": "fnn.mul(a, 1.0 / b) for a constant b",
    "true_divide": "fnn.mul(a, 1.0 / b) for a constant b", "negative": "fnn.mul(x, -1.0)",
    "maximum": "fnn.relu(x) for np.maximum(x, 0)", "tanh": "fnn.tanh(x)",
    "matmul": "an nn.Dense layer", "concatenate": "fnn.concat([a, b], axis)",
    "stack": "fnn.concat of fnn.reshape'd arrays", "reshape": "fnn.reshape(x, shape)",
    "ravel": "fnn.flatten(x)", "exp": "fnn.sigmoid, fnn.softmax or a layer",
    "setitem": "fnn.mul(h, mask) with a constant mask, or fnn.concat",
    "getitem": "fnn.mul(h, mask) with a constant mask to keep some elements",
    "value": "the recorded array itself in fnn ops (np.asarray(h) only to look at it)",
    "reduce": "a pooling layer (nn.GlobalAvgPool2d averages each channel over the image, "
              "nn.MaxPool2d and nn.AvgPool2d over windows) or a Dense layer",
}
_OPERATORS = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/",
              "true_divide": "/", "matmul": "@", "negative": "unary -", "power": "**"}
_OPS = ("fnn.relu, fnn.sigmoid, fnn.tanh, fnn.softmax, fnn.add, fnn.mul, fnn.concat, "
        "fnn.reshape, fnn.flatten")

# The usual cause of an unrecorded value that a user did not make with NumPy.
_DIRECT = ("; or a layer's forward called directly, self.fc.forward(h), which is not "
           "recorded: call the layer, self.fc(h)")


def _not_recordable(what: str, key: str) -> TypeError:
    tape = _active.get()
    owner = f"{tape.owner_name}.forward: " if tape is not None else ""
    instead = _INSTEAD.get(key, f"a layer or one of {_OPS}")
    return TypeError(
        f"{owner}{what} on a value recorded for the backward pass cannot be differentiated "
        f"by fastnn's recorder (its gradient would be lost); use {instead} instead, or "
        "write the module's backward by hand. To only look at the values (print them), "
        "use np.asarray(value), which is not recorded. If no NumPy of yours did this, a "
        "layer's forward was called directly, self.fc.forward(h), which is not recorded: "
        "call the layer, self.fc(h)")


class Recorded(np.ndarray):
    """An array computed during a recorded forward pass: NumPy arithmetic, functions and
    methods that make new arrays from it (``h * 2``, ``np.maximum(h, 0)``, ``h.reshape``,
    ``h[0]``) raise a TypeError while the recording lasts; afterwards it behaves as a
    plain ndarray. ``np.asarray(h)`` gives the plain values (not recorded)."""

    _tape: Tape | None = None
    _node: int = -1

    def _recording(self) -> bool:
        return self._tape is not None and self._tape.recording

    def __array_finalize__(self, obj: Any) -> None:
        if isinstance(obj, Recorded) and obj._recording():
            raise _not_recordable("an ndarray method (reshape, indexing, .T, copy, astype, "
                                  "...)", "reshape")

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, Recorded) and a._recording()
               for a in (*inputs, *kwargs.get("out", ()))):
            symbol = _OPERATORS.get(ufunc.__name__)
            op = f" (the {symbol} operator)" if symbol else ""
            call = "" if method == "__call__" else f".{method}"
            # a sum, mean or max along an axis is a reduce (the elementwise op's hint misled),
            # ufunc.at an in-place write
            key = {"reduce": "reduce", "reduceat": "reduce", "at": "setitem"}.get(method, ufunc.__name__)
            raise _not_recordable(f"numpy.{ufunc.__name__}{call}{op if not call else ''}", key)
        plain = [a.view(np.ndarray) if isinstance(a, Recorded) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, Recorded) else a
                                  for a in kwargs["out"])
        return getattr(ufunc, method)(*plain, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if any(isinstance(a, Recorded) and a._recording() for a in _flat(args, kwargs)):
            raise _not_recordable(f"numpy.{func.__name__}", func.__name__)
        return super().__array_function__(func, (np.ndarray,) * len(types),
                                          _plain(args), _plain(kwargs))

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._recording():  # would change a value the backward pass reads
            raise _not_recordable("assigning into an array (h[...] = v)", "setitem")
        super().__setitem__(key, value)

    @property
    def flat(self) -> Any:  # h.flat[...] = v writes in place, as h[...] = v
        if self._recording():
            raise _not_recordable("h.flat", "setitem")
        return self.view(np.ndarray).flat

    @flat.setter
    def flat(self, value: Any) -> None:
        if self._recording():
            raise _not_recordable("assigning into h.flat", "setitem")
        self.view(np.ndarray).flat = value

    def __getitem__(self, key: Any) -> Any:
        # an element (h[0, 0]) is a NumPy scalar, which __array_finalize__ never sees: a
        # constant in what followed, its gradient silently lost
        if self._recording():
            raise _not_recordable("indexing (h[i, j], h[0])", "getitem")
        return super().__getitem__(key)

    def __repr__(self) -> str:  # printing inside forward must not trip the checks
        return repr(self.view(np.ndarray))

    def __str__(self) -> str:
        return str(self.view(np.ndarray))


def _refused_in_place(name: str) -> Callable[..., Any]:
    """The ndarray method ``name``, refused while recording: it changes the array in place
    (a value the backward pass reads) without a ufunc or an array function being called."""
    def method(self: Recorded, *args: Any, **kwargs: Any) -> Any:
        if self._recording():
            raise _not_recordable(f"the in-place ndarray method .{name}()", "setitem")
        return getattr(np.ndarray, name)(self, *args, **kwargs)

    method.__name__ = name
    return method


for _name in ("fill", "sort", "put", "partition", "resize", "setfield", "byteswap"):
    setattr(Recorded, _name, _refused_in_place(_name))


def _refused_value(name: str) -> Callable[..., Any]:
    """The conversion ``name`` (float(h), h.item(), h.tolist()), refused while recording: it
    makes a Python number of a recorded value, a constant to what follows (its gradient was
    silently lost)."""
    def method(self: Recorded, *args: Any, **kwargs: Any) -> Any:
        if self._recording():
            raise _not_recordable(f"{name} of a recorded value (a constant from then on)", "value")
        return getattr(np.ndarray, name)(self.view(np.ndarray), *args, **kwargs)

    method.__name__ = name
    return method


for _name in ("item", "tolist", "__float__", "__int__", "__index__", "__complex__"):
    setattr(Recorded, _name, _refused_value(_name))


def _flat(args: Any, kwargs: Any) -> list:
    out: list = []
    for a in (*args, *kwargs.values()):
        out.extend(a if isinstance(a, (list, tuple)) else (a,))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Recorded):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _stateful(module: Module) -> list[Module]:
    """The sub-modules (the module included) whose training forward draws random numbers
    or updates state, so that it cannot be recomputed: Dropout (p > 0), BatchNorm."""
    from .layers import Dropout
    from .normalization import _BatchNorm

    return [m for _, m in module.named_modules()
            if m.training and (isinstance(m, _BatchNorm) or (isinstance(m, Dropout) and m.p > 0))]


@contextmanager
def _paused() -> Iterator[None]:
    """No recording inside: a module with a backward of its own runs its forward as it
    would alone (its sub-modules' calls are its business, not the tape's)."""
    token = _active.set(None)
    try:
        yield
    finally:
        _active.reset(token)


@dataclass
class Node:
    """One recorded call: ``name`` (an op's name or the module's attribute path),
    ``inputs`` (recorded values, or constants), the output, and ``backward(grad)``,
    which returns one gradient per input (None for a constant)."""

    name: str
    inputs: list[Any]
    output: np.ndarray
    backward: Callable[[np.ndarray, list[bool]], list[np.ndarray | None]]
    module: Module | None = None
    modules: set[int] = field(default_factory=set)  # ids of module and its sub-modules
    extra: tuple[tuple, dict] = ((), {})  # a module's forward arguments after the input
    calls: list = field(default_factory=list)  # (module, its _forward_calls) after the call


class Tape:
    """The calls recorded during one forward pass of ``owner`` (see the module docstring)."""

    def __init__(self, owner: Module) -> None:
        self.owner = owner
        self.owner_name = type(owner).__name__
        self.nodes: list[Node] = []
        self.recording = True
        self._names = self._name_modules()
        # id of a module called -> (where it was first called, that call's stateful modules)
        self._seen: dict[int, tuple[str, list[Module]]] = {}
        # the arrays of backward passes that need no input gradient, kept for the next steps
        self._workspace = owner.__dict__.setdefault("_backward_workspace", Workspace())
        self.output_node = -1
        self._stale: set[int] = set()  # modules whose caches a replay's recompute changed

    def _name_modules(self) -> dict[int, str]:
        """id -> attribute path of the owner's sub-modules (a module held twice goes by
        its first name)."""
        names: dict[int, str] = {}
        for name, m in self.owner.named_modules():
            if name:
                names.setdefault(id(m), name)
        return names

    def value(self, array: np.ndarray, node: Node) -> Recorded:
        """Record ``node`` and return its output as a Recorded view of ``array``."""
        out = np.asarray(array).view(Recorded)
        out._tape, out._node = self, len(self.nodes)
        node.output = array
        self.nodes.append(node)
        return out

    def leaf(self, x: np.ndarray) -> Recorded:
        """The forward pass's input."""
        return self.value(x, Node("input", [], x, lambda g, need: []))

    def check(self, value: Any, what: str) -> np.ndarray:
        """``value``'s plain array if it was recorded on this tape; TypeError otherwise."""
        if isinstance(value, Recorded) and value._tape is self:
            return value.view(np.ndarray)
        if isinstance(value, Recorded):
            problem = "was recorded in an earlier forward pass (kept from a previous call?)"
        elif isinstance(value, np.ndarray):
            problem = ("was not recorded: it was computed outside fastnn's recorded calls "
                       f"(np.asarray of a recorded value, or NumPy on one{_DIRECT})")
        else:
            problem = f"is a {type(value).__name__}, not an array recorded in this forward pass"
        raise TypeError(f"{self.owner_name}.forward: {what} {problem}; build it from the "
                        f"input with sub-modules and {_OPS}, whose gradients the recorder knows")

    def call_module(self, module: Module, x: Any, args: tuple = (), kwargs: dict | None = None
                    ) -> Recorded:
        """Call a module with a backward of its own (a layer, a Sequential, ...) and
        record the call; ``args`` and ``kwargs`` (constants) go to its forward after x."""
        if id(module) not in self._names:  # made during this forward (sized lazily)?
            self._names = self._name_modules()
        name = self._names.get(id(module), type(module).__name__)
        if id(module) not in self._names and module.parameters():
            raise ValueError(
                f"{self.owner_name}.forward calls {module!r}, which is not an attribute of "
                f"the model (nor in a list attribute): its parameters are not among the "
                f"model's parameters(), so no optimizer would train them, and save would "
                "leave them out. Make it an attribute in __init__ (self.head = ...), or a "
                "list of them (self.heads = [...]), not a dict or a layer made anew in "
                "each forward")
        xp = self.check(x, f"the input of {name} ({module!r})")
        kwargs = kwargs or {}
        if any(isinstance(a, Recorded) for a in _flat(args, kwargs)):
            raise TypeError(f"{self.owner_name}.forward: {name} gets a recorded value after its "
                            "first argument; the backward pass of a layer gives the gradient "
                            "of its first argument only, so the other would get none: combine "
                            "the values with fnn.concat or fnn.add first, or make the layer a "
                            "model with only a forward")
        modules = {id(m) for _, m in module.named_modules()}
        # A call sharing a module with another is recomputed by the replay (caches hold the
        # last call's); a training Dropout or BatchNorm in either would then draw new random
        # numbers or update its statistics again.
        stateful = _stateful(module)
        for m in modules:
            where, theirs = self._seen.get(m, (None, []))
            if where is None or not (stateful or theirs):
                continue
            culprit = (stateful or theirs)[0]
            if id(culprit) == m:
                problem = f"calls {culprit!r} a second time (through {where}, then {name})"
            else:
                problem = (f"calls {where} and then {name}, which share a layer, and "
                           f"{culprit!r} is in one of them")
            raise ValueError(
                f"{self.owner_name}.forward {problem}; the backward pass would recompute "
                "a forward, but a training forward of Dropout or BatchNorm draws new random "
                "numbers or updates running statistics: create one instance per call")
        for m in modules:
            self._seen.setdefault(m, (name, stateful))
        with _paused():
            y = module.forward(xp, *args, **kwargs)

        def backward(g: np.ndarray, need: list[bool]) -> list[np.ndarray | None]:
            if need[0]:
                return [module.backward(g)]
            module.backward_with(g, self._workspace.part(index), False, input_grad=False)
            return [None]

        index = len(self.nodes)
        calls = [(m, m._forward_calls) for _, m in module.named_modules()]
        return self.value(y, Node(name, [x], y, backward, module, modules, (args, kwargs), calls))

    def call_op(self, name: str, inputs: Sequence[Any], forward: Callable[..., np.ndarray],
                backward: Callable[[np.ndarray, list[bool]], list[np.ndarray | None]]
                ) -> Recorded:
        """Record a functional op: ``forward`` gets the inputs' plain arrays (a Parameter's
        values, constants as they are); at least one input must be recorded or a Parameter,
        whose gradient the replay accumulates into its ``grad``."""
        if not any(isinstance(a, (Recorded, Parameter)) for a in inputs):
            self.check(inputs[0], f"the input of fnn.{name}")
        for i, a in enumerate(inputs):
            if isinstance(a, Parameter) and all(a is not p for p in self.owner.parameters()):
                raise ValueError(
                    f"{self.owner_name}.forward: input {i} of fnn.{name} is a Parameter "
                    f"({a!r}) that is not among the model's parameters(), so no optimizer "
                    "would train it: make it an attribute (self.alpha = nn.Parameter(...)) "
                    "of the model or of one of its sub-modules, not an item of a list or dict")
        plain = [self.check(a, f"input {i} of fnn.{name}") if isinstance(a, Recorded) else
                 a.data if isinstance(a, Parameter) else a for i, a in enumerate(inputs)]
        y = forward(*plain)
        return self.value(y, Node(name, list(inputs), y, backward))

    def backward(self, grad_out: np.ndarray, input_grad: bool = True,
                 trace: list[dict] | None = None) -> np.ndarray | None:
        """Replay the recorded calls in reverse from ``grad_out`` (the gradient of the
        output); returns the gradient of the input (None with input_grad=False).
        ``trace``, when given, receives one dict per replayed call (explain_backward)."""
        shape = self.nodes[self.output_node].output.shape
        g = as_float32(grad_out, f"{self.owner_name}.backward: grad_out")  # as a layer's
        if g.shape != shape:
            raise ValueError(f"{self.owner_name}.backward: grad_out has shape {g.shape}; "
                             f"expected {shape} (the shape of the last forward output)")
        grads: dict[int, np.ndarray] = {self.output_node: g}
        # modules called (or recomputed) after the current node: their caches are not its
        touched: set[int] = set(self._stale)
        for index in range(len(self.nodes) - 1, 0, -1):
            node = self.nodes[index]
            g = grads.pop(index, None)
            if g is None:  # not on the way to the output: no gradient to pass back
                touched |= node.modules
                continue
            need = [isinstance(a, Parameter) or
                    (isinstance(a, Recorded) and (a._node > 0 or input_grad))
                    for a in node.inputs]
            ran_since = any(m._forward_calls != count for m, count in node.calls)
            if ran_since and not node.modules & touched and _stateful(node.module):
                raise RuntimeError(
                    f"{self.owner_name}.backward: {node.name} ({node.module!r}) ran again after "
                    "this forward pass (in another model sharing it, or called directly), so "
                    "its caches hold that call's, and its training forward (Dropout, "
                    "BatchNorm) cannot be recomputed: run the forward pass again, then backward")
            # its caches hold a later call's (of this forward, an earlier replay, or outside
            # it: another model sharing the layer): redo this call
            if node.modules & touched or ran_since:
                with _paused():
                    args, kwargs = node.extra
                    node.module.forward(node.inputs[0].view(np.ndarray), *args, **kwargs)
                self._stale |= node.modules
            touched |= node.modules
            before = ({} if trace is None or node.module is None else
                      {name: (p, p.grad.copy()) for name, p in node.module.named_parameters()})
            input_grads = [self._checked_grad(node, a, gi) if needed else gi
                           for a, gi, needed in zip(node.inputs, node.backward(g, need), need)]
            if trace is not None:
                step = _step(index, node, g, input_grads, before)
                names = {id(p): name for name, p in self.owner.named_parameters()}
                step["param_grad_norms"].update(
                    {names[id(a)]: _norm(gi) for a, gi in zip(node.inputs, input_grads)
                     if isinstance(a, Parameter) and gi is not None})
                trace.append(step)
            for a, gi, needed in zip(node.inputs, input_grads, need):
                if needed and isinstance(a, Parameter):
                    grad, beta = a.grad_to_write()  # adds up, as a layer's backward does
                    if beta:
                        grad += gi
                    else:
                        grad[...] = gi
                elif needed:
                    # never in place: gi may be a view of another gradient
                    prev = grads.get(a._node)
                    grads[a._node] = gi if prev is None else prev + gi
        if not input_grad:
            return None
        return grads.get(0, np.zeros(self.nodes[0].output.shape, np.float32))

    def _checked_grad(self, node: Node, value: Any, grad: Any) -> np.ndarray:
        """``grad``, the gradient that ``node``'s backward gave for its input ``value``, as
        an array of ``value``'s shape; else an error naming the call, as a Sequential's next
        layer raises: a backward of one's own that returned None (a missing ``return``)
        had left every layer before it without gradient, and one of another shape was
        spread over the right one by NumPy's broadcasting, silently."""
        def what() -> str:  # only for an error: a layer's repr costs more than the checks
            module = "" if node.module is None else f" ({node.module!r})"
            return f"{self.owner_name}.backward: {node.name}{module}"

        if grad is not None and not isinstance(grad, np.ndarray):  # (run on the host only)
            grad = as_float32(grad, lambda: f"{what()}: the gradient its backward returned")
        if grad is not None and grad.shape == value.shape:
            return grad
        if grad is None:
            raise TypeError(f"{what()}: its backward returned None; it must return the "
                            f"gradient of its input, of shape {value.shape} (a missing return?)")
        raise ValueError(f"{what()}: its backward returned a gradient of shape {grad.shape}; "
                         f"expected {value.shape}, the shape of its input")


def _norm(a: np.ndarray) -> float:
    return math.sqrt(_C.sum_squares(np.ascontiguousarray(a, dtype=np.float32)))


def _step(index: int, node: Node, g: np.ndarray, input_grads: list, before: dict) -> dict:
    return {"step": index, "op": node.name,
            "module": None if node.module is None else repr(node.module),
            "input_shapes": [tuple(np.shape(a)) for a in node.inputs],
            "output_shape": tuple(g.shape), "grad_out_norm": _norm(g),
            "grad_in_norms": [None if gi is None else _norm(gi) for gi in input_grads],
            "param_grad_norms": {f"{node.name}.{name}": _norm(p.grad - grad)
                                 for name, (p, grad) in before.items()}}


def active() -> Tape | None:
    """The tape of the forward pass being recorded, or None."""
    return _active.get()


def run(module: Module, forward: Callable[..., Any], x: Any, args: tuple, kwargs: dict
        ) -> np.ndarray:
    """Run ``forward(module, x, ...)`` recorded: on the tape of the enclosing recorded
    forward (the module is then part of it), or on a new tape kept as ``module._tape``
    for its ``backward``; the output is a plain ndarray then."""
    tape = _active.get()
    if tape is not None:
        tape.check(x, f"the input of {tape._names.get(id(module), type(module).__name__)}")
        return _checked_output(tape, forward(module, x, *args, **kwargs), module)
    # a failed forward leaves no stale tape behind; None, not a pop, which resized the dict
    # under another thread walking it (fit's end-of-epoch checks beside a predict)
    module.__dict__["_tape"] = None
    x = as_float32(x, f"{type(module).__name__} input")  # (an input refused here too)
    tape = Tape(module)
    token = _active.set(tape)
    try:
        out = _checked_output(tape, forward(module, tape.leaf(x), *args, **kwargs), module)
    finally:
        _active.reset(token)
        tape.recording = False
    tape.output_node = out._node
    module.__dict__["_tape"] = tape
    return out.view(np.ndarray)


def _checked_output(tape: Tape, out: Any, module: Module) -> Recorded:
    name = type(module).__name__
    if not (isinstance(out, Recorded) and out._tape is tape):
        what = (f"a {type(out).__name__}" if not isinstance(out, np.ndarray) else
                "an array that was not recorded (built with NumPy, or np.asarray of a "
                f"recorded value{_DIRECT})")
        raise TypeError(f"{name}.forward returned {what}; it must return one array computed "
                        f"from its input by sub-modules and {_OPS}, so that the backward "
                        "pass can be derived")
    return out
