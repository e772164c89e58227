"""Learning-rate schedules: StepLR, ExponentialLR, CosineLR (with linear warmup) and
ReduceLROnPlateau, each matching its ``torch.optim.lr_scheduler`` counterpart.

A scheduler is bound to an optimizer with ``bind(optimizer)``, which records the base
learning rate (the optimizer's ``lr`` when first bound) and sets the lr of epoch 0.
After each epoch (counted from 0) the training loop calls ``on_epoch_end(epoch, logs)``,
which sets ``optimizer.lr`` for the next epoch. By hand::

    sched = schedulers.CosineLR(total_epochs=30, warmup_epochs=3).bind(opt)
    for epoch in range(30):
        ...                               # train one epoch with opt.lr
        sched.on_epoch_end(epoch, {"val_loss": val_loss})
"""

from __future__ import annotations

import math
import numbers
import weakref
from typing import Any, Mapping

from ._checks import non_negative, positive_int


def _fraction(value: float, name: str, allow_one: bool) -> float:
    """``value`` as a float in (0, 1), or (0, 1] with allow_one."""
    value = non_negative(value, name)  # a number (TypeError naming it otherwise)
    if not (0.0 < value < 1.0 or (allow_one and value == 1.0)):
        raise ValueError(f"{name} must be in (0, 1{']' if allow_one else ')'}; got {value}")
    return value


def _count(value: object, name: str) -> int:
    """``value`` as an int >= 0 (a whole float such as 3.0 too)."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value >= 0 and int(value) == value):
        raise (ValueError if number else TypeError)(
            f"{name} must be an integer >= 0; got {type(value).__name__} {value!r:.100}")
    return int(value)


class Scheduler:
    """Base class: ``bind``, and ``on_epoch_end`` setting ``optimizer.lr`` to
    ``lr_for_epoch(epoch + 1)``. Subclasses define ``lr_for_epoch`` from ``base_lr``, affine
    in it (``continue_at`` relies on that)."""

    def __init__(self) -> None:
        self.optimizer: Any = None
        self.base_lr: float | None = None
        self._bound_lr = 0.0
        # id(optimizer) -> (weak reference, its base lr): one scheduler given to the fits of
        # two models goes back to each one's own base lr, not the last bound one's
        self._bases: dict[int, tuple[weakref.ref, float]] = {}

    def bind(self, optimizer: Any) -> Scheduler:
        """Drive ``optimizer.lr``. The base lr is the optimizer's lr when this scheduler is
        first bound to it (binding it again, e.g. for a second ``fit``, keeps it, also after
        the scheduler drove another optimizer in between)."""
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"{type(self).__name__}.bind: expected an optimizer with an lr; "
                            f"got {type(optimizer).__name__}")
        if optimizer is not self.optimizer:
            self._remember()
            ref, base = self._bases.get(id(optimizer), (None, None))
            if ref is None or ref() is not optimizer:
                base = float(optimizer.lr)
            self.optimizer, self.base_lr = optimizer, base
        self._bound_lr = float(optimizer.lr)
        self._reset()
        return self

    def _remember(self) -> None:
        """Keep the bound optimizer's base lr for when it is bound again."""
        if self.optimizer is not None and self.base_lr is not None:
            self._bases = {k: v for k, v in self._bases.items() if v[0]() is not None}
            try:
                self._bases[id(self.optimizer)] = (weakref.ref(self.optimizer), self.base_lr)
            except TypeError:  # an optimizer of one's own without weak references
                pass

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_bases"] = {}  # weak references do not pickle; the bound one's base is kept
        return state

    def continue_at(self, epoch: int) -> None:
        """A fit resumed at ``epoch`` (from a checkpoint, written after this scheduler set
        that epoch's rate: ``fit`` runs the schedulers' ``on_epoch_end`` first): the base lr
        is the one whose schedule gives, at that epoch, the lr the optimizer was restored
        with, so the schedule goes on as if it had never stopped (the restored lr, already
        decayed, had been taken as the base: decayed twice). Every schedule here is affine
        in its base."""
        optimizer, lr = self._bound(), self._bound_lr
        self.base_lr = 0.0
        at0 = self.lr_for_epoch(epoch)
        self.base_lr = 1.0
        slope = self.lr_for_epoch(epoch) - at0
        self.base_lr = (lr - at0) / slope if slope > 0 else lr
        optimizer.lr = self.lr_for_epoch(epoch)

    def lr_for_epoch(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (counted from 0)."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        """Set the optimizer's lr for the epoch after ``epoch``."""
        self._bound().lr = self.lr_for_epoch(epoch + 1)

    def _reset(self) -> None:
        self.optimizer.lr = self.lr_for_epoch(0)

    def _bound(self) -> Any:
        if self.optimizer is None:
            raise RuntimeError(f"{type(self).__name__}: call bind(optimizer) first")
        return self.optimizer

    def _base(self) -> float:
        self._bound()
        return self.base_lr

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if k not in ("optimizer", "base_lr") and not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class StepLR(Scheduler):
    """``base_lr * gamma ** (epoch // step_size)``: the lr drops by ``gamma`` every
    ``step_size`` epochs."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        super().__init__()
        self.step_size = positive_int(step_size, "step_size")
        self.gamma = _fraction(gamma, "gamma", allow_one=True)

    def lr_for_epoch(self, epoch: int) -> float:
        return self._base() * self.gamma ** (epoch // self.step_size)


class ExponentialLR(Scheduler):
    """``base_lr * gamma ** epoch``."""

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = _fraction(gamma, "gamma", allow_one=True)

    def lr_for_epoch(self, epoch: int) -> float:
        return self._base() * self.gamma ** epoch


class CosineLR(Scheduler):
    """Cosine annealing from ``base_lr`` to ``min_lr`` over the epochs after the warmup:
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2`` with
    t = epoch - warmup_epochs, T = total_epochs - warmup_epochs (``min_lr`` from
    ``total_epochs`` on). The ``warmup_epochs`` first epochs rise linearly,
    ``base_lr * (epoch + 1) / (warmup_epochs + 1)``. Without warmup this is torch's
    CosineAnnealingLR(T_max=total_epochs, eta_min=min_lr); with it, torch's SequentialLR of
    LinearLR(start_factor=1 / (warmup_epochs + 1), total_iters=warmup_epochs) and
    CosineAnnealingLR(T_max=total_epochs - warmup_epochs, eta_min=min_lr), switching at
    warmup_epochs."""

    def __init__(self, total_epochs: int, min_lr: float = 0.0, warmup_epochs: int = 0) -> None:
        super().__init__()
        self.total_epochs = positive_int(total_epochs, "total_epochs")
        self.min_lr = non_negative(min_lr, "min_lr")
        self.warmup_epochs = _count(warmup_epochs, "warmup_epochs")
        if not self.warmup_epochs < self.total_epochs:
            raise ValueError("warmup_epochs must be an integer in [0, total_epochs); "
                             f"got {warmup_epochs} with total_epochs={total_epochs}")

    def lr_for_epoch(self, epoch: int) -> float:
        base = self._base()
        if epoch < self.warmup_epochs:
            return base * (epoch + 1) / (self.warmup_epochs + 1)
        t = min(epoch, self.total_epochs) - self.warmup_epochs
        period = self.total_epochs - self.warmup_epochs
        return self.min_lr + (base - self.min_lr) * (1.0 + math.cos(math.pi * t / period)) / 2


class ReduceLROnPlateau(Scheduler):
    """Multiply the lr by ``factor`` (not below ``min_lr``) when ``logs[monitor]`` has not
    improved by more than ``min_delta`` for more than ``patience`` epochs, as torch's
    ReduceLROnPlateau with threshold_mode="abs": "min" mode counts an epoch as better when
    its value is below the best so far minus min_delta ("max": above it plus min_delta).
    The count restarts after each reduction."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, min_lr: float = 0.0, mode: str = "min") -> None:
        super().__init__()
        if not isinstance(monitor, str):  # as EarlyStopping's: str(None) failed an epoch later
            raise TypeError("ReduceLROnPlateau: monitor must be a logged name such as "
                            f"'val_loss'; got {type(monitor).__name__} {monitor!r:.60}")
        self.monitor = monitor
        self.factor = _fraction(factor, "factor", allow_one=False)
        self.patience = _count(patience, "patience")
        self.min_delta = non_negative(min_delta, "min_delta")
        self.min_lr = non_negative(min_lr, "min_lr")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        self.mode = mode

    def lr_for_epoch(self, epoch: int) -> float:
        raise TypeError("ReduceLROnPlateau's lr depends on the monitored metric, not the epoch")

    def continue_at(self, epoch: int) -> None:
        """Resumed: from the restored lr, its count of epochs without improvement anew."""
        self._bound().lr = self._bound_lr

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        optimizer = self._bound()
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"ReduceLROnPlateau monitors {self.monitor!r}, which the epoch's "
                             f"logs lack (they hold {sorted(logs)}); pass validation data or "
                             "choose another monitor")
        value = float(logs[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        if sign * value < sign * self._best - self.min_delta:
            self._best, self._bad_epochs = value, 0
        else:
            self._bad_epochs += 1
        if self._bad_epochs > self.patience:
            lr = max(optimizer.lr * self.factor, self.min_lr)
            if optimizer.lr - lr > 1e-8:
                optimizer.lr = lr
            self._bad_epochs = 0

    def _reset(self) -> None:
        self.optimizer.lr = self.base_lr
        self._best = math.inf if self.mode == "min" else -math.inf
        self._bad_epochs = 0
