"""Independent NumPy float64 reference implementations used by the tests.

Nothing here calls fastnn: every expected value in the suite is computed from these
formulas (or from central finite differences of them) in float64.
"""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

EPS32 = float(np.finfo(np.float32).eps)
# Whether the suite runs under scripts/sanitize.sh (the ASan runtime preloaded).
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
SIZES = (1, 7, 127, 128, 129)
GELU_K = 0.7978845608028654  # sqrt(2 / pi)


def f64(x):
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------- activations
def sigmoid(x):
    x = f64(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def act_forward(name, x, alpha=0.01):
    x = f64(x)
    if name in (None, "identity", "linear"):
        return x.copy()
    if name == "sigmoid":
        return sigmoid(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if name == "elu":
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    if name == "gelu":  # tanh approximation, as x sigmoid(2u): 1 + tanh(u) cancels far left
        with np.errstate(over="ignore"):
            return x / (1.0 + np.exp(-2.0 * GELU_K * (x + 0.044715 * x ** 3)))
    if name == "softplus":
        return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
    raise KeyError(name)


def act_derivative(name, x, alpha=0.01):
    """f'(x), evaluated at the pre-activation x (float64). At NaN as in PyTorch: relu and
    elu select on x <= 0 (NaN passes the gradient), leaky_relu on x > 0 (NaN scales it);
    at +-inf the limits."""
    x = f64(x)
    if name in (None, "identity", "linear"):
        return np.ones_like(x)
    if name == "sigmoid":
        s = sigmoid(x)
        return s * (1.0 - s)
    if name == "relu":
        return np.where(x <= 0, 0.0, 1.0)
    if name == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, alpha)
    if name == "elu":
        return np.where(x <= 0, alpha * np.exp(np.minimum(x, 0.0)), 1.0)
    if name == "gelu":
        x = np.where(np.isinf(x), np.sign(x) * 40.0, x)  # flat past |x| = 40 in float64
        t = np.tanh(GELU_K * (x + 0.044715 * x ** 3))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3 * 0.044715 * x * x)
    if name == "softplus":
        return sigmoid(x)
    raise KeyError(name)


def softmax(x):
    x = f64(x)
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x):
    x = f64(x)
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax_backward(y, g):
    y, g = f64(y), f64(g)
    return y * (g - (g * y).sum(axis=1, keepdims=True))


# ----------------------------------------------------------------------------- losses
# Each returns (mean loss, gradient of the mean loss with respect to the prediction).
def mse(pred, target):
    d = f64(pred) - f64(target)
    return float(np.mean(d * d)), 2.0 * d / d.size


def bce_logits(z, t):
    z, t = f64(z), f64(t)
    per = np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))
    return float(per.mean()), (sigmoid(z) - t) / z.size


def bce_probs(p, t):
    p, t = f64(p), f64(t)
    per = -(t * np.log(p) + (1.0 - t) * np.log1p(-p))
    return float(per.mean()), (p - t) / (p * (1.0 - p)) / p.size


def cross_entropy(logits, labels):
    logits = f64(logits)
    labels = np.asarray(labels).astype(np.int64)
    m = logits.shape[0]
    ls = log_softmax(logits)
    loss = -ls[np.arange(m), labels].mean()
    grad = softmax(logits)
    grad[np.arange(m), labels] -= 1.0
    return float(loss), grad / m


def cross_entropy_soft(logits, target):
    logits, target = f64(logits), f64(target)
    m = logits.shape[0]
    ls = log_softmax(logits)
    loss = -(target * ls).sum(axis=1).mean()
    grad = softmax(logits) * target.sum(axis=1, keepdims=True) - target
    return float(loss), grad / m


def one_hot(labels, classes):
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


# ----------------------------------------------------------------------------- finite differences
def central_diff(f, x, eps=1e-6, indices=None):
    """Central finite differences of the scalar float64 function f at x (float64 copy).

    Returns an array of x's shape; only `indices` (flat) are filled when given, NaN
    elsewhere."""
    x = f64(x).copy()
    flat = x.reshape(-1)
    out = np.full(flat.shape, np.nan)
    idx = range(flat.size) if indices is None else indices
    for i in idx:
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        out[i] = (fp - fm) / (2.0 * eps)
    return out.reshape(x.shape)


def sample_indices(rng, size, count=24):
    if size <= count:
        return np.arange(size)
    return np.sort(rng.choice(size, size=count, replace=False))


# ----------------------------------------------------------------------------- assertions
def assert_close(actual, expected, rtol, atol, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    a = actual.astype(np.float64)
    assert np.all(np.isfinite(a)), f"{what}: non-finite values in result"
    err = np.abs(a - expected)
    tol = atol + rtol * np.abs(expected)
    bad = err > tol
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.size} elements out of tolerance; first at {i}: "
            f"got {a[i]!r}, expected {expected[i]!r} (|err|={err[i]:.3g}, tol={tol[i]:.3g}); "
            f"max |err|={err.max():.3g}"
        )


def raises(fn, *args, exc=(TypeError, ValueError), mentions=(), **kw):
    """fn(*args, **kw) must raise exc with a message naming every one of `mentions`."""
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    msg = str(info.value)
    for name in mentions:
        assert names_argument(msg, name), f"message does not name {name!r}: {msg}"
    return msg


def names_argument(message, *names):
    """True if the message mentions any of the names as a separate word."""
    return any(re.search(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])", message)
               for n in names)


# ----------------------------------------------------------------------------- convolution, pooling, batch norm
def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def im2col(x, kernel, stride=1, padding=0, dilation=1):
    """(n oh ow) x (c kh kw) float64: one row per output pixel, its patch in (c, ky, kx) order."""
    x = f64(x)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel, stride, padding, dilation))
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, oh, ow, c, kh, kw))
    for ky in range(kh):
        for kx in range(kw):
            cols[..., ky, kx] = xp[:, :, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                                   kx * dw:kx * dw + sw * (ow - 1) + 1:sw].transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, c * kh * kw), (oh, ow)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d in float64."""
    w = f64(w)
    oc, cg, kh, kw = w.shape
    n = np.shape(x)[0]
    col, (oh, ow) = im2col(x, (kh, kw), stride, padding, dilation)
    og, k = oc // groups, cg * kh * kw
    rows = np.concatenate([col[:, g * k:(g + 1) * k] @ w[g * og:(g + 1) * og].reshape(og, k).T
                           for g in range(groups)], axis=1)
    if b is not None:
        rows = rows + f64(b)
    return rows.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2)


def pool_windows(x, kernel, stride, padding, fill):
    """The (n, c, oh, ow, kh * kw) windows of a pooling, padded with `fill`, and their flat
    indices in the input plane (-1 in the padding)."""
    x = f64(x)
    (kh, kw), (ph, pw) = pair(kernel), pair(padding)
    sh, sw = pair(kernel if stride is None else stride)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    idx = np.full((h + 2 * ph, w + 2 * pw), -1)
    idx[ph:ph + h, pw:pw + w] = np.arange(h * w).reshape(h, w)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    win = np.empty((n, c, oh, ow, kh * kw))
    wid = np.empty((oh, ow, kh * kw), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            win[..., ky * kw + kx] = xp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
            wid[..., ky * kw + kx] = idx[ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
    return win, wid


def maxpool2d(x, kernel, stride=None, padding=0):
    """(y, argmax) as torch: the first of equal maxima, the last NaN, padding never chosen."""
    win, wid = pool_windows(x, kernel, stride, padding, -np.inf)
    n, c, oh, ow, kk = win.shape
    y = np.full((n, c, oh, ow), -np.inf)
    arg = np.broadcast_to(_first_valid(wid), (n, c, oh, ow)).copy()
    for t in range(kk):
        v, i = win[..., t], wid[..., t]
        take = (i >= 0) & ((v > y) | np.isnan(v))
        y = np.where(take, v, y)
        arg = np.where(take, i, arg)
    return y, arg


def _first_valid(wid):
    """Each window's first index inside the image (row-major), as torch's starting argmax."""
    first = np.argmax(wid >= 0, axis=-1)
    return np.take_along_axis(wid, first[..., None], axis=-1)[..., 0]


def maxpool2d_backward(g, argmax, input_shape):
    n, c, h, w = input_shape
    dx = np.zeros((n * c, h * w))
    per = int(np.prod(np.shape(g)[2:]))
    gf, af = f64(g).reshape(n * c, per), np.asarray(argmax).reshape(n * c, per)
    for p in range(n * c):
        np.add.at(dx[p], af[p], gf[p])
    return dx.reshape(input_shape)


def avgpool2d(x, kernel, stride=None, padding=0):
    win, _ = pool_windows(x, kernel, stride, padding, 0.0)
    return win.mean(axis=-1)


def avgpool2d_backward(g, input_shape, kernel, stride=None, padding=0):
    """The adjoint of avgpool2d: each output's gradient spread over its window's pixels."""
    n, c, h, w = input_shape
    _, wid = pool_windows(np.zeros(input_shape), kernel, stride, padding, 0.0)
    kk = wid.shape[-1]
    dx = np.zeros((n * c, h * w))
    gf = f64(g).reshape(n * c, int(np.prod(np.shape(g)[2:]))) / kk
    flat = wid.reshape(-1, kk)
    for t in range(kk):
        ok = flat[:, t] >= 0
        for p in range(n * c):
            np.add.at(dx[p], flat[ok, t], gf[p][ok])
    return dx.reshape(input_shape)


def batchnorm(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """(y, new running mean, new running var, mean used, invstd used), torch's formulas."""
    x = f64(x)
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    rm, rv = f64(running_mean), f64(running_var)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        count = x.size // x.shape[1]
        rm = (1 - momentum) * rm + momentum * mean
        rv = (1 - momentum) * rv + momentum * var * count / max(count - 1, 1)
    else:
        mean, var = rm, rv
    invstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean.reshape(shape)) * invstd.reshape(shape)
    if gamma is not None:
        y = y * f64(gamma).reshape(shape)
    if beta is not None:
        y = y + f64(beta).reshape(shape)
    return y, rm, rv, mean, invstd


def batchnorm_backward(x, g, gamma, mean, invstd, training):
    """(dx, dgamma, dbeta) of batchnorm, with the statistics it used."""
    x, g = f64(x), f64(g)
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - f64(mean).reshape(shape)) * f64(invstd).reshape(shape)
    dbeta, dgamma = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    w = np.ones(x.shape[1]) if gamma is None else f64(gamma)
    k = (w * f64(invstd)).reshape(shape)
    if not training:
        return k * g, dgamma, dbeta
    count = x.size // x.shape[1]
    dx = k * (g - (dbeta / count).reshape(shape) - xhat * (dgamma / count).reshape(shape))
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------- random numbers, dropout, augmentation
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
    """Element offset + i: lane (offset + i) % 4 of the block at counter (offset + i) // 4,
    the index a uint64 (past 2**64 - 1 it wraps to 0)."""
    out = np.empty(n)
    for i in range(n):
        idx = (offset + i) % 2**64
        blk = idx >> 2
        v = philox_ref([blk & MASK32, blk >> 32, 0, 0], [seed & MASK32, seed >> 32])[idx & 3]
        out[i] = (v >> 8) * 2.0 ** -24
    return out


def dropout_ref(x, p, seed, offset):
    keep = uniform_ref(x.size, seed, offset).reshape(x.shape) >= np.float32(p)
    return np.where(keep, np.asarray(x, np.float64) / (1.0 - p), 0.0), keep


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


# ----------------------------------------------------------------------------- optimizers (torch.optim's definitions)
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


# ----------------------------------------------------------------------------- subprocesses

def run_python(code, env_extra=None, timeout=180, args=None):
    """Run `python -c code` (or `python args...`) in a fresh interpreter, in this one's
    environment (a suite run under FASTNN_ISA=avx2 or FASTNN_BF16 runs its children so, as
    the tests comparing them with this process expect) with env_extra's changes; a value
    None there removes the variable."""
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    for key, value in (env_extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cmd = [sys.executable] + (list(args) if args is not None else ["-c", code])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


# ----------------------------------------------------------------------------- bfloat16
def bf16_bits(x):
    """RNE to bfloat16 by value: the two bf16 neighbours of each |x| (its truncation and the
    next one up, infinity counted as 2**128) compared in float64; a tie goes to the even one."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    sign, mag = u & 0x80000000, u & 0x7FFFFFFF
    lo = mag & 0x7FFF0000
    hi = lo + 0x10000
    as_f64 = lambda bits: (bits.astype(np.uint32).view(np.float32)).astype(np.float64)  # noqa: E731
    with np.errstate(invalid="ignore"):  # NaN inputs: their result is set below
        v, v_lo = as_f64(mag), as_f64(lo)
        v_hi = np.where(hi == 0x7F800000, 2.0 ** 128, as_f64(np.minimum(hi, 0x7F7F0000)))
        d_lo, d_hi = v - v_lo, v_hi - v
    up = (d_hi < d_lo) | ((d_hi == d_lo) & ((lo >> 16) & 1 == 1))
    out = np.where(up, hi, lo) | sign
    nan = mag > 0x7F800000
    out = np.where(nan, u | 0x00400000, out)        # quiet, sign and payload's top kept
    out = np.where(mag == 0x7F800000, u, out)       # infinities
    return (out >> 16).astype(np.uint16)


def bf16_round(x):
    """x rounded to bfloat16, as float32."""
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32).reshape(np.shape(x))


# ----------------------------------------------------------------------------- threads
def use_threads(n):
    """Run on n threads; a test comparing thread counts is skipped (not passed) in a build
    without OpenMP, where every count is one."""
    import pytest

    import fastnn

    if n > 1 and not fastnn.config()["openmp"]:
        pytest.skip("built without OpenMP: only one thread")
    fastnn.set_num_threads(n)
    assert fastnn.get_num_threads() == n
