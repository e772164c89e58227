"""Optimizers: GD, SGD (momentum / Nesterov), Adagrad, RMSprop, Adam and AdamW, updating
parameters in place with C++ kernels; each matches its ``torch.optim`` namesake.

Every optimizer also takes ``clip_norm`` (rescale all gradients together so that their
global L2 norm is at most clip_norm, as ``torch.nn.utils.clip_grad_norm_``) and
``clip_value`` (clamp every gradient entry to [-clip_value, clip_value]); ``step()``
applies them to the ``grad`` arrays in place, norm first, before the update.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import _C, memory
from ._checks import (F32_MAX as _F32_MAX, F32_TINY, deferred_interrupt, flag, float32_epsilon,
                      float32_number, outside_stacklevel)
from .nn.module import Parameter


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite(value: float, name: str) -> float:
    return float32_number(value, name)  # the kernels' type: 1e39 was inf to them


def _in_range(value: float, name: str, low: float, high: float | None = None) -> float:
    """``value`` as a float in [low, high) (or >= low without high)."""
    value = _finite(value, name)
    if high is None:
        _check(value >= low, f"{name} must be >= {low}; got {value}")
    else:
        _check(low <= value < high, f"{name} must be in [{low}, {high}); got {value}")
    return value


def check_lr(value: float, positive: bool = True) -> float:
    """A learning rate: finite within float32's range; at construction (``positive``) at least
    float32's smallest normal number (lr=1e-50 was 0 to the kernels: nothing trained), when
    set later >= 0 (a decaying schedule passes below it on its way to 0, as it would in
    torch, and the updates then vanish)."""
    value = _finite(value, "lr")
    if positive:
        _check(value >= F32_TINY, f"lr must be > 0 and at least {F32_TINY:.4g} (float32's "
                                  f"smallest normal number); got {value}")
    else:
        _check(value >= 0, f"lr must be >= 0; got {value}")
    return value


def _learning_rate(lr: float | None, learning_rate: float | None, default: float,
                   owner: str) -> float:
    """The learning rate from ``lr`` or its Keras name ``learning_rate`` (one of them at
    most), else ``default``."""
    if learning_rate is None:
        return default if lr is None else lr
    if lr is not None:
        raise TypeError(f"{owner}: give lr or learning_rate (the same setting, Keras's name "
                        f"for it), not both; got lr={lr!r} and learning_rate={learning_rate!r}")
    return learning_rate


def _positive_or_none(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    value = _finite(value, name)
    _check(value > 0, f"{name} must be > 0 (or None); got {value}")
    return value


def _realigned(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` on a ``memory.ALIGNMENT`` boundary (a pickle's is not); a Tensor
    (which is never copied with its optimizer) as it is."""
    if memory.is_tensor(array):
        return array
    copy = memory.empty(array.shape, array.dtype, like=array)
    copy[...] = array
    return copy


class _Flat:
    """The bound parameters in one contiguous buffer: ``data`` and ``grad`` are flat
    float32 arrays, and each parameter's own arrays are views of a slice of them. Each
    parameter starts on a ``memory.ALIGNMENT`` boundary, so that a kernel reading a weight
    matrix's rows in place finds them aligned; the gaps between them stay zero (a zero
    gradient moves no optimizer, and adds nothing to a norm)."""

    def __init__(self, params: list[Parameter]) -> None:
        self.shapes = [p.data.shape for p in params]
        sizes = [p.data.size for p in params]
        step = memory.ALIGNMENT // 4
        starts = np.cumsum([0] + [-(-n // step) * step for n in sizes])
        self.offsets = [(int(s), int(s) + n) for s, n in zip(starts, sizes)]
        # (offset, rows, cols) of each parameter: the kernels split their threads by rows
        # of each, as the GEMMs that write the gradients and read the weights split them
        self.segments = memory.asarray([(b, p.data.shape[0] if p.data.ndim else 1,
                                         n // max(1, p.data.shape[0]) if p.data.ndim else n)
                                        for (b, _), p, n in zip(self.offsets, params, sizes)], np.int64)
        like = params[0].data  # the buffer lives where the parameters do (host or a device)
        self.data = memory.zeros(int(starts[-1]), like=like)
        self.grad = memory.zeros(int(starts[-1]), like=like)
        # each parameter's views, as handed out: step() finds by identity a parameter that
        # has left them (see adopt)
        self.views = [(self.view(self.data, i), self.view(self.grad, i)) for i in range(len(params))]
        for p, (data, grad) in zip(params, self.views):
            data[...] = p.data
            grad[...] = p.grad
            p.data, p.grad = data, grad

    def __getstate__(self) -> dict:
        state = dict(vars(self))
        state.pop("views")  # made anew by __setstate__: a pickle had held every value twice
        return state

    def __setstate__(self, state: dict) -> None:
        # A copy (copy.deepcopy, pickle) of the buffers no longer holds the parameters'
        # arrays as views (the copied model took no update, silently): buffers aligned anew,
        # and views of them, which the parameters have left, so that adopt() takes their
        # values back in at the next step.
        self.__dict__.update(state)
        self.data, self.grad = _realigned(self.data), _realigned(self.grad)
        self.views = [(self.view(self.data, i), self.view(self.grad, i)) for i in range(len(self.shapes))]

    def view(self, flat: np.ndarray, i: int) -> np.ndarray:
        begin, end = self.offsets[i]
        return flat[begin:end].reshape(self.shapes[i])

    def move_grad(self, buffer: np.ndarray, params: list[Parameter]) -> None:
        """Keep the gradients in ``buffer`` (flat float32 of ``grad``'s size) from now on:
        values copied, each of ``params``' ``grad`` a view of it (distributed training
        puts them in memory that the ranks on one machine share)."""
        np.copyto(buffer, self.grad)
        self.grad = buffer
        for i, p in enumerate(params):
            p.grad = self.view(buffer, i)
            self.views[i] = (self.views[i][0], p.grad)

    def adopt(self, params: list[Parameter], owner: str) -> None:
        """Take back into the buffer, values and all, each parameter whose ``data`` or
        ``grad`` is no longer its view here: an array assigned to it (``p.data = w``, as in
        PyTorch), or the buffer of another optimizer it was bound to since (a layer shared by
        two compiled models). A step would otherwise update a stale copy, and the layer would
        silently stop training."""
        for i, (p, (data, grad)) in enumerate(zip(params, self.views)):
            if p.data is data and p._grad is grad:
                continue
            if (memory.is_tensor(p.data) != memory.is_tensor(data)  # model.to(...) since
                    or memory.device_of(p.data) != memory.device_of(data)):
                def where(a: Any) -> str:
                    return f"a Tensor on {a.device}" if memory.is_tensor(a) else "a NumPy array"

                raise RuntimeError(f"{owner}: parameter {i}{f' ({p.name})' if p.name else ''} is "
                                   f"now {where(p.data)}, this optimizer's buffer {where(data)}: "
                                   "bind it again (opt.bind(model.parameters()), or compile "
                                   "the model again)")
            for name, new, view in (("data", p.data, data), ("grad", p._grad, grad)):
                if tuple(getattr(new, "shape", ())) != view.shape:
                    raise ValueError(
                        f"{owner}: parameter {i}{f' ({p.name})' if p.name else ''} was bound "
                        f"with shape {view.shape}; its {name} now has shape "
                        f"{tuple(getattr(new, 'shape', ()))}")
            p.settle_grad()
            if p.data is not data:
                data[...] = p.data
                p.data = data
            if p._grad is not grad:
                grad[...] = p._grad
                p.grad = grad


class Optimizer:
    """Base class. ``params`` may be given later with ``bind`` (``compile`` does it).

    ``step()`` clips the gradients (if asked) and updates every parameter from its
    ``grad``; ``zero_grad()`` resets the gradients. ``lr`` may be changed between steps
    (the schedulers of ``fastnn.schedulers`` do): to any finite number >= 0 (a schedule
    may end at 0; the constructor asks for > 0), a ValueError otherwise. Every
    optimizer also takes it as ``learning_rate=`` (Keras's name; not both); without
    either it is 0.01 (1e-3 for Adam and AdamW).

    Subclasses list their hyperparameters in ``_hyper`` (for ``get_config``), create
    each parameter's state arrays in ``_new_state`` and apply the update in ``_update``.
    """

    _hyper: tuple[str, ...] = ()

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        # checked here, not only in the constructor: a NaN, an inf or a negative rate set
        # between steps had gone to the kernels (a negative one climbs the gradient)
        self._lr = check_lr(value, positive=False)

    def __init__(self, params: Iterable[Parameter] | None, lr: float,
                 clip_norm: float | None = None, clip_value: float | None = None) -> None:
        self.lr = check_lr(lr)
        self.clip_norm = _positive_or_none(clip_norm, "clip_norm")
        self.clip_value = _positive_or_none(clip_value, "clip_value")
        self.params: list[Parameter] = []
        self.state: list[dict[str, np.ndarray]] = []
        self.step_count = 0
        if params is not None:
            self.bind(params)

    def bind(self, params: Iterable[Parameter]) -> Optimizer:
        """Optimize ``params`` (a model's ``parameters()``), starting from fresh state.

        The parameters move into one flat buffer owned by the optimizer (their ``data`` and
        ``grad`` become views of it, values kept), so that every step is a single kernel
        call over all of them. A parameter that leaves it (an array assigned to its
        ``data``, or a bind to another optimizer) is taken back, with its current values, at
        the next ``step()``: as in PyTorch, two optimizers that share a parameter both
        update it.
        """
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        first: dict[int, int] = {}
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: params[{i}] must be a "
                                f"fastnn.nn.Parameter; got {type(p).__name__}")
            if first.setdefault(id(p), i) != i:  # torch warns too (and steps it twice)
                warnings.warn(f"{type(self).__name__}: params[{i}]{f' ({p.name})' if p.name else ''} "
                              f"is params[{first[id(p)]}] again; it takes one update a step",
                              UserWarning, stacklevel=outside_stacklevel())
        flat = _Flat(params)
        flat_state = self._new_state(flat)
        state = [{name: flat.view(array, i) for name, array in flat_state.items()}
                 for i in range(len(params))]
        # all or nothing: a failure or a Ctrl-C above left the optimizer bound as it was (the
        # parameters already moved into the new buffer are taken back at its next step)
        with deferred_interrupt():
            self.params, self._flat, self._flat_state, self.state = params, flat, flat_state, state
            self.step_count = 0
        return self

    def __getstate__(self) -> dict:
        state = dict(vars(self))
        state["state"] = []  # views of _flat_state, made anew by __setstate__
        return state

    def __setstate__(self, state: dict) -> None:
        # as _Flat's: each parameter's state arrays made views of the copied flat state
        # again (state_arrays and load_state_arrays had read and written stale copies)
        state = dict(state)
        if "lr" in state:  # pickled before lr became a checked property
            state["_lr"] = state.pop("lr")
        self.__dict__.update(state)
        if self.params:
            self._flat_state = {name: _realigned(array) for name, array in self._flat_state.items()}
            self.state = [{name: self._flat.view(array, i) for name, array in self._flat_state.items()}
                          for i in range(len(self.params))]

    def step(self) -> None:
        """Clip the gradients (clip_norm, then clip_value), then apply one update to every
        bound parameter."""
        if not self.params:
            raise RuntimeError(f"{type(self).__name__}: no parameters; pass them to the "
                               "constructor or call bind(model.parameters())")
        flat = self._flat
        flat.adopt(self.params, type(self).__name__)
        for p in self.params:
            p.settle_grad()  # no backward pass since zero_grad: its zeros are written now
        if self.clip_norm is not None:
            factor = self.clip_norm / (math.sqrt(_C.sum_squares(flat.grad)) + 1e-6)
            if factor != factor:
                # a NaN norm: every gradient NaN, as torch's clip_grad_norm_ makes them (the
                # others had gone into the step unclipped; fit stops on the NaN weights). The
                # gaps between the parameters stay zero, for the next steps' norms.
                for _, grad in flat.views:
                    _C.scale_(grad, factor)
            elif factor < 1.0:
                _C.scale_(flat.grad, factor)
        if self.clip_value is not None:
            _C.clip_(flat.grad, -self.clip_value, self.clip_value)
        # the count and the update as one: a Ctrl-C between them left the count a step ahead
        # of the weights and moments (Adam's bias correction then wrong, silently)
        with deferred_interrupt():
            self.step_count += 1
            self._update(flat, self._flat_state)

    def zero_grad(self) -> None:
        """Reset the gradients of the bound parameters to zero (lazily: the next backward
        pass writes them instead of adding to zeros)."""
        for p in self.params:
            p.zero_grad()

    def get_config(self) -> dict:
        """``{"class": name, "lr": ..., <hyperparameters>, "clip_norm": ..., "clip_value": ...}``,
        JSON-serialisable; ``from_config`` rebuilds the optimizer (unbound)."""
        config: dict[str, Any] = {"class": type(self).__name__, "lr": self.lr}
        for name in self._hyper:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        config.update(clip_norm=self.clip_norm, clip_value=self.clip_value)
        return config

    def state_arrays(self) -> dict[str, np.ndarray]:
        """A copy of the optimizer's state: ``"{i}.{name}"`` for the state arrays of
        parameter i (in the bound order), and ``"step"``, the number of steps taken, as a
        0-d int64 array."""
        arrays = {key: value.copy() for key, value in self._named_state().items()}
        arrays["step"] = memory.full((), self.step_count, np.int64)
        return arrays

    def load_state_arrays(self, arrays: Mapping[str, Any]) -> None:
        """Restore ``state_arrays()`` (of an optimizer of the same kind, bound to
        parameters of the same shapes), in place; nothing changes on a mismatch. "step"
        may also be a one-element array."""
        name = type(self).__name__
        if not self.params:
            raise RuntimeError(f"{name}: bind the parameters before load_state_arrays")
        state = self._named_state()
        missing = [k for k in (*state, "step") if k not in arrays]
        unexpected = [k for k in arrays if k not in state and k != "step"]
        if missing or unexpected:
            raise ValueError(f"{name}.load_state_arrays: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        given = {}
        for key, value in state.items():
            if np.shape(arrays[key]) != value.shape:
                raise ValueError(f"{name}.load_state_arrays: {key!r} has shape "
                                 f"{np.shape(arrays[key])}; expected {value.shape}")
            array = memory.to_host(arrays[key])
            # as load_state_dict: objects had loaded as NaN, complex lost its imaginary
            # part, and 1e300 became inf with only NumPy's cast warning
            if array.dtype.kind not in "biuf":
                raise TypeError(f"{name}.load_state_arrays: {key!r} must hold real numbers; "
                                f"got dtype {array.dtype}")
            if array.dtype.kind == "f" and array.size:
                with np.errstate(invalid="ignore"):
                    beyond = np.abs(array) > _F32_MAX
                if beyond.any():
                    raise ValueError(f"{name}.load_state_arrays: {key!r} holds "
                                     f"{array[beyond][0]:g}, beyond float32's range")
            given[key] = array
        step = memory.to_host(arrays["step"])
        if (step.size != 1 or step.dtype.kind not in "iu" or step.reshape(()) < 0
                or step.reshape(()) >= np.iinfo(np.int64).max):
            raise ValueError(f"{name}.load_state_arrays: 'step' must be one integer in "
                             f"[0, 2**63 - 1); got {step!r:.100}")
        for key, value in state.items():
            value[...] = given[key]
        self.step_count = int(step.reshape(()))

    def _named_state(self) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": value
                for i, state in enumerate(self.state) for name, value in state.items()}

    def _new_state(self, p: Parameter) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.get_config().items()
                         if k != "class" and v is not None)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``:
    ``v = momentum * v + (g + weight_decay * w)``; ``w -= lr * v``
    (Nesterov: ``w -= lr * (g + momentum * v)``). State: "momentum_buffer". The default
    lr is Keras's 0.01 (torch's is 0.001)."""

    _hyper = ("momentum", "nesterov", "weight_decay")

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float | None = None,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 clip_norm: float | None = None, clip_value: float | None = None,
                 learning_rate: float | None = None) -> None:
        self.momentum = _in_range(momentum, "momentum", 0.0, 1.0)
        self.nesterov = flag(nesterov, "SGD: nesterov")
        _check(not self.nesterov or self.momentum > 0, "nesterov=True requires momentum > 0")
        self.weight_decay = _in_range(weight_decay, "weight_decay", 0.0)
        super().__init__(params, _learning_rate(lr, learning_rate, 0.01, type(self).__name__),
                         clip_norm, clip_value)

    def _new_state(self, p: Parameter) -> dict[str, np.ndarray]:
        return {"momentum_buffer": memory.zeros_like(p.data)} if self.momentum > 0 else {}

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        _C.sgd_step(p.data, p.grad, state.get("momentum_buffer"), lr=self.lr,
                    momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay, segments=p.segments)


class GD(SGD):
    """Plain gradient descent, ``w -= lr * g``: the lecture's update. Whether it is batch,
    stochastic or mini-batch gradient descent depends only on the batch size."""

    _hyper = ()

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float | None = None,
                 clip_norm: float | None = None, clip_value: float | None = None,
                 learning_rate: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value,
                         learning_rate=learning_rate)


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad`` (initial accumulator 0):
    ``s += g^2``; ``w -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)``, with
    ``g + weight_decay * w`` for g. State: "sum"."""

    _hyper = ("lr_decay", "weight_decay", "eps")

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float | None = None,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                 clip_norm: float | None = None, clip_value: float | None = None,
                 learning_rate: float | None = None) -> None:
        self.lr_decay = _in_range(lr_decay, "lr_decay", 0.0)
        self.weight_decay = _in_range(weight_decay, "weight_decay", 0.0)
        self.eps = float32_epsilon(eps, "eps")
        super().__init__(params, _learning_rate(lr, learning_rate, 0.01, type(self).__name__),
                         clip_norm, clip_value)

    def _new_state(self, p: Parameter) -> dict[str, np.ndarray]:
        return {"sum": memory.zeros_like(p.data)}

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        _C.adagrad_step(p.data, p.grad, state["sum"], lr=self.lr, eps=self.eps,
                        weight_decay=self.weight_decay, lr_decay=self.lr_decay,
                        step=self.step_count, segments=p.segments)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``: ``s = alpha * s + (1 - alpha) * g^2``;
    ``w -= lr * g / (sqrt(s) + eps)``. centered=True divides by the estimated variance
    ``s - mean(g)^2`` instead; momentum > 0 accumulates the step in a buffer first.
    State: "square_avg", "momentum_buffer" (momentum > 0), "grad_avg" (centered)."""

    _hyper = ("alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float | None = None,
                 alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False,
                 clip_norm: float | None = None, clip_value: float | None = None,
                 learning_rate: float | None = None) -> None:
        self.alpha = _in_range(alpha, "alpha", 0.0, 1.0)
        self.eps = float32_epsilon(eps, "eps")
        self.weight_decay = _in_range(weight_decay, "weight_decay", 0.0)
        self.momentum = _in_range(momentum, "momentum", 0.0, 1.0)
        self.centered = flag(centered, "RMSprop: centered")
        super().__init__(params, _learning_rate(lr, learning_rate, 0.01, type(self).__name__),
                         clip_norm, clip_value)

    def _new_state(self, p: Parameter) -> dict[str, np.ndarray]:
        state = {"square_avg": memory.zeros_like(p.data)}
        if self.momentum > 0:
            state["momentum_buffer"] = memory.zeros_like(p.data)
        if self.centered:
            state["grad_avg"] = memory.zeros_like(p.data)
        return state

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        _C.rmsprop_step(p.data, p.grad, state["square_avg"], state.get("momentum_buffer"),
                        state.get("grad_avg"), lr=self.lr, alpha=self.alpha, eps=self.eps,
                        weight_decay=self.weight_decay, momentum=self.momentum,
                        centered=self.centered, segments=p.segments)


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (weight decay is L2, added to the gradient).
    State: "exp_avg", "exp_avg_sq"."""

    _hyper = ("betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float | None = None,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm: float | None = None,
                 clip_value: float | None = None,
                 learning_rate: float | None = None) -> None:
        if (isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__")
                or not hasattr(betas, "__getitem__") or len(betas) != 2):  # a set has no order
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r:.100}")
        self.betas = (_in_range(betas[0], "betas[0]", 0.0, 1.0),
                      _in_range(betas[1], "betas[1]", 0.0, 1.0))
        self.eps = float32_epsilon(eps, "eps")
        self.weight_decay = _in_range(weight_decay, "weight_decay", 0.0)
        super().__init__(params, _learning_rate(lr, learning_rate, 1e-3, type(self).__name__),
                         clip_norm, clip_value)

    def _new_state(self, p: Parameter) -> dict[str, np.ndarray]:
        return {"exp_avg": memory.zeros_like(p.data), "exp_avg_sq": memory.zeros_like(p.data)}

    def _update(self, p: Parameter, state: dict[str, np.ndarray]) -> None:
        _C.adam_step(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], lr=self.lr,
                     beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                     weight_decay=self.weight_decay, step=self.step_count,
                     decoupled=self._decoupled, segments=p.segments)


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay,
    ``w *= 1 - lr * weight_decay`` before the Adam update (the gradient is left as is)."""

    _decoupled = True

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float | None = None,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, clip_norm: float | None = None,
                 clip_value: float | None = None, learning_rate: float | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, clip_norm, clip_value,
                         learning_rate)


_PRESETS: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
    "gd": (GD, {}),
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (Adagrad, {}),
    "rmsprop": (RMSprop, {}),
    "adam": (Adam, {}),
    "adamw": (AdamW, {}),
}


def get(name: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer from its name (case-insensitive): "gd", "sgd", "momentum" (SGD,
    momentum 0.9), "nesterov" (SGD, Nesterov momentum 0.9), "adagrad", "rmsprop", "adam"
    or "adamw", with default settings; ``kwargs`` override them. An Optimizer is
    returned as is."""
    if isinstance(name, Optimizer):
        return name
    if not isinstance(name, str):
        raise TypeError("optimizer must be a name or a fastnn.optim.Optimizer; "
                        f"got {type(name).__name__}")
    key = name.lower()
    if key not in _PRESETS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(_PRESETS)}")
    cls, preset = _PRESETS[key]
    return cls(**{**preset, **kwargs})


def from_config(config: Mapping[str, Any]) -> Optimizer:
    """A new, unbound optimizer from ``Optimizer.get_config()``'s dict. Its lr may be 0,
    where a scheduler annealed it (a new optimizer needs lr > 0)."""
    if not isinstance(config, Mapping) or not isinstance(config.get("class"), str):
        raise ValueError("optimizer config must be a dict with a 'class' name; "
                         f"got {config!r:.200}")
    settings = {k: v for k, v in config.items() if k != "class"}
    lr = settings.pop("lr", None)
    optimizer = get(config["class"], **settings)
    if lr is not None:
        optimizer.lr = lr  # the setter's check: >= 0
    return optimizer
