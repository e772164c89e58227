"""fastnn.callbacks.TensorBoard: the event files it writes, read back with TensorBoard's own
event reader, hold the History's values."""

import types

import numpy as np
import pytest

import fastnn as fnn
from fastnn import nn

pytest.importorskip("tensorboardX", reason="the TensorBoard callback needs tensorboardX "
                    "(the test extra)")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="reading the events back needs tensorboard (the test extra)")


def _read(log_dir):
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0})
    acc.Reload()
    return acc


def test_scalars_histograms_and_diagnostics_match_the_history(tmp_path):
    fnn.seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = nn.Sequential(nn.Dense(6, 8, activation="relu"), nn.Dense(8, 2))
    model.compile(loss="cross_entropy", optimizer="sgd", metrics=["accuracy"])
    sched = fnn.schedulers.StepLR(step_size=1, gamma=0.5)  # lr differs per epoch
    history = model.fit(X, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0,
                        seed=0, diagnostics=True,
                        callbacks=[fnn.callbacks.TensorBoard(tmp_path / "logs"), sched])
    acc = _read(tmp_path / "logs")
    tags = acc.Tags()
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert len(set(history.history["lr"])) == 3
    for key, values in history.history.items():
        events = acc.Scalars(key)
        assert [e.step for e in events] == [0, 1, 2], key
        # TensorBoard keeps scalars as float32
        np.testing.assert_array_equal([e.value for e in events],
                                      np.float32(values), err_msg=key)
    assert history.diagnostics, "diagnostics=True recorded nothing"
    for layer, series in history.diagnostics.items():
        for metric, values in series.items():
            tag = f"diagnostics/{layer.replace(':', '_')}/{metric}"  # "0:Dense" -> "0_Dense"
            events = acc.Scalars(tag)
            np.testing.assert_array_equal([e.value for e in events], np.float32(values),
                                          err_msg=f"{layer}/{metric}")
    params = dict(model.named_parameters())
    assert {f"weights/{n}" for n in params} | {f"gradients/{n}" for n in params} \
        == set(tags["histograms"])
    for name, p in params.items():
        weights = acc.Histograms(f"weights/{name}")
        assert [h.step for h in weights] == [0, 1, 2]
        last = weights[-1].histogram_value
        assert last.num == p.size
        np.testing.assert_allclose([last.min, last.max, last.sum],
                                   [p.data.min(), p.data.max(), p.data.sum(dtype=np.float64)],
                                   rtol=1e-5, atol=1e-6)
        grads = acc.Histograms(f"gradients/{name}")
        assert [h.step for h in grads] == [0, 1, 2]
        assert grads[-1].histogram_value.num == p.size
        assert grads[-1].histogram_value.sum_squares > 0, f"{name}: the gradient logged is zero"


def test_histograms_off_and_only_rank_0_writes(tmp_path):
    fnn.seed(1)
    X = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    model = nn.Sequential(nn.Dense(3, 1))
    model.compile(loss="mse", optimizer="sgd")
    board = fnn.callbacks.TensorBoard(tmp_path / "logs", histograms=False)
    history = model.fit(X, X[:, :1], epochs=2, verbose=0, callbacks=[board])
    acc = _read(tmp_path / "logs")
    assert acc.Tags()["histograms"] == []
    assert [e.value for e in acc.Scalars("loss")] == list(np.float32(history.history["loss"]))

    from fastnn.distributed import FitSync

    others = fnn.callbacks.EarlyStopping(monitor="loss")
    rank_1 = types.SimpleNamespace(is_main=False, size=1)
    assert FitSync.callbacks(rank_1, [board, others]) == [others]
    rank_0 = types.SimpleNamespace(is_main=True, size=1)
    assert FitSync.callbacks(rank_0, [board, others]) == [board, others]
