"""Bad input gives a clear Python exception (TypeError / ValueError naming the argument or
the shapes), never a crash or a silent wrong answer."""

import re

import numpy as np
import pytest

import fastnn
from fastnn import _C, losses, nn, optim

from _ref import names_argument

CLEAR = (TypeError, ValueError)


def raises(fn, *args, exc=CLEAR, mentions=(), any_of=(), **kw):
    """fn(*args, **kw) raises exc; the message contains every string in `mentions` and,
    if given, at least one of `any_of`."""
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    msg = str(info.value)
    for m in mentions:
        assert m in msg, f"message should mention {m!r}: {msg!r}"
    if any_of:
        assert any(a in msg for a in any_of), f"message should mention one of {any_of}: {msg!r}"
    return msg


def compiled_model(in_features=5, classes=3):
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(in_features, 8, activation="relu"), nn.Dense(8, classes))
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1), metrics=["accuracy"])
    return model


# ----------------------------------------------------------------------------- shapes and ranks
@pytest.mark.parametrize("shape", [(5,), (2, 3, 5), ()], ids=str)
def test_dense_wrong_rank(shape):
    layer = nn.Dense(5, 3)
    raises(layer, np.ones(shape, np.float32), exc=ValueError, any_of=(str(shape), f"{len(shape)}", "dim", "rank", "shape"))


def test_non_numeric_arrays_are_refused_naming_the_layer_or_loss():
    """The names are built only when a check fails (layers pass them as functions)."""
    dense, text = nn.Dense(4, 3), np.array([["a"] * 4] * 2)
    raises(dense, text, exc=TypeError, mentions=("Dense(4, 3) input", "numeric", "<U1"))
    dense(np.zeros((2, 4), np.float32))
    raises(dense.backward, text[:, :3], exc=TypeError, mentions=("Dense(4, 3) grad_out", "<U1"))
    raises(nn.ReLU(), text, exc=TypeError, mentions=("ReLU() input", "<U1"))
    raises(losses.CrossEntropy(), np.zeros((2, 3), np.float32), np.array(["x", "y"]),
           exc=TypeError, mentions=("CrossEntropy: target", "<U1"))
    raises(losses.MSE(), text, np.zeros((2, 4)), exc=TypeError, mentions=("MSE: pred", "<U1"))


def test_float64_values_beyond_float32_s_range_are_refused_not_made_infinite():
    """NumPy's cast made 1e39 infinite with only a warning; an infinity given as such stays
    one (found by an attack)."""
    big = np.array([[1e39, 1.0, 0.0, 0.0]])
    raises(nn.Dense(4, 3), big, exc=ValueError, mentions=("Dense(4, 3) input", "float32", "1e+39"))
    raises(nn.Conv2d(1, 2, 3), np.full((1, 1, 4, 4), -1e300), exc=ValueError,
           mentions=("input", "float32", "1e+300"))
    raises(lambda: next(iter(fastnn.data.batches(big, np.zeros(1), 1))), exc=ValueError,
           mentions=("X", "float32"))
    raises(compiled_model(4).fit, big.repeat(4, 0), np.zeros(4, int), epochs=1, verbose=0,
           exc=ValueError, mentions=("X", "float32's range"))
    out = nn.Dense(4, 3)(np.array([[np.inf, 1.0, 0.0, 0.0]]))
    assert not np.isfinite(out).all()


def test_dense_mismatched_feature_count():
    layer = nn.Dense(5, 3)
    raises(layer, np.ones((4, 6), np.float32), exc=ValueError, mentions=("5", "6"))


def test_sequential_mismatched_layers():
    model = nn.Sequential(nn.Dense(5, 3), nn.Dense(4, 2))
    raises(model, np.ones((2, 5), np.float32), exc=ValueError, mentions=("3", "4"))


def test_fit_mismatched_feature_count():
    model = compiled_model(in_features=5)
    X = np.ones((10, 7), np.float32)
    y = np.zeros(10, np.int64)
    raises(model.fit, X, y, epochs=1, verbose=0, exc=ValueError, mentions=("5", "7"))
    raises(model.predict, X, exc=ValueError, mentions=("5", "7"))
    raises(model.evaluate, X, y, exc=ValueError, mentions=("5", "7"))


def test_fit_X_and_y_of_different_lengths():
    model = compiled_model()
    X = np.ones((10, 5), np.float32)
    y = np.zeros(9, np.int64)
    raises(model.fit, X, y, epochs=1, verbose=0, exc=ValueError, mentions=("10", "9"))
    raises(model.evaluate, X, y, exc=ValueError, mentions=("10", "9"))


def test_fit_wrong_rank_X():
    model = compiled_model()
    raises(model.fit, np.ones(5, np.float32), np.zeros(5, np.int64), epochs=1, verbose=0, exc=ValueError)
    raises(model.fit, np.ones((4, 5, 1), np.float32), np.zeros(4, np.int64), epochs=1, verbose=0, exc=ValueError)


def test_backward_with_wrong_gradient_shape():
    layer = nn.Dense(5, 3)
    layer(np.ones((4, 5), np.float32))
    raises(layer.backward, np.ones((4, 2), np.float32), exc=ValueError, mentions=("3",))
    raises(layer.backward, np.ones((3, 3), np.float32), exc=ValueError, mentions=("4",))


def test_backward_before_forward():
    layer = nn.Dense(5, 3)
    with pytest.raises((RuntimeError, ValueError)):
        layer.backward(np.ones((4, 3), np.float32))


def test_fit_before_compile():
    model = nn.Sequential(nn.Dense(5, 3))
    with pytest.raises((RuntimeError, ValueError)) as info:
        model.fit(np.ones((4, 5), np.float32), np.zeros(4, np.int64), epochs=1, verbose=0)
    assert "compile" in str(info.value)


# ----------------------------------------------------------------------------- empty arrays
def test_fit_empty_arrays():
    model = compiled_model()
    raises(model.fit, np.ones((0, 5), np.float32), np.zeros(0, np.int64), epochs=1, verbose=0,
           exc=ValueError, any_of=("empty", "0", "no samples"))


def test_evaluate_empty_arrays():
    model = compiled_model()
    raises(model.evaluate, np.ones((0, 5), np.float32), np.zeros(0, np.int64), exc=ValueError)


def test_predict_and_forward_empty_batch_do_not_crash():
    model = compiled_model()
    for fn in (model.predict, model):
        try:
            out = fn(np.ones((0, 5), np.float32))
        except ValueError:
            continue
        assert np.asarray(out).shape == (0, 3)


def test_empty_feature_dimension():
    layer = nn.Dense(5, 3)
    raises(layer, np.ones((4, 0), np.float32), exc=ValueError)


def test_losses_empty_arrays():
    for fn, args in ((losses.MSE(), (np.ones((0, 3), np.float32), np.ones((0, 3), np.float32))),
                     (losses.CrossEntropy(), (np.ones((0, 3), np.float32), np.zeros(0, np.int64))),
                     (losses.BinaryCrossEntropy(), (np.ones((0, 1), np.float32), np.ones((0, 1), np.float32)))):
        raises(fn, *args, exc=ValueError)


# ----------------------------------------------------------------------------- labels
def test_cross_entropy_labels_out_of_range_kernel():
    logits = np.zeros((4, 10), np.float32)
    msg = raises(_C.cross_entropy, logits, np.array([0, 3, 10, 11]), exc=ValueError, mentions=("10",))
    assert names_argument(msg, "labels", "label"), msg
    raises(_C.cross_entropy, logits, np.array([0, -1, 2, 3]), exc=ValueError, mentions=("-1",))


def test_cross_entropy_labels_out_of_range_module():
    loss_fn = losses.CrossEntropy()
    logits = np.zeros((4, 3), np.float32)
    raises(loss_fn, logits, np.array([0, 1, 3, 2]), exc=ValueError, mentions=("3",))
    raises(loss_fn, logits, np.array([0, 1, -1, 2]), exc=ValueError, mentions=("-1",))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", ">i4", "uint8", "uint16",
                                   "uint32", "uint64", "float32", "float64"])
def test_cross_entropy_checks_every_label_dtype_itself(dtype):
    """The loss's own check (one pass: a negative label read unsigned is past any class
    count), not the kernel's, names each label outside [0, classes) by its index and its
    value as given; the first and the last class pass."""
    loss_fn = losses.CrossEntropy()
    logits = np.zeros((4, 5), np.float32)
    assert np.isfinite(loss_fn(logits, np.array([0, 4, 4, 0]).astype(dtype)))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    bad = [5, 127 if info is None else int(info.max)] + ([-1, -128 if info is None else int(info.min)]
                                                      if info is None or info.min < 0 else [])
    for value in bad:
        labels = np.array([0, 1, 2, 3], dtype)
        labels[2] = value
        raises(loss_fn, logits, labels, exc=ValueError,
               mentions=(f"CrossEntropy: labels[2] = {labels[2]} is outside [0, 5) (the number of classes",))


def test_fit_labels_out_of_range():
    model = compiled_model(classes=3)
    X = np.ones((6, 5), np.float32)
    raises(model.fit, X, np.array([0, 1, 2, 3, 0, 1]), epochs=1, verbose=0, exc=ValueError, mentions=("3",))


def test_cross_entropy_labels_wrong_shape():
    logits = np.zeros((4, 3), np.float32)
    msg = raises(_C.cross_entropy, logits, np.zeros(5, np.int64), exc=ValueError)
    assert names_argument(msg, "labels"), msg
    raises(_C.cross_entropy, logits, np.zeros((4, 3), np.int64), exc=ValueError)
    raises(losses.CrossEntropy(), logits, np.zeros(5, np.int64), exc=ValueError, mentions=("4", "5"))
    raises(_C.cross_entropy_soft, logits, np.zeros((4, 2), np.float32), exc=ValueError)


def test_loss_shape_mismatch():
    raises(losses.MSE(), np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), exc=ValueError,
           mentions=("3", "2"))
    raises(losses.BinaryCrossEntropy(), np.ones((4, 1), np.float32), np.ones((5, 1), np.float32),
           exc=ValueError)
    msg = raises(_C.mse, np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), exc=ValueError)
    assert names_argument(msg, "target", "pred"), msg
    msg = raises(_C.binary_cross_entropy, np.ones((4, 3), np.float32), np.ones((3, 4), np.float32), exc=ValueError)
    assert names_argument(msg, "target", "pred"), msg


# ----------------------------------------------------------------------------- dtypes
NON_NUMERIC = {
    "str": lambda shape: np.full(shape, "a"),
    "bytes": lambda shape: np.full(shape, b"a"),
    "object": lambda shape: np.full(shape, None, dtype=object),
}


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_non_numeric_inputs_to_model(kind):
    model = compiled_model()
    X = NON_NUMERIC[kind]((4, 5))
    raises(model, X)
    raises(model.predict, X)
    raises(model.fit, X, np.zeros(4, np.int64), epochs=1, verbose=0)


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_non_numeric_labels(kind):
    model = compiled_model()
    raises(model.fit, np.ones((4, 5), np.float32), NON_NUMERIC[kind](4), epochs=1, verbose=0)
    raises(losses.CrossEntropy(), np.ones((4, 3), np.float32), NON_NUMERIC[kind](4))
    msg = raises(_C.cross_entropy, np.ones((4, 3), np.float32), NON_NUMERIC[kind](4))
    assert names_argument(msg, "labels"), msg


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_non_numeric_inputs_to_kernels(kind):
    bad = NON_NUMERIC[kind]((3, 4))
    good = np.ones((3, 4), np.float32)
    msg = raises(_C.activation_forward, "relu", bad)
    assert names_argument(msg, "x"), msg
    raises(_C.softmax_forward, bad)
    msg = raises(_C.mse, bad, good)
    assert names_argument(msg, "pred"), msg
    msg = raises(_C.mse, good, bad)
    assert names_argument(msg, "target"), msg
    msg = raises(_C.binary_cross_entropy, good, bad)
    assert names_argument(msg, "target"), msg
    msg = raises(_C.column_sum, bad, np.zeros(4, np.float32))
    assert names_argument(msg, "x"), msg


def test_complex_input_rejected_not_silently_truncated():
    layer = nn.Dense(2, 1)
    raises(layer, np.ones((3, 2), np.complex64) * 1j)


# ----------------------------------------------------------------------------- names
def test_unknown_dataset_name():
    raises(fastnn.datasets.load, "no-such-dataset", exc=ValueError, mentions=("no-such-dataset",))


def test_unknown_activation_name():
    raises(nn.Dense, 3, 2, activation="swishy", exc=ValueError, mentions=("swishy",))


def test_unknown_loss_name():
    model = nn.Sequential(nn.Dense(3, 2))
    raises(model.compile, loss="hinge-ish", optimizer=optim.SGD(lr=0.1), exc=ValueError, mentions=("hinge-ish",))


def test_unknown_optimizer_name():
    model = nn.Sequential(nn.Dense(3, 2))
    raises(model.compile, loss="cross_entropy", optimizer="rmsprop-ish", exc=ValueError, mentions=("rmsprop-ish",))


# ----------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize("make,name", [
    (lambda ps: optim.SGD(ps, lr=-0.1), "lr"),
    (lambda ps: optim.Adam(ps, lr=-1e-3), "lr"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "momentum"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1.0), "weight_decay"),
    (lambda ps: optim.Adam(ps, weight_decay=-1.0), "weight_decay"),
    (lambda ps: optim.Adam(ps, betas=(1.5, 0.999)), "beta"),
    (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), "beta"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), "eps"),
    (lambda ps: optim.SGD(ps, lr=float("nan")), "lr"),
], ids=["sgd-lr", "adam-lr", "momentum", "sgd-wd", "adam-wd", "beta1", "beta2", "eps", "nan-lr"])
def test_invalid_optimizer_hyperparameters(make, name):
    params = list(nn.Dense(3, 2).parameters())
    msg = raises(make, params, exc=ValueError)
    assert name in msg, f"message should name {name!r}: {msg!r}"
    raises(make, None, exc=ValueError)  # also when parameters are bound later


@pytest.mark.parametrize("kw,name", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=-4), "batch_size"),
    (dict(epochs=-1), "epochs"),
    (dict(validation_split=1.5), "validation_split"),
    (dict(validation_split=-0.1), "validation_split"),
    (dict(validation_split="0.1"), "validation_split must be a number in [0, 1); got str '0.1'"),
    (dict(seed=-1), "fit: seed must be an integer >= 0"),
    (dict(seed=1.5), "fit: seed must be an integer >= 0"),
    (dict(seed=True), "got bool True"),
    (dict(callbacks=fastnn.callbacks.EarlyStopping()), "callbacks must be a list of callbacks; "
                                                        "got one EarlyStopping: pass callbacks=[it]"),
])
def test_invalid_fit_arguments(kw, name):
    model = compiled_model()
    X = np.ones((10, 5), np.float32)
    y = np.zeros(10, np.int64)
    kw = dict(dict(epochs=1, verbose=0), **kw)
    msg = raises(model.fit, X, y, **kw)
    assert name in msg, msg


def test_seed_and_betas_name_the_argument():
    raises(fastnn.seed, -1, exc=ValueError, mentions=("fastnn.seed: n must be an integer >= 0",))
    raises(fastnn.seed, 2.0, exc=TypeError, mentions=("got float 2.0",))
    fastnn.seed(None)  # fresh entropy, as NumPy's
    raises(optim.Adam, betas=0.9, exc=ValueError, mentions=("betas must be a pair (beta1, beta2); got 0.9",))
    raises(optim.Adam, betas="ab", exc=ValueError, mentions=("betas must be a pair",))


class OwnModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(3, 2)

    def forward(self, x):
        return self.fc(x)


def test_loss_errors_in_fit_name_y_and_the_model_output():
    """A Sequential's targets are checked whole before training; a model of your own's at
    each batch, whose shapes alone (32 of 64 rows) misled."""
    model = nn.Sequential(nn.Dense(3, 2))
    model.compile(loss="mse")
    raises(model.fit, np.ones((64, 3), np.float32), np.ones(64, np.float32), epochs=1, verbose=0,
           exc=ValueError, mentions=("fit: y: MSE: target has shape (64,); expected (64, 2)",))
    own = OwnModel()
    own.compile(loss="mse")
    raises(own.fit, np.ones((64, 3), np.float32), np.ones(64, np.float32), epochs=1, verbose=0,
           exc=ValueError, mentions=("fit: the loss of a batch of 32 (y has shape (64,), the "
                                     "model's output (64, 2)): MSE: target has shape (32,)",))


def test_a_bad_label_is_named_by_its_index_in_y_before_any_update():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    y[200] = 3
    model = nn.Sequential(nn.Dense(4, 3))
    model.compile(loss="cross_entropy", optimizer="sgd")
    w = model.parameters()[0].data.copy()
    raises(model.fit, X, y, epochs=1, verbose=0, exc=ValueError,
           mentions=("fit: y: CrossEntropy: labels[200] = 3 is outside [0, 3)",))
    raises(model.fit, X, y - (y == 3), epochs=1, verbose=0, validation_data=(X[:50], y[170:220]),
           exc=ValueError, mentions=("fit: validation_data[1]: CrossEntropy: labels[30] = 3",))
    raises(model.evaluate, X, y, exc=ValueError, mentions=("evaluate: y:", "labels[200] = 3"))
    np.testing.assert_array_equal(model.parameters()[0].data, w)  # no step was taken


def test_weight_assigned_with_another_shape_names_the_layer():
    layer = nn.Dense(3, 2)
    layer.weight.data = np.zeros((3, 3), np.float32)
    raises(layer, np.ones((4, 3), np.float32), exc=ValueError,
           mentions=("Dense(3, 2): weight must have shape (2, 3); got (3, 3)",))
    layer.weight.data = np.zeros((2, 3), np.float32)
    layer.bias.data = np.zeros(3, np.float32)
    raises(layer, np.ones((4, 3), np.float32), exc=ValueError,
           mentions=("bias must have shape (2,); got (3,)",))


def test_model_checkpoint_pattern_errors_are_clear(tmp_path):
    """A malformed pattern fails at construction; a log key the epoch lacks names the keys
    it has (both were a bare KeyError or a format error after the first epoch)."""
    raises(fastnn.callbacks.ModelCheckpoint, "ck-{epoch.safetensors", exc=ValueError,
           mentions=("is not a valid pattern", "expected '}' before end of string"))
    pytest.importorskip("safetensors")
    model = compiled_model()
    ck = fastnn.callbacks.ModelCheckpoint(tmp_path / "ck-{val_loss:.3f}.safetensors",
                                          save_best_only=False)
    # a val_* key without validation data: refused before the first epoch
    raises(model.fit, np.ones((10, 5), np.float32), np.zeros(10, np.int64), epochs=1, verbose=0,
           callbacks=[ck], exc=ValueError,
           mentions=("ModelCheckpoint's path holds 'val_loss'", "validation data"))
    ck = fastnn.callbacks.ModelCheckpoint(tmp_path / "ck-{bogus:.3f}.safetensors",
                                          save_best_only=False)
    raises(model.fit, np.ones((10, 5), np.float32), np.zeros(10, np.int64), epochs=1, verbose=0,
           callbacks=[ck], exc=ValueError,
           mentions=("cannot be filled from this epoch's logs (KeyError: 'bogus')",
                     "it may name epoch, loss"))


def test_compare_refuses_a_model_instance():
    X, y = np.ones((20, 5), np.float32), np.zeros(20, np.int64)
    raises(fastnn.experiments.compare, compiled_model(), (X, y, X, y), exc=TypeError,
           mentions=("build_model must be a function that returns a new model", "got Sequential"))

    class Net(nn.Sequential):  # a class builds a model when called: taken
        def __init__(self):
            super().__init__(nn.Dense(5, 3))

    assert len(fastnn.experiments.compare(Net, (X, y, X, y), epochs=1, verbose=False).runs) == 1


def test_invalid_layer_sizes():
    for args in ((-1, 3), (3, -2)):
        msg = raises(nn.Dense, *args, exc=ValueError)
        assert re.search(r"features|in_|out_|-1|-2", msg), msg


def test_set_isa_unknown():
    raises(_C.set_isa, "sse9", exc=ValueError, mentions=("sse9",))


def test_state_survives_errors(rng):
    """After a rejected call the model still works and gives the same answer."""
    model = compiled_model()
    X = rng.standard_normal((6, 5)).astype(np.float32)
    before = model.predict(X).copy()
    for bad in (np.ones((6, 4), np.float32), np.full((6, 5), "x")):
        with pytest.raises(CLEAR):
            model.predict(bad)
    np.testing.assert_array_equal(model.predict(X), before)


def test_set_num_threads_rejects_non_positive():
    before = fastnn.get_num_threads()
    for n in (0, -1):
        msg = raises(fastnn.set_num_threads, n, exc=ValueError)
        assert str(n) in msg, msg
    assert fastnn.get_num_threads() == before


def test_bce_targets_outside_unit_interval():
    for from_logits in (True, False):
        raises(losses.BinaryCrossEntropy(from_logits=from_logits), np.full((3, 1), 0.5, np.float32),
               np.array([[0.0], [2.0], [1.0]], np.float32), exc=ValueError)


def test_dense_non_integer_sizes():
    raises(nn.Dense, 2.5, 3, exc=TypeError, mentions=("in_features",))
    raises(nn.Dense, 2, "3", exc=TypeError, mentions=("out_features",))


def test_cross_entropy_fractional_float_labels():
    raises(losses.CrossEntropy(), np.zeros((2, 3), np.float32), np.array([0.5, 1.7]))
    msg = raises(_C.cross_entropy, np.zeros((2, 3), np.float32), np.array([0.0, 1.0]), exc=TypeError)
    assert names_argument(msg, "labels"), msg


def test_conv_and_pool_geometry_past_the_kernels_bounds_is_named_at_construction():
    """A stride of 10**12 was accepted, then refused by the kernel under its own name; a
    padding of 10**9 met NumPy's "array is too big"."""
    raises(nn.Conv2d, 3, 4, 3, stride=10**12, exc=ValueError,
           mentions=("Conv2d: stride must be an int in [1, 2**30]",))
    raises(nn.MaxPool2d, 2, stride=10**12, exc=ValueError, mentions=("MaxPool2d: stride",))
    raises(nn.Conv2d, 3, 4, 3, dilation=2**31, exc=ValueError, mentions=("dilation",))
    conv = nn.Conv2d(3, 4, 3, padding=10**9)
    raises(conv, np.ones((1, 3, 8, 8), np.float32), exc=ValueError,
           mentions=("an input of shape (1, 3, 8, 8) gives an output of shape (1, 4, 2000000006, "
                     "2000000006), more values than an array can hold",))


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1), (0, 4, 3, 3)], ids=str)
def test_batch_norm_training_on_one_value_per_channel_names_the_layer(shape):
    """Inside a model the kernel's error named "batchnorm_forward", and the failed call
    counted a batch (found by an attack)."""
    layer = nn.BatchNorm1d(4) if len(shape) < 4 else nn.BatchNorm2d(4)
    model = nn.Sequential(nn.ReLU(), layer)
    raises(model, np.ones(shape, np.float32), exc=ValueError,
           mentions=(f"{layer!r}: training needs more than one value per channel", str(shape)))
    assert int(layer.num_batches_tracked) == 0
    model.eval()
    assert model(np.ones(shape, np.float32)).shape == shape


@pytest.mark.parametrize("n,batch_size,which", [(33, 32, "the last"), (5, 1, "every"), (1, None, "every")])
def test_fit_refuses_a_one_sample_batch_under_batchnorm1d_before_training(n, batch_size, which):
    """The kernel's error came mid-epoch, after the earlier batches had moved the weights."""
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(3, 4), nn.BatchNorm1d(4), nn.Dense(4, 2))
    model.compile(loss="cross_entropy")
    before = [p.data.copy() for p in model.parameters()]
    raises(model.fit, np.ones((n, 3), np.float32), np.zeros(n, np.int64), epochs=1, verbose=0,
           batch_size=batch_size, exc=ValueError,
           mentions=(f"fit: {which} batch of each epoch would hold one sample ({n} training",
                     "BatchNorm1d(4) cannot normalize one value per channel"))
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))
    model.fit(np.ones((34, 3), np.float32), np.zeros(34, np.int64), epochs=1, verbose=0,
              batch_size=32)  # 34 = 32 + 2: fine
    # one sample of (channels, length), or of images larger than 1 x 1, has values to
    # normalize: trained as before
    seq = nn.Sequential(nn.Reshape((4, 5)), nn.BatchNorm1d(4), nn.Flatten(), nn.Dense(20, 3))
    seq.compile(loss="cross_entropy")
    seq.fit(np.ones((n, 20), np.float32), np.zeros(n, np.int64), epochs=1, verbose=0, batch_size=batch_size)
    cnn = nn.Sequential(nn.Reshape((1, 4, 5)), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                        nn.Dense(12, 3))
    cnn.compile(loss="cross_entropy")
    cnn.fit(np.ones((n, 20), np.float32), np.zeros(n, np.int64), epochs=1, verbose=0, batch_size=batch_size)
    cnn = nn.Sequential(nn.Reshape((1, 4, 5)), nn.Conv2d(1, 2, (4, 5)), nn.BatchNorm2d(2), nn.Flatten(),
                        nn.Dense(2, 3))  # 1 x 1 images: one value a channel
    cnn.compile(loss="cross_entropy")
    raises(cnn.fit, np.ones((n, 20), np.float32), np.zeros(n, np.int64), epochs=1, verbose=0,
           batch_size=batch_size, exc=ValueError, mentions=("BatchNorm2d(2) cannot normalize",))


def test_a_metric_that_refuses_y_is_named_before_any_update():
    """f1 on a regression target: its error named no metric, and came after the first
    batch's update."""
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(3, 1))
    model.compile(loss="mse", metrics=["f1"])
    before = model.layers[0].weight.data.copy()
    X = np.random.default_rng(0).random((64, 3), dtype=np.float32)
    raises(model.fit, X, X[:, :1] * 0.5, epochs=1, verbose=0, exc=ValueError,
           mentions=("metric 'f1': y_true must hold integer class labels",))
    np.testing.assert_array_equal(model.layers[0].weight.data, before)


def test_seed_objects_numpy_takes_are_taken():
    model = compiled_model()
    X, y = np.ones((10, 5), np.float32), np.zeros(10, np.int64)
    for seed in (np.random.SeedSequence(3), np.random.PCG64(3), np.random.default_rng(3), np.int64(3)):
        model.fit(X, y, epochs=1, verbose=0, seed=seed)


# ----------------------------------------------------------------------------- found by an attack
def _adam(**changed):
    p, g, m, v = (np.zeros(4, np.float32) for _ in range(4))
    kw = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1) | changed
    return _C.adam_step(p, g, m, v, **kw)


def _rmsprop(**changed):
    p, g, s = (np.zeros(4, np.float32) for _ in range(3))
    kw = dict(lr=0.1, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False) | changed
    return _C.rmsprop_step(p, g, s, None, None, **kw)


@pytest.mark.parametrize("call,exc,words", [
    # an empty plane pooled with padding had made -inf and argmax into nothing
    (lambda: _C.maxpool2d_forward(np.zeros((1, 1, 0, 4), np.float32), 2, padding=1), ValueError,
     ["'x'", "0x4", "empty"]),
    (lambda: _C.avgpool2d_forward(np.zeros((1, 1, 4, 0), np.float32), 2, padding=1), ValueError,
     ["'x'", "4x0", "empty"]),
    (lambda: _C.maxpool2d_backward(np.zeros((1, 1, 2, 2), np.float32),
                                   np.zeros((1, 1, 2, 2), np.int64), 5, 2), TypeError,
     ["'input_shape'", "int"]),
    # a beta of 1 (Adam) or an alpha past 1 (RMSprop) had made every weight NaN
    (lambda: _adam(beta1=1.0), ValueError, ["'beta1'", "[0, 1)"]),
    (lambda: _adam(beta2=-0.1), ValueError, ["'beta2'", "[0, 1)"]),
    (lambda: _rmsprop(alpha=2.0), ValueError, ["'alpha'", "[0, 1)"]),
    (lambda: _adam(step=2**63), ValueError, ["'step'", "out of range", "9223372036854775808"]),
    # probabilities outside [0, 1] had given a NaN loss and gradients of 1e11
    (lambda: _C.binary_cross_entropy(np.array([0.5, 1.5], np.float32),
                                     np.array([1.0, 0.0], np.float32), from_logits=False),
     ValueError, ["'pred'", "[0, 1]", "element 1"]),
], ids=["maxpool-empty-plane", "avgpool-empty-plane", "pool-input-shape-int", "adam-beta1",
        "adam-beta2", "rmsprop-alpha", "adam-step-overflow", "bce-probabilities"])
def test_raw_bindings_refuse_what_made_nan_or_garbage(call, exc, words):
    raises(call, exc=exc, mentions=words)


def test_raw_optimizer_and_norm_bindings_refuse_settings_float32_cannot_hold():
    """Found by an attack: the bindings read settings as float32, where 1e39 is inf and an
    eps of 1e-50 is 0 (NaN or -inf weights followed)."""
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    z = lambda: np.zeros(4, np.float32)  # noqa: E731
    adam = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    for bad, words in [(dict(lr=1e39), ["'lr'", "float32"]), (dict(lr=float("nan")), ["'lr'"]),
                       (dict(weight_decay=float("inf")), ["'weight_decay'"]),
                       (dict(eps=1e-40), ["'eps'", "smallest normal", "got 9.99"])]:
        raises(_C.adam_step, p.copy(), g, z(), z(), **dict(adam, **bad), exc=ValueError, mentions=words)
    raises(_C.sgd_step, p.copy(), g, None, lr=1e39, exc=ValueError, mentions=["'lr'", "float32"])
    raises(_C.adagrad_step, p.copy(), g, z(), lr=0.1, eps=0.0, weight_decay=0.0, lr_decay=0.0,
           step=1, exc=ValueError, mentions=["'eps'"])
    raises(_C.rmsprop_step, p.copy(), g, z(), None, None, lr=float("inf"), alpha=0.9, eps=1e-8,
           weight_decay=0.0, momentum=0.0, centered=False, exc=ValueError, mentions=["'lr'"])
    raises(_C.batchnorm_forward, np.ones((4, 3), np.float32), None, None, None, None, None, None,
           training=True, eps=1e-50, exc=ValueError, mentions=["'eps'", "1e-50"])


def test_an_empty_batch_still_pools_and_probabilities_at_the_ends_still_count():
    y, argmax = _C.maxpool2d_forward(np.zeros((0, 2, 4, 4), np.float32), 2)
    assert y.shape == (0, 2, 2, 2) and argmax.shape == (0, 2, 2, 2)
    loss, grad = _C.binary_cross_entropy(np.array([1.0, 0.0], np.float32),
                                         np.array([1.0, 0.0], np.float32), from_logits=False)
    assert loss == 0.0 and np.all(np.isfinite(grad))


@pytest.mark.parametrize("call,exc,words", [
    (lambda: optim.SGD(lr="0.1"), TypeError, ["lr must be a number", "'0.1'"]),
    (lambda: optim.SGD(lr=True), TypeError, ["lr must be a number", "True"]),
    (lambda: optim.SGD(lr=0.1, momentum=0.9, nesterov="False"), TypeError, ["nesterov", "'False'"]),
    (lambda: nn.Dropout("0.5"), TypeError, ["Dropout: p must be a number"]),
    (lambda: fastnn.callbacks.EarlyStopping(monitor=3), TypeError, ["monitor", "int 3"]),
    (lambda: fastnn.callbacks.CSVLogger("log.csv", separator=";;"), ValueError,
     ["separator must be one character", "';;'"]),
    (lambda: fastnn.load("."), IsADirectoryError, ["is a folder"]),
], ids=["lr-str", "lr-bool", "nesterov-str", "dropout-str", "monitor-int", "csv-separator",
        "load-folder"])
def test_settings_of_the_wrong_kind_are_named_not_converted(call, exc, words):
    """Found by an attack: float("0.1"), float(True) and bool("False") had been taken as
    settings; a bad separator or monitor failed only after the first epoch; loading a
    folder said "No such device"."""
    raises(call, exc=exc, mentions=words)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: nn.BatchNorm1d(3, eps=1e-50), ValueError, ["BatchNorm1d: eps", "1e-50", "float32"]),
    (lambda: optim.Adam(lr=0.1, eps=1e-50), ValueError, ["eps", "1e-50", "float32"]),
    (lambda: optim.RMSprop(lr=0.1, eps=1e-50), ValueError, ["eps", "1e-50"]),
    (lambda: optim.Adagrad(lr=0.1, eps=1e-50), ValueError, ["eps", "1e-50"]),
    (lambda: optim.Adagrad(lr=0.1, lr_decay=1e39), ValueError, ["lr_decay", "1e+39", "float32"]),
    (lambda: optim.SGD(lr=1e39), ValueError, ["lr", "1e+39", "float32"]),
    (lambda: optim.SGD(lr=0.1, weight_decay=1e39), ValueError, ["weight_decay", "1e+39"]),
    (lambda: nn.LeakyReLU(1e39), ValueError, ["negative_slope", "1e+39"]),
    (lambda: nn.Dense(3, 2, l2=1e39), ValueError, ["l2", "1e+39"]),
    (lambda: optim.SGD(lr=np.complex128(0.1 + 5j)), TypeError, ["lr must be a number", "5j"]),
    (lambda: optim.Adam(lr=0.1, betas=(np.complex64(0.9), 0.999)), TypeError, ["betas[0]"]),
    (lambda: nn.Dropout(np.complex128(0.5)), TypeError, ["Dropout: p must be a number"]),
    (lambda: nn.LeakyReLU(np.complex128(0.1)), TypeError, ["negative_slope must be a number"]),
    (lambda: nn.BatchNorm2d(3, eps="1e-3"), TypeError, ["BatchNorm2d: eps must be a number"]),
    (lambda: nn.BatchNorm2d(3, momentum=True), TypeError, ["BatchNorm2d: momentum must be a number"]),
    (lambda: fastnn.callbacks.EarlyStopping(min_delta=None), TypeError, ["EarlyStopping: min_delta", "None"]),
], ids=["bn-eps-underflow", "adam-eps", "rmsprop-eps", "adagrad-eps", "adagrad-lr-decay",
        "sgd-lr", "sgd-weight-decay", "leaky-slope", "dense-l2", "lr-complex", "beta-complex",
        "dropout-complex", "leaky-complex", "bn-eps-str", "bn-momentum-bool", "min-delta-none"])
def test_settings_the_float32_kernels_cannot_hold_are_refused(call, exc, words):
    """Found by an attack: settings were checked as Python floats and used as float32, where
    1e39 is inf and 1e-50 is 0 (NaN or -inf weights followed); NumPy complex numbers lost
    their imaginary part with only a warning; BatchNorm took strings and bools."""
    raises(call, exc=exc, mentions=words)


def test_a_learning_rate_float32_flushes_to_zero_is_refused():
    """Found by a review: lr=1e-50 passed 'lr > 0' and is 0 in float32: nothing trained."""
    for make in (lambda: optim.SGD(lr=1e-50), lambda: optim.Adam(lr=1e-40)):
        raises(make, exc=ValueError, mentions=["lr must be > 0", "smallest normal"])
    opt = optim.SGD(nn.Dense(3, 2).parameters(), lr=0.1)
    opt.lr = 1e-45  # a decaying schedule's way to 0 (found by an attack: StepLR crashed fit)
    assert opt.lr == 1e-45
    assert optim.SGD(lr=np.array(0.5)).lr == 0.5  # a 0-d array is a number


def test_an_optimizers_lr_set_between_steps_is_checked():
    """Found by an attack: lr = NaN, inf or -0.5 set after construction went to the kernels
    (a negative rate climbed the gradient). 0 stays allowed: a schedule may end there."""
    opt = optim.SGD(nn.Dense(3, 2).parameters(), lr=0.1)
    for bad in (float("nan"), float("inf"), -0.5, 1e39):
        raises(setattr, opt, "lr", bad, exc=ValueError, mentions=["lr"])
        assert opt.lr == 0.1
    opt.lr = 0
    assert opt.lr == 0.0
    opt.lr = np.float32(0.25)
    assert opt.lr == 0.25 and type(opt.lr) is float


def test_early_stopping_takes_a_numpy_patience():
    stop = fastnn.callbacks.EarlyStopping(patience=np.int64(3))
    assert stop.patience == 3 and type(stop.patience) is int


def test_optimizer_state_arrays_are_checked_before_loading():
    """Found by an attack: objects loaded as NaN, 1e300 as inf, complex lost its imaginary
    part, and a step of 2**63 - 1 failed only at the next step()."""
    opt = optim.Adam(nn.Dense(3, 2).parameters(), lr=0.1)
    good = opt.state_arrays()
    for key, bad, exc, words in [
            ("0.exp_avg", np.full((2, 3), None, object), TypeError, ["'0.exp_avg'", "object"]),
            ("0.exp_avg", np.ones((2, 3), np.complex64), TypeError, ["'0.exp_avg'", "complex64"]),
            ("0.exp_avg_sq", np.full((2, 3), 1e300), ValueError, ["'0.exp_avg_sq'", "1e+300", "float32"]),
            ("step", np.array(2**63 - 1, np.int64), ValueError, ["'step'", "2**63 - 1"])]:
        arrays = dict(good, **{key: bad})
        raises(opt.load_state_arrays, arrays, exc=exc, mentions=words)
        for k, v in opt.state_arrays().items():  # nothing changed
            np.testing.assert_array_equal(v, good[k])
    arrays = dict(good, **{"0.exp_avg": np.full((2, 3), 0.5), "step": np.array([7], np.uint8)})
    opt.load_state_arrays(arrays)
    assert opt.step_count == 7 and np.all(opt.state_arrays()["0.exp_avg"] == 0.5)


def test_a_failed_loss_call_leaves_no_stale_gradient():
    """Found by an attack: after a call that raised, backward() returned the previous
    batch's gradient."""
    loss = fastnn.losses.CrossEntropy()
    loss(np.zeros((2, 3), np.float32), np.array([0, 1]))
    raises(loss, np.zeros((2, 3), np.float32), np.array([0, 7]), exc=ValueError)
    raises(loss.backward, exc=RuntimeError, mentions=["backward called before", "failed"])


def test_a_conv_weight_assigned_anew_is_checked_as_dense_is():
    """Found by an attack: a Conv2d weight of another shape gave an output of another shape
    than output_shape, and later errors named 'out' or 'grad_weight', not the layer."""
    conv = nn.Conv2d(2, 3, 3, bias=True)
    conv.weight.data = np.zeros((3, 2, 2, 3), np.float32)
    raises(conv, np.zeros((1, 2, 5, 5), np.float32), exc=ValueError,
           mentions=["Conv2d(2, 3", "weight must have shape (3, 2, 3, 3)", "(3, 2, 2, 3)"])
    conv = nn.Conv2d(4, 4, 3, groups=2)
    conv.bias.data = np.zeros(5, np.float32)
    raises(conv, np.zeros((1, 4, 5, 5), np.float32), exc=ValueError,
           mentions=["bias must have shape (4,)", "(5,)"])
    conv.bias.data = np.zeros(4, np.float32)
    assert conv(np.zeros((1, 4, 5, 5), np.float32)).shape == (1, 4, 3, 3)


@pytest.mark.parametrize("make,x", [(lambda: nn.Conv2d(2, 3, 3), np.ones((1, 2, 5, 5))),
                                    (lambda: nn.Dense(4, 3, activation="tanh"), np.ones((2, 4)))],
                         ids=["Conv2d", "Dense"])
def test_a_weight_assigned_anew_between_forward_and_backward_is_named(make, x):
    """Backward had blamed grad_y's (or the product's) shape (found by an attack)."""
    layer = make()
    y = layer(x.astype(np.float32))
    shape = layer.weight.data.shape
    layer.weight.data = np.zeros((shape[0] + 1,) + shape[1:], np.float32)
    raises(layer.backward, np.ones_like(y), exc=ValueError,
           mentions=(f"{layer!r}: weight must have shape {shape}",))


@pytest.mark.parametrize("name", ["shuffle", "diagnostics", "distributed"])
def test_fit_refuses_a_flag_that_is_not_a_bool(name):
    model = compiled_model()  # "False" is truthy: diagnostics ran
    raises(model.fit, np.zeros((8, 5), np.float32), np.zeros(8, np.int64), **{name: "False"},
           verbose=0, exc=TypeError, mentions=[name, "'False'"])


def test_inputs_numpy_cannot_take_say_how_to_pass_them():
    """A sparse matrix and a pandas frame of nullable dtypes reach NumPy as objects; a ragged
    list failed in NumPy's words, naming no argument."""
    sparse = pytest.importorskip("scipy.sparse")
    pd = pytest.importorskip("pandas")
    model = nn.Sequential(nn.Dense(4, 3))
    model.compile(loss="cross_entropy", optimizer="sgd")
    X, y = np.ones((6, 4), np.float32), np.array([0, 1, 2, 0, 1, 2])
    raises(model.fit, sparse.csr_matrix(X), y, verbose=0, exc=TypeError,
           mentions=("X must be a numeric array", "X.toarray()"))
    raises(model.fit, pd.DataFrame(X).astype("Float64"), y, verbose=0, exc=TypeError,
           mentions=("X must be a numeric array", 'X.to_numpy("float32")'))
    raises(model.predict, [[1, 2, 3, 4], [1, 2]], exc=ValueError,
           mentions=("X cannot be made an array",))
    raises(fastnn.metrics.confusion_matrix, [0, 10**12], [0, 1], exc=ValueError,
           mentions=("labels up to 1000000000000", "class indices"))


def test_a_sequential_changed_after_construction_is_checked_again():
    """Found by an attack: the same instance appended twice gave wrong gradients in a loop of
    one's own; an array appended, AttributeErrors naming neither model nor layer; a bare
    array assigned to a weight passed the shape check (its .data is a memoryview)."""
    dense = nn.Dense(4, 4, "tanh")
    model = nn.Sequential(dense)
    model.layers.append(dense)
    raises(model, np.ones((2, 4), np.float32), exc=ValueError, mentions=["layers 0 and 1", "same Dense"])
    model.layers[1] = np.tanh
    for call in (lambda: model(np.ones((2, 4), np.float32)), lambda: model.summary((4,)),
                 model.parameters, model.state_dict):
        raises(call, exc=TypeError, mentions=["layer 1 must be a fastnn.nn.Module", "ufunc"])
    model.layers[1] = nn.Dense(4, 2)
    assert model(np.ones((2, 4), np.float32)).shape == (2, 2)
    model.layers[1].weight = np.zeros((2, 4), np.float32)
    raises(model, np.ones((2, 4), np.float32), exc=TypeError,
           mentions=["weight must be a fastnn.nn.Parameter", "ndarray", "layer.weight.data"])


def test_summary_counts_a_shared_parameter_once_and_follows_a_replaced_first_layer():
    model = nn.Sequential(nn.Dense(4, 4), nn.Tanh(), nn.Dense(4, 4, bias=False))
    model.layers[2].weight = model.layers[0].weight
    assert "Total params: 20" in model.summary(print_fn=None)  # 16 + 4, the tied 16 once
    model(np.ones((1, 4), np.float32))
    model.layers[0] = nn.Dense(8, 4)  # the last forward's (4,) is stale now
    assert "Total params: 52" in model.summary(print_fn=None)


def test_summary_checks_its_input_shape_and_reshape_keeps_an_unknown_size_unknown():
    """Found by an attack: summary("784") iterated the characters, (-784,) failed inside
    Reshape, and Reshape((-1,)) showed a literal -1 for an unknown size."""
    model = nn.Sequential(nn.Reshape((1, 28, 28)), nn.Flatten(), nn.Dense(784, 10))
    for bad in ("784", (-784,), (), (28.0, 28), [True]):
        raises(model.summary, bad, print_fn=None, exc=ValueError, mentions=("summary: input_shape",))
    assert "(None, 10)" in model.summary(784, print_fn=None)
    assert "(None, 10)" in model.summary(np.int64(784), print_fn=None)
    assert nn.Reshape((-1,)).output_shape((None, 4, None, 6)) == (None, None)
    assert nn.Reshape((2, -1)).output_shape((None, 4, 6)) == (None, 2, 12)


def test_a_torch_state_dict_in_bfloat16_or_requiring_grad_loads_as_torch_s_would():
    """torch's load_state_dict casts; ours met NumPy's refusal, naming no key (an attack)."""
    torch = pytest.importorskip("torch")
    tmodel = torch.nn.Sequential(torch.nn.Linear(3, 2))
    model = nn.Sequential(nn.Dense(3, 2))
    state = {k: v.to(torch.bfloat16) for k, v in tmodel.state_dict().items()}
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.layers[0].weight.data, state["0.weight"].float().numpy())
    model.load_state_dict(dict(tmodel.named_parameters()))  # requires_grad tensors
    np.testing.assert_array_equal(model.layers[0].bias.data, tmodel[0].bias.detach().numpy())


def test_torch_tensors_numpy_cannot_take_are_named_with_what_to_do():
    torch = pytest.importorskip("torch")
    model = nn.Sequential(nn.Dense(3, 2))
    raises(model.predict, torch.ones(4, 3, dtype=torch.bfloat16), exc=TypeError,
           mentions=["X cannot be made a NumPy array", "torch.bfloat16", "tensor.float()"])
    raises(model, torch.ones(4, 3, requires_grad=True), exc=TypeError,
           mentions=["input cannot be made a NumPy array", "tensor.detach()"])
    raises(fastnn.asarray, torch.ones(2, dtype=torch.bfloat16), exc=TypeError,
           mentions=["asarray: argument 'x'", "tensor.float()"])
    raises(fastnn.from_dlpack, torch.ones(2, dtype=torch.bfloat16), exc=TypeError,
           mentions=["from_dlpack: argument 'x'", "tensor.float()"])


def test_a_layer_too_large_for_the_machine_is_named_before_any_allocation():
    """Found by an attack: NumPy's generator failed on the float64 draw, naming no layer."""
    raises(nn.Dense, 2**31, 2**20, exc=MemoryError, mentions=["Dense(2147483648, 1048576)", "GiB"])
    raises(nn.Conv2d, 2**16, 2**16, 7, exc=MemoryError, mentions=["Conv2d(65536, 65536", "this machine has"])


def test_matmul_refuses_values_beyond_float32_s_range_by_argument():
    """An attack: matmul([[1e39]], [[1.0]]) gave [[inf]] with only NumPy's warning."""
    one = np.ones((1, 1), np.float32)
    raises(fastnn.matmul, np.array([[1e39]]), one, exc=ValueError,
           mentions=["matmul: a holds values beyond float32's range", "1e+39"])
    raises(fastnn.matmul, one, [[-1e300]], exc=ValueError, mentions=["matmul: b holds values"])
    big = float(np.finfo(np.float32).max)
    assert fastnn.matmul(np.array([[big]]), np.array([[1.0]]))[0, 0] == np.float32(big)
    assert np.isinf(fastnn.matmul(np.array([[np.inf]]), one)[0, 0])  # inf itself is data


def test_matmul_transpose_flags_are_bools():
    """An attack: transpose_a=None was taken as False and 2 or 0.5 as True."""
    a = np.ones((2, 3), np.float32)
    for bad in (None, 2, 0.5, "yes"):
        raises(fastnn.matmul, a, a, transpose_a=bad, exc=TypeError,
               mentions=["matmul: transpose_a must be True or False"])
        raises(fastnn.matmul, a, a, transpose_b=bad, exc=TypeError,
               mentions=["matmul: transpose_b must be True or False"])
    assert fastnn.matmul(a, a, transpose_b=np.True_).shape == (2, 2)


def test_complex_and_conjugate_torch_tensors_are_not_told_to_call_float():
    """An attack: a complex tensor was told "pass tensor.float()", which drops the imaginary
    parts; a negated view was told the same, which keeps its negative bit."""
    torch = pytest.importorskip("torch")
    msg = raises(fastnn.from_dlpack, torch.ones(3, dtype=torch.complex64).conj(), exc=TypeError,
                 mentions=["from_dlpack: argument 'x'", "torch.complex64", "real float32",
                           "tensor.resolve_conj()"])
    assert "pass tensor.float()" not in msg
    msg = raises(fastnn.asarray, torch.ones(2, dtype=torch.complex128).conj(), exc=TypeError,
                 mentions=["asarray: argument 'x'", "real float32"])
    assert "pass tensor.float()" not in msg
    if hasattr(torch.Tensor, "_neg_view"):
        msg = raises(nn.Dense(3, 2), torch.ones(4, 3)._neg_view(), exc=TypeError,
                     mentions=["input cannot be made a NumPy array", "tensor.resolve_neg()"])
        assert "pass tensor.float()" not in msg
    raises(fastnn.asarray, torch.ones(2, dtype=torch.float16).to(torch.bfloat16), exc=TypeError,
           mentions=["torch.bfloat16: pass tensor.float()"])


def test_cross_entropy_label_checks_of_a_subclass_and_of_device_labels():
    """Review of the int64 fast path: a subclass computing its own loss never reaches the
    kernel's check, so it keeps the Python one (a -1 label had indexed from the end, no
    error); labels on a device stay the kernel's to refuse (an AttributeError had come
    from the host re-check); the loss's message is not chained to the kernel's."""
    from fastnn.tensor import Tensor

    class Smoothed(losses.CrossEntropy):
        def _compute(self, pred, target):
            soft = np.full((len(target), pred.shape[1]), 0.1 / pred.shape[1], np.float32)
            soft[np.arange(len(target)), target] += 0.9
            return _C.cross_entropy_soft(pred, soft)

    pred = np.zeros((4, 3), np.float32)
    raises(Smoothed(), pred, np.array([0, 1, 2, -1]), exc=ValueError,
           mentions=("Smoothed: labels[3] = -1 is outside [0, 3)",))
    with pytest.raises(ValueError, match=r"labels\[3\] = 7") as info:
        losses.CrossEntropy()(pred, np.array([0, 1, 2, 7]))
    assert info.value.__suppress_context__
    on = lambda a: Tensor(_C.DeviceArray.from_numpy(a, "cpu"))  # noqa: E731
    raises(losses.CrossEntropy(), on(pred), on(np.array([0, 1, 2, 5])), exc=ValueError,
           mentions=("labels[3]",))
