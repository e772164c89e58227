"""End-to-end training: XOR and depth, digits accuracy, determinism across thread counts,
fit / evaluate / predict contracts and the three gradient-descent batch modes."""

import math

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim

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
