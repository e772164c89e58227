"""SGD and Adam: the _C kernels and fastnn.optim against the NumPy formula (PyTorch's
definitions) over several steps, and against torch.optim when torch is installed."""

import numpy as np
import pytest

import fastnn
from fastnn import _C, nn, optim

import _ref
from _ref import SIZES, assert_close, names_argument


# ----------------------------------------------------------------------------- NumPy float64 formulas
class RefSGD:
    """torch.optim.SGD with dampening=0."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.p = [np.asarray(p, np.float64).copy() for p in params]
        self.buf = [None] * len(self.p)
        self.lr, self.mom, self.nest, self.wd = lr, momentum, nesterov, weight_decay

    def step(self, grads):
        for i, g in enumerate(grads):
            d = np.asarray(g, np.float64) + self.wd * self.p[i]
            if self.mom != 0:
                self.buf[i] = d.copy() if self.buf[i] is None else self.mom * self.buf[i] + d
                d = d + self.mom * self.buf[i] if self.nest else self.buf[i]
            self.p[i] = self.p[i] - self.lr * d


class RefAdam:
    """torch.optim.Adam (L2 weight decay added to the gradient, not AdamW)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.p = [np.asarray(p, np.float64).copy() for p in params]
        self.m = [np.zeros_like(p) for p in self.p]
        self.v = [np.zeros_like(p) for p in self.p]
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.t = 0

    def step(self, grads):
        self.t += 1
        for i, g in enumerate(grads):
            d = np.asarray(g, np.float64) + self.wd * self.p[i]
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * d
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * d * d
            mhat = self.m[i] / (1 - self.b1 ** self.t)
            vhat = self.v[i] / (1 - self.b2 ** self.t)
            self.p[i] = self.p[i] - self.lr * mhat / (np.sqrt(vhat) + self.eps)


SGD_CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "momentum_wd_nesterov": dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.1),
}
ADAM_CONFIGS = {
    "default": dict(lr=1e-3),
    "tuned": dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
}


def make_problem(rng, steps):
    """A Dense(7, 5)'s two parameters with known values, and one gradient per step."""
    layer = nn.Dense(7, 5)
    w0 = rng.standard_normal((5, 7)).astype(np.float32)
    b0 = rng.standard_normal(5).astype(np.float32)
    layer.weight.data[...] = w0
    layer.bias.data[...] = b0
    grads = [[rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
             for _ in range(steps)]
    return layer, [w0, b0], grads


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad[...] = g


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("size", list(SIZES) + [100003])
@pytest.mark.parametrize("cfg", list(SGD_CONFIGS), ids=str)
def test_sgd_step_kernel(cfg, size, rng):
    kw = SGD_CONFIGS[cfg]
    p = rng.standard_normal(size).astype(np.float32)
    vel = np.zeros(size, np.float32) if kw.get("momentum", 0) else None
    ref = RefSGD([p], **kw)
    for t in range(6):
        g = rng.standard_normal(size).astype(np.float32)
        g0 = g.copy()
        _C.sgd_step(p, g, vel, **kw)
        np.testing.assert_array_equal(g, g0, err_msg="sgd_step modified grad")
        ref.step([g])
        assert_close(p, ref.p[0], 1e-5, 1e-6, f"sgd_step {cfg} size={size} step {t + 1}")


@pytest.mark.parametrize("size", list(SIZES) + [100003])
@pytest.mark.parametrize("cfg", list(ADAM_CONFIGS), ids=str)
def test_adam_step_kernel(cfg, size, rng):
    kw = dict(ADAM_CONFIGS[cfg])
    p = rng.standard_normal(size).astype(np.float32)
    m = np.zeros(size, np.float32)
    v = np.zeros(size, np.float32)
    ref = RefAdam([p], **kw)
    b1, b2 = kw.get("betas", (0.9, 0.999))
    for t in range(1, 7):
        g = rng.standard_normal(size).astype(np.float32)
        g0 = g.copy()
        _C.adam_step(p, g, m, v, lr=kw["lr"], beta1=b1, beta2=b2, eps=kw.get("eps", 1e-8),
                     weight_decay=kw.get("weight_decay", 0.0), step=t)
        np.testing.assert_array_equal(g, g0, err_msg="adam_step modified grad")
        ref.step([g])
        assert_close(p, ref.p[0], 1e-5, 1e-6, f"adam_step {cfg} size={size} step {t}")
        assert_close(m, ref.m[0], 1e-5, 1e-6, f"adam_step {cfg} first moment step {t}")
        assert_close(v, ref.v[0], 1e-5, 1e-7, f"adam_step {cfg} second moment step {t}")


def test_optimizer_kernels_bit_identical_across_threads(rng):
    n = 300007
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    out = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        p, vel = p0.copy(), np.zeros(n, np.float32)
        _C.sgd_step(p, g, vel, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        q, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        _C.adam_step(q, g, m, v, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, step=1)
        out.append((p, vel, q, m, v))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_sgd_step_requires_velocity_with_momentum():
    p = np.zeros(4, np.float32)
    with pytest.raises((TypeError, ValueError)) as info:
        _C.sgd_step(p, np.ones(4, np.float32), None, lr=0.1, momentum=0.9)
    assert "velocity" in str(info.value)


def test_optimizer_kernels_reject_bad_in_place_arrays():
    g = np.ones(4, np.float32)
    for bad in (np.zeros(4), np.zeros(8, np.float32)[::2], np.zeros(5, np.float32)):
        with pytest.raises((TypeError, ValueError)) as info:
            _C.sgd_step(bad, g, None, lr=0.1)
        assert names_argument(str(info.value), "param"), str(info.value)
        with pytest.raises((TypeError, ValueError)) as info:
            _C.adam_step(np.zeros(4, np.float32), g, bad, np.zeros(4, np.float32), lr=0.1, beta1=0.9,
                         beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
        assert names_argument(str(info.value), "m"), str(info.value)


# ----------------------------------------------------------------------------- fastnn.optim
@pytest.mark.parametrize("cfg", list(SGD_CONFIGS), ids=str)
def test_sgd_against_numpy_formula(cfg, rng):
    kw = SGD_CONFIGS[cfg]
    layer, init, grads = make_problem(rng, 8)
    params = list(layer.parameters())
    opt = optim.SGD(params, **kw)
    ref = RefSGD(init, **kw)
    for t, g in enumerate(grads):
        set_grads(params, g)
        opt.step()
        ref.step(g)
        for i, p in enumerate(params):
            assert_close(p.data, ref.p[i], 1e-5, 1e-6, f"SGD {cfg} param {i} step {t + 1}")
    # The layer sees the updated values (parameters are updated in place).
    assert layer.weight.data is params[0].data or np.shares_memory(layer.weight.data, params[0].data)


@pytest.mark.parametrize("cfg", list(ADAM_CONFIGS), ids=str)
def test_adam_against_numpy_formula(cfg, rng):
    kw = ADAM_CONFIGS[cfg]
    layer, init, grads = make_problem(rng, 8)
    params = list(layer.parameters())
    opt = optim.Adam(params, **kw)
    ref = RefAdam(init, **kw)
    for t, g in enumerate(grads):
        set_grads(params, g)
        opt.step()
        ref.step(g)
        for i, p in enumerate(params):
            assert_close(p.data, ref.p[i], 1e-5, 1e-6, f"Adam {cfg} param {i} step {t + 1}")


def test_optimizer_updates_what_forward_uses(rng):
    layer = nn.Dense(3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    before = layer(x).copy()
    opt = optim.SGD(layer.parameters(), lr=0.5)
    for p in layer.parameters():
        p.grad[...] = 1.0
    opt.step()
    w = layer.weight.data.astype(np.float64)
    b = layer.bias.data.astype(np.float64)
    after = layer(x)
    assert_close(after, x.astype(np.float64) @ w.T + b, 1e-6, 1e-6, "forward after step")
    assert_close(after, before.astype(np.float64) - 0.5 * (x.sum(axis=1, keepdims=True) + 1.0), 1e-5, 1e-5,
                 "forward moved by lr * grad")


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)],
                         ids=["SGD", "Adam"])
def test_optimizer_zero_grad(make, rng):
    layer = nn.Dense(4, 3)
    params = list(layer.parameters())
    opt = make(params)
    for p in params:
        p.grad[...] = rng.standard_normal(p.grad.shape)
    opt.zero_grad()
    for p in params:
        assert np.all(p.grad == 0)


def test_zero_gradient_plain_sgd_is_a_no_op(rng):
    layer = nn.Dense(4, 3)
    params = list(layer.parameters())
    before = [p.data.copy() for p in params]
    opt = optim.SGD(params, lr=0.1)
    for p in params:
        p.grad[...] = 0
    opt.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)


# ----------------------------------------------------------------------------- against torch.optim
def _torch_run(torch, opt_cls, kw, init, grads):
    tparams = [torch.tensor(a.copy(), dtype=torch.float32, requires_grad=True) for a in init]
    topt = opt_cls(tparams, **kw)
    for g in grads:
        for tp, gi in zip(tparams, g):
            tp.grad = torch.tensor(gi.copy())
        topt.step()
    return [tp.detach().numpy().astype(np.float64) for tp in tparams]


@pytest.mark.parametrize("cfg", list(SGD_CONFIGS), ids=str)
def test_sgd_against_torch(cfg, rng):
    torch = pytest.importorskip("torch")
    kw = SGD_CONFIGS[cfg]
    layer, init, grads = make_problem(rng, 20)
    params = list(layer.parameters())
    opt = optim.SGD(params, **kw)
    for g in grads:
        set_grads(params, g)
        opt.step()
    expected = _torch_run(torch, torch.optim.SGD, kw, init, grads)
    for i, p in enumerate(params):
        assert_close(p.data, expected[i], 1e-5, 1e-5, f"SGD {cfg} vs torch, param {i}")


@pytest.mark.parametrize("cfg", list(ADAM_CONFIGS), ids=str)
def test_adam_against_torch(cfg, rng):
    torch = pytest.importorskip("torch")
    kw = ADAM_CONFIGS[cfg]
    layer, init, grads = make_problem(rng, 20)
    params = list(layer.parameters())
    opt = optim.Adam(params, **kw)
    for g in grads:
        set_grads(params, g)
        opt.step()
    expected = _torch_run(torch, torch.optim.Adam, kw, init, grads)
    for i, p in enumerate(params):
        assert_close(p.data, expected[i], 1e-5, 1e-5, f"Adam {cfg} vs torch, param {i}")


def test_training_step_against_torch(rng):
    """One full forward/backward/step of a small MLP with Adam, against torch autograd."""
    torch = pytest.importorskip("torch")
    from fastnn import losses

    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(6, 8, activation="tanh"), nn.Dense(8, 3))
    x = rng.standard_normal((10, 6)).astype(np.float32)
    y = rng.integers(0, 3, 10)
    lin1 = torch.nn.Linear(6, 8)
    lin2 = torch.nn.Linear(8, 3)
    dense = list(model.parameters())
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor(dense[0].data))
        lin1.bias.copy_(torch.tensor(dense[1].data))
        lin2.weight.copy_(torch.tensor(dense[2].data))
        lin2.bias.copy_(torch.tensor(dense[3].data))
    tparams = [lin1.weight, lin1.bias, lin2.weight, lin2.bias]
    opt = optim.Adam(list(model.parameters()), lr=0.01)
    topt = torch.optim.Adam(tparams, lr=0.01)
    loss_fn = losses.CrossEntropy()
    for _ in range(5):
        model.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(lin2(torch.tanh(lin1(torch.tensor(x)))), torch.tensor(y))
        tl.backward()
        topt.step()
        assert abs(loss - tl.item()) <= 1e-5 * abs(tl.item()) + 1e-6
    for p, tp in zip(model.parameters(), tparams):
        assert_close(p.data, tp.detach().numpy().astype(np.float64), 1e-4, 1e-5, "params after 5 steps vs torch")


def test_adam_and_rmsprop_take_their_betas_in_double_as_torch():
    # v = beta2 v + (1 - beta2) g^2 from v = 0: exactly 0.001 g^2 with torch's double 0.999;
    # a float32 beta2 makes 1 - beta2 = 0.00099998713, 1.3e-5 off.
    n = 40
    g = np.full(n, 3.0, np.float32)
    p, m, v = np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)
    _C.adam_step(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    np.testing.assert_allclose(v, np.float32(0.001 * 9.0), rtol=1e-7)
    np.testing.assert_allclose(m, np.float32(0.1 * 3.0), rtol=1e-7)
    sq = np.zeros(n, np.float32)
    _C.rmsprop_step(np.zeros(n, np.float32), g, sq, None, None, lr=1e-2, alpha=0.999, eps=1e-8,
                    weight_decay=0.0, momentum=0.0, centered=False)
    np.testing.assert_allclose(sq, np.float32(0.001 * 9.0), rtol=1e-7)
