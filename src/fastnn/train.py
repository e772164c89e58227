"""The training loop: compile, fit, evaluate, predict and save (the methods of Sequential),
the History, and the progress display."""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import _C, data, diagnostics as _diagnostics, losses, memory, metrics as _metrics, optim
from . import precision as _precision
from ._checks import as_float32, deferred_interrupt, flag, numeric, positive_int
from ._device import check_device, check_on_device
from ._random import check_seed, is_seed_object, resolve
from .callbacks import Callback, LearningRateScheduler
from .nn.module import check_parameters_reachable, kept_recording, run_lock
from .nn.module import switched_mode
from .nn.sequential import Sequential

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

_ACCURACY = ("accuracy", "acc")
_DEFAULT_METRICS = ("accuracy",)  # compile's default: not warned about when undefined
_REFRESH_SECONDS = 0.2  # how often the progress display redraws its numbers
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class _LossAccuracy(_metrics.Metric):
    """Accuracy as the loss defines it (``Loss.count_correct``): argmax agreement for
    CrossEntropy, a threshold at 0 (logits) or 0.5 (probabilities) for binary
    cross-entropy, argmax agreement for MSE on (n, k > 1) targets or a threshold at 0.5
    for one output and 0/1 targets; undefined otherwise, which a MetricWarning says once
    when the accuracy was asked for (``requested``)."""

    name = "accuracy"

    def __init__(self, loss: losses.Loss, requested: bool = True) -> None:
        self.loss = loss
        self.requested = requested
        self.reset()

    def reset(self) -> None:
        self._correct, self._count, self._defined = 0, 0, True

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        counts = self.loss.count_correct(y_pred, y_true) if self._defined else None
        if counts is None:
            if self._defined and self.requested:
                self.requested = False  # once
                warnings.warn(
                    f"metrics: 'accuracy' is not defined for {self.loss!r} with targets of "
                    f"shape {np.shape(y_true)} (for MSE: one-hot rows, or 0/1 targets for one "
                    "output), so it is left out of the logs", _metrics.MetricWarning,
                    stacklevel=5)  # update < _Tally.add < _evaluate/_train_epoch < fit/evaluate
            self._defined = False
        else:
            self._correct += counts[0]
            self._count += counts[1]

    def result(self) -> float | None:
        return self._correct / self._count if self._defined and self._count else None

    def state(self) -> tuple[int, int, bool]:
        return self._correct, self._count, self._defined

    def merge(self, states: Sequence[tuple[int, int, bool]]) -> None:
        self._correct, self._count = (sum(s[i] for s in states) for i in (0, 1))
        self._defined = all(s[2] for s in states)


@dataclass
class RunState:
    """Where a ``fit`` stood after its last completed epoch: what a checkpoint with
    ``include_optimizer=True`` keeps so that training resumes exactly (see ``fit``)."""
    seed: int | None      # fit's int seed; None: it drew from fastnn.seed's generator
    epochs: int           # the epochs that fit was asked for
    epoch: int            # the epochs it completed
    split_state: dict     # its generator's state when it began (the validation split)
    shuffle_state: dict   # its generator's state after the last completed epoch
    augment: tuple[int, int] | None  # its Augment's (seed, offset)

    def to_json(self) -> dict:
        return {"seed": self.seed, "epochs": self.epochs, "epoch": self.epoch,
                "split_state": self.split_state, "shuffle_state": self.shuffle_state,
                "augment": None if self.augment is None else list(self.augment)}

    @classmethod
    def from_json(cls, value: Any) -> RunState:
        """The state ``to_json`` gave; ValueError unless it is one."""
        def integer(v: Any, low: int = 0) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        ok = (isinstance(value, dict) and set(value) == {"seed", "epochs", "epoch",
                                                         "split_state", "shuffle_state",
                                                         "augment"}
              and (value["seed"] is None or integer(value["seed"]))
              and integer(value["epochs"], 1) and integer(value["epoch"], 1)
              and (value["augment"] is None
                   or (isinstance(value["augment"], list) and len(value["augment"]) == 2
                       and all(integer(v) for v in value["augment"]))))
        if not ok:
            raise ValueError(f"invalid fit state {value!r:.300}")
        for key in ("split_state", "shuffle_state"):
            _generator(value[key])  # raises ValueError unless it is a PCG64 state
        augment = value["augment"]
        return cls(value["seed"], value["epochs"], value["epoch"], value["split_state"],
                   value["shuffle_state"], None if augment is None else tuple(augment))


def _generator(state: Any) -> np.random.Generator:
    """A NumPy Generator (PCG64, as ``default_rng``) in the saved ``state``."""
    bits = np.random.PCG64()
    try:
        if not (isinstance(state, dict) and state.get("bit_generator") == "PCG64"):
            raise ValueError("not a PCG64 state")
        bits.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise ValueError(f"invalid generator state {state!r:.200}: {err}") from None
    return np.random.Generator(bits)


@dataclass
class Compiled:
    """What ``compile`` set on a model, as ``model.compiled`` (None before compile): the
    loss, the optimizer bound to the model's parameters, the metrics and their names as
    given, and the run state that ``save`` writes and a loaded checkpoint resumes."""

    loss: losses.Loss
    optimizer: optim.Optimizer
    metrics: list[_metrics.Metric]
    metric_names: list[str | _metrics.Metric]
    run: dict | None = None  # RunState.to_json() of the last fit's last epoch, for save
    resume: RunState | None = None  # a loaded checkpoint's, for the next fit
    precision: str = "fp32"  # of the layers' GEMMs in fit, evaluate and predict
    # an epoch under way (or broken off): the weights are past ``run``'s position, which
    # save(include_optimizer=True) then leaves out
    mid_epoch: bool = False
    # (samples, fraction) and the generator its validation split was drawn from (_kept_split)
    held_out: tuple | None = None


class History:
    """What ``fit`` returns.

    ``history`` maps each logged quantity (loss, the compiled metrics, their ``val_``
    versions, and lr, the learning rate of the epoch) to its per-epoch values; ``epoch``
    lists the epochs run (from 0). With ``fit(..., diagnostics=True)``,
    ``diagnostics[layer][metric]`` holds the per-layer values of ``fastnn.diagnostics``
    (grad_norm, weight_norm, update_ratio, dead_fraction or saturated_fraction) per epoch.
    ``stop_reason`` is the warning ``fit`` gave when it stopped on a non-finite loss or
    parameter (None otherwise).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.diagnostics: dict[str, dict[str, list[float]]] = {}
        self.stop_reason: str | None = None

    def record(self, epoch: int, logs: dict[str, float],
               layers: dict[str, dict[str, float]] | None = None) -> None:
        """Append one epoch's logs (and per-layer diagnostics)."""
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        for layer, values in (layers or {}).items():
            series = self.diagnostics.setdefault(layer, {})
            for key, value in values.items():
                series.setdefault(key, []).append(value)

    def plot(self, path: str | None = None, title: str = "") -> Any:
        """The loss and accuracy curves (training and validation) as a matplotlib Figure,
        saved as a PNG at ``path`` (``fig.path``) unless None (``fastnn.plot.training_curves``;
        needs matplotlib)."""
        from .plot import training_curves
        return training_curves(self, path, title)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, metrics={list(self.history)})"


def compile(model: Any, loss: str | losses.Loss, optimizer: str | optim.Optimizer = "adam",
            metrics: Sequence[str | _metrics.Metric] | None = _DEFAULT_METRICS,
            precision: str = "fp32") -> None:
    """Choose the loss, the optimizer (bound to ``model.parameters()``) and the metrics.

    loss: a name ("cross_entropy", "binary_cross_entropy"/"bce", "mse", ...) or a Loss.
    optimizer: a name ("sgd", "momentum", "nesterov", "adam", ...; default settings) or
    an Optimizer. metrics: names among "accuracy" (as the loss defines it),
    "top_k_accuracy" (k = 5) or "top_<k>_accuracy", "precision", "recall", "f1" (macro;
    binary scores count as class 1 above 0 for logits, 0.5 otherwise), or
    ``fastnn.metrics.Metric`` objects. The loss is always reported, and ``fit`` and
    ``evaluate`` report every metric; an accuracy asked for that the loss cannot define
    for the targets (MSE on regression targets) is left out with a MetricWarning (quietly
    for the default metrics). precision: "fp32" (default) or "bf16", the arithmetic of the
    layers' matrix products in ``fit``, ``evaluate`` and ``predict`` (``fastnn.precision``:
    bf16 products accumulated in float32, float32 weights, gradients and optimizer state).
    """
    precision = _precision.check(precision)
    if precision == "bf16":
        _precision.warn_if_emulated("compile", stacklevel=3)
    loss_fn = losses.get(loss)
    check_parameters_reachable(model, "compile")
    params = model.parameters()
    if isinstance(optimizer, optim.Optimizer) and optimizer.params and not (
            {id(p) for p in optimizer.params} & {id(p) for p in params}):
        # bound to another model (a manual loop's SGD(A.parameters()) reused): binding it here
        # had left that model's loop stepping nothing, silently
        raise ValueError(f"compile: the optimizer given ({type(optimizer).__name__}) is bound to "
                         "another model's parameters; give this model one of its own "
                         f"(optim.{type(optimizer).__name__}(lr=...)) or a name ('sgd', 'adam')")
    opt = optim.get(optimizer).bind(params)
    names = [metrics] if isinstance(metrics, (str, _metrics.Metric)) else list(metrics or ())
    if _warn_on_output_activation(model, loss_fn):
        loss_fn.skip_first_input_check()  # said once, here; the loss need not say it again
    resolved = _resolve_metrics(names, loss_fn, requested=metrics is not _DEFAULT_METRICS)
    model.compiled = Compiled(loss_fn, opt, resolved, names, precision=precision)


def _resolve_metrics(names: list[str | _metrics.Metric], loss_fn: losses.Loss,
                     requested: bool = True) -> list[_metrics.Metric]:
    threshold = 0.0 if getattr(loss_fn, "from_logits", False) else 0.5
    resolved = []
    for name in names:
        if isinstance(name, str) and name.lower() in _ACCURACY:
            resolved.append(_LossAccuracy(loss_fn, requested))
        else:
            resolved.append(_metrics.get(name, threshold=threshold))
        metric_name = getattr(resolved[-1], "name", "")
        # a metric under a key fit logs itself replaced it: history["loss"] showed the metric
        if metric_name in ("loss", "lr") or str(metric_name).startswith("val_"):
            raise ValueError(f"metrics: {resolved[-1]!r:.80} is named {metric_name!r}, a key fit "
                             "logs itself (loss, lr, val_*); give it another name")
    return resolved


def fit(model: Any, X: np.ndarray, y: np.ndarray, *, epochs: int = 1,
        batch_size: int | None = 32, shuffle: bool = True, validation_split: float = 0.0,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None, verbose: int = 1,
        seed: int | np.random.Generator | None = None,
        callbacks: Sequence[Callback | Any] | None = None,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
        diagnostics: bool = False, distributed: bool = False,
        precision: str | None = None, device: str | None = None) -> History:
    """Train for ``epochs`` passes over (X, y) and return the History.

    batch_size: None for full-batch gradient descent, 1 for stochastic, n for mini-batches.
    validation_split: a fraction of (X, y) held out for validation, drawn at random and,
    for class labels (1-D integer y), stratified so that every class keeps its share
    (Keras instead takes the last rows, unshuffled); or validation_data=(X_val, y_val).
    seed: makes the split and the shuffling reproducible (an int, a NumPy Generator, whose
    stream continues across calls, or None for the global generator of ``fastnn.seed``).

    Resuming: a model saved with ``include_optimizer=True`` at an epoch's end or after a fit
    (by ``ModelCheckpoint``, say; mid-epoch, the save warns and leaves the run's position
    out) and loaded with ``fastnn.load`` continues that fit at its
    next fit called with seed=None or the same int seed: the same validation split, the
    shuffling and the ``Augment`` stream where they stopped and, if ``epochs`` is the
    same and the saved fit had not finished, only the epochs it had not done (numbered
    on from there). The result equals an uninterrupted fit bit for bit. A scheduler of
    ``fastnn.schedulers`` is not saved: passed again, it goes on from the saved lr with the
    uninterrupted run's rates (to rounding; ReduceLROnPlateau counts its epochs without
    improvement anew, as EarlyStopping, whose state is not saved either). Pass a Generator
    or another seed to start a new stream instead.

    verbose: 0 silent, 1 a progress bar per epoch (tqdm when installed, else a line
    redrawn in place; one plain line per epoch when stdout is not a terminal or a
    notebook) with the loss, the metrics and samples/s, 2 one line per epoch.
    callbacks: ``fastnn.callbacks.Callback`` objects, or ``fastnn.schedulers`` schedulers
    (wrapped in a ``LearningRateScheduler``). augment: a function applied to every
    training batch's inputs, e.g. ``fastnn.data.Augment``; it must keep the batch's shape.
    diagnostics=True records per-layer gradient statistics in ``history.diagnostics``
    and warns when gradients vanish, explode or turn NaN, or ReLU units die (see
    ``fastnn.diagnostics``). X (or validation_data's) that looks like raw 0-255 pixel
    values gives a DataWarning.

    The loss reported includes the layers' L1/L2 penalties. Training stops early when a
    callback sets ``model.stop_training``, and after an epoch whose loss or parameters are
    no longer finite (NaN/Inf): a RuntimeWarning then names the first such parameter and
    its layer, and ``history.stop_reason`` keeps the message; the callbacks' ``on_epoch_end``
    is not called for that epoch, so no checkpoint saves the broken model. The parameters are
    checked once per epoch (one reduction over each), so they can be non-finite for up to an
    epoch before training stops.

    distributed=True trains data-parallel over the processes of ``mpirun -np N`` (see
    ``fastnn.distributed``; a world of one outside mpirun): every rank starts from rank 0's
    weights and optimizer state, ``batch_size`` is per rank (a step's global batch is
    batch_size x N samples of one shared permutation, each rank training on its share),
    the gradients are averaged with one all-reduce per step and every rank takes the same
    step. The logs are reduced across ranks (the metrics exactly where they define
    ``Metric.merge``, as the built-in ones do); only rank 0 shows progress and runs the
    callbacks that write files (ModelCheckpoint, CSVLogger); each rank evaluates its share
    of the validation set. Dropout and ``Augment`` draw from per-rank streams.

    precision: "fp32" or "bf16", the layers' matrix products in this fit (default: the
    compiled precision; see ``fastnn.precision``).

    device: "cpu", "cuda" or "cuda:N" (the CUDA build): ``model.to(device)`` first, and the
    model stays there, as after torch's ``model.to``; None trains where the model is. On a
    GPU, X and y (checked once) are copied there and every batch is gathered there; a
    batch's indices go over and its loss (and, for the metrics, its predictions) come back
    each step. What cannot run there yet (a model with a recorded forward, diagnostics=True,
    distributed=True, a loss of your own) is named by a NotImplementedError.
    """
    cfg = _require_compiled(model, "fit")
    shuffle = flag(shuffle, "fit: shuffle")
    diagnostics = flag(diagnostics, "fit: diagnostics")
    distributed = flag(distributed, "fit: distributed")
    _check_bound_parameters(model, cfg)
    if device is not None:  # checked here, so that its errors name fit's argument, not model.to
        model.to(check_device(device, "fit: device"))
    on_device = _device_like(model)
    gemm_precision = cfg.precision if precision is None else _precision.check(precision)
    if on_device is not None:
        _check_device_run(model, cfg, "fit", diagnostics=diagnostics, distributed=distributed)
        _refuse_bf16_on_device(on_device, gemm_precision, "fit",
                               "compile" if precision is None else "argument")
    if gemm_precision == "bf16":
        _precision.warn_if_emulated("fit", stacklevel=3)
    X, y = _check_data(model, X, y, "X", "y")
    _whole_targets(model, cfg.loss, X, y, "fit: y")
    _diagnostics.check_input_scale(X, "X", stacklevel=2)
    epochs = positive_int(epochs, "epochs")
    if batch_size is not None:
        positive_int(batch_size, "batch_size")
    if (isinstance(validation_split, (bool, str, bytes))
            or not isinstance(validation_split, (int, float, np.integer, np.floating))):
        raise TypeError(f"validation_split must be a number in [0, 1); got "
                        f"{type(validation_split).__name__} {validation_split!r:.100}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split}")
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (one line per "
                         f"epoch); got {verbose!r}")
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a function of a batch (e.g. fastnn.data.Augment); "
                        f"got {type(augment).__name__}")
    callbacks = _check_callbacks(callbacks)
    split_rng, rng, start, undo_start = _start(cfg, seed, epochs, augment)
    if validation_split and validation_data is None:
        split_rng = _kept_split(cfg, len(X), validation_split, split_rng,
                                reuse=not isinstance(seed, (int, np.integer)))
    history, previous_history = History(), getattr(model, "history", None)
    try:
        sync, X, y, X_val, y_val, split_state = _prepare(
            model, cfg, X, y, batch_size, validation_split, validation_data, callbacks, augment,
            distributed, shuffle, epochs, start, split_rng, rng)
        callbacks = sync.callbacks(callbacks) if sync is not None else callbacks

        monitor = _diagnostics.Monitor(model) if diagnostics else None
        # the training set on the model's device, copied once (None: on the host)
        X_device = memory.asarray(X, like=on_device) if on_device is not None else None
        targets = (_whole_targets(model, cfg.loss, X, y, "fit: y") if on_device is not None
                   else None)
        y_device = memory.asarray(targets, like=on_device) if targets is not None else None
        progress = _Progress(verbose if sync is None else sync.verbose(verbose), epochs)
        model.history = history  # as Keras's: callbacks read it (diagnostics)
        for cb in callbacks:
            cb.set_model(model)
        model.stop_training = False
        logs: dict[str, float] = {}
        with switched_mode(model, training=True), _precision.using(gemm_precision), \
                _fit_metrics(cfg) as metrics:
            cfg.optimizer.zero_grad()
            for cb in callbacks:
                cb.on_train_begin()
            zero_lr_told = False
            for epoch in range(start, epochs):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch)
                if epoch > start:  # the last epoch's on_epoch_end, this one's begin
                    _check_bound_parameters(model, cfg, epoch - 1)
                lr = cfg.optimizer.lr
                if lr == 0 and epoch == start:  # a schedule annealed it in an earlier fit
                    warnings.warn("fit: the optimizer's learning rate is 0 (a schedule "
                                  "annealed it to 0 in an earlier fit), so the weights will not "
                                  "change; set it first: model.compiled.optimizer.lr = 0.01",
                                  UserWarning, stacklevel=2)
                elif lr == 0 and epoch < epochs - 1 and not zero_lr_told:  # a schedule ended early
                    zero_lr_told = True  # (CosineLR(total_epochs=4) in fit(epochs=8): 4 at 0)
                    warnings.warn(f"fit: a schedule set the learning rate to 0 for epoch "
                                  f"{epoch + 1} of {epochs}, so the weights stop changing; match "
                                  "its length (total_epochs) to epochs", UserWarning, stacklevel=2)
                if monitor is not None:
                    monitor.begin_epoch(epoch)
                progress.begin_epoch(epoch, len(X) if sync is None
                                     else sync.share(len(X), batch_size))
                logs = _train_epoch(model, cfg, metrics, X, y, batch_size,
                                    rng if shuffle else None, augment, monitor, progress,
                                    callbacks, sync, X_device, y_device)
                _check_bound_parameters(model, cfg, epoch)  # its batches' callbacks
                if sync is not None:
                    sync.end_epoch()
                if X_val is not None:
                    val = _evaluate(model, cfg, X_val, y_val, metrics, sync=sync)
                    logs.update({f"val_{key}": value for key, value in val.items()})
                logs["lr"] = lr
                layers, messages = monitor.end_epoch() if monitor is not None else (None, [])
                history.record(epoch, logs, layers)
                progress.end_epoch(logs)
                _diagnostics.emit(messages)
                history.stop_reason = _nonfinite(model, logs["loss"], epoch)
                if sync is not None:
                    history.stop_reason = sync.stop_reason(history.stop_reason)
                if history.stop_reason is not None:
                    # No on_epoch_end: a checkpoint must not replace a good model with this.
                    warnings.warn(history.stop_reason, RuntimeWarning, stacklevel=2)
                    break
                if seed is None or isinstance(seed, (int, np.integer)):  # else: not resumable
                    stream = ((augment.seed, augment.offset)
                              if isinstance(augment, data.Augment) else None)
                    cfg.run = RunState(None if seed is None else int(seed), epochs, epoch + 1,
                                       split_state, rng.bit_generator.state, stream).to_json()
                cfg.mid_epoch = False
                # the schedulers first: a checkpoint written at this epoch's end then holds
                # the next epoch's rate, whichever the callbacks' order (a resumed fit reads it)
                for cb in sorted(callbacks,
                                 key=lambda c: not isinstance(c, LearningRateScheduler)):
                    cb.on_epoch_end(epoch, logs)
                if model.stop_training:
                    break
            for cb in callbacks:
                cb.on_train_end(logs)
        return history
    except BaseException:
        # a failure before the first batch's forward (a callback's on_train_begin, a Ctrl-C)
        # leaves the resume state for the corrected call: it had been consumed, and the next
        # fit started over from epoch 0
        if not (cfg.mid_epoch or history.epoch):
            undo_start()
            model.history = previous_history  # a call that never trained replaces nothing
        raise


def _prepare(model: Any, cfg: Compiled, X: np.ndarray, y: np.ndarray, batch_size: int | None,
             validation_split: float, validation_data: Any, callbacks: list, augment: Any,
             distributed: bool, shuffle: bool, epochs: int, start: int,
             split_rng: np.random.Generator, rng: np.random.Generator) -> tuple:
    """fit's checks and set-up after its start (``_start``): the distributed run's sync (or
    None), the training and validation sets, and the split generator's state."""
    sync = None
    if distributed:
        from .distributed import FitSync

        sync = FitSync(model, cfg.optimizer, [split_rng, rng], augment,
                       {"samples": len(X), "batch_size": batch_size, "epochs": epochs,
                        "initial epoch": start, "shuffle": bool(shuffle),
                        "validation_split": validation_split})
    split_state = split_rng.bit_generator.state
    X_val = y_val = None
    if validation_data is not None:
        if validation_split:
            raise ValueError("pass validation_split or validation_data, not both")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        X_val, y_val = _check_data(model, *validation_data, "validation_data[0]",
                                   "validation_data[1]")
        _whole_targets(model, cfg.loss, X_val, y_val, "fit: validation_data[1]")
        _diagnostics.check_input_scale(X_val, "validation_data[0]", stacklevel=3)
    elif validation_split:
        try:
            X, y, X_val, y_val = data.train_val_split(X, y, validation_split, seed=split_rng)
        except ValueError as err:  # it names its own argument, val_fraction
            if "leaves an empty" not in str(err):
                raise
            raise ValueError(f"fit: validation_split={validation_split} of {len(X)} samples "
                             "leaves an empty training or validation set; use a fraction "
                             "that leaves a sample in each, or none") from err
    if sync is None:
        _check_last_batch(model, tuple(np.shape(X))[1:], len(X), batch_size)
    if X_val is None:
        _check_validation_keys(callbacks)
    return sync, X, y, X_val, y_val, split_state


def _kept_split(cfg: Compiled, n: int, fraction: float, split_rng: np.random.Generator,
                reuse: bool) -> np.random.Generator:
    """The generator of fit's validation split. ``reuse`` (no int seed fixes the split):
    the one the model's last fit with a split drew from, for a fit on as many samples with
    the same fraction. A seed of None (or a Generator) drew a new split at every call, so
    that a fit continuing the training trained on the samples the last one held out, and
    judged its val_* logs, early stopping and best checkpoints on data it had learnt. An
    int seed draws its own split, which later fits without one then keep. (The split is of
    positions: the same samples where X is the same.)"""
    key = (n, float(fraction))
    if reuse and cfg.held_out is not None and cfg.held_out[0] == key:
        return copy.deepcopy(cfg.held_out[1])
    cfg.held_out = (key, copy.deepcopy(split_rng))  # any bit generator, as it stood
    return split_rng


def _start(cfg: Compiled, seed: int | np.random.Generator | None, epochs: int,
           augment: Any) -> tuple[np.random.Generator, np.random.Generator, int, Callable[[], None]]:
    """The generators of fit's validation split and shuffling, its first epoch (a loaded
    checkpoint's fit resumed, see ``fit``, or a new one), and what undoes the start, for a
    fit that fails before its first batch (see ``fit``)."""
    if seed is not None and not is_seed_object(seed):
        check_seed(seed, "fit: seed")
    saved, run, mid_epoch = cfg.resume, cfg.run, cfg.mid_epoch
    stream = (augment.seed, augment.offset) if isinstance(augment, data.Augment) else None
    lr = cfg.optimizer.lr  # a scheduler's on_train_begin sets its first epoch's

    def undo() -> None:
        cfg.resume, cfg.run, cfg.mid_epoch = saved, run, mid_epoch
        cfg.optimizer.lr = lr
        if stream is not None:
            augment.seed, augment.offset = stream

    # mid_epoch: set again at this fit's first batch, which ends what undo may undo
    cfg.resume, cfg.run, cfg.mid_epoch = None, None, False
    if (saved is None or isinstance(seed, np.random.Generator)
            or (seed is not None and seed != saved.seed)):
        rng = resolve(seed)
        return rng, rng, 0, undo
    if isinstance(augment, data.Augment) and saved.augment is not None:
        augment.seed, augment.offset = saved.augment
    start = saved.epoch if saved.epochs == epochs and saved.epoch < epochs else 0
    return _generator(saved.split_state), _generator(saved.shuffle_state), start, undo


def evaluate(model: Any, X: np.ndarray, y: np.ndarray, *, batch_size: int = 256,
             metrics: Sequence[str | _metrics.Metric] | None = None) -> dict[str, float]:
    """The mean loss (penalties included) and the metrics over (X, y), in evaluation mode.
    metrics: names or Metric objects as in ``compile`` (default: the compiled ones). X that
    looks like raw 0-255 pixel values gives a DataWarning, as in ``fit``."""
    cfg = _require_compiled(model, "evaluate")
    X, y = _check_data(model, X, y, "X", "y", whole=memory.is_tensor(X))
    _whole_targets(model, cfg.loss, X, y, "evaluate: y")
    _diagnostics.check_input_scale(X, "X", stacklevel=2)  # a test set left unscaled
    positive_int(batch_size, "batch_size")
    # copies of the compiled metrics: fit's epoch counts in those (an evaluate from a
    # callback had reset them mid-epoch, and the epoch's accuracy then counted its set)
    chosen = _metric_copies(cfg.metrics, cfg.loss) if metrics is None else _resolve_metrics(
        [metrics] if isinstance(metrics, (str, _metrics.Metric)) else list(metrics), cfg.loss)
    on_device = _device_like(model)
    if on_device is not None:
        _refuse_bf16_on_device(on_device, cfg.precision, "evaluate", "compile")
    # a forward pass whose backward is still to come keeps its batch (kept_recording),
    # restored inside the run lock: another thread's step may be between the two
    with run_lock(model), _precision.using(cfg.precision), kept_recording(model):
        return _evaluate(model, cfg, X, y, chosen, batch_size)


def predict(model: Any, X: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """The model's outputs for X (logits for a classifier), in evaluation mode (in the
    compiled precision), as a NumPy array wherever the model is."""
    X = _check_inputs(model, X, "X", whole=memory.is_tensor(X))
    size = positive_int(batch_size, "batch_size")
    compiled = getattr(model, "compiled", None)
    precision = compiled.precision if compiled is not None else _precision.current()
    on_device = _device_like(model)
    if on_device is not None:
        _refuse_bf16_on_device(on_device, precision, "predict",
                               "autocast" if compiled is None else "compile")
    # a forward pass whose backward is still to come keeps its batch (kept_recording)
    with run_lock(model), switched_mode(model, training=False), _precision.using(precision), \
            kept_recording(model):
        if on_device is None:
            return np.concatenate([model(_batch_rows(X[i:i + size], "X"))
                                   for i in range(0, len(X), size)])
        return np.concatenate([model(memory.asarray(_batch_rows(X[i:i + size], "X"), like=on_device)).numpy()
                               for i in range(0, len(X), size)])


def save(model: Any, path: str | Path, *, include_optimizer: bool = False) -> Path:
    """Save the model's weights and architecture as safetensors (see ``fastnn.io.save``);
    include_optimizer=True also stores the optimizer's state, to resume training."""
    from . import io

    return io.save(model, path, include_optimizer=include_optimizer)


def _metric_copies(metrics: list[_metrics.Metric], loss: losses.Loss) -> list[_metrics.Metric]:
    """Copies of ``metrics`` to count in, made together (metrics sharing state keep sharing
    it) and sharing the compiled loss they refer to (its last gradient may be a device
    array, which does not copy)."""
    return copy.deepcopy(metrics, {id(loss): loss})


# The fits running on each compiled configuration (by id), and the lock that counts them.
_FITS: dict[int, int] = {}
_FITS_LOCK = threading.Lock()


@contextmanager
def _fit_metrics(cfg: Compiled) -> Iterator[list[_metrics.Metric]]:
    """The metrics a fit counts in: the compiled ones (a metric of one's own keeps seeing
    the live model, the user's reference counts, a warning is given once), or copies where
    another fit already counts in them (one from a callback, another thread's: its batches
    had counted into the running fit's, accuracy 0.29 reported for 1.0)."""
    with _FITS_LOCK:
        running = _FITS.get(id(cfg), 0)
        _FITS[id(cfg)] = running + 1
    try:
        yield _metric_copies(cfg.metrics, cfg.loss) if running else cfg.metrics
    finally:
        with _FITS_LOCK:
            _FITS[id(cfg)] -= 1
            if not _FITS[id(cfg)]:
                del _FITS[id(cfg)]


class _Tally:
    """The sample-weighted mean loss and the metrics over one pass."""

    def __init__(self, metrics: list[_metrics.Metric]) -> None:
        self.metrics = metrics
        for metric in metrics:
            metric.reset()
        self.loss = 0.0
        self.count = 0

    def add(self, loss: float, pred: np.ndarray, target: np.ndarray) -> None:
        self.loss += loss * len(pred)
        self.count += len(pred)
        if self.metrics:  # the metrics count on the host
            pred, target = memory.to_host(pred), memory.to_host(target)
        for metric in self.metrics:
            try:
                metric.update(target, pred)
            except (ValueError, TypeError) as err:
                raise (ValueError if isinstance(err, ValueError) else TypeError)(
                    f"metric {metric.name!r}: {err}") from None

    def logs(self) -> dict[str, float]:
        logs = {"loss": self.loss / self.count}
        for metric in self.metrics:
            value = metric.result()
            if value is not None:
                logs[metric.name] = value
        return logs


def _train_epoch(model: Any, cfg: Compiled, metrics: list[_metrics.Metric],
                 X: np.ndarray, y: np.ndarray,
                 batch_size: int | None, rng: np.random.Generator | None,
                 augment: Callable[[np.ndarray], np.ndarray] | None,
                 monitor: _diagnostics.Monitor | None, progress: _Progress,
                 callbacks: list[Callback], sync: Any = None,
                 X_device: Any = None, y_device: Any = None) -> dict[str, float]:
    """One training pass over (X, y), shuffled when rng is given (this rank's shares of
    it with a ``distributed.FitSync``). With ``X_device`` (X on the model's device) the
    batches are gathered there, the same rows in the same order (an augmented batch is
    gathered on the host, augmented and copied over), and their targets too with
    ``y_device`` (y checked and copied there once)."""
    tally = _Tally(metrics)
    on_device = X_device is not None and augment is None
    source = X_device if on_device else X
    targets = y_device if on_device and y_device is not None else y
    batches = (data.batches(source, targets, batch_size, shuffle=rng is not None, seed=rng,
                            reuse_buffers=True) if sync is None
               else sync.batches(X, y, batch_size, rng))
    for batch, (xb, yb) in enumerate(batches):
        if augment is not None:
            xb = _augmented(augment, xb)
            if X_device is not None:
                xb = memory.asarray(xb, like=X_device)
        cfg.mid_epoch = True  # the forward moves state (batch norm's statistics, dropout's stream)
        with run_lock(model):  # the step's forward and backward, no other thread's between
            pred = model(xb)
            try:
                loss = cfg.loss(pred, yb) + model.regularization_loss()
            except (ValueError, TypeError) as err:  # the loss sees a batch: say what was passed
                raise (ValueError if isinstance(err, ValueError) else TypeError)(
                    f"fit: the loss of a batch of {len(yb)} (y has shape {tuple(np.shape(y))}, "
                    f"the model's output {(len(X), *tuple(np.shape(pred))[1:])}): {err}") from None
            _backward(model, cfg.loss.backward())
            tally.add(loss, pred, yb)  # before the step: a metric that refuses y moves no weight
            if sync is not None:
                sync.reduce_gradients()
            if monitor is not None:
                monitor.after_backward()
            cfg.optimizer.step()
            if monitor is not None:
                monitor.after_step()
            cfg.optimizer.zero_grad()
        progress.update(len(xb), tally)
        for cb in callbacks:
            cb.on_batch_end(batch, {"batch": batch, "size": len(xb), "loss": loss})
    return tally.logs() if sync is None else sync.reduce_tally(tally)


def _nonfinite(model: Any, loss: float, epoch: int) -> str | None:
    """Why training must stop after this epoch: a NaN/Inf loss or parameter (the first,
    named with its layer), or None."""
    where = None
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        if not _all_finite(p.data):
            owner = name.rpartition(".")[0]
            layer = f"layer {owner} ({modules[owner]!r})" if owner else repr(model)
            where = f"parameter '{name}' of {layer}"
            break
    if math.isfinite(loss):
        if where is None:
            return None
        what = f"{where} has NaN/Inf values after epoch {epoch + 1} (the loss is finite)"
    else:
        what = f"the loss became {loss} in epoch {epoch + 1}"
        what += f" and {where} has NaN/Inf values" if where else ""
    return (f"fit: {what}; training stopped (a lower learning rate or clip_norm may help; "
            "check the inputs and any augmentation for NaN/Inf)")


def _backward(model: Any, grad: np.ndarray) -> None:
    """Backpropagate, without the gradient for the input that training never uses."""
    # (a Sequential by its class: a model of one's own may hold a list named layers)
    if isinstance(model, Sequential) or "_tape" in vars(model):  # a Sequential, a recorded model
        model.backward(grad, input_grad=False)
    else:
        model.backward(grad)


def _augmented(augment: Callable[[np.ndarray], np.ndarray], xb: np.ndarray) -> np.ndarray:
    out = memory.to_host(augment(xb))
    if out.shape != xb.shape:
        raise ValueError(f"augment changed the batch's shape from {xb.shape} to {out.shape}; "
                         "it must return a batch of the same shape")
    return out


def _evaluate(model: Any, cfg: Compiled, X: np.ndarray, y: np.ndarray,
              metrics: list[_metrics.Metric], batch_size: int = 256,
              sync: Any = None) -> dict[str, float]:
    """The loss and metrics over (X, y); with a ``distributed.FitSync``, each rank
    evaluates its share and the logs are over all of them."""
    tally = _Tally(metrics)
    if sync is not None:
        X, y = sync.shard(X, y)
    penalty = model.regularization_loss()
    on_device = _device_like(model)
    with run_lock(model), switched_mode(model, training=False):
        for start in range(0, len(X), batch_size):  # rows taken as float32 batch by batch
            xb, yb = _batch_rows(X[start:start + batch_size], "X"), y[start:start + batch_size]
            pred = model(xb if on_device is None else memory.asarray(xb, like=on_device))
            tally.add(cfg.loss(pred, yb) + penalty, pred, yb)
    return tally.logs() if sync is None else sync.reduce_tally(tally)


def _check_last_batch(model: Any, sample_shape: tuple, n: int, batch_size: int | None) -> None:
    """Before any update: a batch of one sample where a batch norm would see one value per
    channel, which it cannot normalize in training (as torch; the kernel's error came
    mid-epoch, after the earlier batches' updates)."""
    size = batch_size or n
    last = n % size or size
    if last != 1:
        return
    blocked = _one_value_normalizers(model, sample_shape)
    if blocked:
        raise ValueError(f"fit: {'every' if size == 1 else 'the last'} batch of each epoch would "
                         f"hold one sample ({n} training samples, batch_size={batch_size}), and "
                         f"{blocked[0]} cannot normalize one value per channel in training (as "
                         "torch): choose a batch_size that leaves 0 or at least 2 samples in the "
                         "last batch")


def _one_value_normalizers(model: Any, sample_shape: tuple) -> list[str]:
    """The batch norms of a Sequential that one sample gives one value per channel (an input
    of (1, features), or of 1 x 1 images), found by tracing its shape through the layers. A
    model of one's own, or a shape that does not trace, is left to the kernel's own error."""
    from .nn.normalization import _BatchNorm

    found: list[str] = []

    def trace(module: Any, shape: tuple) -> tuple:
        for layer in module.layers:
            if getattr(layer, "layers", None) is not None:  # a block's list, taken in order
                shape = trace(layer, shape)  # (a guess: an error leaves it to the kernel)
                continue
            if isinstance(layer, _BatchNorm) and math.prod(shape[2:]) < 2:
                found.append(repr(layer))
            shape = layer.output_shape(shape)
        return shape

    if getattr(model, "layers", None) is None:
        return []
    try:
        trace(model, (1, *sample_shape))
    except (ValueError, TypeError, AttributeError, NotImplementedError):
        return []
    return found


def _check_validation_keys(callbacks: list[Callback]) -> None:
    """Before any epoch, without validation data: a callback that cannot go on without a
    val_* log (ReduceLROnPlateau's monitor, a key in ModelCheckpoint's path) raised only
    after the first epoch had trained. (EarlyStopping warns and carries on, as Keras's.) Not
    where a callback of one's own is present: it may write val_* logs itself."""
    from string import Formatter

    from .callbacks import ModelCheckpoint
    from .schedulers import ReduceLROnPlateau

    if any(not type(cb).__module__.startswith("fastnn.") for cb in callbacks):
        return
    for i, cb in enumerate(callbacks):
        if isinstance(cb, LearningRateScheduler) and isinstance(cb.schedule, ReduceLROnPlateau):
            keys, what = [cb.schedule.monitor], "ReduceLROnPlateau monitors"
        elif isinstance(cb, ModelCheckpoint):
            keys, what = [f for _, f, _, _ in Formatter().parse(cb.path) if f], "ModelCheckpoint's path holds"
            # keeping the best by a val_* log, it had warned each epoch and saved nothing
            if cb.save_best_only and str(cb.monitor).startswith("val_"):
                keys, what = [cb.monitor], "ModelCheckpoint(save_best_only=True) monitors"
        else:
            continue
        needed = [k for k in keys if isinstance(k, str) and k.startswith("val_")]
        if needed:
            raise ValueError(f"callbacks[{i}]: {what} {needed[0]!r}, which fit logs only with "
                             "validation data: pass validation_split or validation_data, or "
                             "use the training loss ('loss')")


def _check_callbacks(callbacks: Sequence[Any] | None) -> list[Callback]:
    if isinstance(callbacks, Callback) or hasattr(callbacks, "on_epoch_end"):
        raise TypeError(f"callbacks must be a list of callbacks; got one {type(callbacks).__name__}: "
                        "pass callbacks=[it]")
    if callbacks is not None and (isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__")):
        raise TypeError(f"callbacks must be a list of callbacks (or None); got "
                        f"{type(callbacks).__name__} {callbacks!r:.60}")
    checked = []
    seen: dict[int, int] = {}
    for i, cb in enumerate(callbacks or ()):
        if isinstance(cb, type):  # its methods unbound: a raw "missing argument" from inside
            raise TypeError(f"callbacks[{i}] is the class {cb.__name__}, not a callback: "
                            f"create one, {cb.__name__}(...)")
        if id(cb) in seen:  # it ran twice an epoch: EarlyStopping counted each epoch twice
            raise ValueError(f"callbacks[{i}] is callbacks[{seen[id(cb)]}] again ({cb!r:.80}); "
                             "list each callback once")
        seen[id(cb)] = i
        if not isinstance(cb, Callback):
            if not (hasattr(cb, "bind") and hasattr(cb, "on_epoch_end")):
                raise TypeError(f"callbacks[{i}] must be a fastnn.callbacks.Callback or a "
                                f"fastnn.schedulers scheduler; got {type(cb).__name__}")
            cb = LearningRateScheduler(cb)
        checked.append(cb)
    return checked


def _format_logs(logs: dict[str, float]) -> str:
    return " - ".join(f"{key}: {value:.4g}" if key == "lr" else f"{key}: {value:.4f}"
                      for key, value in logs.items())


def _tqdm(stream: Any) -> Any | None:
    """The tqdm bar class for ``stream``: the notebook's (``tqdm.auto``) in Jupyter with
    ipywidgets, the terminal's on a terminal or in Jupyter without them (``tqdm.auto`` then
    warned "IProgress not found" at every fit); None when tqdm is missing or the stream is a
    file or a pipe, where every redraw would stay in the output as a carriage return."""
    in_notebook = _in_notebook()
    if not (in_notebook or _is_terminal(stream)):
        return None
    try:
        import importlib.util

        if in_notebook and importlib.util.find_spec("ipywidgets") is not None:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal; False for a file, a pipe, a closed stream and a
    stream object without ``isatty`` (some IDEs' and GUI programs' stdout)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel: IPython's running shell is the kernel's
    (a program that merely imported ipykernel, as nbclient's users do, is not one), or a
    subclass of it (Google Colab's, Sage's)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


class _Progress:
    """What ``fit`` prints per epoch on stdout: nothing (verbose=0), a progress bar
    (verbose=1: on a terminal tqdm when installed, else a line redrawn in place; in a
    notebook tqdm.auto's bar; one plain line per epoch when stdout is a file or a pipe),
    or one line per epoch (verbose=2). The time and
    samples/s shown are the training pass's, validation excluded."""

    def __init__(self, verbose: int, epochs: int) -> None:
        self.stream = sys.stdout
        self.verbose = verbose if self.stream is not None else 0  # pythonw: no stdout at all
        self.epochs = epochs
        self._tqdm = _tqdm(self.stream) if self.verbose == 1 else None
        self._redraw = self.verbose == 1 and self._tqdm is None and _is_terminal(self.stream)
        self._bar: Any = None

    def begin_epoch(self, epoch: int, samples: int) -> None:
        self.samples, self.done = samples, 0
        self.start = self.last = self._shown = time.perf_counter()
        self._prefix = f"Epoch {epoch + 1:>{len(str(self.epochs))}}/{self.epochs}"
        if self._tqdm is not None:
            # not left: end_epoch writes the epoch's whole line in its place (the bar's
            # postfix is cut to the terminal's width: validation's logs never showed)
            self._bar = self._tqdm(total=samples, desc=self._prefix, file=self.stream,
                                   leave=False, dynamic_ncols=True, bar_format=_BAR_FORMAT)

    def update(self, n: int, tally: _Tally) -> None:
        """Count a trained batch of ``n`` samples; redraw now and then (verbose=1)."""
        if not self.verbose:
            return
        self.done += n
        self.last = time.perf_counter()
        if self._bar is not None:
            self._bar.update(n)
        if self.verbose == 2 or self.last - self._shown < _REFRESH_SECONDS:
            return
        self._shown = self.last
        if self._bar is not None:
            self._bar.set_postfix_str(self._status(tally.logs()), refresh=False)
        elif self._redraw:
            self.stream.write(f"\r{self._line(tally.logs())}")
            self.stream.flush()

    def _status(self, logs: dict[str, float]) -> str:
        rate = self.done / max(self.last - self.start, 1e-9)
        return f"{rate:,.0f} samples/s - {_format_logs(logs)}"

    def _line(self, logs: dict[str, float]) -> str:
        seconds = self.last - self.start
        duration = f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
        return f"{self._prefix} [{self.done}/{self.samples}] - {duration} - {self._status(logs)}"

    def end_epoch(self, logs: dict[str, float]) -> None:
        """Show the epoch's final logs, validation included."""
        if not self.verbose:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.stream.write(("\r" if self._redraw else "") + self._line(logs) + "\n")
        self.stream.flush()


def _check_bound_parameters(model: Any, cfg: Compiled, epoch: int | None = None) -> None:
    """A layer added or replaced after compile has parameters its optimizer does not hold:
    fit would never change them. Likewise a layer instance placed twice, and parameters
    held where ``parameters()`` does not look (a list attribute). ``epoch``: checked again
    during fit, after that epoch's callbacks and batches (a callback may replace a layer;
    the forward pass checks the layers again where they changed)."""
    if epoch is None:
        if hasattr(model, "check_layers_unique"):
            model.check_layers_unique()
        check_parameters_reachable(model, "fit")
    bound = {id(p) for p in cfg.optimizer.params}
    for name, p in model.named_parameters():
        if id(p) not in bound:
            why = (" (a layer added or replaced after compile, or the optimizer compiled for "
                   "another model since):" if epoch is None else
                   f": a layer was added or replaced during fit, by a callback around epoch "
                   f"{epoch + 1}, and would stay untrained;")
            raise ValueError(f"fit: the model's parameter {name} is not among those compile gave "
                             f"the optimizer{why} call model.compile(...) again")


def _require_compiled(model: Any, what: str) -> Compiled:
    cfg = getattr(model, "compiled", None)
    if cfg is None:
        raise RuntimeError(f"call model.compile(loss=..., optimizer=...) before {what}()")
    return cfg


def _first_layer(model: Any) -> Any:
    return model.layers[0] if isinstance(model, Sequential) and model.layers else model


def _check_inputs(model: Any, X: object, name: str, whole: bool = True) -> np.ndarray:
    """X checked against the model's first layer; as float32, all finite (``whole``), or
    as given, each batch then taken through ``_batch_rows`` (predict and evaluate: a float64
    or strided X was copied whole first, a stride-0 view of a few bytes to gigabytes)."""
    X = numeric(X, name)
    first = _first_layer(model)
    features = getattr(first, "in_features", None)
    if X.ndim < 2 or (features is not None and X.ndim != 2):
        expected = "2-D (samples, features)" if features is not None else \
            "at least 2-D (samples, ...)"
        hint = ("; images? add nn.Flatten() as the first layer (or pass "
                f"{name}.reshape(len({name}), -1))") if features is not None and X.ndim > 2 else ""
        raise ValueError(f"{name} must be {expected}; got shape {X.shape}{hint}")
    if len(X) == 0:
        raise ValueError(f"{name} has no samples (shape {X.shape})")
    if features is not None and X.shape[1] != features:
        raise ValueError(f"{name} has {X.shape[1]} features (shape {X.shape}) but the first "
                         f"layer, {first!r}, expects {features}")
    return _batch_rows(X, name) if whole else X


def _batch_rows(X: Any, name: str) -> np.ndarray:
    """Rows of X as float32 (no copy where they are), all finite."""
    X = as_float32(X, name)
    if not _all_finite(X):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or Inf in ``a``, without a full-size temporary: a sum of float32 squares in
    double is finite exactly when every value is (on the array's device)."""
    return math.isfinite(_C.sum_squares(a))


class _Shape:
    """What a loss's target check reads of a prediction: its shape."""

    def __init__(self, shape: tuple) -> None:
        self.shape, self.ndim = tuple(shape), len(shape)


def _whole_targets(model: Any, loss: losses.Loss, X: np.ndarray, y: np.ndarray,
                   y_name: str) -> Any:
    """y checked once for the whole set as the loss checks a batch's targets, before any
    update (an error names the sample's index in y, not in a shuffled batch), and converted
    as the loss converts them; None where the model's output shape is not known ahead (a
    layer of your own) or the loss is your own: each batch's targets are then checked at
    its step."""
    if not (isinstance(model, Sequential) and type(loss)._target is not losses.Loss._target
            and all(type(m).__module__.startswith("fastnn.") for _, m in model.named_modules())):
        return None
    shape = model.output_shape((len(X), *X.shape[1:]))
    try:
        with np.errstate(invalid="ignore"):
            return loss._target(_Shape(shape), y)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{y_name}: {err}") from None


def _device_like(model: Any) -> Any:
    """A parameter array of the model when it lives in device memory (what the run's arrays
    are made like), else None: the model runs on NumPy arrays."""
    params = model.parameters()
    return params[0].data if params and memory.is_tensor(params[0].data) else None


def _refuse_bf16_on_device(on_device: Any, precision: str, what: str, source: str) -> None:
    """NotImplementedError, before any batch runs (a batch norm's statistics had moved by the
    batch that then failed in the GEMM, whose message named gemm): bf16 products run on
    the CPU only. source: where the precision came from, "compile", "argument" or
    "autocast"."""
    if precision == "bf16":
        source = {"compile": "the model's compiled precision 'bf16'",
                  "argument": "precision='bf16'",
                  "autocast": "autocast's precision 'bf16' (the model is not compiled)"}[source]
        raise NotImplementedError(
            f"{what}: {source} on {on_device.device} is not built yet (bf16 products run on the "
            f"CPU): use 'fp32' there (model.compile(..., precision='fp32'), or fit(..., "
            "precision='fp32')), or run bf16 on the CPU")


def _check_device_run(model: Any, cfg: Compiled, what: str, **options: bool) -> None:
    """NotImplementedError naming what a run on the model's device cannot do yet."""
    where = _device_like(model).device
    for name, asked in options.items():
        if asked:
            raise NotImplementedError(f"{what}(..., {name}=True) on {where} is not built yet; "
                                      "train on the CPU for it")
    check_on_device(model, where)


def _check_data(model: Any, X: object, y: object, x_name: str, y_name: str, whole: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    X = _check_inputs(model, X, x_name, whole)
    y = numeric(y, y_name)
    if y.ndim not in (1, 2) or len(y) != len(X):
        raise ValueError(f"{y_name} must have one target (row) per sample of {x_name}; "
                         f"got {x_name} {X.shape} and {y_name} {y.shape}")
    if y.dtype.kind == "f" and not _all_finite(y):
        raise ValueError(f"{y_name} contains NaN or infinite values")
    return X, y


def _warn_on_output_activation(model: Any, loss_fn: losses.Loss) -> bool:
    """Warn (and return True) when probabilities (a final softmax or sigmoid) feed a loss
    that takes logits."""
    last = model.layers[-1] if isinstance(model, Sequential) and model.layers else model
    activation = getattr(last, "activation", None)
    if isinstance(loss_fn, losses.CrossEntropy) and activation in ("softmax", "sigmoid"):
        warnings.warn(f"CrossEntropy takes logits but the model ends with a {activation}, "
                      "whose probabilities it would treat as scores; remove the final "
                      f"{activation}", stacklevel=3)
        return True
    if (isinstance(loss_fn, losses.BinaryCrossEntropy) and loss_fn.from_logits
            and activation in ("sigmoid", "softmax")):
        warnings.warn("BinaryCrossEntropy(from_logits=True) takes logits but the model ends "
                      f"with a {activation}; drop the {activation} or use from_logits=False",
                      stacklevel=3)
        return True
    return False
