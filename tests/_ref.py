"""Independent NumPy float64 reference implementations used by the tests.

Nothing here calls fastnn: every expected value in the suite is computed from these
formulas (or from central finite differences of them) in float64.
"""

import os
import re
import subprocess
import sys

import numpy as np

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
    if name == "gelu":  # tanh approximation
        return 0.5 * x * (1.0 + np.tanh(GELU_K * (x + 0.044715 * x ** 3)))
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


def names_argument(message, *names):
    """True if the message mentions any of the names as a separate word."""
    return any(re.search(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])", message)
               for n in names)


# ----------------------------------------------------------------------------- subprocesses

def run_python(code, env_extra=None, timeout=180, args=None):
    """Run `python -c code` (or `python args...`) in a fresh interpreter."""
    env = dict(os.environ)
    env.pop("FASTNN_ISA", None)
    env.setdefault("MPLBACKEND", "Agg")
    if env_extra:
        env.update(env_extra)
    cmd = [sys.executable] + (list(args) if args is not None else ["-c", code])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


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
