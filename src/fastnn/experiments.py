"""Controlled experiments: compare optimizers, learning rates and batch sizes, and the
learning-rate range test.

In ``compare`` every run builds its model under the same seed (so every run starts from
the same initial weights) and shuffles with the same seed (so every run sees the batches
in the same order): the setting being compared is the only difference.
"""

from __future__ import annotations

import copy
import itertools
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import _random, losses, nn, optim
from . import precision as _precision
from .data import batches as _batches
from ._checks import deferred_interrupt, number, positive_int
from .nn.module import run_lock, switched_mode
from .train import _check_data, _in_notebook, _is_terminal

Data = tuple  # (X_train, y_train, X_val, y_val) or (X_train, y_train, X_val, y_val, ...)


@dataclass
class Run:
    """One run of a comparison: its settings, its History and the summary numbers.

    settings: the optimizer settings other than lr that the run was given (per-optimizer
    settings of ``compare``), shown in its label. at_chance: the final validation accuracy
    is no better than guessing (see ``compare``)."""
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
    at_chance: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The optimizer and its settings other than lr, e.g. ``sgd momentum=0.9``."""
        return " ".join([self.optimizer, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in self.settings.items())])

    @property
    def label(self) -> str:
        return f"{self.name} lr={self.lr:g} bs={self.batch_size}"

    @property
    def status(self) -> str:
        """"diverged" (the loss or a parameter became NaN or infinite: fit stopped), "chance"
        (``at_chance``) or "ok"."""
        return "diverged" if self.diverged else "chance" if self.at_chance else "ok"


@dataclass
class Comparison:
    """The runs of ``compare``, in the order they ran; ``table()`` formats them."""
    runs: list[Run] = field(default_factory=list)
    target_accuracy: float | None = None

    def table(self) -> str:
        """One row per run: the final and the best validation accuracy, the final training
        loss, the first epoch at the target accuracy (a column only when a target was
        given), the time, and the status: ok, diverged (NaN or infinite loss or weights) or chance
        (final validation accuracy no better than guessing; see ``compare``)."""
        width = max([len("optimizer"), *(len(r.name) for r in self.runs)])
        # the target as given: 0.955 had been shown as 96%, above what its epochs reached
        target = (f"epoch>={100 * self.target_accuracy:.4g}%" if self.target_accuracy is not None
                  else None)
        tw = max(11, len(target or ""))
        head = (f"{'optimizer':<{width}} {'lr':>8} {'batch':>6} {'val acc':>8} {'best val':>8} "
                f"{'train loss':>10} " + (f"{target:>{tw}} " if target else "") +
                f"{'time':>8}  status")
        lines = [head, "-" * len(head)]
        for r in self.runs:
            fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            lines.append(
                f"{r.name:<{width}} {r.lr:>8g} {str(r.batch_size):>6} "
                f"{fmt(r.final_val_accuracy):>8} {fmt(r.best_val_accuracy):>8} "
                f"{r.final_loss:>10.4g} " +
                (f"{str(r.epoch_reached_target or '-'):>{tw}} " if target else "") +
                f"{r.seconds:>7.2f}s  {r.status}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


OptimizerSettings = Mapping[str, Any]  # an optimizer's settings; a list value is a grid


def compare(build_model: Callable[[], Any], data: Data, *,
            optimizers: Sequence[str | optim.Optimizer] | Mapping[str, OptimizerSettings]
            = ("sgd",),
            lrs: Sequence[float] | None = None, batch_sizes: Sequence[int | None] = (32,),
            epochs: int = 5, loss: str = "cross_entropy", seed: int = 0,
            target_accuracy: float | None = None, verbose: bool = True,
            plot: str | None = None, chance_margin: float = 0.02,
            precision: str = "fp32", device: str | None = None) -> Comparison:
    """Train one model per (optimizer settings, lr, batch size) and compare them.

    build_model: a function returning a fresh, uncompiled model. data: (X_train, y_train,
    X_val, y_val).

    optimizers, one of:

    - a list of names for ``fastnn.optim.get`` ("sgd", "momentum", "nesterov", "adagrad",
      "rmsprop", "adam", ...), each run at every rate of ``lrs`` (default 0.01);
    - a list holding Optimizer objects (of a class of one's own too): each runs with its
      own settings, its lr included (every run gets a fresh copy). If ``lrs`` is given too, the object runs once per
      rate of ``lrs`` instead of at its own lr, its other settings kept, and a UserWarning
      says so;
    - a dict of per-optimizer settings, ``{"sgd": {"lr": [0.1, 0.01], "momentum": 0.9},
      "adam": {"lr": [1e-3]}}``: a list value expands the grid of that optimizer only
      (every combination of its lists runs), other values (a tuple too) pass to the
      optimizer as they are; an entry without "lr" takes ``lrs`` (default 0.01). Giving "lr" in an entry and
      ``lrs`` too is an error.

    Every optimizer is built once before training starts, so a misspelt setting fails at
    once. A run whose loss or weights become NaN or infinite stops and is reported as
    diverged (the epoch's loss, taken before each step, can stay finite when its last step
    blew the weights up: full-batch training always); a run
    whose final validation accuracy is at most ``chance_margin`` above guessing (the larger
    of 1/classes and the validation set's majority-class share) is marked "chance" in the
    table (``Run.at_chance``): it learnt nothing. Prints a line per run and the table when
    verbose; plot= saves the curves side by side (needs matplotlib). ``fastnn.seed``'s
    generator, which each run reseeds with ``seed``, is left as it was. A failure of the table
    or the plot only warns: the finished runs are always returned. precision: "fp32" or
    "bf16", every run's (``compile``'s precision). device: where every run trains
    (``fit``'s device; None: the CPU).
    """
    X_train, y_train, X_val, y_val = _unpack(data, 4, "compare")
    # a model instance, not a way to make one (a class is one: it is called for each run)
    if (hasattr(build_model, "parameters") and not isinstance(build_model, type)) \
            or not callable(build_model):
        raise TypeError("compare: build_model must be a function that returns a new model "
                        "(e.g. lambda: nn.Sequential(...)), called once per run for fresh "
                        f"weights; got {type(build_model).__name__} {build_model!r:.60}")
    if not 0.0 <= number(chance_margin, "compare: chance_margin") < 1.0:
        raise ValueError(f"compare: chance_margin must be in [0, 1); got {chance_margin!r}")
    for name, value in (("lrs", lrs), ("batch_sizes", batch_sizes)):
        if value is not None and np.ndim(value) != 1:  # a list, a tuple or np.logspace's array
            raise TypeError(f"compare: {name} must be a list (one run per value); "
                            f"got {value!r:.100}")
    # what fit would refuse in a run, refused before the first run trains
    epochs = positive_int(epochs, "compare: epochs")
    batch_sizes = [None if b is None else positive_int(b, "compare: batch_sizes[...]")
                   for b in batch_sizes]
    if target_accuracy is not None and not 0.0 <= number(target_accuracy,
                                                         "compare: target_accuracy") <= 1.0:
        raise ValueError("compare: target_accuracy is a fraction in [0, 1] (0.9 for 90%); "
                         f"got {target_accuracy!r:.60}")
    precision = _precision.check(precision, "compare: precision")
    result = Comparison(target_accuracy=target_accuracy)
    grid = _optimizer_grid(optimizers, lrs)
    if not grid or len(batch_sizes) == 0:
        raise ValueError(f"compare: these settings give no run (optimizers={optimizers!r:.100}, "
                         f"lrs={lrs!r}, batch_sizes={batch_sizes!r}); give at least one of each")
    chance = _chance_accuracy(y_train, y_val)
    # Each run's own progress bar on a terminal or in a notebook (fit's verbose=1), and a line
    # as it starts: a CNN's run had been silent for minutes.
    bars = verbose and (_is_terminal(sys.stdout) or _in_notebook())
    runs = list(itertools.product(grid, batch_sizes))
    # every run reseeds fastnn.seed's generator (seed: the same initial weights for each):
    # the user's seeding holds again after it (the next layer built got seed 0's weights)
    with _random.global_rng_kept():
        for i, ((opt_name, settings, lr, make), batch_size) in enumerate(runs):
            if verbose:
                print(f"run {i + 1}/{len(runs)}: {opt_name} lr={lr:g} bs={batch_size}",
                      flush=True)
            optimizer = make()  # a fresh one: runs must not share moments or steps
            _random.seed(seed)  # the same initial weights for every run
            model = build_model()
            if not isinstance(model, nn.Module):  # None: a missing return ('NoneType' ...)
                name = getattr(build_model, "__name__", type(build_model).__name__)
                raise TypeError(f"compare: build_model ({name!r:.60}) returned "
                                f"{type(model).__name__} {model!r:.60}; it must return a new "
                                "model (a missing return?)")
            model.compile(loss=loss, optimizer=optimizer,  # accuracy, quiet where undefined
                          precision=precision)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # divergence is reported below
                history = model.fit(X_train, y_train, epochs=epochs, batch_size=batch_size,
                                    device=device, validation_data=(X_val, y_val), seed=seed,
                                    verbose=1 if bars else 0)
            seconds = time.perf_counter() - start
            h = history.history
            val_acc = h.get("val_accuracy", [])
            diverged = (history.stop_reason is not None
                        or not all(math.isfinite(v) for v in h["loss"]))
            reached = next((i + 1 for i, a in enumerate(val_acc)
                            if target_accuracy is not None and a >= target_accuracy), None)
            at_chance = (bool(val_acc) and chance is not None
                         and val_acc[-1] <= chance + chance_margin)
            run = Run(opt_name, lr, batch_size, history, seconds, diverged,
                      val_acc[-1] if val_acc else None, max(val_acc) if val_acc else None,
                      h["loss"][-1], reached, at_chance=at_chance, settings=settings)
            result.runs.append(run)
            if verbose:
                accuracy = ("-" if run.final_val_accuracy is None
                            else f"{run.final_val_accuracy:.4f}")
                print(f"{run.label}: validation accuracy {accuracy}, {run.status}, "
                      f"{seconds:.2f}s", flush=True)
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


def _unpack(data: Any, n: int, owner: str) -> tuple:
    """The first ``n`` arrays of ``data`` (a tuple or list, as datasets.load returns)."""
    names = "(X_train, y_train, X_val, y_val)" if n == 4 else "(X_train, y_train, ...)"
    if not isinstance(data, (tuple, list)) or len(data) < n:
        got = (f"a {type(data).__name__} of {len(data)}" if isinstance(data, (tuple, list))
               else f"a {type(data).__name__}")
        raise ValueError(f"{owner}: data must be {names}, as fastnn.datasets.load(name, "
                         f"validation=0.1) returns; got {got}")
    return tuple(data[:n])


def _optimizer_grid(optimizers: Any, lrs: Sequence[float] | None
                    ) -> list[tuple[str, dict, float, Callable[[], optim.Optimizer]]]:
    """compare's optimizer runs: (name, settings shown, lr, a function making the
    optimizer) each, every optimizer built once here so that a bad setting fails early."""
    default_lrs = list(lrs) if lrs is not None else [0.01]
    runs: list = []

    def add(name: str, shown: dict, kwargs: dict, where: str,
            template: optim.Optimizer | None = None) -> None:
        make = ((lambda: optim.get(name, **kwargs)) if template is None  # noqa: E731
                else (lambda: _copy_at(template, kwargs["lr"])))
        try:
            make()
        except (TypeError, ValueError) as err:
            raise ValueError(f"compare: {where}: {err}") from None
        runs.append((name, shown, kwargs["lr"], make))

    if isinstance(optimizers, Mapping):
        for name, settings in optimizers.items():
            where = f"optimizers[{name!r}]"
            if not isinstance(name, str) or not isinstance(settings, Mapping):
                raise TypeError(f"compare: optimizers as a dict maps an optimizer's name to its "
                                f"settings, e.g. {{'sgd': {{'lr': [0.1, 0.01]}}}}; got "
                                f"{name!r}: {settings!r:.100}")
            if "lr" in settings and lrs is not None:
                raise ValueError(f"compare: {where} sets lr and lrs={list(lrs)} is given too; "
                                 "give the learning rates in one place")
            grid = {"lr": default_lrs, **settings}
            keys = list(grid)
            # Only lists make a grid: a tuple is one value (Adam's betas).
            values = [v if isinstance(v, list) else [v] for v in grid.values()]
            for combination in itertools.product(*values):
                kwargs = dict(zip(keys, combination))
                shown = {k: v for k, v in kwargs.items() if k != "lr"}
                add(name, shown, kwargs, where)
        return runs
    if isinstance(optimizers, (str, optim.Optimizer)) or not isinstance(optimizers, Sequence):
        raise TypeError(f"compare: optimizers must be a list of names or Optimizer objects, or a "
                        f"dict of per-optimizer settings; got {optimizers!r:.100}")
    for k, opt in enumerate(optimizers):
        where = f"optimizers[{k}]"
        if isinstance(opt, optim.Optimizer):
            config = opt.get_config()
            name = config.pop("class")
            # Its settings that differ from the class's defaults tell it apart in the table.
            try:
                defaults = type(opt)().get_config()
            except (TypeError, ValueError):  # a class of one's own may need arguments
                defaults = {}
            shown = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()
                     if k != "lr" and v != defaults.get(k)}
            if lrs is not None:
                warnings.warn(f"compare: lrs={list(lrs)} replaces the lr={opt.lr:g} of {where} "
                              f"({name}); its other settings are kept. Leave lrs out to run it "
                              "at its own lr", UserWarning, stacklevel=3)
            for lr in (default_lrs if lrs is not None else [opt.lr]):
                add(name, shown, {"lr": lr}, where, template=opt)
        elif isinstance(opt, str):
            for lr in default_lrs:
                add(opt, {}, {"lr": lr}, where)
        else:
            raise TypeError(f"compare: {where} must be an optimizer's name or a "
                            f"fastnn.optim.Optimizer; got {type(opt).__name__}")
    return runs


def _copy_at(optimizer: optim.Optimizer, lr: float) -> optim.Optimizer:
    """A copy of ``optimizer`` (of any class, one's own too) at learning rate ``lr``:
    compiling binds it afresh, so no moments or steps carry over between runs."""
    fresh = copy.deepcopy(optimizer)
    fresh.lr = optim.check_lr(lr)
    return fresh


def _chance_accuracy(y_train: np.ndarray, y_val: np.ndarray) -> float | None:
    """The accuracy of guessing on the validation set: the larger of 1/classes and its
    majority-class share; None when the targets are not class labels (regression)."""
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    if y_val.ndim == 2 and y_val.shape[1] > 1:  # one-hot
        classes, labels = y_val.shape[1], y_val.argmax(axis=1)
    else:
        labels, known = y_val.reshape(-1), y_train.reshape(-1)
        if len(labels) == 0 or not np.array_equal(labels, np.round(labels)):
            return None
        classes = max(len(np.union1d(np.unique(known), np.unique(labels))), 2)
    if len(labels) == 0:
        return None
    majority = np.unique(labels, return_counts=True)[1].max() / len(labels)
    return max(1.0 / classes, float(majority))


@dataclass
class LRRangeResult:
    """Loss (smoothed) against the learning rate, and the suggested learning rate."""
    lrs: np.ndarray
    losses: np.ndarray
    suggested_lr: float


def lr_range_test(model: Any, data: Data, *, loss: str | losses.Loss = "cross_entropy",
                  optimizer: str | optim.Optimizer = "sgd", start_lr: float = 1e-6, end_lr: float = 1.0,
                  steps: int = 100, batch_size: int = 32,
                  seed: int | np.random.Generator | None = 0,
                  smoothing: float = 0.9) -> LRRangeResult:
    """The learning-rate range test (Smith, 2015): train on mini-batches while the
    learning rate grows exponentially from start_lr to end_lr, recording the loss (with
    the layers' L1/L2 penalties, as ``fit`` reports it: the objective the steps descend).

    Stops early once the smoothed loss exceeds 4x its minimum (divergence). The suggested
    learning rate is where the smoothed loss falls fastest, before its minimum and past
    the first, noisy 10% of the steps, and within [start_lr, end_lr]; a warning says so when
    the loss was still falling at end_lr (the suggestion is then only a lower bound). The
    model's weights, buffers (batch norm's running statistics), Dropout streams and training
    mode are restored afterwards, and a compiled model's parameters stay in its optimizer.
    optimizer: a name, or an Optimizer whose settings a fresh copy takes (the one given,
    perhaps the model's own, is left as it was). A loss that diverges within the first
    steps leaves no suggestion but start_lr, with a warning to lower it. seed: the
    shuffling of the batches (an integer >= 0, a NumPy Generator, or None for the global
    generator of ``fastnn.seed``).
    """
    X_train, y_train = _unpack(data, 2, "lr_range_test")
    X_train, y_train = _check_data(model, X_train, y_train, "X", "y")
    start_lr = optim._finite(start_lr, "lr_range_test: start_lr")
    end_lr = optim._finite(end_lr, "lr_range_test: end_lr")
    optim._check(0 < start_lr < end_lr, "lr_range_test: needs 0 < start_lr < end_lr; got "
                 f"start_lr={start_lr:g}, end_lr={end_lr:g}")
    optim._check(isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) and steps >= 2,
                 f"lr_range_test: steps must be an integer >= 2; got {steps!r}")
    smoothing = optim._in_range(smoothing, "lr_range_test: smoothing", 0.0, 1.0)
    rng = _random.resolve(seed, "lr_range_test: seed")
    loss_fn = losses.get(loss)
    if isinstance(optimizer, optim.Optimizer):  # a copy: its lr is swept, its state made
        opt = optim.from_config(optimizer.get_config())
        opt.lr = start_lr
    else:
        opt = optim.get(optimizer, lr=start_lr)
    schedule = np.geomspace(start_lr, end_lr, steps)  # its ends exactly start_lr and end_lr
    lrs, smoothed = [], []
    avg, best = 0.0, math.inf
    batches = iter(())
    # the model held for the whole test (run_lock): another thread's fit had trained the
    # test's weights, and had its own rolled back at the end
    with run_lock(model):
        params = model.parameters()
        bound = [(p.data, p.grad) for p in params]  # a compiled optimizer's views, given back after
        saved = [p.data.copy() for p in params]
        saved_buffers = [b.copy() for b in model.buffers()]  # batch norm's running statistics
        # where each Dropout's mask stream stands: a fit after the test draws the masks it
        # would have drawn without it
        streams = [(m, m.offset) for _, m in model.named_modules() if isinstance(m, nn.Dropout)]
        try:
            opt.bind(params)  # all or nothing (see bind)
            with switched_mode(model, training=True):  # every module's mode given back after
                for step in range(steps):
                    try:
                        xb, yb = next(batches)
                    except StopIteration:
                        batches = _batches(X_train, y_train, batch_size, shuffle=True, seed=rng)
                        xb, yb = next(batches)
                    opt.lr = float(schedule[step])
                    # with the L1/L2 penalties, as fit reports it: the objective the steps follow
                    value = loss_fn(model(xb), yb) + model.regularization_loss()
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
            with deferred_interrupt():  # a restore cut short left the test's weights in part
                for p, w, (data, grad) in zip(params, saved, bound):
                    p.data, p.grad = data, grad
                    p.data[...] = w
                    p.grad.fill(0.0)
                for b, w in zip(model.buffers(), saved_buffers):
                    b[...] = w
                for m, offset in streams:
                    m.offset = offset
    lrs_a, loss_a = np.array(lrs), np.array(smoothed)
    lowest = int(np.argmin(loss_a)) if len(loss_a) else 0
    # The steepest descent before the loss bottoms out, the first 10% of the steps left
    # out: there the running average still follows single noisy batches.
    start = min(max(3, len(lrs_a) // 10), lowest - 2)
    if start >= 0:
        slope = np.gradient(loss_a[start:lowest + 1], np.log(lrs_a[start:lowest + 1]))
        suggested = float(lrs_a[start + int(np.argmin(slope))])
    else:
        suggested = max(start_lr, float(lrs_a[lowest] / 10)) if len(lrs_a) else start_lr
    if len(lrs_a) < 3:
        warnings.warn(f"lr_range_test: the loss diverged within {len(lrs_a) + 1} steps of "
                      f"start_lr={start_lr:g}: no rate can be suggested (lower start_lr)",
                      stacklevel=2)
    elif len(lrs_a) == steps and lowest >= steps - 2:
        warnings.warn(f"lr_range_test: the loss was still falling at end_lr={end_lr:g}; "
                      f"the suggested {suggested:.3g} is only a lower bound (raise end_lr)",
                      stacklevel=2)
    return LRRangeResult(lrs_a, loss_a, suggested)

