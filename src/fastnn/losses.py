"""Loss functions: ``loss = loss_fn(pred, target)`` (a float), then ``loss_fn.backward()``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import _C, memory
from ._checks import as_float32, flag, numeric


class Loss:
    """Base class. Calling it returns the mean loss over the batch as a Python float and
    keeps the gradient of that mean with respect to ``pred`` for ``backward()``."""

    _device_kernels = False  # whether _compute's kernels also take device arrays (Tensors)

    def __init__(self) -> None:
        self._grad: np.ndarray | None = None
        self._checked = False

    def skip_first_input_check(self) -> None:
        """The first call checks what the loss is given (and warns once, for example about
        probabilities passed where logits are expected); skip that check, as ``compile``
        does when it has already given the warning."""
        self._checked = True

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        self._grad = None  # a call that raises leaves no gradient (the last batch's had stayed)
        if memory.is_tensor(pred):
            return self._call_on_device(pred, target)
        pred = as_float32(pred, lambda: f"{self!r}: pred")
        target = numeric(target, lambda: f"{self!r}: target")
        if pred.ndim == 0 or target.ndim == 0:
            raise ValueError(f"{self!r}: pred and target must have a batch dimension; "
                             f"got shapes {pred.shape} and {target.shape}")
        if len(pred) != len(target):
            raise ValueError(f"{self!r}: pred has {len(pred)} rows but target has "
                             f"{len(target)} (shapes {pred.shape} and {target.shape})")
        target = self._target(pred, target)
        if not self._checked:
            self._checked = True
            self._check_first_input(pred)
        loss, self._grad = self._compute(pred, target)
        return float(loss)

    def _call_on_device(self, pred: Any, target: Any) -> float:
        """``__call__`` for a Tensor ``pred``: a target on the host is checked there as usual
        and copied over; one on pred's device is taken as it is (the kernel checks labels)."""
        pred = as_float32(pred, lambda: f"{self!r}: pred")
        if not memory.is_tensor(target):
            target = numeric(target, lambda: f"{self!r}: target")
        if pred.ndim == 0 or target.ndim == 0 or len(pred) != len(target):
            raise ValueError(f"{self!r}: pred and target must have the same number of rows; "
                             f"got shapes {pred.shape} and {target.shape}")
        if not memory.is_tensor(target):
            target = memory.asarray(self._target(pred, target), like=pred)
        elif memory.device_of(target) != memory.device_of(pred):
            raise ValueError(f"{self!r}: pred is on {pred.device} but target on {target.device}")
        if not self._checked:
            self._checked = True
            self._check_first_input(pred.numpy())
        loss, self._grad = self._compute_on_device(pred, target)
        return float(loss)

    def _compute_on_device(self, pred: Any, target: Any) -> tuple[float, Any]:
        if not self._device_kernels:
            raise NotImplementedError(f"{self!r} has no CUDA kernels yet (on {pred.device}: "
                                      "cross_entropy, mse, binary_cross_entropy)")
        return self._compute(pred, target)

    def backward(self) -> np.ndarray:
        """The gradient of the last computed loss with respect to ``pred``."""
        if self._grad is None:
            raise RuntimeError(f"{self!r}: backward called before the loss was computed (or "
                               "after a call that failed)")
        return self._grad

    def count_correct(self, pred: np.ndarray, target: np.ndarray) -> tuple[int, int] | None:
        """(correct, total) predictions for the accuracy metric, or None if undefined."""
        return None

    def _check_first_input(self, pred: np.ndarray) -> None:
        """Warn when the first prediction seen looks like the wrong kind of input."""

    def _target(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _compute(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__


def _as_column(shape: tuple) -> tuple | None:
    """(m,) for shapes (m,) and (m, 1), else None."""
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return shape[:1]
    return None


def _labels_hint(pred: np.ndarray, target: np.ndarray) -> str:
    """What to do when class labels (m,) meet a prediction of k > 1 columns, else ""."""
    if not (target.ndim == 1 and pred.ndim == 2 and pred.shape[1] > 1 and target.size
            and (target.dtype.kind in "iu"
                 or (target.dtype.kind == "f" and np.all(np.mod(target, 1) == 0)))):
        return ""
    return (f"; the target looks like class labels: compare the {pred.shape[1]} outputs with "
            "one-hot rows (fastnn.datasets.load(..., one_hot=True), or "
            f"np.eye({pred.shape[1]}, dtype=np.float32)[y]), or use loss='cross_entropy', "
            "which takes labels")


class _Elementwise(Loss):
    """A loss comparing pred and target entry by entry: the shapes must agree
    ((m,) and (m, 1) are taken as the same)."""

    _device_kernels = True

    def _target(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        if target.shape != pred.shape:
            column = _as_column(target.shape)
            if column is None or column != _as_column(pred.shape):
                raise ValueError(f"{self!r}: target has shape {target.shape}; "
                                 f"expected {pred.shape} like pred{_labels_hint(pred, target)}")
            target = target.reshape(pred.shape)
        return as_float32(target, lambda: f"{self!r}: target")


class MSE(_Elementwise):
    """Mean squared error, averaged over every entry.

    Accuracy: argmax agreement for (m, k > 1) targets (one-hot rows); for one output and
    0/1 targets (a sigmoid output, say), the prediction thresholded at 0.5; undefined for
    other targets (regression)."""

    def _compute(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        return _C.mse(pred, target)

    def count_correct(self, pred: np.ndarray, target: np.ndarray) -> tuple[int, int] | None:
        target, pred = memory.to_host(target), memory.to_host(pred)
        if target.ndim == 2 and target.shape[1] >= 2:
            return int(np.sum(_argmax_hits(pred, np.argmax(target, 1)))), len(target)
        column = _as_column(target.shape)
        if column is None or column != _as_column(pred.shape):
            return None
        labels = target.reshape(-1)
        if not np.all((labels == 0) | (labels == 1)):
            return None
        p = pred.reshape(-1)
        return int(np.sum(((p > 0.5) == (labels == 1)) & ~np.isnan(p))), len(labels)


def _argmax_hits(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows of pred whose argmax is the label; a row with a NaN (a diverged model's) predicts
    nothing, and is a miss (NumPy's argmax would pick the NaN's column)."""
    return (np.argmax(pred, 1) == labels) & ~np.isnan(pred).any(axis=1)


class BinaryCrossEntropy(_Elementwise):
    """Binary cross-entropy with targets in [0, 1], averaged over every entry.

    from_logits=True (the default, numerically stable) takes raw scores; False takes
    probabilities, e.g. the output of a sigmoid. Targets may be labels (m,) for a (m, 1)
    prediction. Accuracy thresholds the prediction at 0 (logits) or 0.5 (probabilities).
    With from_logits=True, a warning says so when the first batch's predictions (8 or
    more) all lie in [0, 1], as a sigmoid's would.
    """

    def __init__(self, from_logits: bool = True) -> None:
        super().__init__()
        self.from_logits = flag(from_logits, f"{type(self).__name__}: from_logits")

    def _target(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        target = super()._target(pred, target)
        if target.size and (target.min() < 0.0 or target.max() > 1.0):
            raise ValueError(f"{self!r}: targets must lie in [0, 1]; got values in "
                             f"[{target.min()}, {target.max()}]")
        return target

    def _check_first_input(self, pred: np.ndarray) -> None:
        if self.from_logits and pred.size >= 8 and pred.min() >= 0.0 and pred.max() <= 1.0:
            warnings.warn("BinaryCrossEntropy(from_logits=True) takes logits, but every "
                          "prediction lies in [0, 1] as a sigmoid's output would: remove the "
                          "final sigmoid (better) or use BinaryCrossEntropy(from_logits=False)",
                          stacklevel=3)

    def _compute(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        if not self.from_logits and isinstance(pred, np.ndarray):
            # as PyTorch: a log of a value outside [0, 1] is NaN, its gradient huge (NaN
            # itself, a diverged model's output, goes through: fit reports it). Host arrays
            # only: on a device the check would copy every batch's predictions back.
            outside = pred[(pred < 0.0) | (pred > 1.0)]
            if outside.size:
                raise ValueError(f"{self!r}(from_logits=False) takes probabilities in [0, 1] "
                                 f"(a sigmoid's output); got a prediction of {outside[0]}: end "
                                 "the model with activation='sigmoid', or give it raw scores "
                                 "with from_logits=True (more stable)")
        return _C.binary_cross_entropy(pred, target, from_logits=self.from_logits)

    def count_correct(self, pred: np.ndarray, target: np.ndarray) -> tuple[int, int] | None:
        pred = memory.to_host(pred)
        target = self._target(pred, numeric(target, lambda: f"{self!r}: target"))
        threshold = 0.0 if self.from_logits else 0.5
        hits = ((pred > threshold) == (target > 0.5)) & ~np.isnan(pred)  # NaN: no prediction
        return int(np.sum(hits)), target.size


def _labels_below(labels: np.ndarray, classes: int) -> bool:
    """Whether every one of the (non-empty, integer-valued) labels lies in [0, classes), in
    one pass over them where they are integers: a negative one, read unsigned, is past any
    class count (the check is on every batch's path; three passes and an index search had
    cost 1% of a batch-32 training step)."""
    kind = labels.dtype.kind
    if kind == "i":
        return int(labels.view(labels.dtype.str.replace("i", "u")).max()) < classes
    if kind == "u":
        return int(labels.max()) < classes
    return bool(labels.min() >= 0) and bool(labels.max() < classes)


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits (m, classes), averaged over the rows.

    target: integer labels (m,) in [0, classes), or a (m, classes) distribution
    (one-hot or soft). Accuracy compares the argmax of the logits with the label.
    A warning says so when the first batch looks like probabilities (a Softmax output).
    """

    _device_kernels = True

    def _target(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        if pred.ndim != 2:
            raise ValueError(f"{self!r}: pred must be logits of shape (batch, classes); "
                             f"got {pred.shape}")
        if pred.shape[1] == 1:  # softmax over one class: the loss is 0 whatever the weights
            labels = target.reshape(-1) if target.shape[1:] in ((), (1,)) else target[:0]
            # Labels above 1 need one unit per class: "2 units" would fail next.
            top = (int(labels.max()) if labels.size and np.all(np.mod(labels, 1) == 0)
                   else 1)
            hint = (f"this batch's labels go up to {top}: give the last layer {top + 1} units "
                    "(one per class)" if top > 1 else
                    "for two classes use loss='binary_cross_entropy' with this one unit, or "
                    "give the last layer 2 units")
            raise ValueError(f"{self!r}: needs one output per class (2 or more); pred has "
                             f"shape {pred.shape}, one output unit: {hint}")
        if target.ndim == 2 and target.shape[1] == 1 and pred.shape[1] > 1:
            target = target[:, 0]  # labels as a column, as Keras accepts them
        if target.ndim == 2:
            if target.shape != pred.shape:
                raise ValueError(f"{self!r}: target distribution has shape {target.shape}; "
                                 f"expected {pred.shape} like pred")
            return as_float32(target, lambda: f"{self!r}: target")
        if target.ndim != 1:
            raise ValueError(f"{self!r}: target must be labels (batch,) or a distribution "
                             f"(batch, classes); got shape {target.shape}")
        if target.dtype.kind == "f":
            if not np.all(np.mod(target, 1) == 0):
                raise TypeError(f"{self!r}: labels must be integers; got {target.dtype} values "
                                "with a fractional part")
        elif target.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: labels must be integers; got dtype {target.dtype}")
        # Before the int64 conversion, which would wrap or saturate some. A host batch's int64
        # labels are left to the kernel, which checks them anyway (a NumPy pass over 32 labels
        # cost 1.6% of a batch-32 step), and _compute names a bad one as this does.
        # (CrossEntropy's own _compute only: a subclass's may index with them)
        if target.size and not (target.dtype == np.int64 and type(pred) is np.ndarray
                                and type(self)._compute is CrossEntropy._compute):
            message = self._bad_label(pred, target)
            if message:
                raise ValueError(message)
        return memory.asarray(target, np.int64)

    def _bad_label(self, pred: np.ndarray, target: np.ndarray) -> str | None:
        """What names the first label outside [0, classes) by its index and value, or None."""
        if _labels_below(target, pred.shape[1]):
            return None
        bad = np.flatnonzero((target < 0) | (target >= pred.shape[1]))
        return (f"{self!r}: labels[{bad[0]}] = {target[bad[0]]} is outside [0, {pred.shape[1]}) "
                f"(the number of classes, pred's shape {pred.shape})") if bad.size else None

    def _check_first_input(self, pred: np.ndarray) -> None:
        if (pred.size and pred.shape[1] > 1 and pred.min() >= 0.0 and pred.max() <= 1.0
                and np.all(np.abs(pred.sum(axis=1, dtype=np.float64) - 1.0) <= 1e-3)):
            warnings.warn("CrossEntropy takes logits, but its input looks like probabilities "
                          "(every row lies in [0, 1] and sums to 1), so softmax is applied "
                          "twice: remove the final Softmax layer", stacklevel=3)

    def _compute(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        if target.ndim == 1:
            try:
                return _C.cross_entropy(pred, target)
            except ValueError:
                # a host batch's refused label, in _target's words (device labels: the kernel's)
                if memory.is_tensor(target) or not target.size:
                    raise
                message = self._bad_label(pred, target)
                if message is None:
                    raise
            raise ValueError(message) from None
        return _C.cross_entropy_soft(pred, target)

    def count_correct(self, pred: np.ndarray, target: np.ndarray) -> tuple[int, int] | None:
        target = memory.to_host(target)
        if target.ndim == 2 and target.shape[1] == 1 and np.ndim(pred) == 2 and pred.shape[1] > 1:
            target = target[:, 0]  # labels as a column, as the loss takes them (not one class)
        if target.ndim == 1 and target.dtype.kind in "iu" and np.ndim(pred) == 2:
            return _C.argmax_matches(pred, target), len(target)  # one C++ pass, not three of NumPy
        labels = np.argmax(target, 1) if target.ndim == 2 else target
        return int(np.sum(_argmax_hits(memory.to_host(pred), labels))), len(labels)


_NAMES = {
    "mse": MSE,
    "mean_squared_error": MSE,
    "bce": BinaryCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
    "ce": CrossEntropy,
    "cross_entropy": CrossEntropy,
    "categorical_crossentropy": CrossEntropy,
    "sparse_categorical_crossentropy": CrossEntropy,
}


def get(name: str | Loss) -> Loss:
    """A loss from its name (case-insensitive, '-' same as '_'); a Loss is returned as is."""
    if isinstance(name, Loss):
        if type(name)._compute is Loss._compute or type(name)._target is Loss._target:
            raise TypeError(f"loss: {type(name).__name__} does not implement _target and "
                            "_compute (fastnn.losses.Loss is the abstract base class); pass "
                            "a loss such as CrossEntropy() or a subclass implementing them")
        return name
    if not isinstance(name, str):
        raise TypeError(f"loss must be a name or a fastnn.losses.Loss; got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in _NAMES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(_NAMES)}")
    return _NAMES[key]()
