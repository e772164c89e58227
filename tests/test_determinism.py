"""Results that do not depend on where an element falls or on the thread count.

Kernels: every elementwise kernel gives element i the same bits whatever the array's length,
i's place relative to the vector width (body or tail of a vectorized loop) and the thread
count. Inputs repeat a pool of P values (P prime, so each value lands at every offset
modulo 4, 8 and 16); element i must equal the result of a one-element call on its value,
for n = 1..130 and for an n that two threads split at an unaligned offset. The pool's
results are held to float64 references. FASTNN_ISA / set_isa choose the ISA of every kernel
family: the GEMM's microkernel (whose epilogue applies the activations) and the copy
(AVX-512/AVX2/baseline) that each elementwise kernel runs (csrc/cpu/isa.h). The copies are
compiled to compute the same operations (see CMakeLists.txt): every ISA gives the same bits.

Training: a short fit of a 784-512-256-10 model (wide enough that every kernel splits across
two threads) for every optimizer and feature gives bit-identical weights and losses at 1 and
2 threads, in-process and in separate processes with OMP_NUM_THREADS=1 and =2.
"""

import json
import os

import numpy as np
import pytest

import fastnn
from fastnn import _C, nn, optim

import _ref

F32 = np.float32
P = 37
# Past 2 * 2**15 every elementwise kernel splits across two threads; the split point
# (n / 2 = 32806) is not a multiple of 4, 8 or 16.
SIZES = list(range(1, 131)) + [2 * (1 << 15) + 2 * P + 3]


def _bits_equal(actual, expected, what):
    actual, expected = np.asarray(actual, F32), np.asarray(expected, F32)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    bad = np.flatnonzero(actual.view(np.uint32).ravel() != expected.view(np.uint32).ravel())
    if bad.size:
        i = bad[0]
        raise AssertionError(f"{what}: {bad.size}/{actual.size} elements differ; first at {i}: "
                             f"{actual.ravel()[i]!r} != {expected.ravel()[i]!r}")


def _sweep(kernel, pool, threads, what):
    """Checks kernel(*inputs) -> outputs at every size against one-element calls; returns
    the pool's outputs (one array per output, P values each)."""
    _ref.use_threads(threads)
    singles = [kernel(*[a[i:i + 1].copy() for a in pool]) for i in range(P)]
    ref = [np.concatenate(out) for out in zip(*singles)]
    for n in SIZES:
        idx = np.arange(n) % P
        outs = kernel(*[a[idx] for a in pool])
        for k, (o, r) in enumerate(zip(outs, ref)):
            _bits_equal(o, r[idx], f"{what}, {threads} thread(s), n={n}, output {k}")
    return ref


def _pool(rng, low=-3.0, high=3.0):
    return rng.uniform(low, high, P).astype(F32)


# ----------------------------------------------------------------------------- optimizers
def _sgd(momentum, nesterov, wd):
    def kernel(p, g, v):
        p, v = p.copy(), v.copy()
        _C.sgd_step(p, g, v if momentum else None, lr=0.1, momentum=momentum, nesterov=nesterov,
                    weight_decay=wd)
        return (p, v) if momentum else (p,)

    def ref(p, g, v):
        g = g + wd * p
        if not momentum:
            return (p - 0.1 * g,)
        v = momentum * v + g
        return (p - 0.1 * (g + momentum * v if nesterov else v), v)
    return kernel, ref


def _adam(decoupled):
    lr, b1, b2, eps, wd, step = 1e-3, 0.9, 0.999, 1e-8, 0.01, 3

    def kernel(p, g, m, v):
        p, m, v = p.copy(), m.copy(), v.copy()
        _C.adam_step(p, g, m, v, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd, step=step,
                     decoupled=decoupled)
        return p, m, v

    def ref(p, g, m, v):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** step) + eps
        return p - lr / (1 - b1 ** step) * m / denom, m, v
    return kernel, ref


def _rmsprop(centered, momentum):
    lr, alpha, eps, wd = 1e-2, 0.99, 1e-8, 0.01

    def kernel(p, g, sq, buf, gavg):
        p, sq, buf, gavg = p.copy(), sq.copy(), buf.copy(), gavg.copy()
        _C.rmsprop_step(p, g, sq, buf if momentum else None, gavg if centered else None, lr=lr,
                        alpha=alpha, eps=eps, weight_decay=wd, momentum=momentum,
                        centered=centered)
        return p, sq, buf, gavg

    def ref(p, g, sq, buf, gavg):
        g = g + wd * p
        sq = alpha * sq + (1 - alpha) * g * g
        var = sq
        if centered:
            gavg = gavg + (1 - alpha) * (g - gavg)
            var = np.maximum(sq - gavg * gavg, 0.0)
        avg = np.sqrt(var) + eps
        if momentum:
            buf = momentum * buf + g / avg
            return p - lr * buf, sq, buf, gavg
        return p - lr * g / avg, sq, buf, gavg
    return kernel, ref


def _adagrad():
    lr, eps, wd, decay, step = 0.1, 1e-10, 0.01, 0.01, 4

    def kernel(p, g, s):
        p, s = p.copy(), s.copy()
        _C.adagrad_step(p, g, s, lr=lr, eps=eps, weight_decay=wd, lr_decay=decay, step=step)
        return p, s

    def ref(p, g, s):
        g = g + wd * p
        s = s + g * g
        return p - lr / (1 + (step - 1) * decay) * g / (np.sqrt(s) + eps), s
    return kernel, ref


def _penalty():
    def kernel(p, g):
        g = g.copy()
        _C.add_penalty_grad(p, g, 0.01, 0.005)
        return (g,)

    def ref(p, g):
        return (g + 0.01 * np.sign(p) + 2 * 0.005 * p,)
    return kernel, ref


OPTIMIZER_KERNELS = {
    "sgd": (_sgd(0.0, False, 0.01), 3), "sgd_momentum": (_sgd(0.9, False, 0.01), 3),
    "sgd_nesterov": (_sgd(0.9, True, 0.01), 3),
    "adam": (_adam(False), 4), "adamw": (_adam(True), 4),
    "rmsprop": (_rmsprop(False, 0.0), 5), "rmsprop_centered": (_rmsprop(True, 0.0), 5),
    "rmsprop_momentum": (_rmsprop(False, 0.9), 5),
    "rmsprop_centered_momentum": (_rmsprop(True, 0.9), 5),
    "adagrad": (_adagrad(), 3), "penalty_grad": (_penalty(), 2),
}


@pytest.mark.parametrize("name", list(OPTIMIZER_KERNELS))
def test_optimizer_kernel_same_bits_at_every_position_and_thread_count(name, rng):
    (kernel, ref), arity = OPTIMIZER_KERNELS[name]
    # param, grad, then state: positive where it is a running mean of squares (and the
    # centered mean of g kept small beside it)
    pool = [_pool(rng), _pool(rng, -0.5, 0.5)] + [_pool(rng, 0.0, 0.2) for _ in range(arity - 2)]
    if name.startswith("rmsprop_centered"):
        pool[4] = _pool(rng, -0.05, 0.05)
    outs = [_sweep(kernel, pool, t, name) for t in (1, 2)]
    for a, b in zip(*outs):
        _bits_equal(a, b, f"{name}: 1 vs 2 threads")
    expected = ref(*[_ref.f64(a) for a in pool])
    for k, (o, e) in enumerate(zip(outs[0], expected)):
        _ref.assert_close(o, e, 1e-5, 1e-6, f"{name} output {k} vs float64")


def test_adam_issue_repro_all_elements_equal():
    g = np.full(24, 0.04517351, F32)
    p, m, v = np.zeros(24, F32), np.zeros(24, F32), np.zeros(24, F32)
    _C.adam_step(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    _bits_equal(p, np.full(24, p[0]), "adam_step on 24 equal gradients")
    assert p[0] == pytest.approx(-1e-3, rel=1e-6)


# ----------------------------------------------------------------------------- activations
ACTIVATIONS = ["sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu", "softplus"]


def _alpha(name):
    return 1.0 if name == "elu" else 0.01


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_forward_same_bits_at_every_position_and_thread_count(name, rng):
    alpha = _alpha(name)
    pool = [_pool(rng, -6.0, 6.0)]
    outs = [_sweep(lambda x: (_C.activation_forward(name, x, alpha),), pool, t, name)
            for t in (1, 2)]
    _bits_equal(outs[0][0], outs[1][0], f"{name}: 1 vs 2 threads")
    _ref.assert_close(outs[0][0], _ref.act_forward(name, pool[0], alpha), 1e-5, 1e-6, f"{name} vs float64")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gemm_epilogue_activation_same_bits_at_every_position(name, isa, rng):
    """1 x n = (1 x 1 ones) @ (1 x n): the epilogue applies the activation to column
    blocks, split across threads by columns."""
    alpha = _alpha(name)
    one = np.ones((1, 1), F32)

    def kernel(x):
        return (_C.gemm(one, x.reshape(1, -1), activation=name, activation_alpha=alpha).ravel(),)
    pool = [_pool(rng, -6.0, 6.0)]
    outs = [_sweep(kernel, pool, t, f"gemm epilogue {name} ({isa})") for t in (1, 2)]
    _bits_equal(outs[0][0], outs[1][0], f"gemm epilogue {name}: 1 vs 2 threads")
    _bits_equal(outs[0][0], _C.activation_forward(name, pool[0], alpha),
                f"gemm epilogue {name} vs activation_forward")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_same_bits_at_every_position_and_thread_count(name, rng):
    alpha = _alpha(name)
    x = _pool(rng, -6.0, 6.0)
    y = _C.activation_forward(name, x, alpha)
    pool = [x, y, _pool(rng)]

    def kernel(x, y, gy):
        return (_C.activation_backward(name, y, gy, alpha, x=x),)
    outs = [_sweep(kernel, pool, t, f"{name} backward") for t in (1, 2)]
    _bits_equal(outs[0][0], outs[1][0], f"{name} backward: 1 vs 2 threads")
    # f'(x) in float64 by central differences of the float64 forward
    h = 1e-6
    d = (_ref.act_forward(name, _ref.f64(x) + h, alpha) - _ref.act_forward(name, _ref.f64(x) - h, alpha)) / (2 * h)
    _ref.assert_close(outs[0][0], d * pool[2], 1e-4, 1e-5, f"{name} backward vs float64")


# ----------------------------------------------------------------------------- in-place helpers
def test_scale_clip_axpby_same_bits_at_every_position_and_thread_count(rng):
    def scale(x):
        x = x.copy()
        _C.scale_(x, 0.3)
        return (x,)

    def clip(x):
        x = x.copy()
        _C.clip_(x, -1.0, 1.5)
        return (x,)
    def axpby(y, x):
        y = y.copy()
        _C.axpby_(y, x, 0.3, -1.7)
        return (y,)
    pool = [_pool(rng), _pool(rng)]
    for kernel, expected in ((scale, pool[0] * F32(0.3)), (clip, np.clip(pool[0], F32(-1), F32(1.5))),
                             (axpby, F32(0.3) * pool[0] + F32(-1.7) * pool[1])):
        outs = [_sweep(kernel, pool[:kernel.__code__.co_argcount], t, kernel.__name__)
                for t in (1, 2)]
        _bits_equal(outs[0][0], outs[1][0], f"{kernel.__name__}: 1 vs 2 threads")
        _bits_equal(outs[0][0], expected, f"{kernel.__name__} vs NumPy float32")


def test_sums_bit_identical_across_threads(rng):
    """sum_squares and add_penalty_grad's penalty: fixed chunks, whatever the thread count."""
    n = SIZES[-1] * 3
    x = rng.standard_normal(n).astype(F32)
    results = []
    for t in (1, 2):
        _ref.use_threads(t)
        g = np.zeros(n, F32)
        results.append((_C.sum_squares(x), _C.add_penalty_grad(x, g, 0.01, 0.005)))
    assert results[0] == results[1]
    x64 = _ref.f64(x)
    assert results[0][0] == pytest.approx(float(x64 @ x64), rel=1e-12)
    assert results[0][1] == pytest.approx(0.01 * np.abs(x64).sum() + 0.005 * (x64 @ x64), rel=1e-12)


# ----------------------------------------------------------------------------- losses and softmax
def _periodic(out, what):
    """Element j of a row built from the pool repeated equals element j mod P."""
    out = np.asarray(out, F32).reshape(-1, out.shape[-1])
    idx = np.arange(out.shape[-1]) % P
    _bits_equal(out, out[:, idx], what)


def test_loss_gradients_same_bits_at_every_position_and_thread_count(rng):
    pool = {"pred": _pool(rng), "target": _pool(rng, 0.0, 1.0), "prob": _pool(rng, 0.05, 0.95)}
    for n in SIZES:
        idx = np.arange(n) % P
        p, t, q = pool["pred"][idx], pool["target"][idx], pool["prob"][idx]
        per_threads = []
        for threads in (1, 2):
            _ref.use_threads(threads)
            per_threads.append([_C.mse(p, t), _C.binary_cross_entropy(p, t, from_logits=True),
                                _C.binary_cross_entropy(q, t, from_logits=False)])
        for name, a, b in zip(("mse", "bce logits", "bce probs"), *per_threads):
            assert a[0] == b[0], f"{name}, n={n}: loss differs between 1 and 2 threads"
            _bits_equal(a[1], b[1], f"{name}, n={n}: gradient, 1 vs 2 threads")
            _periodic(a[1][None], f"{name}, n={n}")
        # mse's gradient is (2/n) (p - t) in float32: exactly NumPy's
        _bits_equal(per_threads[0][0][1], (F32(2) / F32(n)) * (p - t), f"mse, n={n}, vs NumPy")
        _ref.assert_close(per_threads[0][1][1], _ref.bce_logits(p, t)[1], 1e-5, 1e-9,
                          f"bce logits, n={n}, vs float64")


def test_softmax_and_cross_entropy_rows_same_bits_at_every_position(rng):
    logits, target = _pool(rng), _pool(rng, 0.0, 1.0)
    for n in SIZES[:-1]:
        idx = np.arange(n) % P
        x = np.tile(logits[idx], (3, 1))
        t = np.tile(target[idx], (3, 1)) / target[idx].sum()
        for threads in (1, 2):
            _ref.use_threads(threads)
            y = _C.softmax_forward(x)
            _periodic(y, f"softmax_forward, n={n}")
            _bits_equal(y, np.tile(y[0], (3, 1)), f"softmax_forward rows, n={n}")
            _ref.assert_close(y, _ref.softmax(x), 1e-5, 1e-7, f"softmax_forward, n={n}")
            _periodic(_C.softmax_backward(y, np.tile(target[idx], (3, 1))), f"softmax_backward, n={n}")
            loss, g = _C.cross_entropy_soft(x, t)
            _periodic(g, f"cross_entropy_soft, n={n}")
            _ref.assert_close(g, _ref.cross_entropy_soft(x, t)[1], 1e-5, 1e-8,
                              f"cross_entropy_soft, n={n}")
            loss, g = _C.cross_entropy(x, np.full(3, n - 1))
            _periodic(g[:, :-1] if n > 1 else g, f"cross_entropy, n={n}")


# ----------------------------------------------------------------------------- random streams
def test_dropout_same_bits_at_every_position_and_thread_count(rng):
    p = 0.3
    scale = F32(1) / (F32(1) - F32(p))
    for n in SIZES:
        x = rng.standard_normal(n).astype(F32)
        u = _C.random_uniform(n, 11, 5)
        expected = x * np.where(u >= F32(p), scale, F32(0))
        for threads in (1, 2):
            _ref.use_threads(threads)
            _bits_equal(_C.dropout_forward(x, p, 11, 5), expected, f"dropout_forward, n={n}")
            _bits_equal(_C.dropout_backward(x, p, 11, 5), expected, f"dropout_backward, n={n}")


def test_augment_image_i_independent_of_batch_and_threads(rng):
    """Image i of a batch equals image i augmented alone at offset + 8 i."""
    images = rng.uniform(0, 1, (400, 9, 11)).astype(F32)
    kw = dict(max_shift=1.5, flip=True, max_rotation=12.0, noise_std=0.1)
    alone = np.stack([_C.augment_images(images[i:i + 1], seed=3, offset=7 + 8 * i, **kw)[0]
                      for i in range(len(images))])
    for threads in (1, 2):
        _ref.use_threads(threads)
        for n in list(range(1, 41)) + [len(images)]:
            _bits_equal(_C.augment_images(images[:n], seed=3, offset=7, **kw), alone[:n],
                        f"augment_images, {threads} thread(s), n={n}")


# ----------------------------------------------------------------------------- the ISA switch
def test_isa_switch_reaches_the_elementwise_kernels():
    """set_isa and FASTNN_ISA pick the elementwise kernels' copies, not only the GEMM's."""
    supported = _C.supported_isas()
    for name in supported[::-1] + supported:
        _C.set_isa(name)
        assert _C._elementwise_isa() == name, f"set_isa({name!r})"
    for name in supported:
        proc = _ref.run_python("from fastnn import _C; print(_C.get_isa(), _C._elementwise_isa())",
                               env_extra={"FASTNN_ISA": name})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [name, name], f"FASTNN_ISA={name}: {proc.stdout!r}"


# Vector bodies, tails and an unaligned two-thread split.
SWITCH_SIZES = [1, 3, 7, 9, 15, 17, 31, 33, 100, 1001, 2 * (1 << 15) + 2 * P + 3]


def _elementwise_results(n, rng):
    """Every elementwise kernel on n awkwardly sized values: name -> tuple of outputs."""
    x = rng.uniform(-8.0, 8.0, n).astype(F32)
    small = [rng.uniform(-0.5, 0.5, n).astype(F32)] + [rng.uniform(0.0, 0.2, n).astype(F32)
                                                       for _ in range(3)]
    out = {}
    for name in ACTIVATIONS:
        alpha = _alpha(name)
        y = _C.activation_forward(name, x, alpha)
        out[name] = (y, _C.activation_backward(name, y, small[0], alpha, x=x))
    cols = min(n, n % 37 + 1)  # rows of awkward widths
    rows = max(1, n // cols)
    logits = x[:rows * cols].reshape(rows, cols)
    soft = _C.softmax_forward(logits)
    out["softmax"] = (soft, _C.softmax_backward(soft, small[0][:rows * cols].reshape(rows, cols)))
    labels = np.arange(rows) % cols
    out["cross_entropy"] = _C.cross_entropy(logits, labels)
    out["cross_entropy_soft"] = _C.cross_entropy_soft(logits, soft[::-1].copy())
    for name, ((kernel, _), arity) in OPTIMIZER_KERNELS.items():
        out[name] = kernel(x, *small[:arity - 1])
    out["sum_squares"] = (_C.sum_squares(x),)
    out["dropout"] = (_C.dropout_forward(x, 0.3, 11, 5), _C.random_uniform(n, 11, 5))
    return out


def test_elementwise_kernels_same_bits_on_every_isa():
    supported = _C.supported_isas()
    if len(supported) < 2:
        pytest.skip(f"this CPU runs one ISA only ({supported})")
    for n in SWITCH_SIZES:
        results = {}
        for name in supported:
            _C.set_isa(name)
            results[name] = _elementwise_results(n, np.random.default_rng(n))
        first, base = supported[0], results[supported[0]]
        for name in supported[1:]:
            for op, outs in base.items():
                for k, (a, b) in enumerate(zip(outs, results[name][op])):
                    what = f"{op} output {k}, n={n}: {first} vs {name}"
                    if isinstance(a, float):  # a loss or a sum, in double
                        assert a == b, f"{what}: {a!r} != {b!r}"
                    else:
                        _bits_equal(a, b, what)


# ----------------------------------------------------------------------------- training runs
OPTIMIZERS = {
    "gd": lambda: optim.GD(lr=0.05),
    "sgd": lambda: optim.SGD(lr=0.05, weight_decay=1e-3),
    "sgd_momentum": lambda: optim.SGD(lr=0.02, momentum=0.9),
    "sgd_nesterov": lambda: optim.SGD(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: optim.Adam(lr=1e-3, weight_decay=1e-4),
    "adamw": lambda: optim.AdamW(lr=1e-3),
    "rmsprop": lambda: optim.RMSprop(lr=1e-3),
    "rmsprop_centered": lambda: optim.RMSprop(lr=1e-3, centered=True),
    "rmsprop_momentum": lambda: optim.RMSprop(lr=1e-3, momentum=0.9, weight_decay=1e-4),
    "rmsprop_centered_momentum": lambda: optim.RMSprop(lr=1e-3, centered=True, momentum=0.9),
    "adagrad": lambda: optim.Adagrad(lr=1e-2, lr_decay=1e-3, weight_decay=1e-4),
    "adam_clip_norm": lambda: optim.Adam(lr=1e-3, clip_norm=0.5),
    "sgd_clip_value": lambda: optim.SGD(lr=0.05, momentum=0.9, clip_value=1e-3),
}
FEATURES = {"plain": {}, "dropout": {"dropout": 0.3}, "l1_l2": {"l1": 1e-4, "l2": 1e-3},
            "augment": {"augment": True}, "everything": {"dropout": 0.2, "l1": 1e-4, "l2": 1e-3,
                                                          "augment": True}}


def _data():
    rng = np.random.default_rng(5)
    return rng.uniform(0, 1, (256, 784)).astype(F32), rng.integers(0, 10, 256)


def _fit(optimizer, threads, dropout=0.0, l1=0.0, l2=0.0, augment=False,
         activations=("relu", "tanh")):
    """A 784-512-256-10 model trained for 2 epochs; returns (weights, losses)."""
    X, y = _data()
    _ref.use_threads(threads)
    fastnn.seed(9)
    layers = [nn.Dense(784, 512, activation=activations[0], l1=l1, l2=l2)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Dense(512, 256, activation=activations[1], l2=l2), nn.Dense(256, 10)]
    model = nn.Sequential(*layers)
    model.compile(loss="cross_entropy", optimizer=OPTIMIZERS[optimizer](), metrics=[])
    aug = fastnn.data.Augment((28, 28), max_shift=2, flip=True, max_rotation=10, noise_std=0.05,
                              seed=4) if augment else None
    history = model.fit(X, y, epochs=2, batch_size=128, seed=1, verbose=0, augment=aug)
    return [p.data.copy() for p in model.parameters()], history.history["loss"]


def _assert_same_run(a, b, what):
    (w1, l1), (w2, l2) = a, b
    assert l1 == l2, f"{what}: losses differ: {l1} vs {l2}"
    for i, (p, q) in enumerate(zip(w1, w2)):
        _bits_equal(p, q, f"{what}: parameter {i}")


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_training_bit_identical_one_and_two_threads_every_optimizer(optimizer):
    _assert_same_run(_fit(optimizer, 1), _fit(optimizer, 2), optimizer)


@pytest.mark.parametrize("feature", [f for f in FEATURES if f != "plain"])
def test_training_bit_identical_one_and_two_threads_every_feature(feature):
    kw = FEATURES[feature]
    _assert_same_run(_fit("adam", 1, **kw), _fit("adam", 2, **kw), feature)


@pytest.mark.parametrize("activations", [("sigmoid", "gelu"), ("elu", "softplus"),
                                         ("leaky_relu", "tanh")])
def test_training_bit_identical_one_and_two_threads_every_activation(activations):
    _assert_same_run(_fit("rmsprop_centered_momentum", 1, activations=activations),
                     _fit("rmsprop_centered_momentum", 2, activations=activations),
                     "/".join(activations))


def _fit_cnn(threads):
    """Conv (plain, strided, depthwise), batch norm, pooling and dropout, 2 epochs."""
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((150, 3, 13, 11)).astype(F32), rng.integers(0, 5, 150)
    _ref.use_threads(threads)
    fastnn.seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(12, 16, 3, stride=2, padding=1, activation="relu"),
        nn.Conv2d(16, 16, 3, padding="same", groups=16), nn.AvgPool2d(2), nn.Flatten(),
        nn.Dropout(0.2), nn.Dense(16, 5))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3, clip_norm=1.0), metrics=[])
    history = model.fit(X, y, epochs=2, batch_size=32, seed=1, verbose=0)
    return [p.data.copy() for p in model.parameters()], history.history["loss"]


@pytest.mark.parametrize("threads", [3, 5, 8])
def test_training_bit_identical_on_more_threads_than_this_machine_has(threads):
    """A student's machine splits the work more ways than CI's two cores: the blocking and
    every reduction depend on the sizes only, so the run repeats bit for bit at any count."""
    _assert_same_run(_fit("adam", 1, **FEATURES["everything"]),
                     _fit("adam", threads, **FEATURES["everything"]), f"MLP, {threads} threads")
    _assert_same_run(_fit_cnn(1), _fit_cnn(threads), f"CNN, {threads} threads")


_PROCESS_RUN = """
import hashlib, json, sys
sys.path.insert(0, {tests!r})
import fastnn, test_determinism as t
runs = {{}}
for opt, feature in [("adam", "everything"), ("rmsprop_centered_momentum", "dropout")]:
    w, losses = t._fit(opt, fastnn.get_num_threads(), **t.FEATURES[feature])
    runs[opt] = [hashlib.sha256(b"".join(p.tobytes() for p in w)).hexdigest(), losses]
print(json.dumps({{"threads": fastnn.get_num_threads(), "runs": runs}}))
"""


def test_training_bit_identical_in_processes_with_omp_num_threads_1_and_2():
    """The issue's repro: separate processes, the thread count set by OMP_NUM_THREADS."""
    if not fastnn.config()["openmp"]:
        pytest.skip("built without OpenMP: only one thread")
    code = _PROCESS_RUN.format(tests=os.path.dirname(os.path.abspath(__file__)))
    results = []
    for threads in ("1", "2"):
        proc = _ref.run_python(code, env_extra={"OMP_NUM_THREADS": threads})
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["threads"] == int(threads)
        results.append(out["runs"])
    for opt in results[0]:
        assert results[0][opt][1] == results[1][opt][1], f"{opt}: losses differ between processes"
        assert results[0][opt][0] == results[1][opt][0], f"{opt}: weights differ between processes"

