"""Module and Parameter: the building blocks of every layer."""

from __future__ import annotations

from typing import Iterator

import numpy as np


class Parameter:
    """A trainable array: ``data`` and its gradient ``grad``, both C-contiguous float32.

    ``grad`` starts at zero; ``backward`` passes accumulate into it and
    ``zero_grad`` (of the module or the optimizer) resets it.
    """

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        self.data = np.array(data, dtype=np.float32, order="C")
        self.grad = np.zeros_like(self.data)
        self.name = name

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

    def __init__(self) -> None:
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def children(self) -> Iterator[Module]:
        """The direct sub-modules, in attribute order."""
        for value in vars(self).values():
            if isinstance(value, Module):
                yield value
            elif isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, Module))

    def parameters(self) -> list[Parameter]:
        """Every parameter of this module and its sub-modules, each once, in a fixed order."""
        found: dict[int, Parameter] = {}
        for value in vars(self).values():
            if isinstance(value, Parameter):
                found.setdefault(id(value), value)
        for child in self.children():
            for p in child.parameters():
                found.setdefault(id(p), p)
        return list(found.values())

    def zero_grad(self) -> None:
        """Reset every parameter gradient to zero."""
        for p in self.parameters():
            p.grad.fill(0.0)

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
