"""The training loop: compile, fit, evaluate, predict (the methods of Sequential) and History."""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from . import data, losses, optim
from ._checks import numeric, positive_int
from ._random import resolve
from .callbacks import Callback

_ACCURACY = ("accuracy", "acc")


@dataclass
class _Compiled:
    loss: losses.Loss
    optimizer: optim.Optimizer
    accuracy: bool


class History:
    """What ``fit`` returns: ``history`` maps each metric (loss, accuracy, val_loss,
    val_accuracy) to its per-epoch values; ``epoch`` lists the epochs run (from 0)."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def record(self, epoch: int, logs: dict[str, float]) -> None:
        """Append one epoch's metrics."""
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, metrics={list(self.history)})"


def compile(model: Any, loss: str | losses.Loss, optimizer: str | optim.Optimizer = "adam",
            metrics: Sequence[str] | None = ("accuracy",)) -> None:
    """Choose the loss, the optimizer (bound to ``model.parameters()``) and the metrics.

    loss: a name ("cross_entropy", "binary_cross_entropy"/"bce", "mse", ...) or a Loss.
    optimizer: a name ("sgd", "momentum", "nesterov", "adam"; default settings) or an
    Optimizer. metrics: ["accuracy"] or none; the loss is always reported.
    """
    loss_fn = losses.get(loss)
    opt = optim.get(optimizer).bind(model.parameters())
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or ())
    for metric in metrics:
        if metric not in _ACCURACY:
            raise ValueError(f"unknown metric {metric!r}; supported: 'accuracy'")
    _warn_on_output_activation(model, loss_fn)
    model._compiled = _Compiled(loss_fn, opt, bool(metrics))


def fit(model: Any, X: np.ndarray, y: np.ndarray, *, epochs: int = 1,
        batch_size: int | None = 32, shuffle: bool = True, validation_split: float = 0.0,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None, verbose: int = 1,
        seed: int | None = None, callbacks: Sequence[Callback] | None = None) -> History:
    """Train for ``epochs`` passes over (X, y) and return the History.

    batch_size: None for full-batch gradient descent, 1 for stochastic, n for mini-batches.
    validation_split: a fraction of (X, y), drawn at random, held out for validation;
    or validation_data=(X_val, y_val). seed: makes the split and the shuffling
    reproducible (None: the global generator of ``fastnn.seed``). verbose=1 prints a
    line per epoch. Training stops early when the loss is no longer finite or a
    callback sets ``model.stop_training``.
    """
    cfg = _require_compiled(model, "fit")
    X, y = _check_data(model, X, y, "X", "y")
    epochs = positive_int(epochs, "epochs")
    if batch_size is not None:
        positive_int(batch_size, "batch_size")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split}")
    rng = resolve(seed)
    X_val = y_val = None
    if validation_data is not None:
        if validation_split:
            raise ValueError("pass validation_split or validation_data, not both")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        X_val, y_val = _check_data(model, *validation_data, "validation_data[0]",
                                   "validation_data[1]")
    elif validation_split:
        X, y, X_val, y_val = data.train_val_split(X, y, validation_split, seed=rng)

    history = History()
    callbacks = list(callbacks or ())
    for cb in callbacks:
        cb.set_model(model)
    model.stop_training = False
    logs: dict[str, float] = {}
    with _mode(model, training=True):
        cfg.optimizer.zero_grad()
        for cb in callbacks:
            cb.on_train_begin()
        for epoch in range(epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            start = time.perf_counter()
            logs = _run_epoch(model, cfg, X, y, batch_size, rng=rng if shuffle else None,
                              train=True)
            rate = len(X) / max(time.perf_counter() - start, 1e-9)
            if X_val is not None:
                val = evaluate(model, X_val, y_val)
                logs.update({f"val_{key}": value for key, value in val.items()})
            history.record(epoch, logs)
            if verbose:
                print(_progress_line(epoch, epochs, logs, time.perf_counter() - start, rate),
                      flush=True)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if not math.isfinite(logs["loss"]):
                warnings.warn(f"the loss became {logs['loss']} in epoch {epoch + 1}; training "
                              "stopped (a lower learning rate may help)", RuntimeWarning,
                              stacklevel=2)
                break
            if model.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end(logs)
    return history


def evaluate(model: Any, X: np.ndarray, y: np.ndarray, *, batch_size: int = 256
             ) -> dict[str, float]:
    """The mean loss (and accuracy, if compiled with it) over (X, y), in evaluation mode."""
    cfg = _require_compiled(model, "evaluate")
    X, y = _check_data(model, X, y, "X", "y")
    with _mode(model, training=False):
        return _run_epoch(model, cfg, X, y, batch_size, rng=None, train=False)


def predict(model: Any, X: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """The model's outputs for X (logits for a classifier), in evaluation mode."""
    X = _check_inputs(model, X, "X")
    size = positive_int(batch_size, "batch_size")
    with _mode(model, training=False):
        return np.concatenate([model(X[i:i + size]) for i in range(0, len(X), size)])


def _run_epoch(model: Any, cfg: _Compiled, X: np.ndarray, y: np.ndarray,
               batch_size: int | None, *, rng: np.random.Generator | None, train: bool
               ) -> dict[str, float]:
    """One pass over (X, y): a training epoch (shuffled when rng is given) or an
    evaluation. Returns the sample-weighted mean loss and accuracy."""
    total_loss, correct, counted = 0.0, 0, 0
    accuracy = cfg.accuracy
    for xb, yb in data.batches(X, y, batch_size, shuffle=rng is not None, seed=rng):
        pred = model(xb)
        total_loss += cfg.loss(pred, yb) * len(xb)
        if train:
            model.backward(cfg.loss.backward())
            cfg.optimizer.step()
            cfg.optimizer.zero_grad()
        if accuracy:
            counts = cfg.loss.count_correct(pred, yb)
            if counts is None:
                accuracy = False
            else:
                correct, counted = correct + counts[0], counted + counts[1]
    logs = {"loss": total_loss / len(X)}
    if accuracy:
        logs["accuracy"] = correct / counted
    return logs


def _progress_line(epoch: int, epochs: int, logs: dict[str, float], seconds: float,
                   rate: float) -> str:
    metrics = " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())
    duration = f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
    return (f"Epoch {epoch + 1:>{len(str(epochs))}}/{epochs} - {duration} - "
            f"{rate:,.0f} samples/s - {metrics}")


@contextmanager
def _mode(model: Any, training: bool) -> Iterator[None]:
    """Put the model in training or evaluation mode, restoring the previous mode after."""
    previous = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(previous)


def _require_compiled(model: Any, what: str) -> _Compiled:
    cfg = getattr(model, "_compiled", None)
    if cfg is None:
        raise RuntimeError(f"call model.compile(loss=..., optimizer=...) before {what}()")
    return cfg


def _first_layer(model: Any) -> Any:
    layers = getattr(model, "layers", None)
    return layers[0] if layers else model


def _check_inputs(model: Any, X: object, name: str) -> np.ndarray:
    X = numeric(X, name)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features); got shape {X.shape}")
    if len(X) == 0:
        raise ValueError(f"{name} has no samples (shape {X.shape})")
    first = _first_layer(model)
    features = getattr(first, "in_features", None)
    if features is not None and X.shape[1] != features:
        raise ValueError(f"{name} has {X.shape[1]} features (shape {X.shape}) but the first "
                         f"layer, {first!r}, expects {features}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _check_data(model: Any, X: object, y: object, x_name: str, y_name: str
                ) -> tuple[np.ndarray, np.ndarray]:
    X = _check_inputs(model, X, x_name)
    y = numeric(y, y_name)
    if y.ndim not in (1, 2) or len(y) != len(X):
        raise ValueError(f"{y_name} must have one target (row) per sample of {x_name}; "
                         f"got {x_name} {X.shape} and {y_name} {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{y_name} contains NaN or infinite values")
    return X, y


def _warn_on_output_activation(model: Any, loss_fn: losses.Loss) -> None:
    layers = getattr(model, "layers", None)
    activation = getattr(layers[-1] if layers else model, "activation", None)
    if isinstance(loss_fn, losses.CrossEntropy) and activation == "softmax":
        warnings.warn("CrossEntropy takes logits but the model ends with a softmax, which is "
                      "then applied twice; remove the final Softmax", stacklevel=3)
    if (isinstance(loss_fn, losses.BinaryCrossEntropy) and loss_fn.from_logits
            and activation == "sigmoid"):
        warnings.warn("BinaryCrossEntropy(from_logits=True) takes logits but the model ends "
                      "with a sigmoid; drop the sigmoid or use from_logits=False",
                      stacklevel=3)
