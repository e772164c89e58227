"""Layers and losses: forward and explicit backward against NumPy float64 references
(computed with the layers' own float32 weights) and against central finite differences."""

import contextlib
import io

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn

import _ref
from _ref import assert_close, central_diff, f64, sample_indices

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


# ----------------------------------------------------------------------------- devices
def test_to_cpu_is_the_identity():
    from fastnn import nn

    model = nn.Sequential(nn.Dense(3, 4, activation="relu"), nn.Dense(4, 2))
    arrays = [(p.data, p.grad) for p in model.parameters()]
    assert model.to("cpu") is model
    assert all(p.data is d and p.grad is g for p, (d, g) in zip(model.parameters(), arrays))

    class Device:  # what torch.device("cpu") looks like
        type, index = "cpu", None

    assert model[0].to(Device()) is model[0]


@pytest.mark.parametrize("device,error,words", [
    ("cuda", RuntimeError, "FASTNN_CUDA=ON"), ("cuda:0", RuntimeError, "FASTNN_CUDA=ON"),
    ("gpu", ValueError, "'cpu', 'cuda' or 'cuda:N'"), ("cpu:0", ValueError, "not a device"),
    ("cuda:x", ValueError, "not a device"), (0, TypeError, "must be a str"),
])
def test_to_another_device_says_what_this_build_has(device, error, words):
    from fastnn import nn

    model = nn.Sequential(nn.Dense(3, 2))
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
