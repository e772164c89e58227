"""fastnn.metrics against loop-based references (always) and scikit-learn (when installed),
and the metrics that compile / fit / evaluate report by name."""

import warnings

import numpy as np
import pytest

import fastnn
from fastnn import losses, metrics, nn, optim

try:
    import sklearn.metrics as skm
except ImportError:  # pragma: no cover - scikit-learn is in the test extra
    skm = None

needs_sklearn = pytest.mark.skipif(skm is None, reason="scikit-learn not installed")


def confusion_loop(t, p, size):
    cm = np.zeros((size, size), np.int64)
    for a, b in zip(t, p):
        cm[a, b] += 1
    return cm


def macro_loop(t, p, kind):
    """Per class over the classes in t or p, 0 where undefined, then the mean."""
    values = []
    for c in sorted(set(t) | set(p)):
        tp = sum(1 for a, b in zip(t, p) if a == c and b == c)
        fp = sum(1 for a, b in zip(t, p) if a != c and b == c)
        fn = sum(1 for a, b in zip(t, p) if a == c and b != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        values.append({"precision": prec, "recall": rec, "f1": f}[kind])
    return float(np.mean(values))


@pytest.fixture
def labels(rng):
    # Class 4 is never predicted, class 5 never true: the edge cases of macro averages.
    t = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 6, 300))
    p[p == 4] = 5
    return t, p


def scores_for(labels_, classes, rng):
    """Scores (n, classes) whose argmax is ``labels_``."""
    s = rng.standard_normal((len(labels_), classes))
    s[np.arange(len(labels_)), labels_] = s.max(axis=1) + 1.0
    return s


def test_confusion_matrix_against_loop(labels, rng):
    t, p = labels
    expected = confusion_loop(t, p, 6)
    np.testing.assert_array_equal(metrics.confusion_matrix(t, p), expected)
    np.testing.assert_array_equal(metrics.confusion_matrix(t, scores_for(p, 6, rng)), expected)
    one_hot = np.eye(6)[t]
    np.testing.assert_array_equal(metrics.confusion_matrix(one_hot, p), expected)
    big = metrics.confusion_matrix(t, p, num_classes=8)
    assert big.shape == (8, 8) and big[:6, :6].tolist() == expected.tolist() and big[6:].sum() == 0


def test_confusion_matrix_size_follows_score_columns(rng):
    t = np.array([0, 1, 1])
    cm = metrics.confusion_matrix(t, scores_for(t, 4, rng))
    assert cm.shape == (4, 4)


@pytest.mark.parametrize("kind", ["precision", "recall", "f1"])
def test_macro_metrics_against_loop(labels, kind):
    t, p = labels
    got = getattr(metrics, kind)(t, p)
    assert got == pytest.approx(macro_loop(t.tolist(), p.tolist(), kind), abs=1e-12)


def test_small_example_by_hand():
    t = [0, 0, 1, 1, 2]
    p = [0, 1, 1, 1, 0]
    # class 0: tp 1 fp 1 fn 1; class 1: tp 2 fp 1 fn 0; class 2: tp 0 fp 0 fn 1
    assert metrics.precision(t, p) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert metrics.recall(t, p) == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert metrics.f1(t, p) == pytest.approx((2 / 4 + 4 / 5 + 0) / 3)
    assert metrics.accuracy(t, p) == pytest.approx(3 / 5)


@needs_sklearn
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_against_sklearn(labels, rng):
    t, p = labels
    np.testing.assert_array_equal(metrics.confusion_matrix(t, p), skm.confusion_matrix(t, p))
    assert metrics.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))
    for ours, theirs in ((metrics.precision, skm.precision_score), (metrics.recall, skm.recall_score),
                         (metrics.f1, skm.f1_score)):
        assert ours(t, p) == pytest.approx(theirs(t, p, average="macro", zero_division=0), abs=1e-12)


@needs_sklearn
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_against_sklearn(rng, k):
    t = rng.integers(0, 6, 400)
    s = rng.standard_normal((400, 6))
    expected = skm.top_k_accuracy_score(t, s, k=k, labels=np.arange(6))
    assert metrics.top_k_accuracy(t, s, k=k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_k_against_argsort(rng, k):
    t = rng.integers(0, 7, 300)
    s = rng.standard_normal((300, 7))
    top = np.argsort(-s, axis=1)[:, :k]
    expected = np.mean([label in row for label, row in zip(t, top)])
    assert metrics.top_k_accuracy(t, s, k=k) == pytest.approx(expected, abs=1e-12)
    assert metrics.top_k_accuracy(t, s, k=1) == pytest.approx(metrics.accuracy(t, s), abs=1e-12)


def test_top_k_ranks_ties_as_accuracy_does(rng):
    """Found by an attack: a tie with the k-th score counted as a hit, so a model whose scores
    were all equal (collapsed, dead ReLUs) had top-1 and top-5 accuracy 1.0 beside an
    accuracy of 0.1; ties now rank the lower class first, as accuracy's argmax does."""
    t = np.arange(10)
    flat = np.zeros((10, 10), np.float32)
    assert metrics.accuracy(t, flat) == 0.1
    assert metrics.top_k_accuracy(t, flat, k=1) == 0.1
    assert metrics.top_k_accuracy(t, flat, k=5) == 0.5
    s = rng.integers(0, 3, (500, 6)).astype(np.float64)   # many ties
    t = rng.integers(0, 6, 500)
    assert metrics.top_k_accuracy(t, s, k=1) == metrics.accuracy(t, s)
    for k in (2, 3):   # a stable sort of -s ranks equal scores by class
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        expected = np.mean([label in row for label, row in zip(t, top)])
        assert metrics.top_k_accuracy(t, s, k=k) == pytest.approx(expected, abs=1e-12)
    streamed = metrics.get("top_2_accuracy")
    for i in range(0, 500, 64):
        streamed.update(t[i:i + 64], s[i:i + 64])
    assert streamed.result() == pytest.approx(metrics.top_k_accuracy(t, s, k=2), abs=1e-12)


def test_rows_with_nan_scores_are_misses(rng):
    """A diverged model's NaN scores predict nothing: top-k counted every such row as a hit
    (no score beats NaN), accuracy took NumPy's argmax (the NaN's column)."""
    t = np.array([0, 1, 2, 3])
    s = rng.standard_normal((4, 10)).astype(np.float32)
    s[np.arange(4), t] = 5.0  # every row right
    assert metrics.accuracy(t, s) == 1.0 and metrics.top_k_accuracy(t, s, k=1) == 1.0
    s[1, 7] = np.nan
    s[2, 0] = np.nan
    assert metrics.accuracy(t, s) == 0.5
    assert metrics.top_k_accuracy(t, s, k=3) == 0.5
    nan = np.full((4, 10), np.nan, np.float32)
    assert metrics.accuracy(t, nan) == 0.0 and metrics.top_k_accuracy(t, nan, k=5) == 0.0
    assert metrics.accuracy([0, 1], np.array([[np.nan], [0.9]])) == 0.5  # binary scores
    # the training metrics: the losses' counts
    labels = np.zeros(4, np.int64)
    assert losses.CrossEntropy().count_correct(nan, labels) == (0, 4)
    assert losses.CrossEntropy().count_correct(nan, np.eye(10, dtype=np.float32)[labels]) == (0, 4)
    assert losses.MSE().count_correct(nan, np.eye(10, dtype=np.float32)[labels]) == (0, 4)
    col = np.full((4, 1), np.nan, np.float32)
    assert losses.MSE().count_correct(col, np.zeros((4, 1), np.float32)) == (0, 4)
    assert losses.BinaryCrossEntropy().count_correct(col, np.zeros((4, 1), np.float32)) == (0, 4)


def test_precision_recall_f1_count_nan_rows_as_misses_and_the_matrix_refuses_them():
    """They took NumPy's argmax of a NaN row (its NaN's column) as a prediction, so their
    confusion matrix disagreed with accuracy."""
    t = np.array([0, 0, 1, 1])
    s = np.array([[2.0, 1.0], [np.nan, 1.0], [0.0, 3.0], [1.0, 2.0]], np.float32)
    # class 0: 1 of its 2 samples predicted (the other has no prediction), 1 prediction of it
    assert metrics.precision(t, s) == pytest.approx(1.0)
    assert metrics.recall(t, s) == pytest.approx(0.75)
    assert metrics.f1(t, s) == pytest.approx((2 / 3 + 1.0) / 2)
    stream = metrics.F1()
    stream.reset()
    stream.update(t[:2], s[:2])
    stream.update(t[2:], s[2:])
    assert stream.result() == pytest.approx(metrics.f1(t, s))
    with pytest.raises(ValueError, match=r"y_pred holds NaN scores \(1 samples, of true classes \[0\]\)"):
        metrics.confusion_matrix(t, s)
    np.testing.assert_array_equal(metrics.confusion_matrix(t, np.nan_to_num(s)), [[1, 1], [0, 2]])


def test_binary_scores_use_the_threshold():
    t = np.array([0, 1, 1, 0])
    logits = np.array([[-0.2], [0.3], [-0.1], [0.4]])
    assert metrics.accuracy(t, logits, threshold=0.0) == 0.5   # predicted 0, 1, 0, 1
    assert metrics.accuracy(t, logits, threshold=-0.15) == 0.75  # predicted 0, 1, 1, 1
    assert metrics.accuracy(t, logits) == 0.5                     # 0.5: all predicted 0
    np.testing.assert_array_equal(metrics.confusion_matrix(t, logits, threshold=0.0),
                                  [[1, 1], [1, 1]])
    probs = np.array([0.1, 0.9, 0.6, 0.2])
    assert metrics.accuracy(t.astype(np.float32), probs) == 1.0


def test_float_labels_are_labels_as_scikit_learn_reads_them():
    t = np.array([0, 1, 2, 2, 1, 0])
    f = t.astype(np.float64)  # e.g. labels that went through a float array
    assert metrics.accuracy(t, f) == 1.0
    assert metrics.f1(t, f) == 1.0
    np.testing.assert_array_equal(metrics.confusion_matrix(t, f), np.diag([2, 2, 2]))
    wrong = np.array([0.0, 2.0, 2.0, 2.0, 1.0, 0.0])
    assert metrics.accuracy(t, wrong) == pytest.approx(5 / 6)
    # scores that are not whole numbers, or whole numbers 0 and 1, are still thresholded
    assert metrics.accuracy([0, 1], np.array([0.4, 1.5]), threshold=0.5) == 1.0
    assert metrics.accuracy([0, 1], np.array([0.0, 1.0]), threshold=0.0) == 1.0


def test_binary_scores_outside_0_1_cut_at_the_default_are_said_to_be(recwarn):
    """Found by an attack: a one-logit binary model (loss "bce", from logits) scored 0.900 in
    evaluate and 0.858 in metrics.accuracy and confusion_matrix, which cut its logits at
    0.5, silently. The default stays 0.5 (a regression output on 0/1 targets, as evaluate
    cuts it; a first fix that cut scores outside [0, 1] at 0 broke those, found by a
    review); such scores cut at the default are said to be, and threshold=0.0 cuts logits."""
    t = np.array([1, 1, 0, 0, 1])
    logits = np.array([[0.3], [2.0], [-1.0], [-0.2], [0.1]], np.float32)
    with pytest.warns(metrics.MetricWarning, match=r"outside \[0, 1\].*threshold=0\.0"):
        assert metrics.accuracy(t, logits) == 0.6
    assert metrics.accuracy(t, logits, threshold=0.0) == 1.0
    np.testing.assert_array_equal(metrics.confusion_matrix(t, logits, threshold=0.0), [[2, 0], [0, 3]])
    regression = np.array([1.05, 0.9, -0.01, 0.2, 0.6])   # MSE on 0/1 targets: evaluate's cut
    with pytest.warns(metrics.MetricWarning):
        assert metrics.accuracy(t, regression) == 1.0
    recwarn.clear()
    assert metrics.accuracy(t, regression, threshold=0.5) == 1.0     # chosen: no warning
    assert metrics.accuracy(t, 1 / (1 + np.exp(-logits))) == 1.0     # probabilities
    assert not [w for w in recwarn if issubclass(w.category, metrics.MetricWarning)]


@pytest.mark.parametrize("call,message", [
    (lambda: metrics.accuracy([0, 1], [0]), "one entry per sample"),
    (lambda: metrics.confusion_matrix([0, 3], [0, 1], num_classes=2), "num_classes"),
    (lambda: metrics.precision([0, -1], [0, 1]), ">= 0"),
    (lambda: metrics.recall([0.5, 1], [0, 1]), "integer"),
    (lambda: metrics.top_k_accuracy([0, 1], np.zeros((2, 3)), k=0), "k"),
    (lambda: metrics.top_k_accuracy([0, 5], np.zeros((2, 3))), "columns"),
    (lambda: metrics.top_k_accuracy([0, 1], np.zeros(2)), "scores"),
    (lambda: metrics.get("auc"), "unknown metric"),
])
def test_clear_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_streaming_metrics_equal_whole_set(labels, rng):
    """Accumulated over batches (classes appearing late included) = computed at once."""
    t, p = labels
    order = np.argsort(t, kind="stable")      # class 4 and 5 show up only in the last batches
    t, p = t[order], p[order]
    s = scores_for(p, 6, rng)
    for name, whole in (("f1", metrics.f1(t, p)), ("precision", metrics.precision(t, p)),
                        ("recall", metrics.recall(t, p)),
                        ("top_2_accuracy", metrics.top_k_accuracy(t, s, k=2))):
        m = metrics.get(name)
        m.reset()
        assert m.result() is None
        for i in range(0, len(t), 37):
            m.update(t[i:i + 37], s[i:i + 37])
        assert m.name == name
        assert m.result() == pytest.approx(whole, abs=1e-12), name


def test_merged_states_equal_the_whole_set(labels, rng):
    """What fit(distributed=True) does with each rank's counts: merged = computed at once,
    even where one part never saw the last classes (a smaller confusion matrix)."""
    t, p = labels
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    s = scores_for(p, 6, rng)
    cut = len(t) // 3
    for name, whole in (("f1", metrics.f1(t, p)), ("recall", metrics.recall(t, p)),
                        ("top_2_accuracy", metrics.top_k_accuracy(t, s, k=2))):
        parts = [metrics.get(name) for _ in range(3)]
        for part, (lo, hi) in zip(parts, [(0, cut), (cut, len(t)), (0, 0)]):
            part.reset()
            if hi > lo:
                part.update(t[lo:hi], s[lo:hi])
        parts[0].merge([part.state() for part in parts])
        assert parts[0].result() == pytest.approx(whole, abs=1e-12), name
    assert metrics.Metric().state() is None  # a metric of one's own: not mergeable by default


# ----------------------------------------------------------------------------- in fit / evaluate
@pytest.fixture(scope="module")
def digits():
    X_train, y_train, X_test, y_test = (np.asarray(a) for a in fastnn.datasets.load("digits"))
    return X_train[:400], y_train[:400], X_test, y_test


def test_fit_and_evaluate_report_named_metrics(digits):
    X, y, Xt, yt = digits
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 32, activation="relu"), nn.Dense(32, 10))
    names = ["accuracy", "top_k_accuracy", "top_3_accuracy", "precision", "recall", "f1"]
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=3e-3), metrics=names)
    history = model.fit(X, y, epochs=2, batch_size=64, validation_data=(Xt, yt), verbose=0, seed=0)
    for name in names:
        assert len(history.history[name]) == 2 and len(history.history[f"val_{name}"]) == 2
    result = model.evaluate(Xt, yt)
    logits = model.predict(Xt)
    assert result["accuracy"] == pytest.approx(metrics.accuracy(yt, logits), abs=1e-12)
    assert result["top_k_accuracy"] == pytest.approx(metrics.top_k_accuracy(yt, logits, 5), abs=1e-12)
    assert result["top_3_accuracy"] == pytest.approx(metrics.top_k_accuracy(yt, logits, 3), abs=1e-12)
    for name in ("precision", "recall", "f1"):
        assert result[name] == pytest.approx(getattr(metrics, name)(yt, logits), abs=1e-12)
    # The last epoch's validation values are those of evaluate on the same data.
    assert history.history["val_f1"][-1] == pytest.approx(result["f1"], abs=1e-12)
    # evaluate can be asked for other metrics than the compiled ones.
    only = model.evaluate(Xt, yt, metrics=["top_2_accuracy"])
    assert set(only) == {"loss", "top_2_accuracy"}


def test_binary_f1_thresholds_logits_at_zero():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 3)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] > 0.3).astype(np.float32).reshape(-1, 1)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(3, 1))
    model.compile(loss=losses.BinaryCrossEntropy(from_logits=True), optimizer=optim.Adam(lr=0.05),
                  metrics=["accuracy", "f1"])
    model.fit(X, y, epochs=5, batch_size=32, verbose=0, seed=0)
    result = model.evaluate(X, y)
    logits = model.predict(X)
    assert result["f1"] == pytest.approx(metrics.f1(y, logits, threshold=0.0), abs=1e-12)
    assert result["accuracy"] == pytest.approx(metrics.accuracy(y, logits, threshold=0.0), abs=1e-12)
    assert result["f1"] != pytest.approx(metrics.f1(y, logits, threshold=0.5), abs=1e-6)


def test_custom_metric_subclass(digits):
    X, y, _, _ = digits

    class MeanTopScore(metrics.Metric):
        name = "mean_top_score"

        def reset(self):
            self.total, self.count = 0.0, 0

        def update(self, y_true, y_pred):
            self.total += float(np.max(y_pred, axis=1).sum())
            self.count += len(y_pred)

        def result(self):
            return self.total / self.count

    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 10))
    model.compile(loss="cross_entropy", optimizer="sgd", metrics=[MeanTopScore()])
    result = model.evaluate(X, y)
    assert result["mean_top_score"] == pytest.approx(float(model.predict(X).max(axis=1).mean()), rel=1e-6)


def test_compile_rejects_unknown_metric():
    model = nn.Sequential(nn.Dense(4, 2))
    with pytest.raises(ValueError, match="roc"):
        model.compile(loss="cross_entropy", metrics=["roc"])


def test_top_k_accuracy_warns_when_k_leaves_no_miss():
    """Found by an attack: top-5 of 3 classes is 1.0 for any scores (scikit-learn warns)."""
    scores = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    with pytest.warns(metrics.MetricWarning, match="k=5 is not below the 3 classes"):
        assert metrics.top_k_accuracy([0, 2], scores, k=5) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.top_k_accuracy([0, 2], scores, k=2) == 0.0


def test_metrics_of_an_empty_set_and_nan_labels_say_so():
    """Found by an attack: precision/recall/F1/confusion_matrix of empty arrays failed in
    NumPy's reshape; a NaN label was called "a fractional part"."""
    from fastnn import metrics

    for fn in (metrics.precision, metrics.recall, metrics.f1, metrics.confusion_matrix):
        with pytest.raises(ValueError, match="y_true has no samples"):
            fn(np.array([], np.int64), np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.accuracy(np.array([np.nan, 1.0]), np.array([0, 1]))


def test_a_nan_among_float_labels_is_one_miss_not_a_switch_to_binary_scores():
    """Found by an attack: one NaN in a 1-D float prediction vector made every label a binary
    score (accuracy([0, 2, 1], [0., 2., nan]) was 0.333, precision 0.333)."""
    assert metrics.accuracy([0, 2, 1], [0.0, 2.0, 1.0]) == 1.0
    assert metrics.accuracy([0, 2, 1], [0.0, 2.0, np.nan]) == pytest.approx(2 / 3)
    assert metrics.accuracy([0, 2, 0], [np.nan, 2.0, 0.0]) == pytest.approx(2 / 3)  # NaN is no 0
    # class 0: 1/1, class 1 never predicted: 0, class 2: 2/2
    assert metrics.precision([0, 2, 2, 1], [0.0, 2.0, 2.0, np.nan]) == pytest.approx(2 / 3)
    assert metrics.recall([0, 2, 2, 1], [0.0, 2.0, 2.0, np.nan]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="NaN scores"):
        metrics.confusion_matrix([0, 2, 1], [0.0, 2.0, np.nan])
    with pytest.raises(ValueError, match="y_pred holds whole-number class labels and an infinite"):
        metrics.accuracy([0, 2, 1], [0.0, 2.0, np.inf])
    assert metrics.accuracy([0, 1], [np.nan, 0.9]) == 0.5  # binary scores stay binary scores


@pytest.mark.parametrize("call,error,message", [
    (lambda: metrics.accuracy(np.zeros((2, 0)), [0, 1]), ValueError,
     r"y_true must have at least one column .*got shape \(2, 0\)"),
    (lambda: metrics.accuracy([0, 1], np.zeros((2, 0))), ValueError,
     r"y_pred must have at least one column .*got shape \(2, 0\)"),
    (lambda: metrics.accuracy([0, 1], [0.2, 0.7], threshold="a"), TypeError,
     "threshold must be a number; got 'a'"),
    (lambda: metrics.f1([0, 1], [0.2, 0.7], threshold=float("nan")), ValueError,
     "threshold must be a number, not NaN"),
    (lambda: metrics.Precision(threshold="x"), TypeError, "threshold must be a number; got 'x'"),
    (lambda: metrics.accuracy([5, 1], np.zeros((2, 2))), ValueError,
     r"y_true has label 5 but y_pred has 2 score columns"),
    (lambda: metrics.confusion_matrix([5, 1], np.zeros((2, 2))), ValueError,
     r"y_true has label 5 but y_pred has 2 score columns"),
    (lambda: metrics.precision([5, 1], np.zeros((2, 2))), ValueError, "score columns"),
])
def test_metric_arguments_are_checked(call, error, message):
    """Found by an attack: empty rows reached argmax's error, threshold="a" NumPy's and NaN
    was taken (every sample class 0); a label beyond the score columns was counted (0.5, a
    6 x 6 matrix) where top_k_accuracy refused it."""
    with pytest.raises(error, match=message):
        call()
