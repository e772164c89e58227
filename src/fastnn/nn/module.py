"""Module and Parameter: the building blocks of every layer."""

from __future__ import annotations

import functools
import math
import os
import threading
import types
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from .. import memory
from .._checks import deferred_interrupt

if TYPE_CHECKING:
    from pathlib import Path

# How many parameter values may still be allocated (None: no limit). fastnn.io.load sets
# it to what the file holds, so that a tiny file declaring a huge architecture fails
# before the allocation, not after it.
_budget: ContextVar[list[int] | None] = ContextVar("fastnn_parameter_budget", default=None)


_LOCK_MAKING = threading.Lock()
# Bumped in a forked child, whose locks held by another thread at the fork stay held
# forever: a model's lock of an earlier generation is replaced on its next use.
_generation = 0


def _after_fork_in_child() -> None:
    global _LOCK_MAKING, _generation
    _LOCK_MAKING = threading.Lock()
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_lock(model: Any) -> threading.RLock:
    """The lock that a model's runs hold (a forward or backward call, a training step, a
    whole predict or evaluate with its switch to evaluation mode), so that threads sharing
    one model take turns: its layers keep what backward needs from their last call and
    write into the model's workspace (two threads predicting with one model had each
    other's activations in their outputs). Re-entrant: a run may call the model again. A
    forked child gets new locks (one held by another thread at the fork would never open)."""
    entry = model.__dict__.get("_run_lock")
    if entry is None or entry[0] != _generation:
        with _LOCK_MAKING:
            entry = model.__dict__.get("_run_lock")
            if entry is None or entry[0] != _generation:
                entry = model.__dict__["_run_lock"] = (_generation, threading.RLock())
    return entry[1]


@contextmanager
def parameter_budget(count: int) -> Iterator[None]:
    """Within the block, layers built may hold at most ``count`` parameter values in all
    (``reserve_parameters`` raises ValueError beyond)."""
    token = _budget.set([count])
    try:
        yield
    finally:
        _budget.reset(token)


def _physical_memory() -> int:
    """The machine's memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def reserve_parameters(count: int, owner: str) -> None:
    """Called by a layer before it allocates ``count`` parameter values: MemoryError naming
    ``owner`` when they cannot fit this machine's memory (NumPy's generator had failed
    naming no layer), ValueError when they exceed the ``parameter_budget`` in force."""
    budget = _budget.get()
    if budget is not None:
        budget[0] -= count
        if budget[0] < 0:
            raise ValueError(f"{owner} needs {count:,} parameter values, more than the "
                             "weights available hold")
    memory_bytes = _physical_memory()
    # the values, their gradient and the initializer's float64 draw: 16 bytes each at the peak
    if memory_bytes and count * 16 > memory_bytes:
        raise MemoryError(f"{owner} needs {count:,} parameter values ({count * 8 / 2**30:,.1f} GiB "
                          f"with their gradients, {count * 16 / 2**30:,.1f} GiB while they are "
                          f"drawn); this machine has {memory_bytes / 2**30:,.1f} GiB")


class Parameter:
    """A trainable array: ``data`` and its gradient ``grad``, both C-contiguous float32.

    ``grad`` starts at zero; ``backward`` passes accumulate into it and
    ``zero_grad`` (of the module or the optimizer) resets it. The reset is lazy: the
    next backward pass writes the gradient instead of adding to zeros (one pass over it
    instead of three), and reading ``grad`` before that gives the zeros.
    """

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        self.data = memory.asarray(data, np.float32, copy=True)
        self._grad = memory.zeros_like(self.data)
        self._zero_pending = False
        self._penalty_added = False  # since the last reset (penalty_due)
        self.name = name

    @property
    def grad(self) -> np.ndarray:
        self.settle_grad()
        return self._grad

    def settle_grad(self) -> None:
        """Write the zeros a ``zero_grad`` left pending, for code that steps over the
        gradient's memory without reading ``grad`` (the optimizers' flat buffer)."""
        if self._zero_pending:
            self._grad.fill(0.0)
            self._zero_pending = False

    @grad.setter
    def grad(self, value: np.ndarray) -> None:
        self._grad = value
        self._zero_pending = False

    def zero_grad(self) -> None:
        """Reset ``grad`` to zero (lazily, see the class docstring)."""
        self._zero_pending = True
        self._penalty_added = False

    def save_grad(self) -> tuple:
        """The gradient's state, for ``restore_grad``: its values, a pending ``zero_grad``
        and whether the weight penalty was added since (code that runs a backward pass of
        its own, gradient_check and explain_backward, leaves it as it found it; restoring
        the values alone left the penalty's turn taken, and the next step without it)."""
        return self._grad.copy(), self._zero_pending, self._penalty_added

    def restore_grad(self, saved: tuple) -> None:
        """Put back what ``save_grad`` returned (into the same array: an optimizer's flat
        buffer keeps its view)."""
        values, self._zero_pending, self._penalty_added = saved
        self._grad[...] = values  # last_grad (TensorBoard's) as it was too

    def penalty_due(self) -> bool:
        """True on the first call since the last ``zero_grad``, False after: a layer
        adds its weight penalty's gradient once per reset, as the loss counts the penalty
        once, however many backward passes (a layer called twice, gradients accumulated
        over micro-batches) write the gradient in between."""
        due = not self._penalty_added
        self._penalty_added = True
        return due

    @property
    def last_grad(self) -> np.ndarray:
        """The gradient the last backward pass wrote, even after a ``zero_grad`` (whose
        reset is lazy): what ``fit``'s callbacks see of a batch's gradient after its
        update (``fastnn.callbacks.TensorBoard``). Zeros once something read ``grad``."""
        return self._grad

    def grad_to_write(self) -> tuple[np.ndarray, float]:
        """``(grad, beta)`` for a kernel computing ``grad = beta * grad + new``: beta is 0.0
        right after zero_grad, else 1.0. The caller must then write every element."""
        beta = 0.0 if self._zero_pending else 1.0
        self._zero_pending = False
        return self._grad, beta

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.shape})"


class Workspace:
    """The arrays one model run reuses from step to step (DESIGN.md: activations live in
    one workspace owned by the model run): a layer's output that only the next layer
    reads, an input gradient that only the previous layer reads, what a layer keeps from
    forward for backward (max pooling's argmax) and its scratch.

    A Sequential owns one for the runs it is called for, and lends each of its layers a
    part of it (``part(i)``, a nested Sequential lends parts of that part), saying with
    each call whether the layer's output (or input gradient) may live there. A layer
    shared by several models thus writes into each model's own arrays, and a model never
    returns one of them to its caller (``holds``).

    Input gradients (the arrays named "grad_x") are the exception to one array per name and
    part: a backward pass reads each only once, in the layer before, so the whole workspace
    keeps two, and a layer writes into the one that does not hold the gradient it is reading
    (``reading``, which the Sequential sets before each layer's backward). A CNN's backward
    pass then writes into 13 MB instead of 60, which stay in cache: the Fashion-MNIST CNN's
    training step (batch 64) took 3-5% less time on a 2-core Xeon.

    An array grows with the batch and is kept for the smaller batches after it, except a
    large one (``shrink_bytes`` and up) of which a run uses under a quarter: a model called
    once on a whole test set would otherwise hold that memory for as long as it lives.
    """

    shrink_bytes = 64 << 20

    def __init__(self, _run: dict[int, np.ndarray] | None = None,
                 _like: list | None = None, _root: Workspace | None = None) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._views: dict[str, tuple] = {}  # name -> (shape, dtype, where, the view last handed out)
        self._parts: dict[int, Workspace] = {}
        # id of the memory's owner -> array, for the whole workspace
        self._run = {} if _run is None else _run
        # [an array of the run's input, where it is]: arrays are made on its device (a Tensor's,
        # or NumPy), and where = (is a Tensor, device) tells the runs' devices apart
        self._like = [None, (False, "cpu")] if _like is None else _like
        # the workspace the parts share: the two input-gradient arrays live in it
        self._root = self if _root is None else _root
        self._reading: Any = None  # (root only) the gradient being read by the layer now

    def __reduce__(self) -> tuple:
        # a copy (copy.deepcopy, pickle) starts empty: its arrays, and the bookkeeping keyed
        # by their ids, were the original's (a copied model's outputs aliased each other)
        return (Workspace, ())

    def reading(self, grad: Any) -> None:
        """Say that the next layer's backward reads ``grad``: its input gradient ("grad_x")
        then goes to the one of the two shared arrays that does not hold ``grad``."""
        self._root._reading = grad

    def place(self, x: Any) -> None:
        """Make the arrays of the runs from now on where ``x`` (the run's input) lives: in
        host memory for a NumPy array, on its device for a Tensor."""
        tensor = memory.is_tensor(x)
        self._like[0] = x if tensor else None
        self._like[1] = (tensor, memory.device_of(x))

    def array(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """The array ``name`` of ``shape`` (float32 unless ``dtype`` says otherwise), on the
        run's device (``place``): made on first use and reused while it is large enough (an
        epoch's smaller last batch takes the start of it); it holds whatever its last use left."""
        if name == "grad_x" and self._root is not self:
            return self._root.array(name, shape, dtype)
        if name == "grad_x":
            reading, first = self._reading, self._arrays.get("grad_x 0")
            # device arrays by their owner; host arrays by their memory (a view may have a base
            # that is not an ndarray); one of each (a model moved between devices) never share
            if memory.is_tensor(reading) or memory.is_tensor(first):
                holds_first = (memory.is_tensor(reading) and memory.is_tensor(first)
                               and memory.owner(reading) is memory.owner(first))
            else:
                holds_first = (first is not None and isinstance(reading, np.ndarray)
                               and np.may_share_memory(reading, first))
            name = "grad_x 1" if holds_first else "grad_x 0"
        where = self._like[1]
        seen = self._views.get(name)
        if seen is not None and seen[0] == shape and seen[1] == dtype and seen[2] == where:
            return seen[3]  # the steady state: the same view as the last step's
        size = math.prod(shape)
        flat, like = self._arrays.get(name), self._like[0]
        if (flat is None or flat.size < size or flat.dtype != dtype
                or (memory.is_tensor(flat), memory.device_of(flat)) != where
                or (flat.nbytes >= self.shrink_bytes and 4 * size < flat.size)):
            if flat is not None:
                del self._run[id(memory.owner(flat))]
            flat = self._arrays[name] = memory.empty(size, dtype, like=like)
            self._run[id(memory.owner(flat))] = flat
        view = flat[:size].reshape(shape)
        self._views[name] = (tuple(shape), dtype, where, view)
        return view

    def part(self, index: int) -> Workspace:
        """The part lent to layer ``index``."""
        part = self._parts.get(index)
        if part is None:
            part = self._parts[index] = Workspace(self._run, self._like, self._root)
        return part

    def arrays(self) -> list[np.ndarray]:
        """Every array of the whole workspace (all its parts), in the order made."""
        return list(self._run.values())

    def holds(self, a: np.ndarray) -> bool:
        """Whether ``a`` shares memory with an array of the whole workspace."""
        if memory.is_tensor(a):
            return id(memory.owner(a)) in self._run
        if not isinstance(a, np.ndarray):
            return False
        owner = memory.owner(a)
        if owner.base is None:
            return id(owner) in self._run  # an array owning its memory, or a view of one
        return any(np.may_share_memory(a, b) for b in self._run.values())


def overridden(layer: Module, name: str, cls: type) -> bool:
    """Whether ``layer.<name>`` is not ``cls``'s own method (a subclass's, or one set on
    the instance): a model run then calls it instead of the workspace-aware version."""
    # by the class and the instance's own attributes: no bound method made (a model run asks
    # for every layer, forward and backward)
    own = getattr(layer, "__dict__", {}).get(name)
    if own is not None:  # set on the instance: a function of one's own, or a bound method put back
        return getattr(own, "__func__", None) is not getattr(cls, name)
    return getattr(type(layer), name, None) is not getattr(cls, name)


class _TrainingMethod:
    """A method of Module (compile, fit, ...) that is a function of ``fastnn.train``, looked
    up on first use. nn sits below train (train imports optim and diagnostics, which import nn.module), so
    importing train here would make a cycle that worked only through import order; class
    access gives the function itself, instance access a bound method (help() shows train's
    docstring and signature either way)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Callable:
        from .. import train

        fn = getattr(train, self.name)
        return fn if obj is None else types.MethodType(fn, obj)


class _SetByInit:
    """``Module.training`` until ``Module.__init__`` sets it on the instance (which then
    hides this): an AttributeError that says what is missing, for a subclass whose
    ``__init__`` did not call ``super().__init__()`` (fit had failed deep inside with a
    raw "object has no attribute 'training'")."""

    def __get__(self, module: Module | None, owner: type | None = None) -> Any:
        if module is None:
            return self
        raise AttributeError(f"{type(module).__name__} has no attribute 'training': its "
                             "__init__ did not call super().__init__(); add "
                             "super().__init__() as the first line of its __init__")


# autograd.active (the tape being recorded, or None), looked up on the first call: autograd
# imports this module. An import statement in Module.__call__ cost 1% of a batch-32 step.
_recording: Callable[[], Any] | None = None


def _recording_tape() -> Callable[[], Any]:
    global _recording
    from .autograd import active

    _recording = active
    return active


def _records(module: Module) -> bool:
    """Whether the module's backward is derived by the recorder: it has a forward of its
    own (wrapped by ``Module.__init_subclass__``) and no backward of its own."""
    return (getattr(type(module).forward, "_fastnn_recorded", False)
            and getattr(type(module), "backward") is Module.backward)


class Module:
    """Base class of layers and models.

    Subclasses implement ``forward(x)``, which caches what the backward pass needs, and
    ``backward(grad_out, input_grad=True)``, which returns the gradient with respect to the
    input (None with ``input_grad=False``, when nothing needs it) and accumulates the
    gradients of the module's parameters. Parameters and sub-modules held as attributes (or
    in lists of modules) are found by ``parameters()``; state that is not trained (a
    BatchNorm's running statistics) is registered with ``register_buffer``.

    Models with your own forward, as in PyTorch: a subclass that defines ``forward`` and
    no ``backward`` gets its backward derived. Its forward may call sub-modules (layers,
    Sequentials, other such models) and the ops of ``fastnn.functional`` (``fnn.relu``,
    ``fnn.sigmoid``, ``fnn.tanh``, ``fnn.softmax``, ``fnn.add``, ``fnn.mul``,
    ``fnn.concat``, ``fnn.reshape``, ``fnn.flatten``); each call is recorded
    (``fastnn.nn.autograd``) and ``backward`` replays the recorded calls in reverse,
    adding up the gradients of a value used twice. An ``nn.Parameter`` held by the model
    may be an operand of those ops (``fnn.mul(h, self.alpha)``) and gets its gradient;
    ``forward`` may take arguments after the input (constants: flags, scales), as may the
    sub-modules it calls. A layer called twice (shared weights)
    is recomputed from its recorded input before its earlier call's backward; Dropout and
    BatchNorm cannot be, and calling one twice in a training forward (or in a call that
    shares a layer with another) raises. NumPy
    arithmetic on a recorded value (``h * 2``, ``np.maximum(h, 0)``) raises a TypeError
    saying which op to use: the recorder could not differentiate it. ``forward`` returns
    a plain ndarray; it and the input are kept, not copied, for ``backward``: change
    neither before it (the gradient would be taken from the changed values; torch raises
    there). ``explain_backward`` prints the replay step by step. A subclass that
    defines ``backward`` itself (the lecture's way) is run as written, never recorded.

    Every module has ``compile``, ``fit``, ``evaluate``, ``predict`` and ``save``, the
    functions of ``fastnn.train``.
    """

    # what a forward keeps for backward, left behind by a copy (``__getstate__``)
    _forward_caches: tuple[str, ...] = ()

    compiled: Any = None  # fastnn.train.Compiled once compile() ran
    compile = _TrainingMethod()
    fit = _TrainingMethod()
    evaluate = _TrainingMethod()
    predict = _TrainingMethod()
    save = _TrainingMethod()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Classes without a backward are recorded; layers with their own run as they are,
        # their forward passes counted.
        forward = cls.__dict__.get("forward")
        if (forward is not None and not getattr(forward, "_fastnn_recorded", False)
                and getattr(cls, "backward") is Module.backward):
            cls.forward = _recorded(forward)
        elif forward is not None and "backward" in cls.__dict__:
            if not getattr(forward, "_fastnn_counted", False):
                cls.forward = _counted(forward)
        elif forward is not None:
            # the inherited backward was written for the parent's forward, not this one
            owner = cls.__mro__[1]
            raise TypeError(
                f"{cls.__name__} overrides forward but not backward, so {owner.__name__}'s "
                f"backward would run for a forward it was not written for (a wrong "
                f"gradient): define backward too, or make {cls.__name__} an nn.Module with "
                f"only a forward that holds the {owner.__name__} as an attribute "
                f"(self.inner = {owner.__name__}(...); its backward is then derived)")

    training = _SetByInit()  # True or False, set on the instance by __init__ and train()
    # forward passes run (``_counted``): the recorder of a derived backward tells by it that
    # a layer it replays ran again since (another model sharing it, a direct call), its
    # caches then holding that call's
    _forward_calls = 0

    def __init__(self) -> None:
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """The recorded forward's backward pass (see the class docstring): returns the
        gradient for the input (None with input_grad=False) and accumulates the
        parameters' gradients."""
        with run_lock(self):
            tape = vars(self).get("_tape")
            if tape is None:
                if not _records(self):
                    raise NotImplementedError(f"{type(self).__name__} does not implement backward")
                raise RuntimeError(f"{type(self).__name__}.backward called before a forward pass "
                                   "(call the model on a batch first)")
            return tape.backward(grad_out, input_grad)

    def __getstate__(self) -> dict:
        """What ``copy.deepcopy`` and pickle keep: everything but the recording of the last
        forward pass (a copy's replay would run the original's layers) and its scratch, and
        what the last forward kept for backward (``_forward_caches``: the last batch, or
        arrays of a workspace, which a copy does not share: a pickle had carried the user's
        input, and a copy's outputs aliased each other); a copy's backward needs a forward
        pass of its own."""
        state = dict(vars(self))
        state.pop("_tape", None)
        state.pop("_backward_workspace", None)
        state.pop("_run_lock", None)
        for key in type(self)._forward_caches:
            if key in state:
                state[key] = None
        return state

    def explain_backward(self, x: np.ndarray, y: np.ndarray, loss: Any = "cross_entropy",
                         *, print_fn: Callable[[str], None] | None = print) -> list[dict]:
        """Run the forward pass on (x, y) with ``loss`` (a name or a ``fastnn.losses.Loss``)
        and print the backward pass step by step, as one would draw it: from the loss back
        to the input, each recorded call (sub-module or op), the shapes of its inputs and
        output, the norm of the gradient that flows into it and of those it passes back,
        and of its parameters' gradients. Returns one dict per step (keys step, op, module,
        input_shapes, output_shape, grad_out_norm, grad_in_norms, param_grad_norms).
        Runs in evaluation mode; the parameters' gradients are left as they were. Only for
        a model whose backward is derived (one with ``forward`` and no ``backward``)."""
        from .. import losses
        from ..diagnostics import evaluation_run
        from .autograd import _norm

        if not _records(self):
            raise TypeError(f"explain_backward: {type(self).__name__} has a backward of its "
                            "own (or no forward); it explains models whose backward is "
                            "derived from their forward")
        loss_fn = losses.get(loss)
        with evaluation_run(self):
            value = loss_fn(self(x), y)
            grad = loss_fn.backward()
            steps: list[dict] = []
            grad_x = vars(self)["_tape"].backward(grad, True, trace=steps)
        lines = [f"backward pass of {type(self).__name__}, from the loss back to the input "
                 "(|g|: the norm of a gradient)",
                 f"  loss {type(loss_fn).__name__} = {value:.4g}: gradient of the output "
                 f"{tuple(grad.shape)}, |g| {_norm(grad):.3g}"]
        for s in steps:
            shapes = " + ".join(str(shape) for shape in s["input_shapes"])
            ins = ", ".join("-" if n is None else f"{n:.3g}" for n in s["grad_in_norms"])
            what = s["op"] + (f" = {s['module']}" if s["module"] else "")
            line = (f"  step {s['step']:>2}  {what}: {shapes} -> {s['output_shape']}: "
                    f"|g| {s['grad_out_norm']:.3g} comes in, |g| {ins} goes to its input(s)")
            params = ", ".join(f"|{k}.grad| {v:.3g}" for k, v in s["param_grad_norms"].items())
            lines.append(line + (f"; {params}" if params else ""))
        lines.append(f"  input {tuple(grad_x.shape)}: |g| {_norm(grad_x):.3g} (the sum over "
                     "the steps that read it)")
        if print_fn is not None:
            print_fn("\n".join(lines))
        return steps

    def register_buffer(self, name: str, value: Any, persistent: bool = True) -> None:
        """Make ``self.<name>`` a buffer holding ``value`` (an array, copied into
        ``fastnn.memory``, or None): state that is not trained, such as a BatchNorm's running
        statistics. Buffers are listed by ``named_buffers``, saved by ``state_dict`` and
        ``model.save`` under torch's names unless ``persistent=False``, moved by ``to()`` and
        counted by ``summary()``. Assigning ``self.<name>`` later replaces the array and
        keeps it a buffer, as in torch."""
        if not isinstance(name, str) or not name.isidentifier() or "." in name:
            raise ValueError(f"register_buffer: name must be an identifier; got {name!r}")
        if isinstance(vars(self).get(name), (Parameter, Module)):
            raise ValueError(f"register_buffer: {name!r} is already a parameter or sub-module")
        names = vars(self).setdefault("_buffer_names", {})
        names[name] = bool(persistent)
        setattr(self, name, None if value is None else memory.asarray(value, copy=True))

    def named_buffers(self, prefix: str = "", persistent_only: bool = False
                      ) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) of this module's buffers and its sub-modules', named as parameters
        are (``"1.running_mean"``); None buffers are left out."""
        for name, persistent in vars(self).get("_buffer_names", {}).items():
            value = getattr(self, name)
            if value is not None and (persistent or not persistent_only):
                yield prefix + name, value
        for child_name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{child_name}.", persistent_only)

    def buffers(self) -> list[np.ndarray]:
        """Every buffer of this module and its sub-modules."""
        return [b for _, b in self.named_buffers()]

    def forward_with(self, x: np.ndarray, workspace: Workspace, internal: bool) -> np.ndarray:
        """``forward(x)`` as a model runs it: ``workspace`` is the part of the model run's
        workspace lent to this layer, and ``internal`` says that only the next layer reads
        the output, which may then live in ``workspace``. Layers that reuse arrays
        (``WorkspaceLayer``) override this; the default calls the module."""
        return self(x)

    def backward_with(self, grad_out: np.ndarray, workspace: Workspace, internal: bool,
                      input_grad: bool = True) -> np.ndarray | None:
        """``backward(grad_out)`` as a model runs it: ``internal`` says that only the
        previous layer reads the input gradient, which may then live in ``workspace``;
        with ``input_grad=False`` the run needs no input gradient and None is returned
        (the default then skips a layer without parameters). A layer of your own may
        define ``backward(grad_out)`` alone: this calls it that way."""
        if _records(self):
            return self.backward(grad_out, input_grad)
        if not input_grad:
            if self.parameters():
                self.backward(grad_out)
            return None
        return self.backward(grad_out)

    def __call__(self, x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        """``forward(x, *args, **kwargs)``, recorded inside a recorded forward pass; only
        ``x`` is differentiated (the other arguments are constants: flags, scales)."""
        tape = (_recording or _recording_tape())()
        if tape is not None and not _records(self):  # a call inside a recorded forward
            return tape.call_module(self, x, args, kwargs)
        with run_lock(self):
            return self.forward(x, *args, **kwargs)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, sub-module) pairs in attribute order; a module in a list attribute
        ``blocks`` is named ``blocks.0``, ``blocks.1``, ..."""
        for key, value in vars(self).items():
            if isinstance(value, Module):
                yield key, value
            elif isinstance(value, (list, tuple)):
                yield from ((f"{key}.{i}", v) for i, v in enumerate(value)
                            if isinstance(v, Module))

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(name, module) for this module (named ``prefix``) and every sub-module below it,
        depth first, named as in ``named_parameters`` without the dot ("0", "2.1")."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> Iterator[Module]:
        """The direct sub-modules, in attribute order."""
        return (child for _, child in self.named_children())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(name, parameter) pairs, named as in PyTorch's ``state_dict``: the attribute
        name, after the sub-module's name and a dot (``"0.weight"`` in a Sequential);
        each parameter once, in the order of ``parameters()``."""
        seen: set[int] = set()
        for key, value in vars(self).items():
            if isinstance(value, Parameter) and id(value) not in seen:
                seen.add(id(value))
                yield prefix + key, value
        for name, child in self.named_children():
            for key, p in child.named_parameters(f"{prefix}{name}."):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield key, p

    def parameters(self) -> list[Parameter]:
        """Every parameter of this module and its sub-modules, each once, in a fixed order."""
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter's values, then of every persistent buffer's, by
        ``named_parameters`` / ``named_buffers`` name (the names and shapes of the matching
        torch model's ``state_dict()``: ``torch.nn.Sequential(torch.nn.Linear(...), ...)``)."""
        return {**{name: p.data.copy() for name, p in self.named_parameters()},
                **{name: b.copy() for name, b in self.named_buffers(persistent_only=True)}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` (name -> array, e.g. a ``state_dict`` of this model or of the
        matching torch model) into the parameters and persistent buffers, in place. Nothing
        is changed unless the names match exactly and every shape agrees."""
        targets = {**{name: p.data for name, p in self.named_parameters()},
                   **dict(self.named_buffers(persistent_only=True))}
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys "
                             f"{unexpected} (this model has {list(targets)})")
        arrays = {}
        for name, target in targets.items():
            value = state[name]
            if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):
                # as torch's own load_state_dict copies: a bfloat16 / float16 state, or one
                # that requires grad, which NumPy cannot take as it is (torch's error named no key)
                value = value.detach().cpu()
                value = value.float() if value.is_floating_point() else value
            value = memory.to_host(value)
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {name!r} must be a numeric array; "
                                f"got dtype {value.dtype}")
            if value.shape != target.shape:
                raise ValueError(f"load_state_dict: {name!r} has shape {value.shape}; "
                                 f"the model's is {target.shape}")
            kind = getattr(target, "dtype", np.dtype(np.float32)).kind
            if kind in "iu" and value.size and (  # a counter: whole numbers >= 0, not truncated
                    not np.all(np.isfinite(value)) or np.any(value < 0)
                    or np.any(np.mod(value, 1) != 0)):
                raise ValueError(f"load_state_dict: {name!r} counts, so it takes whole numbers "
                                 f">= 0; got {value.reshape(-1)[:4]}")
            if kind in "iu" and value.size:  # 2**63 + 5 had wrapped to a negative count
                top = np.iinfo(target.dtype).max
                beyond = value >= float(top) + 1.0 if value.dtype.kind == "f" else value > top
                if np.any(beyond):
                    raise ValueError(f"load_state_dict: {name!r} holds {value[beyond][0]}, "
                                     f"beyond {target.dtype}'s range (at most {top})")
            if kind == "f" and value.dtype.kind == "f" and value.size:
                with np.errstate(over="ignore"):
                    cast = value.astype(np.float32)
                overflow = np.isinf(cast) & np.isfinite(value)
                if overflow.any():  # 1e300 became inf with only NumPy's cast warning
                    raise ValueError(f"load_state_dict: {name!r} holds {value[overflow][0]:g}, "
                                     "beyond float32's range")
            arrays[name] = value
        for name, value in arrays.items():
            targets[name][...] = value

    def regularization_loss(self) -> float:
        """The L1/L2 penalty of this module's weights (its sub-modules' summed), which
        training adds to the reported loss; 0.0 without penalties. A layer held under two
        names (a Sequential and a handle on one of its layers) counts once, as its
        parameters and their gradients do."""
        return float(_penalty_below(self, set()))

    def get_config(self) -> dict:
        """The constructor's keyword arguments, JSON-serialisable:
        ``type(m).from_config(m.get_config())`` builds the same architecture. Layers
        whose constructor takes arguments override it."""
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Module:
        """A new module from ``get_config``'s dict."""
        return cls(**config)

    def zero_grad(self) -> None:
        """Reset every parameter gradient to zero."""
        for p in self.parameters():
            p.zero_grad()

    def to(self, device: Any) -> Module:
        """Move the module's parameters, gradients and buffers to ``device`` ("cpu", "cuda",
        "cuda:N") and return the module, as torch's ``Module.to``; where they already are,
        nothing is copied. The optimizer ``compile`` gave the model moves its state with them
        (values and step count kept); an optimizer of your own bound to them must be bound
        again (it says so). On a GPU the model then takes ``fastnn.Tensor`` inputs there
        (``fit``, ``evaluate`` and ``predict`` move NumPy data over themselves). "cuda" in a
        build or on a machine without it raises a RuntimeError that says why."""
        from .._device import check_device

        device = check_device(device, f"{type(self).__name__}.to")
        return place(self, memory.empty(0, device=device))

    def export_onnx(self, path: str | Path, input_shape: tuple[int, ...] | list[int]) -> Path:
        """Write the model as an ONNX graph for onnxruntime and other runtimes
        (``fastnn.onnx_export.export_onnx``; input_shape is one sample's, e.g. ``(784,)``);
        needs the onnx package (``pip install "fastnn-learn[onnx]"``)."""
        from ..onnx_export import export_onnx

        return export_onnx(self, path, input_shape)

    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=False``: evaluation mode) here and in all sub-modules."""
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (as used by ``evaluate`` and ``predict``)."""
        return self.train(False)

    def output_shape(self, input_shape: tuple) -> tuple:
        """The output shape for an input of ``input_shape`` (batch dimension first)."""
        return input_shape

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _penalty_below(module: Module, seen: set[int]) -> float:
    """The L1/L2 penalty of ``module``'s sub-modules, each counted once (``seen``: the ids of
    those counted). No list is made: fit calls it every step, and a list's memory stays in
    Python's free list (test_workspace's steady state saw it grow)."""
    total = 0.0
    for child in module.children():
        if id(child) not in seen:
            seen.add(id(child))
            total += (child.regularization_loss()  # a layer's own penalty
                      if overridden(child, "regularization_loss", Module)
                      else _penalty_below(child, seen))
    return total


def check_parameters_reachable(model: Module, owner: str) -> None:
    """ValueError naming ``owner`` where ``model`` or a sub-module holds an nn.Parameter in
    a list, tuple or dict attribute, or a module with parameters in a dict: ``parameters()``
    does not look there, so no optimizer would train them and save would leave them out
    (silently; a model with a derived backward refuses them when its forward uses them).
    Parameters also held as attributes (a list of them for convenience) are found, and fine."""
    found = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    for path, module in model.named_modules():
        if id(module) in seen:
            continue
        seen.add(id(module))
        for key, value in vars(module).items():
            if key in type(module)._forward_caches:  # the last forward's (a layer since replaced)
                continue
            for where, item, container, top_list in _contents(value, f"{path}.{key}" if path else key):
                if (isinstance(item, Parameter) and id(item) not in found) or (
                        isinstance(item, Module) and not top_list
                        and any(id(p) not in found for p in item.parameters())):
                    raise ValueError(
                        f"{owner}: {where} is {item!r:.80}, held in the "
                        f"{type(container).__name__} {type(module).__name__}.{key}, where "
                        "parameters() does not look: no optimizer would train it, and save "
                        "would leave it out. Make each parameter an attribute (self.weight = "
                        "nn.Parameter(...)), and sub-modules attributes or items of a list")


def _contents(value: Any, where: str, depth: int = 0,
              seen: set[int] | None = None) -> Iterator[tuple[str, Any, Any, bool]]:
    """(path, item, its container, whether named_children sees it: an item of a list or
    tuple attribute itself) for every item in ``value``'s lists, tuples and dicts, nested
    ones too (a module in a list of lists had gone untrained, unsaved, unnoticed)."""
    seen = set() if seen is None else seen
    if not isinstance(value, (list, tuple, dict)) or id(value) in seen:
        return
    seen.add(id(value))
    for i, item in (value.items() if isinstance(value, dict) else enumerate(value)):
        path = f"{where}[{i!r}]"
        yield path, item, value, depth == 0 and not isinstance(value, dict)
        yield from _contents(item, path, depth + 1, seen)


# What a model keeps of its last forward pass for its backward: a derived backward's
# recording, a Sequential's layers with their forward counts.
_LAST_FORWARD = ("_tape", "_layer_runs")


@contextmanager
def kept_recording(model: Any) -> Iterator[None]:
    """Within the block, forward passes of ``model`` (gradient_check's, explain_backward's)
    leave what it keeps of its last forward pass as it was: a backward called after the
    block, for a forward run before it, then replays that forward (its layers recomputed
    where the block ran them since), not the block's; a Sequential's names a layer the
    block ran (its caches are the block's). A recording model's forward count is given
    back too: its replay is right, so a Sequential holding it has no run to name."""
    attributes = vars(model)
    kept = {key: attributes[key] for key in _LAST_FORWARD if key in attributes}
    calls = model._forward_calls if _records(model) else None
    try:
        yield
    finally:
        with deferred_interrupt():  # a restore cut short had kept part of the block's
            for key in _LAST_FORWARD:
                if key in kept:
                    attributes[key] = kept[key]
                elif key in attributes:  # None reads as absent; a pop resized the dict
                    attributes[key] = None  # under another thread walking it
            if calls is not None:
                model._forward_calls = calls


@contextmanager
def switched_mode(model: Any, training: bool) -> Iterator[None]:
    """Put the model in training or evaluation mode, restoring every module's previous mode
    after (a batch norm put in eval by hand, to freeze its statistics, had come back in
    training mode from predict, evaluate, fit, lr_range_test and gradient_check). Each
    switch walks every layer: a Ctrl-C waits for its end (a cut walk left some layers in
    each mode)."""
    previous = None  # each module's mode to restore, once switched
    try:
        with run_lock(model), deferred_interrupt():  # not during another thread's run
            previous = [(m, m.training) for _, m in model.named_modules()]
            model.train(training)
        yield
    finally:
        if previous is not None:
            with run_lock(model), deferred_interrupt():
                model.train(previous[0][1])  # the model's own train(), as the switch
                for module, mode in previous[1:]:
                    module.training = mode


def device_of_module(module: Module) -> str:
    """Where the module's parameters live ("cpu" for NumPy arrays, or a Tensor's device)."""
    params = module.parameters()
    return memory.device_of(params[0].data) if params else "cpu"


def place(module: Module, like: Any) -> Module:
    """``Module.to`` for the device of ``like`` (an empty array: NumPy for host memory, a
    Tensor for its device; the tests pass a Tensor in host memory to run the device path on
    any machine). Parameters, their gradients and the buffers are copied there, and the
    compiled optimizer is bound to them again with its state. Integer buffers (counters such as
    BatchNorm's num_batches_tracked, which the host updates) stay in host memory."""
    on_device = memory.is_tensor(like)
    if on_device:
        from .._device import check_on_device

        check_on_device(module, like.device)
    params = module.parameters()

    def moved(a: Any) -> Any:
        if on_device:
            return memory.asarray(a, like=like)
        return a if not memory.is_tensor(a) else memory.asarray(a.numpy(), copy=True)

    if all(memory.is_tensor(p.data) == on_device and memory.device_of(p.data) == memory.device_of(like)
           for p in params):
        return module
    compiled = getattr(module, "compiled", None)
    optimizer = getattr(compiled, "optimizer", None)
    bound = optimizer is not None and optimizer.params and set(map(id, optimizer.params)) <= set(map(id, params))
    state = optimizer.state_arrays() if bound else None
    for p in params:
        p.settle_grad()
        p.data, p._grad = moved(p.data), moved(p._grad)
    for m in dict(module.named_modules()).values():
        for name in vars(m).get("_buffer_names", {}):
            value = getattr(m, name)
            if value is not None and value.dtype == np.float32:  # counters (num_batches_tracked) stay on the host
                setattr(m, name, moved(value))
    if bound:
        optimizer.bind(optimizer.params)
        optimizer.load_state_arrays({k: memory.to_host(v) for k, v in state.items()})
    return module


def _recorded(forward: Callable) -> Callable:
    """``forward`` recorded (``fastnn.nn.autograd.run``) when its module's backward is
    derived, however it is called (``model(x)`` or ``model.forward(x)``), so that
    ``backward`` never replays a stale recording."""

    @functools.wraps(forward)
    def wrapper(self: Module, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not _records(self):  # a subclass's backward of its own: counted (``_counted``)
            self._forward_calls += 1
            return forward(self, x, *args, **kwargs)
        from .autograd import run

        # counted too: a Sequential holding it names it when it ran again before backward
        self._forward_calls += 1
        return run(self, forward, x, args, kwargs)

    wrapper._fastnn_recorded = True  # type: ignore[attr-defined]
    return wrapper


def _counted(forward: Callable) -> Callable:
    """``forward`` of a module with a backward of its own, counting its runs in
    ``_forward_calls`` however it is called (``layer(x)``, ``layer.forward(x)``, a replay)."""

    @functools.wraps(forward)
    def wrapper(self: Module, *args: Any, **kwargs: Any) -> Any:
        self._forward_calls += 1
        return forward(self, *args, **kwargs)

    wrapper._fastnn_counted = True  # type: ignore[attr-defined]
    return wrapper


class WorkspaceLayer(Module):
    """Base of the built-in layers that a model run lends arrays (``Workspace``), so that
    the steady state of a training loop allocates nothing.

    Subclasses implement ``_forward(x, workspace, internal)`` and ``_backward(grad_out,
    workspace, internal, input_grad)``, where ``workspace`` is None when the layer is
    called on its own; ``output`` gives the array for a result handed on. A subclass of
    such a layer that overrides ``forward`` or ``backward`` is run through its override.

    ``_forward_calls`` counts the forward passes run, ``forward_with``'s too (see Module).
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, None, False)

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        return self._backward(grad_out, None, False, input_grad)

    def forward_with(self, x: np.ndarray, workspace: Workspace, internal: bool) -> np.ndarray:
        if overridden(self, "forward", WorkspaceLayer):
            return self.forward(x)
        self._forward_calls += 1
        return self._forward(x, workspace, internal)

    def backward_with(self, grad_out: np.ndarray, workspace: Workspace, internal: bool,
                      input_grad: bool = True) -> np.ndarray | None:
        if overridden(self, "backward", WorkspaceLayer):
            return super().backward_with(grad_out, workspace, internal, input_grad)
        return self._backward(grad_out, workspace, internal, input_grad)

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement _forward")

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _backward")

    @staticmethod
    def output(workspace: Workspace | None, internal: bool, name: str,
               shape: tuple[int, ...]) -> np.ndarray | None:
        """The workspace's array ``name`` for a result that only the neighbouring layer
        reads (``internal``), else None: the kernel then returns a new array."""
        return workspace.array(name, shape) if internal and workspace is not None else None
