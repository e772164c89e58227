"""Layers and losses: forward and explicit backward against NumPy float64 references
(computed with the layers' own float32 weights, formulas in _ref) and against central finite
differences; Dense with every activation, ELU/GELU/Softplus, init, L1/L2, Flatten, Dropout,
state_dict / get_config, buffers, devices, and the probabilities-into-logits warnings."""

import contextlib
import io
import json
import math
import re
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import _C, init, losses, nn

import _ref
from _ref import assert_close, central_diff, f64, names_argument, sample_indices


DENSE_ACTIVATIONS = [None, "sigmoid", "relu", "tanh", "leaky_relu"]
DENSE_SHAPES = [(1, 1, 1), (7, 5, 3), (129, 128, 127), (128, 7, 129), (1, 129, 7)]


# ----------------------------------------------------------------------------- float64 reference network
class Spec:
    """What a fastnn layer computes, for the float64 reference."""

    def __init__(self, kind, layer, act=None):
        self.kind, self.layer, self.act = kind, layer, act


def dense(in_f, out_f, act=None, **kw):
    layer = nn.Dense(in_f, out_f, activation=act, **kw) if act is not None else nn.Dense(in_f, out_f, **kw)
    return layer, Spec("dense", layer, act)


def act_layer(name):
    cls = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU,
           "softmax": nn.Softmax}[name]
    layer = cls()
    return layer, Spec("softmax" if name == "softmax" else "act", layer, name)


def ref_forward(specs, x):
    h = f64(x)
    cache = []
    for s in specs:
        if s.kind == "dense":
            W = f64(s.layer.weight.data)
            b = f64(s.layer.bias.data) if s.layer.bias is not None else 0.0
            z = h @ W.T + b
            cache.append((h, z))
            h = _ref.act_forward(s.act, z)
        elif s.kind == "act":
            cache.append((h, h))
            h = _ref.act_forward(s.act, h)
        else:
            cache.append((h, None))
            h = _ref.softmax(h)
    return h, cache


def ref_backward(specs, cache, g):
    """Returns (grad wrt input, {id(param): grad})."""
    g = f64(g)
    grads = {}
    for s, (hin, z) in reversed(list(zip(specs, cache))):
        if s.kind == "dense":
            dz = g * _ref.act_derivative(s.act, z)
            grads[id(s.layer.weight)] = dz.T @ hin
            if s.layer.bias is not None:
                grads[id(s.layer.bias)] = dz.sum(axis=0)
            g = dz @ f64(s.layer.weight.data)
        elif s.kind == "act":
            g = g * _ref.act_derivative(s.act, hin)
        else:
            g = _ref.softmax_backward(_ref.softmax(hin), g)
    return g, grads


def kink_pattern(specs, x):
    """Signs of every relu/leaky_relu input: FD steps must not cross them."""
    _, cache = ref_forward(specs, x)
    parts = [(z > 0).ravel() for s, (h, z) in zip(specs, cache)
             if s.act in ("relu", "leaky_relu") and z is not None]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def params_of(specs):
    out = []
    for s in specs:
        if s.kind == "dense":
            out.append(("weight", s.layer.weight))
            if s.layer.bias is not None:
                out.append(("bias", s.layer.bias))
    return out


def check_against_reference(model, specs, x, g, what, rtol=2e-4):
    y = model(x)
    ref_y, cache = ref_forward(specs, x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32, f"{what}: forward output {type(y)}"
    assert_close(y, ref_y, rtol, 1e-5 * (np.abs(ref_y).max() + 1e-30), f"{what}: forward")
    gx = model.backward(g)
    ref_gx, ref_grads = ref_backward(specs, cache, g)
    assert isinstance(gx, np.ndarray) and gx.shape == x.shape, f"{what}: backward returned {type(gx)}"
    assert_close(gx, ref_gx, rtol, 1e-5 * (np.abs(ref_gx).max() + 1e-30), f"{what}: grad input")
    for name, p in params_of(specs):
        assert isinstance(p.grad, np.ndarray) and p.grad.shape == p.data.shape and p.grad.dtype == np.float32
        r = ref_grads[id(p)]
        assert_close(p.grad, r, rtol, 1e-5 * (np.abs(r).max() + 1e-30), f"{what}: grad {name}")
    return ref_gx, ref_grads


def fd_check_float32(model, specs, x, g, eps=1e-2, rtol=3e-2, atol=3e-3, n_points=12, seed=0):
    """Float32 central differences of sum(g * model(x)) against model.backward."""
    rng = np.random.default_rng(seed)
    g64 = f64(g)

    def objective():
        return float(np.sum(g64 * f64(model(x))))

    model(x)
    for p in model.parameters():
        p.grad[...] = 0
    gx = model.backward(g.astype(np.float32)).copy()
    pgrads = [(name, p, p.grad.copy()) for name, p in params_of(specs)]

    def compare(target, analytic, label, base_for_kinks=None):
        flat = target.reshape(-1)
        checked = 0
        for i in sample_indices(rng, flat.size, n_points):
            old = flat[i]
            flat[i] = old + eps
            plus, pat_p = objective(), kink_pattern(specs, x)
            flat[i] = old - eps
            minus, pat_m = objective(), kink_pattern(specs, x)
            flat[i] = old
            if not np.array_equal(pat_p, pat_m):
                continue  # the step crosses a relu kink
            fd = (plus - minus) / (2 * eps)
            a = float(analytic.reshape(-1)[i])
            assert abs(fd - a) <= atol + rtol * abs(fd), f"{label}[{i}]: backward {a}, finite difference {fd}"
            checked += 1
        assert checked > 0, f"{label}: every FD step crossed a kink"

    compare(x, gx, "grad input")
    for name, p, pg in pgrads:
        compare(p.data, pg, f"grad {name}")


# ----------------------------------------------------------------------------- Dense
@pytest.mark.parametrize("act", DENSE_ACTIVATIONS, ids=str)
@pytest.mark.parametrize("m,n_in,n_out", DENSE_SHAPES, ids=str)
def test_dense_forward_backward(act, m, n_in, n_out, rng):
    fastnn.seed(1)
    layer, spec = dense(n_in, n_out, act)
    # Weights at a scale where no activation saturates completely.
    layer.weight.data[...] = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    layer.bias.data[...] = 0.1 * rng.standard_normal(n_out)
    x = rng.standard_normal((m, n_in)).astype(np.float32)
    g = rng.standard_normal((m, n_out)).astype(np.float32)
    layer.zero_grad()
    check_against_reference(layer, [spec], x, g, f"Dense({n_in},{n_out},{act}) m={m}")


@pytest.mark.parametrize("act", DENSE_ACTIVATIONS, ids=str)
def test_dense_finite_differences(act, rng):
    fastnn.seed(2)
    layer, spec = dense(4, 3, act)
    layer.weight.data[...] = rng.uniform(-1, 1, (3, 4))
    layer.bias.data[...] = rng.uniform(-0.5, 0.5, 3)
    x = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    g = rng.standard_normal((5, 3)).astype(np.float32)
    fd_check_float32(layer, [spec], x, g, n_points=12)


def test_dense_without_bias(rng):
    layer, spec = dense(6, 4, "tanh", bias=False)
    assert layer.bias is None
    assert len(list(layer.parameters())) == 1
    x = rng.standard_normal((7, 6)).astype(np.float32)
    g = rng.standard_normal((7, 4)).astype(np.float32)
    check_against_reference(layer, [spec], x, g, "Dense(bias=False)")


def test_dense_parameter_shapes_like_torch_linear():
    layer = nn.Dense(5, 3)
    assert layer.weight.data.shape == (3, 5)
    assert layer.bias.data.shape == (3,)
    for p in (layer.weight, layer.bias):
        assert isinstance(p, nn.Parameter)
        assert p.data.dtype == np.float32 and p.data.flags.c_contiguous
        assert p.grad is not None and p.grad.shape == p.data.shape and p.grad.dtype == np.float32
    params = list(layer.parameters())
    assert len(params) == 2 and params[0] is layer.weight and params[1] is layer.bias
    assert np.any(layer.weight.data != 0), "weights must be initialised randomly, not zero"
    assert np.all(np.abs(layer.weight.data) < 10)


def test_dense_data_is_shared_with_forward(rng):
    layer = nn.Dense(3, 2)
    W = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], np.float32)
    layer.weight.data[...] = W
    layer.bias.data[...] = [0.25, -4.0]
    x = rng.standard_normal((4, 3)).astype(np.float32)
    assert_close(layer(x), f64(x) @ f64(W).T + [0.25, -4.0], 1e-6, 1e-6, "Dense forward with set weights")


def test_dense_init_is_seeded():
    fastnn.seed(123)
    a = nn.Dense(20, 10).weight.data.copy()
    fastnn.seed(123)
    b = nn.Dense(20, 10).weight.data.copy()
    fastnn.seed(124)
    c = nn.Dense(20, 10).weight.data.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_forward_does_not_modify_input(rng):
    model = nn.Sequential(nn.Dense(5, 4, activation="relu"), nn.Dense(4, 2), nn.Softmax())
    x = rng.standard_normal((7, 5)).astype(np.float32)
    x0 = x.copy()
    y = model(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    g0 = g.copy()
    model.backward(g)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(g, g0)


# ----------------------------------------------------------------------------- activation modules
@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh", "leaky_relu", "softmax"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (129, 128)], ids=str)
def test_activation_module(name, shape, rng):
    layer, spec = act_layer(name)
    assert list(layer.parameters()) == []
    x = (2.0 * rng.standard_normal(shape)).astype(np.float32)
    x[np.abs(x) < 1e-3] = 0.5
    g = rng.standard_normal(shape).astype(np.float32)
    check_against_reference(layer, [spec], x, g, f"{type(layer).__name__} {shape}")


@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh", "leaky_relu", "softmax"])
def test_activation_module_finite_differences(name, rng):
    layer, spec = act_layer(name)
    x = rng.uniform(-2, 2, (4, 5)).astype(np.float32)
    g = rng.standard_normal((4, 5)).astype(np.float32)
    fd_check_float32(layer, [spec], x, g, n_points=20)


# ----------------------------------------------------------------------------- Sequential
def build_deep(seed=3):
    fastnn.seed(seed)
    parts = [dense(6, 9, "tanh"), dense(9, 8), act_layer("relu"), dense(8, 7, "sigmoid"),
             dense(7, 6, "leaky_relu"), act_layer("tanh"), dense(6, 5, "relu"), act_layer("leaky_relu"),
             act_layer("sigmoid"), dense(5, 4), act_layer("softmax")]
    layers = [p[0] for p in parts]
    specs = [p[1] for p in parts]
    return nn.Sequential(*layers), specs


def test_sequential_against_float64_reference(rng):
    model, specs = build_deep()
    x = rng.standard_normal((13, 6)).astype(np.float32)
    g = rng.standard_normal((13, 4)).astype(np.float32)
    model.zero_grad()
    ref_gx, ref_grads = check_against_reference(model, specs, x, g, "Sequential")
    # Sanity check of the reference itself, in float64, away from relu kinks.
    idx = np.arange(0, x.size, 7)
    fd = central_diff(lambda z: float(np.sum(f64(g) * ref_forward(specs, z)[0])), x, 1e-6, idx)
    assert_close(ref_gx.reshape(-1)[idx], fd.reshape(-1)[idx], 1e-4, 1e-8, "float64 reference vs FD")


def test_sequential_parameters_order():
    model, specs = build_deep()
    params = list(model.parameters())
    expected = [p for _, p in params_of(specs)]
    assert len(params) == len(expected) == 12
    assert all(a is b for a, b in zip(params, expected))


def test_sequential_finite_differences_float32(rng):
    fastnn.seed(4)
    parts = [dense(3, 5, "tanh"), dense(5, 4, "sigmoid"), dense(4, 2)]
    model = nn.Sequential(*[p[0] for p in parts])
    specs = [p[1] for p in parts]
    x = rng.uniform(-1, 1, (6, 3)).astype(np.float32)
    g = rng.standard_normal((6, 2)).astype(np.float32)
    fd_check_float32(model, specs, x, g, n_points=10)


def test_sequential_with_relu_finite_differences_float32(rng):
    fastnn.seed(5)
    parts = [dense(3, 6, "relu"), dense(6, 4, "leaky_relu"), dense(4, 3), act_layer("softmax")]
    model = nn.Sequential(*[p[0] for p in parts])
    specs = [p[1] for p in parts]
    x = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
    g = rng.standard_normal((5, 3)).astype(np.float32)
    fd_check_float32(model, specs, x, g, n_points=12)


# ----------------------------------------------------------------------------- accumulation, zero_grad
def test_gradients_accumulate_and_zero_grad_clears(rng):
    fastnn.seed(6)
    parts = [dense(5, 7, "tanh"), dense(7, 3, "relu"), dense(3, 2)]
    model = nn.Sequential(*[p[0] for p in parts])
    specs = [p[1] for p in parts]
    x1, x2 = (rng.standard_normal((4, 5)).astype(np.float32) for _ in range(2))
    g1, g2 = (rng.standard_normal((4, 2)).astype(np.float32) for _ in range(2))
    model.zero_grad()
    for p in model.parameters():
        assert np.all(p.grad == 0)
    model(x1)
    model.backward(g1)
    model(x2)
    model.backward(g2)
    _, r1 = ref_backward(specs, ref_forward(specs, x1)[1], g1)
    _, r2 = ref_backward(specs, ref_forward(specs, x2)[1], g2)
    for name, p in params_of(specs):
        expected = r1[id(p)] + r2[id(p)]
        assert_close(p.grad, expected, 2e-4, 1e-5 * np.abs(expected).max(), f"accumulated grad {name}")
    # same batch twice -> exactly twice the gradient
    model.zero_grad()
    model(x1)
    model.backward(g1)
    once = [p.grad.copy() for p in model.parameters()]
    model(x1)
    model.backward(g1)
    for p, o in zip(model.parameters(), once):
        assert_close(p.grad, 2.0 * f64(o), 1e-6, 1e-7, "twice the same gradient")
    model.zero_grad()
    for p in model.parameters():
        assert np.all(p.grad == 0), "zero_grad left non-zero gradients"


# ----------------------------------------------------------------------------- loss modules
def loss_check(loss_fn, pred, target, ref_fn, what, rng, n_fd=12):
    loss = loss_fn(pred, target)
    assert isinstance(loss, float), f"{what}: returned {type(loss).__name__}, expected float"
    exp_loss, exp_grad = ref_fn(pred, target)
    assert abs(loss - exp_loss) <= 2e-5 * abs(exp_loss) + 1e-6, f"{what}: loss {loss} != {exp_loss}"
    grad = loss_fn.backward()
    assert isinstance(grad, np.ndarray) and grad.shape == np.shape(pred), f"{what}: backward shape"
    scale = float(np.abs(exp_grad).max())
    assert_close(grad, exp_grad, 1e-5, 1e-6 * scale, f"{what}: backward")
    # Central differences of the float64 loss ...
    idx = sample_indices(rng, pred.size, n_fd)
    fd = central_diff(lambda p: ref_fn(p, target)[0], pred, 1e-6, idx)
    assert_close(grad.reshape(-1)[idx], fd.reshape(-1)[idx], 1e-3, 1e-4 * scale, f"{what}: vs float64 FD")
    # ... and of fastnn's own loss value, in float32 with a large step (small inputs only:
    # the float32 rounding of the loss value is divided by the step).
    if pred.size > 64:
        return
    eps = 1e-2
    p32 = np.array(pred, dtype=np.float32)
    flat = p32.reshape(-1)
    for i in idx:
        old = flat[i]
        flat[i] = old + eps
        lp = loss_fn(p32, target)
        flat[i] = old - eps
        lm = loss_fn(p32, target)
        flat[i] = old
        fd32 = (lp - lm) / (2 * eps)
        rounding = 8 * _ref.EPS32 * np.sqrt(pred.size) * (abs(lp) + abs(lm)) / (2 * eps)
        a = grad.reshape(-1)[i]
        assert abs(fd32 - a) <= 2e-2 * abs(fd32) + 2e-3 * scale + rounding, \
            f"{what}[{i}]: backward {a}, float32 FD of the loss {fd32}"


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (129, 2)], ids=str)
def test_mse_module(shape, rng):
    pred = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    loss_check(losses.MSE(), pred, target, _ref.mse, f"MSE {shape}", rng)


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (33, 3)], ids=str)
def test_bce_module_from_logits(shape, rng):
    z = (2 * rng.standard_normal(shape)).astype(np.float32)
    t = (rng.random(shape) < 0.5).astype(np.float32)
    loss_check(losses.BinaryCrossEntropy(from_logits=True), z, t, _ref.bce_logits, f"BCE logits {shape}", rng)
    loss_check(losses.BinaryCrossEntropy(), z, t, _ref.bce_logits, f"BCE default {shape}", rng)


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (33, 3)], ids=str)
def test_bce_module_from_probabilities(shape, rng):
    p = rng.uniform(0.05, 0.95, shape).astype(np.float32)
    t = (rng.random(shape) < 0.5).astype(np.float32)
    loss_check(losses.BinaryCrossEntropy(from_logits=False), p, t, _ref.bce_probs, f"BCE probs {shape}", rng)


@pytest.mark.parametrize("m,classes", [(1, 2), (7, 10), (129, 3)])
def test_cross_entropy_module_integer_labels(m, classes, rng):
    logits = (2 * rng.standard_normal((m, classes))).astype(np.float32)
    labels = rng.integers(0, classes, size=m)
    loss_check(losses.CrossEntropy(), logits, labels, _ref.cross_entropy, f"CrossEntropy {m}x{classes}", rng)


@pytest.mark.parametrize("m,classes", [(1, 2), (7, 10), (129, 3)])
def test_cross_entropy_module_one_hot(m, classes, rng):
    logits = (2 * rng.standard_normal((m, classes))).astype(np.float32)
    onehot = _ref.one_hot(rng.integers(0, classes, size=m), classes).astype(np.float32)
    loss_check(losses.CrossEntropy(), logits, onehot, _ref.cross_entropy_soft, f"CrossEntropy one-hot {m}x{classes}", rng)


def test_loss_then_model_backward_end_to_end(rng):
    """model -> CrossEntropy -> backward: parameter gradients against the float64 chain rule."""
    fastnn.seed(7)
    parts = [dense(4, 6, "tanh"), dense(6, 3)]
    model = nn.Sequential(*[p[0] for p in parts])
    specs = [p[1] for p in parts]
    x = rng.standard_normal((9, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=9)
    model.zero_grad()
    loss_fn = losses.CrossEntropy()
    logits = model(x)
    loss = loss_fn(logits, y)
    model.backward(loss_fn.backward())
    out, cache = ref_forward(specs, x)
    exp_loss, g = _ref.cross_entropy(out, y)
    assert abs(loss - exp_loss) <= 1e-5 * exp_loss
    _, ref_grads = ref_backward(specs, cache, g)
    for name, p in params_of(specs):
        r = ref_grads[id(p)]
        assert_close(p.grad, r, 2e-4, 1e-5 * np.abs(r).max(), f"end-to-end grad {name}")


# ----------------------------------------------------------------------------- summary, modes
def test_summary_reports_parameter_counts():
    model = nn.Sequential(nn.Dense(64, 128, activation="relu"), nn.Dense(128, 10))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ret = model.summary()
    text = (ret if isinstance(ret, str) else "") + buf.getvalue()
    assert "9610" in text.replace(",", "").replace("_", "").replace(" ", ""), text
    assert "8320" in text.replace(",", "").replace("_", ""), text
    assert "1290" in text.replace(",", "").replace("_", ""), text


def test_train_eval_modes_do_not_change_dense_output(rng):
    model = nn.Sequential(nn.Dense(5, 4, activation="tanh"), nn.Dense(4, 2))
    x = rng.standard_normal((3, 5)).astype(np.float32)
    model.eval()
    a = model(x).copy()
    model.train()
    b = model(x).copy()
    np.testing.assert_array_equal(a, b)


def test_an_empty_batch_goes_through_every_layer_as_in_pytorch():
    model = nn.Sequential(nn.Flatten(), nn.Dense(6, 4, activation="relu"), nn.Dropout(0.5),
                          nn.Dense(4, 3), nn.Softmax())
    out = model(np.zeros((0, 3, 2), np.float32))
    assert out.shape == (0, 3) and out.dtype == np.float32
    grad = model.backward(np.zeros((0, 3), np.float32))
    assert grad.shape == (0, 3, 2)
    with pytest.raises(ValueError, match="no classes"):
        fastnn._C.softmax_forward(np.zeros((2, 0), np.float32))


def test_conv2d_on_an_empty_batch_leaves_beta_times_its_weight_gradient(rng):
    """No images: the weight's gradient is beta times what it held (zero after zero_grad),
    never the partial sums of a batch before (the kernel had added none and read them)."""
    layer = nn.Conv2d(3, 4, 3)
    layer(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    layer.backward(np.ones((2, 4, 6, 6), np.float32))
    layer.zero_grad()
    assert layer(np.zeros((0, 3, 8, 8), np.float32)).shape == (0, 4, 6, 6)
    assert layer.backward(np.zeros((0, 4, 6, 6), np.float32)).shape == (0, 3, 8, 8)
    assert not layer.weight.grad.any() and not layer.bias.grad.any()
    for beta in (0.0, 0.5):
        grad_weight = np.full((2, 2, 3, 3), 2.0, np.float32)
        _C.conv2d_backward(np.zeros((0, 2, 5, 5), np.float32), np.ones((2, 2, 3, 3), np.float32),
                           np.zeros((0, 2, 3, 3), np.float32), grad_weight, beta=beta,
                           input_grad=False)
        np.testing.assert_array_equal(grad_weight, np.full((2, 2, 3, 3), 2.0 * beta, np.float32))


@pytest.mark.parametrize("reset", ["weight", "bias"])
def test_batchnorm_accumulates_when_only_one_parameter_was_reset(reset, rng):
    """weight.zero_grad() alone (or bias's): the reset gradient is the new one, the other the
    sum of both batches' (the kernel takes one beta for both)."""
    x = rng.standard_normal((8, 3)).astype(np.float32)
    g = rng.standard_normal((8, 3)).astype(np.float32)
    bn = nn.BatchNorm1d(3)
    bn(x)
    bn.backward(g)
    once = {"weight": bn.weight.grad.copy(), "bias": bn.bias.grad.copy()}
    getattr(bn, reset).grad[...] = np.inf   # what the reset must not read (0 * inf is NaN)
    getattr(bn, reset).zero_grad()
    bn(x)
    bn.backward(g)
    for name in ("weight", "bias"):
        want = once[name] if name == reset else 2 * once[name]
        np.testing.assert_allclose(getattr(bn, name).grad, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [lambda: nn.LeakyReLU(-0.5), lambda: nn.ELU(-1.0),
                                  lambda: nn.LeakyReLU(float("nan"))],
                         ids=["leaky_relu", "elu", "nan"])
def test_activations_refuse_a_negative_slope_whose_backward_would_be_wrong(make):
    with pytest.raises(ValueError, match=">= 0"):
        make()
    y = np.array([[1.0, 0.5]], np.float32)   # leaky_relu(-0.5) of [-2, -1]: y > 0, x < 0
    with pytest.raises(ValueError, match="alpha >= 0"):
        _C.activation_backward("leaky_relu", y, np.ones_like(y), -0.5)


# ----------------------------------------------------------------------------- devices
def test_to_cpu_is_the_identity():
    from fastnn import nn

    model = nn.Sequential(nn.Dense(3, 4, activation="relu"), nn.Dense(4, 2))
    arrays = [(p.data, p.grad) for p in model.parameters()]
    assert model.to("cpu") is model and model.to("cpu:0") is model  # torch's name for it too
    assert all(p.data is d and p.grad is g for p, (d, g) in zip(model.parameters(), arrays))

    class Device:  # what torch.device("cpu") looks like
        type, index = "cpu", None

    assert model[0].to(Device()) is model[0]


@pytest.mark.parametrize("device,error,words", [
    ("cuda", RuntimeError, "FASTNN_CUDA=ON"), ("cuda:0", RuntimeError, "FASTNN_CUDA=ON"),
    ("gpu", ValueError, "'cpu', 'cuda' or 'cuda:N'"), ("cpu:1", ValueError, "not a device"),
    ("cuda:", ValueError, "not a device"),
    ("cuda:x", ValueError, "not a device"), (0, TypeError, "(a str)"),
])
def test_to_another_device_says_what_this_build_has(device, error, words):
    from fastnn import nn

    cuda = fastnn._C.cuda_info()
    model = nn.Sequential(nn.Dense(3, 2))
    if error is RuntimeError and cuda["available"]:  # a GPU: the model moves there
        assert model.to(device) is model
        assert all(p.data.device == "cuda:0" for p in model.parameters())
        return
    if error is RuntimeError and cuda["built"]:  # the CUDA build says why not
        words = cuda["reason"]
    with pytest.raises(error) as err:
        model.to(device)
    assert words in str(err.value) and "Sequential.to" in str(err.value)


# ----------------------------------------------------------------------------- buffers
class RunningMean(nn.Module):
    """A layer with state that is not trained, as BatchNorm's running statistics: the mean
    of its inputs, a count (int64, as torch's num_batches_tracked) and a scratch buffer that
    is not saved."""

    def __init__(self, features=3):
        super().__init__()
        self.register_buffer("running_mean", np.zeros(features, np.float32))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        self.register_buffer("scratch", np.ones(2, np.float32), persistent=False)
        self.register_buffer("unused", None)

    def forward(self, x):
        self.running_mean = 0.9 * self.running_mean + 0.1 * x.mean(axis=0)
        self.num_batches_tracked += 1
        return x

    def backward(self, grad_out, input_grad=True):
        return grad_out if input_grad else None


def buffered_model():
    return nn.Sequential(nn.Dense(3, 3), RunningMean(3), nn.Dense(3, 2))


def test_buffers_are_listed_saved_and_loaded_under_torch_names():
    model = buffered_model()
    assert [name for name, _ in model.named_buffers()] == [
        "1.running_mean", "1.num_batches_tracked", "1.scratch"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                        "1.running_mean", "1.num_batches_tracked"]
    x1, x2 = np.ones((4, 3), np.float32), np.full((4, 3), 3.0, np.float32)
    h1, h2 = model[0](x1).mean(axis=0), model[0](x2).mean(axis=0)  # what RunningMean sees
    model(x1)
    model(x2)
    state = model.state_dict()
    np.testing.assert_allclose(state["1.running_mean"], 0.9 * 0.1 * h1 + 0.1 * h2, rtol=1e-5)
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"] == 2
    assert model[1].running_mean is not state["1.running_mean"]  # a copy
    other = buffered_model()
    other.load_state_dict(state)
    for (name, a), (_, b) in zip(model.named_buffers(persistent_only=True),
                                 other.named_buffers(persistent_only=True)):
        np.testing.assert_array_equal(a, b, err_msg=name)
    with pytest.raises(ValueError, match="missing keys.*num_batches_tracked"):
        other.load_state_dict({k: v for k, v in state.items() if "num_batches" not in k})
    with pytest.raises(ValueError, match="running_mean.*shape"):
        other.load_state_dict({**state, "1.running_mean": np.zeros(4)})


def test_buffers_survive_save_and_load(tmp_path):
    pytest.importorskip("safetensors")
    from fastnn import io as fio

    model = buffered_model()
    model(np.arange(12, dtype=np.float32).reshape(4, 3))
    model.save(tmp_path / "m.safetensors")
    other = fio.load_weights(buffered_model(), tmp_path / "m.safetensors")
    np.testing.assert_array_equal(other[1].running_mean, model[1].running_mean)
    assert other[1].num_batches_tracked == 1 and other[1].num_batches_tracked.dtype == np.int64


def test_buffers_are_moved_counted_and_checked():
    from fastnn import memory

    model = buffered_model()
    before = model.buffers()
    assert model.to("cpu") is model and all(a is b for a, b in zip(model.buffers(), before))
    assert all(memory.is_aligned(b) for b in before)
    table = model.summary((3,), print_fn=None)
    assert "Buffers (not trained): 6 values" in table  # 3 + 1 + 2
    assert "Buffers" not in nn.Sequential(nn.Dense(3, 2)).summary((3,), print_fn=None)
    layer = RunningMean()
    with pytest.raises(ValueError, match="identifier"):
        layer.register_buffer("a.b", np.zeros(1))
    dense = nn.Dense(2, 2)
    with pytest.raises(ValueError, match="already a parameter"):
        dense.register_buffer("weight", np.zeros(1))


def test_every_backward_takes_input_grad():
    """Module.backward(grad, input_grad=True) everywhere: with False, nothing is returned."""
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    layers = [nn.Dense(6, 6), nn.Dropout(0.5, seed=1), nn.Flatten(), nn.ReLU(), nn.Sigmoid(),
              nn.Tanh(), nn.Softmax(), RunningMean(6), nn.Sequential(nn.Dense(6, 6), nn.ReLU())]
    for layer in layers:
        y = layer(x)
        assert layer.backward(np.ones_like(y), input_grad=False) is None, layer
        assert layer.backward(np.ones_like(y)).shape == x.shape, layer


DENSE_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
ALL_ACTIVATIONS = [None, "linear", "sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu", "softplus"]
SMOOTH = {None, "linear", "sigmoid", "tanh", "elu", "gelu", "softplus"}


def away_from_zero(rng, shape, low=0.05, high=2.0):
    """Values with |v| in [low, high]: finite-difference steps never cross a kink at 0."""
    return (rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def fd_check(module, x, rng, eps=1e-2, rtol=1e-2, atol=1e-3, count=12, penalty=False):
    """Float32 central differences of sum(g * module(x)) (+ the L1/L2 penalty) with respect
    to the input and every parameter, against module.backward."""
    x = np.array(x, np.float32)
    g = rng.standard_normal(module(x).shape)
    module.zero_grad()
    gx = module.backward(g.astype(np.float32)).copy()
    targets = [("input", x, gx)] + [(n, p.data, p.grad.copy()) for n, p in module.named_parameters()]

    def objective():
        value = float(np.sum(g * f64(module(x))))
        return value + module.regularization_loss() if penalty else value

    for label, arr, analytic in targets:
        flat = arr.reshape(-1)
        for i in sample_indices(rng, flat.size, count):
            old = flat[i]
            flat[i] = old + eps
            plus = objective()
            flat[i] = old - eps
            minus = objective()
            flat[i] = old
            fd = (plus - minus) / (2 * eps)
            a = float(analytic.reshape(-1)[i])
            assert abs(fd - a) <= atol + rtol * abs(fd), f"{module!r} grad {label}[{i}]: backward {a}, FD {fd}"


# ----------------------------------------------------------------------------- activation layers
NEW_ACTIVATIONS = [(nn.ELU, "elu", {}), (nn.ELU, "elu", {"alpha": 0.5}), (nn.GELU, "gelu", {}),
                   (nn.Softplus, "softplus", {})]


@pytest.mark.parametrize("cls,name,kw", NEW_ACTIVATIONS, ids=["elu", "elu-0.5", "gelu", "softplus"])
@pytest.mark.parametrize("shape", [(1,), (7, 5), (3, 127), (2, 3, 4)], ids=str)
def test_activation_layer_against_formula(cls, name, kw, shape, rng):
    layer = cls(**kw)
    alpha = kw.get("alpha", 1.0)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    x.reshape(-1)[:4] = np.array([-30.0, 30.0, 0.0, -1e-3], np.float32)[: x.size]
    g = rng.standard_normal(shape).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == shape
    assert_close(y, _ref.act_forward(name, x, alpha), 1e-5, 1e-6, f"{layer!r} forward")
    assert_close(layer.backward(g), g * _ref.act_derivative(name, x, alpha), 1e-4, 1e-6, f"{layer!r} backward")


@pytest.mark.parametrize("cls,name,kw", NEW_ACTIVATIONS, ids=["elu", "elu-0.5", "gelu", "softplus"])
def test_activation_layer_finite_differences(cls, name, kw, rng):
    fd_check(cls(**kw), away_from_zero(rng, (6, 5)), rng)


def test_activation_layers_against_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = (3 * rng.standard_normal((9, 11))).astype(np.float32)
    t = torch.tensor(x)
    for layer, expected in [(nn.ELU(0.7), F.elu(t, 0.7)), (nn.GELU(), F.gelu(t, approximate="tanh")),
                            (nn.Softplus(), F.softplus(t))]:
        assert_close(layer(x), expected.numpy().astype(np.float64), 1e-5, 1e-6, f"{layer!r} vs torch")


# ----------------------------------------------------------------------------- Dense, every activation
def dense_reference(layer, x, g, name):
    """(y, grad x, grad W, grad b) in float64 with the layer's own float32 weights."""
    alpha = DENSE_ALPHA.get(name, 0.0)
    W, b = f64(layer.weight.data), f64(layer.bias.data)
    z = f64(x) @ W.T + b
    dz = f64(g) * _ref.act_derivative(name, z, alpha)
    return _ref.act_forward(name, z, alpha), dz @ W, dz.T @ f64(x), dz.sum(axis=0)


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=str)
@pytest.mark.parametrize("m,n_in,n_out", [(1, 1, 1), (7, 5, 3), (129, 33, 127)], ids=str)
def test_dense_every_activation_against_formula(act, m, n_in, n_out, rng):
    layer = nn.Dense(n_in, n_out, activation=act)
    layer.weight.data[...] = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    layer.bias.data[...] = 0.1 * rng.standard_normal(n_out)
    x = rng.standard_normal((m, n_in)).astype(np.float32)
    g = rng.standard_normal((m, n_out)).astype(np.float32)
    y_ref, gx_ref, gw_ref, gb_ref = dense_reference(layer, x, g, act)
    what = f"Dense({n_in},{n_out},{act}) m={m}"
    assert_close(layer(x), y_ref, 2e-4, 1e-5, f"{what} forward")
    assert_close(layer.backward(g), gx_ref, 2e-4, 1e-4, f"{what} grad x")
    assert_close(layer.weight.grad, gw_ref, 2e-4, 1e-4, f"{what} grad W")
    assert_close(layer.bias.grad, gb_ref, 2e-4, 1e-4, f"{what} grad b")


@pytest.mark.parametrize("act", sorted(a for a in SMOOTH if a), ids=str)
def test_dense_smooth_activation_finite_differences(act, rng):
    layer = nn.Dense(4, 3, activation=act)
    layer.weight.data[...] = rng.uniform(-1, 1, (3, 4))
    layer.bias.data[...] = rng.uniform(-0.5, 0.5, 3)
    fd_check(layer, rng.uniform(-1, 1, (5, 4)), rng)


@pytest.mark.parametrize("act,cls", [("elu", nn.ELU), ("gelu", nn.GELU), ("softplus", nn.Softplus)])
def test_dense_activation_equals_separate_layer(act, cls, rng):
    fastnn.seed(3)
    fused = nn.Dense(6, 4, activation=act)
    plain = nn.Dense(6, 4)
    plain.load_state_dict(fused.state_dict())
    model = nn.Sequential(plain, cls())
    x = rng.standard_normal((5, 6)).astype(np.float32)
    g = rng.standard_normal((5, 4)).astype(np.float32)
    assert_close(fused(x), f64(model(x)), 1e-6, 1e-6, f"Dense({act}) forward")
    assert_close(fused.backward(g), f64(model.backward(g)), 1e-5, 1e-6, f"Dense({act}) backward")
    assert_close(fused.weight.grad, f64(plain.weight.grad), 1e-5, 1e-6, f"Dense({act}) grad W")


def test_dense_activation_names_are_case_insensitive_and_checked():
    assert nn.Dense(2, 2, activation="GELU").activation == "gelu"
    assert nn.Dense(2, 2, activation="linear").activation == "identity"
    with pytest.raises(ValueError) as info:
        nn.Dense(2, 2, activation="swish")
    assert "swish" in str(info.value) and "gelu" in str(info.value)


# ----------------------------------------------------------------------------- initialisers
FAN_IN, FAN_OUT = 300, 500
SHAPE = (FAN_OUT, FAN_IN)
INIT_STATS = {  # name -> (distribution, scale: std for normal, limit for uniform)
    "xavier_uniform": ("uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "glorot_uniform": ("uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "xavier_normal": ("normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "glorot_normal": ("normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "he_uniform": ("uniform", math.sqrt(6 / FAN_IN)),
    "kaiming_uniform": ("uniform", math.sqrt(6 / FAN_IN)),
    "he_normal": ("normal", math.sqrt(2 / FAN_IN)),
    "kaiming_normal": ("normal", math.sqrt(2 / FAN_IN)),
    "normal": ("normal", 0.05),
    "uniform": ("uniform", 0.05),
}


def check_distribution(w, kind, scale, what):
    n = w.size
    w = f64(w)
    std = scale if kind == "normal" else scale / math.sqrt(3)
    assert abs(w.mean()) < 5 * std / math.sqrt(n), f"{what}: mean {w.mean()}"
    assert abs(w.std() / std - 1) < 0.02, f"{what}: std {w.std()}, expected {std}"
    if kind == "uniform":
        assert np.abs(w).max() <= scale * (1 + 1e-6), f"{what}: exceeds the limit {scale}"
        assert np.abs(w).max() > 0.99 * scale, f"{what}: never reaches the limit {scale}"
    else:
        kurtosis = np.mean((w / w.std()) ** 4)
        assert abs(kurtosis - 3) < 0.1, f"{what}: kurtosis {kurtosis} is not a normal's"


@pytest.mark.parametrize("name", list(INIT_STATS))
def test_init_distributions(name):
    w = init.get(name)(SHAPE, FAN_IN, FAN_OUT, np.random.default_rng(0))
    assert w.dtype == np.float32 and w.shape == SHAPE
    check_distribution(w, *INIT_STATS[name], name)


def test_init_aliases_and_factories():
    assert init.glorot_uniform is init.xavier_uniform and init.kaiming_normal is init.he_normal
    rng = np.random.default_rng(0)
    assert np.all(init.zeros((3, 4), 4, 3, rng) == 0)
    assert np.all(init.constant(0.25)((3, 4), 4, 3, rng) == np.float32(0.25))
    check_distribution(init.normal(0.3)(SHAPE, FAN_IN, FAN_OUT, rng), "normal", 0.3, "normal(0.3)")
    check_distribution(init.uniform(2.0)(SHAPE, FAN_IN, FAN_OUT, rng), "uniform", 2.0, "uniform(2)")
    assert init.get("He_Normal") is init.he_normal
    fn = init.constant(1.0)
    assert init.get(fn) is fn
    with pytest.raises(ValueError) as info:
        init.get("lecun")
    assert "lecun" in str(info.value) and "he_normal" in str(info.value)
    with pytest.raises(ValueError) as info:
        init.normal(-1.0)
    assert names_argument(str(info.value), "std")


@pytest.mark.parametrize("act,kind", [("relu", "he_normal"), ("leaky_relu", "he_normal"), ("elu", "he_normal"),
                                      ("gelu", "he_normal"), ("sigmoid", "xavier_uniform"),
                                      ("tanh", "xavier_uniform"), ("softplus", "xavier_uniform"),
                                      (None, "xavier_uniform")])
def test_dense_default_init_per_activation(act, kind):
    fastnn.seed(0)
    layer = nn.Dense(FAN_IN, FAN_OUT, activation=act)
    check_distribution(layer.weight.data, *INIT_STATS[kind], f"Dense({act}) default init")
    assert np.all(layer.bias.data == 0)


def test_dense_init_argument_and_seed():
    calls = []

    def custom(shape, fan_in, fan_out, rng):
        calls.append((shape, fan_in, fan_out))
        return np.full(shape, 0.5)

    layer = nn.Dense(4, 3, init=custom)
    assert calls == [((3, 4), 4, 3)] and np.all(layer.weight.data == 0.5)
    assert np.all(nn.Dense(4, 3, init="zeros").weight.data == 0)
    fastnn.seed(7)
    a = nn.Dense(20, 10, init="he_uniform").weight.data
    fastnn.seed(7)
    b = nn.Dense(20, 10, init="he_uniform").weight.data
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError) as info:
        nn.Dense(4, 3, init=lambda shape, fi, fo, rng: np.zeros((2, 2)))
    assert "shape" in str(info.value)


# ----------------------------------------------------------------------------- L1 / L2
@pytest.mark.parametrize("l1,l2", [(0.01, 0.0), (0.0, 0.05), (0.02, 0.03)])
def test_dense_penalty_gradient_and_loss(l1, l2, rng):
    layer = nn.Dense(6, 4, activation="tanh", l1=l1, l2=l2)
    layer.weight.data[...] = away_from_zero(rng, (4, 6), high=1.0)
    layer.bias.data[...] = away_from_zero(rng, 4)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    g = rng.standard_normal((5, 4)).astype(np.float32)
    W = f64(layer.weight.data)
    _, gx_ref, gw_ref, gb_ref = dense_reference(layer, x, g, "tanh")
    layer(x)
    assert_close(layer.backward(g), gx_ref, 2e-4, 1e-5, "grad x (no penalty term)")
    assert_close(layer.weight.grad, gw_ref + l1 * np.sign(W) + 2 * l2 * W, 2e-4, 1e-5, "grad W with penalty")
    assert_close(layer.bias.grad, gb_ref, 2e-4, 1e-5, "grad b (bias is not penalised)")
    expected = l1 * np.abs(W).sum() + l2 * (W ** 2).sum()
    assert abs(layer.regularization_loss() - expected) <= 1e-6 * expected
    # The penalty's value and gradient agree: finite differences of data loss + penalty.
    fd_check(layer, x, rng, penalty=True)


def test_regularization_loss_sums_over_the_model(rng):
    model = nn.Sequential(nn.Dense(5, 4, activation="relu", l2=0.1), nn.Dropout(0.1),
                          nn.Dense(4, 3, l1=0.2), nn.Dense(3, 2))
    w0, w2 = f64(model[0].weight.data), f64(model[2].weight.data)
    expected = 0.1 * (w0 ** 2).sum() + 0.2 * np.abs(w2).sum()
    assert abs(model.regularization_loss() - expected) <= 1e-6 * expected
    assert nn.Dense(3, 2).regularization_loss() == 0.0
    assert nn.ReLU().regularization_loss() == 0.0


def test_add_penalty_grad_kernel(rng):
    for size in (1, 7, 127, 100003):
        w = rng.standard_normal(size).astype(np.float32)
        grad = rng.standard_normal(size).astype(np.float32)
        expected_grad = f64(grad) + 0.3 * np.sign(w) + 2 * 0.2 * f64(w)
        value = _C.add_penalty_grad(w, grad, 0.3, 0.2)
        assert_close(grad, expected_grad, 1e-6, 1e-6, f"add_penalty_grad size={size}")
        expected = 0.3 * np.abs(f64(w)).sum() + 0.2 * (f64(w) ** 2).sum()
        assert abs(value - expected) <= 1e-6 * expected


def test_penalty_arguments_are_checked():
    for kw in (dict(l1=-0.1), dict(l2=float("nan"))):
        with pytest.raises(ValueError) as info:
            nn.Dense(2, 2, **kw)
        assert names_argument(str(info.value), *kw)


# ----------------------------------------------------------------------------- Flatten
def test_flatten_forward_backward(rng):
    layer = nn.Flatten()
    x = rng.standard_normal((4, 3, 5, 2)).astype(np.float32)
    y = layer(x)
    np.testing.assert_array_equal(y, x.reshape(4, 30))
    g = rng.standard_normal((4, 30)).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), g.reshape(4, 3, 5, 2))
    assert layer.output_shape((None, 3, 5, 2)) == (None, 30)
    with pytest.raises(ValueError):
        layer.backward(g[:, :29])


def test_flatten_in_a_model_finite_differences(rng):
    model = nn.Sequential(nn.Flatten(), nn.Dense(12, 5, activation="tanh"), nn.Dense(5, 3))
    fd_check(model, rng.standard_normal((4, 3, 4)), rng)
    assert model.output_shape((None, 3, 4)) == (None, 3)


# ----------------------------------------------------------------------------- Dropout
def test_dropout_statistics_and_backward(rng):
    p, n = 0.3, 200_000
    layer = nn.Dropout(p)
    x = rng.uniform(0.5, 1.5, n).astype(np.float32)
    y = layer(x)
    kept = y != 0
    assert abs(1 - kept.mean() - p) < 5 * math.sqrt(p * (1 - p) / n), f"dropped fraction {1 - kept.mean()}"
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(1 - p), rtol=1e-6)
    assert abs(f64(y).mean() / f64(x).mean() - 1) < 0.01, "inverted dropout keeps the expectation"
    g = rng.standard_normal(n).astype(np.float32)
    gx = layer.backward(g)
    np.testing.assert_allclose(gx, np.where(kept, g / np.float32(1 - p), 0), rtol=1e-6)


def test_dropout_masks_follow_the_counter_based_stream(rng):
    layer = nn.Dropout(0.4, seed=1234)
    x = np.ones((6, 50), np.float32)
    for offset in (0, 300, 600):
        assert layer.offset == offset
        y = layer(x)
        mask = _C.random_uniform(x.size, 1234, offset).reshape(x.shape) >= 0.4
        np.testing.assert_array_equal(y != 0, mask)
    assert layer.offset == 900


def test_dropout_and_augment_offsets_wrap_at_2_64_as_the_kernel_s_counter(tmp_path):
    """Past 2**64 the next forward failed, and the model could no longer be saved and loaded
    (found by an attack); the stream goes on across the wrap, and a failed call leaves it."""
    layer = nn.Dropout(0.5, seed=1, offset=2**64 - 10)
    x = np.ones((2, 3, 4, 4), np.float32)
    first = layer(x)
    assert layer.offset == 86
    second = layer(x)
    mask = _C.random_uniform(x.size, 1, 86).reshape(x.shape) >= 0.5
    np.testing.assert_array_equal(second != 0, mask)
    head = _C.random_uniform(10, 1, 2**64 - 10) >= 0.5  # the draws before the wrap
    np.testing.assert_array_equal((first != 0).reshape(-1)[:10], head)
    model = nn.Sequential(layer)
    model.save(tmp_path / "m.safetensors")
    assert fastnn.load(tmp_path / "m.safetensors")[0].offset == layer.offset
    with pytest.raises(TypeError):
        layer(np.array([["a"]]))
    assert layer.offset == 182
    augment = fastnn.data.Augment((1, 4, 4), max_shift=1, seed=3)
    augment.offset = 2**64 - 1
    augment(np.ones((2, 16), np.float32))
    assert 0 <= augment.offset < 2**64


def test_dropout_is_identity_in_eval_mode(rng):
    model = nn.Sequential(nn.Dropout(0.5))
    x = rng.standard_normal((8, 9)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model(x), x)
    g = rng.standard_normal((8, 9)).astype(np.float32)
    np.testing.assert_array_equal(model.backward(g), g)
    assert model[0].offset == 0, "eval forwards do not advance the stream"
    model.train()
    assert np.any(model(x) == 0)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


def test_dropout_seed_reproducible_and_thread_independent(rng):
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    outputs = []
    for threads in (1, 4):
        _ref.use_threads(threads)
        fastnn.seed(11)
        layer = nn.Dropout(0.5)
        outputs.append([layer(x), layer(x)])
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])
    assert not np.array_equal(outputs[0][0], outputs[0][1]), "each forward draws a new mask"
    fastnn.seed(12)
    assert not np.array_equal(nn.Dropout(0.5)(x), outputs[0][0]), "another seed, another mask"


def test_dropout_arguments_are_checked():
    for p in (-0.1, 1.0, 1.5, 1 - 2**-26):  # the last is 1.0 in float32: nothing kept
        with pytest.raises(ValueError) as info:
            nn.Dropout(p)
        assert names_argument(str(info.value), "p")
    nn.Dropout(1 - 2**-24)  # the largest p: one chance in 2**24 to keep
    layer = nn.Dropout(1 - 2**-20, seed=1)  # the kept ones are scaled 2**20 (about 4 here)
    y = layer(np.ones(2**22, np.float32))
    assert set(np.unique(y)) == {0.0, 2.0**20}
    with pytest.raises(RuntimeError):
        nn.Dropout(0.5).backward(np.ones(3))


# ----------------------------------------------------------------------------- state_dict
def test_state_dict_names_and_loading_match_torch(rng):
    torch = pytest.importorskip("torch")
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                 torch.nn.Linear(8, 3), torch.nn.Tanh())
    model = nn.Sequential(nn.Dense(5, 8), nn.ReLU(), nn.Dropout(0.2), nn.Dense(8, 3), nn.Tanh())
    tstate = tmodel.state_dict()
    state = model.state_dict()
    assert list(state) == list(tstate) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert all(state[k].shape == tuple(tstate[k].shape) for k in state)
    model.load_state_dict(tstate)
    tmodel.eval()
    model.eval()
    x = rng.standard_normal((7, 5)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.tensor(x)).numpy()
    assert_close(model(x), f64(expected), 1e-5, 1e-6, "fastnn with torch's weights")
    # And back: fastnn's state_dict loads into torch.
    model[0].weight.data[...] += 1.0
    tmodel.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert_close(model(x), f64(tmodel(torch.tensor(x)).numpy()), 1e-5, 1e-6, "torch with fastnn's weights")


def test_state_dict_copies_and_load_checks(rng):
    model = nn.Sequential(nn.Dense(3, 4, activation="relu"), nn.Dense(4, 2, bias=False))
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight"]
    state["0.weight"][...] = 7.0
    assert not np.any(model[0].weight.data == 7.0), "state_dict returns copies"
    before = model.state_dict()
    bad_cases = [
        ({k: v for k, v in state.items() if k != "0.bias"}, ValueError, "0.bias"),
        ({**state, "2.weight": np.zeros((1, 2))}, ValueError, "2.weight"),
        ({**state, "1.weight": np.zeros((2, 5))}, ValueError, "1.weight"),
        ({**state, "0.bias": np.array(["a"] * 4)}, TypeError, "0.bias"),
    ]
    for bad, exc, key in bad_cases:
        with pytest.raises(exc) as info:
            model.load_state_dict(bad)
        assert key in str(info.value)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, before[k], err_msg="a failed load must change nothing")
    weight = model[0].weight.data
    model.load_state_dict(state)
    assert model[0].weight.data is weight and np.all(weight == 7.0), "loaded in place"


# ----------------------------------------------------------------------------- get_config
def every_layer_model():
    return nn.Sequential(
        nn.Flatten(), nn.Dense(12, 16, activation="gelu", init="he_uniform", l2=1e-3),
        nn.Dropout(0.25), nn.Dense(16, 8, activation="elu", l1=1e-4), nn.ELU(0.5),
        nn.Dense(8, 8, activation="softplus", bias=False), nn.LeakyReLU(0.2), nn.GELU(),
        nn.Softplus(), nn.Dense(8, 8, activation="leaky_relu"), nn.Sigmoid(), nn.Tanh(), nn.ReLU(),
        nn.Dense(8, 3), nn.Softmax())


def test_get_config_round_trip(rng):
    fastnn.seed(0)
    model = every_layer_model()
    config = model.get_config()
    assert json.loads(json.dumps(config)) == config, "the config is JSON-serialisable"
    assert [e["class"] for e in config["layers"]][:4] == ["Flatten", "Dense", "Dropout", "Dense"]
    assert config["layers"][1]["config"] == {"in_features": 12, "out_features": 16, "activation": "gelu",
                                             "bias": True, "init": "he_uniform", "l1": 0.0, "l2": 1e-3}
    rebuilt = nn.Sequential.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert [type(a) for a in rebuilt] == [type(b) for b in model]
    rebuilt.load_state_dict(model.state_dict())
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    model.eval()
    rebuilt.eval()
    np.testing.assert_array_equal(rebuilt(x), model(x))
    model.train()
    rebuilt.train()
    np.testing.assert_array_equal(rebuilt(x), model(x), err_msg="same dropout seed, same masks")
    for layer in model:
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize("config", [
    {"layers": [{"class": "Parameter", "config": {"data": [1.0]}}]},
    {"layers": [{"class": "__class__", "config": {}}]},
    {"layers": [{"class": "os.system", "config": {}}, {"class": "Dense"}]},
    {"layers": [{"class": "Dense", "config": [3, 2]}]},
    {"layers": "Dense"},
    ["Dense"],
])
def test_from_config_rejects_what_is_not_a_fastnn_layer(config):
    with pytest.raises(ValueError) as info:
        nn.Sequential.from_config(config)
    assert "from_config" in str(info.value)


# ----------------------------------------------------------------------------- probabilities into from-logits losses
def caught(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in record]


def test_cross_entropy_warns_once_on_probabilities(rng):
    logits = rng.standard_normal((16, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    probs = nn.Softmax()(logits)
    loss = losses.CrossEntropy()
    messages = caught(lambda: [loss(probs, labels) for _ in range(3)])
    assert len(messages) == 1 and "Softmax" in messages[0], messages
    assert caught(lambda: losses.CrossEntropy()(logits, labels)) == []
    uniform_rows = np.full((16, 4), 0.3, np.float32)  # in [0, 1] but rows sum to 1.2
    assert caught(lambda: losses.CrossEntropy()(uniform_rows, labels)) == []


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_bce_from_probabilities_refuses_values_outside_0_1(bad, rng):
    """As torch: a model without its final sigmoid gave a NaN loss and gradients of 1e11."""
    p = rng.uniform(0.1, 0.9, (6, 1)).astype(np.float32)
    p[3, 0] = bad
    with pytest.raises(ValueError, match=rf"BinaryCrossEntropy\(from_logits=False\) takes "
                                         rf"probabilities in \[0, 1\].*prediction of {bad}.*sigmoid"):
        losses.BinaryCrossEntropy(from_logits=False)(p, np.ones((6, 1), np.float32))
    p[3, 0] = np.nan  # a diverged model's output: through, for fit to report
    assert np.isnan(losses.BinaryCrossEntropy(from_logits=False)(p, np.ones((6, 1), np.float32)))


def test_bce_from_logits_warns_on_sigmoid_outputs(rng):
    z = rng.standard_normal((32, 1)).astype(np.float32)
    t = rng.integers(0, 2, (32, 1))
    p = nn.Sigmoid()(z)
    messages = caught(lambda: losses.BinaryCrossEntropy()(p, t))
    assert len(messages) == 1 and "from_logits=False" in messages[0], messages
    assert caught(lambda: losses.BinaryCrossEntropy(from_logits=False)(p, t)) == []
    assert caught(lambda: losses.BinaryCrossEntropy()(z, t)) == []


# ----------------------------------------------------------------------------- convolutional layers
# (batch, in, h, w, out, kernel, stride, padding, dilation, groups): batch 1, one channel, odd
# images such as 7x5, kernels 1/3/5/7, strides 1/2/3, paddings 0/1/2/"same", dilation 2, groups 1,
# 2 and depthwise (with a channel multiplier of 1 and 2).
CONV_CASES = [(1, 1, 7, 5, 2, 3, 1, 0, 1, 1), (2, 3, 7, 5, 4, 3, 2, 1, 1, 1),
              (2, 2, 9, 8, 3, 5, 1, "same", 1, 1), (1, 3, 8, 7, 2, 7, 1, "same", 1, 1),
              (3, 4, 8, 8, 6, 3, 3, 2, 2, 2), (2, 4, 6, 7, 4, 3, 1, 1, 1, 4),
              (2, 3, 7, 6, 6, 3, 2, 1, 1, 3), (2, 2, 6, 6, 5, 1, 1, 0, 1, 1),
              (1, 2, 11, 9, 2, 3, 1, "same", 2, 1), (2, 3, 5, 5, 3, 5, 1, "valid", 1, 1)]
CONV_IDS = [f"b{c[0]}_{c[1]}x{c[2]}x{c[3]}_to{c[4]}_k{c[5]}s{c[6]}p{c[7]}d{c[8]}g{c[9]}" for c in CONV_CASES]


def conv_layer(case, activation=None, bias=True):
    b, cin, h, w, cout, k, s, p, d, g = case
    return nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias,
                     activation=activation)


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_against_float64_reference(case, activation, rng):
    fastnn.seed(1)
    layer = conv_layer(case, activation)
    layer.bias.data[...] = rng.standard_normal(layer.out_channels)
    x = rng.standard_normal(case[:4]).astype(np.float32)
    y = layer(x)
    z = _ref.conv2d(x, layer.weight.data, layer.bias.data, layer.stride, layer.padding,
                    layer.dilation, layer.groups)
    assert y.shape == z.shape == layer.output_shape(x.shape)
    assert_close(y, _ref.act_forward(activation, z), 1e-5, 1e-5, f"{layer!r} forward")
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(g)
    dz = f64(g) * _ref.act_derivative(activation, z)
    # the float64 gradients, through the reference's im2col
    col, _ = _ref.im2col(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    rows = dz.transpose(0, 2, 3, 1).reshape(-1, layer.out_channels)
    og, k = layer.out_channels // layer.groups, col.shape[1] // layer.groups
    dw = np.concatenate([rows[:, i * og:(i + 1) * og].T @ col[:, i * k:(i + 1) * k]
                         for i in range(layer.groups)]).reshape(layer.weight.shape)
    assert_close(layer.weight.grad, dw, 1e-4, 1e-4, f"{layer!r} weight.grad")
    assert_close(layer.bias.grad, rows.sum(axis=0), 1e-4, 1e-4, f"{layer!r} bias.grad")
    fd = central_diff(lambda v: float(np.sum(f64(g) * _ref.act_forward(activation, _ref.conv2d(
        v, layer.weight.data, layer.bias.data, layer.stride, layer.padding, layer.dilation,
        layer.groups)))), x)
    assert_close(dx, fd, 1e-3, 1e-3, f"{layer!r} backward vs central differences")


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_against_torch(case, rng):
    torch = pytest.importorskip("torch")
    layer = conv_layer(case, bias=case[9] != 2)
    x = rng.standard_normal(case[:4]).astype(np.float32)
    tconv = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                            stride=layer.stride, padding=case[7], dilation=layer.dilation,
                            groups=layer.groups, bias=layer.bias is not None)
    tconv.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    xt = torch.tensor(x, requires_grad=True)
    yt = tconv(xt)
    assert_close(layer(x), yt.detach().numpy(), 1e-5, 1e-5, f"{layer!r} vs torch")
    g = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    assert_close(layer.backward(g), xt.grad.numpy(), 1e-5, 1e-5, f"{layer!r} dx vs torch")
    assert_close(layer.weight.grad, tconv.weight.grad.numpy(), 1e-4, 1e-5, "weight.grad vs torch")


@pytest.mark.parametrize("groups", [1, 4, 32])
def test_conv2d_default_init_counts_fans_as_torch_nn_init(groups):
    # Glorot uniform (no activation): a = sqrt(6 / (fan_in + fan_out)), torch's fans:
    # fan_in = in_channels / groups * kh * kw, fan_out = out_channels * kh * kw
    fastnn.seed(0)
    w = nn.Conv2d(32, 64, 3, groups=groups).weight.data
    a = np.sqrt(6.0 / (32 // groups * 9 + 64 * 9))
    assert np.abs(w).max() <= a * (1 + 1e-6)
    assert np.abs(w).max() > 0.9 * a
    assert np.std(w) == pytest.approx(a / np.sqrt(3), rel=0.1)


@pytest.mark.parametrize("layer_cls,kw,torch_fn", [
    (nn.MaxPool2d, dict(kernel_size=2), "max_pool2d"), (nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1), "max_pool2d"),
    (nn.MaxPool2d, dict(kernel_size=(3, 2), stride=(1, 2)), "max_pool2d"),
    (nn.AvgPool2d, dict(kernel_size=2), "avg_pool2d"), (nn.AvgPool2d, dict(kernel_size=3, stride=1, padding=1), "avg_pool2d"),
    (nn.AvgPool2d, dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)), "avg_pool2d")])
@pytest.mark.parametrize("shape", [(1, 1, 7, 5), (3, 2, 8, 9)], ids=str)
def test_pooling_layers_against_torch(layer_cls, kw, torch_fn, shape, rng):
    torch = pytest.importorskip("torch")
    layer = layer_cls(**kw)
    x = rng.standard_normal(shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, torch_fn)(xt, **kw)
    y = layer(x)
    assert y.shape == tuple(yt.shape) == layer.output_shape(shape)
    assert_close(y, yt.detach().numpy(), 1e-6, 1e-6, f"{layer!r}")
    g = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    assert_close(layer.backward(g), xt.grad.numpy(), 1e-6, 1e-6, f"{layer!r} backward")
    assert layer.backward(g, input_grad=False) is None


def test_global_avg_pool_and_reshape(rng):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    gap = nn.GlobalAvgPool2d()
    y = gap(x)
    assert_close(y, f64(x).mean(axis=(2, 3)), 1e-6, 1e-6, "GlobalAvgPool2d")
    g = rng.standard_normal(y.shape).astype(np.float32)
    assert_close(gap.backward(g), np.broadcast_to(f64(g)[:, :, None, None] / 30, x.shape), 1e-6, 1e-7,
                 "GlobalAvgPool2d backward")
    r = nn.Reshape((1, -1, 3))
    flat = rng.standard_normal((2, 12)).astype(np.float32)
    assert r(flat).shape == (2, 1, 4, 3) and r.output_shape((None, 12)) == (None, 1, 4, 3)
    np.testing.assert_array_equal(r.backward(np.ones((2, 1, 4, 3), np.float32)), np.ones((2, 12)))
    with pytest.raises(ValueError, match="cannot be reshaped|do not fill"):
        nn.Reshape((5, 5))(flat)
    with pytest.raises(ValueError, match="shape"):
        nn.Reshape((-1, -1))


@pytest.mark.parametrize("cls,shape", [("BatchNorm2d", (8, 3, 5, 4)), ("BatchNorm1d", (16, 3)),
                                       ("BatchNorm1d", (6, 3, 7))], ids=str)
def test_batchnorm_matches_torch_over_50_steps(cls, shape, rng):
    torch = pytest.importorskip("torch")
    bn, tbn = getattr(nn, cls)(3, momentum=0.1), getattr(torch.nn, cls)(3)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(rng.standard_normal(3)))
        tbn.bias.copy_(torch.tensor(rng.standard_normal(3)))
    bn.load_state_dict({k: v.numpy() for k, v in tbn.state_dict().items()})
    topt = torch.optim.SGD(tbn.parameters(), lr=0.05)
    from fastnn import optim
    opt = optim.SGD(bn.parameters(), lr=0.05)
    for step in range(50):
        x = (rng.standard_normal(shape) * 3 + step / 10).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        xt = torch.tensor(x, requires_grad=True)
        yt = tbn(xt)
        yt.backward(torch.tensor(g))
        topt.step()
        topt.zero_grad()
        assert_close(bn(x), yt.detach().numpy(), 1e-4, 1e-5, f"{cls} step {step}")
        assert_close(bn.backward(g), xt.grad.numpy(), 1e-4, 1e-5, f"{cls} dx step {step}")
        opt.step()
        opt.zero_grad()
    ours = bn.state_dict()
    assert list(ours) == list(tbn.state_dict())
    for name, value in tbn.state_dict().items():
        assert_close(ours[name], value.numpy(), 1e-4, 1e-6, f"{cls} {name} after 50 steps")
    bn.eval(), tbn.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    assert_close(bn(x), tbn(torch.tensor(x)).detach().numpy(), 1e-4, 1e-5, f"{cls} evaluation")


@pytest.mark.parametrize("norm,shape", [("BatchNorm2d", (4, 3, 5, 4)), ("BatchNorm1d", (8, 3))], ids=str)
@pytest.mark.parametrize("relu_last", [False, True])
def test_sequential_fuses_relu_into_batchnorm_bit_for_bit(norm, shape, relu_last, rng):
    """A ReLU layer after a batch norm is computed by it, forward and backward (a ReLU
    subclass is not), with what the layers give one by one, bit for bit, in training and in
    evaluation; the ReLU layer still holds its output (diagnostics read it)."""
    class MyReLU(nn.ReLU):
        pass

    def model():
        tail = [] if relu_last else [nn.Flatten(), nn.Dense(int(np.prod(shape[1:])), 2)]
        return nn.Sequential(nn.BatchNorm2d(3) if norm == "BatchNorm2d" else nn.BatchNorm1d(3),
                             nn.ReLU(), getattr(nn, norm)(3), MyReLU(), *tail)

    fused, apart = model(), model()
    apart.load_state_dict(fused.state_dict())
    for step, training in enumerate([True, True, False]):
        fused.train(training), apart.train(training)
        x = (rng.standard_normal(shape) + step).astype(np.float32)
        y = fused(x)
        assert fused._fused == {0}
        h = x
        for layer in apart.layers:
            h = layer.forward(h)
        np.testing.assert_array_equal(y, h)
        np.testing.assert_array_equal(fused.layers[1].last_output, apart.layers[1].last_output)
        g = rng.standard_normal(y.shape).astype(np.float32)
        fused.zero_grad(), apart.zero_grad()
        dx = fused.backward(g)
        for layer in reversed(apart.layers):
            g = layer.backward(g)
        np.testing.assert_array_equal(dx, g)
        for (name, p), q in zip(fused.named_parameters(), apart.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
        for (name, b), c in zip(fused.named_buffers(), apart.buffers()):
            np.testing.assert_array_equal(b, c, err_msg=name)


def lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2, activation="relu"), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5, activation="relu"), nn.AvgPool2d(2),
                         nn.BatchNorm2d(16), nn.Flatten(), nn.Dense(400, 32, activation="relu"),
                         nn.Dense(32, 10))


def torch_lenet(torch):
    t = torch.nn
    return t.Sequential(t.Conv2d(1, 6, 5, padding=2), t.ReLU(), t.MaxPool2d(2), t.Conv2d(6, 16, 5),
                        t.ReLU(), t.AvgPool2d(2), t.BatchNorm2d(16), t.Flatten(), t.Linear(400, 32),
                        t.ReLU(), t.Linear(32, 10))


def test_torch_cnn_state_dict_loads_one_to_one_and_back(rng):
    torch = pytest.importorskip("torch")
    tmodel = torch_lenet(torch)
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    tmodel.train()
    tmodel(torch.tensor(x))  # moves the running statistics
    tmodel.eval()
    # torch's names skip its ReLU layers; fastnn fuses them into the layers before
    names = {"0": "0", "3": "2", "6": "4", "8": "6", "10": "7"}
    state = {f"{names[k.split('.')[0]]}.{k.split('.', 1)[1]}": v.numpy()
             for k, v in tmodel.state_dict().items()}
    model = lenet()
    model.load_state_dict(state)
    model.eval()
    assert_close(model.predict(x), tmodel(torch.tensor(x)).detach().numpy(), 1e-5, 1e-5, "LeNet vs torch")
    back = torch_lenet(torch)
    back.load_state_dict({k: torch.tensor(model.state_dict()[f"{names[k.split('.')[0]]}.{k.split('.', 1)[1]}"])
                          for k in back.state_dict()})
    back.eval()
    assert_close(back(torch.tensor(x)).detach().numpy(), model.predict(x), 1e-5, 1e-5, "and back")


def test_cnn_summary_save_load_and_fit(tmp_path, rng):
    pytest.importorskip("safetensors")
    fastnn.seed(0)
    model = nn.Sequential(nn.Reshape((1, 28, 28)), *lenet().layers)
    table = model.summary((784,), print_fn=None)
    assert "(None, 6, 28, 28)" in table and "(None, 16, 5, 5)" in table and "(None, 400)" in table
    assert "Buffers (not trained): 33 values" in table  # BatchNorm2d(16): 16 + 16 + 1
    X = rng.random((64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    model.compile(loss="cross_entropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "cnn.safetensors")
    again = fastnn.load(tmp_path / "cnn.safetensors")
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert again[5].num_batches_tracked == model[5].num_batches_tracked == 8


@pytest.mark.parametrize("build,shape,words", [
    (lambda: nn.Conv2d(3, 4, 5), (2, 3, 4, 4), ["4x4", "Conv2d"]),
    (lambda: nn.Conv2d(3, 4, 3), (2, 2, 8, 8), ["(batch, 3, height, width)", "(2, 2, 8, 8)"]),
    (lambda: nn.MaxPool2d(3), (1, 1, 2, 2), ["2x2", "MaxPool2d"]),
    (lambda: nn.BatchNorm2d(3), (2, 4, 5, 5), ["3 channels", "(2, 4, 5, 5)"]),
    (lambda: nn.BatchNorm1d(3), (2, 3, 4, 4), ["2 or 3-D", "(2, 3, 4, 4)"]),
])
def test_image_layers_name_bad_inputs(build, shape, words):
    layer = build()
    with pytest.raises(ValueError) as err:
        layer(np.ones(shape, np.float32))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_image_layers_reject_bad_constructions():
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=3"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="stride 1"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="even"):
        nn.Conv2d(3, 4, 2, padding="same")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match="half the kernel"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm2d(3, momentum=2.0)


def test_batch_norm_repr_shows_its_settings_and_an_empty_sequential_is_the_identity():
    """summary() showed BatchNorm2d(4) for any eps, momentum or affine; an empty
    Sequential's backward raised IndexError."""
    assert repr(nn.BatchNorm2d(4, eps=1e-3, momentum=0.3, affine=False)) == \
        "BatchNorm2d(4, eps=0.001, momentum=0.3, affine=False)"
    assert repr(nn.BatchNorm1d(3)) == "BatchNorm1d(3)"
    assert repr(nn.BatchNorm1d(3, momentum=None)) == "BatchNorm1d(3, momentum=None)"
    empty = nn.Sequential()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(empty(x), x)
    g = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(empty.backward(g), g)
    assert empty.backward(g, input_grad=False) is None


def test_load_state_dict_refuses_values_it_would_change():
    """1e300 became inf (with only NumPy's cast warning), 2.7 batches became 2, -5 was taken;
    nothing is changed when one value is refused."""
    model = nn.Sequential(nn.Dense(2, 2), nn.BatchNorm1d(2))
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    before = {k: v.copy() for k, v in state.items()}
    for name, value, message in [("0.weight", np.full((2, 2), 1e300), "holds 1e+300, beyond float32's range"),
                                 ("1.num_batches_tracked", np.array(2.7), "counts, so it takes whole numbers >= 0"),
                                 ("1.num_batches_tracked", np.array(-5), "whole numbers >= 0"),
                                 # beyond int64 (had wrapped to a negative count; an attack found it)
                                 ("1.num_batches_tracked", np.array(2**63 + 5, np.uint64), "beyond int64's range"),
                                 ("1.num_batches_tracked", np.array(1e30), "beyond int64's range"),
                                 ("1.num_batches_tracked", np.array(2.0**63), "beyond int64's range")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            model.load_state_dict({**state, name: value})
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, before[k])
    model.load_state_dict({**state, "1.num_batches_tracked": np.array(7.0), "0.weight": np.full((2, 2), -3e38)})
    assert int(model.state_dict()["1.num_batches_tracked"]) == 7
    model.load_state_dict({**state, "1.num_batches_tracked": np.array(2**63 - 1, np.uint64)})
    assert int(model.state_dict()["1.num_batches_tracked"]) == 2**63 - 1


def test_a_model_run_calls_a_forward_or_backward_set_on_the_layer_or_its_subclass(rng):
    """A model runs a built-in layer's workspace-aware passes only where neither is replaced:
    a function set on the instance (as a hook is set in a notebook), or a subclass's method,
    is what the model calls."""
    calls = []

    class Logged(nn.Dense):
        def backward(self, grad_out, input_grad=True):
            calls.append("subclass backward")
            return super().backward(grad_out, input_grad)

    first, second = nn.Dense(4, 3, activation="relu"), Logged(3, 2)
    plain_forward = first.forward
    first.forward = lambda x: (calls.append("instance forward"), plain_forward(x))[1]
    model = nn.Sequential(first, second)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    assert calls == ["instance forward", "subclass backward"]
    np.testing.assert_array_equal(y, second.forward(first.forward(x)))


def test_a_layer_in_a_list_of_lists_is_refused_as_parameters_cannot_reach_it():
    """Found by an attack: compile and fit checked one level of containers only; layers
    in a list of lists got gradients from a backward of one's own but were never updated
    nor saved, silently."""
    class Hand(nn.Module):
        def __init__(self, stages):
            super().__init__()
            self.inp = nn.Dense(4, 8, activation="relu")
            self.stages = stages
            self.out = nn.Dense(8, 3)

        def forward(self, x):
            return self.out(self.inp(x))

    for stages, where in (([[nn.Dense(8, 8)]], r"stages\[0\]\[0\]"),
                          ((nn.Dense(8, 8), [nn.Dense(8, 8)]), r"stages\[1\]\[0\]"),
                          ([{"a": nn.Parameter(np.ones(2, np.float32))}], r"stages\[0\]\['a'\]")):
        with pytest.raises(ValueError, match=where + ".*where parameters\\(\\) does not look"):
            Hand(stages).compile("cross_entropy", "sgd")
    looped = [nn.Dense(8, 8)]
    looped.append(looped)  # a list holding itself: checked, not followed forever
    Hand(looped).compile("cross_entropy", "sgd")  # its Dense is an item of the list itself
    assert len(Hand(looped).parameters()) == 6


def test_a_forward_put_back_on_the_instance_is_not_an_override(rng):
    """Review: a spy set on layer.forward and then removed by assigning the saved bound
    method left the layer 'overridden' for good (no workspace, no batch norm + ReLU fusion)."""
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Dense(3, 4), bn, nn.ReLU())
    saved = bn.forward
    bn.forward = lambda x: saved(x)
    bn.forward = saved
    model(rng.standard_normal((5, 3)).astype(np.float32))
    assert model._fused == frozenset({1})
