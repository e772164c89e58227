"""The whole training step: fastnn against a float64 NumPy network from the same weights,
fused against unfused paths, and no growth of memory in the steady state."""

import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


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
