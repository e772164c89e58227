"""Seeing inside training: per-layer gradient flow (``fit(..., diagnostics=True)``) and a
finite-difference check of any model's backward pass (``gradient_check``).

With ``diagnostics=True``, ``fit`` records for every layer with a ``weight`` (Dense, ...)
and every epoch, in ``history.diagnostics[layer][metric]`` (one value per epoch; layers
named "<index>:<class>", e.g. "0:Dense"):

- ``grad_norm``: the L2 norm of the weight's gradient, mean over the epoch's batches;
- ``weight_norm``: the L2 norm of the weight at the end of the epoch;
- ``update_ratio``: norm of the step the optimizer took / norm of the weight, mean over
  the batches (around 1e-3 is healthy; much smaller learns slowly, much larger is
  unstable; a zero weight gives inf for a step, 0 for none);
- ``dead_fraction`` (ReLU layers): the fraction of units that output 0 for every sample
  of a batch, mean over the batches;
- ``saturated_fraction`` (sigmoid / tanh layers): the fraction of outputs in the flat
  tails (sigmoid below 0.01 or above 0.99, tanh beyond +-0.99), mean over the batches.

The activation of a layer is its own (``Dense(..., activation="relu")``) or that of the
first activation layer after it. A ``GradientWarning`` names the layer when gradients
vanish (the first layer's gradient norm is more than 100 times smaller than the last
layer's), explode (a layer's gradient norm grows to 1000 times its first epoch's), or
become NaN/Inf (the first layer whose output or gradient is not finite), and, once per
layer, when DEAD_FRACTION (90%) or more of a ReLU layer's units are dead (a dead unit
passes no gradient, so it never comes back to life).

``fit`` also warns (``DataWarning``) when its inputs look like raw pixel values
(``check_input_scale``).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import _C, losses, memory
from . import precision as _precision
from ._checks import as_float32, deferred_interrupt, positive_int
from .nn.module import (Parameter, check_parameters_reachable, kept_recording, run_lock,
                        switched_mode)
from .nn.sequential import Sequential

VANISHING_RATIO = 100.0
EXPLODING_GROWTH = 1000.0
SIGMOID_TAIL = 0.01
TANH_TAIL = 0.99
DEAD_FRACTION = 0.9
PIXEL_MIN_MAX = 10.0  # see check_input_scale
NOISE_FACTOR = 3.0  # see gradient_check
# The highest threshold: a wrong backward pass errs by 0.1 or more (a relative error is
# at most 1), so noise above it leaves the check unable to tell, and it fails (eps 0.5
# had given thresholds of 1.2 that a zero gradient passed).
MAX_THRESHOLD = 0.05
_PIXEL_SAMPLE = 4096


class GradientWarning(RuntimeWarning):
    """Gradients vanish, explode or are not finite, or a ReLU layer's units died (see
    ``fastnn.diagnostics``)."""


class DataWarning(UserWarning):
    """The training inputs look unprepared (raw 0-255 pixel values)."""


def check_input_scale(X: np.ndarray, name: str = "X", stacklevel: int = 2) -> bool:
    """Warn (``DataWarning``) and return True when ``X`` looks like raw pixel values: all
    in [0, 255], with a maximum above PIXEL_MIN_MAX, and either whole numbers (checked on
    a spread sample) or a maximum above 127 (8-bit images rescaled, such as
    ``fastnn.datasets.load("digits", normalize=False)``). Networks train badly on inputs
    that large; scaled to [0, 1] they train well. stacklevel: as ``warnings.warn``'s,
    counted from the caller of this function."""
    if X.size == 0:
        return False
    low, high = float(X.min()), float(X.max())
    if not (low >= 0.0 and PIXEL_MIN_MAX < high <= 255.0):
        return False
    flat = X.reshape(-1)
    sample = flat[::max(1, flat.size // _PIXEL_SAMPLE)]
    if high <= 127.0 and not np.all(sample == np.round(sample)):
        return False
    warnings.warn(f"{name} holds values from {low:g} to {high:g}, which look like raw pixel "
                  "values (0-255); networks train badly on inputs that large: scale them to "
                  f"[0, 1] ({name} / 255.0 for 0-255 pixels), or load the dataset with "
                  "normalize=True", DataWarning, stacklevel=stacklevel + 1)
    return True


def named_layers(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The model's layers as ("<index>:<class>", layer) pairs, those of a Sequential or a
    module of one's own inside it in its place ("1.0:Dense", "1.fc:Dense"); for a model of
    your own (sub-modules as attributes) its innermost sub-modules, named "<attribute
    path>:<class>" ("fc1:Dense"), in attribute order; a model without sub-modules is one
    layer named by its class."""
    if not isinstance(model, Sequential):  # by its class: one's own may hold a list "layers"
        leaves, seen = [], set()
        for name, m in model.named_modules():
            # a layer held twice (a Sequential and a handle on one of its layers): once
            if name and id(m) not in seen and next(m.children(), None) is None:
                seen.add(id(m))
                leaves.append((f"{prefix}{name}:{type(m).__name__}", m))
        return leaves or [(f"{prefix}{type(model).__name__}", model)]
    named = []
    for i, layer in enumerate(model.layers):
        # inside a Sequential, or a module of one's own whose weights are its sub-modules'
        # (one with parameters of its own is a layer itself, as before)
        if isinstance(layer, Sequential) or (next(layer.children(), None) is not None and not any(
                isinstance(v, Parameter) for v in vars(layer).values())):
            named += named_layers(layer, f"{prefix}{i}.")
        else:
            named.append((f"{prefix}{i}:{type(layer).__name__}", layer))
    return named


def _norm(x: np.ndarray) -> float:
    return math.sqrt(_C.sum_squares(x))


def _has_weight(layer: Any) -> bool:
    return isinstance(getattr(layer, "weight", None), Parameter)


def _activation_of(layers: list[tuple[str, Any]], index: int) -> Any | None:
    """The layer whose output is layer ``index``'s activation: itself if it has a watched
    one, else the first activation layer after it and before the next weighted layer."""
    candidates = [layers[index][1]]
    for _, layer in layers[index + 1:]:
        if _has_weight(layer):
            break
        candidates.append(layer)
    return next((layer for layer in candidates
                 if getattr(layer, "activation", None) in ("relu", "sigmoid", "tanh")), None)


class Monitor:
    """Collects the per-layer statistics of one ``fit`` run (used by ``fit``; the hooks are
    called after each backward pass and each optimizer step)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._order(named_layers(model))
        if not self.layers:
            raise ValueError("diagnostics=True needs a model with weighted layers (Dense, ...)")
        self._by_forward = isinstance(model, Sequential)  # a Sequential's order is its own
        self._first_grad: dict[str, float] = {}
        self._warned: set[str] = set()
        self._pending: list[str] = []
        self._epoch = 0
        self._batch = 0
        self._sums: dict[str, dict[str, float]] = {}
        self._before: dict[str, np.ndarray] = {}

    def _order(self, named: list[tuple[str, Any]]) -> None:
        self._all = named
        self.layers = [(name, layer, _activation_of(named, i))
                       for i, (name, layer) in enumerate(named) if _has_weight(layer)]

    def _order_by_forward(self) -> None:
        """A model of one's own lists its layers in attribute order, which need not be the
        forward's (an output layer declared first would be taken for the first layer by the
        vanishing-gradient check): after its first recorded forward, the layers go in the
        order the tape called them (those never called, last)."""
        self._by_forward = True
        tape = self._model.__dict__.get("_tape")
        if tape is None:
            return
        position: dict[int, int] = {}
        for node in tape.nodes:
            if node.module is None:
                continue
            leaves = [m for _, m in node.module.named_modules() if next(m.children(), None) is None]
            for m in leaves:
                position.setdefault(id(m), len(position))
        order = sorted(range(len(self._all)),
                       key=lambda i: position.get(id(self._all[i][1]), len(position) + i))
        self._order([self._all[i] for i in order])

    def begin_epoch(self, epoch: int) -> None:
        self._epoch, self._batch = epoch, 0
        self._sums = {name: {} for name, _, _ in self.layers}

    def _add(self, name: str, key: str, value: float) -> None:
        self._sums[name][key] = self._sums[name].get(key, 0.0) + value

    def after_backward(self) -> None:
        """Gradient norms and activation statistics of the batch just backpropagated."""
        if not self._by_forward:
            self._order_by_forward()
        finite = True
        for name, layer, act in self.layers:
            grad = _norm(layer.weight.grad)
            finite &= math.isfinite(grad)
            self._add(name, "grad_norm", grad)
            self._before[name] = layer.weight.data.copy()
            y = getattr(act, "last_output", None)
            if y is None:
                continue
            y = y.reshape(len(y), -1)
            if act.activation == "relu":
                self._add(name, "dead_fraction", float(np.mean(np.all(y <= 0.0, axis=0))))
            elif act.activation == "sigmoid":
                tails = (y < SIGMOID_TAIL) | (y > 1.0 - SIGMOID_TAIL)
                self._add(name, "saturated_fraction", float(np.mean(tails)))
            else:
                self._add(name, "saturated_fraction", float(np.mean(np.abs(y) > TANH_TAIL)))
        if not finite:
            self._warn_once("nonfinite", self._locate_nonfinite())

    def after_step(self) -> None:
        """The size of the update each weight just received, relative to the weight."""
        for name, layer, _ in self.layers:
            step = _norm(layer.weight.data - self._before[name])
            weight = _norm(layer.weight.data)
            # a zero weight: any step is infinitely large beside it, no step is none
            self._add(name, "update_ratio", step / weight if weight > 0 else
                      (math.inf if step > 0 else 0.0))
        self._batch += 1

    def end_epoch(self) -> tuple[dict[str, dict[str, float]], list[str]]:
        """The epoch's values per layer and the warnings it raised (each kind once per run)."""
        values = {}
        for name, layer, _ in self.layers:
            means = {key: total / max(self._batch, 1) for key, total in self._sums[name].items()}
            means["weight_norm"] = _norm(layer.weight.data)
            values[name] = means
        self._check_vanishing(values)
        self._check_exploding(values)
        self._check_dead(values)
        pending, self._pending = self._pending, []
        return values, pending

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self._pending.append(message)

    def _locate_nonfinite(self) -> str:
        where = f"in epoch {self._epoch + 1}, batch {self._batch + 1}"
        for name, layer in self._all:
            y = getattr(layer, "last_output", None)
            if y is not None and not math.isfinite(_C.sum_squares(y)):
                return (f"non-finite values (NaN/Inf) {where}: first in the output of layer "
                        f"{name} ({layer!r}); lower the learning rate, clip gradients "
                        "(clip_norm=...) or check the inputs' scale")
        for name, layer, _ in reversed(self.layers):
            if not math.isfinite(_C.sum_squares(layer.weight.grad)):
                return (f"non-finite gradients (NaN/Inf) {where}: first in layer {name} "
                        f"({layer!r}), counting from the loss backwards; lower the learning "
                        "rate or clip gradients (clip_norm=...)")
        return f"non-finite gradients (NaN/Inf) {where}"

    def _check_vanishing(self, values: dict[str, dict[str, float]]) -> None:
        if len(self.layers) < 2:
            return
        (first, *_), (last, *_) = self.layers[0], self.layers[-1]
        g_first, g_last = values[first]["grad_norm"], values[last]["grad_norm"]
        if math.isfinite(g_last) and g_first * VANISHING_RATIO < g_last:
            ratio = g_last / g_first if g_first > 0 else math.inf
            self._warn_once("vanishing", (
                f"vanishing gradients in epoch {self._epoch + 1}: the gradient norm of the "
                f"first layer {first} ({g_first:.3g}) is {ratio:.3g} times smaller than the "
                f"last layer {last}'s ({g_last:.3g}), so the first layers barely learn; try "
                "ReLU activations with He initialisation, or fewer layers"))

    def _check_dead(self, values: dict[str, dict[str, float]]) -> None:
        for name, _, _ in self.layers:
            dead = values[name].get("dead_fraction")
            if dead is not None and dead >= DEAD_FRACTION:
                self._warn_once(f"dead {name}", (
                    f"dead ReLU units in epoch {self._epoch + 1}: {dead:.1%} of layer {name}'s "
                    "units output 0 for every sample of a batch, so no gradient flows "
                    "through them and they stop learning; lower the learning rate, use He "
                    "initialisation (the default for relu), or leaky_relu"))

    def _check_exploding(self, values: dict[str, dict[str, float]]) -> None:
        growth = {}
        for name, _, _ in self.layers:
            grad = values[name]["grad_norm"]
            first = self._first_grad.setdefault(name, grad)
            if math.isfinite(grad) and first > 0:
                growth[name] = grad / first
        if growth:
            name = max(growth, key=growth.__getitem__)
            if growth[name] > EXPLODING_GROWTH:
                self._warn_once("exploding", (
                    f"exploding gradients in epoch {self._epoch + 1}: the gradient norm of "
                    f"layer {name} grew {growth[name]:.3g} times since the first epoch "
                    f"(now {values[name]['grad_norm']:.3g}); lower the learning rate or clip "
                    "gradients (clip_norm=...)"))


def emit(messages: list[str]) -> None:
    """Raise each message as a GradientWarning (attributed to the caller of ``fit``)."""
    for message in messages:
        warnings.warn(message, GradientWarning, stacklevel=3)


def _check_parameter(p: Parameter, objective: Callable[[], float], eps: float, samples: int,
                     rng: np.random.Generator, tolerance: float) -> tuple[float, float, bool]:
    """(error, threshold, unresolved) of ``p`` over up to ``samples`` of its entries, which
    are left as they were: the relative error between central differences of step ``eps``
    and ``p.grad``, the largest error a correct gradient explains (see ``gradient_check``),
    and whether the differences cannot resolve the gradient at all: the central difference
    of step eps is not clearly above how much it moves to those of eps / 4 and 2 eps,
    whatever ``p.grad`` holds."""
    flat, grad = p.data.reshape(-1), p.grad.reshape(-1)
    numeric, coarse, analytic, central = [], [], [], []
    f_here = objective()
    for i in rng.choice(p.size, size=min(samples, p.size), replace=False):
        original = np.float64(flat[i])
        estimates = []  # per step: the central, the right and the left difference
        for step in (eps / 4, eps, 2 * eps):
            plus = np.float64(np.float32(original + step))
            minus = np.float64(np.float32(original - step))
            if plus == original or minus == original:
                raise ValueError(f"gradient_check: a step of {step:.3g} (eps = {eps:.3g}) is lost "
                                 f"to float32's rounding beside the weight {original:.6g}; "
                                 "give a larger eps")
            try:  # the entry put back whatever happens (a Ctrl-C in a forward pass)
                flat[i] = plus
                f_plus = objective()
                flat[i] = minus
                f_minus = objective()
            finally:
                flat[i] = original
            estimates.append(((f_plus - f_minus) / (plus - minus),
                              (f_plus - f_here) / (plus - original),
                              (f_here - f_minus) / (original - minus)))
        # Where the entry sits on a kink (a ReLU input at exactly 0, as zero inputs and a
        # zero bias give), backpropagation's derivative is one of the one-sided slopes and
        # the central difference is their mean: compare with the nearest of the three (at
        # a smooth point they agree to within the step's curvature). Other units' ReLU
        # inputs just beside 0 (a conv over images with zero borders has hundreds) are
        # crossed by a step of eps, and fewer by one of eps / 4: the nearer of the two
        # steps, held against the next larger step's estimate (eps's, 2 eps's) for the noise.
        step, kind = min(((s, k) for s in (0, 1) for k in range(3)),
                         key=lambda sk: abs(estimates[sk[0]][sk[1]] - np.float64(grad[i])))
        numeric.append(estimates[step][kind])
        coarse.append(estimates[step + 1][kind])
        analytic.append(np.float64(grad[i]))
        central.append([e[0] for e in estimates])
    scale = np.linalg.norm(numeric) + np.linalg.norm(analytic)
    if scale == 0:
        return 0.0, tolerance, False
    error = float(np.linalg.norm(np.subtract(numeric, analytic)) / scale)
    noise = float(np.linalg.norm(np.subtract(numeric, coarse)) / scale)
    # Judged by the differences alone, not by the gradient under test (a wrong one must not
    # excuse itself): a gradient far below the loss's float32 resolution (a vanishing one)
    # leaves the central difference of eps within rounding's noise of nothing
    # (its uncertainty: the smaller of its moves to eps / 4's and to 2 eps's estimate; rounding
    # moves the first most, the step's curvature the second)
    steps = np.asarray(central)
    uncertainty = min(np.linalg.norm(steps[:, 0] - steps[:, 1]), np.linalg.norm(steps[:, 2] - steps[:, 1]))
    unresolved = bool(np.linalg.norm(steps[:, 1]) < RESOLVE_MARGIN * uncertainty)
    return error, min(MAX_THRESHOLD, max(tolerance, NOISE_FACTOR * noise)), unresolved


class GradientCheck(dict):
    """What ``gradient_check`` returns: a dict of each checked layer's relative error
    (``result["0:Dense"]``), with the verdict.

    ``thresholds[layer]``: the largest error that layer's gradients may show and pass;
    ``failed``: the layers above it, in model order; ``unresolved``: those above it whose
    gradients are too small for float32's finite differences (not failed); ``passed``: no
    layer failed;
    ``tolerance``: the smallest threshold, as given. ``str()`` is a table with the verdict.
    """

    def __init__(self, errors: dict[str, float], thresholds: dict[str, float],
                 tolerance: float, unresolved: Sequence[str] = ()) -> None:
        super().__init__(errors)
        self.thresholds = thresholds
        self.tolerance = tolerance
        self.unresolved = [name for name in errors if name in unresolved]
        # not error <= threshold: a NaN error (NaN gradients, or a loss NaN at the steps) fails
        self.failed = [name for name, error in errors.items()
                       if not error <= thresholds[name] and name not in self.unresolved]
        # nothing judged is no pass
        self.passed = not self.failed and len(self.unresolved) < len(errors)

    def __str__(self) -> str:
        width = max([len("layer"), *map(len, self)])
        lines = [f"{'layer':{width}s}  {'error':>9s}  {'threshold':>9s}  verdict"]
        verdict = lambda name: ("FAIL" if name in self.failed else  # noqa: E731
                                "too small" if name in self.unresolved else "pass")
        lines += [f"{name:{width}s}  {error:9.2e}  {self.thresholds[name]:9.2e}  {verdict(name)}"
                  for name, error in self.items()]
        if self.unresolved:
            lines.append(f"not judged: the gradients of {', '.join(self.unresolved)} are too small "
                         "for float32's finite differences (vanishing gradients: the steps' "
                         f"rounding outweighs them, at eps and at {RESOLVE_STEP ** 2} x eps)")
        if not (self.passed or self.failed):
            lines.append("gradient check: nothing judged (no layer's gradients are large "
                         "enough for float32's finite differences)")
            return "\n".join(lines)
        lines.append("gradient check passed: the backward pass agrees with finite differences"
                     + (" where they can tell" if self.unresolved else "")
                     if self.passed else
                     f"gradient check FAILED: the backward pass of {', '.join(self.failed)} "
                     "disagrees with finite differences" +
                     (" (NaN errors: the gradients or the loss at the steps are not finite; "
                      "check the backward pass, the inputs and eps)"
                      if any(math.isnan(self[n]) for n in self.failed) else "") +
                     ("" if all(self.thresholds[n] < MAX_THRESHOLD for n in self.failed) else
                      f" (or the differences are too noisy to tell: a threshold reached its "
                      f"cap of {MAX_THRESHOLD} at eps and at larger steps; a smaller eps where "
                      "kinks or curvature blur them)"))
        return "\n".join(lines)


@contextmanager
def evaluation_run(model: Any) -> Iterator[None]:
    """Within the block, ``model`` in evaluation mode and held by this thread (``run_lock``:
    another thread's fit had trained in evaluation mode, and had its weights rolled back);
    after it, its mode, its parameters' gradients and the recording of its last forward
    as they were (gradient_check's and explain_backward's passes are not the user's). A
    Ctrl-C waits for the end of a switch or a restore (a cut one left them half done)."""
    with run_lock(model):
        saved = [(p, p.save_grad()) for p in model.parameters()]
        try:
            with switched_mode(model, training=False), kept_recording(model):
                yield
        finally:
            with deferred_interrupt():
                for p, state in saved:
                    p.restore_grad(state)


def gradient_check(model: Any, X: np.ndarray, y: np.ndarray, loss: str | losses.Loss,
                   eps: float = 1e-3, samples: int = 10, seed: int = 0,
                   tolerance: float = 1e-3) -> GradientCheck:
    """Compare the backward pass with finite differences, layer by layer, and give a verdict.

    For up to ``samples`` entries (drawn with ``seed``) of each parameter of every layer
    that has parameters (and of a model of your own that holds parameters itself, checked
    as one more layer named by its class), the derivative of ``loss(model(X), y) +
    model.regularization_loss()`` is estimated by central differences of step ``eps``
    (the exact float32 steps taken, divided in float64) and compared with the gradient
    backpropagation gives (float32). The relative error of a parameter is
    ``|numeric - backprop| / (|numeric| + |backprop|)`` over the sampled entries (L2
    norms; 0 when both vanish); a layer's error and threshold are those of its parameter
    nearest to failing (the highest error / threshold).

    The model computes in float32, so the differences carry rounding error of about
    float32's epsilon times the loss's terms, divided by eps: small beside the gradients
    of an untrained model (errors of 1e-5 to 1e-3), but not beside the tiny gradients of a
    trained one (up to about 1e-2), and a ReLU kink or max-pool switch crossed by a step
    adds more. So each parameter's threshold is measured, not fixed: NOISE_FACTOR (3)
    times the relative difference between the estimates of a step and of the next larger
    one (eps / 4 and eps, or eps and 2 * eps: rounding and kinks make them differ about as
    much as they make the estimate err), at least ``tolerance`` and at most MAX_THRESHOLD
    (0.05: noise beyond it, from too large an eps, fails the check). Where a step crosses a
    kink of the entry's own (a ReLU input at exactly 0, an L1 weight near 0), the backward
    pass's derivative is one of the one-sided slopes, not their mean: each entry is
    compared with the nearest of its central, right and left differences, of step eps / 4
    or eps (the smaller crosses fewer of the kinks beside 0 that zero image borders give).
    A wrong backward pass gives errors of 0.1 or more, far above the threshold. A layer
    that fails where the differences themselves cannot resolve its gradient (the central
    difference of eps within RESOLVE_MARGIN times its move to eps / 4's and to 2 eps's,
    whatever the backward pass gave: vanishing gradients, ~1e-6 beside a loss of ~1)
    is checked again with steps RESOLVE_STEP (8) and 64 times larger, where rounding weighs
    as much less; only where none resolves it is its verdict "too small" (``unresolved``),
    neither pass nor fail; ``passed`` needs a layer judged. Units
    whose ReLU inputs lie closer to 0 than any step float32's rounding allows can still
    make a correct backward fail (a conv, BatchNorm and ReLU model on digits with one seed
    of twelve: 1.5e-2 against 9.6e-3).

    Returns a ``GradientCheck``: per layer ("<index>:<class>") its error, as a dict, with
    ``passed``, ``failed`` and ``thresholds``; print it for a table and the verdict. The
    model runs in evaluation mode (no dropout); its weights, its gradients and the
    recording of its last forward pass (a derived backward's) are left as they were. A
    model with no parameters, or with some where ``parameters()`` does not look (in a list
    or dict attribute), is a ValueError: there would be nothing, or not all, to check.
    """
    loss_fn = losses.get(loss)
    on_device = [name for name, p in model.named_parameters() if memory.is_tensor(p.data)]
    if on_device:  # its steps write single entries of the weights, in host memory
        raise ValueError(f"gradient_check runs on the CPU; the model's {on_device[0]} is a "
                         f"fastnn Tensor on {memory.device_of(model.parameters()[0].data)}: "
                         "check it after model.to('cpu')")
    X = as_float32(X, "X")
    samples = positive_int(samples, "samples")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0; got {eps}")
    tolerance = float(tolerance)
    if not (math.isfinite(tolerance) and 0 < tolerance <= MAX_THRESHOLD):
        raise ValueError(f"tolerance must be > 0 and at most {MAX_THRESHOLD} (a wrong backward "
                         f"pass errs by 0.1 or more); got {tolerance}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r:.60}")
    check_parameters_reachable(model, "gradient_check")
    if not model.parameters():
        raise ValueError(f"gradient_check: {type(model).__name__} has no parameters, so there "
                         "is no gradient to check")
    rng = np.random.default_rng(seed)
    errors, thresholds, unresolved = {}, {}, []
    # float32 inside an autocast("bf16") block too: its eps steps are far below bf16's
    # rounding, and the differences had failed a correct backward pass
    with evaluation_run(model), _precision.using("fp32"):
        model.zero_grad()
        loss_fn(model(X), y)
        model.backward(loss_fn.backward())

        def objective() -> float:
            return loss_fn(model(X), y) + model.regularization_loss()

        layers = [(name, layer.parameters()) for name, layer in named_layers(model)]
        # a model of your own may hold parameters itself (fnn.mul(h, self.alpha)), beside
        # its layers: each such module is checked as one more "layer"
        seen = {id(p) for _, params in layers for p in params}
        for path, module in model.named_modules():
            own = [p for p in vars(module).values()
                   if isinstance(p, Parameter) and id(p) not in seen]
            if own:
                seen.update(map(id, own))
                layers.append((f"{path}:{type(module).__name__}" if path else
                               type(module).__name__, own))
        for name, params in layers:
            if not params:
                continue
            # a layer failing where the differences cannot resolve its gradient, or are noisy
            # up to the threshold's cap, is checked again with steps RESOLVE_STEP and
            # RESOLVE_STEP^2 times larger (rounding's noise falls by as much): it passes or
            # fails at the first that decides; one no step resolves is left "too small" (a
            # review had broken resolvable layers that then passed as such)
            for step in (eps, RESOLVE_STEP * eps, RESOLVE_STEP ** 2 * eps):
                verdict = _layer_verdict([_check_parameter(p, objective, step, samples, rng,
                                                           tolerance) for p in params])
                error, threshold, _, too_small = verdict
                if error <= threshold or not (too_small or threshold >= MAX_THRESHOLD):
                    break
            errors[name], thresholds[name], _, too_small = verdict
            if too_small:
                unresolved.append(name)
    return GradientCheck(errors, thresholds, tolerance, unresolved)


RESOLVE_STEP = 8     # how much larger each further look at an unresolved layer steps
RESOLVE_MARGIN = 4   # a difference this many times its rounding noise resolves a gradient


def _layer_verdict(checks: list[tuple[float, float, bool]]) -> tuple[float, float, bool, bool]:
    """(error, threshold, unresolved, too small) of a layer from its parameters' checks: the
    one nearest to failing speaks for it, one failing where the differences can tell before
    one failing where they cannot resolve the gradient (too small to tell)."""
    blurred = lambda c: c[2] and c[0] > c[1]  # noqa: E731
    error, threshold, unresolved = max(checks, key=lambda c: (
        math.isnan(c[0]) or (c[0] > c[1] and not blurred(c)),
        math.inf if math.isnan(c[0]) else c[0] / c[1]))
    return error, threshold, unresolved, blurred((error, threshold, unresolved))
