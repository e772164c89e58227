"""The warnings and error hints a learner needs (issue 15, item 3): dead ReLU layers, inputs
left at 0-255, a requested metric that cannot be computed, and the errors students hit
most (one output unit with cross-entropy, labels with MSE, images into Dense, Keras
spellings)."""

import warnings

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim
from fastnn.diagnostics import DataWarning, GradientWarning
from fastnn.metrics import MetricWarning


def caught(fn, *args, **kw):
    """fn's result and the warnings it raised."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn(*args, **kw)
    return result, record


def of(record, category):
    return [str(w.message) for w in record if issubclass(w.category, category)]


@pytest.fixture(scope="module")
def pixels():
    """Whole-number 0-255 'images' with labels of 3 classes."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(64, 16)).astype(np.float32)
    return X, rng.integers(0, 3, size=64)


def classifier(n_in=16, n_out=3, **compile_kw):
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(n_in, 8, activation="relu"), nn.Dense(8, n_out))
    model.compile(**{"loss": "cross_entropy", "optimizer": optim.SGD(lr=0.01), **compile_kw})
    return model


# ----------------------------------------------------------------------------- dead ReLU
def test_a_dead_relu_layer_is_named_once():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((128, 8)).astype(np.float32), rng.integers(0, 3, 128)
    fastnn.seed(0)
    dying, alive = nn.Dense(8, 10, activation="relu"), nn.Dense(10, 10, activation="relu")
    dying.bias.data[:9] = -1e4          # 9 of its 10 units never fire: 90% dead
    dying.bias.data[9] = 1e3            # (one that always does feeds the next layer)
    alive.bias.data[...] = 1.0          # most of its units fire
    model = nn.Sequential(dying, alive, nn.Dense(10, 3))
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=1e-6))
    history, record = caught(model.fit, X, y, epochs=3, batch_size=32, verbose=0,
                             diagnostics=True)
    assert history.diagnostics["0:Dense"]["dead_fraction"] == pytest.approx([0.9] * 3)
    assert max(history.diagnostics["1:Dense"]["dead_fraction"]) < 0.9
    dead = [m for m in of(record, GradientWarning) if "dead" in m]
    assert len(dead) == 1, dead                  # once for the run, not once per epoch
    assert "0:Dense" in dead[0] and "90.0%" in dead[0] and "1:Dense" not in dead[0]


# ----------------------------------------------------------------------------- 0-255 inputs
def test_fit_warns_once_about_raw_pixel_values(pixels):
    X, y = pixels
    _, record = caught(classifier().fit, X, y, epochs=2, batch_size=16, verbose=0)
    warned = of(record, DataWarning)
    assert len(warned) == 1, warned
    assert "255" in warned[0] and "normalize=True" in warned[0]
    assert record[[issubclass(w.category, DataWarning) for w in record].index(True)] \
        .filename == __file__                    # attributed to the fit call


def test_rescaled_8bit_images_are_flagged_too():
    """digits without normalisation: 0..16 scaled to 0..255, not whole numbers."""
    X, y, _, _ = fastnn.datasets.load("digits", normalize=False)
    _, record = caught(classifier(64, 10).fit, X[:64], y[:64], verbose=0)
    assert len(of(record, DataWarning)) == 1


@pytest.mark.parametrize("scale", ["unit", "standardised", "large_fractional", "small_ints"])
def test_prepared_inputs_give_no_data_warning(pixels, scale):
    X, y = pixels
    rng = np.random.default_rng(2)
    X = {"unit": X / 255.0,
         "standardised": rng.standard_normal(X.shape) * 3,
         "large_fractional": rng.uniform(0, 100, X.shape),          # not pixels: no grid
         "small_ints": rng.integers(0, 10, X.shape)}[scale].astype(np.float32)
    _, record = caught(classifier().fit, X, y, verbose=0)
    assert of(record, DataWarning) == []


# ----------------------------------------------------------------------------- metrics
def test_accuracy_with_mse_on_a_sigmoid_output_is_computed():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.float32)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 8, activation="tanh"), nn.Dense(8, 1, activation="sigmoid"))
    model.compile(loss="mse", optimizer=optim.Adam(lr=0.05), metrics=["accuracy"])
    history, record = caught(model.fit, X, y, epochs=3, verbose=0, validation_split=0.25)
    assert of(record, MetricWarning) == []
    assert len(history.history["accuracy"]) == 3 and len(history.history["val_accuracy"]) == 3
    expected = np.mean((model.predict(X)[:, 0] > 0.5) == (y == 1))
    result = model.evaluate(X, y)
    assert result["accuracy"] == pytest.approx(expected)
    assert result["accuracy"] > 0.6                     # it did learn something


def test_accuracy_asked_for_but_undefined_is_said_once():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)        # regression targets
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 1))
    model.compile(loss="mse", optimizer=optim.SGD(lr=0.01), metrics=["accuracy"])
    history, record = caught(model.fit, X, y, epochs=2, verbose=0, validation_split=0.25)
    warned = of(record, MetricWarning)
    assert len(warned) == 1 and "accuracy" in warned[0] and "MSE" in warned[0], warned
    assert "accuracy" not in history.history
    # compile's default metrics on a regression: nothing to say
    model.compile(loss="mse", optimizer=optim.SGD(lr=0.01))
    _, record = caught(model.fit, X, y, epochs=1, verbose=0)
    assert of(record, MetricWarning) == []


# ----------------------------------------------------------------------------- error hints
def test_one_output_unit_with_cross_entropy_suggests_bce_or_two_units():
    X = np.random.default_rng(5).standard_normal((16, 4)).astype(np.float32)
    y = np.arange(16) % 2
    model = classifier(4, 1)
    for call in (lambda: model.fit(X, y, verbose=0), lambda: losses.CrossEntropy()(
            np.zeros((16, 1), np.float32), y)):
        with pytest.raises(ValueError) as info:
            call()
        assert "binary_cross_entropy" in str(info.value) and "2 units" in str(info.value)


def test_integer_labels_with_mse_suggest_one_hot():
    X = np.random.default_rng(6).standard_normal((16, 4)).astype(np.float32)
    model = classifier(4, 3, loss="mse")
    for y in (np.arange(16) % 3, (np.arange(16) % 3).astype(np.float32)):
        with pytest.raises(ValueError) as info:
            model.fit(X, y, verbose=0)
        message = str(info.value)
        assert "one_hot=True" in message and "cross_entropy" in message, message
    with pytest.raises(ValueError) as info:             # not labels: no hint
        model.fit(X, np.full(16, 0.5, np.float32), verbose=0)
    assert "one_hot" not in str(info.value)


@pytest.mark.parametrize("shape", [(8, 4, 4), (8, 1, 4, 4)], ids=str)
def test_images_into_dense_suggest_flatten(shape):
    X = np.zeros(shape, np.float32)
    model = classifier(16, 3)
    for call in (lambda: model.fit(X, np.zeros(8, int), verbose=0), lambda: model.predict(X),
                 lambda: model.layers[0](X)):
        with pytest.raises(ValueError) as info:
            call()
        assert "Flatten()" in str(info.value), str(info.value)


@pytest.mark.parametrize("cls, default", [(optim.GD, 0.01), (optim.SGD, 0.01),
                                          (optim.Adagrad, 0.01), (optim.RMSprop, 0.01),
                                          (optim.Adam, 1e-3), (optim.AdamW, 1e-3)])
def test_optimizers_take_keras_learning_rate(cls, default):
    assert cls(learning_rate=0.05).lr == 0.05
    assert cls(lr=0.05).lr == 0.05 and cls().lr == default
    assert optim.from_config(cls(learning_rate=0.05).get_config()).lr == 0.05
    with pytest.raises(TypeError) as info:
        cls(lr=0.1, learning_rate=0.2)
    assert "lr=0.1" in str(info.value) and "learning_rate=0.2" in str(info.value)
    with pytest.raises(ValueError, match="lr"):
        cls(learning_rate=-1.0)


def test_optim_get_takes_learning_rate():
    assert optim.get("momentum", learning_rate=0.3).lr == 0.3


@pytest.mark.parametrize("make", [lambda a: nn.Dense(8, 3, activation=a),
                                  lambda a: nn.Conv2d(1, 3, 3, activation=a)],
                         ids=["Dense", "Conv2d"])
def test_softmax_activation_says_what_to_write(make):
    for spelling in ("softmax", "Softmax"):
        with pytest.raises(ValueError) as info:
            make(spelling)
        message = str(info.value)
        assert "activation=None" in message and "loss='cross_entropy'" in message, message


def test_one_output_unit_with_ten_classes_suggests_ten_units_not_two():
    # digits' labels 0-9 and one output unit: "give the last layer 2 units" would lead
    # to the next error (label 9 outside [0, 2)).
    X = np.random.default_rng(5).standard_normal((20, 4)).astype(np.float32)
    y = np.arange(20) % 10
    with pytest.raises(ValueError) as info:
        classifier(4, 1).fit(X, y, verbose=0)
    message = str(info.value)
    assert "10 units" in message and "labels go up to 9" in message, message
    assert "binary_cross_entropy" not in message and "2 units" not in message, message


def test_test_and_validation_inputs_left_at_0_255_are_flagged(pixels):
    # Training inputs scaled, the test or validation set forgotten: its loss was silently
    # wrong (6.4 against 0.6 on digits), the warning came only for the training inputs.
    X, y = pixels
    model = classifier()
    _, record = caught(model.fit, X / 255, y, epochs=1, verbose=0, validation_data=(X, y))
    warned = of(record, DataWarning)
    assert len(warned) == 1 and warned[0].startswith("validation_data[0] holds"), warned
    _, record = caught(model.evaluate, X, y)
    warned = of(record, DataWarning)
    assert len(warned) == 1 and warned[0].startswith("X holds values from 0 to 255"), warned
    assert record[[issubclass(w.category, DataWarning) for w in record].index(True)] \
        .filename == __file__                    # attributed to the evaluate call
    _, record = caught(model.evaluate, X / 255, y)
    assert of(record, DataWarning) == []
