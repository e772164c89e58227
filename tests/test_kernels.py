"""Elementwise kernels of fastnn._C against NumPy float64 formulas (in _ref): activations
(also fused in the GEMM epilogue) and softmax, forward, backward and finite differences;
column sums; the Philox stream and dropout; the clipping reductions and L1/L2 penalties;
image augmentation. Nothing expected here is computed by fastnn."""

import math
import warnings

import numpy as np
import pytest

from fastnn import _C

import _ref
from _ref import SIZES, assert_close, central_diff, f64, names_argument, sample_indices, use_threads
from test_gemm import EPS32, operands, reference


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


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_argmax_matches_counts_as_numpy(dtype, rng):
    """Rows whose argmax is the label, as NumPy's argmax picks it: ties to the first maximum,
    -0.0 ties with 0.0; one class, one row. A row with a NaN (a diverged model's) is a miss,
    whatever its label (NumPy's argmax would pick the NaN, and a NaN logit at index 0 counted
    class 0 as predicted)."""
    logits = rng.integers(-2, 3, size=(300, 7)).astype(np.float32)  # many ties
    logits[5, 3] = np.nan
    logits[6, [2, 5]] = np.nan
    logits[9, 0] = np.nan
    logits[7] = [0.0, -0.0, -1, -1, -1, -1, -1]
    logits[8] = [-0.0, 0.0, -1, -1, -1, -1, -1]
    best = np.argmax(logits, 1)
    assert list(best[5:10]) == [3, 2, 0, 0, 0]
    best[[5, 6, 9]] = -1  # no label matches
    for label in range(7):
        assert _C.argmax_matches(logits[[5, 6, 9]], np.full(3, label, dtype)) == 0
    assert _C.argmax_matches(logits, np.maximum(best, 0).astype(dtype)) == 297
    assert _C.argmax_matches(logits, ((best + 1) % 7).astype(dtype)) == 0
    labels = rng.integers(0, 7, size=300)
    for r in range(300):  # row by row: a count could hide errors that cancel
        assert _C.argmax_matches(logits[r:r + 1], labels[r:r + 1].astype(dtype)) == (best[r] == labels[r]), r
    assert _C.argmax_matches(np.zeros((4, 1), np.float32), np.zeros(4, dtype)) == 4
    assert _C.argmax_matches(logits[:1], labels[:1]) == int(np.argmax(logits[0]) == labels[0])


def test_argmax_matches_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"argmax_matches: labels\[1\] = 4 is outside \[0, 4\)"):
        _C.argmax_matches(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"argmax_matches: 'labels' must have one entry per row"):
        _C.argmax_matches(x, np.array([0, 1]))
    with pytest.raises(TypeError, match=r"argmax_matches: argument 'labels' must hold integer"):
        _C.argmax_matches(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"argmax_matches: argument 'logits'"):
        _C.argmax_matches(np.zeros(4, np.float32), np.array([0, 1, 2, 3]))


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


@pytest.mark.parametrize("s", [1e4, 1e6, 1e7, 2.0**24 - 4])
def test_cross_entropy_of_large_close_logits_keeps_the_log_sum(s):
    """Logits s, s - 1, s - 2 (exact in float32): the loss of label 0 is log(1 + e^-1 +
    e^-2) whatever s; max + log(sum) rounded the log away (0.4375 at 1e6, 0 at 1e7)."""
    logits = np.array([[s, s - 1, s - 2], [s, s, s]], np.float32)
    expected = (np.log(1 + np.exp(-1.0) + np.exp(-2.0)) + np.log(3.0)) / 2
    loss, _ = _C.cross_entropy(logits, np.array([0, 2]))
    assert loss == pytest.approx(expected, rel=1e-6)
    soft = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    loss, _ = _C.cross_entropy_soft(logits, soft)
    assert loss == pytest.approx(expected, rel=1e-6)


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


# ----------------------------------------------------------------------------- ELU, GELU, softplus
NEW_ACTIVATIONS = ["elu", "gelu", "softplus"]


def backward(name, x, g, alpha=1.0):
    y = _C.activation_forward(name, x, alpha)
    return _C.activation_backward(name, y, g, alpha, x=x)


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_new_activation_forward(name, shape, rng):
    x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    y = _C.activation_forward(name, x, 1.0)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == x.shape
    assert_close(y, _ref.act_forward(name, x, 1.0), rtol=1e-5, atol=1e-7, what=f"{name} forward {shape}")


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_new_activation_backward(name, shape, rng):
    x = away_from_zero(rng, shape, scale=4.0)
    g = rng.standard_normal(shape).astype(np.float32)
    gx = backward(name, x, g)
    assert gx.dtype == np.float32 and gx.shape == x.shape
    assert_close(gx, _ref.act_derivative(name, x, 1.0) * g, rtol=1e-5, atol=1e-6, what=f"{name} backward {shape}")


@pytest.mark.parametrize("name,alpha", [("elu", 1.0), ("elu", 0.3), ("gelu", 1.0), ("softplus", 1.0)])
def test_new_activation_backward_finite_differences(name, alpha, rng):
    x = away_from_zero(rng, (7, 129), scale=4.0)
    g = rng.standard_normal(x.shape)
    gx = backward(name, x, g.astype(np.float32), alpha)
    idx = sample_indices(rng, x.size, 40)
    fd = central_diff(lambda z: float(np.sum(g * _ref.act_forward(name, z, alpha))), x, indices=idx)
    assert_close(gx.reshape(-1)[idx], fd.reshape(-1)[idx], rtol=1e-4, atol=1e-5,
                 what=f"{name} backward vs FD")


def test_elu_alpha_scales_negative_side(rng):
    x = away_from_zero(rng, (127, 7), scale=4.0)
    for alpha in (0.1, 1.0, 2.5):
        y = _C.activation_forward("elu", x, alpha)
        assert_close(y, _ref.act_forward("elu", x, alpha), 1e-5, 1e-7, f"elu alpha={alpha}")
        g = rng.standard_normal(x.shape).astype(np.float32)
        gx = _C.activation_backward("elu", y, g, alpha, x=x)
        assert_close(gx, _ref.act_derivative("elu", x, alpha) * g, 1e-5, 1e-30,
                     f"elu backward alpha={alpha}")
    # alpha e^x from x: from the output (y + alpha) it was 0 below x = -17, as exp(x) - 1 = -1
    x = np.array([[-10.0, -17.0, -20.0, -30.0, -80.0]], np.float32)
    gx = _C.activation_backward("elu", _C.activation_forward("elu", x, 1.0), np.ones_like(x), 1.0,
                                x=x)
    assert_close(gx, np.exp(x.astype(np.float64)), 1e-6, 1e-45, "elu' far below zero")


def test_extreme_inputs_stay_finite_and_exact():
    x = np.array([-1e30, -1e4, -200.0, -88.0, -30.0, -1e-6, 0.0, 1e-6, 30.0, 88.0, 200.0, 1e4, 1e30],
                 np.float32)
    for name in NEW_ACTIVATIONS:
        y = _C.activation_forward(name, x, 1.0)
        assert np.all(np.isfinite(y)), f"{name}: {y}"
        assert_close(y, _ref.act_forward(name, x, 1.0), 1e-6, 1e-30, f"{name} at extremes")
        gx = backward(name, x, np.ones_like(x))
        assert np.all(np.isfinite(gx)), f"{name} backward: {gx}"
        assert_close(gx, _ref.act_derivative(name, x, 1.0), 1e-5, 1e-7, f"{name}' at extremes")
    # softplus(x) == x for large x and log1p(e^x) ~ e^x for very negative x: no overflow, no 0 - 0
    sp = _C.activation_forward("softplus", np.array([100.0, -20.0], np.float32))
    assert sp[0] == 100.0 and abs(sp[1] / math.exp(-20.0) - 1.0) < 1e-6


def test_activation_backward_x_is_ignored_except_by_gelu_and_elu(rng):
    x = away_from_zero(rng, (7, 7), scale=4.0)
    g = rng.standard_normal(x.shape).astype(np.float32)
    junk = np.full_like(x, -3.0)
    for name in ["identity", "sigmoid", "relu", "tanh", "leaky_relu", "softplus"]:
        y = _C.activation_forward(name, x, 1.0)
        assert np.array_equal(_C.activation_backward(name, y, g, 1.0),
                              _C.activation_backward(name, y, g, 1.0, x=junk)), name
    for name in ["gelu", "elu"]:
        y = _C.activation_forward(name, x, 1.0)
        assert not np.array_equal(_C.activation_backward(name, y, g, 1.0, x=x),
                                  _C.activation_backward(name, y, g, 1.0, x=junk)), name


@pytest.mark.parametrize("name", ["gelu", "elu"])
def test_backward_needs_x(name):
    y = np.ones((3, 4), np.float32)
    msg = _ref.raises(_C.activation_backward, name, y, y, exc=ValueError, mentions=("x",))
    assert name in msg
    _ref.raises(_C.activation_backward, "gelu", y, y, x=np.ones((4, 3), np.float32), exc=ValueError,
           mentions=("x",))
    _ref.raises(_C.activation_backward, "gelu", y, y, x=np.ones((3, 4), np.complex64), exc=TypeError,
           mentions=("x",))
    _ref.raises(_C.activation_backward, "elu", y, y, -1.0, exc=ValueError, mentions=("alpha",))


def test_activation_names():
    x = np.array([-1.0, 2.0], np.float32)
    assert np.array_equal(_C.activation_forward("linear", x), x)
    assert np.array_equal(_C.activation_forward("identity", x), x)
    msg = _ref.raises(_C.activation_forward, "swish", x, exc=ValueError)
    for name in ["swish"] + NEW_ACTIVATIONS:
        assert name in msg, msg


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
@pytest.mark.parametrize("m,n,k", [(33, 17, 13), (1000, 10, 300), (200, 200, 200), (515, 301, 100)])
def test_gemm_epilogue_new_activations(isa, name, m, n, k, rng):
    x, w = operands(rng, m, n, k, False, True)
    bias = rng.standard_normal(n).astype(np.float32)
    z, scale = reference(x, w, False, True)
    z = z + bias
    expected = _ref.act_forward(name, z, 1.0)
    # The product's error bound, times the activation's Lipschitz constant (<= 1.2), plus
    # the activation's own float32 rounding.
    tol = 1.2 * 4.0 * EPS32 * (math.sqrt(k) + 2.0) * (scale + np.abs(bias)) + 1e-5 * np.abs(expected) + 1e-7
    for fn in (_C.gemm, _C.gemm_reference):
        got = fn(x, w, transpose_b=True, bias=bias, activation=name, activation_alpha=1.0)
        err = np.abs(got.astype(np.float64) - expected)
        assert np.all(err <= tol), f"{fn.__name__}[{isa}] {name} {m}x{n}x{k}: max err/tol {np.max(err / tol):.3g}"


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_activations_against_torch(name, rng):
    torch = pytest.importorskip("torch")
    x = (4.0 * rng.standard_normal((129, 7))).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    f = {"elu": lambda t: torch.nn.functional.elu(t, alpha=1.0),
         "gelu": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
         "softplus": torch.nn.functional.softplus}[name]
    ty = f(tx)
    ty.backward(torch.tensor(g))
    assert_close(_C.activation_forward(name, x, 1.0), ty.detach().numpy().astype(np.float64),
                 2e-6, 1e-6, f"{name} vs torch")
    assert_close(backward(name, x, g), tx.grad.numpy().astype(np.float64), 2e-5, 2e-6,
                 f"{name}' vs torch")


# ----------------------------------------------------------------------------- random numbers
def test_philox_reference_known_answers():
    # Random123's known-answer vectors for philox4x32-10.
    assert _ref.philox_ref([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert _ref.philox_ref([_ref.MASK32] * 4, [_ref.MASK32, _ref.MASK32]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert _ref.philox_ref([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.parametrize("seed,offset,n", [(0, 0, 4), (1, 0, 1), (7, 3, 7), (12345, 126, 129),
                                           (2 ** 40 + 17, 2 ** 34 - 5, 13), (2 ** 64 - 1, 2 ** 64 - 8, 8),
                                           # 16 blocks at a time (AVX-512), the block counter's
                                           # low word wrapping inside them, unaligned ends
                                           (5, 4 * (2 ** 32 - 9) + 1, 203), (2 ** 33 + 1, 64, 256),
                                           # the element index wrapping past 2**64 - 1
                                           (3, 2 ** 64 - 6, 2), (3, 2 ** 64 - 6, 11),
                                           (3, 2 ** 64 - 6, 130), (3, 2 ** 64 - 40, 300)])
def test_random_uniform_is_philox(seed, offset, n, isa):
    u = _C.random_uniform(n, seed, offset)
    assert u.dtype == np.float32 and u.shape == (n,)
    assert np.array_equal(u.astype(np.float64), _ref.uniform_ref(n, seed, offset))


def test_random_uniform_reproducible_and_offset_addressed():
    a = _C.random_uniform(1000, 42, 10)
    assert np.array_equal(a, _C.random_uniform(1000, 42, 10))
    assert np.array_equal(a[5:], _C.random_uniform(995, 42, 15))   # element i is (seed, offset + i)
    assert not np.array_equal(a, _C.random_uniform(1000, 43, 10))
    assert np.mean(a == _C.random_uniform(1000, 42, 11)) < 0.01
    assert _C.random_uniform(0, 1).shape == (0,)
    assert np.array_equal(_C.random_uniform(3, np.int64(5), np.uint32(2)), _C.random_uniform(3, 5, 2))


def test_random_uniform_thread_count_independent():
    use_threads(1)
    one = _C.random_uniform(300_007, 9, 3)
    use_threads(2)
    assert np.array_equal(one, _C.random_uniform(300_007, 9, 3))


def test_random_uniform_is_uniform():
    u = _C.random_uniform(1_000_000, 2024).astype(np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.0015             # sd of the mean: 0.00029
    assert abs(u.var() - 1.0 / 12.0) < 0.0008        # sd of the variance: 0.000075
    counts = np.histogram(u, bins=20, range=(0.0, 1.0))[0]
    chi2 = float(np.sum((counts - 50_000) ** 2 / 50_000))
    assert chi2 < 50.0, chi2                          # 19 dof: P(chi2 > 50) ~ 1e-4
    # neighbours are uncorrelated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.005


def test_random_uniform_bad_arguments():
    _ref.raises(_C.random_uniform, -1, 0, exc=ValueError, mentions=("n",))
    _ref.raises(_C.random_uniform, 3, -1, exc=ValueError, mentions=("seed",))
    _ref.raises(_C.random_uniform, 3, 2 ** 64, exc=ValueError, mentions=("seed",))
    _ref.raises(_C.random_uniform, 3, 1.5, exc=TypeError, mentions=("seed",))
    _ref.raises(_C.random_uniform, 3, 1, -4, exc=ValueError, mentions=("offset",))
    _ref.raises(_C.random_uniform, 3, 1, "x", exc=TypeError, mentions=("offset",))


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(1,), (7,), (127,), (128, 1), (3, 129)], ids=str)
def test_dropout_forward_backward_formula(p, shape, rng):
    x = away_from_zero(rng, shape, scale=4.0)
    g = rng.standard_normal(shape).astype(np.float32)
    y = _C.dropout_forward(x, p, 11, 5)
    expected, keep = _ref.dropout_ref(x, p, 11, 5)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert_close(y, expected, 1e-6, 0.0, f"dropout p={p} {shape}")
    gx = _C.dropout_backward(g, p, 11, 5)
    assert_close(gx, np.where(keep, g / (1.0 - p), 0.0), 1e-6, 0.0, f"dropout backward p={p}")
    assert np.array_equal(gx != 0, y != 0)   # the same mask, regenerated


def test_dropout_p_zero_is_identity(rng):
    x = rng.standard_normal((7, 129)).astype(np.float32)
    assert np.array_equal(_C.dropout_forward(x, 0.0, 1, 2), x)
    assert np.array_equal(_C.dropout_backward(x, 0.0, 1, 2), x)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_statistics(p):
    n = 200_000
    y = _C.dropout_forward(np.ones(n, np.float32), p, 3, 0)
    kept = np.mean(y != 0)
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - p)) < 5 * sd, kept
    assert abs(y.mean() - 1.0) < 5 * sd / (1 - p), y.mean()   # inverted dropout keeps E[y] = x
    assert np.allclose(y[y != 0], 1.0 / (1.0 - p), rtol=1e-6)


def test_dropout_seed_and_offset(rng):
    x = np.ones(4096, np.float32)
    a = _C.dropout_forward(x, 0.5, 1, 0)
    assert np.array_equal(a, _C.dropout_forward(x, 0.5, 1, 0))
    assert not np.array_equal(a, _C.dropout_forward(x, 0.5, 1, 4096))
    assert not np.array_equal(a, _C.dropout_forward(x, 0.5, 2, 0))
    assert np.array_equal(a[100:], _C.dropout_forward(x[100:], 0.5, 1, 100))


def test_dropout_thread_count_independent(rng):
    x = rng.standard_normal((301, 1001)).astype(np.float32)
    use_threads(1)
    y1, g1 = _C.dropout_forward(x, 0.3, 8, 77), _C.dropout_backward(x, 0.3, 8, 77)
    use_threads(2)
    assert np.array_equal(y1, _C.dropout_forward(x, 0.3, 8, 77))
    assert np.array_equal(g1, _C.dropout_backward(x, 0.3, 8, 77))


def test_dropout_bad_arguments():
    x = np.ones(5, np.float32)
    for p in (-0.1, 1.0, 1.5, float("nan")):
        _ref.raises(_C.dropout_forward, x, p, 0, 0, exc=ValueError, mentions=("p",))
        _ref.raises(_C.dropout_backward, x, p, 0, 0, exc=ValueError, mentions=("p",))
    _ref.raises(_C.dropout_forward, x, 0.5, -1, 0, exc=ValueError, mentions=("seed",))
    _ref.raises(_C.dropout_forward, x, 0.5, 0, None, exc=TypeError, mentions=("offset",))
    _ref.raises(_C.dropout_forward, np.ones(5, np.complex64), 0.5, 0, 0, exc=TypeError, mentions=("x",))
    _ref.raises(_C.dropout_backward, np.array(["a"]), 0.5, 0, 0, exc=TypeError, mentions=("grad_y",))


# ----------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("n", list(SIZES) + [100_003])
def test_sum_squares(n, rng):
    x = rng.standard_normal(n).astype(np.float32)
    s = _C.sum_squares(x)
    assert isinstance(s, float)
    expected = float(np.sum(x.astype(np.float64) ** 2))
    assert abs(s - expected) <= 1e-12 * expected


def test_sum_squares_any_shape_and_thread_independent(rng):
    x = rng.standard_normal((513, 1001)).astype(np.float32)
    assert _C.sum_squares(np.zeros((0, 3), np.float32)) == 0.0
    use_threads(1)
    one = _C.sum_squares(x)
    use_threads(2)
    assert _C.sum_squares(x) == one
    assert abs(one - float(np.sum(x.astype(np.float64) ** 2))) <= 1e-12 * one


@pytest.mark.parametrize("n", SIZES)
def test_scale_and_clip_in_place(n, rng):
    x = (3 * rng.standard_normal((n, 3))).astype(np.float32)
    orig = x.astype(np.float64)
    _C.scale_(x, 0.3)
    assert_close(x, orig * 0.3, 1e-7, 0.0, "scale_")
    _C.clip_(x, -0.5, 0.25)
    assert_close(x, np.clip(np.float32(0.3) * orig, -0.5, 0.25), 1e-7, 0.0, "clip_")
    assert x.min() >= -0.5 and x.max() <= 0.25


@pytest.mark.parametrize("n", SIZES)
def test_axpby_in_place_against_float64(n, rng):
    y, x = (rng.standard_normal((n, 3)).astype(np.float32) for _ in range(2))
    expected = 0.25 * f64(y) - 3.0 * f64(x)
    bound = 2 * EPS32 * (0.25 * np.abs(f64(y)) + 3.0 * np.abs(f64(x)))  # 3 roundings, 1 ulp each
    _C.axpby_(y, x, 0.25, -3.0)
    assert (np.abs(y - expected) <= bound).all(), "axpby_ vs float64"
    _C.axpby_(y, y, 1.0, 1.0)  # y itself as x: each element is read before it is written
    assert (np.abs(y - 2 * expected) <= 2 * bound).all(), "axpby_ y + y"


def test_axpby_bad_arguments():
    y, x = np.ones(6, np.float32), np.ones(6, np.float32)
    _ref.raises(_C.axpby_, y, np.ones(5, np.float32), 1.0, 1.0, exc=ValueError,
                mentions=("x", "(6,)", "(5,)"))
    _ref.raises(_C.axpby_, y, np.ones((2, 3), np.float32), 1.0, 1.0, exc=ValueError,
                mentions=("x", "(2, 3)"))
    _ref.raises(_C.axpby_, np.ones(6), x, 1.0, 1.0, exc=TypeError, mentions=("y",))  # float64
    _ref.raises(_C.axpby_, y[1:], y[:-1], 1.0, 1.0, exc=ValueError, mentions=("y", "x", "overlap"))
    ro = np.ones(6, np.float32)
    ro.flags.writeable = False
    _ref.raises(_C.axpby_, ro, x, 1.0, 1.0, exc=ValueError, mentions=("y",))


def test_clip_keeps_nan_and_scale_bad_arguments():
    x = np.array([np.nan, -5.0, 5.0], np.float32)
    _C.clip_(x, -1.0, 1.0)
    assert np.isnan(x[0]) and x[1] == -1.0 and x[2] == 1.0
    _ref.raises(_C.clip_, x, 1.0, -1.0, exc=ValueError, mentions=("low", "high"))
    _ref.raises(_C.scale_, np.ones(3), 2.0, exc=TypeError, mentions=("x",))              # float64
    _ref.raises(_C.clip_, np.ones((3, 4), np.float32).T, 0.0, 1.0, exc=ValueError, mentions=("x",))
    ro = np.ones(3, np.float32)
    ro.flags.writeable = False
    _ref.raises(_C.scale_, ro, 2.0, exc=ValueError, mentions=("x",))


# ----------------------------------------------------------------------------- L1 / L2 penalty
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("l1,l2", [(0.0, 0.01), (0.003, 0.0), (0.01, 0.2)])
def test_add_penalty_grad(n, l1, l2, rng):
    p = rng.standard_normal((n, 7)).astype(np.float32)
    p[0, 0] = 0.0                                        # sign(0) = 0
    g = rng.standard_normal(p.shape).astype(np.float32)
    g0 = g.astype(np.float64)
    pen = _C.add_penalty_grad(p, g, l1, l2)
    p64 = p.astype(np.float64)
    assert isinstance(pen, float)
    assert abs(pen - (l1 * np.abs(p64).sum() + l2 * (p64 ** 2).sum())) <= 1e-9 * max(pen, 1e-30)
    assert_close(g, g0 + l1 * np.sign(p64) + 2 * l2 * p64, 1e-6, 1e-7, "penalty grad")


def test_add_penalty_grad_matches_finite_differences(rng):
    p = away_from_zero(rng, (7, 9), scale=4.0)
    l1, l2 = 0.05, 0.3
    g = np.zeros_like(p)
    _C.add_penalty_grad(p, g, l1, l2)
    fd = central_diff(lambda w: l1 * np.abs(w).sum() + l2 * (w ** 2).sum(), p)
    assert_close(g, fd, 1e-5, 1e-6, "penalty grad vs FD")


def test_add_penalty_grad_bad_arguments():
    p = np.ones((3, 4), np.float32)
    _ref.raises(_C.add_penalty_grad, p, np.ones(11, np.float32), 0.1, 0.1, exc=ValueError, mentions=("grad",))
    _ref.raises(_C.add_penalty_grad, p, np.ones((3, 4)), 0.1, 0.1, exc=TypeError, mentions=("grad",))
    _ref.raises(_C.add_penalty_grad, p, np.ones_like(p), -0.1, 0.0, exc=ValueError, mentions=("l1",))
    _ref.raises(_C.add_penalty_grad, p, np.ones_like(p), 0.0, float("nan"), exc=ValueError, mentions=("l2",))


# ----------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_augment_keeps_a_non_finite_pixel_to_itself(special):
    # Taps outside the image read pixel 0 with weight 0: an Inf/NaN there must not leak.
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x[:, 0, 0] = special
    for kw in ({"flip": True}, {"max_shift": 1.5}, {"max_rotation": 30.0}):
        y = _C.augment_images(x, seed=3, offset=0, **kw)
        expected = _ref.augment_ref(x, 3, 0, **kw)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)  # NaN only where expected
        assert np.isfinite(expected).sum() >= 12


def images(rng, shape):
    return rng.uniform(0.0, 1.0, size=shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 9), (4, 3, 8, 8), (2, 1, 28, 28), (3, 127, 1)], ids=str)
def test_augment_keeps_shape_and_dtype(shape, rng):
    x = images(rng, shape)
    y = _C.augment_images(x, seed=1, offset=0, max_shift=2.0, flip=True, max_rotation=15.0, noise_std=0.1)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == x.shape
    assert np.all(np.isfinite(y))
    assert _C.augment_images(np.zeros((0, 4, 4), np.float32), seed=1, offset=0, flip=True).shape == (0, 4, 4)


@pytest.mark.parametrize("shape", [(5, 7, 9), (3, 3, 6, 5)], ids=str)
def test_augment_zero_transform_is_identity(shape, rng):
    x = images(rng, shape)
    y = _C.augment_images(x, seed=3, offset=8)
    assert np.array_equal(y, x)
    assert y is not x and not np.shares_memory(y, x)
    # A zero-size rotation / shift with the geometry path active is still exact.
    z = _C.augment_images(x, seed=3, offset=8, max_shift=0.0, max_rotation=0.0, flip=False)
    assert np.array_equal(z, x)


@pytest.mark.parametrize("shape", [(64, 7, 9), (32, 3, 8, 5)], ids=str)
def test_augment_flip_only_flips_exactly(shape, rng):
    x = images(rng, shape)
    y = _C.augment_images(x, seed=5, offset=16, flip=True)
    flipped = np.flip(x, axis=-1)
    expect = [g[2] for g in _ref.geometry_ref(len(x), 5, 16, 0.0, True, 0.0)]
    for i in range(len(x)):
        if expect[i]:
            assert np.array_equal(y[i], flipped[i]), f"image {i} should be flipped exactly"
        else:
            assert np.array_equal(y[i], x[i]), f"image {i} should be untouched"
    frac = np.mean(expect)
    assert 0.25 < frac < 0.75, frac   # p = 1/2 per image (64 or 32 images)


def test_augment_shift_moves_content():
    # A single bright pixel moves by exactly (dx, dy): bilinear spreads it over 4 pixels
    # whose centre of mass is the shifted position.
    n, h, w = 16, 15, 17
    x = np.zeros((n, h, w), np.float32)
    x[:, 7, 8] = 1.0
    y = _C.augment_images(x, seed=9, offset=0, max_shift=3.0).astype(np.float64)
    ys, xs = np.mgrid[0:h, 0:w]
    moved = 0
    for i, (dx, dy, _, _) in enumerate(_ref.geometry_ref(n, 9, 0, 3.0, False, 0.0)):
        mass = y[i].sum()
        assert abs(mass - 1.0) < 1e-5
        assert abs((y[i] * xs).sum() / mass - (8 + dx)) < 1e-4, f"image {i}: dx {dx}"
        assert abs((y[i] * ys).sum() / mass - (7 + dy)) < 1e-4, f"image {i}: dy {dy}"
        moved += abs(dx) > 0.5 or abs(dy) > 0.5
    assert moved >= n // 2


def test_augment_rotation_turns_about_the_centre():
    # Positive angles turn content clockwise as displayed (rows grow downwards).
    n, h, w = 16, 21, 21
    x = np.zeros((n, h, w), np.float32)
    x[:, 10, 15] = 1.0                        # 5 px right of the centre (10, 10)
    x[:, 10, 10] = 0.0
    y = _C.augment_images(x, seed=4, offset=100, max_rotation=40.0).astype(np.float64)
    ys, xs = np.mgrid[0:h, 0:w]
    for i, (_, _, _, th) in enumerate(_ref.geometry_ref(n, 4, 100, 0.0, False, 40.0)):
        mass = y[i].sum()
        cx, cy = (y[i] * xs).sum() / mass, (y[i] * ys).sum() / mass
        assert abs(cx - (10 + 5 * math.cos(th))) < 0.2 and abs(cy - (10 + 5 * math.sin(th))) < 0.2, \
            f"image {i}: angle {math.degrees(th):.1f}, centre of mass ({cx:.2f}, {cy:.2f})"
    # The centre pixel of an odd-sized image stays where it is.
    c = np.zeros((8, 9, 9), np.float32)
    c[:, 4, 4] = 1.0
    r = _C.augment_images(c, seed=1, offset=0, max_rotation=30.0).astype(np.float64)
    ys, xs = np.mgrid[0:9, 0:9]
    assert np.allclose(r[:, 4, 4], 1.0, atol=1e-6)
    for img in r:
        assert abs((img * xs).sum() / img.sum() - 4) < 1e-3 and abs((img * ys).sum() / img.sum() - 4) < 1e-3


@pytest.mark.parametrize("shape", [(9, 28, 28), (5, 3, 16, 12), (4, 1, 7, 1), (3, 1, 1)], ids=str)
@pytest.mark.parametrize("kw", [dict(max_shift=2.5), dict(max_rotation=20.0),
                                dict(max_shift=3.0, flip=True, max_rotation=25.0)],
                         ids=["shift", "rotate", "all"])
def test_augment_against_numpy_reference(shape, kw, rng):
    x = images(rng, shape)
    y = _C.augment_images(x, seed=21, offset=40, **kw)
    assert_close(y, _ref.augment_ref(x, 21, 40, **kw), 0.0, 1e-5, f"augment {kw} {shape}")


def test_augment_channels_share_one_transform(rng):
    x = images(rng, (6, 1, 10, 11))
    x3 = np.concatenate([x, 2 * x, -x], axis=1)
    kw = dict(seed=2, offset=0, max_shift=2.0, flip=True, max_rotation=10.0)
    y3 = _C.augment_images(x3, **kw)
    y1 = _C.augment_images(x[:, 0], **kw)
    for ch, f in enumerate((1.0, 2.0, -1.0)):
        assert_close(y3[:, ch], f * y1.astype(np.float64), 1e-6, 1e-7, f"channel {ch}")


def test_augment_noise(rng):
    x = np.full((200, 3, 20, 20), 0.5, np.float32)
    y = _C.augment_images(x, seed=6, offset=0, noise_std=0.2)
    e = (y.astype(np.float64) - 0.5) / 0.2
    assert abs(e.mean()) < 0.01 and abs(e.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(e) < 1.0) - 0.6827) < 0.01       # Gaussian, not uniform
    assert abs(np.mean(np.abs(e) < 2.0) - 0.9545) < 0.005
    assert abs(np.corrcoef(e.reshape(-1)[:-1], e.reshape(-1)[1:])[0, 1]) < 0.01
    assert not np.allclose(y[0], y[1])                         # each image its own noise
    assert not np.allclose(y[:, 0], y[:, 1])                   # and each channel
    # Noise comes after the geometry: a zero image with noise only is pure noise.
    z = _C.augment_images(np.zeros((4, 8, 8), np.float32), seed=6, offset=0, noise_std=1.0, flip=True)
    assert np.count_nonzero(z) == z.size


def test_augment_noise_stream_is_disjoint_from_the_public_stream():
    # Image 0 at offset 0 uses uniform elements 0..3 for its geometry; its noise must not be
    # the Box-Muller transform of those same public uniforms.
    z = _C.augment_images(np.zeros((1, 1, 4), np.float32), seed=7, offset=0, noise_std=1.0)[0, 0]
    u = _ref.uniform_ref(4, 7, 0)
    u1, u2 = (np.floor(u[0::2] * 2 ** 24) + 1) * 2.0 ** -24, u[1::2]
    r = np.sqrt(-2 * np.log(u1))
    public = np.stack([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1).reshape(-1)
    assert np.all(np.abs(z - public) > 1e-3), (z, public)


def test_augment_reproducible_by_seed_and_offset(rng):
    x = images(rng, (12, 1, 14, 14))
    kw = dict(max_shift=2.0, flip=True, max_rotation=15.0, noise_std=0.05)
    a = _C.augment_images(x, seed=10, offset=24, **kw)
    assert np.array_equal(a, _C.augment_images(x, seed=10, offset=24, **kw))
    b = _C.augment_images(x, seed=10, offset=24 + 8 * 12, **kw)
    c = _C.augment_images(x, seed=11, offset=24, **kw)
    for other in (b, c):
        assert all(not np.array_equal(a[i], other[i]) for i in range(len(x)))
    # Image i draws from offset + 8 i (noise included): a batch's tail is the same images
    # augmented at a later offset.
    assert np.array_equal(a[3:], _C.augment_images(x[3:], seed=10, offset=24 + 24, **kw))
    # float64 input is converted, not rejected
    assert np.array_equal(a, _C.augment_images(x.astype(np.float64), seed=10, offset=24, **kw))


def test_augment_thread_count_independent(rng):
    x = images(rng, (64, 3, 28, 28))
    kw = dict(seed=12, offset=8, max_shift=3.0, flip=True, max_rotation=20.0, noise_std=0.1)
    use_threads(1)
    one = _C.augment_images(x, **kw)
    use_threads(2)
    assert np.array_equal(one, _C.augment_images(x, **kw))


def test_augment_bad_arguments():
    x = np.zeros((2, 4, 4), np.float32)
    _ref.raises(_C.augment_images, np.zeros((4, 4), np.float32), seed=0, offset=0, exc=ValueError,
           mentions=("x",))
    _ref.raises(_C.augment_images, np.zeros((1, 1, 1, 4, 4), np.float32), seed=0, offset=0,
           exc=ValueError, mentions=("x",))
    _ref.raises(_C.augment_images, x.astype(np.complex64), seed=0, offset=0, exc=TypeError, mentions=("x",))
    _ref.raises(_C.augment_images, x, seed=0, offset=0, max_shift=-1.0, exc=ValueError, mentions=("max_shift",))
    _ref.raises(_C.augment_images, x, seed=0, offset=0, max_rotation=float("inf"), exc=ValueError,
           mentions=("max_rotation",))
    _ref.raises(_C.augment_images, x, seed=0, offset=0, noise_std=float("nan"), exc=ValueError,
           mentions=("noise_std",))
    _ref.raises(_C.augment_images, x, seed=-3, offset=0, exc=ValueError, mentions=("seed",))
    _ref.raises(_C.augment_images, x, seed=0, offset=0.5, exc=TypeError, mentions=("offset",))
    with pytest.raises(TypeError):
        _C.augment_images(x, 0, 0)   # seed and offset are keyword-only


# ----------------------------------------------------------------------------- convolution pieces
# (n, c, h, w, kernel, stride, padding, dilation): batch 1, one channel, odd sizes, kernels
# 1/3/5/7, strides 1/2/3, paddings 0/1/2, dilation 2, a 1-pixel output.
CONV_GEOMETRIES = [(1, 1, 7, 5, 3, 1, 0, 1), (2, 3, 7, 5, 3, 2, 1, 1), (3, 2, 9, 8, (5, 3), (3, 2), 2, 1),
                   (1, 4, 8, 7, 3, 1, 2, 2), (2, 1, 7, 7, 7, 1, 0, 1), (2, 5, 6, 6, 1, 3, 0, 1),
                   (1, 2, 11, 9, (3, 5), 2, (1, 2), (2, 1))]
CONV_IDS = [f"n{g[0]}c{g[1]}_{g[2]}x{g[3]}_k{g[4]}s{g[5]}p{g[6]}d{g[7]}" for g in CONV_GEOMETRIES]


def conv_kw(stride, padding, dilation):
    return {"stride": stride, "padding": padding, "dilation": dilation}


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("geom", CONV_GEOMETRIES, ids=CONV_IDS)
def test_conv2d_reference_against_numpy_float64(geom, groups, rng):
    n, c, h, w, k, s, p, d = geom
    c *= groups
    kh, kw = _ref.pair(k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((6, c // groups, kh, kw)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    got = _C.conv2d_reference(x, wt, b, **conv_kw(s, p, d), groups=groups)
    assert_close(got, _ref.conv2d(x, wt, b, s, p, d, groups), 1e-6, 1e-6, f"conv2d_reference {geom}")


def conv_grads64(x, w, g, k, s, p, d, groups):
    """float64 (dx, dw, db) of <g, conv2d(x, w)>, through the reference's im2col rows."""
    n, c = x.shape[:2]
    oc = w.shape[0]
    col, _ = _ref.im2col(x, k, s, p, d)  # (n oh ow, c kh kw)
    rows = f64(g).transpose(0, 2, 3, 1).reshape(-1, oc)
    og, kk = oc // groups, col.shape[1] // groups
    w2 = f64(w).reshape(oc, kk)
    dw = np.concatenate([rows[:, i * og:(i + 1) * og].T @ col[:, i * kk:(i + 1) * kk]
                         for i in range(groups)]).reshape(w.shape)
    dcol = np.concatenate([rows[:, i * og:(i + 1) * og] @ w2[i * og:(i + 1) * og]
                           for i in range(groups)], axis=1)
    # the adjoint of im2col, in float64: each patch entry back to its input value
    idx = _ref.im2col(np.arange(1, x.size + 1, dtype=np.float64).reshape(x.shape), k, s, p, d)[0]
    dx = np.zeros(x.size)
    np.add.at(dx, idx[idx > 0].astype(np.int64) - 1, dcol[idx > 0])
    return dx.reshape(x.shape), dw, rows.sum(axis=0)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("geom", CONV_GEOMETRIES, ids=CONV_IDS)
def test_conv2d_forward_backward_against_numpy_float64(geom, groups, rng):
    n, c, h, w, k, s, p, d = geom
    c *= groups
    kh, kw = _ref.pair(k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((4, c // groups, kh, kw)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y = _C.conv2d_forward(x, wt, b, **conv_kw(s, p, d), groups=groups, activation="tanh")
    z = _ref.conv2d(x, wt, b, s, p, d, groups)
    assert_close(y, np.tanh(z), 1e-5, 1e-5, f"conv2d_forward {geom}")
    g = rng.standard_normal(y.shape).astype(np.float32)
    gw, gb = np.full_like(wt, 0.25), np.full(4, -0.5, np.float32)
    dx = _C.conv2d_backward(x, wt, g, gw, grad_bias=gb, beta=1.0, **conv_kw(s, p, d), groups=groups)
    edx, edw, edb = conv_grads64(x, wt, g, k, s, p, d, groups)
    assert_close(dx, edx, 1e-5, 1e-4, "conv2d_backward grad_x")
    assert_close(gw, 0.25 + edw, 1e-5, 1e-4, "conv2d_backward grad_weight")
    assert_close(gb, -0.5 + edb, 1e-5, 1e-4, "conv2d_backward grad_bias")
    assert _C.conv2d_backward(x, wt, g, gw, input_grad=False, **conv_kw(s, p, d), groups=groups) is None


# Stride 1, dilation 1 and a padding under the kernel size take the direct kernels where the
# ISA has them (AVX-512, AVX2) for the forward pass and the input's gradient, and for the
# weight's gradient too with at most 16 output channels per group: output channels in blocks
# with every remainder, kernel rows of 1-7 taps, images narrower than a vector, padding up to
# kernel - 1, runs of vectors plus single ones; the forward kernel stores only the grid's
# output pixels: a 1-wide image puts one in every 3 lanes, a 1 x 17 kernel leaves 16 grid
# columns a row with none (whole vectors). With more, the weight's gradient is a product
# per image with the padded image's rows read in place (conv.cpp: weight_grad_by_table; 24
# patch rows or more, a grid of 24 positions or more that multiplies at most a fifth more
# than the patches; 3 x 10 x 10 to 17, the 5 x 5 one-channel 24 x 20 to 18, the groups of 3
# channels on 11 x 13, 4 channels unpadded to 33, 3 x 5 kernels padded (1, 2), 6 x 6 images
# to 40), the rows read in place by the AVX-512 or AVX2 rows kernel; otherwise (4 channels' 4 x 4 images to 24, 2
# channels' 18 rows to 20) on the GEMM over im2col blocks, as with a padding of the kernel's
# size and on the portable ISA.
# (n, c, h, w, out_channels, kernel, padding, groups)
DIRECT_CASES = [(3, 1, 28, 28, 6, 5, 2, 1), (5, 6, 14, 14, 16, 5, 0, 1), (2, 3, 9, 7, 5, 3, 1, 1),
                (2, 2, 3, 4, 13, 3, 2, 1), (1, 3, 5, 33, 11, (2, 7), (1, 6), 1), (4, 4, 6, 5, 1, 1, 0, 1),
                (2, 4, 8, 9, 10, 3, 1, 2), (2, 3, 21, 19, 7, (4, 6), (3, 0), 1),
                (2, 3, 10, 10, 17, 3, 1, 1), (2, 2, 6, 7, 24, 3, 2, 2), (2, 2, 7, 7, 4, 3, 3, 1),
                (2, 1, 24, 20, 18, 5, 2, 1), (5, 6, 11, 13, 40, 3, 1, 2), (3, 4, 12, 12, 33, 3, 0, 1),
                (2, 3, 12, 30, 20, (3, 5), (1, 2), 1), (5, 4, 6, 6, 40, 3, 1, 1), (2, 2, 9, 9, 20, 3, 1, 1),
                (2, 2, 5, 1, 20, 3, 1, 1), (1, 1, 3, 4, 3, (1, 17), (0, 16), 1), (3, 4, 4, 4, 24, 3, 1, 1),
                (2, 128, 5, 4, 128, 3, 1, 1),  # VGG's widest: 1152 taps a sum, the packed weights' offsets
                # channels along the vectors (AVX-512 64 a block, AVX2 16) where the grid wastes
                # much: tiles of 6 pixels crossing rows, the last one short; groups; a 5 x 5 kernel
                (2, 128, 5, 4, 128, 3, 1, 2), (1, 64, 7, 7, 64, 3, 1, 1), (1, 64, 6, 6, 64, 5, 2, 1),
                # 3-wide kernels of 5 rows and of 1 (the AVX2 tiles' assembly takes any kh):
                # 6-channel blocks and their rest (13, 14), 16-channel pixel blocks (32, 16)
                (2, 5, 9, 11, 13, (5, 3), (2, 1), 1), (2, 7, 6, 10, 14, (1, 3), (0, 1), 1),
                (2, 3, 5, 5, 32, (5, 3), (2, 1), 1), (3, 5, 6, 6, 16, (1, 3), (0, 1), 1)]


@pytest.mark.parametrize("case", DIRECT_CASES, ids=[f"{c}" for c in DIRECT_CASES])
def test_conv2d_direct_and_gemm_paths_against_numpy_float64(case, isa, rng):
    n, c, h, w, oc, k, p, groups = case
    kh, kw = _ref.pair(k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    # weights at a layer's scale (1 / sqrt(fan-in)): outputs and gradients of order 1, for
    # which the tolerances are meant, whatever the number of taps summed
    wt = (rng.standard_normal((oc, c // groups, kh, kw)) / math.sqrt(c // groups * kh * kw)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    y = _C.conv2d_forward(x, wt, b, padding=p, groups=groups, activation="relu")
    z = _ref.conv2d(x, wt, b, 1, p, 1, groups)
    assert_close(y, np.maximum(z, 0), 1e-5, 1e-5, f"conv2d_forward {case} {isa}")
    g = rng.standard_normal(y.shape).astype(np.float32)
    gw, gb = np.full_like(wt, 0.25), np.full(oc, -0.5, np.float32)
    dx = _C.conv2d_backward(x, wt, g, gw, grad_bias=gb, beta=1.0, padding=p, groups=groups)
    edx, edw, edb = conv_grads64(x, wt, g, k, 1, p, 1, groups)
    assert_close(dx, edx, 1e-5, 1e-4, f"conv2d_backward grad_x {case} {isa}")
    assert_close(gw, 0.25 + edw, 1e-5, 1e-4, f"conv2d_backward grad_weight {case} {isa}")
    assert_close(gb, -0.5 + edb, 1e-5, 1e-4, f"conv2d_backward grad_bias {case} {isa}")


@pytest.mark.parametrize("n,size,groups", [(9, 8, 1), (8, 18, 1), (7, 8, 2)])
def test_conv_weight_grad_by_table_takes_images_as_segments(n, size, groups, isa, rng):
    """Where images' grids are short the table path's product takes several at once
    (gemm_row_table's segments, on the AVX-512 or AVX2 rows kernel): under KC 1096, 8 x 8 images (71
    positions) go a part's 4 at a time (n = 9: parts of 4, 4 and 1), 18 x 18 (341 positions)
    3 at a time (a part of 4: 3 then 1). With the input's gradient, each image's output
    gradient is padded once for it and taken in place as the weight product's grid. Both
    gradients against float64."""
    old = _C.blocking()
    _C.set_blocking(1096, old["nc"], 176)
    try:
        x = rng.standard_normal((n, 4 * groups, size, size)).astype(np.float32)
        wt = (rng.standard_normal((20 * groups, 4, 3, 3)) / 6).astype(np.float32)
        g = rng.standard_normal((n, 20 * groups, size, size)).astype(np.float32)
        gw = np.full_like(wt, 0.25)
        assert _C.conv2d_backward(x, wt, g, gw, beta=1.0, padding=1, groups=groups, input_grad=False) is None
        gw_with_dx = np.full_like(wt, 0.25)
        dx = _C.conv2d_backward(x, wt, g, gw_with_dx, beta=1.0, padding=1, groups=groups)
    finally:
        _C.reset_blocking()
    edx, edw, _ = conv_grads64(x, wt, g, 3, 1, 1, 1, groups)
    assert_close(gw, 0.25 + edw, 1e-5, 1e-4, f"conv2d_backward grad_weight n={n} {size}x{size} {isa}")
    assert_close(gw_with_dx, 0.25 + edw, 1e-5, 1e-4, f"grad_weight with grad_x n={n} {size}x{size} {isa}")
    assert_close(dx, edx, 1e-5, 1e-4, f"conv2d_backward grad_x n={n} {size}x{size} {isa}")


# Depthwise (conv.cpp): at stride 1 with a padding within the kernel's reach, the padded grid
# in chunks of 64 positions then vectors of 16 (20 x 23: 479 positions); otherwise rows of 16
# outputs over the padded plane split by column phase (stride 2 with its own loop, 3 and 4 the
# general one; a padding past the kernel's reach at stride 1 reads the plane itself).
DEPTHWISE_GEOMETRIES = CONV_GEOMETRIES + [(2, 3, 20, 23, 3, 1, 1, 1), (1, 2, 6, 9, 3, 1, 3, 1),
                                          (2, 2, 13, 17, 5, 4, 2, 1), (1, 3, 8, 8, 3, 1, 1, 1)]
DEPTHWISE_IDS = [f"n{g[0]}c{g[1]}_{g[2]}x{g[3]}_k{g[4]}s{g[5]}p{g[6]}d{g[7]}" for g in DEPTHWISE_GEOMETRIES]


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("geom", DEPTHWISE_GEOMETRIES, ids=DEPTHWISE_IDS)
def test_depthwise_forward_backward(geom, multiplier, isa, rng):
    n, c, h, w, k, s, p, d = geom
    kh, kw = _ref.pair(k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c * multiplier, 1, kh, kw)).astype(np.float32)
    b = rng.standard_normal(c * multiplier).astype(np.float32)
    y = _C.depthwise_conv2d_forward(x, wt, b, **conv_kw(s, p, d))
    assert_close(y, _ref.conv2d(x, wt, b, s, p, d, groups=c), 1e-5, 1e-5, "depthwise forward")
    g = rng.standard_normal(y.shape).astype(np.float32)
    gw = np.full_like(wt, 0.5)
    _C.depthwise_conv2d_backward(x, wt, g, gw, beta=1.0, **conv_kw(s, p, d))
    gb = np.full(c * multiplier, 1.0, np.float32)
    dx = _C.depthwise_conv2d_backward(x, wt, g, gw.copy(), grad_bias=gb, **conv_kw(s, p, d))
    edx, edw, edb = conv_grads64(x, wt, g, k, s, p, d, groups=c)
    assert_close(gw, 0.5 + edw, 1e-5, 1e-4, "depthwise grad_weight")
    assert_close(dx, edx, 1e-5, 1e-4, "depthwise grad_x")
    assert_close(gb, 1.0 + edb, 1e-5, 1e-4, "depthwise grad_bias")
    assert _C.depthwise_conv2d_backward(x, wt, g, gw, input_grad=False, **conv_kw(s, p, d)) is None


@pytest.mark.parametrize("reach", [2**20, 2**14, 40])
def test_depthwise_with_a_padding_far_beyond_the_image(reach, rng):
    """Padding and dilation of 2**14 around a 4 x 4 image made the depthwise paths copy each
    plane into 4 GB (2**20: bad_alloc; found by an attack); such a geometry goes the grouped
    im2col path, which pads nothing. 40 stays on the depthwise paths."""
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    wt = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = conv_kw(1, reach, reach)
    y = _C.depthwise_conv2d_forward(x, wt, b, **kw)
    # every tap but the centre lands `reach` (> 4) pixels off the image: in the padding
    x2 = np.repeat(x.astype(np.float64), 2, axis=1)  # output channel o reads input o // 2
    centre = wt[:, 0, 1, 1].astype(np.float64)[None, :, None, None]
    assert_close(y, x2 * centre + b[None, :, None, None], 1e-6, 1e-6, "forward")
    g = rng.standard_normal(y.shape).astype(np.float32)
    gw, gb = np.zeros_like(wt), np.zeros(6, np.float32)
    dx = _C.depthwise_conv2d_backward(x, wt, g, gw, grad_bias=gb, **kw)
    edx = (g * centre).reshape(2, 3, 2, 4, 4).sum(axis=2)
    edw = np.zeros(wt.shape)
    edw[:, 0, 1, 1] = (g * x2).sum(axis=(0, 2, 3))
    assert_close(dx, edx, 1e-5, 1e-5, "grad_x")
    assert_close(gw, edw, 1e-5, 1e-5, "grad_weight")
    assert_close(gb, g.astype(np.float64).sum(axis=(0, 2, 3)), 1e-5, 1e-5, "grad_bias")


@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_channels_along_vectors_give_the_grid_kernels_bits(with_bias, rng):
    """AVX-512 runs an 8 x 8 layer of 64 channels with channels along the vectors, AVX2 on
    its padded grid: each output sums the same taps in the same order, so the bits agree,
    forward (with a bias or without) and input gradient."""
    if not {"avx512", "avx2"} <= set(_C.supported_isas()):
        pytest.skip("needs both AVX-512 and AVX2")
    x = rng.standard_normal((2, 64, 8, 8)).astype(np.float32)
    wt = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32) if with_bias else None
    g = rng.standard_normal((2, 64, 8, 8)).astype(np.float32)
    out = []
    for isa in ("avx512", "avx2"):
        _C.set_isa(isa)
        out.append((_C.conv2d_forward(x, wt, b, padding=1),
                    _C.conv2d_backward(x, wt, g, np.zeros_like(wt), padding=1)))
    for a, c in zip(*out):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("n", [9, 37])  # the weight gradient's partial sums: 4 to 8 images each
def test_conv_bit_identical_with_one_and_two_threads(n, rng):
    x = rng.standard_normal((n, 6, 13, 11)).astype(np.float32)
    wd = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    wt = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)  # direct kernels (AVX-512)
    w24 = rng.standard_normal((24, 6, 3, 3)).astype(np.float32)  # weight gradient by row table
    g = rng.standard_normal((n, 6, 13, 11)).astype(np.float32)
    g8 = rng.standard_normal((n, 8, 13, 11)).astype(np.float32)
    g24 = rng.standard_normal((n, 24, 13, 11)).astype(np.float32)
    w3g = rng.standard_normal((72, 2, 3, 3)).astype(np.float32)  # 3 groups of 24 on 18 rows: im2col
    g72 = rng.standard_normal((n, 72, 13, 11)).astype(np.float32)
    x128 = rng.standard_normal((n, 128, 5, 4)).astype(np.float32)  # 128 -> 128, as VGG's widest
    w128 = rng.standard_normal((128, 128, 3, 3)).astype(np.float32)
    g128 = rng.standard_normal((n, 128, 5, 4)).astype(np.float32)
    out = []
    for threads in (1, 2):
        use_threads(threads)
        gw, gwd, gb, gw24 = np.zeros_like(wt), np.zeros_like(wd), np.zeros(8, np.float32), np.zeros_like(w24)
        gw3g, gw128 = np.zeros_like(w3g), np.zeros_like(w128)
        dx = _C.conv2d_backward(x, wt, g8, gw, grad_bias=gb, padding=1)
        dx128 = _C.conv2d_backward(x128, w128, g128, gw128, padding=1)
        dx24 = _C.conv2d_backward(x, w24, g24, gw24, padding=1)
        dx3g = _C.conv2d_backward(x, w3g, g72, gw3g, padding=1, groups=3)
        dxd = _C.depthwise_conv2d_backward(x, wd, g, gwd, padding=1)
        gwd2 = np.zeros_like(wd)  # stride 2: the row form over the plane's column phases
        dxd2 = _C.depthwise_conv2d_backward(x, wd, g[:, :, :7, :6], gwd2, padding=1, stride=2)
        out.append((_C.conv2d_forward(x, wt, None, padding=1, activation="relu"), dx, gw, gb,
                    _C.conv2d_forward(x, w24, None, padding=1), dx24, gw24, dx3g, gw3g,
                    dxd, gwd, _C.depthwise_conv2d_forward(x, wd, None, padding=1),
                    dxd2, gwd2, _C.depthwise_conv2d_forward(x, wd, None, padding=1, stride=2),
                    _C.conv2d_forward(x128, w128, None, padding=1), dx128, gw128))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_conv_names_bad_geometry():
    x = np.ones((1, 2, 4, 4), np.float32)
    w5 = np.ones((3, 2, 5, 5), np.float32)
    msg = _ref.raises(_C.conv2d_forward, x, w5, exc=ValueError, mentions=("x", "kernel_size"))
    assert "4x4" in msg and "5x5" in msg and "no output pixel" in msg
    w3 = np.ones((3, 2, 3, 3), np.float32)
    _ref.raises(_C.conv2d_forward, x, np.ones((3, 2, 0, 3), np.float32), mentions=("kernel_size",))
    _ref.raises(_C.conv2d_forward, x, w3, stride=0, mentions=("stride",))
    _ref.raises(_C.conv2d_forward, x, w3, padding=-1, mentions=("padding",))
    _ref.raises(_C.conv2d_forward, x, w3, padding=(1, 1, 1), mentions=("padding",))
    _ref.raises(_C.conv2d_forward, np.ones((2, 4, 4), np.float32), w3, mentions=("x",))
    _ref.raises(_C.conv2d_forward, x, w3, activation="bogus", exc=ValueError)
    _ref.raises(_C.conv2d_backward, x, w3, np.ones((1, 3, 3, 3), np.float32), np.zeros_like(w3),
                mentions=("grad_y",))
    _ref.raises(_C.conv2d_backward, x, w3, np.ones((1, 3, 2, 2), np.float32), np.zeros((3, 2, 3)),
                mentions=("grad_weight",))
    msg = _ref.raises(_C.conv2d_reference, np.ones((1, 3, 5, 5), np.float32),
                      np.ones((4, 2, 3, 3), np.float32), groups=2, exc=ValueError)
    assert "groups=2" in msg and "3 input channels" in msg
    _ref.raises(_C.conv2d_reference, x, np.ones((4, 3, 3, 3), np.float32), mentions=("weight",))
    _ref.raises(_C.depthwise_conv2d_forward, x, np.ones((3, 1, 3, 3), np.float32), mentions=("weight",))


# ----------------------------------------------------------------------------- pooling
POOLS = [((2, 3, 7, 5), 2, None, 0), ((1, 1, 9, 9), 3, 2, 1), ((2, 2, 8, 7), 3, 1, 1),
         ((1, 3, 6, 9), (2, 3), (1, 2), (1, 1)), ((3, 1, 5, 5), 5, None, 2), ((1, 2, 4, 4), 1, 3, 0)]


@pytest.mark.parametrize("shape,k,s,p", POOLS, ids=str)
def test_maxpool2d_against_numpy(shape, k, s, p, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[::5] = x.flat[1]  # ties
    x.flat[7] = np.nan
    y, argmax = _C.maxpool2d_forward(x, k, stride=s, padding=p)
    ey, ea = _ref.maxpool2d(x, k, s, p)
    np.testing.assert_array_equal(y, ey.astype(np.float32))
    np.testing.assert_array_equal(argmax, ea)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = _C.maxpool2d_backward(g, argmax, shape, k, stride=s, padding=p)
    assert_close(dx, _ref.maxpool2d_backward(g, ea, shape), 1e-6, 1e-6, "maxpool backward")


# 2x2 windows at stride 2 without padding on an even width take their own path: planes of
# rows shorter than a vector (output rows of 8 or fewer select with masks), of an odd height,
# and wide enough for whole vectors; and enough 8 x 8 planes for two threads, each with its
# own pair buffers.
@pytest.mark.parametrize("shape", [(2, 3, 4, 2), (1, 2, 7, 6), (2, 3, 8, 8), (1, 2, 5, 16), (3, 2, 14, 14),
                                   (2, 2, 6, 18), (2, 2, 9, 68), (32, 64, 8, 8)], ids=str)
def test_maxpool2d_2x2_stride_2_against_numpy(shape, isa, rng):
    # few distinct values: ties everywhere, with NaN and both infinities among them
    values = np.array([-np.inf, -1.0, 0.0, 0.5, 2.0, np.inf, np.nan], np.float32)
    for draw in range(3):
        x = values[rng.integers(0, 5 if draw == 0 else 7, shape)]
        y, argmax = _C.maxpool2d_forward(x, 2)
        ey, ea = _ref.maxpool2d(x, 2)
        np.testing.assert_array_equal(y, ey.astype(np.float32))
        np.testing.assert_array_equal(argmax, ea)


@pytest.mark.parametrize("shape,k,s,p", POOLS, ids=str)
def test_avgpool2d_against_numpy(shape, k, s, p, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y = _C.avgpool2d_forward(x, k, stride=s, padding=p)
    assert_close(y, _ref.avgpool2d(x, k, s, p), 1e-6, 1e-6, "avgpool forward")
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = _C.avgpool2d_backward(g, shape, k, stride=s, padding=p)
    assert_close(dx, _ref.avgpool2d_backward(g, shape, k, s, p), 1e-6, 1e-6, "avgpool backward")


@pytest.mark.parametrize("shape,k,s", [((2, 3, 512, 300), (512, 300), 1),   # global: one output
                                         ((1, 2, 512, 257), (512, 128), 128),  # two a row
                                         ((1, 2, 100, 120), 90, 3)],           # the row form, 11 a row
                         ids=["global", "few-a-row", "row-form"])
def test_avgpool2d_wide_windows_keep_float32_precision(shape, k, s, rng):
    """Windows of thousands of taps, of values around 1 (whose float running sum loses most):
    within a few float32 ulps of the float64 mean (one float sum lost 1.6e-3 of a 1024^2
    plane's; torch 7e-8)."""
    x = (1 + 0.1 * rng.random(shape)).astype(np.float32)
    y = _C.avgpool2d_forward(x, k, stride=s)
    want = _ref.avgpool2d(x, k, s, 0)
    assert np.abs(y - want).max() <= 4 * np.finfo(np.float32).eps * np.abs(want).max()


def test_pooling_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 3, 11, 9)).astype(np.float32)
    for k, s, p in [(2, None, 0), (3, 2, 1), ((3, 2), 1, (1, 0))]:
        xt = torch.tensor(x)
        yt, it = torch.nn.functional.max_pool2d(xt, k, stride=s, padding=p, return_indices=True)
        y, a = _C.maxpool2d_forward(x, k, stride=s, padding=p)
        np.testing.assert_array_equal(y, yt.numpy())
        np.testing.assert_array_equal(a, it.numpy())
        assert_close(_C.avgpool2d_forward(x, k, stride=s, padding=p),
                     torch.nn.functional.avg_pool2d(xt, k, stride=s, padding=p).numpy(), 1e-6, 1e-6,
                     f"avg_pool2d {k} {s} {p}")


def test_pooling_bit_identical_with_one_and_two_threads(rng):
    x = rng.standard_normal((8, 8, 17, 15)).astype(np.float32)
    out = []
    for threads in (1, 2):
        use_threads(threads)
        y, a = _C.maxpool2d_forward(x, 3, stride=2, padding=1)
        g = np.ones_like(y)
        out.append((y, _C.maxpool2d_backward(g, a, x.shape, 3, stride=2, padding=1),
                    _C.avgpool2d_forward(x, 3, stride=1), _C.avgpool2d_backward(
                        np.ones((8, 8, 15, 13), np.float32), x.shape, 3, stride=1)))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_pooling_names_bad_arguments():
    x = np.ones((1, 2, 4, 4), np.float32)
    msg = _ref.raises(_C.maxpool2d_forward, x, 5, exc=ValueError, mentions=("x", "kernel_size"))
    assert "4x4" in msg and "5x5" in msg
    _ref.raises(_C.maxpool2d_forward, x, 2, padding=2, mentions=("padding",))
    _ref.raises(_C.avgpool2d_forward, x, 2, stride=0, mentions=("stride",))
    _ref.raises(_C.avgpool2d_forward, np.ones((2, 4, 4), np.float32), 2, mentions=("x",))
    y, a = _C.maxpool2d_forward(x, 2)
    bad = a.copy()
    bad[0, 0, 0, 0] = 16
    _ref.raises(_C.maxpool2d_backward, y, bad, x.shape, 2, exc=ValueError, mentions=("argmax",))
    _ref.raises(_C.maxpool2d_backward, y, a.astype(np.float32), x.shape, 2, exc=TypeError,
                mentions=("argmax",))
    _ref.raises(_C.avgpool2d_backward, np.ones((1, 2, 3, 3), np.float32), x.shape, 2,
                mentions=("grad_y",))


@pytest.mark.parametrize("threads", [1, 2])
def test_maxpool_backward_names_the_first_bad_argmax(rng, threads):
    # The kernel checks each index as it reads it, threads taking planes: the error names the
    # array's first bad entry, wherever the threads found theirs.
    use_threads(threads)
    x = rng.standard_normal((64, 64, 8, 8)).astype(np.float32)  # 4096 planes: 2 threads' work
    y, a = _C.maxpool2d_forward(x, 2)
    bad = a.copy()
    bad[63, 63, 3, 3] = -1  # in the last plane, taken by the last thread
    bad[9, 4, 1, 2] = 64  # first in the array's order (position 9 * 1024 + 4 * 16 + 6)
    bad[12, 0, 0, 0] = 2**40
    msg = _ref.raises(_C.maxpool2d_backward, y, bad, x.shape, 2, exc=ValueError, mentions=("argmax",))
    assert f"argmax[{9 * 1024 + 4 * 16 + 6}] = 64" in msg, msg


# ----------------------------------------------------------------------------- batch norm
# (9, 150): one value per channel and row, the channels in blocks of 64 side by side (64, 64, 22)
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 7), (2, 3, 5, 4), (1, 2, 3, 3), (7, 1, 1), (9, 150)], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_against_numpy(shape, training, rng):
    c = shape[1]
    x = (2.0 * rng.standard_normal(shape) + 1.0).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    rm, rv = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2.0, c).astype(np.float32)
    rm0, rv0 = rm.copy(), rv.copy()
    mean, invstd = np.zeros(c, np.float32), np.zeros(c, np.float32)
    y = _C.batchnorm_forward(x, gamma, beta, rm, rv, mean, invstd, training=training,
                             momentum=0.2, eps=1e-3)
    ey, erm, erv, emean, einv = _ref.batchnorm(x, gamma, beta, rm0, rv0, training, 0.2, 1e-3)
    assert_close(y, ey, 1e-5, 1e-5, "batchnorm forward")
    assert_close(rm, erm, 1e-6, 1e-6, "running_mean")
    assert_close(rv, erv, 1e-6, 1e-6, "running_var")
    assert_close(mean, emean, 1e-6, 1e-6, "save_mean")
    assert_close(invstd, einv, 1e-5, 1e-6, "save_invstd")
    g = rng.standard_normal(shape).astype(np.float32)
    gg, gb = np.full(c, 0.25, np.float32), np.full(c, -0.5, np.float32)
    dx = _C.batchnorm_backward(x, g, gamma, mean, invstd, training=training, grad_weight=gg,
                               grad_bias=gb, beta=1.0)
    edx, edg, edb = _ref.batchnorm_backward(x, g, gamma, mean, invstd, training)
    assert_close(dx, edx, 1e-4, 1e-5, "batchnorm grad_x")
    assert_close(gg, 0.25 + edg, 1e-5, 1e-5, "batchnorm grad_weight")
    assert_close(gb, -0.5 + edb, 1e-5, 1e-5, "batchnorm grad_bias")


@pytest.mark.parametrize("shape", [(2048, 2), (32, 3, 16, 16)], ids=str)
def test_batchnorm_with_a_mean_large_beside_the_spread(shape, rng):
    """1e5 +- 0.01 (float32's spacing there: 0.0078): sums of x and x^2 cancelled to a
    variance 31-78% off, and x scale + shift (x scale near 1e7) lost the output; both now
    as torch's, to the one rounding of the mean to float32 (found by an attack)."""
    c = shape[1]
    x = (1e5 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    mean, invstd = np.zeros(c, np.float32), np.zeros(c, np.float32)
    y = _C.batchnorm_forward(x, None, None, rm, rv, mean, invstd, training=True, momentum=1.0)
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    var = x64.var(axis=axes)
    assert_close(rv, x64.var(axis=axes, ddof=1), 1e-4, 0, "running_var")
    assert_close(invstd, 1 / np.sqrt(var + 1e-5), 1e-4, 0, "save_invstd")
    assert_close(mean, x64.mean(axis=axes), 0, 0.004, "save_mean (to its float32 rounding)")
    shape1 = (1, c) + (1,) * (x.ndim - 2)
    ey = (x64 - mean.reshape(shape1)) * invstd.reshape(shape1).astype(np.float64)
    assert_close(y, ey, 1e-4, 1e-3, "output from the saved mean")
    assert np.allclose(y.std(axis=axes), np.sqrt(var / (var + 1e-5)), rtol=1e-3)


def test_batchnorm_backward_finite_differences(rng):
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    gamma, beta = np.array([1.5, -0.7], np.float32), np.array([0.1, 0.2], np.float32)
    g = rng.standard_normal(x.shape)

    def loss(z):
        y, *_ = _ref.batchnorm(z, gamma, beta, np.zeros(2), np.ones(2), True)
        return float(np.sum(g * y))

    mean, invstd = np.zeros(2, np.float32), np.zeros(2, np.float32)
    _C.batchnorm_forward(x, gamma, beta, np.zeros(2, np.float32), np.ones(2, np.float32), mean,
                         invstd, training=True)
    dx = _C.batchnorm_backward(x, g.astype(np.float32), gamma, mean, invstd, training=True)
    assert_close(dx, central_diff(loss, x), 1e-3, 1e-4, "batchnorm grad_x vs central differences")


def test_batchnorm_bit_identical_with_one_and_two_threads(rng):
    x = rng.standard_normal((16, 40, 9, 9)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out = []
    for threads in (1, 2):
        use_threads(threads)
        rm, rv = np.zeros(40, np.float32), np.ones(40, np.float32)
        mean, inv = np.zeros(40, np.float32), np.zeros(40, np.float32)
        y = _C.batchnorm_forward(x, None, None, rm, rv, mean, inv, training=True)
        gg, gb = np.zeros(40, np.float32), np.zeros(40, np.float32)
        dx = _C.batchnorm_backward(x, g, None, mean, inv, training=True, grad_weight=gg, grad_bias=gb)
        out.append((y, rm, rv, dx, gg, gb))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 5, 4), (3, 2, 37), (9, 150)], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_fused_relu_is_batchnorm_then_relu(shape, training, rng):
    """relu=True gives, bit for bit, activation_forward("relu") of the plain output, and in
    backward (which finds the zeros from x, not from the output) the plain backward of
    activation_backward("relu"); both as the float64 formulas (the relu of the reference, its
    gradient masked where the output is 0). Values at the relu's edge: with beta 0, x = 0 is
    exactly 0 out in evaluation (running mean 0), whose gradient must be masked too."""
    c = shape[1]
    x = (2.0 * rng.standard_normal(shape)).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    beta[0] = 0.0
    x[:, 0].flat[::3] = 0.0
    stats = lambda: (np.zeros(c, np.float32), np.ones(c, np.float32), np.zeros(c, np.float32),  # noqa: E731
                     np.zeros(c, np.float32))
    plain_stats, fused_stats = stats(), stats()
    y = _C.batchnorm_forward(x, gamma, beta, *plain_stats, training=training)
    yr = _C.batchnorm_forward(x, gamma, beta, *fused_stats, training=training, relu=True)
    np.testing.assert_array_equal(yr, _C.activation_forward("relu", y))
    for a, b in zip(plain_stats, fused_stats):
        np.testing.assert_array_equal(a, b)
    ey, *_ = _ref.batchnorm(x, gamma, beta, np.zeros(c), np.ones(c), training)
    assert_close(yr, np.maximum(ey, 0.0), 1e-5, 1e-5, "batchnorm + relu forward")
    assert (yr == 0).any() and (yr > 0).any()
    mean, invstd = plain_stats[2], plain_stats[3]
    g = rng.standard_normal(shape).astype(np.float32)
    grads = [(np.full(c, 0.5, np.float32), np.full(c, -0.5, np.float32)) for _ in range(2)]
    dx = _C.batchnorm_backward(x, _C.activation_backward("relu", yr, g), gamma, mean, invstd,
                               training=training, grad_weight=grads[0][0], grad_bias=grads[0][1], beta=1.0)
    dxr = _C.batchnorm_backward(x, g, gamma, mean, invstd, training=training, grad_weight=grads[1][0],
                                grad_bias=grads[1][1], beta=1.0, relu=True, bias=beta)
    np.testing.assert_array_equal(dxr, dx)
    np.testing.assert_array_equal(grads[1][0], grads[0][0])
    np.testing.assert_array_equal(grads[1][1], grads[0][1])
    edx, edg, edb = _ref.batchnorm_backward(x, np.where(ey > 0, g, 0.0), gamma, mean, invstd, training)
    assert_close(dxr, edx, 1e-4, 1e-5, "batchnorm + relu grad_x")
    assert_close(grads[1][0], 0.5 + edg, 1e-5, 1e-5, "batchnorm + relu grad_weight")
    assert_close(grads[1][1], -0.5 + edb, 1e-5, 1e-5, "batchnorm + relu grad_bias")


def test_batchnorm_names_bad_arguments():
    x = np.ones((4, 3), np.float32)
    c3 = lambda: np.zeros(3, np.float32)  # noqa: E731
    _ref.raises(_C.batchnorm_forward, np.ones((1, 3), np.float32), None, None, c3(), c3(), c3(), c3(),
                training=True, exc=ValueError, mentions=("training",))
    _ref.raises(_C.batchnorm_forward, x, np.ones(4, np.float32), None, c3(), c3(), c3(), c3(),
                training=True, mentions=("weight",))
    _ref.raises(_C.batchnorm_forward, x, None, None, c3(), c3(), c3(), c3(), training=True,
                momentum=1.5, mentions=("momentum",))
    _ref.raises(_C.batchnorm_forward, x, None, None, c3(), c3(), c3(), c3(), training=True,
                eps=0.0, mentions=("eps",))
    _ref.raises(_C.batchnorm_forward, x, None, None, c3().astype(np.float64), c3(), c3(), c3(),
                training=True, mentions=("running_mean",))
    _ref.raises(_C.batchnorm_forward, np.ones(3, np.float32), None, None, c3(), c3(), c3(), c3(),
                training=True, mentions=("x",))
    _ref.raises(_C.batchnorm_backward, x, np.ones((4, 2), np.float32), None, c3(), c3(),
                training=True, mentions=("grad_y",))
    _ref.raises(_C.batchnorm_backward, x, x, None, c3(), c3(), training=True, relu=True,
                bias=np.ones(2, np.float32), mentions=("bias",))
    _ref.raises(_C.batchnorm_backward, x, x, None, c3(), c3(), training=True,
                bias=np.ones(3, np.float32), exc=ValueError, mentions=("bias", "relu"))
