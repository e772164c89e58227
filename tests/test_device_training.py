"""Models on device arrays: ``model.to(device)``, ``fit(..., device=...)``, ``evaluate`` and
``predict`` of a model there, held to the same model trained on NumPy arrays.

"cpu-tensor" moves the model into DeviceArrays in host memory (``nn.module.place``), which
every machine has: the layers, the loss, the optimizer's flat buffer and the training loop
then take the device path with the CPU's kernels, so the result must equal the NumPy run
bit for bit. "cuda" (marked ``cuda``: the CUDA build on a GPU, scripts/gpu_check.sh) runs the
kernels of csrc/cuda, whose loss curve must follow the CPU's to 1e-4 over 200 steps, with
dropout drawing the CPU's masks."""
import re

import numpy as np
import pytest

import fastnn
from fastnn import _C, nn
from fastnn.callbacks import Callback
from fastnn.nn.module import place
from fastnn.tensor import Tensor

CUDA = _C.cuda_info()
DEVICES = ["cpu-tensor", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not CUDA["available"], reason=f"no usable CUDA: {CUDA['reason']}")])]


def move(model, device):
    if device == "cpu-tensor":
        return place(model, Tensor(_C.DeviceArray.empty([0], "float32", "cpu")))
    return model.to(device)


def data(n=800, features=20, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 2
    y = rng.integers(0, classes, n)
    X = (centers[y] + rng.standard_normal((n, features))).astype(np.float32)
    return X, y


def mlp(optimizer="adam", seed=0):
    fastnn.seed(seed)
    model = nn.Sequential(nn.Dense(20, 32, "relu"), nn.Dropout(0.2), nn.Dense(32, 16), nn.Tanh(),
                          nn.Dense(16, 16, "gelu"), nn.Dense(16, 5))
    model.compile(loss="cross_entropy", optimizer=optimizer)
    return model


class StepLosses(Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def same(device, got, expected, atol):
    if device == "cpu-tensor":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_fit_on_a_device_follows_the_cpu(device, optimizer):
    """200 steps (8 epochs of 25 batches, dropout on), step by step from the same weights."""
    X, y = data()
    expected, got = StepLosses(), StepLosses()
    cpu = mlp(optimizer)
    cpu.fit(X, y, epochs=8, batch_size=32, seed=1, verbose=0, callbacks=[expected])
    model = move(mlp(optimizer), device)
    assert all(isinstance(p.data, Tensor) for p in model.parameters())
    history = model.fit(X, y, epochs=8, batch_size=32, seed=1, verbose=0, callbacks=[got])
    assert len(got.losses) == 200 and expected.losses[-1] < 0.5 * expected.losses[0]
    same(device, got.losses, expected.losses, 1e-4)
    assert isinstance(model.parameters()[0].data, Tensor), "fit moved the model off the device"
    same(device, history.history["accuracy"], cpu.history.history["accuracy"], 0.01)
    for p, q in zip(model.parameters(), cpu.parameters()):
        same(device, p.data.numpy(), q.data, 1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_fit_with_device_argument_unshuffled_and_full_batch(device):
    X, y = data(300)
    cpu = mlp("sgd")
    cpu.fit(X, y, epochs=3, batch_size=None, shuffle=False, verbose=0)
    model = mlp("sgd")
    if device == "cpu-tensor":
        move(model, device)
        model.fit(X, y, epochs=3, batch_size=None, shuffle=False, verbose=0)
    else:
        model.fit(X, y, epochs=3, batch_size=None, shuffle=False, verbose=0, device=device)
        assert model.parameters()[0].data.device == "cuda:0"
    same(device, model.history.history["loss"], cpu.history.history["loss"], 1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_predict_and_evaluate_on_a_device(device):
    X, y = data(300)
    cpu = mlp()
    model = move(mlp(), device)
    got = model.predict(X, batch_size=64)
    assert isinstance(got, np.ndarray) and got.shape == (300, 5)
    same(device, got, cpu.predict(X, batch_size=64), 1e-5)
    got, expected = model.evaluate(X, y), cpu.evaluate(X, y)
    assert got.keys() == expected.keys()
    same(device, [got["loss"]], [expected["loss"]], 1e-5)
    out = model(fastnn.memory.asarray(X[:10], like=model.parameters()[0].data))
    assert isinstance(out, Tensor) and out.shape == (10, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_to_keeps_the_optimizer_state_and_comes_back(device):
    """An epoch on the CPU, one on the device, one back on the CPU: the run of three on the
    CPU, the optimizer's moments and step count carried along."""
    X, y = data(256)
    straight, moved = mlp(), mlp()
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    straight.fit(X, y, epochs=3, batch_size=32, seed=rng_a, verbose=0)
    moved.fit(X, y, epochs=1, batch_size=32, seed=rng_b, verbose=0)
    move(moved, device)
    assert moved.compiled.optimizer.step_count == 8
    moved.fit(X, y, epochs=1, batch_size=32, seed=rng_b, verbose=0)
    assert moved.to("cpu") is moved
    assert all(type(p.data) is np.ndarray and type(p.grad) is np.ndarray for p in moved.parameters())
    moved.fit(X, y, epochs=1, batch_size=32, seed=rng_b, verbose=0)
    assert moved.compiled.optimizer.step_count == 24
    for p, q in zip(moved.parameters(), straight.parameters()):
        same(device, p.data, q.data, 1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["mse", "bce", "bce_probabilities", "penalties", "clip_norm", "clip_value",
                                  "adagrad", "rmsprop", "soft_targets", "softmax_mse"])
def test_the_other_losses_penalties_and_clipping_on_a_device(device, case):
    """MSE on one-hot rows, binary cross-entropy from logits and from a sigmoid's
    probabilities, Dense's L1/L2 penalties (in the loss and the gradient), clip_norm and
    clip_value, Adagrad and RMSprop, cross-entropy from one-hot rows, a Softmax layer: the CPU's
    loss curve."""
    X, y = data(400, classes=2 if case.startswith("bce") else 5)
    target = np.eye(5, dtype=np.float32)[y] if case in ("mse", "soft_targets", "softmax_mse") else y

    def build():
        fastnn.seed(3)
        last = {"bce": nn.Dense(16, 1), "bce_probabilities": nn.Dense(16, 1, "sigmoid")}.get(case, nn.Dense(16, 5))
        first = nn.Dense(20, 16, "tanh", l1=1e-3, l2=1e-2) if case == "penalties" else nn.Dense(20, 16, "tanh")
        model = nn.Sequential(first, last, *[nn.Softmax()] * (case == "softmax_mse"))
        loss = {"mse": "mse", "softmax_mse": "mse", "bce": "binary_cross_entropy",
                "bce_probabilities": fastnn.losses.BinaryCrossEntropy(from_logits=False)}.get(case, "cross_entropy")
        clip = {"clip_norm": {"clip_norm": 0.5}, "clip_value": {"clip_value": 0.01}}.get(case, {})
        optimizer = {"adagrad": fastnn.optim.Adagrad(lr=0.05, lr_decay=0.01),
                     "rmsprop": fastnn.optim.RMSprop(lr=0.005, momentum=0.5, centered=True)}.get(
            case, fastnn.optim.SGD(lr=0.1, momentum=0.9, **clip))
        model.compile(loss=loss, optimizer=optimizer)
        return model

    expected, got = StepLosses(), StepLosses()
    cpu = build()
    cpu.fit(X, target, epochs=3, batch_size=32, seed=1, verbose=0, callbacks=[expected])
    model = move(build(), device)
    model.fit(X, target, epochs=3, batch_size=32, seed=1, verbose=0, callbacks=[got])
    assert expected.losses[-1] < expected.losses[0]
    same(device, got.losses, expected.losses, 1e-4)
    same(device, model.history.history["accuracy"], cpu.history.history["accuracy"], 0.01)


@pytest.mark.parametrize("device", DEVICES)
class Residual(nn.Module):
    """A model with a forward of its own: its backward is recorded from fastnn.functional."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Dense(20, 20, "relu")
        self.out = nn.Dense(20, 5)

    def forward(self, x):
        return self.out(fastnn.functional.add(x, self.inner(x)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,words", [
    ("recorded", "Residual (the model) derives its backward from a forward of its own"),
    ("diagnostics", "fit(..., diagnostics=True) on"),
    ("distributed", "fit(..., distributed=True) on"),
])
def test_what_cannot_run_on_a_device_is_named(device, case, words):
    model = Residual() if case == "recorded" else nn.Sequential(nn.Dense(20, 5))
    model.compile(loss="cross_entropy", optimizer="adam")
    X, y = data(64)
    with pytest.raises(NotImplementedError, match=re.escape(words)):
        move(model, device)
        model.fit(X, y, epochs=1, verbose=0, diagnostics=case == "diagnostics",
                  distributed=case == "distributed")


@pytest.mark.parametrize("where", ["compile", "fit", "predict"])
def test_bf16_on_a_device_is_refused_before_any_batch_runs(where):
    """Found by an attack: bf16 products on a device failed in the first GEMM with gemm's
    message, after a batch norm's running statistics had moved by that batch."""
    fastnn.seed(0)
    model = nn.Sequential(nn.BatchNorm1d(20), nn.Dense(20, 5))
    if where != "predict":   # an uncompiled model's predict follows autocast
        model.compile(loss="cross_entropy", optimizer="adam",
                      precision="bf16" if where == "compile" else "fp32")
    X, y = data(64)
    move(model, "cpu-tensor")
    words = {"compile": "fit: the model's compiled precision 'bf16' on cpu is not built yet",
             "fit": "fit: precision='bf16' on cpu is not built yet",
             "predict": "predict: autocast's precision 'bf16' (the model is not compiled)"}[where]
    with pytest.raises(NotImplementedError, match=re.escape(words)):
        if where == "predict":
            with fastnn.autocast("bf16"):
                model.predict(X)
        else:
            model.fit(X, y, epochs=1, verbose=0, precision="bf16" if where == "fit" else None)
    bn = model.layers[0]
    assert bn.num_batches_tracked == 0 and not bn.running_mean.numpy().any()


@pytest.mark.parametrize("layer", ["dense", "conv", "batchnorm"])
def test_a_batch_in_the_other_memory_is_named_by_the_layer(layer):
    """Found by an attack: a NumPy batch given to a model on a device failed in the kernel,
    naming its argument ('b', 'weight') and saying a Tensor is not a NumPy array."""
    make = {"dense": lambda: (nn.Dense(6, 3), np.ones((4, 6), np.float32)),
            "conv": lambda: (nn.Conv2d(1, 2, 3), np.ones((2, 1, 5, 5), np.float32)),
            "batchnorm": lambda: (nn.BatchNorm1d(6), np.ones((4, 6), np.float32))}[layer]
    module, x = make()
    model = move(nn.Sequential(module), "cpu-tensor")
    with pytest.raises(ValueError, match=re.escape(
            f"{module!r}: the input is in host memory (a NumPy array) but the layer is on cpu "
            "(a fastnn Tensor)")):
        model(x)
    host = place(model, np.empty(0, np.float32))
    with pytest.raises(ValueError, match=re.escape(
            f"{module!r}: the input is on cpu (a fastnn Tensor) but the layer is in host memory")):
        host(Tensor(_C.DeviceArray.from_numpy(x, "cpu")))


def test_loss_on_a_device_checks_host_labels_and_refuses_another_device():
    pred = Tensor(_C.DeviceArray.from_numpy(np.zeros((4, 3), np.float32), "cpu"))
    loss = fastnn.losses.CrossEntropy()
    assert loss(pred, np.array([0, 1, 2, 0])) == pytest.approx(np.log(3))
    assert isinstance(loss.backward(), Tensor)
    with pytest.raises(ValueError, match=r"labels\[3\] = 3 is outside"):
        loss(pred, np.array([0, 1, 2, 3], np.uint8))
    with pytest.raises(ValueError, match="same number of rows"):
        loss(pred, np.array([0, 1]))
    assert loss(pred, np.full((4, 3), 1 / 3)) == pytest.approx(np.log(3))  # a distribution per row

    class Mine(fastnn.losses.MSE.__base__):  # a loss of one's own: its _compute reads NumPy arrays
        _device_kernels = False

        def _compute(self, p, t):
            return float(np.mean((p - t) ** 2)), 2 * (p - t) / p.size

    with pytest.raises(NotImplementedError, match="Mine has no CUDA kernels yet"):
        Mine()(pred, np.zeros((4, 3)))


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA["available"], reason=f"no usable CUDA: {CUDA['reason']}")
def test_training_on_the_gpu_allocates_nothing_after_the_first_epoch():
    X, y = data()
    model = mlp().to("cuda")
    model.fit(X, y, epochs=1, batch_size=32, seed=1, verbose=0)
    before = fastnn.tensor.memory_stats("cuda")["device_allocs"]
    model.fit(X, y, epochs=3, batch_size=32, seed=2, verbose=0)
    assert fastnn.tensor.memory_stats("cuda")["device_allocs"] == before


def test_cli_device_refuses_what_this_build_or_machine_lacks(capsys):
    from fastnn.cli import main

    assert main(["train", "--data", "xor", "--epochs", "1", "--device", "gpu"]) == 1
    assert "'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err
    if not CUDA["available"]:
        assert main(["compare", "--data", "xor", "--epochs", "1", "--device", "cuda"]) == 1
        words = CUDA["reason"] if CUDA["built"] else "built without CUDA; build it with"
        assert words in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA["available"], reason=f"no usable CUDA: {CUDA['reason']}")
def test_cli_trains_on_the_gpu(capsys):
    from fastnn.cli import main

    assert main(["train", "--data", "digits", "--epochs", "3", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.rsplit("test accuracy", 1)[1].split()[0])
    assert accuracy > 0.85, out


def cnn(seed=0):
    """Every conv and pooling path: padding "same", stride 2, dilation 2, groups 2, depthwise,
    max, average and global average pooling, a gelu (whose backward reads the input)."""
    fastnn.seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same", activation="relu"), nn.MaxPool2d(2),          # 8x8 -> 4x4
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, activation="gelu"),          # 4x4
        nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.AvgPool2d(2, stride=1, padding=1),  # 4x4 -> 5x5
        nn.Conv2d(6, 8, 2, stride=2, activation="tanh"), nn.Dropout(0.1),               # 2x2
        nn.GlobalAvgPool2d(), nn.Dense(8, 3))
    model.compile(loss="cross_entropy", optimizer="adam")
    return model


@pytest.mark.parametrize("device", DEVICES)
def test_a_cnn_trains_on_a_device_as_on_the_cpu(device):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 240)
    X = (rng.standard_normal((240, 1, 8, 8)) + y[:, None, None, None]).astype(np.float32)
    expected, got = StepLosses(), StepLosses()
    cpu = cnn()
    cpu.fit(X, y, epochs=4, batch_size=24, seed=1, verbose=0, callbacks=[expected])
    model = move(cnn(), device)
    model.fit(X, y, epochs=4, batch_size=24, seed=1, verbose=0, callbacks=[got])
    assert expected.losses[-1] < expected.losses[0]
    same(device, got.losses, expected.losses, 1e-4)
    same(device, model.predict(X[:50]), cpu.predict(X[:50]), 1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_norm_trains_on_a_device_as_on_the_cpu(device):
    """BatchNorm2d after a conv and BatchNorm1d after a Dense: the loss curve, the running
    statistics and num_batches_tracked (kept on the host), and evaluation's outputs."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 192)
    X = (rng.standard_normal((192, 2, 6, 6)) * 3 + y[:, None, None, None]).astype(np.float32)

    def build():
        fastnn.seed(4)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Dense(36, 16), nn.BatchNorm1d(16, momentum=None), nn.Tanh(),
                              nn.Dense(16, 3))
        model.compile(loss="cross_entropy", optimizer="sgd")
        return model

    expected, got = StepLosses(), StepLosses()
    cpu = build()
    cpu.fit(X, y, epochs=3, batch_size=32, seed=1, verbose=0, callbacks=[expected])
    model = move(build(), device)
    model.fit(X, y, epochs=3, batch_size=32, seed=1, verbose=0, callbacks=[got])
    same(device, got.losses, expected.losses, 1e-4)
    for (name, b), (_, b_cpu) in zip(model.named_buffers(), cpu.named_buffers()):
        assert type(b) is np.ndarray or b.dtype == np.float32, name
        same(device, b if type(b) is np.ndarray else b.numpy(), b_cpu, 1e-4)
    same(device, model.predict(X[:40]), cpu.predict(X[:40]), 1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_a_model_on_a_device_saves_checkpoints_and_exports_host_copies(device, tmp_path):
    """io.save, ModelCheckpoint (with the optimizer), TensorBoard's histograms and ONNX
    export read host copies of a device model's arrays (each raised a TypeError, the
    checkpoint after its first epoch had trained); gradient_check says it runs on the CPU."""
    pytest.importorskip("safetensors")
    X, y = data(n=64)
    model = move(mlp(), device)
    model.save(tmp_path / "m.safetensors")
    ck = fastnn.callbacks.ModelCheckpoint(tmp_path / "ck.safetensors", include_optimizer=True,
                                          save_best_only=False)
    model.fit(X, y, epochs=2, verbose=0, callbacks=[ck])
    loaded = fastnn.load(tmp_path / "ck.safetensors")
    want = model.predict(X)
    np.testing.assert_allclose(loaded.predict(X), want.numpy() if hasattr(want, "numpy") else want,
                               rtol=1e-5, atol=1e-6)
    try:
        import tensorboardX  # noqa: F401
        model.fit(X, y, epochs=1, verbose=0, callbacks=[fastnn.callbacks.TensorBoard(tmp_path / "tb")])
        assert any((tmp_path / "tb").iterdir())
    except ImportError:
        pass
    try:
        import onnx  # noqa: F401
        assert model.export_onnx(tmp_path / "m.onnx", (20,)).stat().st_size > 1000
    except ImportError:
        pass
    with pytest.raises(ValueError, match=r"gradient_check runs on the CPU; the model's 0\.weight "
                                         r"is a fastnn Tensor on .*model\.to\('cpu'\)"):
        fastnn.diagnostics.gradient_check(model, X[:8], y[:8], "cross_entropy")


def test_fit_names_its_device_argument():
    """An attack: fit(device=1) said "Sequential.to must be a str ...", and device="cuda" in
    a build without CUDA "Sequential.to 'cuda': ...", naming no argument of fit."""
    X, y = data(n=40)
    model = mlp()
    with pytest.raises(TypeError, match=r"^fit: device must be a device name such as 'cpu' or "
                                        r"'cuda' \(a str\), got int"):
        model.fit(X, y, device=1, verbose=0)
    with pytest.raises(ValueError, match=r"^fit: device 'cuda:٣' is not a device"):
        model.fit(X, y, device="cuda:٣", verbose=0)
    if not CUDA["available"]:
        words = CUDA["reason"] if CUDA["built"] else "this fastnn was built without CUDA; build it"
        with pytest.raises(RuntimeError, match=r"^fit: device 'cuda': " + re.escape(words)):
            model.fit(X, y, device="cuda", verbose=0)
    with pytest.raises(TypeError, match=r"Sequential\.to must be a device name .*got NoneType"):
        model.to(None)
    assert model.fit(X, y, device="cpu", epochs=1, verbose=0).history["loss"]


@pytest.mark.parametrize("device", DEVICES)
def test_fit_then_evaluate_with_metrics_on_a_device(device):
    """fit and evaluate count in copies of the compiled metrics; the loss they refer to
    holds the last batch's gradient on the device, which does not copy (the copies share
    it): 'cannot pickle DeviceArray' had stopped a fit after a fit, or an evaluate."""
    X, y = data(256)
    model = move(nn.Sequential(nn.Dense(20, 16, activation="relu"), nn.Dense(16, 5)), device)
    model.compile("cross_entropy", "adam", metrics=["accuracy"])
    first = model.fit(X, y, epochs=1, batch_size=64, verbose=0).history["accuracy"]
    again = model.fit(X, y, epochs=1, batch_size=64, verbose=0).history["accuracy"]
    result = model.evaluate(X, y)
    assert 0.0 <= first[0] <= 1.0 and 0.0 <= again[0] <= 1.0 and 0.0 <= result["accuracy"] <= 1.0
