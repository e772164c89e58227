"""Mixed precision in the layers and training (fastnn.precision, compile/fit(precision=...)):
bf16 products where asked, float32 everywhere else, fp32 unchanged; each bf16 path this CPU
has (FASTNN_BF16's paths, chosen here with _C.set_bf16_path)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import _C, datasets, nn, optim

import _ref

PATHS = [p for p in _C.supported_bf16_paths() if p != "fp32"]
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(params=PATHS or [pytest.param("none", marks=pytest.mark.skip(
    reason="this CPU has no bf16 instructions (AVX512_BF16 or AMX)"))])
def bf16_path(request):
    old = _C.bf16_path()
    _C.set_bf16_path(request.param)
    yield request.param
    _C.set_bf16_path(old)


def bf16_product(a, b):
    """The float64 product of the operands rounded to bf16, and its error bound: float32
    accumulation of k products."""
    ra, rb = (_ref.bf16_round(v).astype(np.float64) for v in (a, b))
    return ra @ rb, 4 * EPS32 * (a.shape[1] + 2) * (np.abs(ra) @ np.abs(rb))


def test_dense_forward_and_backward_products_in_bf16(bf16_path, rng):
    x = rng.standard_normal((37, 70)).astype(np.float32)
    layer = nn.Dense(70, 33)
    w, b = layer.weight.data, layer.bias.data
    with fastnn.autocast("bf16"):
        y = layer(x)
    expected, bound = bf16_product(x, w.T)
    assert (np.abs(y - (expected + b)) <= bound + 4 * EPS32 * np.abs(b)).all()
    fp32 = x.astype(np.float64) @ w.T + b
    assert np.abs(y - fp32).max() > 1e-4, "the product did not round its operands"
    g = rng.standard_normal((37, 33)).astype(np.float32)
    gx = layer.backward(g)  # outside the block: the forward's precision still holds
    expected, bound = bf16_product(g.T, x)
    assert (np.abs(layer.weight.grad - expected) <= bound).all()
    expected, bound = bf16_product(g, w)
    assert (np.abs(gx - expected) <= bound).all()
    layer.zero_grad()
    assert np.array_equal(layer(x), fastnn.matmul(x, w, transpose_b=True) + b)  # fp32 again


def test_conv2d_gemm_path_in_bf16_and_direct_kernels_in_fp32(bf16_path, rng):
    x = rng.standard_normal((2, 24, 9, 9)).astype(np.float32)
    rx = _ref.bf16_round(x).astype(np.float64)
    conv = nn.Conv2d(24, 40, 3, stride=2, padding=1)   # strided: the im2col GEMM
    with fastnn.autocast("bf16"):
        y = conv(x)
    rw = _ref.bf16_round(conv.weight.data).astype(np.float64)
    expected = _ref.conv2d(rx, rw, conv.bias.data, 2, 1)
    bound = 4 * EPS32 * (24 * 9 + 2) * _ref.conv2d(np.abs(rx), np.abs(rw), None, 2, 1)
    assert (np.abs(y - expected) <= bound + 1e-6).all()
    assert np.abs(y - conv(x)).max() > 1e-4, "the strided convolution ran float32 products"
    if _C.get_isa() == "generic":  # no direct kernels there: stride 1 takes the GEMM too
        return
    same = nn.Conv2d(24, 40, 3, padding=1)   # stride 1: direct forward and input gradient,
    with fastnn.autocast("bf16"):            # the weight's gradient (40 > 16 filters) on
        y = same(x)                          # the GEMM
    assert np.array_equal(y, same(x)), "the direct forward is float32"
    g = rng.standard_normal(y.shape).astype(np.float32)
    with fastnn.autocast("bf16"):
        same(x)
    same.backward(g)
    col, _ = _ref.im2col(rx, 3, 1, 1)
    rows = _ref.bf16_round(g).astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 40)
    expected_dw = (rows.T @ col).reshape(same.weight.shape)
    bound = 4 * EPS32 * (len(rows) + 2) * (np.abs(rows).T @ np.abs(col)).reshape(same.weight.shape)
    assert (np.abs(same.weight.grad - expected_dw) <= bound + 1e-6).all()


def test_precision_using_checks_its_argument_and_keeps_compile_s_precision(rng):
    """Found by an attack: using("BF16") or using(None) was taken as given and failed later
    in the GEMM, naming gemm's argument. A compiled model's predict and evaluate run its
    compiled precision inside an autocast block, as the module's docstring says."""
    layer = nn.Dense(8, 4)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    with fastnn.precision.using("BF16"):
        assert fastnn.precision.current() == "bf16"
    for bad, error in ((None, TypeError), ("fp16", ValueError), (16, TypeError)):
        with pytest.raises(error, match="precision.using: precision"):
            with fastnn.precision.using(bad):
                layer(x)
    assert fastnn.precision.current() == "fp32"
    model = nn.Sequential(nn.Dense(8, 4))
    model.compile(loss="cross_entropy", optimizer="sgd")
    plain = model.predict(x)
    with fastnn.autocast("bf16"):
        np.testing.assert_array_equal(model.predict(x), plain)   # compiled fp32 holds


def test_precision_using_nests_decorates_and_restores_after_an_error():
    with fastnn.precision.using("bf16"):
        with fastnn.precision.using("fp32"):
            assert fastnn.precision.current() == "fp32"
        assert fastnn.precision.current() == "bf16"
        with pytest.raises(KeyError):
            with fastnn.precision.using("fp32"):
                raise KeyError("inside")
        assert fastnn.precision.current() == "bf16"
    assert fastnn.precision.current() == "fp32"

    @fastnn.precision.using("bf16")
    def inner(depth):  # each call enters its own block, recursion too
        seen = [fastnn.precision.current()]
        if depth:
            with fastnn.precision.using("fp32"):
                seen += inner(depth - 1)
            seen.append(fastnn.precision.current())
        return seen

    assert inner(2) == ["bf16", "bf16", "bf16", "bf16", "bf16"]
    assert fastnn.precision.current() == "fp32"


def test_fp32_is_unchanged_and_autocast_nests_and_is_per_thread(rng):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    layer = nn.Dense(8, 4)
    before = layer(x)
    assert fastnn.precision.current() == "fp32"
    with fastnn.autocast("bf16"):
        with fastnn.autocast("fp32"):
            assert fastnn.precision.current() == "fp32"
            assert np.array_equal(layer(x), before)
        assert fastnn.precision.current() == "bf16"
        seen = []
        worker = threading.Thread(target=lambda: seen.append(fastnn.precision.current()))
        worker.start()
        worker.join()
        assert seen == ["fp32"]
    assert fastnn.precision.current() == "fp32"


FASHION = pytest.mark.skipif(not datasets.is_available("fashion-mnist"),
                             reason="apt-get install dataset-fashion-mnist (CI installs it)")


def _train_fashion(precision):
    """784-256-128-10, Adam, batch 128, 5 epochs, seed 0: each step's loss, test accuracy."""
    X, y, X_test, y_test = datasets.load("fashion-mnist")
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(784, 256, activation="relu"),
                          nn.Dense(256, 128, activation="relu"), nn.Dense(128, 10))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3), precision=precision)
    losses = []

    class StepLoss(fastnn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            losses.append(logs["loss"])
    model.fit(X, y, epochs=5, batch_size=128, seed=0, verbose=0, callbacks=[StepLoss()])
    return np.array(losses), model.evaluate(X_test, y_test)["accuracy"]


@pytest.fixture(scope="module")
def fashion_fp32():
    return _train_fashion("fp32")


@pytest.mark.slow
@FASHION
def test_bf16_training_matches_fp32_on_fashion_mnist(bf16_path, fashion_fp32):
    """Test accuracy within 0.4 percentage points of fp32's (measured: +0.16 on AMX, +0.17
    on AVX512_BF16; +0.31 against the generic ISA's fp32 kernels, FASTNN_ISA=generic); over
    the first 200 steps each step's loss within 0.1 of fp32's and their 20-step means within
    0.03 (measured: 0.031-0.041 and 0.008-0.010)."""
    fp32_losses, fp32_accuracy = fashion_fp32
    losses, accuracy = _train_fashion("bf16")
    assert abs(accuracy - fp32_accuracy) <= 0.004, (accuracy, fp32_accuracy)
    assert accuracy > 0.85
    diff = np.abs(losses[:200] - fp32_losses[:200])
    assert diff.max() <= 0.1, diff.max()
    window = np.ones(20) / 20
    means = np.abs(np.convolve(losses[:200], window, "valid")
                   - np.convolve(fp32_losses[:200], window, "valid"))
    assert means.max() <= 0.03, means.max()
    assert diff.max() > 0, "bf16 gave fp32's losses bit for bit: the products were not bf16"


@pytest.mark.slow
@FASHION
@pytest.mark.skipif(not PATHS, reason="this CPU has no bf16 instructions (AVX512_BF16 or AMX)")
def test_bf16_cnn_training_matches_fp32_on_fashion_mnist():
    """A CNN (two 3x3 convolutions of 32 filters, max pooling, Dense), Adam, 20000 training
    images, 2 epochs, seed 0, on the best bf16 path only (they agree with each other above):
    test accuracy within 0.3 percentage points of fp32's (measured +0.22 on AMX; seed 1:
    +0.11)."""
    X, y, X_test, y_test = datasets.load("fashion-mnist")
    X, X_test = X.reshape(-1, 1, 28, 28)[:20000], X_test.reshape(-1, 1, 28, 28)
    accuracy = {}
    for precision in ("fp32", "bf16"):
        fastnn.seed(0)
        model = nn.Sequential(nn.Conv2d(1, 32, 3, padding="same", activation="relu"),
                              nn.MaxPool2d(2),
                              nn.Conv2d(32, 32, 3, padding="same", activation="relu"),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Dense(32 * 49, 10))
        model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=2e-3), precision=precision)
        model.fit(X, y[:20000], epochs=2, batch_size=128, seed=0, verbose=0)
        accuracy[precision] = model.evaluate(X_test, y_test)["accuracy"]
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.003, accuracy
    assert accuracy["bf16"] > 0.85, accuracy


def test_compile_fit_save_and_errors(tmp_path, rng):
    X = rng.standard_normal((64, 6)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Dense(6, 8, activation="relu"), nn.Dense(8, 3))
    model.compile(loss="cross_entropy", optimizer="adam", precision="BF16")
    assert model.compiled.precision == "bf16"
    model.fit(X, y, epochs=1, verbose=0, precision="fp32")  # this fit only
    assert model.compiled.precision == "bf16"
    pytest.importorskip("safetensors")
    model.save(tmp_path / "m.safetensors")
    assert fastnn.load(tmp_path / "m.safetensors").compiled.precision == "bf16"
    with pytest.raises(ValueError, match=r"precision must be 'fp32' or 'bf16'; got 'fp16'"):
        model.compile(loss="mse", precision="fp16")
    with pytest.raises(TypeError, match=r"precision must be a str.*got int"):
        model.fit(X, y, precision=16)
    with pytest.raises(ValueError, match=r"compare: precision"):
        fastnn.experiments.compare(lambda: nn.Sequential(nn.Dense(6, 3)), (X, y, X, y),
                                   precision="half", verbose=False)
    with pytest.raises(ValueError, match=r"conv2d_forward: argument 'precision'"):
        _C.conv2d_forward(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                          precision="bf8")


def test_warns_once_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(_C, "bf16_path", lambda: "fp32")
    monkeypatch.setattr(_C, "bf16_auto_path", lambda: "fp32")
    monkeypatch.setattr(_C, "bf16_path_description", lambda: "fp32 (no bf16 instructions: test)")
    monkeypatch.setattr(fastnn.precision, "_warned", False)
    model = nn.Sequential(nn.Dense(2, 2))
    with pytest.warns(RuntimeWarning, match=r"compile: precision='bf16' runs float32 products"):
        model.compile(loss="mse", precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compile(loss="mse", precision="bf16")
        with fastnn.autocast("bf16"):
            pass


def test_cli_precision(tmp_path):
    result = _ref.run_python(None, args=["-m", "fastnn", "train", "--data", "moons", "--hidden",
                                         "8", "--epochs", "1", "--precision", "bf16"])
    assert result.returncode == 0, result.stderr
    fresh = _ref.run_python("from fastnn import _C; print(_C.bf16_path_description())")
    assert f"bf16 products on {fresh.stdout.strip()}" in result.stdout  # a fresh process's path
    bad = _ref.run_python(None, args=["-m", "fastnn", "compare", "--precision", "fp16"])
    assert bad.returncode == 2 and "--precision" in bad.stderr


def test_one_autocast_object_is_entered_again_nested_and_as_a_decorator():
    """An attack: a second ``with`` of one autocast object raised AttributeError
    ('_GeneratorContextManager' object has no attribute 'args'); torch.autocast's are reusable."""
    current = fastnn.precision.current
    bf16, fp32 = fastnn.autocast("bf16"), fastnn.autocast("fp32")
    for _ in range(2):
        with bf16:
            assert current() == "bf16"
        assert current() == "fp32"
    with bf16:
        with fp32:
            with bf16:  # the same object inside itself: each exit restores its own entry's
                assert current() == "bf16"
            assert current() == "fp32"
        assert current() == "bf16"
    assert current() == "fp32"
    with pytest.raises(KeyError):
        with bf16:
            raise KeyError("out of the block")
    assert current() == "fp32"

    @bf16
    def inside() -> str:
        return current()

    assert [inside(), inside(), current()] == ["bf16", "bf16", "fp32"]
    seen = []
    with bf16:  # another thread entering the same object keeps its own state
        worker = threading.Thread(target=lambda: seen.extend([current(), inside(), current()]))
        worker.start()
        worker.join()
        assert current() == "bf16"
    assert seen == ["fp32", "bf16", "fp32"] and current() == "fp32"


def test_one_precision_using_object_shared_by_threads_restores_each_thread_s_own():
    import threading

    fp32 = fastnn.precision.using("fp32")
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with fastnn.precision.using("bf16"):
            with fp32:
                a_in.set()
                b_in.wait(5)
            seen["a"] = fastnn.precision.current()
            a_out.set()

    def b():
        a_in.wait(5)
        with fp32:
            b_in.set()
            a_out.wait(5)
        seen["b"] = fastnn.precision.current()

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"a": "bf16", "b": "fp32"}
