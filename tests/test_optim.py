"""Optimizers: the _C kernels and every optimizer of fastnn.optim (GD, SGD, Adagrad, RMSprop,
Adam, AdamW) against their NumPy float64 formulas (PyTorch's definitions, in _ref) over
several steps and against torch.optim when torch is installed; gradient clipping;
get_config and state save/resume."""

import json

import numpy as np
import pytest

import fastnn
from fastnn import _C, nn, optim

import _ref
from _ref import (SIZES, RefAdagrad, RefAdam, RefAdamW, RefRMSprop, RefSGD, assert_close,
                  names_argument)


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
        assert_close(m, ref.state[0]["m"], 1e-5, 1e-6, f"adam_step {cfg} first moment step {t}")
        assert_close(v, ref.state[0]["v"], 1e-5, 1e-7, f"adam_step {cfg} second moment step {t}")


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


def _step_all(p, g, states, segments):
    """Each optimizer kernel once over (p, g) with its own state arrays (dict by name)."""
    _C.sgd_step(p[0], g, states["velocity"], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01,
                segments=segments)
    _C.adam_step(p[1], g, states["m"], states["v"], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.01, step=3, decoupled=True, segments=segments)
    _C.adagrad_step(p[2], g, states["sum_sq"], lr=0.1, eps=1e-10, weight_decay=0.01, lr_decay=0.01,
                    step=2, segments=segments)
    _C.rmsprop_step(p[3], g, states["square_avg"], states["momentum_buf"], states["grad_avg"],
                    lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=True,
                    segments=segments)


def test_optimizer_segments_change_only_the_thread_split(rng):
    """With segments (each parameter's rows split between threads as the GEMM splits them),
    every element inside a segment gets the bits of the unsegmented step, on 1 and 2 threads,
    and the padding between segments is left as it was."""
    segments = np.array([[0, 613, 129], [79088, 613, 1], [79712, 3, 5], [79728, 1, 7],
                         [79736, 0, 9], [79736, 40000, 1]], np.int64)
    n = 119737
    inside = np.zeros(n, bool)
    for off, r, c in segments:
        inside[off:off + r * c] = True
    assert (~inside).sum() > 10  # padding to watch
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    names = ("velocity", "m", "v", "sum_sq", "square_avg", "momentum_buf", "grad_avg")
    s0 = {k: np.abs(rng.standard_normal(n)).astype(np.float32) + 1 for k in names}
    results = {}
    for threads in (1, 2):
        _ref.use_threads(threads)
        for seg in (None, segments):
            p = [p0.copy() for _ in range(4)]
            states = {k: v.copy() for k, v in s0.items()}
            _step_all(p, g, states, seg)
            results[threads, seg is None] = p + [states[k] for k in names]
    for threads in (1, 2):
        for got, plain, start in zip(results[threads, False], results[1, True], [p0] * 4 + [s0[k] for k in names]):
            np.testing.assert_array_equal(got[inside], plain[inside])
            np.testing.assert_array_equal(got[~inside], start[~inside])
            assert not np.array_equal(got[inside], start[inside])


@pytest.mark.parametrize("segments, message", [
    (np.zeros((2, 2), np.int64), "shape"), (np.zeros((1, 3)), "integers"),
    ([[0, 5, 1], [4, 1, 1]], "before"), ([[0, 2, 3], [6, 1, 2]], "past"), ([[0, -1, 3]], "negative"),
    ([[2**62, 2**62, 4]], "past")])
def test_optimizer_segments_are_checked(segments, message):
    p, g, m, v = (np.zeros(7, np.float32) for _ in range(4))
    with pytest.raises((TypeError, ValueError)) as info:
        _C.adam_step(p, g, m, v, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1,
                     segments=segments)
    assert "segments" in str(info.value) and message in str(info.value), str(info.value)


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


def test_assigned_data_and_grad_are_taken_back_at_step(rng):
    """p.data = w (PyTorch's way) after binding: the step updates w's values, and so does the
    next one (an update of the optimizer's stale copy left the layer untrained, silently)."""
    layer = nn.Dense(4, 3)
    opt = optim.SGD(layer.parameters(), lr=0.5)
    w = rng.standard_normal((3, 4))  # float64: taken in as float32
    g = rng.standard_normal((3, 4)).astype(np.float32)
    layer.weight.data = w
    layer.weight.grad = g.copy()
    opt.step()
    want = w.astype(np.float32) - np.float32(0.5) * g
    np.testing.assert_array_equal(layer.weight.data, want)
    layer.weight.grad[...] = g
    opt.step()
    np.testing.assert_array_equal(layer.weight.data, want - np.float32(0.5) * g)
    layer.bias.data = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"parameter 1 \(bias\).*shape \(3,\).*\(5,\)"):
        opt.step()


def test_layer_shared_by_two_compiled_models_trains_under_both(rng):
    """As two torch optimizers over one parameter: each model's fit updates the shared layer
    from its current values (compiling the second moved it into that optimizer's buffer)."""
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    shared = nn.Dense(8, 2)
    a = nn.Sequential(nn.Dense(4, 8, activation="relu"), shared)
    b = nn.Sequential(nn.Dense(4, 8), shared)
    a.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.5))
    b.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.5))
    for model in (a, b, a):
        before = shared.weight.data.copy()
        # one full batch, the step by hand: the gradient at the current values
        loss = model.compiled.loss
        model.zero_grad()
        loss(model(X), y)
        model.backward(loss.backward())
        want = before - np.float32(0.5) * shared.weight.grad
        model.fit(X, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
        np.testing.assert_allclose(shared.weight.data, want, rtol=1e-5, atol=1e-6)


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


# name -> (fastnn class, reference, torch class name, constructor kwargs)
CASES = {
    "gd": (optim.GD, RefSGD, "SGD", dict(lr=0.1)),
    "sgd-momentum": (optim.SGD, RefSGD, "SGD", dict(lr=0.05, momentum=0.9)),
    "sgd-nesterov-wd": (optim.SGD, RefSGD, "SGD", dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.1)),
    "adagrad": (optim.Adagrad, RefAdagrad, "Adagrad", dict(lr=0.1)),
    "adagrad-decay-wd": (optim.Adagrad, RefAdagrad, "Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, eps=1e-6)),
    "rmsprop": (optim.RMSprop, RefRMSprop, "RMSprop", dict(lr=0.01)),
    "rmsprop-momentum": (optim.RMSprop, RefRMSprop, "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.8)),
    "rmsprop-centered": (optim.RMSprop, RefRMSprop, "RMSprop", dict(lr=0.005, centered=True)),
    "rmsprop-all": (optim.RMSprop, RefRMSprop, "RMSprop",
                    dict(lr=0.005, alpha=0.95, eps=1e-6, weight_decay=0.05, momentum=0.5, centered=True)),
    "adam": (optim.Adam, RefAdam, "Adam", dict(lr=1e-3)),
    "adam-wd": (optim.Adam, RefAdam, "Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    "adamw": (optim.AdamW, RefAdamW, "AdamW", dict(lr=1e-3)),
    "adamw-tuned": (optim.AdamW, RefAdamW, "AdamW", dict(lr=0.05, betas=(0.85, 0.995), eps=1e-6, weight_decay=0.2)),
}
SHAPES = [(5, 7), (5,), (129,)]


def make_params(rng, steps):
    """Parameters of odd sizes with known values, and one gradient list per step."""
    params = [nn.Parameter(rng.standard_normal(s)) for s in SHAPES]
    init = [p.data.copy() for p in params]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
    return params, init, grads


def run(opt, params, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad[...] = gi
        opt.step()


def torch_run(torch, cls_name, kw, init, grads, clip_norm=None):
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = getattr(torch.optim, cls_name)(tparams, **kw)
    for g in grads:
        for tp, gi in zip(tparams, g):
            tp.grad = torch.tensor(gi.copy())
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(tparams, clip_norm)
        topt.step()
    return [tp.detach().numpy().astype(np.float64) for tp in tparams]


# ----------------------------------------------------------------------------- against the formulas and torch
@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_against_numpy_formula(case, rng):
    cls, ref_cls, _, kw = CASES[case]
    params, init, grads = make_params(rng, 20)
    opt = cls(params, **kw)
    ref = ref_cls(init, **kw)
    for t, g in enumerate(grads):
        run(opt, params, [g])
        ref.step(g)
        for i, p in enumerate(params):
            assert_close(p.data, ref.p[i], 2e-5, 2e-6, f"{case} param {i} step {t + 1}")


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_against_torch(case, rng):
    torch = pytest.importorskip("torch")
    cls, _, torch_name, kw = CASES[case]
    params, init, grads = make_params(rng, 20)
    run(cls(params, **kw), params, grads)
    expected = torch_run(torch, torch_name, kw, init, grads)
    for i, p in enumerate(params):
        assert_close(p.data, expected[i], 1e-5, 1e-5, f"{case} vs torch.optim.{torch_name}, param {i}")


@pytest.mark.parametrize("case", ["sgd-momentum", "rmsprop-all", "adamw-tuned"])
def test_lr_changed_between_steps_is_used(case, rng):
    cls, ref_cls, _, kw = CASES[case]
    params, init, grads = make_params(rng, 6)
    opt = cls(params, **kw)
    ref = ref_cls(init, **kw)
    for t, g in enumerate(grads):
        opt.lr = kw["lr"] * 0.5 ** t
        run(opt, params, [g])
        ref.step(g, lr=kw["lr"] * 0.5 ** t)
    for i, p in enumerate(params):
        assert_close(p.data, ref.p[i], 2e-5, 2e-6, f"{case} with a changing lr, param {i}")


# ----------------------------------------------------------------------------- clipping
def global_norm(grads):
    return np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads))


def test_clip_norm_rescales_all_gradients_together(rng):
    params, init, grads = make_params(rng, 1)
    g = grads[0]
    norm = global_norm(g)
    clip = norm / 3
    opt = optim.GD(params, lr=1.0, clip_norm=clip)
    run(opt, params, [g])
    factor = clip / (norm + 1e-6)
    for p, p0, gi in zip(params, init, g):
        assert_close(p.data, p0 - factor * np.asarray(gi, np.float64), 1e-5, 1e-6, "GD with clip_norm")
        assert_close(p.grad, factor * np.asarray(gi, np.float64), 1e-5, 1e-7, "grad clipped in place")
    assert abs(global_norm([p.grad for p in params]) - clip) < 1e-5 * clip


def test_clip_norm_leaves_small_gradients_alone(rng):
    params, _, grads = make_params(rng, 1)
    opt = optim.Adam(params, clip_norm=global_norm(grads[0]) * 1.01)
    run(opt, params, grads)
    for p, g in zip(params, grads[0]):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_value_clamps_each_entry(rng):
    params, init, grads = make_params(rng, 1)
    g = [3 * gi for gi in grads[0]]
    run(optim.GD(params, lr=0.5, clip_value=0.8), params, [g])
    for p, p0, gi in zip(params, init, g):
        clipped = np.clip(np.asarray(gi, np.float64), -0.8, 0.8)
        assert_close(p.data, p0 - 0.5 * clipped, 1e-6, 1e-7, "GD with clip_value")
        np.testing.assert_array_equal(p.grad, np.clip(gi, np.float32(-0.8), np.float32(0.8)))


def test_clip_norm_then_value(rng):
    params, init, grads = make_params(rng, 1)
    g = grads[0]
    norm = global_norm(g)
    run(optim.GD(params, lr=1.0, clip_norm=norm / 2, clip_value=0.3), params, [g])
    factor = (norm / 2) / (norm + 1e-6)
    for p, p0, gi in zip(params, init, g):
        expected = np.clip(factor * np.asarray(gi, np.float64), -0.3, 0.3)
        assert_close(p.data, p0 - expected, 1e-5, 1e-6, "clip_norm then clip_value")


@pytest.mark.parametrize("case", ["gd", "sgd-nesterov-wd", "adagrad", "rmsprop-all", "adam", "adamw-tuned"])
def test_clip_norm_against_torch(case, rng):
    torch = pytest.importorskip("torch")
    cls, _, torch_name, kw = CASES[case]
    params, init, grads = make_params(rng, 20)
    clip = 0.5 * float(np.median([global_norm(g) for g in grads]))  # about half the steps clip
    run(cls(params, clip_norm=clip, **kw), params, grads)
    expected = torch_run(torch, torch_name, kw, init, grads, clip_norm=clip)
    for i, p in enumerate(params):
        assert_close(p.data, expected[i], 1e-5, 1e-5, f"{case} with clip_norm vs torch, param {i}")


# ----------------------------------------------------------------------------- names, config, state
def test_get_knows_every_optimizer():
    expected = {"gd": optim.GD, "sgd": optim.SGD, "momentum": optim.SGD, "nesterov": optim.SGD,
                "adagrad": optim.Adagrad, "rmsprop": optim.RMSprop, "adam": optim.Adam, "adamw": optim.AdamW}
    for name, cls in expected.items():
        assert type(optim.get(name)) is cls
        assert type(optim.get(name.upper(), lr=0.5)) is cls and optim.get(name, lr=0.5).lr == 0.5
    assert optim.get("momentum").momentum == 0.9 and optim.get("nesterov").nesterov
    assert optim.AdamW().weight_decay == 0.01 and optim.Adam().weight_decay == 0.0
    with pytest.raises(ValueError) as info:
        optim.get("lion")
    assert "lion" in str(info.value) and "adamw" in str(info.value)


@pytest.mark.parametrize("case", list(CASES))
def test_get_config_round_trip(case):
    cls, _, _, kw = CASES[case]
    opt = cls(**kw, clip_norm=1.5)
    config = opt.get_config()
    assert config["class"] == cls.__name__ and config["lr"] == kw["lr"] and config["clip_norm"] == 1.5
    for key, value in kw.items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value), key
    config = json.loads(json.dumps(config))
    rebuilt = optim.from_config(config)
    assert type(rebuilt) is cls and rebuilt.get_config() == config


@pytest.mark.parametrize("case", list(CASES))
def test_state_arrays_resume_bit_identically(case, rng):
    cls, _, _, kw = CASES[case]
    params, _, grads = make_params(rng, 16)
    opt = cls(params, **kw)
    run(opt, params, grads[:8])
    saved_params = [p.data.copy() for p in params]
    state = opt.state_arrays()
    assert state["step"].dtype == np.int64 and state["step"].shape == () and int(state["step"]) == 8
    for key in state:
        if key != "step":
            index, name = key.split(".", 1)
            assert state[key].shape == params[int(index)].shape and name.isidentifier(), key
    resumed_params = [nn.Parameter(a) for a in saved_params]
    resumed = optim.from_config(opt.get_config()).bind(resumed_params)
    resumed.load_state_arrays({**state, "step": state["step"].reshape(1)})  # as a file may hold it
    run(opt, params, grads[8:])
    run(resumed, resumed_params, grads[8:])
    for p, q in zip(params, resumed_params):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_array_names():
    params = [nn.Parameter(np.zeros((2, 3))), nn.Parameter(np.zeros(2))]
    names = {
        optim.GD(params): set(),
        optim.SGD(params, momentum=0.9): {"momentum_buffer"},
        optim.Adagrad(params): {"sum"},
        optim.RMSprop(params, momentum=0.5, centered=True): {"square_avg", "momentum_buffer", "grad_avg"},
        optim.RMSprop(params): {"square_avg"},
        optim.Adam(params): {"exp_avg", "exp_avg_sq"},
        optim.AdamW(params): {"exp_avg", "exp_avg_sq"},
    }
    for opt, expected in names.items():
        keys = set(opt.state_arrays())
        assert keys == {"step"} | {f"{i}.{n}" for i in range(2) for n in expected}, (opt, keys)


def test_load_state_arrays_checks_and_changes_nothing_on_error(rng):
    params, _, grads = make_params(rng, 3)
    opt = optim.Adam(params)
    run(opt, params, grads)
    good = opt.state_arrays()
    bad_cases = [
        ({k: v for k, v in good.items() if k != "1.exp_avg"}, "1.exp_avg"),
        ({**good, "3.exp_avg": np.zeros(2)}, "3.exp_avg"),
        ({**good, "2.exp_avg_sq": np.zeros(128)}, "2.exp_avg_sq"),
        ({k: v for k, v in good.items() if k != "step"}, "step"),
        ({**good, "step": np.array([1.5])}, "step"),
        ({**good, "step": np.array([2, 3])}, "step"),
    ]
    for bad, key in bad_cases:
        with pytest.raises(ValueError) as info:
            opt.load_state_arrays(bad)
        assert key in str(info.value)
        for k, v in opt.state_arrays().items():
            np.testing.assert_array_equal(v, good[k])
    with pytest.raises(RuntimeError) as info:
        optim.Adam().load_state_arrays(good)
    assert "bind" in str(info.value)


@pytest.mark.parametrize("make,name", [
    (lambda: optim.Adagrad(lr_decay=-1.0), "lr_decay"),
    (lambda: optim.Adagrad(eps=0.0), "eps"),
    (lambda: optim.RMSprop(alpha=1.5), "alpha"),
    (lambda: optim.RMSprop(momentum=-0.1), "momentum"),
    (lambda: optim.RMSprop(weight_decay=-1.0), "weight_decay"),
    (lambda: optim.AdamW(weight_decay=-0.01), "weight_decay"),
    (lambda: optim.GD(lr=0.0), "lr"),
    (lambda: optim.Adam(clip_norm=0.0), "clip_norm"),
    (lambda: optim.SGD(clip_value=-1.0), "clip_value"),
    (lambda: optim.RMSprop(clip_norm=float("inf")), "clip_norm"),
])
def test_invalid_hyperparameters_name_the_argument(make, name):
    with pytest.raises(ValueError) as info:
        make()
    assert names_argument(str(info.value), name), str(info.value)


# ----------------------------------------------------------------------------- Adagrad, RMSprop and AdamW kernels on one array
class One:
    """A float64 reference of _ref run on one array: step(g), then .p."""

    def __init__(self, ref_cls, p, **kw):
        self.ref = ref_cls([p], **kw)

    def step(self, g):
        self.ref.step([g])

    @property
    def p(self):
        return self.ref.p[0]


def one(ref_cls):
    return lambda p, **kw: One(ref_cls, p, **kw)


class Adagrad:
    def __init__(self, p, **kw):
        self.p, self.s, self.kw, self.t = p.copy(), np.zeros_like(p), dict(kw), 0
        self.kw.setdefault("eps", 1e-10)
        self.kw.setdefault("weight_decay", 0.0)
        self.kw.setdefault("lr_decay", 0.0)

    def step(self, g):
        self.t += 1
        _C.adagrad_step(self.p, g, self.s, step=self.t, **self.kw)


class RMSprop:
    def __init__(self, p, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        self.p = p.copy()
        self.sq, self.buf, self.ga = (np.zeros_like(p) for _ in range(3))
        self.kw = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                       centered=centered)

    def step(self, g):
        _C.rmsprop_step(self.p, g, self.sq, self.buf if self.kw["momentum"] > 0 else None,
                        self.ga if self.kw["centered"] else None, **self.kw)


class AdamW:
    def __init__(self, p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self.p, self.m, self.v, self.t = p.copy(), np.zeros_like(p), np.zeros_like(p), 0
        self.kw = dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)

    def step(self, g):
        self.t += 1
        _C.adam_step(self.p, g, self.m, self.v, step=self.t, decoupled=True, **self.kw)


OPT_CASES = [
    ("adagrad", Adagrad, one(RefAdagrad), "Adagrad", dict(lr=0.1)),
    ("adagrad-decay-wd", Adagrad, one(RefAdagrad), "Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1)),
    ("rmsprop", RMSprop, one(RefRMSprop), "RMSprop", dict(lr=0.01)),
    ("rmsprop-momentum", RMSprop, one(RefRMSprop), "RMSprop", dict(lr=0.01, momentum=0.9, alpha=0.9)),
    ("rmsprop-centered", RMSprop, one(RefRMSprop), "RMSprop", dict(lr=0.01, centered=True, weight_decay=0.05)),
    ("rmsprop-all", RMSprop, one(RefRMSprop), "RMSprop",
     dict(lr=0.005, momentum=0.5, centered=True, weight_decay=0.01, eps=1e-6)),
    ("adamw", AdamW, one(RefAdamW), "AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("adamw-betas", AdamW, one(RefAdamW), "AdamW", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.5)),
]
OPT_IDS = [c[0] for c in OPT_CASES]


@pytest.mark.parametrize("case", OPT_CASES, ids=OPT_IDS)
@pytest.mark.parametrize("n", SIZES)
def test_optimizer_kernel_against_numpy_formula(case, n, rng):
    _, ours_cls, ref_cls, _, kw = case
    p0 = rng.standard_normal((n, 3)).astype(np.float32)
    ours, ref = ours_cls(p0, **kw), ref_cls(p0, **kw)
    for _ in range(6):
        g = rng.standard_normal(p0.shape).astype(np.float32)
        ours.step(g)
        ref.step(g)
    assert_close(ours.p, ref.p, 2e-5, 2e-5, f"{case[0]} n={n} vs NumPy")


@pytest.mark.parametrize("case", OPT_CASES, ids=OPT_IDS)
def test_optimizer_kernel_against_torch(case, rng):
    torch = pytest.importorskip("torch")
    name, ours_cls, _, torch_name, kw = case
    p0 = rng.standard_normal((129, 7)).astype(np.float32)
    ours = ours_cls(p0, **kw)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = getattr(torch.optim, torch_name)([tp], **kw)
    for _ in range(20):
        g = rng.standard_normal(p0.shape).astype(np.float32)
        ours.step(g)
        tp.grad = torch.tensor(g.copy())
        topt.step()
    assert_close(ours.p, tp.detach().numpy().astype(np.float64), 2e-5, 2e-5, f"{name} vs torch")


def test_adam_decoupled_differs_from_l2(rng):
    p = rng.standard_normal(50).astype(np.float32)
    g = rng.standard_normal(50).astype(np.float32)
    a, b = p.copy(), p.copy()
    for t, dec in ((a, False), (b, True)):
        _C.adam_step(t, g, np.zeros_like(p), np.zeros_like(p), lr=0.1, beta1=0.9, beta2=0.999,
                     eps=1e-8, weight_decay=0.5, step=1, decoupled=dec)
    assert not np.allclose(a, b)
    # With weight decay 0 both are plain Adam.
    c, d = p.copy(), p.copy()
    for t, dec in ((c, False), (d, True)):
        _C.adam_step(t, g, np.zeros_like(p), np.zeros_like(p), lr=0.1, beta1=0.9, beta2=0.999,
                     eps=1e-8, weight_decay=0.0, step=1, decoupled=dec)
    assert np.array_equal(c, d)


def test_optimizer_kernel_bad_arguments():
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    z = np.zeros(4, np.float32)
    rms = dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0)
    _ref.raises(_C.rmsprop_step, p, g, z.copy(), None, None, momentum=0.9, centered=False, **rms,
           exc=ValueError, mentions=("momentum_buf",))
    _ref.raises(_C.rmsprop_step, p, g, z.copy(), None, None, momentum=0.0, centered=True, **rms,
           exc=ValueError, mentions=("grad_avg",))
    _ref.raises(_C.rmsprop_step, p, g, np.zeros(5, np.float32), None, None, momentum=0.0, centered=False,
           **rms, exc=ValueError, mentions=("square_avg",))
    _ref.raises(_C.rmsprop_step, p, g, np.zeros(4), None, None, momentum=0.0, centered=False, **rms,
           exc=TypeError, mentions=("square_avg",))
    _ref.raises(_C.rmsprop_step, p, g, z.copy(), None, None, momentum=-0.5, centered=False, **rms,
           exc=ValueError, mentions=("momentum",))
    ada = dict(lr=0.1, eps=1e-10, weight_decay=0.0, lr_decay=0.0)
    _ref.raises(_C.adagrad_step, p, g, z.copy(), step=0, **ada, exc=ValueError, mentions=("step",))
    _ref.raises(_C.adagrad_step, p.astype(np.float64), g, z.copy(), step=1, **ada, exc=TypeError,
           mentions=("param",))
    _ref.raises(_C.adagrad_step, p, np.ones(3, np.float32), z.copy(), step=1, **ada, exc=ValueError,
           mentions=("grad",))
    _ref.raises(_C.adagrad_step, p, g, np.zeros(3, np.float32), step=1, **ada, exc=ValueError,
           mentions=("sum_sq",))
    # Untouched when the check fails.
    assert np.array_equal(p, np.ones(4, np.float32))


def test_a_parameter_moved_to_a_device_since_binding_is_refused_not_copied_back():
    """An optimizer of one's own, not bound again after model.to(...): taking the device
    array into its host buffer would move the layer back to the host unseen."""
    from fastnn.nn.module import place
    from fastnn.tensor import Tensor

    model = nn.Sequential(nn.Dense(3, 2))
    opt = optim.SGD(model.parameters(), lr=0.1)
    place(model, Tensor(_C.DeviceArray.empty([0], "float32", "cpu")))
    with pytest.raises(RuntimeError, match=r"SGD: parameter 0.* is now a Tensor on cpu, this "
                                           r"optimizer's buffer a NumPy array: bind it again"):
        opt.step()


def test_clip_norm_of_a_nan_gradient_makes_every_gradient_nan_as_torch():
    """Found by an attack: a NaN gradient made the norm NaN, the scale factor NaN, and
    `factor < 1` False: the other gradients went into the step unclipped (a norm of 1414
    under clip_norm=1). torch.nn.utils.clip_grad_norm_ scales them all by NaN."""
    a, b = nn.Parameter(np.zeros(1, np.float32)), nn.Parameter(np.zeros(2, np.float32))
    opt = optim.SGD([a, b], lr=0.1, clip_norm=1.0)
    a.grad[...] = np.nan
    b.grad[...] = 1000.0
    opt.step()
    assert np.isnan(b.grad).all() and np.isnan(b.data).all()
    b.grad[...] = 1000.0  # and a finite one is still clipped to the norm
    a.grad[...] = 0.0
    opt.step()
    np.testing.assert_allclose(np.linalg.norm(b.grad), 1.0, rtol=1e-5)


def test_a_parameter_bound_twice_warns_and_takes_one_update():
    p = nn.Parameter(np.ones(3, np.float32), "w")
    q = nn.Parameter(np.ones(2, np.float32))
    with pytest.warns(UserWarning, match=r"params\[2\] \(w\) is params\[0\] again"):
        opt = optim.SGD([p, q, p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(p.data, 0.9, rtol=1e-6)


@pytest.mark.parametrize("betas", [{0.9, 0.99}, frozenset({0.5, 0.6}), {0.9: 1, 0.99: 2}.keys()])
def test_adam_betas_without_an_order_are_refused_by_name(betas):
    with pytest.raises(ValueError, match="betas must be a pair"):
        optim.Adam([nn.Parameter(np.ones(3, np.float32))], betas=betas)


def test_the_duplicate_parameter_warning_names_the_caller_s_line():
    p = nn.Parameter(np.ones(3, np.float32))
    with pytest.warns(UserWarning, match="again") as caught:
        optim.Adam([p, p])
        optim.SGD(None, lr=0.1).bind([p, p])
    assert [w.filename for w in caught] == [__file__, __file__]
