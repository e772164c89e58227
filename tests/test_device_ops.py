"""Ops on device arrays, each held to the same op on NumPy arrays: the GEMM (and its
reference) with its epilogues, the elementwise activations forward and backward (with the
bias gradient), the fused softmax cross-entropy, dropout, the SGD and Adam steps and the
mini-batch gather; and 200 steps of an MLP's training made of them, against the same on the CPU.

On "cpu" (a DeviceArray in host memory, which every machine has) the bindings run the CPU
kernels through the device path, so its argument checks, dispatch and results are tested
everywhere, bit for bit. On "cuda:0" (marked ``cuda``: fastnn's CUDA build on a GPU,
scripts/gpu_check.sh) the kernels of csrc/cuda run: dropout draws the CPU's masks (the
same Philox code), the optimizers give the CPU's bits
(core/optim_math.h, no fma contraction on either side), the activations agree to rounding
(CUDA's expf against the CPU's own), cuBLAS's GEMM to float32 rounding of a float64
reference (which TF32 would miss: TF32 is off by default)."""
import numpy as np
import pytest

import fastnn
from fastnn import _C
from fastnn.tensor import Tensor

CUDA = _C.cuda_info()
DEVICES = ["cpu", pytest.param("cuda:0", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not CUDA["available"], reason=f"no usable CUDA: {CUDA['reason']}")])]
SIZES = [(1, 1), (7, 3), (127, 129), (1000, 10)]  # odd sizes around warps and blocks
ACTIVATIONS = ["identity", "sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu", "softplus"]
OPT = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)


def on(device, a):
    return _C.DeviceArray.from_numpy(np.ascontiguousarray(a, np.float32), device)


def same(device, got, expected, exact):
    got = got.numpy() if not isinstance(got, np.ndarray) else got
    if exact or device == "cpu":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-7)


def inputs(shape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.flat[:3] = [0.0, -0.0, np.nan][:x.size]  # the ties and NaN the CPU documents
    return x, rng.standard_normal(shape).astype(np.float32)


GEMM_SHAPES = [(1, 1, 1), (7, 3, 5), (127, 129, 64), (33, 10, 1000), (4, 5, 0)]  # m, n, k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reference", [False, True], ids=["gemm", "gemm_reference"])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("mnk", GEMM_SHAPES, ids=str)
def test_gemm_on_a_device_is_the_cpu_gemm(device, reference, ta, tb, mnk):
    m, n, k = mnk
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    fn = _C.gemm_reference if reference else _C.gemm
    a64, b64 = (a.T if ta else a).astype(np.float64), (b.T if tb else b).astype(np.float64)
    # float32's rounding of a k-term sum of random terms, elementwise: the CPU's GEMM stays
    # under 7% of it on these shapes, TF32 operands exceed it 3-50x (checked with NumPy)
    bound = 2 * np.sqrt(max(k, 1)) * np.finfo(np.float32).eps * (np.abs(a64) @ np.abs(b64) + np.abs(c) + 1e-30)
    for kw in (dict(), dict(alpha=0.5, beta=2.0), dict(bias=bias, activation="relu"),
               dict(bias=bias, activation="tanh", beta=1.0)):
        cpu_out = c.copy() if "beta" in kw else None
        expected = fn(a, b, cpu_out, transpose_a=ta, transpose_b=tb, **kw)
        dev_kw = {key: on(device, v) if key == "bias" else v for key, v in kw.items()}
        out = on(device, c) if "beta" in kw else None
        got = fn(on(device, a), on(device, b), out, transpose_a=ta, transpose_b=tb, **dev_kw)
        assert got.shape == (m, n) and (out is None or got is out)
        if device == "cpu":
            np.testing.assert_array_equal(got.numpy(), expected)
        else:
            # both sides' rounding, and a few ulps of an O(1) output for tanh's expf
            assert (np.abs(got.numpy() - expected) <= 2 * bound + 4 * np.finfo(np.float32).eps).all(), kw


@pytest.mark.parametrize("device", DEVICES)
def test_gemm_on_a_device_refuses_bad_arguments_by_name(device):
    a, b = on(device, np.zeros((3, 4))), on(device, np.zeros((4, 5)))
    cases = [
        (lambda: _C.gemm(a, on(device, np.zeros((3, 5)))), ValueError, "inner dimensions differ"),
        (lambda: _C.gemm(a, np.zeros((4, 5), np.float32)), ValueError, "'b' is a ndarray in host memory"),
        (lambda: _C.gemm(a, b, on(device, np.zeros((3, 4)))), ValueError, "'out' must have shape (3, 5)"),
        (lambda: _C.gemm(a, b, bias=on(device, np.zeros(4))), ValueError, "'bias' has 4 elements; expected 5"),
        (lambda: _C.gemm(a, b, precision="bf16"), ValueError, "precision='bf16' on device arrays"),
        (lambda: _C.gemm(on(device, np.zeros(4)), b), ValueError, "'a' must have 2 dimensions"),
        (lambda: _C.gemm(a, b, a), ValueError, "'out' must have shape"),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
            call()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_on_a_device_is_the_cpu_op(device, shape, name):
    x, g = inputs(shape, 1)
    y = _C.activation_forward(name, x)
    got = _C.activation_forward(name, on(device, x))
    same(device, got, y, exact=False)
    expected_db = np.full(shape[1], 0.5, np.float32)
    expected = _C.activation_backward(name, y, g, x=x, bias_grad=expected_db)
    db = on(device, np.full(shape[1], 0.5))
    gx = _C.activation_backward(name, on(device, y), on(device, g), x=on(device, x), bias_grad=db)
    same(device, gx, expected, exact=False)
    # column sums in another order than the CPU's blocks: rounding of a sum of `rows` terms
    np.testing.assert_allclose(db.numpy(), expected_db, rtol=1e-5,
                               atol=1e-6 * shape[0] * (np.nanmax(np.abs(expected), initial=0) + 1))
    without_bias = _C.activation_backward(name, on(device, y), on(device, g), x=on(device, x))
    same(device, without_bias, expected, exact=False)


@pytest.mark.parametrize("device", DEVICES)
def test_activation_out_and_in_place_on_a_device(device):
    x, _ = inputs((5, 9), 2)
    dx = on(device, x)
    out = _C.activation_forward("tanh", dx, out=dx)  # in place, as on NumPy arrays
    assert out is dx
    same(device, dx, _C.activation_forward("tanh", x), exact=False)
    tensor = Tensor(on(device, x))  # a fastnn.Tensor is taken as its array
    same(device, _C.activation_forward("relu", tensor), _C.activation_forward("relu", x), exact=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 7, 1000, 100_003])
@pytest.mark.parametrize("offset", [0, 3, 2**40 + 1, 2**64 - 5])  # unaligned, huge, wrapping
@pytest.mark.parametrize("p", [0.0, 0.3, 0.999])
def test_dropout_on_a_device_draws_the_cpu_masks(device, n, offset, p):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) + 3.0  # never 0
    expected = _C.dropout_forward(x, p, 1234, offset)
    got = _C.dropout_forward(on(device, x), p, 1234, offset)
    np.testing.assert_array_equal(got.numpy(), expected)  # the same mask, bit for bit
    g = on(device, x)
    assert _C.dropout_backward(g, p, 1234, offset, out=g) is g  # in place
    np.testing.assert_array_equal(g.numpy(), _C.dropout_backward(x, p, 1234, offset))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_dtype", ["int64", "int32", "uint8"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1000, 10), (129, 300)], ids=str)
def test_cross_entropy_on_a_device_is_the_cpu_loss(device, label_dtype, shape):
    rng = np.random.default_rng(shape[0])
    logits = (rng.standard_normal(shape) * 5).astype(np.float32)
    labels = rng.integers(0, min(shape[1], np.iinfo(label_dtype).max + 1), shape[0])
    loss, grad = _C.cross_entropy(logits, labels)
    dev_labels = _C.DeviceArray.from_numpy(labels.astype(label_dtype), device)
    got_loss, got_grad = _C.cross_entropy(on(device, logits), dev_labels)
    again_loss, again_grad = _C.cross_entropy(on(device, logits), dev_labels)
    assert got_loss == again_loss and got_grad.numpy().tobytes() == again_grad.numpy().tobytes()
    if device == "cpu":
        assert got_loss == loss
        np.testing.assert_array_equal(got_grad.numpy(), grad)
    else:
        np.testing.assert_allclose(got_loss, loss, rtol=1e-6)
        np.testing.assert_allclose(got_grad.numpy(), grad, rtol=1e-5, atol=1e-7 / shape[0])


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_on_a_device_refuses_bad_labels_by_name(device):
    logits = on(device, np.zeros((4, 3)))
    cases = [
        (np.array([0, 1, 3, 2]), ValueError, r"labels\[2\] is outside \[0, 3\)"),
        (np.array([0, 1, -1, 2]), ValueError, r"labels\[2\] is outside"),
        (np.array([0, 1, 2]), ValueError, "one entry per row of 'logits' \\(4\\)"),
        (np.zeros(4, np.float32), TypeError, "integer class indices"),
    ]
    for labels, error, words in cases:
        with pytest.raises(error, match=words):
            _C.cross_entropy(logits, _C.DeviceArray.from_numpy(labels, device))
    with pytest.raises(ValueError, match=f"'labels' is a ndarray in host memory but 'logits' a device array on {device}"):
        _C.cross_entropy(logits, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="at least one of each"):
        _C.cross_entropy(on(device, np.zeros((0, 3))), _C.DeviceArray.from_numpy(np.zeros(0, np.int64), device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 17, 1000, 100_003])
@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adam", "adamw", "adagrad", "rmsprop",
                                  "rmsprop-momentum", "rmsprop-centered", "rmsprop-centered-momentum"])
def test_optimizer_step_on_a_device_gives_the_cpu_bits(device, n, kind):
    rng = np.random.default_rng(n)
    p, g = rng.standard_normal((2, n)).astype(np.float32)
    state = [np.abs(rng.standard_normal(n)).astype(np.float32) for _ in range(3)]
    dev = [on(device, a) for a in (p, g, *state)]
    for step in (1, 2, 3):
        if kind == "adagrad":
            kw = dict(lr=0.1, eps=1e-10, weight_decay=0.01, lr_decay=0.05, step=step)
            _C.adagrad_step(p, g, state[0], **kw)
            _C.adagrad_step(*dev[:3], **kw)
        elif kind.startswith("rmsprop"):
            kw = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01, momentum=0.9 * ("momentum" in kind),
                      centered="centered" in kind)
            _C.rmsprop_step(p, g, *state, **kw)
            _C.rmsprop_step(*dev, **kw)
        elif kind.startswith("adam"):
            kw = dict(OPT, weight_decay=0.1, step=step, decoupled=kind == "adamw")
            _C.adam_step(p, g, *state[:2], **kw)
            _C.adam_step(*dev[:4], **kw)
        else:
            kw = dict(lr=0.1, momentum=0.0 if kind == "sgd" else 0.9, nesterov=kind == "nesterov",
                      weight_decay=0.01)
            _C.sgd_step(p, g, state[0], **kw)
            _C.sgd_step(dev[0], dev[1], dev[2], **kw)
    for got, expected in zip(dev, (p, g, *state)):
        same(device, got, expected, exact=True)


@pytest.mark.parametrize("device", DEVICES)
def test_device_ops_refuse_bad_arguments_by_name(device):
    p, g, m, v = (on(device, np.zeros(8)) for _ in range(4))
    labels = _C.DeviceArray.from_numpy(np.zeros(8, np.int64), device)
    cases = [
        (lambda: _C.adam_step(p, np.zeros(8, np.float32), m, v, **OPT, weight_decay=0.0, step=1),
         ValueError, f"'grad' is a ndarray in host memory but 'param' a device array on {device}"),
        (lambda: _C.adam_step(p, g, on(device, np.zeros(9)), v, **OPT, weight_decay=0.0, step=1),
         ValueError, "'m' has 9 elements; expected 8"),
        (lambda: _C.adam_step(p, labels, m, v, **OPT, weight_decay=0.0, step=1),
         TypeError, "'grad' must be a float32 device array, got int64"),
        (lambda: _C.adam_step(p, g, m, m, **OPT, weight_decay=0.0, step=1),
         ValueError, "'v' and 'm' overlap in memory"),
        (lambda: _C.adam_step(p, g, m, v, **OPT, weight_decay=0.0, step=0),
         ValueError, "'step' counts from 1"),
        (lambda: _C.sgd_step(p, g, None, lr=0.1, momentum=0.9), ValueError, "'velocity' is required"),
        (lambda: _C.activation_forward("relu", labels), TypeError, "'x' must be a float32 device array"),
        (lambda: _C.activation_forward("relu", p, out=on(device, np.zeros(7))),
         ValueError, "'out' has 7 elements; expected 8"),
        (lambda: _C.activation_backward("gelu", p, g), ValueError, "'gelu' needs x"),
        (lambda: _C.activation_backward("relu", p, g, bias_grad=on(device, np.zeros(8))),
         ValueError, "'y' must have 2 dimensions with bias_grad"),
        (lambda: _C.activation_backward("relu", on(device, np.zeros((2, 4))), on(device, np.zeros((2, 4))),
                                        bias_grad=on(device, np.zeros(3))),
         ValueError, "'bias_grad' has 3 elements; expected 4"),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
            call()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1), (50, 7), (1000, 64)], ids=str)
def test_gather_rows_on_a_device_is_the_cpu_gather(device, shape):
    rng = np.random.default_rng(shape[0])
    x = rng.standard_normal(shape).astype(np.float32)
    idx = rng.integers(0, shape[0], 33)
    expected = _C.gather_rows(x, idx)
    dx = on(device, x)
    for index in (_C.DeviceArray.from_numpy(idx, device), idx):  # on the device, or the host's
        np.testing.assert_array_equal(_C.gather_rows(dx, index).numpy(), expected)
    out = on(device, np.zeros((33, shape[1])))
    assert _C.gather_rows(dx, idx, out=out) is out
    np.testing.assert_array_equal(out.numpy(), expected)
    bad = idx.copy()
    bad[7] = shape[0]
    for index in (_C.DeviceArray.from_numpy(bad, device), bad):
        with pytest.raises(ValueError, match=r"index\[7\]( = \d+)? is outside"):
            _C.gather_rows(dx, index)
    with pytest.raises(TypeError, match="a device 'index' must be int64"):
        _C.gather_rows(dx, _C.DeviceArray.from_numpy(idx.astype(np.int32), device))
    for dtype in (np.int64, np.int32, np.uint8):  # labels: rows of 8, 4 and 1 bytes
        labels = rng.integers(0, 200, shape).astype(dtype)
        got = _C.gather_rows(_C.DeviceArray.from_numpy(labels, device), idx)
        assert got.dtype == np.dtype(dtype).name
        np.testing.assert_array_equal(got.numpy(), labels[idx])
    with pytest.raises(TypeError, match="'out' must be a int64 device array, got float32"):
        _C.gather_rows(_C.DeviceArray.from_numpy(labels.astype(np.int64), device), idx, out=out)


def train_mlp(device, steps=200, sizes=(20, 32, 16, 4), batch=24, seed=0):
    """A ReLU MLP trained with Adam on random batches, op by op, on `device`'s arrays (None:
    NumPy arrays): the losses."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((500, sizes[0])).astype(np.float32)
    y = np.argmax(X[:, :sizes[-1]] + 0.3 * rng.standard_normal((500, sizes[-1])), axis=1)
    put = (lambda a: a) if device is None else (lambda a: on(device, a))
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        params += [(rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32),
                   np.zeros(o, np.float32)]
    params = [put(p) for p in params]
    state = [[put(np.zeros(p.shape, np.float32)) for _ in range(2)] for p in params]
    data = put(X)
    losses = []
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(X), batch)
        xb = _C.gather_rows(data, idx)
        yb = y[idx] if device is None else _C.DeviceArray.from_numpy(y[idx], device)
        acts = [xb]
        for layer in range(len(sizes) - 1):
            w, b = params[2 * layer], params[2 * layer + 1]
            last = layer == len(sizes) - 2
            acts.append(_C.gemm(acts[-1], w, transpose_b=True, bias=b,
                                activation="identity" if last else "relu"))
        loss, g = _C.cross_entropy(acts[-1], yb)
        losses.append(loss)
        grads = [None] * len(params)
        for layer in reversed(range(len(sizes) - 1)):
            w = params[2 * layer]
            last = layer == len(sizes) - 2
            db = put(np.zeros(sizes[layer + 1], np.float32))
            g = _C.activation_backward("identity" if last else "relu", acts[layer + 1], g, bias_grad=db)
            grads[2 * layer] = _C.gemm(g, acts[layer], transpose_a=True)
            grads[2 * layer + 1] = db
            if layer:
                g = _C.gemm(g, w)
        for p, grad, (m, v) in zip(params, grads, state):
            _C.adam_step(p, grad, m, v, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                         step=step)
    return np.array(losses)


@pytest.mark.parametrize("device", DEVICES)
def test_two_hundred_training_steps_on_a_device_follow_the_cpu(device):
    """The issue's check: from the same weights, the loss curves agree to 1e-4 (on "cpu",
    to the bit: the same kernels)."""
    expected = train_mlp(None)
    got = train_mlp(device)
    assert expected[-1] < 0.7 * expected[0], "the reference did not learn"
    if device == "cpu":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_views_fill_and_copy_on_a_device(device):
    """Rows and reshapes share the memory; fill_ runs a kernel on the GPU; copy_ between the
    device and the host, and within the device."""
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    t = Tensor(on(device, x))
    t[2:5].fill_(-1.0)
    t[9].copy_(np.full(3, 4.0, np.float32))
    other = Tensor(on(device, np.zeros((10, 3))))
    other.copy_(t)
    expected = x.copy()
    expected[2:5], expected[9] = -1.0, 4.0
    np.testing.assert_array_equal(other.numpy(), expected)
    np.testing.assert_array_equal(t.reshape(3, 10)[1].numpy(), expected.reshape(3, 10)[1])


def test_matmul_precision_is_fp32_unless_asked():
    assert fastnn.get_matmul_precision() == "fp32" == fastnn.config()["matmul_precision"]
    try:
        fastnn.set_matmul_precision("tf32")
        assert fastnn.get_matmul_precision() == "tf32" == fastnn.config()["matmul_precision"]
        a = np.random.default_rng(0).standard_normal((9, 5)).astype(np.float32)
        # the CPU's GEMM is fp32 whatever the setting
        np.testing.assert_array_equal(_C.gemm(on("cpu", a), on("cpu", a), transpose_b=True).numpy(),
                                      _C.gemm(a, a, transpose_b=True))
        with pytest.raises(ValueError, match="'precision' must be 'fp32' or 'tf32', got 'bf16'"):
            fastnn.set_matmul_precision("bf16")
        with pytest.raises(TypeError, match="precision must be a str"):
            fastnn.set_matmul_precision(32)
        assert fastnn.get_matmul_precision() == "tf32"
    finally:
        fastnn.set_matmul_precision("fp32")


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA["available"], reason=f"no usable CUDA: {CUDA['reason']}")
def test_tf32_is_used_only_when_asked_for():
    """On a GPU with tensor cores, set_matmul_precision("tf32") makes a 1024-deep product's
    error exceed the fp32 bound that the default stays within."""
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((256, 1024)).astype(np.float32) for _ in range(2))
    exact = a.astype(np.float64) @ b.astype(np.float64).T
    bound = 2 * np.sqrt(1024) * np.finfo(np.float32).eps * (np.abs(a) @ np.abs(b).T)
    errors = {}
    try:
        for precision in ("fp32", "tf32"):
            fastnn.set_matmul_precision(precision)
            got = _C.gemm(on("cuda:0", a), on("cuda:0", b), transpose_b=True).numpy()
            errors[precision] = (np.abs(got - exact) / bound).max()
    finally:
        fastnn.set_matmul_precision("fp32")
    assert errors["fp32"] <= 1.0 < errors["tf32"], errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SIZES + [(4097,), (300, 70)], ids=str)  # around sum.cuh's chunks
def test_losses_sums_and_penalties_on_a_device_are_the_cpu_ops(device, shape):
    """mse and binary_cross_entropy (logits, probabilities), sum_squares, sum_abs,
    add_penalty_grad, scale_ and clip_: the CPU's op (to the bit in host memory, to rounding on
    the GPU, whose sums take another fixed order), and the sums float64 NumPy's."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    t = (rng.random(shape) > 0.5).astype(np.float32)
    p = np.clip(rng.random(shape), 1e-3, 1 - 1e-3).astype(np.float32)
    for name, args in [("mse", (x, t)), ("binary_cross_entropy", (x, t)), ("binary_cross_entropy", (p, t))]:
        kw = {"from_logits": args[0] is x} if name != "mse" else {}
        want_loss, want_grad = getattr(_C, name)(*args, **kw)
        got_loss, got_grad = getattr(_C, name)(*(on(device, a) for a in args), **kw)
        assert isinstance(got_grad, _C.DeviceArray)
        same(device, got_grad, want_grad, exact=False)
        assert got_loss == pytest.approx(want_loss, rel=1e-12 if device == "cpu" else 1e-6)
    x64 = x.astype(np.float64)
    for name, expected in [("sum_squares", (x64 ** 2).sum()), ("sum_abs", np.abs(x64).sum())]:
        got = getattr(_C, name)(on(device, x))
        assert got == getattr(_C, name)(x) or device != "cpu"
        assert got == pytest.approx(expected, rel=1e-12)
    grad, want = on(device, t), t.copy()
    value = _C.add_penalty_grad(on(device, x), grad, 0.01, 0.2)
    assert value == pytest.approx(_C.add_penalty_grad(x, want, 0.01, 0.2), rel=1e-12)
    same(device, grad, want, exact=False)
    for op, args, expected in [(_C.scale_, (0.25,), x * np.float32(0.25)),
                               (_C.clip_, (-1.0, 2.0), np.clip(x, -1.0, 2.0))]:
        d = on(device, x)
        op(d, *args)
        same(device, d, expected, exact=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_softmax_and_soft_cross_entropy_on_a_device_are_the_cpu_ops(device, shape):
    x, g = inputs(shape, 3)
    x[np.isnan(x)] = 1.0
    t = np.random.default_rng(4).random(shape).astype(np.float32)
    t /= t.sum(axis=1, keepdims=True)
    y = _C.softmax_forward(x)
    same(device, _C.softmax_forward(on(device, x)), y, exact=False)
    # backward from the same y (the GPU's expf rounds apart from the CPU's, which g - <y, g> would magnify)
    same(device, _C.softmax_backward(on(device, y), on(device, g)), _C.softmax_backward(y, g), exact=False)
    got_loss, got_grad = _C.cross_entropy_soft(on(device, x), on(device, t))
    want_loss, want_grad = _C.cross_entropy_soft(x, t)
    assert got_loss == pytest.approx(want_loss, rel=1e-12 if device == "cpu" else 1e-6)
    same(device, got_grad, want_grad, exact=False)
    with pytest.raises(ValueError, match="'target' must have logits' shape"):
        _C.cross_entropy_soft(on(device, x), on(device, t.ravel()))


CONV_CASES = [  # (n, c, h, w), out_channels, kernel, stride, padding, dilation, groups
    ((1, 1, 7, 5), 2, 3, 1, 0, 1, 1), ((3, 4, 9, 9), 6, 3, 2, 1, 1, 2), ((2, 3, 8, 6), 5, (3, 1), 1, 2, 2, 1),
    ((2, 4, 6, 7), 8, 3, 1, 1, 1, 4), ((1, 2, 5, 5), 2, 5, 3, 2, 1, 1), ((2, 3, 4, 4), 3, 1, 1, 0, 1, 3)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_and_pooling_on_a_device_are_the_cpu_ops(device, case):
    """conv2d forward (bias and activation) and backward (input, weight with beta, bias
    accumulated), grouped and depthwise, and max, average pooling forward and backward: the
    CPU's (to the bit in host memory; to float32 rounding of the sums' other order on a GPU)."""
    shape, oc, kernel, stride, padding, dilation, groups = case
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((oc, shape[1] // groups, kh, kw)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    def close(got, expected):  # sums of up to a few hundred products in another order on a GPU
        if device == "cpu":
            np.testing.assert_array_equal(got.numpy(), expected)
        else:
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)

    y = _C.conv2d_forward(x, w, b, **geo, activation="tanh")
    close(_C.conv2d_forward(on(device, x), on(device, w), on(device, b), **geo, activation="tanh"), y)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gw, gb = rng.standard_normal(w.shape).astype(np.float32), rng.standard_normal(oc).astype(np.float32)
    dgw, dgb = on(device, gw), on(device, gb)
    dx = _C.conv2d_backward(x, w, gy, gw, grad_bias=gb, beta=0.5, **geo)
    got = _C.conv2d_backward(on(device, x), on(device, w), on(device, gy), dgw, grad_bias=dgb, beta=0.5, **geo)
    for a, expected in [(got, dx), (dgw, gw), (dgb, gb)]:
        close(a, expected)
    if groups == shape[1]:  # the depthwise entry points
        close(_C.depthwise_conv2d_forward(on(device, x), on(device, w), on(device, b), stride=stride,
                                          padding=padding, dilation=dilation),
              _C.depthwise_conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation))
    k = (min(kh, shape[2]), min(kw, shape[3]))
    pad = (k[0] // 2, k[1] // 2) if padding else 0
    x[0, 0, 0, :2] = np.nan if shape[3] > 2 else x[0, 0, 0, :2]  # a NaN wins its windows
    for op in ("max", "avg"):
        fwd, bwd = getattr(_C, f"{op}pool2d_forward"), getattr(_C, f"{op}pool2d_backward")
        want = fwd(x, k, stride=stride, padding=pad)
        have = fwd(on(device, x), k, stride=stride, padding=pad)
        if op == "max":
            (want, argmax), (have, dev_argmax) = want, have
            np.testing.assert_array_equal(dev_argmax.numpy(), argmax)
        same(device, have, want, exact=op == "max")
        g = rng.standard_normal(want.shape).astype(np.float32)
        args = (argmax,) if op == "max" else ()
        dev_args = (dev_argmax,) if op == "max" else ()
        same(device, bwd(on(device, g), *dev_args, shape, k, stride=stride, padding=pad),
             bwd(g, *args, shape, k, stride=stride, padding=pad), exact=op == "max")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 3), (5, 4, 3), (3, 2, 5, 7), (1, 1, 300, 1)], ids=str)
def test_batch_norm_on_a_device_is_the_cpu_op(device, shape):
    """batchnorm_forward in training (the running statistics moved) and evaluation, and
    batchnorm_backward (weight and bias gradients with beta, the input's), against the CPU's."""
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    gamma, beta = rng.standard_normal((2, c)).astype(np.float32)
    host = {k: rng.random(c).astype(np.float32) + 0.5 for k in ("rm", "rv", "mean", "invstd")}
    dev = {k: on(device, v) for k, v in host.items()}
    for training in (True, False):
        want = _C.batchnorm_forward(x, gamma, beta, host["rm"], host["rv"], host["mean"], host["invstd"],
                                    training=training, momentum=0.1)
        got = _C.batchnorm_forward(on(device, x), on(device, gamma), on(device, beta), dev["rm"], dev["rv"],
                                   dev["mean"], dev["invstd"], training=training, momentum=0.1)
        for a, b in [(got, want)] + [(dev[k], host[k]) for k in host]:
            if device == "cpu":
                np.testing.assert_array_equal(a.numpy(), b)
            else:  # double sums in another order, rounded to float32
                np.testing.assert_allclose(a.numpy(), b, rtol=2e-6, atol=2e-6)
        g = rng.standard_normal(shape).astype(np.float32)
        gg, gb = rng.standard_normal((2, c)).astype(np.float32)
        dgg, dgb = on(device, gg), on(device, gb)
        want = _C.batchnorm_backward(x, g, gamma, host["mean"], host["invstd"], training=training,
                                     grad_weight=gg, grad_bias=gb, beta=0.5)
        got = _C.batchnorm_backward(on(device, x), on(device, g), on(device, gamma), dev["mean"], dev["invstd"],
                                    training=training, grad_weight=dgg, grad_bias=dgb, beta=0.5)
        for a, b in [(got, want), (dgg, gg), (dgb, gb)]:
            if device == "cpu":
                np.testing.assert_array_equal(a.numpy(), b)
            else:
                np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_norm_fused_relu_is_for_host_arrays(device):
    """relu=True (Sequential's fusion of a ReLU after a batch norm, for NumPy arrays) on device
    arrays: an error that names the argument and the device, not a wrong result."""
    x, c = on(device, np.ones((4, 3), np.float32)), lambda: on(device, np.ones(3, np.float32))  # noqa: E731
    with pytest.raises(ValueError, match="'relu'.*CPU arrays only"):
        _C.batchnorm_forward(x, None, None, c(), c(), c(), c(), training=True, relu=True)
    with pytest.raises(ValueError, match="relu=True.*CPU arrays only"):
        _C.batchnorm_backward(x, x, None, c(), c(), training=True, relu=True)


@pytest.mark.parametrize("device", DEVICES)
def test_dlpack_export_to_the_array_s_own_device_and_its_copy_argument(device):
    """The array API's consumers ask for the device (np.from_dlpack(t, device="cpu")): its
    own was refused as any other; copy="no" met pybind11's cast error (found by an attack)."""
    a = on(device, np.arange(6).reshape(2, 3))
    own = a.__dlpack_device__()
    assert a.__dlpack__(dl_device=own) is not None
    if device == "cpu":
        np.testing.assert_array_equal(np.from_dlpack(Tensor(a), device="cpu"), np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="argument 'copy' must be True, False or None"):
        a.__dlpack__(copy="no")
    with pytest.raises(BufferError, match="only the array's own device"):
        a.__dlpack__(dl_device=(own[0] + 1, 0))
    with pytest.raises(BufferError, match="without a copy"):
        a.__dlpack__(copy=True)
