"""NaN and Inf through the activations (alone and fused in the GEMM epilogue) against NumPy
float64, with PyTorch's conventions: NaN in gives NaN out, and the backward pass at NaN is
torch's (relu and elu pass the gradient, leaky_relu scales it). Then fit, which stops with
a RuntimeWarning naming the layer and parameter when training turns them non-finite."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import _C, callbacks, nn, optim

import _ref

ELEMENTWISE = ["identity", "sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu", "softplus"]
ALPHA = {"leaky_relu": 0.1, "elu": 0.7}
SPECIAL = np.array([np.nan, np.inf, -np.inf], np.float32)


def with_specials(rng, n):
    """n values around zero, a third of them (at least one) NaN, +inf or -inf."""
    x = rng.uniform(-4.0, 4.0, n).astype(np.float32)
    where = rng.choice(n, size=max(1, n // 3), replace=False)
    x[where] = rng.choice(SPECIAL, size=where.size)
    return x


def assert_matches(got, expected, rtol, what, atol=1e-6):
    """NaN exactly where expected is NaN, the same infinities, finite values within rtol."""
    got = np.asarray(got, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(got[inf], expected[inf], err_msg=f"{what}: inf")
    fin = np.isfinite(expected)
    _ref.assert_close(got[fin], expected[fin], rtol, atol, what)


def rtol_of(name):
    # gelu's exponent is rounded to float32 (see test_kernels' whole-range test)
    return 2e-5 if name == "gelu" else 2e-6


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_forward_propagates_nan(isa, name, rng):
    alpha = ALPHA.get(name, 0.01)
    for n in range(1, 71):  # every vector width's body and scalar tail
        x = with_specials(rng, n)
        with np.errstate(all="ignore"):
            expected = _ref.act_forward(name, x, alpha)
        assert_matches(_C.activation_forward(name, x, alpha), expected, rtol_of(name),
                       f"{name}[{isa}] n={n}")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_backward_at_nan_and_inf_is_torch_s(isa, name, rng):
    alpha = ALPHA.get(name, 0.01)
    for n in range(1, 71):
        x = with_specials(rng, n)
        g = rng.uniform(-2.0, 2.0, n).astype(np.float32)
        y = _C.activation_forward(name, x, alpha)
        with np.errstate(all="ignore"):
            expected = g * _ref.act_derivative(name, x, alpha)
        got = _C.activation_backward(name, y, g, alpha, x=x)
        assert_matches(got, expected, 1e-5, f"{name}'[{isa}] n={n}")
        # NaN in the incoming gradient reaches the input's gradient wherever f' != 0
        g[0] = np.nan
        got = _C.activation_backward(name, y, g, alpha, x=x)
        assert np.isnan(got[0]) or _ref.act_derivative(name, x[:1], alpha)[0] == 0.0


def test_softmax_rows_with_nan_or_inf(rng):
    for cols in range(1, 71):
        x = rng.standard_normal((5, cols)).astype(np.float32)
        x[0, rng.integers(cols)] = np.nan
        x[1, rng.integers(cols)] = np.inf
        x[2, rng.integers(cols)] = -np.inf
        x[3, :] = -np.inf
        with np.errstate(all="ignore"):
            expected = _ref.softmax(x)
        y = _C.softmax_forward(x)
        assert_matches(y, expected, 1e-5, f"softmax cols={cols}")
        g = rng.standard_normal((5, cols)).astype(np.float32)
        g[4, rng.integers(cols)] = np.nan
        with np.errstate(all="ignore"):
            expected = _ref.softmax_backward(y, g)
        assert_matches(_C.softmax_backward(y, g), expected, 1e-5, f"softmax' cols={cols}")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_gemm_epilogue_propagates_nan(isa, name, rng):
    # Dense's forward: activation(x @ W.T + b) on C's tiles, every tile width and edge.
    alpha = ALPHA.get(name, 0.01)
    for n in range(1, 71):
        for m, k in ((3, 5), (7, 33), (40, 400)):  # one tile; row edges; several tiles
            x = rng.uniform(-1, 1, (m, k)).astype(np.float32)
            w = rng.uniform(-1, 1, (n, k)).astype(np.float32) / np.float32(np.sqrt(k))
            x[m // 2, k // 2] = np.nan  # one row of C is NaN
            bias = with_specials(rng, n)  # some columns are NaN or +-inf
            with np.errstate(all="ignore"):
                z = x.astype(np.float64) @ w.astype(np.float64).T + bias
                expected = _ref.act_forward(name, z, alpha)
            got = _C.gemm(x, w, transpose_b=True, bias=bias, activation=name,
                          activation_alpha=alpha)
            # the product's float32 rounding, at most ~1e-5 here, carries through f
            assert_matches(got, expected, 1e-4, f"gemm[{isa}] {m}x{n}x{k} +bias {name}",
                           atol=5e-5)


def test_gemm_reference_and_empty_k_propagate_nan():
    bias = np.array([np.nan, 1.0, -2.0, np.inf], np.float32)
    x, w = np.ones((2, 0), np.float32), np.ones((4, 0), np.float32)
    for fn in (_C.gemm, _C.gemm_reference):
        got = fn(x, w, transpose_b=True, bias=bias, activation="relu")
        assert_matches(got, np.tile([np.nan, 1.0, 0.0, np.inf], (2, 1)), 0.0, fn.__name__)


def test_dense_relu_layer_propagates_nan():
    # The case: one NaN pixel must not become a silent 0 after a ReLU layer.
    fastnn.seed(0)
    layer = nn.Dense(4, 3, activation="relu")
    x = np.ones((2, 4), np.float32)
    x[0, 1] = np.nan
    y = layer(x)
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()
    y = nn.ReLU()(x)
    assert np.isnan(y[0, 1]) and np.isfinite(np.delete(y.ravel(), 1)).all()


# ---------------------------------------------------------------------------- fit
def _model():
    fastnn.seed(1)
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 3))
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1))
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64)


def test_fit_stops_on_nan_from_augmentation_naming_the_parameter():
    X, y = _data()
    model = _model()
    calls = []

    def augment(xb):  # one NaN pixel in the third batch
        calls.append(1)
        xb = xb.copy()
        if len(calls) == 3:
            xb[0, 0] = np.nan
        return xb

    with pytest.warns(RuntimeWarning) as record:
        history = model.fit(X, y, epochs=5, batch_size=16, augment=augment, verbose=0)
    assert history.epoch == [0]  # stopped after the epoch that broke
    message = str(record[0].message)
    assert "0.weight" in message and "Dense(4, 8" in message, message
    assert history.stop_reason == message


class _BreakBias(callbacks.Callback):
    """After the epoch's last step, sets one ReLU unit's bias to -inf: the epoch's loss
    stays finite while a parameter is not."""

    def on_batch_end(self, batch, logs):
        if batch == 3:  # 64 samples, batches of 16
            self.model.layers[0].bias.data[2] = -np.inf


def test_fit_stops_when_a_parameter_is_non_finite_though_the_loss_is_not():
    X, y = _data()
    model = _model()
    with pytest.warns(RuntimeWarning) as record:
        history = model.fit(X, y, epochs=5, batch_size=16, callbacks=[_BreakBias()], verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.epoch == [0]
    message = str(record[0].message)
    assert "0.bias" in message and "Dense(4, 8" in message and "epoch 1" in message, message
    assert history.stop_reason == message


def test_fit_without_non_finite_values_does_not_warn():
    X, y = _data()
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert history.epoch == [0, 1, 2] and history.stop_reason is None


@pytest.mark.parametrize("opt", ["sgd", "sgd_momentum", "adam", "adagrad", "rmsprop"])
def test_an_infinite_parameter_stays_infinite_without_weight_decay(opt):
    # torch.optim adds weight_decay * p only when weight_decay != 0: 0 * inf would be NaN.
    n = 37  # vector body and scalar tail
    p = np.linspace(-1, 1, n).astype(np.float32)
    p[[0, 20, 36]] = [np.inf, -np.inf, np.inf]
    g = np.full(n, 0.25, np.float32)
    state = [np.zeros(n, np.float32) for _ in range(3)]
    if opt == "sgd":
        _C.sgd_step(p, g, None, lr=0.1)
    elif opt == "sgd_momentum":
        _C.sgd_step(p, g, state[0], lr=0.1, momentum=0.9)
    elif opt == "adam":
        _C.adam_step(p, g, state[0], state[1], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                     weight_decay=0.0, step=1)
    elif opt == "adagrad":
        _C.adagrad_step(p, g, state[0], lr=0.1, eps=1e-10, weight_decay=0.0, lr_decay=0.0, step=1)
    else:
        _C.rmsprop_step(p, g, state[0], None, None, lr=0.1, alpha=0.99, eps=1e-8,
                        weight_decay=0.0, momentum=0.0, centered=False)
    assert p[0] == np.inf and p[20] == -np.inf and p[36] == np.inf
    assert np.isfinite(np.delete(p, [0, 20, 36])).all()


def test_a_checkpoint_never_saves_the_non_finite_model(tmp_path):
    X, y = _data()
    model = _model()
    path = tmp_path / "last.safetensors"

    class BreakInSecondEpoch(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_batch_end(self, batch, logs):
            if self.epoch == 1 and batch == 3:
                self.model.layers[0].weight.data[0, 0] = np.nan

    with pytest.warns(RuntimeWarning):
        history = model.fit(X, y, epochs=4, batch_size=16, verbose=0, callbacks=[
            BreakInSecondEpoch(), callbacks.ModelCheckpoint(path, monitor="loss",
                                                            save_best_only=False)])
    assert history.epoch == [0, 1] and history.stop_reason is not None
    saved = fastnn.load(path)
    assert all(np.isfinite(p.data).all() for p in saved.parameters())


@pytest.mark.parametrize("fn", [_C.gemm, _C.gemm_reference])
def test_alpha_zero_reads_neither_operand_as_blas(fn):
    a = np.array([[1.0, np.nan]], np.float32)
    b = np.array([[np.inf], [2.0]], np.float32)
    out = np.array([[3.0]], np.float32)
    assert fn(a, b, out=out, alpha=0.0, beta=2.0)[0, 0] == 6.0


# ----------------------------------------------------------------------------- denormals
TINY = np.finfo(np.float32).tiny  # 2^-126: below it a float32 is denormal


def adam_first_moment_after_zero_grad(m0):
    """Adam's first moment after one step with a zero gradient: beta1 * m0."""
    n = 4096  # enough for the kernel's threads and vector bodies
    p, g = np.ones(n, np.float32), np.zeros(n, np.float32)
    m, v = np.full(n, m0, np.float32), np.ones(n, np.float32)
    _C.adam_step(p, g, m, v, lr=1e-3, beta1=0.5, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    return m


@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_flush_denormals(threads):
    """0.5 * 2^-126 is denormal: the kernels flush it to zero (FTZ), unless told to keep
    IEEE gradual underflow; a denormal input counts as zero (DAZ)."""
    old = fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    try:
        fastnn.set_flush_denormal(True)
        assert fastnn.config()["flush_denormals"] is True
        assert not adam_first_moment_after_zero_grad(TINY).any()
        # DAZ: a denormal times one is zero
        x = np.full(4096, TINY / 4, np.float32)
        _C.scale_(x, 1.0)
        assert not x.any()
        fastnn.set_flush_denormal(False)
        assert fastnn.config()["flush_denormals"] is False
        np.testing.assert_array_equal(adam_first_moment_after_zero_grad(TINY), np.float32(TINY / 2))
        x = np.full(4096, TINY / 4, np.float32)
        _C.scale_(x, 1.0)
        np.testing.assert_array_equal(x, np.float32(TINY / 4))
    finally:
        fastnn.set_flush_denormal(True)
        fastnn.set_num_threads(old)


def test_caller_keeps_ieee_underflow_after_a_kernel():
    """The flush is set for the kernel's region only: NumPy on the calling thread still makes
    denormals afterwards."""
    adam_first_moment_after_zero_grad(TINY)
    fastnn.matmul(np.ones((300, 300), np.float32), np.ones((300, 300), np.float32))
    half = np.float32(TINY) * np.float32(0.5)
    assert half != 0 and half < TINY


@pytest.mark.parametrize("env, expected", [(None, "True"), ("1", "True"), ("0", "False"),
                                          ("off", "False"), (" False ", "False"), ("NO", "False"),
                                          ("yes", "True"), ("abc", "True"),
                                          ("\u00a00", "True"), ("\u2003no", "True")])
def test_flush_denormals_default_and_env(env, expected):
    """0, off, false, no (any case) switch it off; an unknown value warns and leaves it on."""
    code = ("import warnings; warnings.simplefilter('always'); import fastnn; "
            "print(fastnn.config()['flush_denormals'])")
    extra = {"FASTNN_FLUSH_DENORMALS": env} if env is not None else {}
    env_now = dict(os.environ)
    env_now.pop("FASTNN_FLUSH_DENORMALS", None)
    out = _ref.run_python(code, env_extra=extra) if env is not None else subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_now, timeout=120)
    assert out.stdout.split()[-1] == expected, out.stdout + out.stderr
    # a no-break space (from a copy-paste) is not a space to the C++ that reads the switch:
    # the value is said to be neither, as it is taken (found by an attack: it had passed the
    # check as "0" and stayed on, silently)
    assert ("is not on or off" in out.stderr) == (env in ("abc", "\u00a00", "\u2003no")), out.stderr
