"""The course's training loop: stratified validation split, the learning rate in the History,
schedules, penalties in the reported loss, augmentation, the progress display and the
callbacks (EarlyStopping, ModelCheckpoint, LearningRateScheduler, CSVLogger, custom)."""

import csv
import io as stdio
import math
import sys

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, data, nn, optim, schedulers

import _ref


@pytest.fixture(scope="module")
def digits():
    X_train, y_train, X_test, y_test = (np.asarray(a) for a in fastnn.datasets.load("digits"))
    return X_train[:300], y_train[:300], X_test[:200], y_test[:200]


def model_for(lr=1e-2, optimizer=None, metrics=("accuracy",), **dense):
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(64, 16, activation="relu", **dense), nn.Dense(16, 10))
    model.compile(loss="cross_entropy", optimizer=optimizer or optim.SGD(lr=lr, momentum=0.9),
                  metrics=list(metrics))
    return model


# ----------------------------------------------------------------------------- validation split
def test_validation_split_is_stratified_for_class_labels():
    y = np.repeat(np.arange(4), [60, 25, 10, 5])
    X = np.arange(100, dtype=np.float32).reshape(-1, 1)
    _, y_tr, X_val, y_val = data.train_val_split(X, y, 0.2, seed=0)
    np.testing.assert_array_equal(np.bincount(y_val, minlength=4), [12, 5, 2, 1])
    np.testing.assert_array_equal(np.bincount(y_tr, minlength=4), [48, 20, 8, 4])
    # Rows stay paired with their labels, and the split is random, not the last rows.
    np.testing.assert_array_equal(y[X_val[:, 0].astype(int)], y_val)
    assert not np.array_equal(np.sort(X_val[:, 0]), np.arange(80, 100))
    other = data.train_val_split(X, y, 0.2, seed=1)[2]
    assert not np.array_equal(np.sort(other[:, 0]), np.sort(X_val[:, 0]))


def test_stratified_counts_add_up_by_largest_remainder():
    y = np.repeat(np.arange(3), [50, 30, 20])
    X = np.zeros((100, 1), np.float32)
    for fraction in (0.05, 0.13, 0.25, 0.5, 0.77):
        y_val = data.train_val_split(X, y, fraction, seed=3)[3]
        counts = np.bincount(y_val, minlength=3)
        assert counts.sum() == round(100 * fraction)
        assert np.all(np.abs(counts - np.array([50, 30, 20]) * fraction) < 1), (fraction, counts)


def test_split_without_shuffle_takes_the_last_rows_of_each_class():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    X = np.arange(10, dtype=np.float32).reshape(-1, 1)
    X_tr, _, X_val, _ = data.train_val_split(X, y, 0.4, shuffle=False)
    assert X_val[:, 0].tolist() == [6, 7, 8, 9]
    assert X_tr[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_float_targets_are_split_at_random_not_stratified():
    y = np.linspace(0, 1, 50, dtype=np.float32).reshape(-1, 1)
    X = np.arange(50, dtype=np.float32).reshape(-1, 1)
    _, _, X_val, y_val = data.train_val_split(X, y, 0.2, seed=0)
    assert len(y_val) == 10
    np.testing.assert_array_equal(y[X_val[:, 0].astype(int)], y_val)
    with pytest.raises(ValueError, match="stratify"):
        data.train_val_split(X, y, 0.2, stratify=True)


def test_fit_uses_the_stratified_split(digits, monkeypatch):
    X, y, _, _ = digits
    seen = {}
    real = data.train_val_split

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen["val_labels"] = out[3]
        return out

    monkeypatch.setattr(data, "train_val_split", spy)
    history = model_for().fit(X, y, epochs=1, validation_split=0.2, verbose=0, seed=0)
    expected = np.bincount(y, minlength=10) * 0.2
    assert np.all(np.abs(np.bincount(seen["val_labels"], minlength=10) - expected) < 1)
    assert "val_loss" in history.history


# ----------------------------------------------------------------------------- lr, schedules, penalties
def test_history_records_the_learning_rate(digits):
    X, y, _, _ = digits
    history = model_for(lr=0.05).fit(X, y, epochs=3, verbose=0, seed=0)
    assert history.history["lr"] == [0.05, 0.05, 0.05]


def test_function_schedule_sets_each_epochs_lr(digits):
    X, y, _, _ = digits
    model = model_for()
    seen = []

    class Spy(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(self.model.compiled.optimizer.lr)

    schedule = callbacks.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    history = model.fit(X, y, epochs=3, batch_size=100, verbose=0, seed=0, callbacks=[schedule, Spy()])
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert seen == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.1 / 3] * 3)


def test_scheduler_object_in_callbacks(digits):
    X, y, _, _ = digits
    model = model_for(lr=0.08)
    history = model.fit(X, y, epochs=5, verbose=0, seed=0, callbacks=[schedulers.StepLR(step_size=2, gamma=0.5)])
    assert history.history["lr"] == pytest.approx([0.08, 0.08, 0.04, 0.04, 0.02])


def test_scheduler_protocol_gets_the_optimizer_and_the_logs(digits):
    X, y, Xv, yv = digits
    model = model_for(lr=0.01)
    calls = []

    class Halve:
        def bind(self, optimizer):
            calls.append(("bind", optimizer))
            self.optimizer = optimizer
            return self

        def on_epoch_end(self, epoch, logs):
            calls.append((epoch, sorted(logs)))
            self.optimizer.lr /= 2

    history = model.fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=0, seed=0,
                        callbacks=[callbacks.LearningRateScheduler(Halve())])
    assert calls[0] == ("bind", model.compiled.optimizer)
    assert [c[0] for c in calls[1:]] == [0, 1]
    assert "val_loss" in calls[1][1] and "lr" in calls[1][1]
    assert history.history["lr"] == pytest.approx([0.01, 0.005])


@pytest.mark.parametrize("bad,exc,message", [
    (lambda epoch: -1.0, ValueError, "lr=-1.0"),
    (lambda epoch: float("nan"), ValueError, "lr=nan"),
])
def test_schedule_function_must_give_a_positive_lr(digits, bad, exc, message):
    X, y, _, _ = digits
    with pytest.raises(exc, match=message):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.LearningRateScheduler(bad)])


def test_callbacks_are_checked(digits):
    X, y, _, _ = digits
    with pytest.raises(TypeError, match=r"callbacks\[1\]"):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.Callback(), "early"])
    with pytest.raises(TypeError, match="schedule"):
        callbacks.LearningRateScheduler(0.1)


def test_reported_loss_includes_the_penalties(digits):
    X, y, _, _ = digits
    model = model_for(l1=1e-3, l2=1e-2)
    result = model.evaluate(X, y)
    logits = np.asarray(model.predict(X), np.float64)
    w = model.layers[0].weight.data.astype(np.float64)
    penalty = 1e-3 * np.abs(w).sum() + 1e-2 * (w ** 2).sum()
    assert penalty > 0.1
    assert result["loss"] == pytest.approx(_ref.cross_entropy(logits, y)[0] + penalty, rel=1e-5)
    # Full batch, one epoch: the training loss is that of the weights before the update.
    history = model.fit(X, y, epochs=1, batch_size=None, verbose=0, seed=0)
    assert history.history["loss"][0] == pytest.approx(result["loss"], rel=1e-5)


# ----------------------------------------------------------------------------- augmentation
def test_augment_is_applied_to_every_training_batch(digits):
    X, y, Xv, yv = digits
    batches = []

    def record(xb):
        batches.append(xb.copy())
        return xb

    model_for().fit(X, y, epochs=2, batch_size=64, shuffle=False, validation_data=(Xv, yv),
                    verbose=0, augment=record)
    assert [len(b) for b in batches] == [64, 64, 64, 64, 44] * 2
    # Unshuffled, the batches are the training rows in order: labels stay with their rows,
    # and the validation data is never augmented.
    np.testing.assert_array_equal(np.concatenate(batches[:5]), X.astype(np.float32))


def test_augment_changes_what_the_model_sees(digits):
    X, y, _, _ = digits
    plain = model_for().fit(X, y, epochs=1, verbose=0, seed=0).history["loss"]
    noisy = model_for().fit(X, y, epochs=1, verbose=0, seed=0,
                            augment=data.Augment((8, 8), noise_std=0.5, seed=0)).history["loss"]
    assert plain != noisy


def test_augment_must_keep_the_shape(digits):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="shape"):
        model_for().fit(X, y, epochs=1, verbose=0, augment=lambda xb: xb[:, :10])
    with pytest.raises(TypeError, match="augment"):
        model_for().fit(X, y, epochs=1, verbose=0, augment="flip")


def test_augment_keeps_shapes_and_is_reproducible_by_seed(rng):
    x = rng.random((6, 2, 5, 7)).astype(np.float32)
    a = data.Augment((2, 5, 7), max_shift=2, flip=True, max_rotation=15, noise_std=0.05, seed=11)
    b = data.Augment((2, 5, 7), max_shift=2, flip=True, max_rotation=15, noise_std=0.05, seed=11)
    first, second = a(x), a(x)
    assert first.shape == x.shape and first.dtype == np.float32
    np.testing.assert_array_equal(first, b(x))
    np.testing.assert_array_equal(second, b(x))
    assert not np.array_equal(first, second), "each batch gets new transformations"
    flat = data.Augment((2, 5, 7), max_shift=2, flip=True, max_rotation=15, noise_std=0.05, seed=11)
    out = flat(x.reshape(6, -1))
    assert out.shape == (6, 70)
    np.testing.assert_array_equal(out, first.reshape(6, -1))


def test_augment_seed_comes_from_fastnn_seed():
    fastnn.seed(5)
    s1 = data.Augment((4, 4)).seed
    fastnn.seed(5)
    assert data.Augment((4, 4)).seed == s1


def test_augment_flip_and_identity(rng):
    x = rng.random((40, 3, 6)).astype(np.float32)
    np.testing.assert_array_equal(data.Augment((3, 6), seed=0)(x), x)
    out = data.Augment((3, 6), flip=True, seed=0)(x)
    flipped = [bool(np.allclose(o, xi[:, ::-1])) for o, xi in zip(out, x)]
    same = [bool(np.allclose(o, xi)) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 5 < sum(flipped) < 35


def test_augment_noise_has_the_requested_std(rng):
    x = np.zeros((200, 16, 16), np.float32)
    out = data.Augment((16, 16), noise_std=0.2, seed=1)(x)
    assert abs(out.std() - 0.2) < 0.01 and abs(out.mean()) < 0.01


@pytest.mark.parametrize("kwargs,message", [
    (dict(image_shape=(8,)), "image_shape"),
    (dict(image_shape=(8, 0)), "image_shape"),
    (dict(image_shape=(8, 8), max_shift=-1), "max_shift"),
    (dict(image_shape=(8, 8), noise_std=float("nan")), "noise_std"),
    (dict(image_shape=(8, 8), seed=-3), "seed"),
])
def test_augment_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.Augment(**kwargs)


def test_augment_rejects_a_batch_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(n, 64\)"):
        data.Augment((8, 8))(np.zeros((3, 60), np.float32))


# ----------------------------------------------------------------------------- progress display
def test_verbose_0_is_silent(digits, capsys):
    X, y, _, _ = digits
    model_for().fit(X, y, epochs=2, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_verbose_2_prints_one_line_per_epoch(digits, capsys):
    X, y, Xv, yv = digits
    model_for().fit(X, y, epochs=3, verbose=2, validation_data=(Xv, yv))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Epoch 1/3") and lines[2].startswith("Epoch 3/3")
    for key in ("samples/s", "loss:", "accuracy:", "val_loss:", "lr:"):
        assert key in lines[1], lines[1]


def test_verbose_1_uses_tqdm(digits, capsys):
    pytest.importorskip("tqdm")
    X, y, _, _ = digits
    model_for().fit(X, y, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "sample" in out and "loss:" in out


def test_verbose_1_falls_back_to_a_plain_line_without_tqdm(digits, capsys, monkeypatch):
    X, y, _, _ = digits
    monkeypatch.setitem(sys.modules, "tqdm", None)   # import tqdm now fails
    model_for().fit(X, y, epochs=2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "samples/s" in lines[0] and f"[{len(X)}/{len(X)}]" in lines[0]


def test_plain_progress_redraws_one_line_on_a_terminal(digits, monkeypatch):
    X, y, _, _ = digits

    class Terminal(stdio.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(fastnn.train, "_REFRESH_SECONDS", 0.0)
    model_for().fit(X, y, epochs=1, batch_size=50, verbose=1)
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.count("\r") >= 6   # one redraw per batch, then the final
    assert "[50/300]" in text and "[300/300]" in text


def test_verbose_must_be_0_1_or_2(digits):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="verbose"):
        model_for().fit(X, y, epochs=1, verbose=3)


# ----------------------------------------------------------------------------- callbacks
class Scripted(callbacks.Callback):
    """Replaces val_loss by a scripted sequence and keeps each epoch's weights."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key, self.weights = values, key, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(self.model.state_dict())


SCRIPT = [3.0, 2.0, 1.0, 1.5, 1.2, 1.1, 0.9, 2.0]


def assert_weights(model, state):
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name])


def test_early_stopping_stops_and_restores_the_best_epoch(digits):
    X, y, _, _ = digits
    model = model_for()
    script = Scripted(SCRIPT)
    stop = callbacks.EarlyStopping(patience=2)
    history = model.fit(X, y, epochs=8, verbose=0, seed=0, callbacks=[script, stop])
    assert len(history.epoch) == 5           # epoch 2 is best; epochs 3 and 4 do not improve
    assert (stop.best_epoch, stop.stopped_epoch, stop.best) == (2, 4, 1.0)
    assert_weights(model, script.weights[2])


def test_early_stopping_restores_the_best_weights_even_without_triggering(digits):
    X, y, _, _ = digits
    model = model_for()
    script = Scripted(SCRIPT)
    stop = callbacks.EarlyStopping(patience=5)
    history = model.fit(X, y, epochs=8, verbose=0, seed=0, callbacks=[script, stop])
    assert len(history.epoch) == 8 and stop.stopped_epoch is None and stop.best_epoch == 6
    assert_weights(model, script.weights[6])


def test_early_stopping_without_restoring_keeps_the_last_weights(digits):
    X, y, _, _ = digits
    model = model_for()
    script = Scripted(SCRIPT)
    model.fit(X, y, epochs=8, verbose=0, seed=0,
              callbacks=[script, callbacks.EarlyStopping(patience=5, restore_best_weights=False)])
    assert_weights(model, script.weights[-1])


def test_early_stopping_min_delta_and_mode(digits):
    X, y, _, _ = digits
    stop = callbacks.EarlyStopping(patience=1, min_delta=0.15)
    model_for().fit(X, y, epochs=8, verbose=0, callbacks=[Scripted(SCRIPT), stop])
    assert (stop.best_epoch, stop.stopped_epoch) == (2, 3)   # 1.5, 1.2, 1.1 and 0.9: not by 0.15
    accuracy = callbacks.EarlyStopping(monitor="val_accuracy", patience=1)
    assert accuracy.mode == "max"
    model_for().fit(X, y, epochs=8, verbose=0,
                    callbacks=[Scripted([0.1, 0.3, 0.2, 0.5], key="val_accuracy"), accuracy])
    assert (accuracy.best_epoch, accuracy.stopped_epoch) == (1, 2)


def test_early_stopping_warns_when_the_monitor_is_missing(digits):
    X, y, _, _ = digits
    with pytest.warns(RuntimeWarning, match="val_loss"):
        model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.EarlyStopping()])


@pytest.mark.parametrize("kwargs", [dict(mode="best"), dict(patience=-1), dict(min_delta=-0.1)])
def test_early_stopping_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        callbacks.EarlyStopping(**kwargs)


def test_model_checkpoint_saves_the_improving_epochs(digits, tmp_path):
    pytest.importorskip("safetensors")
    X, y, _, _ = digits
    model = model_for()
    script = Scripted(SCRIPT)
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.1f}.safetensors")
    model.fit(X, y, epochs=8, verbose=0, seed=0, callbacks=[script, callbacks.ModelCheckpoint(pattern)])
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["ckpt-01-3.0.safetensors", "ckpt-02-2.0.safetensors", "ckpt-03-1.0.safetensors",
                     "ckpt-07-0.9.safetensors"]
    assert_weights(fastnn.load(tmp_path / "ckpt-03-1.0.safetensors"), script.weights[2])


def test_model_checkpoint_every_epoch(digits, tmp_path):
    pytest.importorskip("safetensors")
    X, y, _, _ = digits
    path = tmp_path / "last.safetensors"
    model = model_for()
    model.fit(X, y, epochs=2, verbose=0, callbacks=[callbacks.ModelCheckpoint(path, save_best_only=False)])
    assert_weights(fastnn.load(path), model.state_dict())


def test_csv_logger_writes_one_row_per_epoch(digits, tmp_path):
    X, y, Xv, yv = digits
    path = tmp_path / "log.csv"
    history = model_for().fit(X, y, epochs=3, verbose=0, validation_data=(Xv, yv),
                              callbacks=[callbacks.CSVLogger(path)])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    for key, values in history.history.items():
        assert [float(r[key]) for r in rows] == values
    model_for().fit(X, y, epochs=2, verbose=0, validation_data=(Xv, yv),
                    callbacks=[callbacks.CSVLogger(path, append=True)])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 0, 1]
    model_for().fit(X, y, epochs=1, verbose=0, callbacks=[callbacks.CSVLogger(path)])
    assert len(list(csv.DictReader(path.open()))) == 1


def test_custom_callback_hooks_in_order(digits):
    X, y, _, _ = digits
    events = []

    class Recorder(callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")

        def on_batch_end(self, batch, logs=None):
            events.append(f"batch {batch} {logs['size']} {math.isfinite(logs['loss'])}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch} {sorted(logs)}")
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            events.append("train_end")

    history = model_for().fit(X, y, epochs=5, batch_size=128, verbose=0, callbacks=[Recorder()])
    keys = "['accuracy', 'loss', 'lr']"
    assert events == ["train_begin",
                      "epoch_begin 0", "batch 0 128 True", "batch 1 128 True", "batch 2 44 True",
                      f"epoch_end 0 {keys}",
                      "epoch_begin 1", "batch 0 128 True", "batch 1 128 True", "batch 2 44 True",
                      f"epoch_end 1 {keys}", "train_end"]
    assert history.epoch == [0, 1]


def test_final_probability_layer_with_a_logits_loss_warns():
    model = nn.Sequential(nn.Dense(4, 3), nn.Sigmoid())
    with pytest.warns(UserWarning, match="logits"):
        model.compile(loss="cross_entropy")
    model = nn.Sequential(nn.Dense(4, 3), nn.Softmax())
    with pytest.warns(UserWarning, match="softmax"):
        model.compile(loss="cross_entropy")
