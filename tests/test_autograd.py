"""Models with their own forward (``class M(nn.Module)`` with only ``forward``): the backward
the recorder derives, against float64 central differences of independent NumPy forwards
and against torch autograd with the same weights; the errors for what it cannot
differentiate; training, saving and explain_backward."""

import re
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn import nn
from fastnn.io import InvalidFileError

from _ref import assert_close, central_diff, conv2d, sigmoid, softmax


# ----------------------------------------------------------------------------- the models
class Branching(nn.Module):
    """Two heads on the same input, side by side, then a softmax."""

    def __init__(self):
        super().__init__()
        self.a = nn.Dense(6, 5)
        self.b = nn.Dense(6, 4)
        self.out = nn.Dense(9, 3)

    def forward(self, x):
        h = fnn.concat([fnn.relu(self.a(x)), fnn.tanh(self.b(x))], axis=1)
        return fnn.softmax(self.out(h))


def branching_ref(p, x):
    h1 = np.maximum(x @ p["a.weight"].T + p["a.bias"], 0.0)
    h2 = np.tanh(x @ p["b.weight"].T + p["b.bias"])
    return softmax(np.concatenate([h1, h2], axis=1) @ p["out.weight"].T + p["out.bias"])


def branching_torch(torch, p, x):
    F = torch.nn.functional
    h1 = torch.relu(F.linear(x, p["a.weight"], p["a.bias"]))
    h2 = torch.tanh(F.linear(x, p["b.weight"], p["b.bias"]))
    return torch.softmax(F.linear(torch.cat([h1, h2], 1), p["out.weight"], p["out.bias"]), 1)


class Residual(nn.Module):
    """h + f(h), then a sigmoid gate computed from h too (h used three times)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Dense(5, 6)
        self.f1 = nn.Dense(6, 6)
        self.f2 = nn.Dense(6, 6)
        self.gate = nn.Dense(6, 6)
        self.out = nn.Dense(6, 2)

    def forward(self, x):
        h = self.inp(x)
        r = fnn.add(h, self.f2(fnn.sigmoid(self.f1(h))))
        return self.out(fnn.mul(r, fnn.sigmoid(self.gate(h))))


def residual_ref(p, x):
    def lin(name, v):
        return v @ p[name + ".weight"].T + p[name + ".bias"]

    h = lin("inp", x)
    r = h + lin("f2", sigmoid(lin("f1", h)))
    return lin("out", r * sigmoid(lin("gate", h)))


def residual_torch(torch, p, x):
    def lin(name, v):
        return torch.nn.functional.linear(v, p[name + ".weight"], p[name + ".bias"])

    h = lin("inp", x)
    r = h + lin("f2", torch.sigmoid(lin("f1", h)))
    return lin("out", r * torch.sigmoid(lin("gate", h)))


class Shared(nn.Module):
    """The same Dense and the same Tanh layer called twice (shared weights)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(4, 4)
        self.act = nn.Tanh()
        self.out = nn.Dense(4, 3)

    def forward(self, x):
        return self.out(self.act(self.fc(self.act(self.fc(x)))))


def shared_ref(p, x):
    for _ in range(2):
        x = np.tanh(x @ p["fc.weight"].T + p["fc.bias"])
    return x @ p["out.weight"].T + p["out.bias"]


def shared_torch(torch, p, x):
    F = torch.nn.functional
    for _ in range(2):
        x = torch.tanh(F.linear(x, p["fc.weight"], p["fc.bias"]))
    return F.linear(x, p["out.weight"], p["out.bias"])


class ConvNet(nn.Module):
    """Rows reshaped into images, a convolution, fnn.flatten, a Dense layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Dense(2 * 4 * 4, 3)

    def forward(self, x):
        h = fnn.relu(self.conv(fnn.reshape(x, (-1, 1, 6, 6))))
        return self.fc(fnn.flatten(h))


def conv_ref(p, x):
    h = np.maximum(conv2d(x.reshape(-1, 1, 6, 6), p["conv.weight"], p["conv.bias"]), 0.0)
    return h.reshape(len(h), -1) @ p["fc.weight"].T + p["fc.bias"]


def conv_torch(torch, p, x):
    h = torch.relu(torch.nn.functional.conv2d(x.reshape(-1, 1, 6, 6), p["conv.weight"],
                                              p["conv.bias"]))
    return torch.nn.functional.linear(h.flatten(1), p["fc.weight"], p["fc.bias"])


OFFSET = np.linspace(-1.0, 1.0, 6).astype(np.float32)  # a constant: no gradient


class Broadcast(nn.Module):
    """A per-sample gate of shape (n, 1) stretched over 6 features, a constant row added,
    a scalar scale: broadcasting's gradients are sums over the stretched axes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(4, 6)
        self.g = nn.Dense(4, 1)

    def forward(self, x):
        h = fnn.mul(self.fc(x), fnn.sigmoid(self.g(x)))
        return fnn.mul(fnn.add(OFFSET, h), 0.5)


def broadcast_ref(p, x):
    gate = sigmoid(x @ p["g.weight"].T + p["g.bias"])
    return 0.5 * (OFFSET + (x @ p["fc.weight"].T + p["fc.bias"]) * gate)


def broadcast_torch(torch, p, x):
    F = torch.nn.functional
    gate = torch.sigmoid(F.linear(x, p["g.weight"], p["g.bias"]))
    return 0.5 * (torch.tensor(OFFSET, dtype=torch.float64)
                  + F.linear(x, p["fc.weight"], p["fc.bias"]) * gate)


MODELS = {
    "broadcast": (Broadcast, broadcast_ref, broadcast_torch, 4),
    "branching": (Branching, branching_ref, branching_torch, 6),
    "residual": (Residual, residual_ref, residual_torch, 5),
    "shared": (Shared, shared_ref, shared_torch, 4),
    "conv": (ConvNet, conv_ref, conv_torch, 36),
}


def backprop(name, seed=0, batch=4):
    """The model, its float64 weights, the input, R (the loss is sum(output * R)) and the
    gradients the recorder gives: {parameter name: grad, "input": grad}."""
    build, _, _, features = MODELS[name]
    fnn.seed(seed)
    model = build()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, features)).astype(np.float32)
    out = model(x)
    r = rng.normal(size=out.shape)
    model.zero_grad()
    grads = {"input": model.backward(r.astype(np.float32))}
    grads.update({k: p.grad.copy() for k, p in model.named_parameters()})
    params = {k: p.data.astype(np.float64) for k, p in model.named_parameters()}
    return model, params, x.astype(np.float64), r, grads


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_match_float64_finite_differences(name):
    model, params, x, r, grads = backprop(name)
    ref = MODELS[name][1]
    assert_close(model(x.astype(np.float32)), ref(params, x), 1e-4, 1e-5, f"{name} forward")

    def loss_of(key):
        def f(value):
            if key == "input":
                return float(np.sum(ref(params, value) * r))
            return float(np.sum(ref({**params, key: value}, x) * r))
        return f

    for key, grad in grads.items():
        start = x if key == "input" else params[key]
        expected = central_diff(loss_of(key), start)
        scale = np.abs(expected).max() + 1e-3
        assert_close(grad, expected, 1e-3, 1e-4 * scale, f"{name}: gradient of {key}")


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_match_torch_autograd(name):
    torch = pytest.importorskip("torch")
    _, params, x, r, grads = backprop(name, seed=1, batch=5)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    (MODELS[name][2](torch, tp, tx) * torch.tensor(r)).sum().backward()
    expected = {"input": tx.grad.numpy(), **{k: t.grad.numpy() for k, t in tp.items()}}
    assert set(expected) == set(grads)
    for key, grad in grads.items():
        scale = np.abs(expected[key]).max() + 1e-3
        assert_close(grad, expected[key], 1e-3, 1e-4 * scale, f"{name}: gradient of {key}")


@pytest.mark.parametrize("name, forward_again", [("residual", True), ("shared", False)])
def test_gradients_accumulate_over_backward_calls_as_a_layer_does(name, forward_again):
    model, _, x, r, grads = backprop(name)
    if forward_again:
        model(x.astype(np.float32))
    # no zero_grad: adds to the first pass's (a second replay of the shared model's tape
    # must recompute the calls whose caches the first replay changed)
    model.backward(r.astype(np.float32))
    for key, p in model.named_parameters():
        assert_close(p.grad, 2 * grads[key].astype(np.float64), 1e-5, 1e-6, key)


class SharedPenalty(nn.Module):
    """A Dense layer with l1 and l2 penalties called twice (shared weights)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(4, 4, activation="tanh", l1=0.05, l2=0.1)
        self.out = nn.Dense(4, 3)

    def forward(self, x):
        return self.out(self.fc(self.fc(x)))


def test_a_shared_layer_s_penalty_gradient_is_added_once_as_the_loss_counts_it():
    fnn.seed(3)
    model = SharedPenalty()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4))
    r = rng.standard_normal((6, 3))
    model(x.astype(np.float32))
    model.backward(r.astype(np.float32))
    grad = model.fc.weight.grad.copy()
    w0 = model.fc.weight.data.astype(np.float64)
    b, wo, bo = (model.fc.bias.data.astype(np.float64), model.out.weight.data.astype(np.float64),
                 model.out.bias.data.astype(np.float64))

    def penalty(w):
        return 0.05 * np.abs(w).sum() + 0.1 * (w * w).sum()

    def loss(w):  # the sum of output * r, plus the penalty once (regularization_loss)
        h = np.tanh(np.tanh(x @ w.T + b) @ w.T + b)
        return float(np.sum((h @ wo.T + bo) * r) + penalty(w))

    assert model.regularization_loss() == pytest.approx(penalty(w0), rel=1e-5)
    expected = central_diff(loss, w0)
    assert_close(grad, expected, 1e-3, 1e-4 * np.abs(expected).max(), "shared penalised weight")
    # a second backward pass without zero_grad adds the data term again, not the penalty
    model(x.astype(np.float32))
    model.backward(r.astype(np.float32))
    penalty_grad = 0.05 * np.sign(w0) + 0.2 * w0
    assert_close(model.fc.weight.grad, 2 * grad - penalty_grad, 1e-4, 1e-5, "accumulated")
    model.zero_grad()  # and the next step adds it again
    model(x.astype(np.float32))
    model.backward(r.astype(np.float32))
    assert_close(model.fc.weight.grad, grad, 1e-5, 1e-6, "after zero_grad")
    # backward passes of their own in between leave the penalty's turn as they found it
    labels = np.array([0, 1, 2, 0, 1, 2])
    model.zero_grad()
    fnn.diagnostics.gradient_check(model, x.astype(np.float32), labels, "cross_entropy")
    model.explain_backward(x.astype(np.float32), labels, print_fn=None)
    model(x.astype(np.float32))
    model.backward(r.astype(np.float32))
    assert_close(model.fc.weight.grad, grad, 1e-5, 1e-6, "after gradient_check and explain_backward")


def test_a_model_of_your_own_inside_another_and_inside_a_sequential():
    torch = pytest.importorskip("torch")

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Residual()
            self.seq = nn.Sequential(nn.Dense(2, 3, activation="tanh"), nn.Dense(3, 2))

        def forward(self, x):
            return fnn.add(self.inner(x), self.seq(self.inner(x)))

    fnn.seed(2)
    model = nn.Sequential(Outer(), nn.Dense(2, 2))
    x = np.random.default_rng(2).normal(size=(3, 5))
    r = np.random.default_rng(3).normal(size=(3, 2))
    model(x)
    model.zero_grad()
    gx = model.backward(r.astype(np.float32))
    tp = {k: torch.tensor(p.data.astype(np.float64), requires_grad=True)
          for k, p in model.named_parameters()}
    F = torch.nn.functional
    inner = {k[len("0.inner."):]: t for k, t in tp.items() if k.startswith("0.inner.")}
    tx = torch.tensor(x, requires_grad=True)
    h = residual_torch(torch, inner, tx)
    s = F.linear(torch.tanh(F.linear(h, tp["0.seq.0.weight"], tp["0.seq.0.bias"])),
                 tp["0.seq.1.weight"], tp["0.seq.1.bias"])
    out = F.linear(h + s, tp["1.weight"], tp["1.bias"])
    (out * torch.tensor(r)).sum().backward()
    assert_close(gx, tx.grad.numpy(), 1e-3, 1e-5, "input")
    for k, p in model.named_parameters():
        assert_close(p.grad, tp[k].grad.numpy(), 1e-3, 1e-5, k)


def test_a_hand_written_backward_wins_over_the_recorder():
    calls = []

    class Scale(nn.Module):  # the lecture's way: forward and backward by hand
        def forward(self, x):
            return 3.0 * np.asarray(x)

        def backward(self, grad_out):
            calls.append(grad_out.shape)
            return 3.0 * grad_out

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 2)
            self.scale = Scale()

        def forward(self, x):
            return self.scale(self.fc(x))

    fnn.seed(0)
    model = Model()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    model(x)
    model.zero_grad()
    gx = model.backward(np.ones((3, 2), np.float32))
    assert calls == [(3, 2)]
    w = model.fc.weight.data.astype(np.float64)
    assert_close(gx, np.full((3, 2), 3.0) @ w, 1e-5, 1e-6, "input gradient")
    assert_close(model.fc.weight.grad, np.full((2, 3), 3.0) @ x, 1e-5, 1e-6, "weight grad")


def test_the_ops_compute_outside_a_recorded_forward_too():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    y = rng.normal(size=(3, 2)).astype(np.float32)
    assert_close(fnn.relu(x), np.maximum(x, 0.0), 0, 0, "relu")
    assert_close(fnn.sigmoid(x), sigmoid(x), 1e-6, 1e-7, "sigmoid")
    assert_close(fnn.tanh(x), np.tanh(x.astype(np.float64)), 1e-6, 1e-7, "tanh")
    assert_close(fnn.softmax(x), softmax(x), 1e-6, 1e-7, "softmax")
    assert_close(fnn.add(x, 1.5), x + 1.5, 0, 0, "add")
    assert_close(fnn.mul(x, x), x * x, 0, 0, "mul")
    assert_close(fnn.concat([x, y]), np.hstack([x, y]), 0, 0, "concat")
    assert fnn.reshape(x, (3, 2, 2)).shape == (3, 2, 2)
    assert fnn.flatten(x.reshape(3, 2, 2)).shape == (3, 4)


@pytest.mark.parametrize("call, words", [
    (lambda x: fnn.concat([x, np.ones((2, 4))]), ("fnn.concat", "(3, 4)", "(2, 4)")),
    (lambda x: fnn.concat([x], axis=2), ("fnn.concat", "axis", "2")),
    (lambda x: fnn.concat(x), ("fnn.concat", "list")),
    (lambda x: fnn.add(x, np.ones(3)), ("fnn.add", "(3, 4)", "(3,)")),
    (lambda x: fnn.mul(x, "a"), ("fnn.mul", "b")),
    (lambda x: fnn.reshape(x, (5, -1)), ("fnn.reshape", "(3, 4)", "(5, -1)")),
    (lambda x: fnn.softmax(x.reshape(3, 2, 2)), ("fnn.softmax", "2-D", "(3, 2, 2)")),
])
def test_misused_ops_say_what_they_received_and_expect(call, words):
    x = np.ones((3, 4), np.float32)
    with pytest.raises((TypeError, ValueError)) as info:
        call(x)
    assert all(w in str(info.value) for w in words), str(info.value)


# ----------------------------------------------------------------------------- errors
class _Dense2(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.fc = nn.Dense(4, 4)
        self.op = op

    def forward(self, x):
        return self.op(self, self.fc(x))


@pytest.mark.parametrize("op, names, use", [
    (lambda m, h: h * 2, ("numpy.multiply", "*"), "fnn.mul"),
    (lambda m, h: np.maximum(h, 0), ("numpy.maximum",), "fnn.relu"),
    (lambda m, h: h + m.fc(h), ("numpy.add", "+"), "fnn.add"),
    (lambda m, h: h.reshape(4, -1), ("reshape",), "fnn.reshape"),
    (lambda m, h: np.concatenate([h, h], axis=1), ("numpy.concatenate",), "fnn.concat"),
    (lambda m, h: m.fc(h) @ m.fc.weight.data, ("numpy.matmul", "@"), "Dense"),
    (lambda m, h: h.__setitem__(0, 0.0) or h, ("h[...] = v",), "fnn.mul"),
    # in place without a ufunc or an array function: the backward pass read the changed values
    (lambda m, h: h.fill(0.5) or h, (".fill()",), "fnn.mul"),
    (lambda m, h: h.sort() or h, (".sort()",), "fnn.mul"),
    (lambda m, h: h.put([0], [9.0]) or h, (".put()",), "fnn.mul"),
    (lambda m, h: h.partition(1) or h, (".partition()",), "fnn.mul"),
    (lambda m, h: h.flat.__setitem__(0, 0.0) or h, ("h.flat",), "fnn.mul"),
])
def test_numpy_on_a_recorded_value_raises_and_names_the_op_to_use(op, names, use):
    model = _Dense2(op)
    with pytest.raises(TypeError) as info:
        model(np.ones((4, 4), np.float32))
    message = str(info.value)
    assert "_Dense2.forward" in message and use in message, message
    assert all(n in message for n in names), message
    # the output of a successful forward is a plain array again
    out = _Dense2(lambda m, h: fnn.relu(h))(np.ones((4, 4), np.float32))
    assert type(out) is np.ndarray and type(out * 2) is np.ndarray


@pytest.mark.parametrize("op", [
    lambda m, h: np.asarray(h) * 2,                  # built with NumPy, returned
    lambda m, h: m.fc(np.asarray(h)),                 # detached, then fed to a layer
    lambda m, h: fnn.relu(np.tanh(np.asarray(h))),    # detached, then fed to an op
])
def test_a_value_the_recorder_did_not_see_is_an_error(op):
    with pytest.raises(TypeError, match="not recorded"):
        _Dense2(op)(np.ones((4, 4), np.float32))


def test_a_model_without_forward_or_backward_says_what_is_missing():
    class Empty(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match="forward"):
        Empty()(np.ones((1, 2)))
    with pytest.raises(RuntimeError, match="before a forward pass"):
        Branching().backward(np.ones((1, 3), np.float32))
    model = Branching()
    model(np.ones((2, 6), np.float32))
    with pytest.raises(ValueError, match=r"grad_out has shape \(2, 4\); expected \(2, 3\)"):
        model.backward(np.ones((2, 4), np.float32))


def test_forward_called_directly_is_recorded_and_a_failed_one_leaves_no_stale_tape():
    model, _, x, r, grads = backprop("residual")
    model.zero_grad()
    model.forward(x.astype(np.float32))  # not model(x): recorded all the same
    model.backward(r.astype(np.float32))
    for key, p in model.named_parameters():
        assert_close(p.grad, grads[key].astype(np.float64), 1e-6, 1e-7, key)
    with pytest.raises(ValueError):
        model(np.ones((2, 3), np.float32))  # inp is Dense(5, 6)
    with pytest.raises(RuntimeError, match="before a forward pass"):
        model.backward(np.ones((2, 2), np.float32))


def test_dropout_called_twice_in_training_is_an_error_and_fine_in_evaluation():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 4)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.fc(self.drop(x)))

    model = Twice()
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="Dropout.*second time.*one instance per call"):
        model(x)
    model.eval()
    model(x)
    assert model.backward(np.ones((2, 4), np.float32)).shape == (2, 4)


# ----------------------------------------------------------------------------- training
class SimpleNN(nn.Module):
    def __init__(self, features=64):
        super().__init__()
        self.fc1 = nn.Dense(features, 128)
        self.fc2 = nn.Dense(128, 10)

    def forward(self, x):
        return self.fc2(fnn.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def digits():
    return tuple(np.asarray(a) for a in fnn.datasets.load("digits"))


def test_the_course_example_trains_above_90_percent_on_digits(digits):
    X, y, X_test, y_test = digits
    fnn.seed(0)
    model = SimpleNN()
    model.compile(loss="cross_entropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, epochs=5, verbose=0, seed=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    result = model.evaluate(X_test, y_test)
    assert set(result) == {"loss", "accuracy"} and result["accuracy"] > 0.9
    pred = model.predict(X_test[:50])
    assert type(pred) is np.ndarray and pred.shape == (50, 10)
    assert np.array_equal(pred, model(X_test[:50]))
    # the accuracy evaluate reports is the share of argmax hits, counted here
    assert np.isclose(result["accuracy"],
                      np.mean(np.argmax(model.predict(X_test), 1) == y_test))


def test_fit_with_diagnostics_lists_the_sub_modules(digits):
    X, y, _, _ = digits
    fnn.seed(0)
    model = SimpleNN()
    model.compile(loss="cross_entropy", optimizer="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(X[:128], y[:128], epochs=2, verbose=0, diagnostics=True)
    assert set(history.diagnostics) == {"fc1:Dense", "fc2:Dense"}
    assert len(history.diagnostics["fc1:Dense"]["grad_norm"]) == 2


def test_save_and_load_weights_round_trip(digits, tmp_path):
    pytest.importorskip("safetensors")
    X, y, X_test, _ = digits
    fnn.seed(0)
    model = SimpleNN()
    model.compile(loss="cross_entropy", optimizer="adam")
    model.fit(X[:256], y[:256], epochs=1, verbose=0)
    assert list(model.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    path = model.save(tmp_path / "simple.safetensors")
    fnn.seed(1)
    other = fnn.io.load_weights(SimpleNN(), path)
    assert np.array_equal(other(X_test[:20]), model(X_test[:20]))
    with pytest.raises(InvalidFileError) as info:
        fnn.load(path)
    message = str(info.value)
    assert "SimpleNN" in message and "load_weights" in message


# ----------------------------------------------------------------------------- explain
def test_explain_backward_walks_the_recorded_calls_in_reverse(digits):
    X, y, _, _ = digits
    fnn.seed(0)
    model = SimpleNN()
    xb, yb = X[:8].astype(np.float32), y[:8]
    model.zero_grad()
    lines = []
    steps = model.explain_backward(xb, yb, loss="cross_entropy", print_fn=lines.append)
    assert [s["op"] for s in steps] == ["fc2", "relu", "fc1"]
    assert [s["output_shape"] for s in steps] == [(8, 10), (8, 128), (8, 128)]
    assert steps[0]["input_shapes"] == [(8, 128)] and steps[2]["input_shapes"] == [(8, 64)]
    # the gradient entering fc2 is that of the mean cross-entropy: (softmax - one_hot) / n
    w1, b1 = (model.fc1.weight.data.astype(np.float64), model.fc1.bias.data.astype(np.float64))
    w2, b2 = (model.fc2.weight.data.astype(np.float64), model.fc2.bias.data.astype(np.float64))
    logits = np.maximum(xb @ w1.T + b1, 0) @ w2.T + b2
    g = (softmax(logits) - np.eye(10)[yb]) / len(yb)
    assert np.isclose(steps[0]["grad_out_norm"], np.linalg.norm(g), rtol=1e-4)
    assert np.isclose(steps[0]["grad_in_norms"][0], np.linalg.norm(g @ w2), rtol=1e-4)
    assert np.isclose(steps[0]["param_grad_norms"]["fc2.weight"],
                      np.linalg.norm(g.T @ np.maximum(xb @ w1.T + b1, 0)), rtol=1e-4)
    hidden = xb @ w1.T + b1
    assert np.isclose(steps[2]["grad_in_norms"][0],
                      np.linalg.norm(((g @ w2) * (hidden > 0)) @ w1), rtol=1e-4)
    text = lines[0]
    assert "fc2 = Dense(128, 10)" in text and "relu" in text and "|fc1.weight.grad|" in text
    # the parameters' gradients are left as they were
    assert all(not p.grad.any() for p in model.parameters())


# ----------------------------------------------------------------------------- torch habits
def test_a_parameter_of_your_own_is_an_operand_and_gets_its_gradient():
    # torch's learnable scale and shift: self.alpha = nn.Parameter(...), x * self.alpha
    torch = pytest.importorskip("torch")

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 3)
            self.alpha = nn.Parameter(np.array([[0.5, -1.0, 2.0]], np.float32))
            self.shift = nn.Parameter(np.array([0.1, 0.2, -0.3], np.float32))

        def forward(self, x):
            h = fnn.add(fnn.mul(self.fc(x), self.alpha), self.shift)
            return fnn.mul(fnn.tanh(h), self.alpha)  # alpha used twice: gradients add up

    fnn.seed(4)
    model = Scaled()
    rng = np.random.default_rng(4)
    x, r = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    assert [k for k, _ in model.named_parameters()] == ["alpha", "shift", "fc.weight", "fc.bias"]
    model(x)
    model.zero_grad()
    gx = model.backward(r.astype(np.float32))
    tp = {k: torch.tensor(p.data.astype(np.float64), requires_grad=True)
          for k, p in model.named_parameters()}
    tx = torch.tensor(x, requires_grad=True)
    h = torch.nn.functional.linear(tx, tp["fc.weight"], tp["fc.bias"]) * tp["alpha"] + tp["shift"]
    (torch.tanh(h) * tp["alpha"] * torch.tensor(r)).sum().backward()
    assert_close(gx, tx.grad.numpy(), 1e-4, 1e-5, "input")
    for k, p in model.named_parameters():
        assert_close(p.grad, tp[k].grad.numpy(), 1e-4, 1e-5, k)
    # outside a recorded forward the ops take a Parameter as its values
    assert_close(fnn.mul(np.ones((1, 3)), model.alpha), model.alpha.data, 0, 0, "plain mul")


def test_forward_takes_extra_arguments_as_in_torch():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 2)

        def forward(self, x, scale=1.0):
            return fnn.mul(self.fc(x), scale)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = Head()

        def forward(self, x, scale, relu=False):
            h = self.head(x, scale=scale)
            return fnn.relu(h) if relu else h

    fnn.seed(5)
    model = Model()
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    w = model.head.fc.weight.data.astype(np.float64)
    b = model.head.fc.bias.data.astype(np.float64)
    assert_close(model(x, 2.0), 2.0 * (x @ w.T + b), 1e-5, 1e-6, "positional extra argument")
    out = model(x, scale=-3.0, relu=True)
    assert_close(out, np.maximum(-3.0 * (x @ w.T + b), 0.0), 1e-5, 1e-6, "keyword arguments")
    model.zero_grad()
    g = model.backward(np.ones((3, 2), np.float32))
    mask = (out > 0).astype(np.float64)
    assert_close(g, -3.0 * mask @ w, 1e-5, 1e-6, "input gradient")
    assert_close(model.head.fc.weight.grad, -3.0 * mask.T @ x, 1e-5, 1e-6, "weight gradient")


@pytest.mark.parametrize("stateful", ["dropout", "batchnorm"])
def test_dropout_or_batchnorm_in_a_call_that_shares_a_layer_is_an_error(stateful):
    # the backward pass would recompute seq's forward (fc's cache holds its second call):
    # a new dropout mask (a wrong gradient) or running statistics updated twice
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 4)
            extra = nn.Dropout(0.5) if stateful == "dropout" else nn.BatchNorm1d(4)
            self.seq = nn.Sequential(self.fc, extra)

        def forward(self, x):
            return self.fc(self.seq(x))

    fnn.seed(6)
    model = Model()
    x = np.random.default_rng(6).normal(size=(8, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"seq.*fc.*one instance per call"):
        model(x)
    model.eval()  # no random numbers, no statistics updated: sharing is fine
    out = model(x)
    model.zero_grad()
    model.backward(np.ones_like(out))
    assert np.isfinite(model.fc.weight.grad).all() and np.any(model.fc.weight.grad != 0)


class Gated(nn.Module):
    """A layer's output scaled by a learnt row (a Parameter operand of fnn.mul)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(4, 3)
        self.alpha = nn.Parameter(np.array([[0.5, -1.0, 2.0]], np.float32))

    def forward(self, x):
        return fnn.mul(self.fc(x), self.alpha)


def test_gradient_check_checks_the_parameters_a_model_holds_itself(monkeypatch):
    fnn.seed(7)
    model = Gated()
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    result = fnn.diagnostics.gradient_check(model, x, y, "cross_entropy")
    assert set(result) == {"fc:Dense", "Gated"} and result.passed, str(result)

    def wrong_backward(grad_out, input_grad=True):
        out = nn.Module.backward(model, grad_out, input_grad)
        model.alpha.grad *= 1.5  # a wrong gradient for the model's own parameter
        return out

    monkeypatch.setattr(model, "backward", wrong_backward)
    result = fnn.diagnostics.gradient_check(model, x, y, "cross_entropy")
    assert result.failed == ["Gated"], str(result)


def test_a_copy_or_pickle_of_a_model_after_forward_does_not_replay_the_original():
    import copy
    import pickle

    fnn.seed(8)
    model = Residual()
    x = np.random.default_rng(8).normal(size=(4, 5)).astype(np.float32)
    out = model(x)
    model.zero_grad()
    twin = copy.deepcopy(model)
    # the copy's recording would replay the original's layers (their gradients changed)
    with pytest.raises(RuntimeError, match="before a forward pass"):
        twin.backward(np.ones_like(out))
    assert all(not p.grad.any() for p in model.parameters())
    clone = pickle.loads(pickle.dumps(model))  # was: can't pickle the recording's lambdas
    assert_close(clone(x), out, 0, 0, "a pickled model's output")
    for m in (twin, clone):
        m(x)
        m.zero_grad()
        m.backward(np.ones_like(out))
    model.backward(np.ones_like(out))
    for (k, p), q, r in zip(model.named_parameters(), twin.parameters(), clone.parameters()):
        assert_close(q.grad, p.grad, 0, 0, f"copy: {k}")
        assert_close(r.grad, p.grad, 0, 0, f"pickle: {k}")


def test_a_layer_with_parameters_that_is_not_an_attribute_is_an_error():
    # as torch's plain dict: the model's parameters() misses it, so no optimizer trains it
    class InADict(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = {"a": nn.Dense(4, 2)}

        def forward(self, x):
            return self.heads["a"](x)

    class MadeInForward(nn.Module):
        def forward(self, x):
            return fnn.relu(nn.Flatten()(x))  # no parameters: fine

    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"InADict.forward calls Dense\(4, 2\).*not .*attribute"
                                         r".*parameters\(\)"):
        InADict()(x)
    assert MadeInForward()(x).shape == (3, 4)


def test_a_layer_subclass_that_overrides_only_forward_is_an_error():
    # Dense's backward would ignore the relu the new forward adds: a wrong gradient
    with pytest.raises(TypeError, match=r"MyDense overrides forward.*Dense's backward.*"
                                        r"define backward too.*attribute"):
        class MyDense(nn.Dense):
            def forward(self, x):
                return fnn.relu(super().forward(x))

    class Doubled(nn.Dense):  # forward and backward together: the lecture's way, fine
        def forward(self, x):
            return 2.0 * super().forward(x)

        def backward(self, grad_out, input_grad=True):
            return super().backward(2.0 * grad_out, input_grad)

    class Deeper(Residual):  # a model of your own below another: its backward is derived
        def forward(self, x):
            return fnn.tanh(super().forward(x))

    fnn.seed(9)
    model = Deeper()
    x = np.random.default_rng(9).normal(size=(3, 5)).astype(np.float32)
    out = model(x)
    assert_close(out, np.tanh(Residual.forward(model, x)), 1e-6, 1e-6, "Deeper forward")
    assert model.backward(np.ones_like(out)).shape == (3, 5)
    assert Doubled(2, 2)(np.ones((1, 2), np.float32)).shape == (1, 2)


def test_a_parameter_that_is_not_an_attribute_is_an_error():
    class InAList(nn.Module):
        def __init__(self):
            super().__init__()
            self.scales = [nn.Parameter(np.ones((1, 4), np.float32))]  # not registered

        def forward(self, x):
            return fnn.mul(x, self.scales[0])

    with pytest.raises(ValueError, match=r"InAList.forward: input 1 of fnn.mul is a Parameter"
                                         r".*not .*parameters\(\)"):
        InAList()(np.ones((2, 4), np.float32))


def test_a_layer_called_twice_with_different_arguments_is_recomputed_with_its_own():
    class Pow(nn.Module):  # the lecture's way: y = x ** k, caching x and k
        def forward(self, x, k=2):
            self.x, self.k = np.asarray(x, np.float64), k
            return (self.x ** k).astype(np.float32)

        def backward(self, grad_out):
            return grad_out * self.k * self.x ** (self.k - 1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.pow = Pow()

        def forward(self, x):
            return self.pow(self.pow(x, k=3), k=2)  # (x ** 3) ** 2

    x = np.array([[1.5, -0.7, 0.3]])
    model = Model()
    assert_close(model(x), x ** 6, 1e-6, 0, "forward")
    assert_close(model.backward(np.ones((1, 3), np.float32)), 6 * x ** 5, 1e-5, 0, "backward")


def test_explain_backward_shows_the_gradient_of_a_parameter_operand():
    fnn.seed(10)
    model = Gated()
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    lines = []
    steps = model.explain_backward(x, y, print_fn=lines.append)
    h = x.astype(np.float64) @ model.fc.weight.data.T.astype(np.float64) + model.fc.bias.data
    g = (softmax(h * model.alpha.data) - np.eye(3)[y]) / len(y)
    expected = np.linalg.norm((g * h).sum(axis=0))
    assert steps[0]["op"] == "mul"
    assert np.isclose(steps[0]["param_grad_norms"]["alpha"], expected, rtol=1e-4), steps[0]
    assert "|alpha.grad|" in lines[0]
    assert not model.alpha.grad.any()  # explain_backward leaves the gradients as they were


@pytest.mark.parametrize("how", ["into an op", "into a layer", "returned"])
def test_a_layer_s_forward_called_directly_says_to_call_the_layer(how):
    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 4)
            self.seq = nn.Sequential(nn.Dense(4, 4))

        def forward(self, x):  # torch runs layer.forward(h); the recorder sees no call
            if how == "into an op":
                return fnn.relu(self.fc.forward(x))
            if how == "into a layer":
                return self.seq.forward(self.fc(x))
            return self.fc.forward(x)

    with pytest.raises(TypeError, match=r"forward (was )?called directly.*self\.fc\(h\)"):
        Direct()(np.ones((2, 4), np.float32))


def test_a_layer_made_on_the_first_forward_and_kept_as_an_attribute_is_fine():
    class Lazy(nn.Module):  # sizes itself on the first batch, as torch's LazyLinear
        def forward(self, x):
            if not hasattr(self, "fc"):
                self.fc = nn.Dense(x.shape[1], 2)
            return self.fc(x)

    model = Lazy()
    x = np.ones((3, 5), np.float32)
    model(x)
    model.zero_grad()
    model.backward(np.ones((3, 2), np.float32))
    assert [k for k, _ in model.named_parameters()] == ["fc.weight", "fc.bias"]
    assert_close(model.fc.weight.grad, np.full((2, 5), 3.0), 1e-6, 0, "weight gradient")


def test_a_recorded_value_as_a_layer_s_second_argument_is_an_error():
    class Pair(nn.Module):  # the lecture's way: backward gives the gradient of x only
        def forward(self, x, other):
            return np.asarray(x) + np.asarray(other)

        def backward(self, grad_out):
            return grad_out

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(3, 3)
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x, self.fc(x))  # fc would get no gradient

    with pytest.raises(TypeError, match=r"pair gets a recorded value after its first argument"):
        Model()(np.ones((2, 3), np.float32))


class _Head(nn.Module):
    def __init__(self, enc, n):
        super().__init__()
        self.enc, self.head = enc, nn.Dense(5, n)

    def forward(self, x):
        return self.head(fnn.tanh(self.enc(x)))


def _head_grads(model, x, g):
    """enc.weight's gradient of sum(g * model(x)), in float64 NumPy."""
    w1, b1 = (np.float64(p.data) for p in (model.enc.weight, model.enc.bias))
    w2 = np.float64(model.head.weight.data)
    h = np.tanh(np.float64(x) @ w1.T + b1)
    dz = (np.float64(g) @ w2) * (1 - h * h)
    return dz.T @ np.float64(x)


def test_a_layer_run_again_between_forward_and_backward_is_recomputed():
    """Found by an attack: two models sharing an encoder, a(x1); b(x2); a.backward(g): the
    encoder's caches held x2's, and its weight gradient matched neither forward (off by 4.8)."""
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((4, 5)).astype(np.float32) for _ in range(2))
    fnn.seed(0)
    enc = nn.Dense(5, 5)
    a, b = _Head(enc, 3), _Head(enc, 2)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    want = _head_grads(a, x1, g)
    out = a(x1)
    b(x2)  # the other task's forward, before a's backward
    a.zero_grad()
    a.backward(g)
    assert_close(a.enc.weight.grad, want, rtol=1e-3, atol=1e-4)
    a(x1)
    a.enc(x2)  # a sub-layer called directly, to look at other features
    a.zero_grad()
    a.backward(g)
    assert_close(a.enc.weight.grad, want, rtol=1e-3, atol=1e-4)
    assert out.shape == (4, 3)


def test_a_shared_training_dropout_run_again_cannot_be_replayed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    enc = nn.Sequential(nn.Dense(5, 5), nn.Dropout(0.5))
    a, b = _Head(enc, 3), _Head(enc, 2)
    a(x)
    b(x)
    with pytest.raises(RuntimeError, match=r"ran again after this forward pass.*cannot be recomputed"):
        a.backward(np.ones((4, 3), np.float32))


def test_values_taken_out_of_a_recorded_array_are_refused():
    """Found by an attack: h[0, 0], float(h), h.item() and h.tolist() became constants, their
    gradient silently lost (fnn.mul(h, h[0, 0]): bias grad -3.22 where torch gives -8.23)."""
    class Leak(nn.Module):
        def __init__(self, take):
            super().__init__()
            self.fc, self.take = nn.Dense(3, 3), take

        def forward(self, x):
            h = self.fc(x)
            return fnn.mul(h, self.take(h))

    x = np.ones((2, 3), np.float32)
    for take in (lambda h: h[0, 0], lambda h: float(h[:1, :1]), lambda h: h.item(0), lambda h: h.tolist()[0][0]):
        with pytest.raises(TypeError, match=r"cannot be differentiated"):
            Leak(take)(x)
    printed = []

    class Looks(nn.Module):  # printing, and np.asarray to look, stay allowed
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(3, 3)

        def forward(self, x):
            h = self.fc(x)
            printed.append((repr(h), float(np.asarray(h)[0, 0])))
            return h
    Looks()(x)
    assert printed


def test_a_scalar_through_an_activation_has_a_gradient():
    """Found by an attack: a 0-d value's gradient became shape (1,), which the activation's
    backward refused (a learnable scalar gate, fnn.sigmoid(nn.Parameter(0.3)))."""
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.g = nn.Dense(3, 3), nn.Parameter(np.float32(0.3))

        def forward(self, x):
            return fnn.mul(self.fc(x), fnn.sigmoid(self.g))

    model = Gate()
    y = model(np.ones((4, 3), np.float32))
    model.backward(np.ones_like(y))
    s = 1 / (1 + np.exp(-0.3))
    assert_close(model.g.grad, np.sum(y / s) * s * (1 - s), rtol=1e-5, atol=1e-6)


def test_a_failed_forward_leaves_no_recording_and_grad_out_is_checked():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(3, 2)

        def forward(self, x):
            return self.fc(x)

    model = M()
    model(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError):
        model(np.array([["a", "b", "c"]]))
    with pytest.raises(RuntimeError, match="backward called before a forward pass"):
        model.backward(np.ones((2, 2), np.float32))
    model(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"M.backward: grad_out must be a numeric array; got dtype complex"):
        model.backward(np.ones((2, 2), np.complex64))
    with pytest.raises(TypeError, match=r"fnn.concat: axis must be an integer; got float 1.0"):
        fnn.concat([np.ones((2, 2)), np.ones((2, 2))], axis=1.0)


class _Times2(nn.Module):
    """A layer of one's own (forward and backward by hand) whose backward returns ``give(g)``."""

    def __init__(self, give):
        super().__init__()
        self.give = give

    def forward(self, x):
        return 2.0 * x

    def backward(self, grad_out, input_grad=True):
        return self.give(grad_out)


class _AroundTimes2(nn.Module):
    def __init__(self, give):
        super().__init__()
        self.alpha = nn.Parameter(np.ones(5, np.float32))
        self.fc1, self.s, self.fc2 = nn.Dense(5, 5), _Times2(give), nn.Dense(5, 3)

    def forward(self, x):
        return self.fc2(self.s(self.fc1(fnn.mul(x, self.alpha))))


@pytest.mark.parametrize("give,exc,words", [
    (lambda g: None, TypeError, r"_AroundTimes2.backward: s \(_Times2\(\)\): its backward "
                                r"returned None; .* of shape \(4, 5\) \(a missing return\?\)"),
    (lambda g: 2.0 * g.sum(axis=1, keepdims=True), ValueError,
     r"s \(_Times2\(\)\): its backward returned a gradient of shape \(4, 1\); expected \(4, 5\)"),
    (lambda g: "g", TypeError, r"s \(_Times2\(\)\): the gradient its backward returned must be "
                               "a numeric array"),
])
def test_a_hand_written_backward_returning_none_or_a_wrong_shape_is_named(give, exc, words):
    """Found by an attack: a derived backward took a layer's backward returning None (a
    forgotten return) as no gradient, every layer before it silently getting zeros; and a
    gradient of shape (4, 1) for an input of (4, 5) was broadcast into a wrong gradient (and
    an input gradient of the wrong shape), where a Sequential raised for both."""
    model = _AroundTimes2(give)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    out = model(x)
    with pytest.raises(exc, match=words):
        model.backward(np.ones_like(out))


def test_a_hand_written_layer_shared_by_two_models_is_recomputed_when_it_ran_since():
    """Found by an attack: forward A, forward B, backward A with a layer of one's own shared
    by A and B: A's backward used B's cached input (weight gradient off by 0.9); the built-in
    layers were recomputed, counted by their forward calls, hand-written ones were not."""
    class MyLinear(nn.Module):  # the lecture's layer
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(np.random.default_rng(1).standard_normal((5, 5)))
            self.bias = nn.Parameter(np.zeros(5, np.float32))

        def forward(self, x):
            self.x = x
            return x @ self.weight.data.T + self.bias.data

        def backward(self, grad_out, input_grad=True):
            self.weight.grad[...] += grad_out.T @ self.x
            return grad_out @ self.weight.data

    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((4, 5)).astype(np.float32) for _ in range(2))
    fnn.seed(0)
    enc = MyLinear()
    a, b = _Head(enc, 3), _Head(enc, 2)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    want = _head_grads(a, x1, g)
    a(x1)
    b(x2)  # the other model's forward, before a's backward
    a.zero_grad()
    a.backward(g)
    assert_close(enc.weight.grad, want, rtol=1e-3, atol=1e-4)
    a(x1)
    enc.forward(x2)  # called directly, to look at other features
    a.zero_grad()
    a.backward(g)
    assert_close(enc.weight.grad, want, rtol=1e-3, atol=1e-4)


def test_explain_backward_between_forward_and_backward_leaves_the_recording():
    """Found by an attack: explain_backward, called between a forward and its backward,
    replaced the model's recording, so that backward gave the gradient of explain's batch."""
    rng = np.random.default_rng(0)
    x, x2 = (rng.standard_normal((4, 5)).astype(np.float32) for _ in range(2))
    y, y2 = np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0])
    fnn.seed(0)
    model = Residual()
    loss = fnn.losses.CrossEntropy()
    loss(model(x), y)
    g = loss.backward()
    model.zero_grad()
    model.backward(g)
    want = model.inp.weight.grad.copy()
    model.zero_grad()
    loss(model(x), y)
    g = loss.backward()
    model.explain_backward(x2, y2, print_fn=None)
    model.backward(g)
    assert_close(model.inp.weight.grad, want, rtol=1e-5, atol=1e-6)


def _sequential_and_batch():
    fnn.seed(0)
    inner = nn.Sequential(nn.Dense(8, 8, activation="tanh"))
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), inner, nn.Dense(8, 3))
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    return model, inner, x


@pytest.mark.parametrize("between", ["gradient_check", "a layer called", "the inner model"])
def test_a_sequential_s_backward_refuses_layers_that_ran_since_its_forward(between):
    """A layer keeps its last call's batch for backward: gradient_check (or any call of a
    layer) between a Sequential's forward and backward made the backward use that batch's
    caches, silently (found by an attack)."""
    from fastnn.diagnostics import gradient_check

    model, inner, x = _sequential_and_batch()
    out = model(x)
    if between == "gradient_check":
        gradient_check(model, x[:2], np.arange(2), "cross_entropy", samples=2)
    elif between == "a layer called":
        model.layers[2](np.ones((5, 8), np.float32))
    else:
        inner(np.ones((5, 8), np.float32))
    layer = 0 if between == "gradient_check" else 2 if between == "a layer called" else 1
    with pytest.raises(RuntimeError, match=f"(?s)layer {layer} .* ran again since"):
        model.backward(np.ones_like(out))
    model(x)  # the forward again: its backward runs
    assert model.backward(np.ones_like(out)).shape == x.shape


def test_a_recorded_block_in_a_sequential_that_ran_again_is_named_before_backward(rng):
    """Found by an attack: a forward-only block's runs were not counted, so a Sequential
    holding it backpropagated the batch of the block's later call (directly, or by
    predict) with no error: gradients off by 0.57 and 5.3. A built-in layer raises."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 4)

        def forward(self, x):
            return fnn.tanh(self.fc(x))

    x1, x2 = rng.standard_normal((2, 5, 4)).astype(np.float32)
    g = rng.standard_normal((5, 4)).astype(np.float32)
    block = Block()
    model = nn.Sequential(nn.Tanh(), block)
    model(x1)
    block(x2)
    with pytest.raises(RuntimeError, match=r"layer 1 \(Block\(\)\) ran again"):
        model.backward(g)
    model.compile("mse", "sgd")
    model(x1)
    model.predict(x2)
    with pytest.raises(RuntimeError, match="ran again"):
        model.backward(g)
    model(x1)  # and the forward's own backward is the plain one's
    grad_x = model.backward(g)
    expected = nn.Sequential(nn.Tanh(), block)
    expected(x1)
    np.testing.assert_array_equal(grad_x, expected.backward(g))


def test_a_recorded_forward_keeps_its_model_s_attributes_in_place():
    """Found by an attack: each recorded forward popped the model's `_tape` and added it
    back, resizing its __dict__ while another thread's fit walked it (a predict beside a fit
    of a forward-only model: "dictionary changed size during iteration", 4 runs of 4). The
    old recording is now None during the forward, the key kept."""
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(3, 2)

        def forward(self, x):
            seen.append(("_tape" in vars(self), len(vars(self))))
            return self.fc(x)

    model = Probe()
    x = np.ones((2, 3), np.float32)
    model(x)
    size = len(vars(model))
    model(x)
    model(x)
    assert seen[1:] == [(True, size), (True, size)] and len(vars(model)) == size


@pytest.mark.parametrize("reduce", [lambda h: h.mean(axis=1, keepdims=True),
                                    lambda h: h.sum(axis=1, keepdims=True),
                                    lambda h: h.max(axis=1, keepdims=True)])
def test_a_reduction_in_a_recorded_forward_points_to_pooling_not_an_elementwise_op(reduce):
    """Found by an attack: h.mean(axis=1) was told to use fnn.add(a, b) and h.max(axis=1)
    fnn.relu(x): the hint was chosen by the ufunc's name, not its method."""
    class Reduced(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 3)

        def forward(self, x):
            return reduce(self.fc(x))

    with pytest.raises(TypeError, match=r"\.reduce on a value recorded.*use a pooling layer") as info:
        Reduced()(np.ones((2, 4), np.float32))
    assert "fnn.add" not in str(info.value) and "fnn.relu(x) for" not in str(info.value)


def test_gradient_check_of_a_recorded_block_leaves_its_sequential_s_backward_right(rng):
    """Review: once recorded forwards were counted, gradient_check or explain_backward on a
    block inside a Sequential made the Sequential's next backward name the block, where
    the block's kept recording replays right; its count is now given back with it."""
    from fastnn.diagnostics import gradient_check

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(8, 8)

        def forward(self, x):
            return fnn.relu(fnn.add(self.fc(x), x))

    X = rng.standard_normal((16, 4)).astype(np.float32)
    H = rng.standard_normal((5, 8)).astype(np.float32)
    g = rng.standard_normal((16, 3)).astype(np.float32)
    block = Block()
    model = nn.Sequential(nn.Dense(4, 8), block, nn.Dense(8, 3))
    model(X)
    expected = model.backward(g)
    for look in (lambda: gradient_check(block, H, rng.integers(0, 8, 5), loss="cross_entropy"),
                 lambda: block.explain_backward(H, rng.integers(0, 8, 5), print_fn=None)):
        model.zero_grad()
        model(X)
        look()
        np.testing.assert_array_equal(model.backward(g), expected)


@pytest.mark.parametrize("call, hint", [(lambda h: np.add.at(h, 0, 1.0), "fnn.mul(h, mask)"),
                                        (lambda h: np.add.reduceat(h, [0, 2], axis=1), "pooling"),
                                        (lambda h: h.cumsum(1), "fnn.add(a, b)")])
def test_each_ufunc_method_in_a_recorded_forward_gets_its_own_hint(call, hint):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 3)

        def forward(self, x):
            return call(self.fc(x))

    with pytest.raises(TypeError, match=re.escape(hint)):
        Odd()(np.ones((2, 4), np.float32))
