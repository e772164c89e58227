"""Classification metrics: accuracy, top-k accuracy, macro precision / recall / F1 and the
confusion matrix, vectorised with NumPy.

The functions take ``y_true`` (integer labels (n,), a (n, 1) column or one-hot /
probability rows (n, classes)) and ``y_pred``: labels (n,) of an integer dtype (or floats
that are whole numbers, some above 1, as scikit-learn reads them), or the model's outputs,
scores (n, classes) whose argmax is the prediction, or a single column of binary scores
(n,) / (n, 1) predicted as class 1 where they exceed ``threshold``: 0.5 by default
(probabilities, and a regression output trained on 0/1 targets, as ``evaluate`` cuts
them); pass 0.0 for logits (a model without a sigmoid, loss "bce": a logit of 0 is a
probability of 0.5, and ``evaluate`` cuts them there). Scores outside [0, 1] cut at the
default give a MetricWarning saying so (a one-logit model's accuracy had read 0.858
against evaluate's 0.900, silently); an explicit threshold gives none. Whether floats
(n,) are labels is decided by
their finite values alone: a NaN among whole-number labels (a diverged model's output)
is a miss, as a row of scores holding a NaN is, and leaves the other samples read as
they were; an infinite value among them is a ValueError (no class is infinite).

Precision, recall and F1 are macro averages (the unweighted mean over classes) over the
classes that occur in ``y_true`` or in the predictions, as scikit-learn's
``average="macro"``; a class never predicted has precision 0, as with its
``zero_division=0``.

For ``fit`` and ``evaluate`` the same metrics exist as streaming ``Metric`` objects that
accumulate over the batches: ``compile(metrics=["accuracy", "top_k_accuracy", "f1"])``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import warnings

import numpy as np

from ._checks import number, numeric, positive_int


class MetricWarning(UserWarning):
    """A metric asked for in ``compile`` or ``evaluate`` that cannot be computed for the
    loss and the targets given, and is left out of the logs."""


def true_labels(y_true: object, name: str = "y_true") -> np.ndarray:
    """``y_true`` as int64 labels (n,): labels as they are (integral floats accepted), a
    (n, 1) column flattened, (n, classes) one-hot or probability rows by their argmax."""
    y = numeric(y_true, name)
    if y.ndim == 2:
        _some_columns(y, name)
        y = y[:, 0] if y.shape[1] == 1 else np.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(f"{name} must be labels (n,) or rows (n, classes); got shape {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} must hold integer class labels; got NaN or infinite values")
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise ValueError(f"{name} must hold integer class labels; got values with a "
                         "fractional part")
    if y.size and y.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0; got {y.min()}")
    return _as_int64(y, name)


def _as_int64(y: np.ndarray, name: str) -> np.ndarray:
    """Labels >= 0 as int64, refusing those the conversion would wrap (uint64 >= 2**63)."""
    if y.size and y.dtype.kind in "uf" and y.max() >= 2.0**63:
        raise ValueError(f"{name} holds label {y.max()}, beyond the int64 range")
    return y.astype(np.int64, copy=False)


def _some_columns(y: np.ndarray, name: str) -> None:
    """ValueError for rows (n, 0): no column to take a class from (argmax's own error
    named nothing)."""
    if y.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column (labels (n, 1) or rows "
                         f"(n, classes)); got shape {y.shape}")


def _threshold(value: object, name: str = "threshold") -> float | None:
    """``threshold`` as a float: a number that is not NaN (every comparison with NaN is
    False: all class 0, silently); TypeError/ValueError naming it otherwise. None stays
    None: the default, 0.5, said where the scores leave [0, 1] (``predicted_labels``)."""
    if value is None:
        return None
    value = number(value, name)
    if np.isnan(value):
        raise ValueError(f"{name} must be a number, not NaN")
    return value


def predicted_labels(y_pred: object, threshold: float | None = None,
                     name: str = "y_pred") -> np.ndarray:
    """``y_pred`` as int64 labels (n,): integer labels as they are, the argmax of score rows
    (n, classes > 1), or ``score > threshold`` for one column of binary scores (None: 0.5,
    with a MetricWarning where a score lies outside [0, 1], as the module's docstring
    says). A NaN among
    whole-number float labels comes back as 0: the callers count it a miss (``_scored``)."""
    threshold = _threshold(threshold)
    y = numeric(y_pred, name)
    if y.ndim == 2:
        _some_columns(y, name)
        if y.shape[1] > 1:
            return np.argmax(y, axis=1)
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be labels (n,) or scores (n, classes); got shape "
                         f"{y.shape}")
    if y.dtype.kind in "biu" or _whole_labels(y):
        if y.dtype.kind == "f":
            if np.isinf(y).any():
                raise ValueError(f"{name} holds whole-number class labels and an infinite "
                                 "value, which names no class")
            y = np.where(np.isnan(y), 0.0, y)  # predicts nothing: a miss (_scored)
        if y.size and y.min() < 0:
            raise ValueError(f"{name} must hold labels >= 0; got {y.min()}")
        return _as_int64(y, name)
    if threshold is None:
        finite = y[np.isfinite(y)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            warnings.warn(f"{name}: one column of scores outside [0, 1] (from {finite.min():.3g} "
                          f"to {finite.max():.3g}) is cut at 0.5; for logits (no sigmoid, loss "
                          "'bce') pass threshold=0.0, as evaluate cuts them; pass threshold=0.5 "
                          "to keep this without the warning", MetricWarning, stacklevel=4)
        threshold = 0.5
    return (y > threshold).astype(np.int64)


def _whole_labels(y: np.ndarray) -> bool:
    """Floats that can only be class labels: whole numbers >= 0, some of them above 1 (as
    scikit-learn reads them; no probability is above 1, and whole numbers 0 and 1 name the
    same classes either way). Decided by the finite values: one NaN (a diverged sample)
    had turned every other label into a binary score."""
    finite = y[np.isfinite(y)]
    return bool(finite.size and finite.min() >= 0 and finite.max() >= 2
                and np.all(finite == np.round(finite)))


def _pair(y_true: object, y_pred: object, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    t = true_labels(y_true)
    p = predicted_labels(y_pred, threshold)
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred must have one entry per sample; got {len(t)} "
                         f"and {len(p)}")
    columns = np.shape(y_pred)
    if len(columns) == 2 and columns[1] > 1 and t.size and t.max() >= columns[1]:
        # as top_k_accuracy: scores of 2 classes cannot be right about class 5
        raise ValueError(f"y_true has label {t.max()} but y_pred has {columns[1]} score "
                         f"columns (classes 0 .. {columns[1] - 1})")
    return t, p


def confusion_matrix(y_true: object, y_pred: object, num_classes: int | None = None, *,
                     threshold: float | None = None) -> np.ndarray:
    """The (classes, classes) int64 matrix whose entry [i, j] counts the samples of true
    class i predicted as class j (scikit-learn's layout). num_classes: its size (default:
    one more than the largest label seen, or the number of score columns). Scores holding
    a NaN (a diverged model's) name no class: a ValueError."""
    counts = _counts(y_true, y_pred, num_classes, threshold)
    missed = np.flatnonzero(counts[:, -1])
    if missed.size:
        raise ValueError(f"y_pred holds NaN scores ({int(counts[:, -1].sum())} samples, of true "
                         f"classes {missed.tolist()[:8]}): a diverged model's scores name no class")
    return counts[:, :-1]


_MAX_COUNTS = 2**28  # 2 GiB of int64 counts: 16,383 classes


def _counts(y_true: object, y_pred: object, num_classes: int | None,
            threshold: float | None) -> np.ndarray:
    """The confusion matrix with one more column: per true class, the samples whose scores
    hold a NaN (no prediction; misses for precision, recall and F1)."""
    t, p = _pair(y_true, y_pred, threshold)
    if len(t) == 0:  # NumPy's reshape error had said it, naming nothing
        raise ValueError("y_true has no samples: precision, recall, F1 and the confusion matrix "
                         "of an empty set are undefined")
    scored = _scored(y_pred, len(t))
    seen = int(max(t.max(initial=-1), p[scored].max(initial=-1))) + 1
    scores = np.shape(y_pred)
    columns = scores[1] if len(scores) == 2 and scores[1] > 1 else 0
    size = max(seen, columns) if num_classes is None else positive_int(num_classes,
                                                                       "num_classes")
    if seen > size:
        raise ValueError(f"num_classes={size} but the labels go up to {seen - 1}")
    if size * (size + 1) > _MAX_COUNTS:
        raise ValueError(f"labels up to {size - 1} need a {size} x {size} confusion matrix, "
                         f"more than {_MAX_COUNTS:,} counts: labels must be class indices "
                         "0 .. classes - 1")
    # an unscored sample goes to column `size`: (size + 1) columns a row
    q = np.where(scored, p, size)
    return np.bincount(t * (size + 1) + q, minlength=size * (size + 1)).reshape(size, size + 1)


def _scored(y_pred: object, n: int) -> np.ndarray:
    """Which of the n samples have scores without a NaN (a diverged model's rows have NaNs:
    they predict nothing, and count as misses)."""
    y = np.asarray(y_pred)
    if y.dtype.kind not in "fc" or y.ndim == 0 or len(y) != n:
        return np.ones(n, bool)
    return ~np.isnan(y.reshape(n, -1)).any(axis=1)


def accuracy(y_true: object, y_pred: object, *, threshold: float | None = None) -> float:
    """The fraction of samples whose predicted class is the true one (a sample whose scores
    hold a NaN is a miss)."""
    t, p = _pair(y_true, y_pred, threshold)
    if len(t) == 0:
        raise ValueError("accuracy of an empty set: y_true has no samples")
    return float(np.mean((t == p) & _scored(y_pred, len(t))))


def top_k_accuracy(y_true: object, scores: object, k: int = 5) -> float:
    """The fraction of samples whose true class is among the ``k`` highest scores
    (n, classes). Ties rank as ``accuracy``'s argmax ranks them, the lower class first (so
    that k=1 is ``accuracy``: a model whose scores are all equal is not a perfect one); a row
    with a NaN is a miss."""
    return float(np.mean(_top_k_hits(true_labels(y_true), scores, positive_int(k, "k"))))


def _top_k_hits(t: np.ndarray, scores: object, k: int) -> np.ndarray:
    s = numeric(scores, "scores")
    if s.ndim != 2 or len(s) != len(t) or len(t) == 0:
        raise ValueError(f"scores must be (n, classes) for the {len(t)} labels of y_true; "
                         f"got shape {s.shape}")
    if t.max() >= s.shape[1]:
        raise ValueError(f"y_true has label {t.max()} but scores has {s.shape[1]} columns")
    if k >= s.shape[1]:  # as scikit-learn's top_k_accuracy_score warns
        warnings.warn(f"top_k_accuracy: k={k} is not below the {s.shape[1]} classes, so every "
                      "sample is a hit: the score says nothing (choose a smaller k)",
                      MetricWarning, stacklevel=3)
    own = s[np.arange(len(t)), t][:, None]
    lower = np.arange(s.shape[1]) < t[:, None]
    ahead = np.count_nonzero((s > own) | ((s == own) & lower), axis=1)
    return (ahead < k) & _scored(s, len(t))


def _macro(counts: np.ndarray, kind: str) -> float:
    """Macro precision, recall or F1 from ``_counts``'s matrix, over the classes present
    (true or predicted); 0 for a class where the ratio is 0/0. An unscored sample is a
    miss: in its class's samples, no class's predictions."""
    cm = counts[:, :-1]
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), counts.sum(axis=1)
    present = (predicted + actual) > 0
    if not present.any():
        raise ValueError(f"{kind} of an empty set: no samples")
    denominator = {"precision": predicted, "recall": actual, "f1": predicted + actual}[kind]
    numerator = 2 * tp if kind == "f1" else tp
    per_class = np.divide(numerator, denominator, out=np.zeros_like(tp),
                          where=denominator > 0)
    return float(per_class[present].mean())


def precision(y_true: object, y_pred: object, *, threshold: float | None = None) -> float:
    """Macro-averaged precision: per class, correct predictions of it / predictions of it."""
    return _macro(_counts(y_true, y_pred, None, threshold), "precision")


def recall(y_true: object, y_pred: object, *, threshold: float | None = None) -> float:
    """Macro-averaged recall: per class, correct predictions of it / samples of it."""
    return _macro(_counts(y_true, y_pred, None, threshold), "recall")


def f1(y_true: object, y_pred: object, *, threshold: float | None = None) -> float:
    """Macro-averaged F1: per class the harmonic mean of precision and recall,
    2 TP / (2 TP + FP + FN)."""
    return _macro(_counts(y_true, y_pred, None, threshold), "f1")


class Metric:
    """A metric accumulated over batches, as ``fit`` and ``evaluate`` use it.

    ``reset()`` starts a pass, ``update(y_true, y_pred)`` adds a batch (``y_pred`` is the
    model's output), ``result()`` gives the value so far, or None where the metric is
    undefined for this model (it is then left out of the logs). ``name`` is its key in
    the History. Subclass it for a metric of your own and pass an instance to
    ``compile(metrics=[...])``.
    """

    name = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> float | None:
        raise NotImplementedError

    def state(self) -> Any:
        """The counts ``result`` comes from (picklable), for ``merge``; None (the default)
        for a metric that cannot be combined, which ``fit(distributed=True)`` then logs as
        the processes' results' mean weighted by their sample counts."""
        return None

    def merge(self, states: Sequence[Any]) -> None:
        """Make this pass's counts those of all ``states`` together (``state()`` of every
        process, this one's included), so that ``result`` is the metric over all of them."""
        raise NotImplementedError(f"{self!r} has no merge")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class TopKAccuracy(Metric):
    """Top-k accuracy over the batches (see ``top_k_accuracy``)."""

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        self.k = positive_int(k, "k")
        self.name = name or f"top_{self.k}_accuracy"
        self.reset()

    def reset(self) -> None:
        self._hits = self._count = 0

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        self._hits += int(np.count_nonzero(_top_k_hits(true_labels(y_true), y_pred, self.k)))
        self._count += len(y_pred)

    def result(self) -> float | None:
        return self._hits / self._count if self._count else None

    def state(self) -> tuple[int, int]:
        return self._hits, self._count

    def merge(self, states: Sequence[tuple[int, int]]) -> None:
        self._hits, self._count = (sum(s[i] for s in states) for i in (0, 1))


class _Macro(Metric):
    """Macro precision / recall / F1 over the batches, from a growing confusion matrix."""

    def __init__(self, kind: str, threshold: float) -> None:
        self.name = self._kind = kind
        self.threshold = _threshold(threshold)
        self.reset()

    def reset(self) -> None:
        self._cm = np.zeros((0, 1), np.int64)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        self._cm = _grown_sum([self._cm, _counts(y_true, y_pred, None, self.threshold)])

    def result(self) -> float | None:
        return _macro(self._cm, self._kind) if self._cm.any() else None

    def state(self) -> np.ndarray:
        return self._cm

    def merge(self, states: Sequence[np.ndarray]) -> None:
        self._cm = _grown_sum(states)


def _grown_sum(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """The sum of ``_counts`` matrices of any sizes, each padded to the largest (its last
    column, the unscored samples, kept last)."""
    size = max(len(cm) for cm in matrices)
    total = np.zeros((size, size + 1), np.int64)
    for cm in matrices:
        n = len(cm)
        total[:n, :n] += cm[:, :n]
        total[:n, -1] += cm[:, -1]
    return total


class Precision(_Macro):
    """Macro precision over the batches (see ``precision``)."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__("precision", threshold)


class Recall(_Macro):
    """Macro recall over the batches (see ``recall``)."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__("recall", threshold)


class F1(_Macro):
    """Macro F1 over the batches (see ``f1``)."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__("f1", threshold)


_BY_NAME = {"precision": Precision, "recall": Recall, "f1": F1}
_TOP_K = re.compile(r"top_(\d+)_accuracy")
NAMES = ("accuracy", "top_k_accuracy", "top_<k>_accuracy", "precision", "recall", "f1")


def get(metric: str | Metric, threshold: float = 0.5) -> Metric:
    """A fresh streaming metric from its name: "top_k_accuracy" (k = 5, as Keras),
    "top_<k>_accuracy" (e.g. "top_3_accuracy"), "precision", "recall" or "f1";
    ``threshold`` is where binary scores become class 1. A Metric is returned as is.
    ("accuracy" is computed by the training loop from the loss; see ``compile``.)"""
    if isinstance(metric, Metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"a metric must be a name or a fastnn.metrics.Metric; got "
                        f"{type(metric).__name__}")
    key = metric.lower()
    if key == "top_k_accuracy":
        return TopKAccuracy(5, name=metric)
    match = _TOP_K.fullmatch(key)
    if match:
        return TopKAccuracy(int(match.group(1)), name=metric)
    if key in _BY_NAME:
        return _BY_NAME[key](threshold)
    if key == "accuracy":  # listed in NAMES (compile's), which had made the refusal contradict itself
        raise ValueError("metrics.get('accuracy'): accuracy is counted by the training loop from "
                         "the loss (compile(metrics=['accuracy'])); for arrays, "
                         "fastnn.metrics.accuracy(y_true, y_pred)")
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(NAMES)} "
                     "or a fastnn.metrics.Metric")
