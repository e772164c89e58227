"""Callbacks: hooks that ``fit`` calls around training, each epoch and each batch.

Ready-made: ``EarlyStopping``, ``ModelCheckpoint``, ``LearningRateScheduler``,
``CSVLogger`` and ``TensorBoard``. Write your own by subclassing ``Callback`` and overriding the hooks you
need::

    class PrintLR(fastnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(epoch, logs["lr"])
"""

from __future__ import annotations

import inspect
import math
import os
import string
import warnings
from typing import Any, Callable

import numpy as np

from ._checks import flag, non_negative, number

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

_HIGHER_IS_BETTER = ("accuracy", "acc", "precision", "recall", "f1")


class Callback:
    """Base class; override the hooks you need.

    ``self.model`` is the model being trained (set by ``fit`` before training);
    ``self.model.history`` is the ``History`` that ``fit`` fills (the epoch's entries are
    in it when ``on_epoch_end`` runs, per-layer diagnostics included). Epoch
    ``logs`` hold the epoch's metrics: loss, the compiled metrics (accuracy, ...), their
    ``val_`` versions when there is validation data, and lr, the learning rate used.
    Setting ``self.model.stop_training = True`` ends training after the current epoch.
    Epochs and batches are counted from 0.
    """

    model: Any = None

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Called once after the last epoch, with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called before each epoch."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called after each epoch, validation included, with its metrics."""

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Called after each training batch's update with {"batch", "size", "loss"}: the
        batch's index, its number of samples and its loss (penalties included)."""


def _optimizer(model: Any) -> Any:
    compiled = getattr(model, "compiled", None)
    if compiled is None:
        raise RuntimeError("this callback needs a compiled model: call model.compile(...) first")
    return compiled.optimizer


class _Monitoring(Callback):
    """Shared by the callbacks that watch one metric and keep its best value."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'; got {mode!r}")
        min_delta = non_negative(min_delta, f"{type(self).__name__}: min_delta")
        if not isinstance(monitor, str):
            raise TypeError(f"{type(self).__name__}: monitor must be a logged name such as "
                            f"'val_loss'; got {type(monitor).__name__} {monitor!r:.60}")
        self.monitor = monitor
        if mode == "auto":
            mode = "max" if monitor.endswith(_HIGHER_IS_BETTER) else "min"
        self.mode = mode
        self.min_delta = min_delta
        self.best: float | None = None

    def _value(self, logs: dict[str, float] | None) -> float | None:
        """The monitored value in ``logs``, or None (with a warning) when it is missing."""
        if not logs or self.monitor not in logs:
            warnings.warn(f"{type(self).__name__}: the monitored metric {self.monitor!r} is "
                          f"not in the logs (available: {sorted(logs or {})}); pass "
                          "validation data or choose another monitor", RuntimeWarning,
                          stacklevel=3)
            return None
        return float(logs[self.monitor])

    def _improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than min_delta (NaN never does)."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitoring):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs in a row
    (as Keras, 0 behaves like 1: stop at the first epoch without improvement).

    An improvement must beat the best value by more than ``min_delta``. mode: "min",
    "max", or "auto" (max for accuracy, precision, recall and F1, min otherwise).
    restore_best_weights=True puts the weights of the best epoch back at the end of
    training, whether or not training was stopped early. After training,
    ``best``, ``best_epoch`` and ``stopped_epoch`` (None if it never triggered) tell what
    happened.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        super().__init__(monitor, mode, min_delta)
        # NumPy integers too, as ReduceLROnPlateau takes them
        if isinstance(patience, (bool, np.bool_)) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0; got {patience!r}")
        self.patience = int(patience)
        self.restore_best_weights = flag(restore_best_weights, "EarlyStopping: restore_best_weights")
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_weights: dict | None = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.best = self.best_epoch = self.stopped_epoch = self._best_weights = None
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = self._value(logs)
        if value is None:
            return
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)


class ModelCheckpoint(_Monitoring):
    """Save the model (``fastnn.io.save``, safetensors) after an epoch.

    save_best_only=True saves only when ``monitor`` improves (mode as in
    ``EarlyStopping``); False saves after every epoch. ``path`` may contain ``{epoch}``
    (counted from 1) and log keys, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``.
    include_optimizer=True also stores the optimizer's state and the fit's, to resume
    training (``fastnn.load`` then ``fit`` continues where the checkpoint was written).
    Without safetensors, ``fit`` raises the ImportError saying what to install before
    its first epoch.

    As in Keras, the best value is kept across ``fit`` calls. Each file records its
    epoch's logs, and a new ModelCheckpoint whose fixed ``path`` already holds a
    checkpoint starts from the value recorded there, so a resumed run never replaces a
    better model with a worse one. Every write is crash-safe (``fastnn.io.write_atomic``).
    """

    def __init__(self, path: str | Path, monitor: str = "val_loss", save_best_only: bool = True,
                 mode: str = "auto", include_optimizer: bool = False) -> None:
        super().__init__(monitor, mode, 0.0)
        self.path = os.path.expanduser(path)  # "~" the home folder, as io.save reads it
        try:  # a malformed pattern fails here, not after the first epoch's training
            list(string.Formatter().parse(self.path))
        except ValueError as err:
            raise ValueError(f"ModelCheckpoint: path {self.path!r} is not a valid pattern "
                             f"({err}); write a literal brace as {{{{ or }}}}") from None
        self.save_best_only = flag(save_best_only, "ModelCheckpoint: save_best_only")
        self.include_optimizer = flag(include_optimizer, "ModelCheckpoint: include_optimizer")

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Check that models can be saved (ImportError without safetensors, before the
        first epoch rather than after it) and read the best value of an existing file."""
        import os

        from . import io

        io._safetensors()
        if not self.save_best_only or self.best is not None or "{" in self.path \
                or not os.path.exists(self.path):
            return
        try:
            saved = io.read_logs(self.path)
        except (io.InvalidFileError, OSError) as err:
            warnings.warn(f"ModelCheckpoint: cannot read the existing {self.path} ({err}); "
                          "the first improvement will replace it", RuntimeWarning, stacklevel=3)
            return
        value = (saved or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"ModelCheckpoint: {self.path} records no {self.monitor!r}; the "
                          "first epoch will replace it", RuntimeWarning, stacklevel=3)
        elif self._improves(value):  # NaN or infinite: any finite value beats it
            self.best = value

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.save_best_only:
            value = self._value(logs)
            if value is None or not self._improves(value):
                return
            self.best = value
        from . import io

        fields = {"epoch": epoch + 1, **(logs or {})}
        try:
            path = self.path.format(**fields)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"ModelCheckpoint: path {self.path!r} cannot be filled from this "
                             f"epoch's logs ({type(err).__name__}: {err}); it may name "
                             f"{', '.join(fields)}") from None
        io.save(self.model, path, include_optimizer=self.include_optimizer, logs=logs)


def _takes_lr(schedule: Callable) -> bool:
    """Whether the schedule function ``schedule`` takes (epoch, lr), as Keras's do, rather
    than the epoch alone; TypeError when it takes neither."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):  # a builtin that does not say: called with the epoch
        return False
    for arguments in ((0, 0.1), (0,)):
        try:
            signature.bind(*arguments)
            return len(arguments) == 2
        except TypeError:
            continue
    raise TypeError(f"LearningRateScheduler: schedule {schedule!r:.60} must take the epoch "
                    f"(epoch -> lr) or the epoch and the current rate ((epoch, lr) -> lr); "
                    f"its signature is {signature}")


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate each epoch.

    schedule: a scheduler of ``fastnn.schedulers`` (StepLR, ExponentialLR, CosineLR,
    ReduceLROnPlateau: bound to the optimizer when training begins, told each epoch's
    logs at its end, when it sets the next epoch's rate), or a function
    ``epoch -> lr`` called before each epoch (epochs from 0), or, as Keras's, a function
    ``(epoch, lr) -> lr`` that also gets the current rate. ``fit`` also accepts a
    scheduler directly in ``callbacks``. The rate of each epoch is in the History as "lr".
    """

    def __init__(self, schedule: Any | Callable[[int], float] | Callable[[int, float], float]
                 ) -> None:
        if isinstance(schedule, type):  # a scheduler class: its bind would miss its self
            raise TypeError(f"LearningRateScheduler: schedule is the class {schedule.__name__}, "
                            f"not a scheduler: create one, {schedule.__name__}(...)")
        self._is_scheduler = hasattr(schedule, "bind") and hasattr(schedule, "on_epoch_end")
        if not (self._is_scheduler or callable(schedule)):
            raise TypeError("LearningRateScheduler: schedule must be a fastnn.schedulers "
                            f"scheduler or a function epoch -> lr; got {type(schedule).__name__}")
        self.schedule = schedule
        self._takes_lr = not self._is_scheduler and _takes_lr(schedule)

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self._first = True
        if self._is_scheduler:
            self.schedule.bind(_optimizer(self.model))

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self._is_scheduler:
            # a fit resumed from a checkpoint (a scheduler of one's own may not know how)
            if self._first and epoch > 0 and hasattr(self.schedule, "continue_at"):
                self.schedule.continue_at(epoch)
            self._first = False
            return
        optimizer = _optimizer(self.model)
        given = self.schedule(epoch, optimizer.lr) if self._takes_lr else self.schedule(epoch)
        # None (a missing return) or a string: float() had named no callback
        lr = number(given, f"LearningRateScheduler: the schedule's learning rate for epoch {epoch}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"LearningRateScheduler: the schedule gave lr={lr} for epoch "
                             f"{epoch}; it must be a finite number > 0")
        optimizer.lr = lr

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self._is_scheduler:
            self.schedule.on_epoch_end(epoch, logs)


class CSVLogger(Callback):
    """Write one row per epoch (epoch counted from 0, then the logs) to a CSV file.

    The columns are fixed by the first epoch's logs. append=True adds to an existing file
    under its own header's columns (a value the file has no column for is left out, with a
    warning; a column this run does not log stays empty), the header written only if the
    file is empty; otherwise the file is overwritten when training begins. Each row is
    flushed as it is written.
    """

    def __init__(self, path: str | Path, separator: str = ",", append: bool = False) -> None:
        from pathlib import Path  # here, not at the top: pathlib is a costly import

        self.path = Path(path).expanduser()
        if not (isinstance(separator, str) and len(separator) == 1):  # what the csv module takes
            raise ValueError(f"CSVLogger: separator must be one character; got {separator!r:.60}")
        self.separator = separator
        self.append = flag(append, "CSVLogger: append")
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self._keys = None
        if not self.append:
            self.path.write_text("")

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        import csv

        logs = logs or {}
        if self._keys is None and self.append and self.path.exists():
            with self.path.open(newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            if header:  # the file's columns, not this run's (its rows went under wrong ones)
                self._keys = header[1:]
                left_out = [key for key in logs if key not in self._keys]
                if left_out:
                    warnings.warn(f"CSVLogger: {self.path} has no column for "
                                  f"{', '.join(left_out)}; not written", RuntimeWarning,
                                  stacklevel=2)
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if f.tell() and not self._ends_a_line():  # a file cut short, or written by hand
                f.write(writer.dialect.lineterminator)
            if self._keys is None:
                self._keys = list(logs)
                if f.tell() == 0:
                    writer.writerow(["epoch", *self._keys])
            writer.writerow([epoch, *(logs.get(key, "") for key in self._keys)])


    def _ends_a_line(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) in (b"\n", b"\r")


class TensorBoard(Callback):
    """Write TensorBoard event files to ``log_dir`` (``tensorboard --logdir LOG_DIR`` shows
    them), one step per epoch (counted from 0):

    - scalars: every entry of the epoch's logs under its name (loss, the metrics, their
      ``val_`` versions, lr);
    - histograms (``histograms=True``): each parameter's values, ``weights/<name>``, and
      the gradient of the epoch's last batch, ``gradients/<name>``, named as in
      ``named_parameters`` ("0.weight", "0.bias", ...);
    - with ``fit(..., diagnostics=True)``: the per-layer gradient-flow numbers of
      ``fastnn.diagnostics`` (grad_norm, weight_norm, update_ratio, dead_fraction or
      saturated_fraction) as scalars ``diagnostics/<layer>/<metric>``, the layer named as in
      ``history.diagnostics`` with "_" for ":" (TensorBoard's tags have no colon:
      "diagnostics/0_Dense/grad_norm").

    Needs tensorboardX (``pip install "fastnn-learn[tensorboard]"``); ``fit`` raises the
    ImportError before its first epoch. Under ``fit(distributed=True)`` only rank 0 writes.
    """

    def __init__(self, log_dir: str | Path, histograms: bool = True) -> None:
        self.log_dir = os.path.expanduser(log_dir)
        self.histograms = flag(histograms, "TensorBoard: histograms")
        self._writer: Any = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError("the TensorBoard callback needs tensorboardX: pip install "
                              "tensorboardX (or the extra: pip install \"fastnn-learn[tensorboard]\")"
                              ) from err
        self._writer = SummaryWriter(self.log_dir)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        from . import memory

        writer = self._writer
        for key, value in (logs or {}).items():
            writer.add_scalar(key, float(value), epoch)
        if self.histograms:
            for name, p in self.model.named_parameters():
                writer.add_histogram(f"weights/{name}", memory.to_host(p.data), epoch)
                writer.add_histogram(f"gradients/{name}", memory.to_host(p.last_grad), epoch)
        history = getattr(self.model, "history", None)
        for layer, series in (history.diagnostics if history is not None else {}).items():
            for metric, values in series.items():
                writer.add_scalar(f"diagnostics/{layer.replace(':', '_')}/{metric}",
                                  float(values[-1]), epoch)
        writer.flush()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
