"""The course's kernels (issue 4) in fastnn._C against NumPy float64 formulas: the new
activations (also fused in the GEMM epilogue), the Philox stream, dropout, the clipping
reductions, L1/L2 penalties, Adagrad / RMSprop / AdamW (also against torch.optim), and
image augmentation. Nothing expected here is computed by fastnn."""

import math

import numpy as np
import pytest

from fastnn import _C

import _ref
from _ref import SIZES, assert_close, central_diff, names_argument, sample_indices, use_threads
from test_gemm import EPS32, operands, reference

NEW_ACTIVATIONS = ["elu", "gelu", "softplus"]
SHAPES = [(s, c) for s in SIZES for c in (1, 7, 129)]
GELU_K = math.sqrt(2.0 / math.pi)


def raises(fn, *args, exc=(TypeError, ValueError), mentions=(), **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    msg = str(info.value)
    for name in mentions:
        assert names_argument(msg, name), f"message does not name {name!r}: {msg}"
    return msg


# ============================================================================ activations
def act64(name, x, alpha=1.0):
    x = np.asarray(x, np.float64)
    if name == "elu":
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    if name == "gelu":
        return 0.5 * x * (1.0 + np.tanh(GELU_K * (x + 0.044715 * x ** 3)))
    if name == "softplus":
        return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
    raise KeyError(name)


def dact64(name, x, alpha=1.0):
    x = np.asarray(x, np.float64)
    if name == "elu":
        return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))
    if name == "gelu":
        t = np.tanh(GELU_K * (x + 0.044715 * x ** 3))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3 * 0.044715 * x * x)
    if name == "softplus":
        return _ref.sigmoid(x)
    raise KeyError(name)


def away_from_zero(rng, shape, scale=4.0, margin=0.05):
    mag = rng.uniform(margin, scale, size=shape)
    return (mag * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)


def backward(name, x, g, alpha=1.0):
    y = _C.activation_forward(name, x, alpha)
    return _C.activation_backward(name, y, g, alpha, x=x)


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_new_activation_forward(name, shape, rng):
    x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    y = _C.activation_forward(name, x, 1.0)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == x.shape
    assert_close(y, act64(name, x), rtol=1e-5, atol=1e-7, what=f"{name} forward {shape}")


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_new_activation_backward(name, shape, rng):
    x = away_from_zero(rng, shape)
    g = rng.standard_normal(shape).astype(np.float32)
    gx = backward(name, x, g)
    assert gx.dtype == np.float32 and gx.shape == x.shape
    assert_close(gx, dact64(name, x) * g, rtol=1e-5, atol=1e-6, what=f"{name} backward {shape}")


@pytest.mark.parametrize("name,alpha", [("elu", 1.0), ("elu", 0.3), ("gelu", 1.0), ("softplus", 1.0)])
def test_new_activation_backward_finite_differences(name, alpha, rng):
    x = away_from_zero(rng, (7, 129))
    g = rng.standard_normal(x.shape)
    gx = backward(name, x, g.astype(np.float32), alpha)
    idx = sample_indices(rng, x.size, 40)
    fd = central_diff(lambda z: float(np.sum(g * act64(name, z, alpha))), x, indices=idx)
    assert_close(gx.reshape(-1)[idx], fd.reshape(-1)[idx], rtol=1e-4, atol=1e-5,
                 what=f"{name} backward vs FD")


def test_elu_alpha_scales_negative_side(rng):
    x = away_from_zero(rng, (127, 7))
    for alpha in (0.1, 1.0, 2.5):
        y = _C.activation_forward("elu", x, alpha)
        assert_close(y, act64("elu", x, alpha), 1e-5, 1e-7, f"elu alpha={alpha}")
        g = rng.standard_normal(x.shape).astype(np.float32)
        gx = _C.activation_backward("elu", y, g, alpha)   # from y alone, no x
        assert_close(gx, dact64("elu", x, alpha) * g, 1e-5, 1e-6, f"elu backward alpha={alpha}")


def test_extreme_inputs_stay_finite_and_exact():
    x = np.array([-1e30, -1e4, -200.0, -88.0, -30.0, -1e-6, 0.0, 1e-6, 30.0, 88.0, 200.0, 1e4, 1e30],
                 np.float32)
    for name in NEW_ACTIVATIONS:
        y = _C.activation_forward(name, x, 1.0)
        assert np.all(np.isfinite(y)), f"{name}: {y}"
        assert_close(y, act64(name, x), 1e-6, 1e-30, f"{name} at extremes")
        gx = backward(name, x, np.ones_like(x))
        assert np.all(np.isfinite(gx)), f"{name} backward: {gx}"
        # elu' = y + alpha is rounded at y's absolute precision (~ eps32 * alpha)
        assert_close(gx, dact64(name, x), 1e-5, 1e-7, f"{name}' at extremes")
    # softplus(x) == x for large x and log1p(e^x) ~ e^x for very negative x: no overflow, no 0 - 0
    sp = _C.activation_forward("softplus", np.array([100.0, -20.0], np.float32))
    assert sp[0] == 100.0 and abs(sp[1] / math.exp(-20.0) - 1.0) < 1e-6


def test_activation_backward_x_is_ignored_except_by_gelu(rng):
    x = away_from_zero(rng, (7, 7))
    g = rng.standard_normal(x.shape).astype(np.float32)
    junk = np.full_like(x, 123.0)
    for name in ["identity", "sigmoid", "relu", "tanh", "leaky_relu", "elu", "softplus"]:
        y = _C.activation_forward(name, x, 1.0)
        assert np.array_equal(_C.activation_backward(name, y, g, 1.0),
                              _C.activation_backward(name, y, g, 1.0, x=junk)), name
    y = _C.activation_forward("gelu", x)
    assert not np.array_equal(_C.activation_backward("gelu", y, g, x=x),
                              _C.activation_backward("gelu", y, g, x=junk))


def test_gelu_backward_needs_x():
    y = np.ones((3, 4), np.float32)
    msg = raises(_C.activation_backward, "gelu", y, y, exc=ValueError, mentions=("x",))
    assert "gelu" in msg
    raises(_C.activation_backward, "gelu", y, y, x=np.ones((4, 3), np.float32), exc=ValueError,
           mentions=("x",))
    raises(_C.activation_backward, "gelu", y, y, x=np.ones((3, 4), np.complex64), exc=TypeError,
           mentions=("x",))
    raises(_C.activation_backward, "elu", y, y, -1.0, exc=ValueError, mentions=("alpha",))


def test_activation_names():
    x = np.array([-1.0, 2.0], np.float32)
    assert np.array_equal(_C.activation_forward("linear", x), x)
    assert np.array_equal(_C.activation_forward("identity", x), x)
    msg = raises(_C.activation_forward, "swish", x, exc=ValueError)
    for name in ["swish"] + NEW_ACTIVATIONS:
        assert name in msg, msg


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
@pytest.mark.parametrize("m,n,k", [(33, 17, 13), (1000, 10, 300), (200, 200, 200), (515, 301, 100)])
def test_gemm_epilogue_new_activations(isa, name, m, n, k, rng):
    x, w = operands(rng, m, n, k, False, True)
    bias = rng.standard_normal(n).astype(np.float32)
    z, scale = reference(x, w, False, True)
    z = z + bias
    expected = act64(name, z, 1.0)
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


# ============================================================================ random numbers
MASK32 = 0xFFFFFFFF


def philox_ref(ctr, key):
    """Philox4x32-10 in plain Python integers (Salmon et al. 2011)."""
    c = list(ctr)
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & MASK32, (k1 + 0xBB67AE85) & MASK32
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & MASK32, (p0 >> 32) ^ c[3] ^ k1, p0 & MASK32]
    return c


def uniform_ref(n, seed, offset=0):
    """Element offset + i: lane (offset + i) % 4 of the block at counter (offset + i) // 4."""
    out = np.empty(n)
    for i in range(n):
        idx = offset + i
        blk = idx >> 2
        v = philox_ref([blk & MASK32, blk >> 32, 0, 0], [seed & MASK32, seed >> 32])[idx & 3]
        out[i] = (v >> 8) * 2.0 ** -24
    return out


def test_philox_reference_known_answers():
    # Random123's known-answer vectors for philox4x32-10.
    assert philox_ref([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox_ref([MASK32] * 4, [MASK32, MASK32]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert philox_ref([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.parametrize("seed,offset,n", [(0, 0, 4), (1, 0, 1), (7, 3, 7), (12345, 126, 129),
                                           (2 ** 40 + 17, 2 ** 34 - 5, 13), (2 ** 64 - 1, 2 ** 64 - 8, 8),
                                           # 16 blocks at a time (AVX-512), the block counter's
                                           # low word wrapping inside them, unaligned ends
                                           (5, 4 * (2 ** 32 - 9) + 1, 203), (2 ** 33 + 1, 64, 256)])
def test_random_uniform_is_philox(seed, offset, n):
    u = _C.random_uniform(n, seed, offset)
    assert u.dtype == np.float32 and u.shape == (n,)
    assert np.array_equal(u.astype(np.float64), uniform_ref(n, seed, offset))


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
    raises(_C.random_uniform, -1, 0, exc=ValueError, mentions=("n",))
    raises(_C.random_uniform, 3, -1, exc=ValueError, mentions=("seed",))
    raises(_C.random_uniform, 3, 2 ** 64, exc=ValueError, mentions=("seed",))
    raises(_C.random_uniform, 3, 1.5, exc=TypeError, mentions=("seed",))
    raises(_C.random_uniform, 3, 1, -4, exc=ValueError, mentions=("offset",))
    raises(_C.random_uniform, 3, 1, "x", exc=TypeError, mentions=("offset",))


# ============================================================================ dropout
def dropout_ref(x, p, seed, offset):
    keep = uniform_ref(x.size, seed, offset).reshape(x.shape) >= np.float32(p)
    return np.where(keep, np.asarray(x, np.float64) / (1.0 - p), 0.0), keep


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(1,), (7,), (127,), (128, 1), (3, 129)], ids=str)
def test_dropout_forward_backward_formula(p, shape, rng):
    x = away_from_zero(rng, shape)
    g = rng.standard_normal(shape).astype(np.float32)
    y = _C.dropout_forward(x, p, 11, 5)
    expected, keep = dropout_ref(x, p, 11, 5)
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
        raises(_C.dropout_forward, x, p, 0, 0, exc=ValueError, mentions=("p",))
        raises(_C.dropout_backward, x, p, 0, 0, exc=ValueError, mentions=("p",))
    raises(_C.dropout_forward, x, 0.5, -1, 0, exc=ValueError, mentions=("seed",))
    raises(_C.dropout_forward, x, 0.5, 0, None, exc=TypeError, mentions=("offset",))
    raises(_C.dropout_forward, np.ones(5, np.complex64), 0.5, 0, 0, exc=TypeError, mentions=("x",))
    raises(_C.dropout_backward, np.array(["a"]), 0.5, 0, 0, exc=TypeError, mentions=("grad_y",))


# ============================================================================ reductions
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


def test_clip_keeps_nan_and_scale_bad_arguments():
    x = np.array([np.nan, -5.0, 5.0], np.float32)
    _C.clip_(x, -1.0, 1.0)
    assert np.isnan(x[0]) and x[1] == -1.0 and x[2] == 1.0
    raises(_C.clip_, x, 1.0, -1.0, exc=ValueError, mentions=("low", "high"))
    raises(_C.scale_, np.ones(3), 2.0, exc=TypeError, mentions=("x",))              # float64
    raises(_C.clip_, np.ones((3, 4), np.float32).T, 0.0, 1.0, exc=ValueError, mentions=("x",))
    ro = np.ones(3, np.float32)
    ro.flags.writeable = False
    raises(_C.scale_, ro, 2.0, exc=ValueError, mentions=("x",))


# ============================================================================ L1 / L2 penalty
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
    p = away_from_zero(rng, (7, 9))
    l1, l2 = 0.05, 0.3
    g = np.zeros_like(p)
    _C.add_penalty_grad(p, g, l1, l2)
    fd = central_diff(lambda w: l1 * np.abs(w).sum() + l2 * (w ** 2).sum(), p)
    assert_close(g, fd, 1e-5, 1e-6, "penalty grad vs FD")


def test_add_penalty_grad_bad_arguments():
    p = np.ones((3, 4), np.float32)
    raises(_C.add_penalty_grad, p, np.ones(11, np.float32), 0.1, 0.1, exc=ValueError, mentions=("grad",))
    raises(_C.add_penalty_grad, p, np.ones((3, 4)), 0.1, 0.1, exc=TypeError, mentions=("grad",))
    raises(_C.add_penalty_grad, p, np.ones_like(p), -0.1, 0.0, exc=ValueError, mentions=("l1",))
    raises(_C.add_penalty_grad, p, np.ones_like(p), 0.0, float("nan"), exc=ValueError, mentions=("l2",))


# ============================================================================ optimizers
class RefAdagrad:
    def __init__(self, p, lr, eps=1e-10, weight_decay=0.0, lr_decay=0.0):
        self.p, self.s = np.asarray(p, np.float64).copy(), np.zeros(np.shape(p))
        self.lr, self.eps, self.wd, self.decay, self.t = lr, eps, weight_decay, lr_decay, 0

    def step(self, g):
        self.t += 1
        g = np.asarray(g, np.float64) + self.wd * self.p
        clr = self.lr / (1 + (self.t - 1) * self.decay)
        self.s += g * g
        self.p -= clr * g / (np.sqrt(self.s) + self.eps)


class RefRMSprop:
    def __init__(self, p, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        self.p = np.asarray(p, np.float64).copy()
        self.sq, self.buf, self.ga = (np.zeros(self.p.shape) for _ in range(3))
        self.lr, self.alpha, self.eps, self.wd, self.mom, self.centered = \
            lr, alpha, eps, weight_decay, momentum, centered

    def step(self, g):
        g = np.asarray(g, np.float64) + self.wd * self.p
        self.sq = self.alpha * self.sq + (1 - self.alpha) * g * g
        var = self.sq
        if self.centered:
            self.ga = self.alpha * self.ga + (1 - self.alpha) * g
            var = self.sq - self.ga ** 2
        avg = np.sqrt(var) + self.eps
        if self.mom > 0:
            self.buf = self.mom * self.buf + g / avg
            self.p -= self.lr * self.buf
        else:
            self.p -= self.lr * g / avg


class RefAdamW:
    def __init__(self, p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self.p = np.asarray(p, np.float64).copy()
        self.m, self.v = np.zeros(self.p.shape), np.zeros(self.p.shape)
        self.lr, (self.b1, self.b2), self.eps, self.wd, self.t = lr, betas, eps, weight_decay, 0

    def step(self, g):
        self.t += 1
        g = np.asarray(g, np.float64)
        self.p *= 1 - self.lr * self.wd
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        mhat, vhat = self.m / (1 - self.b1 ** self.t), self.v / (1 - self.b2 ** self.t)
        self.p -= self.lr * mhat / (np.sqrt(vhat) + self.eps)


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
    ("adagrad", Adagrad, RefAdagrad, "Adagrad", dict(lr=0.1)),
    ("adagrad-decay-wd", Adagrad, RefAdagrad, "Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1)),
    ("rmsprop", RMSprop, RefRMSprop, "RMSprop", dict(lr=0.01)),
    ("rmsprop-momentum", RMSprop, RefRMSprop, "RMSprop", dict(lr=0.01, momentum=0.9, alpha=0.9)),
    ("rmsprop-centered", RMSprop, RefRMSprop, "RMSprop", dict(lr=0.01, centered=True, weight_decay=0.05)),
    ("rmsprop-all", RMSprop, RefRMSprop, "RMSprop",
     dict(lr=0.005, momentum=0.5, centered=True, weight_decay=0.01, eps=1e-6)),
    ("adamw", AdamW, RefAdamW, "AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("adamw-betas", AdamW, RefAdamW, "AdamW", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.5)),
]
OPT_IDS = [c[0] for c in OPT_CASES]


@pytest.mark.parametrize("case", OPT_CASES, ids=OPT_IDS)
@pytest.mark.parametrize("n", SIZES)
def test_optimizer_against_numpy_formula(case, n, rng):
    _, ours_cls, ref_cls, _, kw = case
    p0 = rng.standard_normal((n, 3)).astype(np.float32)
    ours, ref = ours_cls(p0, **kw), ref_cls(p0, **kw)
    for _ in range(6):
        g = rng.standard_normal(p0.shape).astype(np.float32)
        ours.step(g)
        ref.step(g)
    assert_close(ours.p, ref.p, 2e-5, 2e-5, f"{case[0]} n={n} vs NumPy")


@pytest.mark.parametrize("case", OPT_CASES, ids=OPT_IDS)
def test_optimizer_against_torch(case, rng):
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


def test_optimizer_bad_arguments():
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    z = np.zeros(4, np.float32)
    rms = dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0)
    raises(_C.rmsprop_step, p, g, z.copy(), None, None, momentum=0.9, centered=False, **rms,
           exc=ValueError, mentions=("momentum_buf",))
    raises(_C.rmsprop_step, p, g, z.copy(), None, None, momentum=0.0, centered=True, **rms,
           exc=ValueError, mentions=("grad_avg",))
    raises(_C.rmsprop_step, p, g, np.zeros(5, np.float32), None, None, momentum=0.0, centered=False,
           **rms, exc=ValueError, mentions=("square_avg",))
    raises(_C.rmsprop_step, p, g, np.zeros(4), None, None, momentum=0.0, centered=False, **rms,
           exc=TypeError, mentions=("square_avg",))
    raises(_C.rmsprop_step, p, g, z.copy(), None, None, momentum=-0.5, centered=False, **rms,
           exc=ValueError, mentions=("momentum",))
    ada = dict(lr=0.1, eps=1e-10, weight_decay=0.0, lr_decay=0.0)
    raises(_C.adagrad_step, p, g, z.copy(), step=0, **ada, exc=ValueError, mentions=("step",))
    raises(_C.adagrad_step, p.astype(np.float64), g, z.copy(), step=1, **ada, exc=TypeError,
           mentions=("param",))
    raises(_C.adagrad_step, p, np.ones(3, np.float32), z.copy(), step=1, **ada, exc=ValueError,
           mentions=("grad",))
    raises(_C.adagrad_step, p, g, np.zeros(3, np.float32), step=1, **ada, exc=ValueError,
           mentions=("sum_sq",))
    # Untouched when the check fails.
    assert np.array_equal(p, np.ones(4, np.float32))


# ============================================================================ augmentation
def geometry_ref(n, seed, offset, max_shift, flip, max_rotation):
    """(dx, dy, flipped, theta in radians) per image, from the documented stream layout."""
    u = uniform_ref(8 * n, seed, offset).reshape(n, 8)
    return [(max_shift * (2 * r[0] - 1), max_shift * (2 * r[1] - 1), bool(flip and r[2] < 0.5),
             math.radians(max_rotation * (2 * r[3] - 1))) for r in u]


def augment_ref(x, seed, offset, max_shift=0.0, flip=False, max_rotation=0.0):
    """Float64 reference without noise: content flipped, rotated about the centre, shifted;
    output pixel p samples the input bilinearly at the inverse image of p, zeros outside."""
    x4 = np.asarray(x, np.float64)
    x4 = x4 if x4.ndim == 4 else x4[:, None]
    n, c, h, w = x4.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros_like(x4)
    for i, (dx, dy, fl, th) in enumerate(geometry_ref(n, seed, offset, max_shift, flip, max_rotation)):
        px, py = xs - cx - dx, ys - cy - dy
        qx = math.cos(th) * px + math.sin(th) * py          # rotate back by -theta
        qy = -math.sin(th) * px + math.cos(th) * py
        qx = (-qx if fl else qx) + cx
        qy = qy + cy
        x0, y0 = np.floor(qx).astype(int), np.floor(qy).astype(int)
        ax, ay = qx - x0, qy - y0
        for ch in range(c):
            img = x4[i, ch]

            def at(yy, xx):
                ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
                return np.where(ok, img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0.0)

            def tap(weight, v):  # a zero weight takes nothing, not 0 * inf = NaN
                with np.errstate(invalid="ignore"):
                    return np.where(weight == 0, 0.0, weight * v)

            out[i, ch] = (tap(1 - ay, tap(1 - ax, at(y0, x0)) + tap(ax, at(y0, x0 + 1)))
                          + tap(ay, tap(1 - ax, at(y0 + 1, x0)) + tap(ax, at(y0 + 1, x0 + 1))))
    return out.reshape(np.shape(x))


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_augment_keeps_a_non_finite_pixel_to_itself(special):
    # Taps outside the image read pixel 0 with weight 0: an Inf/NaN there must not leak.
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x[:, 0, 0] = special
    for kw in ({"flip": True}, {"max_shift": 1.5}, {"max_rotation": 30.0}):
        y = _C.augment_images(x, seed=3, offset=0, **kw)
        expected = augment_ref(x, 3, 0, **kw)
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
    expect = [g[2] for g in geometry_ref(len(x), 5, 16, 0.0, True, 0.0)]
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
    for i, (dx, dy, _, _) in enumerate(geometry_ref(n, 9, 0, 3.0, False, 0.0)):
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
    for i, (_, _, _, th) in enumerate(geometry_ref(n, 4, 100, 0.0, False, 40.0)):
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
    assert_close(y, augment_ref(x, 21, 40, **kw), 0.0, 1e-5, f"augment {kw} {shape}")


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
    u = uniform_ref(4, 7, 0)
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
    raises(_C.augment_images, np.zeros((4, 4), np.float32), seed=0, offset=0, exc=ValueError,
           mentions=("x",))
    raises(_C.augment_images, np.zeros((1, 1, 1, 4, 4), np.float32), seed=0, offset=0,
           exc=ValueError, mentions=("x",))
    raises(_C.augment_images, x.astype(np.complex64), seed=0, offset=0, exc=TypeError, mentions=("x",))
    raises(_C.augment_images, x, seed=0, offset=0, max_shift=-1.0, exc=ValueError, mentions=("max_shift",))
    raises(_C.augment_images, x, seed=0, offset=0, max_rotation=float("inf"), exc=ValueError,
           mentions=("max_rotation",))
    raises(_C.augment_images, x, seed=0, offset=0, noise_std=float("nan"), exc=ValueError,
           mentions=("noise_std",))
    raises(_C.augment_images, x, seed=-3, offset=0, exc=ValueError, mentions=("seed",))
    raises(_C.augment_images, x, seed=0, offset=0.5, exc=TypeError, mentions=("offset",))
    with pytest.raises(TypeError):
        _C.augment_images(x, 0, 0)   # seed and offset are keyword-only
