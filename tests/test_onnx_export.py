"""ONNX export (fastnn.onnx_export, Module.export_onnx, fastnn export --onnx): onnxruntime
runs the exported graph and its outputs match fastnn's predict."""

import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn import nn

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (the test extra)")
ort = pytest.importorskip("onnxruntime", reason="running the export needs onnxruntime "
                          "(the test extra)")


def _run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": X})[0]


def _checked(path):
    """The saved file passes onnx's checker and declares the opset fastnn states."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    return proto


def test_mlp_every_activation_matches_predict(tmp_path):
    fnn.seed(1)
    acts = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "softplus", None]
    layers, width = [], 12
    for act in acts:
        layers.append(nn.Dense(width, 9, activation=act))
        width = 9
    # each layer after one that gives it negative inputs (ReLU would hide the others' ones)
    bn = nn.BatchNorm1d(9)
    layers += [nn.Dropout(0.3), nn.LeakyReLU(0.2), nn.ELU(0.7), nn.GELU(), nn.Tanh(),
               nn.Softplus(), nn.Sigmoid(), bn, nn.ReLU(), nn.Dense(9, 4, bias=False),
               nn.Softmax()]
    model = nn.Sequential(*layers)
    # non-trivial BatchNorm statistics and affine parameters
    model.train()
    model(np.random.default_rng(2).normal(2.0, 3.0, (64, 12)).astype(np.float32))
    bn.weight.data[...] = np.linspace(0.5, 2.0, 9)
    bn.bias.data[...] = np.linspace(-1.0, 1.0, 9)
    X = np.random.default_rng(0).normal(0.0, 2.0, (33, 12)).astype(np.float32)
    path = model.export_onnx(tmp_path / "mlp.onnx", (12,))
    proto = _checked(path)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Gemm", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softplus",
            "BatchNormalization", "Softmax"} <= ops
    assert "Dropout" not in ops
    expected = model.predict(X)
    got = _run(path, X)
    assert got.shape == expected.shape == (33, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_trained_cnn_matches_predict(tmp_path):
    fnn.seed(3)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(96, 2, 12, 12)).astype(np.float32)
    y = (X[:, 0, :6].mean(axis=(1, 2)) > 0).astype(np.int64)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding="same", activation="relu"),
        nn.BatchNorm2d(6),
        nn.MaxPool2d(2),                                        # 6x6
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3, activation="tanh"),
        nn.Conv2d(6, 6, 3, padding=1, groups=6),                # depthwise
        nn.AvgPool2d(3, stride=2, padding=1),                   # 3x3, padding counted
        nn.Conv2d(6, 8, (2, 3), stride=(1, 2), padding=(2, 1), activation="gelu"),  # 6x2
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Reshape((8, 6, 2)),
        nn.BatchNorm2d(8),
        nn.GlobalAvgPool2d(),
        nn.Dense(8, 2))
    model.compile(loss="cross_entropy", optimizer="adam")
    model.fit(X, y, epochs=2, batch_size=16, verbose=0, seed=0)
    bn = model.layers[1]
    assert not np.allclose(bn.running_mean, 0) and not np.allclose(bn.running_var, 1)
    path = model.export_onnx(tmp_path / "cnn.onnx", (2, 12, 12))
    proto = _checked(path)
    ops = [n.op_type for n in proto.graph.node]
    assert {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization",
            "Flatten", "Reshape"} <= set(ops)
    X_test = rng.normal(size=(10, 2, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(_run(path, X_test), model.predict(X_test), rtol=1e-5, atol=1e-5)
    # any batch size: the batch dimension is symbolic
    np.testing.assert_allclose(_run(path, X_test[:1]), model.predict(X_test[:1]),
                               rtol=1e-5, atol=1e-5)


def test_unmapped_layer_is_named(tmp_path):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Dense(4, 4)

        def forward(self, x):
            return fnn.add(x, self.inner(x))

    model = nn.Sequential(nn.Dense(3, 4), Residual(), nn.Dense(4, 2))
    with pytest.raises(ValueError, match=r"layer '1'.*Residual.*no ONNX mapping"):
        model.export_onnx(tmp_path / "bad.onnx", (3,))
    assert not (tmp_path / "bad.onnx").exists()
    with pytest.raises(ValueError, match=r"input_shape.*got \(0, 3\)"):
        nn.Dense(3, 2).export_onnx(tmp_path / "bad.onnx", (0, 3))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\); got \(None, 5\)"):
        nn.Dense(3, 2).export_onnx(tmp_path / "bad.onnx", (5,))


def test_input_shape_beyond_onnx_int64_dimensions_is_named(tmp_path):
    """An attack: input_shape (1, 2**64, 1) had been onnx's bare "Value out of range"."""
    for shape in [(1, 2**64, 1), (2**63,)]:
        with pytest.raises(ValueError, match=r"input_shape must be .* at most 2\*\*63 - 1 .*"
                                             + re.escape(repr(shape))):
            nn.Sequential(nn.ReLU()).export_onnx(tmp_path / "big.onnx", shape)
    with pytest.raises(ValueError, match=r"input_shape \(1099511627776, 1099511627776\) gives "
                                         r"the output shape \(1208925819614629174706176,\)"):
        nn.Sequential(nn.Flatten()).export_onnx(tmp_path / "big.onnx", (2**40, 2**40))
    assert not (tmp_path / "big.onnx").exists()
    nn.Sequential(nn.ReLU()).export_onnx(tmp_path / "big.onnx", (2**63 - 1,))  # the largest


def test_command_line_export(tmp_path, capsys):
    pytest.importorskip("safetensors", reason="fastnn.save needs safetensors")
    from fastnn import cli

    fnn.seed(4)
    model = nn.Sequential(nn.Dense(5, 7, activation="elu"), nn.Dense(7, 3))
    model.save(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(tmp_path / "m.safetensors"), "--onnx", str(out)]) == 0
    assert "opset 17" in capsys.readouterr().out
    X = np.random.default_rng(5).normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(out, X), model.predict(X), rtol=1e-5, atol=1e-5)

    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    conv.save(tmp_path / "c.safetensors")
    assert cli.main(["export", str(tmp_path / "c.safetensors"), "--onnx", str(out)]) == 1
    assert "--input-shape is needed" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "c.safetensors"), "--onnx", str(out),
                     "--input-shape", "1,5,5"]) == 0
    assert _run(out, np.ones((2, 1, 5, 5), np.float32)).shape == (2, 18)


def test_softmax_refuses_an_input_shape_it_does_not_take(tmp_path):
    """Found by an attack: export_onnx took input_shape (2, 3) for a Softmax, which predict
    refuses, and onnxruntime then normalized over another axis."""
    with pytest.raises(ValueError, match=r"Softmax: expected input of shape \(batch, classes\)"):
        nn.Sequential(nn.Softmax()).export_onnx(tmp_path / "s.onnx", (2, 3))
    assert not (tmp_path / "s.onnx").exists()
    nn.Sequential(nn.Softmax()).export_onnx(tmp_path / "s.onnx", (3,))
