"""Element-wise kernels, softmax, reductions and losses of fastnn._C against NumPy float64."""

import warnings

import numpy as np
import pytest

from fastnn import _C

import _ref
from _ref import SIZES, assert_close, central_diff, names_argument, sample_indices

ACTIVATIONS = ["identity", "sigmoid", "relu", "tanh", "leaky_relu"]
SHAPES = [(s, c) for s in SIZES for c in (1, 7, 129)]


def away_from_zero(rng, shape, scale=3.0, margin=0.05):
    """Random values with |x| >= margin (no kinks of relu/leaky_relu inside an FD step)."""
    mag = rng.uniform(margin, scale, size=shape)
    return (mag * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_activation_forward(name, shape, rng):
    x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    y = _C.activation_forward(name, x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == x.shape
    assert_close(y, _ref.act_forward(name, x), rtol=2e-6, atol=1e-7, what=f"{name} forward {shape}")


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_activation_backward(name, shape, rng):
    x = away_from_zero(rng, shape)
    g = rng.standard_normal(shape).astype(np.float32)
    y = _C.activation_forward(name, x)
    gx = _C.activation_backward(name, y, g)
    assert isinstance(gx, np.ndarray) and gx.dtype == np.float32 and gx.shape == x.shape
    expected = _ref.act_derivative(name, x) * g
    assert_close(gx, expected, rtol=1e-5, atol=1e-6, what=f"{name} backward {shape}")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_finite_differences(name, rng):
    x = away_from_zero(rng, (7, 129))
    g = rng.standard_normal(x.shape)
    gx = _C.activation_backward(name, _C.activation_forward(name, x), g.astype(np.float32))
    idx = sample_indices(rng, x.size, 40)
    fd = central_diff(lambda z: float(np.sum(g * _ref.act_forward(name, z))), x, indices=idx)
    assert_close(gx.reshape(-1)[idx], fd.reshape(-1)[idx], rtol=1e-4, atol=1e-5, what=f"{name} backward vs FD")


@pytest.mark.parametrize("alpha", [0.01, 0.2, 0.5])
def test_leaky_relu_alpha(alpha, rng):
    x = away_from_zero(rng, (127, 7))
    g = rng.standard_normal(x.shape).astype(np.float32)
    y = _C.activation_forward("leaky_relu", x, alpha)
    assert_close(y, _ref.act_forward("leaky_relu", x, alpha), 2e-6, 1e-7, "leaky_relu forward")
    gx = _C.activation_backward("leaky_relu", y, g, alpha)
    assert_close(gx, _ref.act_derivative("leaky_relu", x, alpha) * g, 1e-6, 1e-7, "leaky_relu backward")
    # keyword spelling as in the stub
    y2 = _C.activation_forward("leaky_relu", x, alpha=alpha)
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("shape", [(1000,), (7, 11, 13)], ids=str)
@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh"])
def test_activation_keeps_any_shape(name, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y = _C.activation_forward(name, x)
    assert y.shape == shape
    assert_close(y, _ref.act_forward(name, x), 2e-6, 1e-7, f"{name} forward {shape}")
    g = rng.standard_normal(shape).astype(np.float32)
    gx = _C.activation_backward(name, y, g)
    assert gx.shape == shape
    assert_close(gx, _ref.act_derivative(name, x) * g, 1e-5, 1e-6, f"{name} backward {shape}")


def test_activation_accepts_float64_and_strided_input(rng):
    x = rng.standard_normal((40, 60))
    for variant in (x, np.asfortranarray(x), x[:, ::3], x.T):
        y = _C.activation_forward("tanh", variant)
        assert y.dtype == np.float32 and y.shape == variant.shape
        assert_close(y, np.tanh(variant.astype(np.float32).astype(np.float64)), 2e-6, 1e-7, "tanh strided")


def test_activation_does_not_modify_input(rng):
    x = rng.standard_normal((7, 129)).astype(np.float32)
    x0 = x.copy()
    for name in ACTIVATIONS:
        y = _C.activation_forward(name, x)
        _C.activation_backward(name, y, x)
    np.testing.assert_array_equal(x, x0)


def test_sigmoid_stable_at_extremes():
    x = np.array([[-1000.0, -100.0, -88.0, -20.0, 0.0, 20.0, 88.0, 100.0, 1000.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            y = _C.activation_forward("sigmoid", x)
            gx = _C.activation_backward("sigmoid", y, np.ones_like(x))
    assert not np.isnan(y).any() and not np.isnan(gx).any()
    assert np.all((y >= 0) & (y <= 1))
    assert y[0, 0] == 0.0 or y[0, 0] < 1e-30
    assert y[0, -1] == 1.0
    assert abs(y[0, 4] - 0.5) <= 1e-7
    assert_close(y, _ref.sigmoid(x), rtol=2e-6, atol=1e-38, what="sigmoid extremes")
    assert np.all(np.isfinite(gx)) and np.all(gx >= 0)
    assert gx[0, 0] < 1e-30 and gx[0, -1] < 1e-30


def test_tanh_stable_at_extremes():
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], np.float32)
    y = _C.activation_forward("tanh", x)
    np.testing.assert_array_equal(y, np.array([[-1.0, -1.0, 0.0, 1.0, 1.0]], np.float32))


def _dense_float_grid():
    """x over the whole useful float32 range, with the values where exp-based kernels break:
    signed zeros, tiny values (cancellation), the overflow and underflow edges, inf, NaN."""
    grid = np.concatenate([np.linspace(-110.0, 110.0, 40001), np.geomspace(1e-30, 10.0, 2001)])
    special = [0.0, -0.0, 1e-38, 1e-7, 0.34657, 0.34658, 40.0, 80.0, 80.1, 87.3, 88.72, 88.73,
               89.0, 103.9, 104.0, 1e4, np.inf]
    x = np.concatenate([grid, -grid, special, [-v for v in special], [np.nan]])
    return x.astype(np.float32)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu", "gelu", "softplus"])
def test_exp_based_activations_whole_range(name):
    # Computed with a vectorized exp/expm1/log1p (csrc/cpu/vmath.h), not libm: held to float64
    # within a few ulp everywhere, NaN in -> NaN out, odd/limit behaviour exact.
    x = _dense_float_grid()
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        ref = {"sigmoid": _ref.sigmoid,
               "tanh": np.tanh,
               "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0))),
               "gelu": lambda v: v / (1 + np.exp(-2 * 0.7978845608028654 * (v + 0.044715 * v**3))),
               "softplus": lambda v: np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))}[name](x64)
    for n in (x.size, 1, 17, 33):  # vector body and scalar tails
        y = _C.activation_forward(name, x[:n].reshape(1, -1), 1.0).ravel()
        finite = np.isfinite(ref[:n])
        # gelu: the exponent 2k(x + c x^3), up to ~100, is itself rounded to float32 (as in
        # any float32 gelu), which costs up to ~100 ulp of relative error in the tail.
        rtol = 2e-5 if name == "gelu" else 6e-7
        assert_close(y[finite], ref[:n][finite], rtol=rtol, atol=1e-37, what=f"{name} n={n}")
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref[:n]), err_msg=f"{name} NaN")
    if name == "tanh":
        y = _C.activation_forward(name, x.reshape(1, -1), 1.0).ravel()
        np.testing.assert_array_equal(np.signbit(y[x == 0]), np.signbit(x[x == 0]))  # tanh(-0) = -0
        assert np.array_equal(y[np.abs(x) > 10], np.sign(x[np.abs(x) > 10]))


def test_softmax_extreme_rows_and_awkward_widths(rng):
    for cols in (1, 3, 15, 16, 17, 33, 1000):
        x = (rng.standard_normal((5, cols)) * np.array([[1], [30], [100], [1e4], [1e-3]])).astype(np.float32)
        assert_close(_C.softmax_forward(x), _ref.softmax(x), rtol=1e-5, atol=1e-37,
                     what=f"softmax width {cols}")


def test_relu_backward_uses_output_sign():
    y = np.array([[0.0, 2.0, 0.0, 3.5]], np.float32)
    g = np.array([[5.0, 7.0, -1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(_C.activation_backward("relu", y, g), [[0.0, 7.0, 0.0, 2.0]])


def test_unknown_activation_name():
    x = np.ones((2, 3), np.float32)
    for fn in (lambda: _C.activation_forward("swishy", x), lambda: _C.activation_backward("swishy", x, x)):
        with pytest.raises(ValueError) as info:
            fn()
        assert "swishy" in str(info.value)


def test_activation_backward_shape_mismatch():
    with pytest.raises(ValueError) as info:
        _C.activation_backward("relu", np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))
    assert names_argument(str(info.value), "grad_y", "y"), str(info.value)


# ----------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_forward(shape, rng):
    x = (4.0 * rng.standard_normal(shape)).astype(np.float32)
    y = _C.softmax_forward(x)
    assert y.dtype == np.float32 and y.shape == shape
    assert_close(y, _ref.softmax(x), rtol=1e-5, atol=1e-7, what=f"softmax {shape}")
    assert_close(y.astype(np.float64).sum(axis=1), np.ones(shape[0]), 0, 1e-5, "softmax row sums")


def test_softmax_stable_for_large_inputs(rng):
    x = np.array([[1000.0, 1000.0, -1000.0],
                  [1e4, 0.0, -1e4],
                  [-1e4, -1e4 + 1.0, -1e4 + 2.0],
                  [3e38, 3e38, 0.0],
                  [88.0, 89.0, 90.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = _C.softmax_forward(x)
    assert np.all(np.isfinite(y))
    assert_close(y.sum(axis=1), np.ones(len(x)), 0, 1e-6, "row sums")
    assert_close(y[:3], _ref.softmax(x[:3]), 1e-5, 1e-7, "large softmax")
    assert_close(y[4], _ref.softmax(x[4:5])[0], 1e-5, 1e-7, "softmax near exp overflow")
    assert_close(y[3], [0.5, 0.5, 0.0], 0, 1e-6, "softmax of 3e38")
    big = (rng.standard_normal((129, 128)) * 1e3 + 5e3).astype(np.float32)
    yb = _C.softmax_forward(big)
    assert np.all(np.isfinite(yb))
    assert_close(yb.astype(np.float64).sum(axis=1), np.ones(129), 0, 1e-5, "row sums")
    assert_close(yb, _ref.softmax(big), 1e-4, 1e-7, "large random softmax")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_backward(shape, rng):
    x = (2.0 * rng.standard_normal(shape)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    y = _C.softmax_forward(x)
    gx = _C.softmax_backward(y, g)
    assert gx.dtype == np.float32 and gx.shape == shape
    assert_close(gx, _ref.softmax_backward(_ref.softmax(x), g), 1e-5, 1e-6, f"softmax backward {shape}")


def test_softmax_backward_finite_differences(rng):
    x = rng.standard_normal((7, 13)).astype(np.float32)
    g = rng.standard_normal(x.shape)
    gx = _C.softmax_backward(_C.softmax_forward(x), g.astype(np.float32))
    fd = central_diff(lambda z: float(np.sum(g * _ref.softmax(z))), x)
    assert_close(gx, fd, 1e-4, 1e-6, "softmax backward vs FD")


def test_softmax_rejects_wrong_rank():
    with pytest.raises(ValueError) as info:
        _C.softmax_forward(np.ones((2, 3, 4), np.float32))
    assert names_argument(str(info.value), "x"), str(info.value)


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_column_sum(m, n, beta, rng):
    x = rng.standard_normal((m, n)).astype(np.float32)
    out = rng.standard_normal(n).astype(np.float32)
    expected = beta * out.astype(np.float64) + x.astype(np.float64).sum(axis=0)
    scale = np.abs(beta * out.astype(np.float64)) + np.abs(x.astype(np.float64)).sum(axis=0)
    _C.column_sum(x, out, beta)
    err = np.abs(out - expected)
    assert np.all(err <= 4 * _ref.EPS32 * (np.sqrt(m) + 2) * scale), f"max err {err.max()}"


def test_column_sum_beta_keyword_default_and_float64_input(rng):
    x = rng.standard_normal((129, 7))
    out = np.full(7, 123.0, np.float32)
    _C.column_sum(x, out)  # default beta = 0 overwrites
    assert_close(out, x.astype(np.float32).astype(np.float64).sum(axis=0), 1e-5, 1e-5, "column_sum beta=0")
    out2 = out.copy()
    _C.column_sum(x[:, ::-1], out2, beta=1.0)
    assert_close(out2, out.astype(np.float64) + x.astype(np.float32)[:, ::-1].astype(np.float64).sum(axis=0),
                 1e-5, 1e-5, "column_sum reversed columns, beta=1")


def test_column_sum_bit_identical_across_threads(rng):
    x = rng.standard_normal((20011, 129)).astype(np.float32)
    outs = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        out = np.zeros(129, np.float32)
        _C.column_sum(x, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    expected = x.astype(np.float64).sum(axis=0)
    scale = np.abs(x.astype(np.float64)).sum(axis=0)
    assert np.all(np.abs(outs[0] - expected) <= 4 * _ref.EPS32 * (np.sqrt(20011) + 2) * scale)


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_activation_backward_bias_grad_bit_identical_across_threads(name, rng):
    # Rows are split between threads; the bias gradient is summed in fixed row blocks.
    z = rng.standard_normal((1037, 300)).astype(np.float32)
    y = _C.activation_forward(name, z)
    g = rng.standard_normal(z.shape).astype(np.float32)
    results = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        db = np.full(300, 0.5, np.float32)
        gx = _C.activation_backward(name, y, g, out=np.empty_like(g), bias_grad=db)
        results.append((gx, db))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    expected = 0.5 + (_ref.act_derivative(name, z) * g).sum(axis=0)
    assert_close(results[0][1], expected, rtol=1e-4, atol=1e-4, what=f"{name} bias gradient")


def test_column_sum_rejects_bad_out():
    x = np.ones((4, 3), np.float32)
    for bad in (np.zeros(4, np.float32), np.zeros(3), np.zeros((1, 3), np.float32), np.zeros(6, np.float32)[::2]):
        with pytest.raises((TypeError, ValueError)) as info:
            _C.column_sum(x, bad)
        assert names_argument(str(info.value), "out"), str(info.value)


# ----------------------------------------------------------------------------- losses
def check_loss(result, ref, n_fd_points, rng, loss_f64, pred, what, rtol_loss=2e-5):
    """result = (loss, grad) from fastnn, ref = (loss, grad) from NumPy; grad also vs FD."""
    loss, grad = result
    exp_loss, exp_grad = ref
    assert isinstance(loss, float), f"{what}: loss is {type(loss).__name__}, expected float"
    assert np.isfinite(loss)
    assert abs(loss - exp_loss) <= rtol_loss * abs(exp_loss) + 1e-6, f"{what}: loss {loss} != {exp_loss}"
    assert isinstance(grad, np.ndarray) and grad.dtype == np.float32
    scale = float(np.abs(exp_grad).max()) if exp_grad.size else 1.0
    assert_close(grad, exp_grad, 1e-5, 1e-6 * scale, f"{what}: gradient")
    idx = sample_indices(rng, pred.size, n_fd_points)
    fd = central_diff(loss_f64, pred, eps=1e-6, indices=idx)
    assert_close(grad.reshape(-1)[idx], fd.reshape(-1)[idx], 1e-3, 1e-4 * scale + 1e-9, f"{what}: gradient vs FD")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mse(shape, rng):
    pred = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    check_loss(_C.mse(pred, target), _ref.mse(pred, target), 16, rng,
               lambda p: _ref.mse(p, target)[0], pred, f"mse {shape}")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bce_from_logits(shape, rng):
    z = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    t = (rng.random(shape) < 0.5).astype(np.float32)
    check_loss(_C.binary_cross_entropy(z, t, from_logits=True), _ref.bce_logits(z, t), 16, rng,
               lambda p: _ref.bce_logits(p, t)[0], z, f"bce logits {shape}")
    # from_logits defaults to True
    loss, grad = _C.binary_cross_entropy(z, t)
    assert abs(loss - _ref.bce_logits(z, t)[0]) <= 1e-5 * abs(_ref.bce_logits(z, t)[0]) + 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bce_from_probabilities(shape, rng):
    p = rng.uniform(0.02, 0.98, size=shape).astype(np.float32)
    t = (rng.random(shape) < 0.5).astype(np.float32)
    check_loss(_C.binary_cross_entropy(p, t, from_logits=False), _ref.bce_probs(p, t), 16, rng,
               lambda q: _ref.bce_probs(q, t)[0], p, f"bce probs {shape}")


def test_bce_soft_targets(rng):
    z = rng.standard_normal((33, 3)).astype(np.float32)
    t = rng.random((33, 3)).astype(np.float32)
    check_loss(_C.binary_cross_entropy(z, t, True), _ref.bce_logits(z, t), 20, rng,
               lambda p: _ref.bce_logits(p, t)[0], z, "bce soft targets logits")
    p = _ref.sigmoid(z).astype(np.float32)
    check_loss(_C.binary_cross_entropy(p, t, False), _ref.bce_probs(p, t), 20, rng,
               lambda q: _ref.bce_probs(q, t)[0], p, "bce soft targets probs")


def test_bce_from_logits_extreme_values():
    z = np.array([[1000.0], [-1000.0], [1000.0], [-1000.0], [80.0], [-80.0]], np.float32)
    t = np.array([[1.0], [0.0], [0.0], [1.0], [1.0], [1.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = _C.binary_cross_entropy(z, t, from_logits=True)
    exp_loss, exp_grad = _ref.bce_logits(z, t)  # (0 + 0 + 1000 + 1000 + 0 + 80) / 6
    assert np.isfinite(loss) and abs(loss - exp_loss) <= 1e-5 * exp_loss, (loss, exp_loss)
    assert np.all(np.isfinite(grad))
    assert_close(grad, exp_grad, 1e-6, 1e-9, "bce logits extreme gradient")


def test_bce_from_probabilities_extreme_values():
    p = np.array([[0.0], [1.0], [0.0], [1.0], [1e-12], [1.0 - 1e-7]], np.float32)
    t = np.array([[0.0], [1.0], [1.0], [0.0], [0.0], [1.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = _C.binary_cross_entropy(p, t, from_logits=False)
    assert np.isfinite(loss), loss
    assert np.all(np.isfinite(grad)), grad
    # Two confidently wrong predictions dominate: each contributes a large finite amount.
    assert loss > 2 * 5.0 / 6, loss
    # Correct confident predictions contribute (almost) nothing to the gradient's sign.
    assert grad[2, 0] < 0 and grad[3, 0] > 0, grad
    # Exactly right predictions: per-element loss ~0 (one row each, checked separately).
    for row in (0, 1, 4, 5):
        l1, g1 = _C.binary_cross_entropy(p[row:row + 1], t[row:row + 1], from_logits=False)
        assert np.isfinite(l1) and 0.0 <= l1 < 1e-4, (row, l1)
        assert np.all(np.isfinite(g1)), (row, g1)


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("classes", [1, 2, 10, 129])
def test_cross_entropy_integer_labels(m, classes, rng):
    logits = (3.0 * rng.standard_normal((m, classes))).astype(np.float32)
    labels = rng.integers(0, classes, size=m)
    check_loss(_C.cross_entropy(logits, labels), _ref.cross_entropy(logits, labels), 16, rng,
               lambda z: _ref.cross_entropy(z, labels)[0], logits, f"cross_entropy {m}x{classes}")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int16])
def test_cross_entropy_label_dtypes(dtype, rng):
    logits = rng.standard_normal((7, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=7)
    loss, grad = _C.cross_entropy(logits, labels.astype(dtype))
    exp_loss, exp_grad = _ref.cross_entropy(logits, labels)
    assert abs(loss - exp_loss) <= 1e-5 * exp_loss
    assert_close(grad, exp_grad, 1e-5, 1e-7, f"cross_entropy labels {np.dtype(dtype)}")


def test_cross_entropy_stable_for_large_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [1e4, 1e4, -1e4], [-1e4, 0.0, 1e4], [3e38, -3e38, 0.0]], np.float32)
    labels = np.array([1, 0, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = _C.cross_entropy(logits, labels)
    exp_loss, exp_grad = _ref.cross_entropy(logits[:3], labels[:3])
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    # row 4 contributes 0 (label is the huge logit)
    assert abs(loss - exp_loss * 3 / 4) <= 1e-5 * exp_loss, (loss, exp_loss * 3 / 4)
    assert_close(grad[:3], exp_grad * 3 / 4, 1e-5, 1e-7, "cross_entropy large logits gradient")


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("classes", [2, 10, 129])
def test_cross_entropy_soft_one_hot_and_soft(m, classes, rng):
    logits = (3.0 * rng.standard_normal((m, classes))).astype(np.float32)
    labels = rng.integers(0, classes, size=m)
    onehot = _ref.one_hot(labels, classes).astype(np.float32)
    res = _C.cross_entropy_soft(logits, onehot)
    check_loss(res, _ref.cross_entropy(logits, labels), 16, rng,
               lambda z: _ref.cross_entropy_soft(z, onehot)[0], logits, f"cross_entropy_soft one-hot {m}x{classes}")
    # one-hot must agree with the integer-label version
    res_int = _C.cross_entropy(logits, labels)
    assert abs(res[0] - res_int[0]) <= 1e-5 * abs(res_int[0]) + 1e-6
    assert_close(res[1], res_int[1].astype(np.float64), 1e-5, 1e-7, "soft vs integer labels")
    soft = rng.random((m, classes))
    soft = (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)
    check_loss(_C.cross_entropy_soft(logits, soft), _ref.cross_entropy_soft(logits, soft), 16, rng,
               lambda z: _ref.cross_entropy_soft(z, soft)[0], logits, f"cross_entropy_soft soft {m}x{classes}")


def test_losses_do_not_modify_inputs(rng):
    pred = rng.standard_normal((7, 3)).astype(np.float32)
    target = rng.random((7, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    p0, t0, l0 = pred.copy(), target.copy(), labels.copy()
    _C.mse(pred, target)
    _C.binary_cross_entropy(pred, target)
    _C.cross_entropy(pred, labels)
    _C.cross_entropy_soft(pred, target)
    np.testing.assert_array_equal(pred, p0)
    np.testing.assert_array_equal(target, t0)
    np.testing.assert_array_equal(labels, l0)


def test_loss_bit_identical_across_threads(rng):
    logits = rng.standard_normal((20000, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 20000)
    pred = rng.standard_normal((20000, 33)).astype(np.float32)
    target = rng.standard_normal((20000, 33)).astype(np.float32)
    res = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        ce = _C.cross_entropy(logits, labels)
        ms = _C.mse(pred, target)
        bce = _C.binary_cross_entropy(pred, (target > 0).astype(np.float32))
        res.append((ce, ms, bce))
    for (l1, g1), (l2, g2) in zip(res[0], res[1]):
        assert l1 == l2
        np.testing.assert_array_equal(g1, g2)
    exp = _ref.cross_entropy(logits, labels)[0]
    assert abs(res[0][0][0] - exp) <= 1e-5 * exp
