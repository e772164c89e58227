"""The course's layers and model tools: ELU/GELU/Softplus, Dense with every activation, init,
L1/L2, Flatten, Dropout, state_dict / get_config, and the probabilities-into-logits warnings.
References are NumPy float64 formulas and finite differences."""

import json
import math
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import _C, init, losses, nn

import _ref
from _ref import assert_close, f64, names_argument, sample_indices

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# ----------------------------------------------------------------------------- float64 formulas
def act_forward(name, z, alpha):
    z = f64(z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z ** 3)))
    if name == "softplus":
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    return _ref.act_forward(name, z, alpha)


def act_derivative(name, z, alpha):
    z = f64(z)
    if name == "elu":
        return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))
    if name == "gelu":
        u = SQRT_2_OVER_PI * (z + 0.044715 * z ** 3)
        t = np.tanh(u)
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * z * z)
    if name == "softplus":
        return _ref.sigmoid(z)
    return _ref.act_derivative(name, z, alpha)


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
    assert_close(y, act_forward(name, x, alpha), 1e-5, 1e-6, f"{layer!r} forward")
    assert_close(layer.backward(g), g * act_derivative(name, x, alpha), 1e-4, 1e-6, f"{layer!r} backward")


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
    dz = f64(g) * act_derivative(name, z, alpha)
    return act_forward(name, z, alpha), dz @ W, dz.T @ f64(x), dz.sum(axis=0)


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
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError) as info:
            nn.Dropout(p)
        assert names_argument(str(info.value), "p")
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


def test_bce_from_logits_warns_on_sigmoid_outputs(rng):
    z = rng.standard_normal((32, 1)).astype(np.float32)
    t = rng.integers(0, 2, (32, 1))
    p = nn.Sigmoid()(z)
    messages = caught(lambda: losses.BinaryCrossEntropy()(p, t))
    assert len(messages) == 1 and "from_logits=False" in messages[0], messages
    assert caught(lambda: losses.BinaryCrossEntropy(from_logits=False)(p, t)) == []
    assert caught(lambda: losses.BinaryCrossEntropy()(z, t)) == []
