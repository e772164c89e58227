"""Every optimizer (GD, SGD, Adagrad, RMSprop, Adam, AdamW) against its NumPy float64 formula
and torch.optim over 20 steps; gradient clipping; get_config and state save/resume."""

import json

import numpy as np
import pytest

from fastnn import nn, optim

from _ref import assert_close, names_argument


# ----------------------------------------------------------------------------- NumPy float64 formulas (torch's definitions)
class Ref:
    """One float64 copy of every parameter; ``step(grads)`` applies the optimizer's formula."""

    def __init__(self, params, **hyper):
        self.p = [np.asarray(p, np.float64).copy() for p in params]
        self.state = [{} for _ in self.p]
        self.h = hyper
        self.t = 0

    def step(self, grads, lr=None):
        self.t += 1
        lr = self.h["lr"] if lr is None else lr
        for i, g in enumerate(grads):
            self.p[i] = self.update(self.p[i], np.asarray(g, np.float64), self.state[i], lr)

    def zeros(self, s, key, p):
        return s.setdefault(key, np.zeros_like(p))


class RefSGD(Ref):
    def update(self, p, g, s, lr):
        mom, wd = self.h.get("momentum", 0.0), self.h.get("weight_decay", 0.0)
        d = g + wd * p
        if mom:
            s["buf"] = d.copy() if "buf" not in s else mom * s["buf"] + d
            d = d + mom * s["buf"] if self.h.get("nesterov") else s["buf"]
        return p - lr * d


class RefAdagrad(Ref):
    def update(self, p, g, s, lr):
        d = g + self.h.get("weight_decay", 0.0) * p
        clr = lr / (1 + (self.t - 1) * self.h.get("lr_decay", 0.0))
        s["sum"] = self.zeros(s, "sum", p) + d * d
        return p - clr * d / (np.sqrt(s["sum"]) + self.h.get("eps", 1e-10))


class RefRMSprop(Ref):
    def update(self, p, g, s, lr):
        alpha, eps = self.h.get("alpha", 0.99), self.h.get("eps", 1e-8)
        mom = self.h.get("momentum", 0.0)
        d = g + self.h.get("weight_decay", 0.0) * p
        s["sq"] = alpha * self.zeros(s, "sq", p) + (1 - alpha) * d * d
        if self.h.get("centered"):
            s["ga"] = alpha * self.zeros(s, "ga", p) + (1 - alpha) * d
            denom = np.sqrt(s["sq"] - s["ga"] ** 2) + eps
        else:
            denom = np.sqrt(s["sq"]) + eps
        if mom:
            s["buf"] = mom * self.zeros(s, "buf", p) + d / denom
            return p - lr * s["buf"]
        return p - lr * d / denom


class RefAdam(Ref):
    decoupled = False

    def update(self, p, g, s, lr):
        b1, b2 = self.h.get("betas", (0.9, 0.999))
        wd = self.h.get("weight_decay", 0.01 if self.decoupled else 0.0)
        if self.decoupled:
            p = p * (1 - lr * wd)
            d = g
        else:
            d = g + wd * p
        s["m"] = b1 * self.zeros(s, "m", p) + (1 - b1) * d
        s["v"] = b2 * self.zeros(s, "v", p) + (1 - b2) * d * d
        mhat = s["m"] / (1 - b1 ** self.t)
        vhat = s["v"] / (1 - b2 ** self.t)
        return p - lr * mhat / (np.sqrt(vhat) + self.h.get("eps", 1e-8))


class RefAdamW(RefAdam):
    decoupled = True


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


def make_problem(rng, steps):
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
    params, init, grads = make_problem(rng, 20)
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
    params, init, grads = make_problem(rng, 20)
    run(cls(params, **kw), params, grads)
    expected = torch_run(torch, torch_name, kw, init, grads)
    for i, p in enumerate(params):
        assert_close(p.data, expected[i], 1e-5, 1e-5, f"{case} vs torch.optim.{torch_name}, param {i}")


@pytest.mark.parametrize("case", ["sgd-momentum", "rmsprop-all", "adamw-tuned"])
def test_lr_changed_between_steps_is_used(case, rng):
    cls, ref_cls, _, kw = CASES[case]
    params, init, grads = make_problem(rng, 6)
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
    params, init, grads = make_problem(rng, 1)
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
    params, _, grads = make_problem(rng, 1)
    opt = optim.Adam(params, clip_norm=global_norm(grads[0]) * 1.01)
    run(opt, params, grads)
    for p, g in zip(params, grads[0]):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_value_clamps_each_entry(rng):
    params, init, grads = make_problem(rng, 1)
    g = [3 * gi for gi in grads[0]]
    run(optim.GD(params, lr=0.5, clip_value=0.8), params, [g])
    for p, p0, gi in zip(params, init, g):
        clipped = np.clip(np.asarray(gi, np.float64), -0.8, 0.8)
        assert_close(p.data, p0 - 0.5 * clipped, 1e-6, 1e-7, "GD with clip_value")
        np.testing.assert_array_equal(p.grad, np.clip(gi, np.float32(-0.8), np.float32(0.8)))


def test_clip_norm_then_value(rng):
    params, init, grads = make_problem(rng, 1)
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
    params, init, grads = make_problem(rng, 20)
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
    params, _, grads = make_problem(rng, 16)
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
    params, _, grads = make_problem(rng, 3)
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
