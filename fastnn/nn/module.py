"""Module and Parameter: the building blocks of every layer."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Mapping

import numpy as np

# How many parameter values may still be allocated (None: no limit). fastnn.io.load sets
# it to what the file holds, so that a tiny file declaring a huge architecture fails
# before the allocation, not after it.
_budget: ContextVar[list[int] | None] = ContextVar("fastnn_parameter_budget", default=None)


@contextmanager
def parameter_budget(count: int) -> Iterator[None]:
    """Within the block, layers built may hold at most ``count`` parameter values in all
    (``reserve_parameters`` raises ValueError beyond)."""
    token = _budget.set([count])
    try:
        yield
    finally:
        _budget.reset(token)


def reserve_parameters(count: int, owner: str) -> None:
    """Called by a layer before it allocates ``count`` parameter values: ValueError when
    that exceeds the ``parameter_budget`` in force."""
    budget = _budget.get()
    if budget is None:
        return
    budget[0] -= count
    if budget[0] < 0:
        raise ValueError(f"{owner} needs {count:,} parameter values, more than the "
                         "weights available hold")


class Parameter:
    """A trainable array: ``data`` and its gradient ``grad``, both C-contiguous float32.

    ``grad`` starts at zero; ``backward`` passes accumulate into it and
    ``zero_grad`` (of the module or the optimizer) resets it. The reset is lazy: the
    next backward pass writes the gradient instead of adding to zeros (one pass over it
    instead of three), and reading ``grad`` before that gives the zeros.
    """

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        self.data = np.array(data, dtype=np.float32, order="C")
        self._grad = np.zeros_like(self.data)
        self._zero_pending = False
        self.name = name

    @property
    def grad(self) -> np.ndarray:
        if self._zero_pending:
            self._grad.fill(0.0)
            self._zero_pending = False
        return self._grad

    @grad.setter
    def grad(self, value: np.ndarray) -> None:
        self._grad = value
        self._zero_pending = False

    def zero_grad(self) -> None:
        """Reset ``grad`` to zero (lazily, see the class docstring)."""
        self._zero_pending = True

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


class Module:
    """Base class of layers and models.

    Subclasses implement ``forward(x)``, which caches what the backward pass needs, and
    ``backward(grad_out)``, which returns the gradient with respect to the input and
    accumulates the gradients of the module's parameters. Parameters and sub-modules
    held as attributes (or in lists of modules) are found by ``parameters()``.
    """

    # Set by a Sequential for the layers whose output (internal_output) or input
    # gradient (internal_input_grad) only the next layer reads: they may reuse buffers.
    internal_output = False
    internal_input_grad = False

    def __init__(self) -> None:
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, sub-module) pairs in attribute order; a module in a list attribute
        ``blocks`` is named ``blocks.0``, ``blocks.1``, ..."""
        for key, value in vars(self).items():
            if isinstance(value, Module):
                yield key, value
            elif isinstance(value, (list, tuple)):
                yield from ((f"{key}.{i}", v) for i, v in enumerate(value)
                            if isinstance(v, Module))

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
        """A copy of every parameter's values, by ``named_parameters`` name (the names and
        shapes of ``torch.nn.Sequential(torch.nn.Linear(...), ...).state_dict()``)."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` (name -> array, e.g. a ``state_dict`` of this model or of the
        matching torch model) into the parameters, in place. Nothing is changed unless
        the names match exactly and every shape agrees."""
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys "
                             f"{unexpected} (this model has {list(params)})")
        arrays = {}
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {name!r} must be a numeric array; "
                                f"got dtype {value.dtype}")
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name!r} has shape {value.shape}; "
                                 f"the model's is {p.shape}")
            arrays[name] = value
        for name, value in arrays.items():
            params[name].data[...] = value

    def regularization_loss(self) -> float:
        """The L1/L2 penalty of this module's weights (its sub-modules' summed), which
        training adds to the reported loss; 0.0 without penalties."""
        return float(sum(child.regularization_loss() for child in self.children()))

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
