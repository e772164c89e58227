"""Controlled experiments: compare optimizers, learning rates and batch sizes, and the
learning-rate range test.

In ``compare`` every run builds its model under the same seed (so every run starts from
the same initial weights) and shuffles with the same seed (so every run sees the batches
in the same order): the setting being compared is the only difference.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import _random, losses, optim
from .data import batches as _batches

Data = tuple  # (X_train, y_train, X_val, y_val) or (X_train, y_train, X_val, y_val, ...)


@dataclass
class Run:
    """One run of a comparison: its settings, its History and the summary numbers."""
    optimizer: str
    lr: float
    batch_size: int | None
    history: Any
    seconds: float
    diverged: bool
    final_val_accuracy: float | None
    best_val_accuracy: float | None
    final_loss: float
    epoch_reached_target: int | None  # first epoch (1-based) at the target accuracy

    @property
    def label(self) -> str:
        return f"{self.optimizer} lr={self.lr:g} bs={self.batch_size}"


@dataclass
class Comparison:
    """The runs of ``compare``, in the order they ran; ``table()`` formats them."""
    runs: list[Run] = field(default_factory=list)
    target_accuracy: float | None = None

    def table(self) -> str:
        head = (f"{'optimizer':<10} {'lr':>8} {'batch':>6} {'val acc':>8} {'best':>7} "
                f"{'loss':>9} {'epoch@' + format(self.target_accuracy or 0, '.0%'):>9} "
                f"{'time':>7}  status")
        lines = [head, "-" * len(head)]
        for r in self.runs:
            fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            lines.append(
                f"{r.optimizer:<10} {r.lr:>8g} {str(r.batch_size):>6} {fmt(r.final_val_accuracy):>8} "
                f"{fmt(r.best_val_accuracy):>7} {r.final_loss:>9.4g} "
                f"{str(r.epoch_reached_target or '-'):>9} {r.seconds:>6.1f}s  "
                f"{'diverged' if r.diverged else 'ok'}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def compare(build_model: Callable[[], Any], data: Data, *,
            optimizers: Sequence[str | optim.Optimizer] = ("sgd",),
            lrs: Sequence[float] | None = None, batch_sizes: Sequence[int | None] = (32,),
            epochs: int = 5, loss: str = "cross_entropy", seed: int = 0,
            target_accuracy: float | None = None, verbose: bool = True,
            plot: str | None = None) -> Comparison:
    """Train one model per (optimizer, lr, batch size) and compare them.

    build_model: a function returning a fresh, uncompiled model. data: (X_train, y_train,
    X_val, y_val). optimizers: names for ``fastnn.optim.get`` ("sgd", "momentum",
    "nesterov", "adagrad", "rmsprop", "adam", ...) or Optimizer objects (each run gets a
    fresh copy of its settings). lrs: the learning rates to try; by default 0.01 for a
    name and an Optimizer's own rate. A run whose loss becomes NaN or infinite stops and
    is reported as diverged. Prints the table when verbose; plot= saves the curves side
    by side (needs matplotlib). A failure of the table or the plot only warns: the
    finished runs are always returned.
    """
    X_train, y_train, X_val, y_val = data[:4]
    result = Comparison(target_accuracy=target_accuracy)
    settings = [(opt, lr) for opt in optimizers
                for lr in (lrs if lrs is not None else
                           [opt.lr if isinstance(opt, optim.Optimizer) else 0.01])]
    for (opt, lr), batch_size in itertools.product(settings, batch_sizes):
        if isinstance(opt, optim.Optimizer):  # a copy: runs must not share moments or steps
            opt_name = type(opt).__name__
            optimizer = optim.from_config({**opt.get_config(), "lr": lr})
        else:
            opt_name, optimizer = opt, optim.get(opt, lr=lr)
        _random.seed(seed)  # the same initial weights for every run
        model = build_model()
        model.compile(loss=loss, optimizer=optimizer)  # accuracy, quiet where undefined
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # divergence is reported below
            history = model.fit(X_train, y_train, epochs=epochs, batch_size=batch_size,
                                validation_data=(X_val, y_val), seed=seed, verbose=0)
        seconds = time.perf_counter() - start
        h = history.history
        val_acc = h.get("val_accuracy", [])
        diverged = not all(math.isfinite(v) for v in h["loss"])
        reached = next((i + 1 for i, a in enumerate(val_acc)
                        if target_accuracy is not None and a >= target_accuracy), None)
        run = Run(opt_name, lr, batch_size, history, seconds, diverged,
                  val_acc[-1] if val_acc else None, max(val_acc) if val_acc else None,
                  h["loss"][-1], reached)
        result.runs.append(run)
        if verbose:
            print(f"{run.label}: val accuracy {run.final_val_accuracy}, "
                  f"{'diverged' if diverged else 'ok'}, {seconds:.1f}s", flush=True)
    try:
        if verbose:
            print(result.table())
        if plot:
            from .plot import comparison
            comparison(result, plot)
    except Exception as err:  # noqa: BLE001 - the runs took long; never lose them to a report
        warnings.warn(f"compare: the report failed ({type(err).__name__}: {err}); the "
                      f"{len(result.runs)} finished runs are returned", RuntimeWarning,
                      stacklevel=2)
    return result


@dataclass
class LRRangeResult:
    """Loss (smoothed) against the learning rate, and the suggested learning rate."""
    lrs: np.ndarray
    losses: np.ndarray
    suggested_lr: float


def lr_range_test(model: Any, data: Data, *, loss: str | losses.Loss = "cross_entropy",
                  optimizer: str = "sgd", start_lr: float = 1e-6, end_lr: float = 1.0,
                  steps: int = 100, batch_size: int = 32, seed: int = 0,
                  smoothing: float = 0.9) -> LRRangeResult:
    """The learning-rate range test (Smith, 2015): train on mini-batches while the
    learning rate grows exponentially from start_lr to end_lr, recording the loss.

    Stops early once the smoothed loss exceeds 4x its minimum (divergence). The suggested
    learning rate is where the smoothed loss falls fastest, before its minimum and past
    the first, noisy 10% of the steps. The model's weights, buffers (batch norm's running
    statistics) and training mode are restored afterwards.
    """
    X_train, y_train = data[:2]
    loss_fn = losses.get(loss)
    opt = optim.get(optimizer, lr=start_lr)
    params = model.parameters()
    opt.bind(params)
    saved = [p.data.copy() for p in params]
    saved_buffers = [b.copy() for b in model.buffers()]  # batch norm's running statistics
    was_training = model.training
    factor = (end_lr / start_lr) ** (1.0 / max(steps - 1, 1))
    lrs, smoothed = [], []
    avg, best = 0.0, math.inf
    rng = np.random.default_rng(seed)
    batches = iter(())
    model.train()
    try:
        for step in range(steps):
            try:
                xb, yb = next(batches)
            except StopIteration:
                batches = _batches(X_train, y_train, batch_size, shuffle=True, seed=rng)
                xb, yb = next(batches)
            opt.lr = start_lr * factor ** step
            value = loss_fn(model(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
            opt.zero_grad()
            avg = smoothing * avg + (1 - smoothing) * value
            debiased = avg / (1 - smoothing ** (step + 1))
            if not math.isfinite(debiased) or debiased > 4 * best:
                break
            best = min(best, debiased)
            lrs.append(opt.lr)
            smoothed.append(debiased)
    finally:
        for p, w in zip(params, saved):
            p.data[...] = w
            p.grad.fill(0.0)
        for b, w in zip(model.buffers(), saved_buffers):
            b[...] = w
        model.train(was_training)
    lrs_a, loss_a = np.array(lrs), np.array(smoothed)
    lowest = int(np.argmin(loss_a)) if len(loss_a) else 0
    # The steepest descent before the loss bottoms out, the first 10% of the steps left
    # out: there the running average still follows single noisy batches.
    start = min(max(3, len(lrs_a) // 10), lowest - 2)
    if start >= 0:
        slope = np.gradient(loss_a[start:lowest + 1], np.log(lrs_a[start:lowest + 1]))
        suggested = float(lrs_a[start + int(np.argmin(slope))])
    else:
        suggested = float(lrs_a[lowest] / 10) if len(lrs_a) else start_lr
    return LRRangeResult(lrs_a, loss_a, suggested)

