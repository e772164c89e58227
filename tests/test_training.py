"""Training: end to end (XOR and depth, digits accuracy, determinism across thread counts,
the fit / evaluate / predict contracts and the three gradient-descent batch modes); the
training loop (stratified validation split, the learning rate in the History, schedules,
penalties in the reported loss, augmentation, the progress display, the callbacks:
EarlyStopping, ModelCheckpoint, LearningRateScheduler, CSVLogger, custom); and the whole
training step against a float64 NumPy network from the same weights, fused against unfused
paths, with no growth of memory in the steady state."""

import csv
import io as stdio
import math
import os
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, data, losses, nn, optim, schedulers

import _ref


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
XOR_Y = np.array([0, 1, 1, 0])


@pytest.fixture(scope="module")
def digits():
    X_train, y_train, X_test, y_test = fastnn.datasets.load("digits")
    return tuple(np.asarray(a) for a in (X_train, y_train, X_test, y_test))


def accuracy(model, X, y):
    return float(np.mean(np.asarray(model.predict(X)).argmax(axis=1) == y))


# ----------------------------------------------------------------------------- datasets
def test_load_digits(digits):
    X_train, y_train, X_test, y_test = digits
    assert X_train.ndim == 2 and X_train.shape[1] == 64 and X_test.shape[1] == 64
    assert len(X_train) == len(y_train) and len(X_test) == len(y_test)
    assert len(X_train) + len(X_test) == 1797
    assert 0 < len(X_test) < len(X_train)
    assert np.issubdtype(y_train.dtype, np.integer) and np.issubdtype(y_test.dtype, np.integer)
    assert set(np.unique(y_train)) == set(range(10))
    assert np.issubdtype(X_train.dtype, np.floating) and np.all(np.isfinite(X_train))


def test_load_digits_split_is_fixed(digits):
    again = fastnn.datasets.load("digits")
    for a, b in zip(digits, again):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_load_xor():
    X_train, y_train, X_test, y_test = (np.asarray(a) for a in fastnn.datasets.load("xor"))
    assert X_train.ndim == 2 and X_train.shape[1] == 2 and X_test.shape[1] == 2
    assert len(X_train) == len(y_train) and len(X_test) == len(y_test) and len(X_train) >= 4
    labels = np.asarray(y_train).reshape(len(y_train), -1)
    assert set(np.unique(labels.argmax(axis=1) if labels.shape[1] > 1 else labels)) == {0, 1}


# ----------------------------------------------------------------------------- XOR and depth
def train_xor(model, epochs=1500, lr=0.05):
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=lr), metrics=["accuracy"])
    model.fit(XOR_X, XOR_Y, epochs=epochs, batch_size=None, verbose=0, seed=0)
    return accuracy(model, XOR_X, XOR_Y)


@pytest.mark.parametrize("seed", [0, 1])
def test_single_layer_cannot_fit_xor(seed):
    fastnn.seed(seed)
    model = nn.Sequential(nn.Dense(2, 2))
    acc = train_xor(model)
    assert acc < 1.0, "a linear classifier cannot separate XOR"
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] < 1.0


def test_single_output_logistic_regression_cannot_fit_xor():
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(2, 1))
    model.compile(loss=losses.BinaryCrossEntropy(from_logits=True), optimizer=optim.Adam(lr=0.05))
    y = XOR_Y.reshape(4, 1).astype(np.float32)
    model.fit(XOR_X, y, epochs=1500, batch_size=None, verbose=0, seed=0)
    pred = (np.asarray(model.predict(XOR_X)).reshape(4) > 0).astype(int)
    assert np.mean(pred == XOR_Y) < 1.0


def test_one_hidden_layer_fits_xor():
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(2, 8, activation="tanh"), nn.Dense(8, 2))
    acc = train_xor(model)
    assert acc == 1.0
    result = model.evaluate(XOR_X, XOR_Y)
    assert result["accuracy"] == 1.0
    assert result["loss"] < 0.1


# ----------------------------------------------------------------------------- digits
def test_mlp_reaches_95_percent_on_digits(digits):
    X_train, y_train, X_test, y_test = digits
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 128, activation="relu"), nn.Dense(128, 10))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=3e-3), metrics=["accuracy"])
    history = model.fit(X_train, y_train, epochs=30, batch_size=32, verbose=0, seed=0)
    assert len(history.history["loss"]) == 30
    acc = accuracy(model, X_test, y_test)
    assert acc >= 0.95, f"test accuracy {acc:.4f}"
    assert model.evaluate(X_test, y_test)["accuracy"] == pytest.approx(acc, abs=1e-9)


def _train_digits(digits, threads, epochs=3, batch_size=128):
    X_train, y_train, _, _ = digits
    _ref.use_threads(threads)
    fastnn.seed(42)
    model = nn.Sequential(nn.Dense(64, 512, activation="relu"), nn.Dense(512, 256, activation="tanh"),
                          nn.Dense(256, 10))
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.01, momentum=0.9), metrics=["accuracy"])
    history = model.fit(X_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True,
                        validation_split=0.1, verbose=0, seed=7)
    return [p.data.copy() for p in model.parameters()], history.history, model.predict(X_train)


@pytest.mark.parametrize("batch_size", [128, None], ids=["mini-batch", "full-batch"])
def test_same_seed_bit_identical_with_one_and_two_threads(digits, batch_size):
    w1, h1, p1 = _train_digits(digits, 1, batch_size=batch_size)
    w2, h2, p2 = _train_digits(digits, 2, batch_size=batch_size)
    assert len(w1) == len(w2) == 6
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p1, p2)
    assert h1 == h2
    # and the run actually trained (weights moved, loss finite)
    assert all(np.isfinite(v) for v in h1["loss"])


def test_same_seed_same_weights_same_thread_count(digits):
    w1, _, _ = _train_digits(digits, 2, epochs=1)
    w2, _, _ = _train_digits(digits, 2, epochs=1)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_threads_sharing_a_model_take_turns(digits):
    """Two threads predicting with one model, and one predicting while another trains it:
    each run sees the model alone (the layers' caches and the workspace were shared: one
    thread's outputs held the other's activations)."""
    import threading
    X_train, y_train = digits[0], digits[1]

    def build():
        fastnn.seed(5)
        model = nn.Sequential(nn.Dense(64, 128, activation="relu"), nn.BatchNorm1d(128),
                              nn.Dropout(0.2), nn.Dense(128, 10))
        model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.05, momentum=0.9))
        return model

    model = build()
    a, b = X_train[:64], X_train[64:128] * 3
    ref_a, ref_b = model.predict(a), model.predict(b)
    wrong = []

    def predict_often(x, ref, rounds=150):
        for _ in range(rounds):
            if not np.array_equal(model.predict(x), ref):
                wrong.append(1)

    threads = [threading.Thread(target=predict_often, args=(a, ref_a)),
               threading.Thread(target=predict_often, args=(b, ref_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} of 300 predictions differed"

    alone = build()
    alone.fit(X_train, y_train, epochs=2, batch_size=32, verbose=0, seed=1)
    stop = threading.Event()

    def watch():  # evaluation mode, other activations, between the training steps
        while not stop.is_set():
            model.predict(b)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        model.fit(X_train, y_train, epochs=2, batch_size=32, verbose=0, seed=1)
    finally:
        stop.set()
        watcher.join()
    assert model.training
    for (name, p), q in zip(model.named_parameters(), alone.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_a_child_forked_while_a_thread_runs_the_model_can_run_it():
    """A model's lock held by another thread at the fork stays held in the child, where
    that thread does not exist: the child's first predict waited forever."""
    code = """
import os, signal, threading, numpy as np, fastnn
from fastnn import nn
from fastnn.nn.module import run_lock
model = nn.Sequential(nn.Dense(4, 3))
held, release = threading.Event(), threading.Event()

def hold():
    with run_lock(model):
        held.set()
        release.wait()

thread = threading.Thread(target=hold)
thread.start()
held.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # a hang ends the child (status 142) instead of the test
    os._exit(0 if model.predict(np.ones((2, 4), np.float32)).shape == (2, 3) else 1)
release.set()
thread.join()
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    proc = _ref.run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0", proc.stdout


# ----------------------------------------------------------------------------- fit / evaluate / predict
def small_model(seed=0):
    fastnn.seed(seed)
    model = nn.Sequential(nn.Dense(64, 32, activation="relu"), nn.Dense(32, 10))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3), metrics=["accuracy"])
    return model


def test_fit_history_with_validation_split(digits):
    X, y = digits[0][:400], digits[1][:400]
    history = small_model().fit(X, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0, seed=0)
    assert hasattr(history, "history")
    h = history.history
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert key in h, f"missing {key}: {sorted(h)}"
        assert len(h[key]) == 3
        assert all(isinstance(v, (float, np.floating)) and math.isfinite(v) for v in h[key])
    assert all(0.0 <= v <= 1.0 for v in h["accuracy"] + h["val_accuracy"])
    assert h["loss"][-1] < h["loss"][0]


def test_fit_history_with_validation_data(digits):
    X, y, Xt, yt = digits
    history = small_model().fit(X[:300], y[:300], epochs=2, batch_size=64, validation_data=(Xt, yt),
                                verbose=0, seed=0)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    assert all(len(v) == 2 for v in history.history.values())


def test_fit_history_without_validation(digits):
    history = small_model().fit(digits[0][:200], digits[1][:200], epochs=2, verbose=0, seed=0)
    h = history.history
    assert "loss" in h and "accuracy" in h
    assert "val_loss" not in h and "val_accuracy" not in h


def test_evaluate_returns_loss_and_accuracy(digits):
    X_train, y_train, X_test, y_test = digits
    model = small_model()
    model.fit(X_train, y_train, epochs=2, batch_size=64, verbose=0, seed=0)
    result = model.evaluate(X_test, y_test)
    assert isinstance(result, dict)
    assert {"loss", "accuracy"} <= set(result)
    assert result["accuracy"] == pytest.approx(accuracy(model, X_test, y_test), abs=1e-9)
    logits = np.asarray(model.predict(X_test), np.float64)
    assert result["loss"] == pytest.approx(_ref.cross_entropy(logits, y_test)[0], rel=1e-4)


def test_predict_shape_and_type(digits):
    X_test = digits[2]
    model = small_model()
    out = model.predict(X_test)
    assert isinstance(out, np.ndarray)
    assert out.shape == (len(X_test), 10)
    assert np.all(np.isfinite(out))
    one = model.predict(X_test[:1])
    assert one.shape == (1, 10)
    # predict is model(x) in eval mode: no randomness, same answer twice, float64 input too
    np.testing.assert_allclose(model.predict(X_test.astype(np.float64)), out, rtol=1e-6, atol=1e-6)


def test_fit_accepts_float64_fortran_and_int32_labels(digits):
    X, y = digits[0][:100], digits[1][:100]
    model = small_model()
    model.fit(np.asfortranarray(X.astype(np.float64)), y.astype(np.int32), epochs=1, verbose=0, seed=0)
    assert np.all(np.isfinite(model.predict(X[:, ::-1][:, ::-1])))


def test_optimizer_bound_by_compile(digits):
    X, y = digits[0][:200], digits[1][:200]
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 16, activation="tanh"), nn.Dense(16, 10))
    before = [p.data.copy() for p in model.parameters()]
    model.compile(loss=losses.CrossEntropy(), optimizer=optim.SGD(lr=0.05))
    model.fit(X, y, epochs=1, batch_size=50, verbose=0, seed=0)
    assert all(not np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))


# ----------------------------------------------------------------------------- batch / stochastic / mini-batch
class CountingSGD(optim.SGD):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.steps = 0

    def step(self, *args, **kw):
        self.steps += 1
        return super().step(*args, **kw)


@pytest.mark.parametrize("batch_size,epochs,lr", [(None, 60, 0.05), (1, 1, 0.005), (16, 4, 0.05), (120, 60, 0.05)],
                         ids=["batch", "stochastic", "mini-batch", "batch=len(X)"])
def test_every_batch_mode_reduces_loss(digits, batch_size, epochs, lr):
    X, y = digits[0][:120], digits[1][:120]
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 32, activation="tanh"), nn.Dense(32, 10))
    opt = CountingSGD(lr=lr, momentum=0.9)
    model.compile(loss="cross_entropy", optimizer=opt, metrics=["accuracy"])
    before = model.evaluate(X, y)["loss"]
    model.fit(X, y, epochs=epochs, batch_size=batch_size, verbose=0, seed=0)
    after = model.evaluate(X, y)["loss"]
    assert math.isfinite(after) and after < 0.7 * before, (before, after)
    n_batches = 1 if batch_size in (None, 120) else math.ceil(120 / batch_size)
    assert opt.steps == epochs * n_batches, f"{opt.steps} optimizer steps, expected {epochs * n_batches}"


def test_mse_regression_fit():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 3)).astype(np.float32)
    w = np.array([[1.5], [-2.0], [0.5]])
    y = (X @ w + 0.3).astype(np.float32)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(3, 1))
    model.compile(loss=losses.MSE(), optimizer=optim.SGD(lr=0.1))
    model.fit(X, y, epochs=50, batch_size=32, verbose=0, seed=0)
    layer_w, layer_b = (p.data for p in model.parameters())
    np.testing.assert_allclose(layer_w.reshape(-1), w.reshape(-1), atol=1e-3)
    np.testing.assert_allclose(layer_b, [0.3], atol=1e-3)


# ----------------------------------------------------------------------------- binary accuracy, one-hot labels
def _binary_data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 2)).astype(np.float32)
    y = ((X[:, 0] + 0.5 * X[:, 1]) > 0.2).astype(np.float32).reshape(-1, 1)
    return X, y


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.float32])
def test_cross_entropy_accuracy_takes_labels_as_a_column(dtype):
    """Labels (n,), or (n, 1) as the loss also takes them (Keras's form), in any numeric dtype:
    the same accuracy, that of the predictions' argmax (a column was argmaxed to class 0)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 3))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=0.05), metrics=["accuracy"])
    model.fit(X, y.astype(dtype), epochs=5, batch_size=32, verbose=0, seed=0)
    want = float(np.mean(np.argmax(model.predict(X), 1) == y))
    assert model.evaluate(X, y.astype(dtype))["accuracy"] == pytest.approx(want, abs=1e-12)
    assert model.evaluate(X, y.astype(dtype).reshape(-1, 1))["accuracy"] == pytest.approx(want, abs=1e-12)
    assert 0.5 < want < 1.0


def test_binary_accuracy_with_bce_from_logits():
    X, y = _binary_data()
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(2, 1))
    model.compile(loss=losses.BinaryCrossEntropy(from_logits=True), optimizer=optim.Adam(lr=0.05),
                  metrics=["accuracy"])
    model.fit(X, y, epochs=40, batch_size=32, verbose=0, seed=0)
    logits = np.asarray(model.predict(X), np.float64)
    expected_acc = float(np.mean((logits > 0) == (y > 0.5)))
    result = model.evaluate(X, y)
    assert result["accuracy"] == pytest.approx(expected_acc, abs=1e-9)
    assert result["loss"] == pytest.approx(_ref.bce_logits(logits, y)[0], rel=1e-4)
    assert expected_acc > 0.8


def test_binary_accuracy_with_bce_from_probabilities():
    X, y = _binary_data()
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(2, 1, activation="sigmoid"))
    model.compile(loss=losses.BinaryCrossEntropy(from_logits=False), optimizer=optim.Adam(lr=0.05),
                  metrics=["accuracy"])
    model.fit(X, y, epochs=40, batch_size=32, verbose=0, seed=0)
    p = np.asarray(model.predict(X), np.float64)
    assert np.all((p >= 0) & (p <= 1))
    result = model.evaluate(X, y)
    assert result["accuracy"] == pytest.approx(float(np.mean((p > 0.5) == (y > 0.5))), abs=1e-9)
    assert result["loss"] == pytest.approx(_ref.bce_probs(p, y)[0], rel=1e-4)


def test_one_hot_and_integer_labels_agree(digits):
    X, y = digits[2], digits[3]
    model = small_model()
    a = model.evaluate(X, y)
    b = model.evaluate(X, np.eye(10, dtype=np.float32)[y])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-9)


# ----------------------------------------------------------------------------- fastnn.data.batches and the hand-written loop
@pytest.mark.parametrize("batch_size,expected_sizes", [(None, [23]), (1, [1] * 23), (5, [5, 5, 5, 5, 3]), (23, [23]),
                                                       (100, [23])])
@pytest.mark.parametrize("shuffle", [False, True])
def test_data_batches_cover_every_sample_once(batch_size, expected_sizes, shuffle):
    X = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    y = np.arange(23)
    got = list(fastnn.data.batches(X, y, batch_size=batch_size, shuffle=shuffle, seed=0))
    assert [len(xb) for xb, _ in got] == expected_sizes
    ys = np.concatenate([yb for _, yb in got])
    assert sorted(ys.tolist()) == list(range(23))
    if not shuffle:
        assert ys.tolist() == list(range(23))
    for xb, yb in got:
        np.testing.assert_array_equal(xb, X[yb])  # rows stay paired with their labels
    again = np.concatenate([yb for _, yb in fastnn.data.batches(X, y, batch_size=batch_size, shuffle=shuffle, seed=0)])
    np.testing.assert_array_equal(ys, again)


def test_hand_written_training_loop_from_design(digits):
    X_train, y_train, X_test, y_test = digits
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 64, activation="relu"), nn.Dense(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = losses.CrossEntropy()
    first = None
    for epoch in range(3):
        for xb, yb in fastnn.data.batches(X_train, y_train, batch_size=64, shuffle=True, seed=epoch):
            logits = model(xb)
            loss = loss_fn(logits, yb)
            first = loss if first is None else first
            model.backward(loss_fn.backward())
            opt.step()
            opt.zero_grad()
    logits = np.asarray(model(X_test), np.float64)
    assert _ref.cross_entropy(logits, y_test)[0] < 0.5 * first
    assert np.mean(logits.argmax(axis=1) == y_test) > 0.85


# ============================================================================ the training loop
@pytest.fixture(scope="module")
def digits_small():
    X_train, y_train, X_test, y_test = (np.asarray(a) for a in fastnn.datasets.load("digits"))
    return X_train[:300], y_train[:300], X_test[:200], y_test[:200]


def model_for(lr=1e-2, optimizer=None, metrics=("accuracy",), **dense):
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 16, activation="relu", **dense), nn.Dense(16, 10))
    model.compile(loss="cross_entropy", optimizer=optimizer or optim.SGD(lr=lr, momentum=0.9),
                  metrics=list(metrics))
    return model


# ----------------------------------------------------------------------------- validation split
def test_validation_split_is_stratified_for_class_labels():
    y = np.repeat(np.arange(4), [60, 25, 10, 5])
    X = np.arange(100, dtype=np.float32).reshape(-1, 1)
    _, y_tr, X_val, y_val = data.train_val_split(X, y, 0.2, seed=0)
    np.testing.assert_array_equal(np.bincount(y_val, minlength=4), [12, 5, 2, 1])
    np.testing.assert_array_equal(np.bincount(y_tr, minlength=4), [48, 20, 8, 4])
    # Rows stay paired with their labels, and the split is random, not the last rows.
    np.testing.assert_array_equal(y[X_val[:, 0].astype(int)], y_val)
    assert not np.array_equal(np.sort(X_val[:, 0]), np.arange(80, 100))
    other = data.train_val_split(X, y, 0.2, seed=1)[2]
    assert not np.array_equal(np.sort(other[:, 0]), np.sort(X_val[:, 0]))


def test_a_validation_split_that_leaves_an_empty_set_is_named_as_fit_takes_it():
    """fit(validation_split=0.999) had blamed "val_fraction", an argument of a function the
    caller never called (found by an attack)."""
    X, y = np.zeros((103, 4), np.float32), np.arange(103) % 3
    model = nn.Sequential(nn.Dense(4, 3))
    model.compile(loss="cross_entropy", optimizer="sgd")
    with pytest.raises(ValueError, match=r"fit: validation_split=0\.999 of 103 samples leaves an empty"):
        model.fit(X, y, validation_split=0.999, verbose=0)


def test_stratified_counts_add_up_by_largest_remainder():
    y = np.repeat(np.arange(3), [50, 30, 20])
    X = np.zeros((100, 1), np.float32)
    for fraction in (0.05, 0.13, 0.25, 0.5, 0.77):
        y_val = data.train_val_split(X, y, fraction, seed=3)[3]
        counts = np.bincount(y_val, minlength=3)
        assert counts.sum() == round(100 * fraction)
        assert np.all(np.abs(counts - np.array([50, 30, 20]) * fraction) < 1), (fraction, counts)


def test_split_without_shuffle_takes_the_last_rows_of_each_class():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    X = np.arange(10, dtype=np.float32).reshape(-1, 1)
    X_tr, _, X_val, _ = data.train_val_split(X, y, 0.4, shuffle=False)
    assert X_val[:, 0].tolist() == [6, 7, 8, 9]
    assert X_tr[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_float_targets_are_split_at_random_not_stratified():
    y = np.linspace(0, 1, 50, dtype=np.float32).reshape(-1, 1)
    X = np.arange(50, dtype=np.float32).reshape(-1, 1)
    _, _, X_val, y_val = data.train_val_split(X, y, 0.2, seed=0)
    assert len(y_val) == 10
    np.testing.assert_array_equal(y[X_val[:, 0].astype(int)], y_val)
    with pytest.raises(ValueError, match="stratify"):
        data.train_val_split(X, y, 0.2, stratify=True)


def test_fit_uses_the_stratified_split(digits_small, monkeypatch):
    X, y, _, _ = digits_small
    seen = {}
    real = data.train_val_split

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen["val_labels"] = out[3]
        return out

    monkeypatch.setattr(data, "train_val_split", spy)
    history = model_for().fit(X, y, epochs=1, validation_split=0.2, verbose=0, seed=0)
    expected = np.bincount(y, minlength=10) * 0.2
    assert np.all(np.abs(np.bincount(seen["val_labels"], minlength=10) - expected) < 1)
    assert "val_loss" in history.history


# ----------------------------------------------------------------------------- lr, schedules, penalties
def test_history_records_the_learning_rate(digits_small):
    X, y, _, _ = digits_small
    history = model_for(lr=0.05).fit(X, y, epochs=3, verbose=0, seed=0)
    assert history.history["lr"] == [0.05, 0.05, 0.05]


def test_function_schedule_sets_each_epochs_lr(digits_small):
    X, y, _, _ = digits_small
    model = model_for()
    seen = []

    class Spy(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(self.model.compiled.optimizer.lr)

    schedule = callbacks.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    history = model.fit(X, y, epochs=3, batch_size=100, verbose=0, seed=0, callbacks=[schedule, Spy()])
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert seen == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.1 / 3] * 3)


def test_scheduler_object_in_callbacks(digits_small):
    X, y, _, _ = digits_small
    model = model_for(lr=0.08)
    history = model.fit(X, y, epochs=5, verbose=0, seed=0, callbacks=[schedulers.StepLR(step_size=2, gamma=0.5)])
    assert history.history["lr"] == pytest.approx([0.08, 0.08, 0.04, 0.04, 0.02])


def test_scheduler_protocol_gets_the_optimizer_and_the_logs(digits_small):
    X, y, Xv, yv = digits_small
    model = model_for(lr=0.01)
    calls = []

    class Halve:
        def bind(self, optimizer):
            calls.append(("bind", optimizer))
            self.optimizer = optimizer
            return self

        def on_epoch_end(self, epoch, logs):
            calls.append((epoch, sorted(logs)))
            self.optimizer.lr /= 2

    history = model.fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=0, seed=0,
                        callbacks=[callbacks.LearningRateScheduler(Halve())])
    assert calls[0] == ("bind", model.compiled.optimizer)
    assert [c[0] for c in calls[1:]] == [0, 1]
    assert "val_loss" in calls[1][1] and "lr" in calls[1][1]
    assert history.history["lr"] == pytest.approx([0.01, 0.005])


@pytest.mark.parametrize("bad,exc,message", [
    (lambda epoch: -1.0, ValueError, "lr=-1.0"),
    (lambda epoch: float("nan"), ValueError, "lr=nan"),
])
def test_schedule_function_must_give_a_positive_lr(digits_small, bad, exc, message):
    X, y, _, _ = digits_small
    with pytest.raises(exc, match=message):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.LearningRateScheduler(bad)])


def test_callbacks_are_checked(digits_small):
    X, y, _, _ = digits_small
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.Callback(), "early"])
    with pytest.raises(TypeError, match="schedule"):
        callbacks.LearningRateScheduler(0.1)


def test_reported_loss_includes_the_penalties(digits_small):
    X, y, _, _ = digits_small
    model = model_for(l1=1e-3, l2=1e-2)
    result = model.evaluate(X, y)
    logits = np.asarray(model.predict(X), np.float64)
    w = model.layers[0].weight.data.astype(np.float64)
    penalty = 1e-3 * np.abs(w).sum() + 1e-2 * (w ** 2).sum()
    assert penalty > 0.1
    assert result["loss"] == pytest.approx(_ref.cross_entropy(logits, y)[0] + penalty, rel=1e-5)
    # Full batch, one epoch: the training loss is that of the weights before the update.
    history = model.fit(X, y, epochs=1, batch_size=None, verbose=0, seed=0)
    assert history.history["loss"][0] == pytest.approx(result["loss"], rel=1e-5)


# ----------------------------------------------------------------------------- augmentation
def test_augment_is_applied_to_every_training_batch(digits_small):
    X, y, Xv, yv = digits_small
    batches = []

    def record(xb):
        batches.append(xb.copy())
        return xb

    model_for().fit(X, y, epochs=2, batch_size=64, shuffle=False, validation_data=(Xv, yv),
                    verbose=0, augment=record)
    assert [len(b) for b in batches] == [64, 64, 64, 64, 44] * 2
    # Unshuffled, the batches are the training rows in order: labels stay with their rows,
    # and the validation data is never augmented.
    np.testing.assert_array_equal(np.concatenate(batches[:5]), X.astype(np.float32))


def test_augment_changes_what_the_model_sees(digits_small):
    X, y, _, _ = digits_small
    plain = model_for().fit(X, y, epochs=1, verbose=0, seed=0).history["loss"]
    noisy = model_for().fit(X, y, epochs=1, verbose=0, seed=0,
                            augment=data.Augment((8, 8), noise_std=0.5, seed=0)).history["loss"]
    assert plain != noisy


def test_augment_must_keep_the_shape(digits_small):
    X, y, _, _ = digits_small
    with pytest.raises(ValueError, match="shape"):
        model_for().fit(X, y, epochs=1, verbose=0, augment=lambda xb: xb[:, :10])
    with pytest.raises(TypeError, match="augment"):
        model_for().fit(X, y, epochs=1, verbose=0, augment="flip")


def test_augment_keeps_shapes_and_is_reproducible_by_seed(rng):
    x = rng.random((6, 2, 5, 7)).astype(np.float32)
    a = data.Augment((2, 5, 7), max_shift=2, flip=True, max_rotation=15, noise_std=0.05, seed=11)
    b = data.Augment((2, 5, 7), max_shift=2, flip=True, max_rotation=15, noise_std=0.05, seed=11)
    first, second = a(x), a(x)
    assert first.shape == x.shape and first.dtype == np.float32
    np.testing.assert_array_equal(first, b(x))
    np.testing.assert_array_equal(second, b(x))
    assert not np.array_equal(first, second), "each batch gets new transformations"
    flat = data.Augment((2, 5, 7), max_shift=2, flip=True, max_rotation=15, noise_std=0.05, seed=11)
    out = flat(x.reshape(6, -1))
    assert out.shape == (6, 70)
    np.testing.assert_array_equal(out, first.reshape(6, -1))


def test_augment_refuses_a_shift_that_takes_the_image_out_of_its_frame():
    data.Augment((3, 6), max_shift=2.9)  # below the height: fine
    for shape, shift in [((3, 6), 3), ((8, 8), 20), ((1, 4, 9), 1e30)]:
        with pytest.raises(ValueError, match="max_shift"):
            data.Augment(shape, max_shift=shift)


def test_augment_seed_comes_from_fastnn_seed():
    fastnn.seed(5)
    s1 = data.Augment((4, 4)).seed
    fastnn.seed(5)
    assert data.Augment((4, 4)).seed == s1


def test_augment_flip_and_identity(rng):
    x = rng.random((40, 3, 6)).astype(np.float32)
    np.testing.assert_array_equal(data.Augment((3, 6), seed=0)(x), x)
    out = data.Augment((3, 6), flip=True, seed=0)(x)
    flipped = [bool(np.allclose(o, xi[:, ::-1])) for o, xi in zip(out, x)]
    same = [bool(np.allclose(o, xi)) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 5 < sum(flipped) < 35


def test_augment_noise_has_the_requested_std(rng):
    x = np.zeros((200, 16, 16), np.float32)
    out = data.Augment((16, 16), noise_std=0.2, seed=1)(x)
    assert abs(out.std() - 0.2) < 0.01 and abs(out.mean()) < 0.01


@pytest.mark.parametrize("kwargs,message", [
    (dict(image_shape=(8,)), "image_shape"),
    (dict(image_shape=(8, 0)), "image_shape"),
    (dict(image_shape=(8, 8), max_shift=-1), "max_shift"),
    (dict(image_shape=(8, 8), noise_std=float("nan")), "noise_std"),
    (dict(image_shape=(8, 8), seed=-3), "seed"),
])
def test_augment_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.Augment(**kwargs)


def test_augment_rejects_a_batch_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(n, 64\)"):
        data.Augment((8, 8))(np.zeros((3, 60), np.float32))


# ----------------------------------------------------------------------------- progress display
def test_verbose_0_is_silent(digits_small, capsys):
    X, y, _, _ = digits_small
    model_for().fit(X, y, epochs=2, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_verbose_2_prints_one_line_per_epoch(digits_small, capsys):
    X, y, Xv, yv = digits_small
    model_for().fit(X, y, epochs=3, verbose=2, validation_data=(Xv, yv))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Epoch 1/3") and lines[2].startswith("Epoch 3/3")
    for key in ("samples/s", "loss:", "accuracy:", "val_loss:", "lr:"):
        assert key in lines[1], lines[1]


class _Terminal(stdio.StringIO):
    def isatty(self):
        return True


def test_verbose_1_uses_tqdm_on_a_terminal(digits_small, monkeypatch):
    pytest.importorskip("tqdm")
    X, y, _, _ = digits_small
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    model_for().fit(X, y, epochs=2, verbose=1)
    out = screen.getvalue()
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "sample" in out and "loss:" in out
    assert "\r" in out and "%|" in out   # tqdm's bar, redrawn in place


def test_verbose_1_writes_one_plain_line_per_epoch_to_a_file(digits_small, capsys):
    # capsys's stdout is no terminal, as a file or a pipe: tqdm installed or not, no
    # carriage-return redraws pile up in it (two epochs wrote 82 of them).
    pytest.importorskip("tqdm")
    X, y, _, _ = digits_small
    model_for().fit(X, y, epochs=2, batch_size=10, verbose=1)
    out = capsys.readouterr().out
    assert "\r" not in out and "%|" not in out
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and lines[1].startswith("Epoch 2/2")
    assert f"[{len(X)}/{len(X)}]" in lines[0] and "loss:" in lines[1]


def test_verbose_1_in_a_notebook_uses_tqdm_auto(monkeypatch):
    pytest.importorskip("tqdm")
    import types

    bar = object()
    class ZMQInteractiveShell:   # the shell class of a Jupyter kernel
        pass

    ipython = types.SimpleNamespace(get_ipython=ZMQInteractiveShell)
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=bar))
    import importlib.util
    import tqdm

    find_spec = importlib.util.find_spec
    # a notebook's stdout is no terminal, yet it shows a bar: a widget with ipywidgets...
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "ipywidgets" else find_spec(name, *a))
    assert fastnn.train._tqdm(stdio.StringIO()) is bar
    # ...else tqdm's text bar (tqdm.auto had warned "IProgress not found" at every fit)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ipywidgets" else find_spec(name, *a))
    assert fastnn.train._tqdm(stdio.StringIO()) is tqdm.tqdm
    # a program that only imported ipykernel (nbclient's users, this suite) is no notebook
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert fastnn.train._tqdm(stdio.StringIO()) is None


def test_verbose_1_falls_back_to_a_plain_line_without_tqdm(digits_small, capsys, monkeypatch):
    X, y, _, _ = digits_small
    monkeypatch.setitem(sys.modules, "tqdm", None)   # import tqdm now fails
    model_for().fit(X, y, epochs=2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "samples/s" in lines[0] and f"[{len(X)}/{len(X)}]" in lines[0]


def test_plain_progress_redraws_one_line_on_a_terminal(digits_small, monkeypatch):
    X, y, _, _ = digits_small

    class Terminal(stdio.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(fastnn.train, "_REFRESH_SECONDS", 0.0)
    model_for().fit(X, y, epochs=1, batch_size=50, verbose=1)
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.count("\r") >= 6   # one redraw per batch, then the final
    assert "[50/300]" in text and "[300/300]" in text


def test_verbose_must_be_0_1_or_2(digits_small):
    X, y, _, _ = digits_small
    with pytest.raises(ValueError, match="verbose"):
        model_for().fit(X, y, epochs=1, verbose=3)


# ----------------------------------------------------------------------------- callbacks
class Scripted(callbacks.Callback):
    """Replaces val_loss by a scripted sequence and keeps each epoch's weights."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key, self.weights = values, key, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(self.model.state_dict())


SCRIPT = [3.0, 2.0, 1.0, 1.5, 1.2, 1.1, 0.9, 2.0]


def assert_weights(model, state):
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name])


def test_early_stopping_stops_and_restores_the_best_epoch(digits_small):
    X, y, _, _ = digits_small
    model = model_for()
    script = Scripted(SCRIPT)
    stop = callbacks.EarlyStopping(patience=2)
    history = model.fit(X, y, epochs=8, verbose=0, seed=0, callbacks=[script, stop])
    assert len(history.epoch) == 5           # epoch 2 is best; epochs 3 and 4 do not improve
    assert (stop.best_epoch, stop.stopped_epoch, stop.best) == (2, 4, 1.0)
    assert_weights(model, script.weights[2])


def test_early_stopping_restores_the_best_weights_even_without_triggering(digits_small):
    X, y, _, _ = digits_small
    model = model_for()
    script = Scripted(SCRIPT)
    stop = callbacks.EarlyStopping(patience=5)
    history = model.fit(X, y, epochs=8, verbose=0, seed=0, callbacks=[script, stop])
    assert len(history.epoch) == 8 and stop.stopped_epoch is None and stop.best_epoch == 6
    assert_weights(model, script.weights[6])


def test_early_stopping_without_restoring_keeps_the_last_weights(digits_small):
    X, y, _, _ = digits_small
    model = model_for()
    script = Scripted(SCRIPT)
    model.fit(X, y, epochs=8, verbose=0, seed=0,
              callbacks=[script, callbacks.EarlyStopping(patience=5, restore_best_weights=False)])
    assert_weights(model, script.weights[-1])


def test_early_stopping_min_delta_and_mode(digits_small):
    X, y, _, _ = digits_small
    stop = callbacks.EarlyStopping(patience=1, min_delta=0.15)
    model_for().fit(X, y, epochs=8, verbose=0, callbacks=[Scripted(SCRIPT), stop])
    assert (stop.best_epoch, stop.stopped_epoch) == (2, 3)   # 1.5, 1.2, 1.1 and 0.9: not by 0.15
    accuracy = callbacks.EarlyStopping(monitor="val_accuracy", patience=1)
    assert accuracy.mode == "max"
    model_for().fit(X, y, epochs=8, verbose=0,
                    callbacks=[Scripted([0.1, 0.3, 0.2, 0.5], key="val_accuracy"), accuracy])
    assert (accuracy.best_epoch, accuracy.stopped_epoch) == (1, 2)


def test_early_stopping_warns_when_the_monitor_is_missing(digits_small):
    X, y, _, _ = digits_small
    with pytest.warns(RuntimeWarning, match="val_loss"):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.EarlyStopping()])


@pytest.mark.parametrize("kwargs", [dict(mode="best"), dict(patience=-1), dict(min_delta=-0.1)])
def test_early_stopping_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        callbacks.EarlyStopping(**kwargs)


def test_model_checkpoint_saves_the_improving_epochs(digits_small, tmp_path):
    pytest.importorskip("safetensors")
    X, y, _, _ = digits_small
    model = model_for()
    script = Scripted(SCRIPT)
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.1f}.safetensors")
    model.fit(X, y, epochs=8, verbose=0, seed=0, callbacks=[script, callbacks.ModelCheckpoint(pattern)])
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["ckpt-01-3.0.safetensors", "ckpt-02-2.0.safetensors", "ckpt-03-1.0.safetensors",
                     "ckpt-07-0.9.safetensors"]
    assert_weights(fastnn.load(tmp_path / "ckpt-03-1.0.safetensors"), script.weights[2])


def test_model_checkpoint_every_epoch(digits_small, tmp_path):
    pytest.importorskip("safetensors")
    X, y, _, _ = digits_small
    path = tmp_path / "last.safetensors"
    model = model_for()
    model.fit(X, y, epochs=2, verbose=0, callbacks=[callbacks.ModelCheckpoint(path, save_best_only=False)])
    assert_weights(fastnn.load(path), model.state_dict())


def test_csv_logger_writes_one_row_per_epoch(digits_small, tmp_path):
    X, y, Xv, yv = digits_small
    path = tmp_path / "log.csv"
    history = model_for().fit(X, y, epochs=3, verbose=0, validation_data=(Xv, yv),
                              callbacks=[callbacks.CSVLogger(path)])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    for key, values in history.history.items():
        assert [float(r[key]) for r in rows] == values
    model_for().fit(X, y, epochs=2, verbose=0, validation_data=(Xv, yv),
                    callbacks=[callbacks.CSVLogger(path, append=True)])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 0, 1]
    model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.CSVLogger(path)])
    assert len(list(csv.DictReader(path.open()))) == 1


def test_csv_logger_appends_under_the_files_own_columns(digits_small, tmp_path):
    """A run without validation appended to a file with val_ columns: its lr went under
    val_loss. Now each value goes under its own column, the missing ones empty, and a value
    the file has no column for is left out with a warning."""
    X, y, Xv, yv = digits_small
    path = tmp_path / "log.csv"
    model_for().fit(X, y, epochs=1, verbose=0, validation_data=(Xv, yv),
                    callbacks=[callbacks.CSVLogger(path)])
    history = model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.CSVLogger(path, append=True)])
    row = list(csv.DictReader(path.open()))[-1]
    assert row["val_loss"] == row["val_accuracy"] == ""
    assert float(row["lr"]) == history.history["lr"][0] and float(row["loss"]) == history.history["loss"][0]
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("epoch,loss\n")
    with pytest.warns(RuntimeWarning, match="has no column for accuracy, lr; not written"):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.CSVLogger(narrow, append=True)])
    assert len(list(csv.reader(narrow.open()))[1]) == 2


@pytest.mark.parametrize("text", ["epoch,loss\n0,1.0", "epoch,loss"])
def test_csv_logger_appends_on_a_new_line(text, tmp_path):
    """A file whose last line has no line break (cut short, or written by hand): the first
    appended row had been glued onto it ("0,1.01,2.0"; found by an attack)."""
    path = tmp_path / "log.csv"
    path.write_text(text)
    logger = callbacks.CSVLogger(path, append=True)
    logger.on_train_begin()
    logger.on_epoch_end(1, {"loss": 2.0})
    rows = list(csv.reader(path.open(newline="")))
    assert rows[0] == ["epoch", "loss"] and rows[-1] == ["1", "2.0"]
    assert len(rows) == text.count("\n") + 2


def test_custom_callback_hooks_in_order(digits_small):
    X, y, _, _ = digits_small
    events = []

    class Recorder(callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")

        def on_batch_end(self, batch, logs=None):
            events.append(f"batch {batch} {logs['size']} {math.isfinite(logs['loss'])}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch} {sorted(logs)}")
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            events.append("train_end")

    history = model_for().fit(X, y, epochs=5, batch_size=128, verbose=0, callbacks=[Recorder()])
    keys = "['accuracy', 'loss', 'lr']"
    assert events == ["train_begin",
                      "epoch_begin 0", "batch 0 128 True", "batch 1 128 True", "batch 2 44 True",
                      f"epoch_end 0 {keys}",
                      "epoch_begin 1", "batch 0 128 True", "batch 1 128 True", "batch 2 44 True",
                      f"epoch_end 1 {keys}", "train_end"]
    assert history.epoch == [0, 1]


def test_final_probability_layer_with_a_logits_loss_warns():
    model = nn.Sequential(nn.Dense(4, 3), nn.Sigmoid())
    with pytest.warns(UserWarning, match="logits"):
        model.compile(loss="cross_entropy")
    model = nn.Sequential(nn.Dense(4, 3), nn.Softmax())
    with pytest.warns(UserWarning, match="softmax"):
        model.compile(loss="cross_entropy")


# ============================================================================ the training step
def _weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, np.sqrt(2.0 / i), (o, i)), rng.normal(0, 0.1, o))
            for i, o in zip(sizes[:-1], sizes[1:])]


def _fastnn_model(weights, fused=True):
    layers = []
    for k, (w, b) in enumerate(weights):
        hidden = k < len(weights) - 1
        dense = nn.Dense(w.shape[1], w.shape[0], activation="relu" if hidden and fused else None)
        dense.weight.data[...] = w
        dense.bias.data[...] = b
        layers.append(dense)
        if hidden and not fused:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _numpy_adam_run(weights, X, y, batches, lr=1e-3):
    """The same network and Adam in float64, written out by hand."""
    params = [a.astype(np.float64).copy() for wb in weights for a in wb]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    curve = []
    for t, idx in enumerate(batches, start=1):
        xb, yb = X[idx].astype(np.float64), y[idx]
        acts = [xb]
        n = len(params) // 2
        for k in range(n):
            z = acts[-1] @ params[2 * k].T + params[2 * k + 1]
            acts.append(np.maximum(z, 0) if k < n - 1 else z)
        z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        curve.append(-np.mean(np.log(p[np.arange(len(yb)), yb])))
        g = p.copy()
        g[np.arange(len(yb)), yb] -= 1
        g /= len(yb)
        grads = [None] * len(params)
        for k in reversed(range(n)):
            grads[2 * k], grads[2 * k + 1] = g.T @ acts[k], g.sum(axis=0)
            if k:
                g = (g @ params[2 * k]) * (acts[k] > 0)
        for i, (p_, g_) in enumerate(zip(params, grads)):
            m[i] = 0.9 * m[i] + 0.1 * g_
            v[i] = 0.999 * v[i] + 0.001 * g_ * g_
            p_ -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    return np.array(curve)


def _fastnn_run(model, X, y, batches, opt):
    loss_fn = losses.CrossEntropy()
    curve = []
    for idx in batches:
        curve.append(loss_fn(model(X[idx]), y[idx]))
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()
    return np.array(curve)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(1)
    X = rng.random((512, 20), dtype=np.float32)
    y = (X[:, :10].sum(1) > X[:, 10:].sum(1)).astype(np.int64) + 2 * (X[:, 0] > 0.5)
    batches = [rng.choice(len(X), 32, replace=False) for _ in range(200)]
    return X, y, batches


def test_200_steps_agree_with_float64_numpy(problem):
    X, y, batches = problem
    weights = _weights([20, 64, 32, 4])
    expected = _numpy_adam_run(weights, X, y, batches)
    model = _fastnn_model(weights)
    got = _fastnn_run(model, X, y, batches, optim.Adam(model.parameters(), lr=1e-3))
    assert expected[-1] < 0.8 * expected[0]  # it learns: the comparison means something
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=0)


def test_fused_and_unfused_paths_agree(problem):
    X, y, batches = problem
    weights = _weights([20, 48, 24, 4], seed=3)
    runs = []
    for fused in (True, False):
        model = _fastnn_model(weights, fused=fused)
        curve = _fastnn_run(model, X, y, batches[:50],
                            optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
        runs.append((curve, [p.data.copy() for p in model.parameters()]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_input_gradient_is_the_same_when_asked_for(problem):
    X, y, _ = problem
    weights = _weights([20, 16, 4], seed=5)
    grads = []
    for input_grad in (True, False):
        model = _fastnn_model(weights)
        loss_fn = losses.CrossEntropy()
        loss_fn(model(X[:32]), y[:32])
        dx = model.backward(loss_fn.backward(), input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        grads.append([p.grad.copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_no_memory_growth_in_the_steady_state():
    rng = np.random.default_rng(0)
    X = rng.random((2048, 64), dtype=np.float32)
    y = rng.integers(0, 10, 2048)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 128, activation="relu"), nn.Dense(128, 64, activation="tanh"),
                          nn.Dense(64, 10))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3), metrics=["accuracy"])
    model.fit(X, y, epochs=1, batch_size=64, verbose=0)  # buffers are made in the first epoch
    buffers = [id(a) for a in model._workspace.arrays()]
    assert buffers, "Dense layers keep arrays in the model's workspace between steps"
    tracemalloc.start()
    model.fit(X, y, epochs=1, batch_size=64, verbose=0)
    after_one, _ = tracemalloc.get_traced_memory()
    model.fit(X, y, epochs=4, batch_size=64, verbose=0)
    after_five, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Four more epochs (128 more steps) leave the traced memory where one epoch left it.
    assert after_five - after_one < 64 * 1024, (after_one, after_five)
    assert buffers == [id(a) for a in model._workspace.arrays()]


# ---------------------------------------------------------------------------- lazy zero_grad
def _grads_of_one_pass(model, x, y, loss):
    loss(model(x), y)
    model.backward(loss.backward())
    return [p.grad.copy() for p in model.parameters()]


def _one_pass_problem(rng):
    """A small batch, the gradients of one pass from fresh parameters, and a second model
    with the same weights and its optimizer."""
    weights = _weights([7, 5, 3])
    x, y = rng.standard_normal((6, 7)).astype(np.float32), rng.integers(0, 3, 6)
    loss = losses.CrossEntropy()
    expected = _grads_of_one_pass(_fastnn_model(weights), x, y, loss)
    model = _fastnn_model(weights)
    return x, y, loss, expected, model, optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("zero", ["optimizer", "module"])
def test_zero_grad_then_backward_overwrites_stale_gradients(zero, rng):
    # zero_grad is lazy: the next backward writes the gradient (GEMM beta = 0). Garbage
    # (NaN) left in the buffers must not leak, and reading grad in between gives zeros.
    x, y, loss, expected, model, opt = _one_pass_problem(rng)
    for p in model.parameters():
        p.grad[...] = np.nan
    (opt if zero == "optimizer" else model).zero_grad()
    assert all(not p.grad.any() for p in model.parameters())  # reads materialize zeros
    for p in model.parameters():
        p.grad[...] = np.nan
    (opt if zero == "optimizer" else model).zero_grad()
    got = _grads_of_one_pass(model, x, y, loss)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)


def test_gradients_accumulate_without_zero_grad(rng):
    x, y, loss, once, model, opt = _one_pass_problem(rng)
    opt.zero_grad()
    _grads_of_one_pass(model, x, y, loss)
    twice = _grads_of_one_pass(model, x, y, loss)
    for g, e in zip(twice, once):
        np.testing.assert_allclose(g, 2 * e, rtol=1e-6, atol=1e-7)


def test_step_after_zero_grad_without_backward_sees_zero_gradients():
    # No backward since zero_grad: the update must use zeros, not the stale gradient.
    model = _fastnn_model(_weights([4, 3]))
    opt = optim.SGD(model.parameters(), lr=1.0)
    before = [p.data.copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.zero_grad()
    opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_a_kernel_whose_shell_subclasses_jupyters_is_a_notebook(monkeypatch):
    # Google Colab's shell (google.colab._shell.Shell) and Sage's subclass Jupyter's
    # ZMQInteractiveShell: their notebooks show a bar too, not one line per epoch.
    import types

    class ZMQInteractiveShell:
        pass

    class Shell(ZMQInteractiveShell):
        pass

    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=Shell))
    assert fastnn.train._in_notebook()
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=type("TerminalInteractiveShell",
                                                               (), {})))
    assert not fastnn.train._in_notebook()


def test_progress_on_a_stdout_without_isatty_or_without_stdout(digits_small, monkeypatch):
    # Some IDEs hand programs a stdout object with write and flush only; pythonw has none.
    X, y, _, _ = digits_small

    class WriteOnly:
        def __init__(self):
            self.text = []

        def write(self, s):
            self.text.append(s)

        def flush(self):
            pass

    out = WriteOnly()
    monkeypatch.setattr(sys, "stdout", out)
    model_for().fit(X, y, epochs=2, verbose=1)
    lines = "".join(out.text).splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "\r" not in "".join(out.text)
    monkeypatch.setattr(sys, "stdout", None)
    history = model_for().fit(X, y, epochs=2, verbose=1)
    assert len(history.history["loss"]) == 2


def test_fit_refuses_layers_added_replaced_or_repeated_after_compile(rng):
    """Found by an attack: a layer appended or replaced after compile was never trained (the
    optimizer holds the parameters compile gave it), and one instance placed twice through
    ``layers`` gave wrong gradients; fit names each."""
    X = rng.random((64, 4), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 3))
    model.compile(loss="cross_entropy", optimizer="adam")
    model.fit(X, y, epochs=1, verbose=0)
    model.layers.append(nn.Dense(3, 3))
    with pytest.raises(ValueError, match=r"2\.weight .*compile\(\.\.\.\) again"):
        model.fit(X, y, epochs=1, verbose=0)
    model.layers[1] = nn.Dense(8, 3)
    model.layers.pop()
    with pytest.raises(ValueError, match=r"1\.weight"):
        model.fit(X, y, epochs=1, verbose=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    before = model.layers[1].weight.data.copy()
    model.fit(X, y, epochs=1, verbose=0)
    assert not np.array_equal(before, model.layers[1].weight.data)   # compiled again: trained
    twice = nn.Sequential(nn.Dense(4, 8), nn.Tanh(), nn.Dense(8, 3))
    twice.layers.insert(3, twice.layers[1])
    twice.compile(loss="cross_entropy")
    with pytest.raises(ValueError, match="same Tanh instance"):
        twice.fit(X, y, epochs=1, verbose=0)


@pytest.mark.parametrize("hook", ["on_epoch_end", "on_epoch_begin", "on_batch_end"])
def test_fit_refuses_a_layer_a_callback_replaced_during_fit(rng, hook):
    """Found by an attack: a callback that replaced a layer mid-fit left it untrained for the
    rest of the run (the optimizer kept the old layer's parameters), silently; fit now stops
    at the end of that epoch or the start of the next and names the parameter."""
    X = rng.random((64, 4), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 3))
    model.compile(loss="cross_entropy", optimizer="adam")
    epochs_run = []

    class Swap(fastnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)
            if hook == "on_epoch_begin" and epoch == 1:
                self.model.layers[1] = nn.Dense(8, 3)

        def on_epoch_end(self, epoch, logs=None):
            if hook == "on_epoch_end" and epoch == 0:
                self.model.layers[1] = nn.Dense(8, 3)

        def on_batch_end(self, batch, logs=None):
            if hook == "on_batch_end" and batch == 0 and len(epochs_run) == 1:
                self.model.layers[1] = nn.Dense(8, 3)

    with pytest.raises(ValueError, match=r"1\.weight .*during fit, by a callback around epoch"):
        model.fit(X, y, epochs=4, batch_size=16, verbose=0, callbacks=[Swap()])
    assert epochs_run == ([0] if hook == "on_batch_end" else [0, 1])

@pytest.mark.parametrize("between", ["predict", "evaluate"])
def test_predict_or_evaluate_between_forward_and_backward_is_named(rng, between):
    """Found by an attack: predict or evaluate between a forward pass and its backward left
    the layers holding their own batch (in evaluation mode), and backward gave that batch's
    gradients, silently; backward now names the layer that ran again."""
    X, X2 = rng.random((16, 6), dtype=np.float32), rng.random((16, 6), dtype=np.float32)
    y = rng.integers(0, 3, 16)
    model = nn.Sequential(nn.Dense(6, 5, activation="relu"), nn.Dense(5, 3))
    model.compile(loss="cross_entropy", optimizer="sgd")
    loss = fastnn.losses.CrossEntropy()
    loss(model(X), y)
    grad = loss.backward()
    model.predict(X2) if between == "predict" else model.evaluate(X2, y)
    with pytest.raises(RuntimeError, match=r"layer 0 .* ran again since .*predict, evaluate"):
        model.backward(grad)


def test_the_progress_bar_leaves_each_epoch_s_whole_line_on_a_terminal(rng, monkeypatch):
    """Found by an attack: on an 80-column terminal the tqdm bar's postfix, cut to the width,
    never showed validation's logs; the bar now gives way to the epoch's whole line."""
    pytest.importorskip("tqdm")
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("COLUMNS", "60")
    X, y = rng.random((64, 4), dtype=np.float32), rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 3))
    model.compile(loss="cross_entropy", optimizer="adam", metrics=["accuracy"])
    model.fit(X, y, epochs=2, validation_split=0.25, verbose=1)
    lines = [line for line in out.getvalue().replace("\r", "\n").splitlines()
             if line.startswith("Epoch") and "val_accuracy" in line]
    assert [line[:9] for line in lines] == ["Epoch 1/2", "Epoch 2/2"], out.getvalue()
    assert all(line.endswith("lr: 0.001") for line in lines), lines


@pytest.mark.parametrize("seed", [None, "generator"])
def test_fit_called_again_holds_out_the_same_validation_samples(rng, seed, monkeypatch):
    """Found by an attack: without an int seed each fit drew a new validation split, so a
    fit continuing the training trained on 16 of the 20 samples the last one held out (its
    val_* logs, early stopping and best checkpoints judged on learnt data), silently."""
    X, y = rng.random((100, 4), dtype=np.float32), rng.integers(0, 3, 100)
    held_out = []
    split = fastnn.data.train_val_split

    def recording(X_, y_, fraction, seed=None, **kw):
        out = split(X_, y_, fraction, seed=seed, **kw)
        held_out.append({row.tobytes() for row in out[2]})
        return out

    monkeypatch.setattr(fastnn.data, "train_val_split", recording)
    model = nn.Sequential(nn.Dense(4, 3))
    model.compile(loss="cross_entropy", optimizer="sgd")
    generator = np.random.default_rng(5) if seed == "generator" else None   # one, going on
    for _ in range(3):
        model.fit(X, y, epochs=1, validation_split=0.2, verbose=0, seed=generator)
    assert len(held_out[0]) == 20 and held_out[0] == held_out[1] == held_out[2]
    model.fit(X[:90], y[:90], epochs=1, validation_split=0.2, verbose=0)   # other data: drawn
    assert len(held_out[3]) == 18
    model.fit(X, y, epochs=1, validation_split=0.2, verbose=0, seed=3)      # an int seed's own
    model.fit(X, y, epochs=1, validation_split=0.2, verbose=0, seed=generator)   # then kept
    assert held_out[4] == held_out[5] != held_out[0]


def test_a_fit_refused_before_its_first_batch_leaves_the_lr_and_the_history(rng):
    """Found by an attack: a scheduler had set the first epoch's rate in on_train_begin and
    a callback after it failed: the corrected fit then started from that rate (its schedule
    shifted, a resumed run no longer the uninterrupted one), and model.history was an empty
    History."""
    X, y = rng.random((40, 4), dtype=np.float32), rng.integers(0, 3, 40)
    model = nn.Sequential(nn.Dense(4, 3))
    model.compile(loss="cross_entropy", optimizer=fastnn.optim.SGD(lr=0.1))
    first = model.fit(X, y, epochs=2, verbose=0)

    class Refuse(fastnn.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise RuntimeError("refused")

    schedule = lambda: fastnn.callbacks.LearningRateScheduler(  # noqa: E731
        fastnn.schedulers.CosineLR(total_epochs=4, warmup_epochs=2))
    with pytest.raises(RuntimeError, match="refused"):
        model.fit(X, y, epochs=3, verbose=0, callbacks=[schedule(), Refuse()])
    assert model.compiled.optimizer.lr == 0.1 and model.history is first
    lrs = model.fit(X, y, epochs=3, verbose=0, callbacks=[schedule()]).history["lr"]
    assert lrs == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])


def test_model_checkpoint_keeping_the_best_val_loss_needs_validation_data(rng, tmp_path):
    """Found by an attack: ModelCheckpoint's defaults (monitor="val_loss", save_best_only)
    without validation data warned at each epoch and never wrote a file."""
    X, y = rng.random((40, 4), dtype=np.float32), rng.integers(0, 3, 40)
    model = nn.Sequential(nn.Dense(4, 3))
    model.compile(loss="cross_entropy", optimizer="sgd")
    with pytest.raises(ValueError, match=r"ModelCheckpoint\(save_best_only=True\) monitors 'val_loss'"):
        model.fit(X, y, epochs=2, verbose=0,
                  callbacks=[fastnn.callbacks.ModelCheckpoint(tmp_path / "best.safetensors")])
    model.fit(X, y, epochs=2, verbose=0, callbacks=[fastnn.callbacks.ModelCheckpoint(
        tmp_path / "best.safetensors", monitor="loss")])
    assert (tmp_path / "best.safetensors").exists()


def test_notebook_cells_run_again_keep_layer_modes_activations_and_optimizers(rng):
    """Found by an attack (cells re-run out of order): a batch norm put in eval by hand came
    back in training mode from predict, evaluate and fit; dense.activation = "elu" kept
    leaky_relu's alpha (wrong outputs, another model once saved and loaded); an optimizer
    bound to model A, given to B's compile, left A's manual loop stepping nothing; a conv's
    stride set to an int failed with a bare TypeError; metrics.get("accuracy") refused
    'accuracy' while listing it."""
    X, y = rng.random((32, 4), dtype=np.float32), rng.integers(0, 2, 32)
    model = nn.Sequential(nn.Dense(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dense(8, 2))
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.train()
    model.layers[1].eval()                                 # its statistics frozen
    modes = lambda: [m.training for m in model.layers]    # noqa: E731
    model.predict(X)
    model.evaluate(X, y)
    model.fit(X, y, epochs=1, verbose=0)
    assert modes() == [True, False, True, True] and model.training

    fastnn.seed(0)
    changed, fresh = nn.Dense(4, 3, activation="leaky_relu"), nn.Dense(4, 3, activation="elu")
    fresh.weight.data[...], fresh.bias.data[...] = changed.weight.data, changed.bias.data
    changed.activation = "ELU"
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(changed(x), fresh(x))
    assert changed.activation == "elu" and repr(changed) == repr(fresh)
    with pytest.raises(ValueError, match="Dense: unknown activation 'swish2'"):
        changed.activation = "swish2"
    conv = nn.Conv2d(1, 2, 3, activation="elu")
    conv.activation = "leaky_relu"
    assert conv._alpha == nn.Conv2d(1, 2, 3, activation="leaky_relu")._alpha
    with pytest.raises(AttributeError, match="stride is fixed once the layer is built"):
        conv.stride = 2

    a, b = nn.Sequential(nn.Dense(4, 2)), nn.Sequential(nn.Dense(4, 2))
    opt = fastnn.optim.SGD(a.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="bound to another model's parameters"):
        b.compile(loss="cross_entropy", optimizer=opt)
    assert [id(p) for p in opt.params] == [id(p) for p in a.parameters()]
    a.compile(loss="cross_entropy", optimizer=opt)         # its own model's: taken
    with pytest.raises(ValueError, match=r"counted by the training loop.*metrics\.accuracy"):
        fastnn.metrics.get("accuracy")


def test_predict_and_evaluate_take_rows_batch_by_batch():
    """Found by an attack: predict, evaluate converted all of X to float32 before batching:
    a float64 X was copied whole, and a stride-0 view of 4 bytes became gigabytes."""
    import re

    def peak_mb():
        return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) >> 10

    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc here to read the peak memory from")
    model = nn.Sequential(nn.Dense(512, 8, "relu"), nn.Dense(8, 3))
    model.compile(loss="cross_entropy", optimizer="sgd", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 512))  # float64
    y = rng.integers(0, 3, 600)
    np.testing.assert_array_equal(model.predict(X, batch_size=100), model.predict(np.float32(X), batch_size=100))
    assert model.evaluate(X, y, batch_size=100) == model.evaluate(np.float32(X), y, batch_size=100)
    X[550, 7] = np.inf
    for call in (lambda: model.predict(X), lambda: model.evaluate(X, y)):
        with pytest.raises(ValueError, match="X contains NaN or infinite values"):
            call()
    before = peak_mb()
    rows = np.broadcast_to(np.ones((1, 512), np.float32), (1_000_000, 512))  # 2 GB as a copy
    assert model.predict(rows, batch_size=4096).shape == (1_000_000, 3)
    model.evaluate(rows, np.zeros(1_000_000, np.int64), batch_size=4096)
    assert peak_mb() - before < 500


def test_fit_refuses_callbacks_twice_metric_names_it_logs_and_a_non_list():
    """Found by an attack: one EarlyStopping listed twice counted each epoch twice (stopped
    after epoch 0); a metric named "loss" replaced the loss in the history; callbacks=1 gave
    "'int' object is not iterable"."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32)
    model = nn.Sequential(nn.Dense(4, 2))
    model.compile(loss="cross_entropy", optimizer="sgd")
    stop = callbacks.EarlyStopping(monitor="loss", patience=1)
    with pytest.raises(ValueError, match=r"callbacks\[1\] is callbacks\[0\] again"):
        model.fit(X, y, epochs=2, verbose=0, callbacks=[stop, stop])
    with pytest.raises(TypeError, match=r"callbacks must be a list of callbacks \(or None\); got int 1"):
        model.fit(X, y, epochs=1, verbose=0, callbacks=1)

    class Named(fastnn.metrics.Metric):
        def __init__(self, name):
            self.name = name

        def reset(self):
            pass

        def update(self, y_true, y_pred):
            pass

        def result(self):
            return 123.0
    for name in ("loss", "lr", "val_loss"):
        with pytest.raises(ValueError, match=rf"is named '{name}', a key fit logs itself"):
            model.compile(loss="cross_entropy", optimizer="sgd", metrics=[Named(name)])


def test_a_schedule_decaying_below_float32s_normals_and_one_ending_early():
    """Found by an attack: StepLR(1, 0.1) over 40 epochs crashed fit at epoch 38 (the lr
    setter refused 1e-38, a value the schedule passes on its way to 0); CosineLR shorter than
    the fit trained its last epochs at lr 0 without a word."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32)
    model = nn.Sequential(nn.Dense(4, 2))
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1))
    history = model.fit(X, y, epochs=40, verbose=0, callbacks=[schedulers.StepLR(step_size=1, gamma=0.1)])
    assert len(history.history["loss"]) == 40 and history.history["lr"][-1] < 1e-38
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1))
    with pytest.warns(UserWarning, match=r"set the learning rate to 0 for epoch 5 of 8"):
        model.fit(X, y, epochs=8, verbose=0, callbacks=[schedulers.CosineLR(total_epochs=4)])


def test_augment_warns_of_a_channels_last_image_shape():
    """Found by an attack: Augment((8, 8, 3), flip=True) read 8 channels of 8 x 3 and flipped
    colour channels of channels-last images, silently."""
    with pytest.warns(UserWarning, match=r"looks like \(height, width, channels\).*pass \(3, 8, 8\)"):
        data.Augment((8, 8, 3), flip=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.Augment((3, 8, 8), flip=True)
        data.Augment((2, 5, 7))


def test_evaluate_from_a_callback_leaves_the_epoch_s_metrics_alone():
    """evaluate reset the compiled metrics that fit's epoch counts in: the epoch's accuracy
    then counted the evaluated set and only the batches after it (found by an attack)."""
    rng = np.random.default_rng(0)
    X = rng.random((200, 8), dtype=np.float32)
    y = (X.sum(1) > 4).astype(np.int64)

    def run(peek):
        fastnn.seed(0)
        model = nn.Sequential(nn.Dense(8, 2))
        model.compile(loss="cross_entropy", optimizer="sgd")

        class Peek(fastnn.callbacks.Callback):
            def on_batch_end(self, batch, logs=None):
                if peek and batch == 4:
                    self.values = self.model.evaluate(X[:100], 1 - y[:100])

        cb = Peek()
        history = model.fit(X, y, epochs=1, batch_size=20, seed=1, verbose=0, callbacks=[cb])
        return history.history, cb

    plain, _ = run(False)
    peeked, cb = run(True)
    assert peeked == plain
    assert set(cb.values) == {"loss", "accuracy"}


def test_a_keras_style_schedule_function_gets_the_current_lr(digits_small):
    """Found by an attack: LearningRateScheduler(lambda epoch, lr: lr * 0.5), Keras's form,
    ended in a raw "missing 1 required positional argument: 'lr'"."""
    X, y, _, _ = digits_small
    schedule = callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else lr * 0.5)
    history = model_for(lr=0.08).fit(X, y, epochs=3, verbose=0, seed=0, callbacks=[schedule])
    assert history.history["lr"] == pytest.approx([0.08, 0.04, 0.02])
    with pytest.raises(TypeError, match=r"must take the epoch \(epoch -> lr\) or the epoch and "
                                        r"the current rate"):
        callbacks.LearningRateScheduler(lambda: 0.1)


@pytest.mark.parametrize("bad", [lambda epoch: None, lambda epoch: "0.1"])
def test_a_schedule_function_that_gives_no_number_is_named(digits_small, bad):
    """Found by an attack: None (a missing return) or a string ended in float()'s own error,
    naming no callback."""
    X, y, _, _ = digits_small
    with pytest.raises(TypeError, match=r"LearningRateScheduler: the schedule's learning rate "
                                        r"for epoch 0 must be a number; got (None|'0.1')"):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.LearningRateScheduler(bad)])


def test_a_model_whose_init_skipped_super_init_is_told_so(digits_small):
    """Found by an attack: fit, predict and gradient_check failed deep inside with a raw
    "'Net' object has no attribute 'training'"."""
    X, y, _, _ = digits_small

    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Dense(64, 10)  # super().__init__() forgotten

        def forward(self, x):
            return self.fc(x)

    model = Net()
    model.compile(loss="cross_entropy")
    words = r"Net has no attribute 'training': its __init__ did not call super\(\).__init__\(\)"
    for run in (lambda: model.fit(X, y, verbose=0), lambda: model.predict(X),
                lambda: fastnn.diagnostics.gradient_check(model, X[:4], y[:4], "cross_entropy")):
        with pytest.raises(AttributeError, match=words):
            run()
    assert not hasattr(model, "training") and nn.Dense(2, 2).training


def test_parameters_held_in_a_list_are_refused_by_compile_and_fit(digits_small):
    """Found by an attack: a layer of one's own keeping its Parameters in a list trained
    nothing in it (parameters() does not look there), silently; a dict of layers likewise."""
    X, y, _, _ = digits_small

    class ListHeld(nn.Module):
        def __init__(self):
            super().__init__()
            self.params = [nn.Parameter(np.ones((10, 16), np.float32))]

        def forward(self, x):
            self.x = x
            return x @ self.params[0].data.T

        def backward(self, grad_out, input_grad=True):
            self.params[0].grad[...] += grad_out.T @ self.x
            return grad_out @ self.params[0].data

    class DictHeld(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = {"a": nn.Dense(64, 10)}

        def forward(self, x):
            return self.heads["a"](x)

        def backward(self, grad_out, input_grad=True):
            return self.heads["a"].backward(grad_out, input_grad)

    listed = (r"1.params\[0\] is Parameter.*held in the list ListHeld.params, where "
              r"parameters\(\) does not look: no optimizer would train it")
    with pytest.raises(ValueError, match="compile: " + listed):
        nn.Sequential(nn.Dense(64, 16), ListHeld()).compile(loss="cross_entropy")
    with pytest.raises(ValueError, match=r"compile: heads\['a'\] is Dense\(64, 10\).*held in "
                                         r"the dict DictHeld.heads"):
        DictHeld().compile(loss="cross_entropy")
    model = nn.Sequential(nn.Dense(64, 16))
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.layers.append(ListHeld())  # after compile
    with pytest.raises(ValueError, match="fit: " + listed):
        model.fit(X, y, epochs=1, verbose=0)
    kept = ListHeld()
    kept.weight = kept.params[0]  # an attribute too: found, and trained
    model = nn.Sequential(nn.Dense(64, 16), kept)
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.fit(X, y, epochs=1, verbose=0)
    assert not np.array_equal(kept.weight.data, np.ones((10, 16), np.float32))


def test_a_model_of_one_s_own_holding_a_list_named_layers_is_not_taken_for_a_sequential():
    """Found by an attack: fit, predict and the loss's checks took any model with a
    `layers` attribute (PyTorch's usual `self.layers = [...]`) for a Sequential: a model
    flattening images itself was refused them ("add nn.Flatten()"), and a backward(grad) of
    one's own was called with input_grad=, a TypeError. The same class with `blocks` ran."""
    rng = np.random.default_rng(0)

    class ImageNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Dense(64, 16, activation="relu"), nn.Dense(16, 10)]

        def forward(self, x):
            h = fastnn.flatten(x)
            for layer in self.layers:
                h = layer(h)
            return h

    X = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    model = ImageNet()
    model.compile("cross_entropy", "adam")
    model.fit(X, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.predict(X), model(X))

    class Hand(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Dense(4, 8, activation="relu"), nn.Dense(8, 3)]

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

        def backward(self, grad):
            for layer in reversed(self.layers):
                grad = layer.backward(grad)
            return grad

    hand = Hand()
    hand.compile("cross_entropy", "sgd")
    before = hand.layers[0].weight.data.copy()
    hand.fit(rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 3, 40), verbose=0)
    assert not np.array_equal(before, hand.layers[0].weight.data)


def test_a_fit_inside_a_fit_counts_its_metrics_apart():
    """Found by an attack: every fit counted into the compiled metric objects, so a fit from
    a callback (fine-tuning on other data) mixed its batches into the running epoch's
    accuracy: 16/56 reported where every one of the epoch's batches was right."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    X2 = rng.standard_normal((40, 4)).astype(np.float32)
    model = nn.Sequential(nn.Dense(4, 2))
    model.compile("cross_entropy", "sgd", metrics=["accuracy"])
    model.layers[0].weight.data[...] = 0
    model.layers[0].bias.data[...] = [5, -5]  # always class 0
    model.compiled.optimizer.lr = 1e-30
    inner = []

    class FineTune(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                inner.append(self.model.fit(X2, np.ones(40, np.int64), epochs=1, batch_size=40,
                                            verbose=0).history["accuracy"][0])

    history = model.fit(X, np.zeros(64, np.int64), epochs=1, batch_size=16, shuffle=False,
                        verbose=0, callbacks=[FineTune()])
    assert history.history["accuracy"] == [1.0] and inner == [0.0]


def test_fit_counts_in_the_compiled_metrics_unless_another_fit_does(rng=np.random.default_rng(0)):
    """Review of per-fit metric copies: a fit alone counts in the compiled metric objects,
    as before (a metric of one's own reading the live model, one holding a lock, one the
    user keeps a reference to, and a warning given once all relied on it); copies only
    where another fit is counting (see test_a_fit_inside_a_fit_counts_its_metrics_apart)."""
    import threading as _threading

    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)

    class WeightNorm(fastnn.metrics.Metric):
        name = "w_norm"

        def __init__(self, layer):
            self.layer, self.lock = layer, _threading.Lock()
            self.reset()

        def reset(self):
            self.value, self.seen = None, 0

        def update(self, target, pred):
            with self.lock:
                self.value = float(np.linalg.norm(self.layer.weight.data))
                self.seen += len(target)

        def result(self):
            return self.value

    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 3))
    metric = WeightNorm(model.layers[0])
    model.compile("cross_entropy", "sgd", metrics=[metric])
    model.compiled.optimizer.lr = 0.5
    model.fit(X, y, epochs=2, batch_size=64, verbose=0)
    assert metric.seen == 64 and metric.value == pytest.approx(np.linalg.norm(model.layers[0].weight.data), rel=0.2)
    mse = nn.Sequential(nn.Dense(4, 1))
    mse.compile("mse", "sgd", metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mse.fit(X, rng.standard_normal((64, 1)).astype(np.float32), verbose=0)
        mse.fit(X, rng.standard_normal((64, 1)).astype(np.float32), verbose=0)
    assert sum(issubclass(w.category, fastnn.metrics.MetricWarning) for w in caught) == 1


def test_fit_refuses_a_one_sample_batch_norm_batch_inside_a_block_with_layers():
    """Review: the up-front check stopped following a block's `layers` list when Sequentials
    began to be told by their class; the kernel's error then came mid-epoch, after updates."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Dense(8, 8), nn.BatchNorm1d(8), nn.ReLU()]

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Dense(4, 8), Block(), nn.Dense(8, 3))
    model.compile("cross_entropy", "sgd")
    before = model.layers[0].weight.data.copy()
    with pytest.raises(ValueError, match="would hold one sample"):
        model.fit(rng.standard_normal((33, 4)).astype(np.float32), rng.integers(0, 3, 33),
                  batch_size=32, verbose=0, shuffle=False)
    np.testing.assert_array_equal(model.layers[0].weight.data, before)
