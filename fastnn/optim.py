"""Optimizers: SGD (with momentum / Nesterov) and Adam, updating parameters in place."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from . import _C
from .nn.module import Parameter


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite(value: float, name: str) -> float:
    value = float(value)
    _check(math.isfinite(value), f"{name} must be finite; got {value}")
    return value


class Optimizer:
    """Base class. ``params`` may be given later with ``bind`` (``compile`` does it).

    ``step()`` updates every parameter from its ``grad``; ``zero_grad()`` resets the
    gradients. ``lr`` may be changed between steps.
    """

    def __init__(self, params: Iterable[Parameter] | None, lr: float) -> None:
        self.lr = _finite(lr, "lr")
        _check(self.lr > 0, f"lr must be > 0; got {self.lr}")
        self.params: list[Parameter] = []
        if params is not None:
            self.bind(params)

    def bind(self, params: Iterable[Parameter]) -> Optimizer:
        """Optimize ``params`` (a model's ``parameters()``), starting from fresh state."""
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: params[{i}] must be a "
                                f"fastnn.nn.Parameter; got {type(p).__name__}")
        self.params = params
        self._reset_state()
        return self

    def step(self) -> None:
        """Apply one update to every bound parameter."""
        if not self.params:
            raise RuntimeError(f"{type(self).__name__}: no parameters; pass them to the "
                               "constructor or call bind(model.parameters())")
        self._step()

    def zero_grad(self) -> None:
        """Reset the gradients of the bound parameters to zero."""
        for p in self.params:
            p.grad.fill(0.0)

    def _reset_state(self) -> None:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``:
    ``v = momentum * v + (g + weight_decay * w)``; ``w -= lr * v``
    (Nesterov: ``w -= lr * (g + momentum * v)``)."""

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float = 0.01,
                 momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        self.momentum = _finite(momentum, "momentum")
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}")
        self.nesterov = bool(nesterov)
        _check(not self.nesterov or self.momentum > 0,
               "nesterov=True requires momentum > 0")
        self.weight_decay = _finite(weight_decay, "weight_decay")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}")
        super().__init__(params, lr)

    def _reset_state(self) -> None:
        self.velocity = [np.zeros_like(p.data) if self.momentum > 0 else None
                         for p in self.params]

    def _step(self) -> None:
        for p, v in zip(self.params, self.velocity):
            _C.sgd_step(p.data, p.grad, v, lr=self.lr, momentum=self.momentum,
                        nesterov=self.nesterov, weight_decay=self.weight_decay)

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay})")


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (weight decay is L2, added to the gradient)."""

    def __init__(self, params: Iterable[Parameter] | None = None, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        self.betas = (_finite(betas[0], "betas[0]"), _finite(betas[1], "betas[1]"))
        for i, beta in enumerate(self.betas):
            _check(0 <= beta < 1, f"betas[{i}] must be in [0, 1); got {beta}")
        self.eps = _finite(eps, "eps")
        _check(self.eps > 0, f"eps must be > 0; got {self.eps}")
        self.weight_decay = _finite(weight_decay, "weight_decay")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}")
        super().__init__(params, lr)

    def _reset_state(self) -> None:
        self.step_count = 0
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def _step(self) -> None:
        self.step_count += 1
        for p, m, v in zip(self.params, self.m, self.v):
            _C.adam_step(p.data, p.grad, m, v, lr=self.lr, beta1=self.betas[0],
                         beta2=self.betas[1], eps=self.eps, weight_decay=self.weight_decay,
                         step=self.step_count)

    def __repr__(self) -> str:
        return (f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


_PRESETS = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (Adam, {}),
}


def get(name: str | Optimizer, **kwargs: object) -> Optimizer:
    """An optimizer from its name: "sgd", "momentum" (SGD, momentum 0.9), "nesterov"
    (SGD, Nesterov momentum 0.9) or "adam"; ``kwargs`` override the preset. An Optimizer
    is returned as is."""
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
