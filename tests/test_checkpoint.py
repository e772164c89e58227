"""Checkpoints: ModelCheckpoint keeps its best across fit calls and runs, writes are
crash-safe (temporary file, fsync, rename), and a training process killed with SIGKILL
resumes from its last checkpoint to exactly the result of an uninterrupted run."""

import json
import os
import signal
import stat
import sys

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, io, nn, optim

import _ref

st = pytest.importorskip("safetensors.numpy")


def problem(seed=3):
    rng = np.random.default_rng(seed)
    X = rng.random((240, 64), dtype=np.float32)
    y = np.digitize(X[:, :32].sum(1) - X[:, 32:].sum(1), [-1.0, 1.0]).astype(np.int64)
    return X, y


def compiled(lr=1e-2):
    model = nn.Sequential(nn.Dense(64, 16, activation="relu"), nn.Dense(16, 3))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=lr))
    return model


def val_loss_of(path, X_val, y_val):
    """The float64 cross-entropy of the model saved at ``path`` (reference, not fastnn's)."""
    model = fastnn.load(path)
    return _ref.cross_entropy(model.predict(X_val), y_val)[0]


def test_model_checkpoint_keeps_its_best_across_fit_calls(tmp_path):
    X, y = problem()
    path = tmp_path / "best.safetensors"
    fastnn.seed(0)
    model = compiled()
    checkpoint = callbacks.ModelCheckpoint(path)
    model.fit(X[:200], y[:200], epochs=8, verbose=0, seed=0, validation_data=(X[200:], y[200:]),
              callbacks=[checkpoint])
    good = val_loss_of(path, X[200:], y[200:])
    saved = path.read_bytes()
    # Wreck the model; the second fit's epochs are all worse than the first fit's best.
    for p in model.parameters():
        p.data[...] = 5.0 * np.sign(p.data)
    model.fit(X[:200], y[:200], epochs=1, verbose=0, seed=0, validation_data=(X[200:], y[200:]),
              callbacks=[checkpoint])
    assert path.read_bytes() == saved
    assert val_loss_of(path, X[200:], y[200:]) == good


def test_a_new_checkpoint_on_an_existing_file_keeps_the_better_model(tmp_path):
    X, y = problem()
    path = tmp_path / "best.safetensors"
    fastnn.seed(0)
    model = compiled()
    model.fit(X[:200], y[:200], epochs=8, verbose=0, seed=0, validation_data=(X[200:], y[200:]),
              callbacks=[callbacks.ModelCheckpoint(path)])
    saved = path.read_bytes()
    good = val_loss_of(path, X[200:], y[200:])

    # A fresh, untrained model in a "resumed" run: a worse val_loss must not replace it.
    fastnn.seed(1)
    worse = compiled(lr=1e-6)
    worse.fit(X[:200], y[:200], epochs=1, verbose=0, seed=0, validation_data=(X[200:], y[200:]),
              callbacks=[callbacks.ModelCheckpoint(path)])
    assert _ref.cross_entropy(worse.predict(X[200:]), y[200:])[0] > good
    assert path.read_bytes() == saved
    assert io.read_logs(path)["val_loss"] == pytest.approx(good, rel=1e-5)


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    X, y = problem()
    fastnn.seed(0)
    model = compiled()
    path = model.save(tmp_path / "m.safetensors")
    before = path.read_bytes()

    real_fdopen = os.fdopen

    class DiskFull:
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:100])
            raise OSError(28, "No space left on device")

    model.fit(X, y, epochs=1, verbose=0, seed=0)
    monkeypatch.setattr(os, "fdopen", DiskFull)
    with pytest.raises(OSError, match="No space"):
        model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    assert path.read_bytes() == before


def test_save_fsyncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_IFMT(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fastnn.seed(0)
    compiled().save(tmp_path / "m.safetensors", include_optimizer=True)
    assert synced == [stat.S_IFREG, stat.S_IFDIR]
    assert os.listdir(tmp_path) == ["m.safetensors"]


TRAIN = r"""
import json, os, signal, sys
import numpy as np
import fastnn
from fastnn import callbacks, data, nn, optim

mode, ckpt, log, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
seed = None if seed == "none" else int(seed)
rng = np.random.default_rng(3)
X = rng.random((240, 64), dtype=np.float32)
y = np.digitize(X[:, :32].sum(1) - X[:, 32:].sum(1), [-1.0, 1.0]).astype(np.int64)
fastnn.seed(0)
if mode == "resume":
    model = fastnn.load(ckpt)
else:
    model = nn.Sequential(nn.Dense(64, 32, activation="relu"), nn.Dropout(0.2),
                          nn.Dense(32, 3))
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-2))
augment = data.Augment((8, 8), max_shift=1, noise_std=0.05)  # seed from fastnn.seed's stream


class Record(callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if mode == "killed" and self.epoch == 3 and batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch, after the epoch-3 checkpoint

    def on_epoch_end(self, epoch, logs=None):
        with open(log, "a") as f:
            f.write(json.dumps([epoch, logs]) + "\n")


model.fit(X, y, epochs=6, batch_size=32, validation_split=0.2, augment=augment, seed=seed,
          verbose=0, callbacks=[Record(), callbacks.ModelCheckpoint(
              ckpt, save_best_only=False, include_optimizer=True)])
np.savez(log + ".npz", **model.state_dict())
"""


@pytest.mark.parametrize("seed", ["none", "7"])
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, seed):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)

    def run(mode, directory):
        directory.mkdir(exist_ok=True)
        proc = _ref.run_python(None, args=[str(script), mode, str(directory / "ckpt.safetensors"),
                                           str(tmp_path / f"{mode}.log"), seed])
        return proc

    straight = run("straight", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    killed = run("killed", tmp_path / "run")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert os.listdir(tmp_path / "run") == ["ckpt.safetensors"]  # no stray temporary file
    resumed = run("resume", tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr

    def epochs(mode):
        return [json.loads(line) for line in (tmp_path / f"{mode}.log").read_text().splitlines()]

    assert [e for e, _ in epochs("killed")] == [0, 1, 2]
    assert [e for e, _ in epochs("resume")] == [3, 4, 5]
    assert epochs("killed") + epochs("resume") == epochs("straight")  # losses, bit for bit
    expected = np.load(tmp_path / "straight.log.npz")
    got = np.load(tmp_path / "resume.log.npz")
    assert sorted(got.files) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert os.listdir(tmp_path / "run") == ["ckpt.safetensors"]


def test_a_saved_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    fastnn.seed(0)
    path = compiled().save(tmp_path / "m.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_kill_during_a_save_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path):
    fastnn.seed(0)
    path = compiled().save(tmp_path / "m.safetensors")
    before = path.read_bytes()
    code = ("import os, signal, sys, fastnn\n"
            "from fastnn import nn\n"
            "fastnn.seed(1)\n"
            "model = nn.Sequential(nn.Dense(64, 16, activation='relu'), nn.Dense(16, 3))\n"
            "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # written, not renamed\n"
            f"model.save({str(path)!r})\n")
    proc = _ref.run_python(code)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert path.read_bytes() == before
    stray = [name for name in os.listdir(tmp_path) if name != "m.safetensors"]
    assert len(stray) == 1 and stray[0].endswith(".partial")
    fastnn.seed(2)
    compiled().save(path)
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert path.read_bytes() != before


def test_a_save_leaves_the_temporary_file_of_a_writer_still_running(tmp_path):
    """Two processes saving one file at once (the ranks of a job tuning): the second's
    clean-up removed the first's temporary file, whose rename then failed."""
    from fastnn import io

    path = tmp_path / "m.safetensors"
    host = io._HOST
    alive = tmp_path / f".m.safetensors.{host}-{os.getpid()}.0123abcd.partial"
    alive.write_bytes(b"being written")
    proc = _ref.run_python("import os; print(os.getpid())")  # a pid that is gone now
    gone = tmp_path / f".m.safetensors.{host}-{int(proc.stdout)}.89abcdef.partial"
    gone.write_bytes(b"left by a killed writer")
    older = tmp_path / ".m.safetensors.fedcba98.partial"  # named as before writers were
    older.write_bytes(b"left by a killed writer")
    pid_only = tmp_path / f".m.safetensors.{int(proc.stdout)}.0badcafe.partial"  # pid, no host
    pid_only.write_bytes(b"left by a killed writer")
    pid_only_alive = tmp_path / f".m.safetensors.{os.getpid()}.00c0ffee.partial"
    pid_only_alive.write_bytes(b"being written")
    # another host's (a shared folder): its processes cannot be seen, so kept for a day
    other = "0" * 8 if host != "0" * 8 else "1" * 8
    elsewhere = tmp_path / f".m.safetensors.{other}-{int(proc.stdout)}.2468ace0.partial"
    elsewhere.write_bytes(b"being written on another host")
    day_old = tmp_path / f".m.safetensors.{other}-1.13579bdf.partial"
    day_old.write_bytes(b"left on another host")
    os.utime(day_old, (os.path.getmtime(day_old) - 90000,) * 2)
    io.write_atomic(path, b"saved")
    assert path.read_bytes() == b"saved"
    assert alive.exists() and elsewhere.exists() and pid_only_alive.exists()
    assert not gone.exists() and not older.exists() and not day_old.exists()
    assert not pid_only.exists()


def test_an_output_path_that_cannot_be_a_file_is_named_before_writing(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    for path, exc, words in [(tmp_path / "folder", IsADirectoryError, "is a folder"),
                             ("", IsADirectoryError, "is a folder"),
                             (tmp_path / "file" / "m.safetensors", NotADirectoryError,
                              "is a file, not a folder")]:
        with pytest.raises(exc) as info:
            io.write_atomic(path, b"saved")
        assert words in str(info.value) and repr(str(path)) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["file", "folder"]


def test_writes_go_where_open_would_put_them(tmp_path):
    """Found by an attack: a rename over the path had replaced a symbolic link (its target
    untouched), a FIFO and, as root, /dev/null with a regular file; "folder/" wrote a file
    named "folder"; a file saved over got 0o644 whatever its mode."""
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    (tmp_path / "link.bin").symlink_to("real.bin")
    io.write_atomic(tmp_path / "link.bin", b"new")
    assert (tmp_path / "link.bin").is_symlink() and target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # kept, not widened
    (tmp_path / "dangling.bin").symlink_to("made.bin")
    io.write_atomic(tmp_path / "dangling.bin", b"made")
    assert (tmp_path / "dangling.bin").is_symlink() and (tmp_path / "made.bin").read_bytes() == b"made"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to("loop")
    for path, exc, words in [(tmp_path / "fifo", FileExistsError, "not a regular file"),
                             (str(tmp_path / "out") + os.sep, IsADirectoryError, "ends with a path separator"),
                             (tmp_path / "loop", OSError, "symbolic links")]:
        with pytest.raises(exc) as info:
            io.write_atomic(path, b"saved")
        assert words in str(info.value) and repr(str(path)) in str(info.value)
    assert stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode) and not (tmp_path / "out").exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]
    with pytest.raises(io.InvalidFileError, match="not a regular file"):
        fastnn.load(tmp_path / "fifo")  # refused, not opened (reading a FIFO would block)


def test_a_read_only_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"keep")
    os.chmod(path, 0o400)
    if os.access(path, os.W_OK):  # root writes any file, as open() would
        io.write_atomic(path, b"new")
        assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o400
    else:
        with pytest.raises(PermissionError, match="read-only"):
            io.write_atomic(path, b"new")
        assert path.read_bytes() == b"keep"


def _trained_with_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((200, 8), dtype=np.float32)
    y = (X.sum(1) > 4).astype(np.int64)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(8, 2))
    model.compile(loss="cross_entropy", optimizer="adam")
    path = str(tmp_path / "ck-{epoch}.safetensors")
    model.fit(X, y, epochs=4, seed=1, verbose=0, validation_split=0.2, callbacks=[
        callbacks.ModelCheckpoint(path, save_best_only=False, include_optimizer=True)])
    return model, X, y, path


def test_a_fit_refused_by_its_checks_leaves_the_resume_state_for_the_corrected_call(tmp_path):
    """The refused call had consumed the loaded checkpoint's run, and the corrected one started
    over from epoch 0 with fresh generators, silently (found by an attack)."""
    model, X, y, path = _trained_with_checkpoints(tmp_path)
    resumed = fastnn.load(path.format(epoch=2))
    with pytest.raises(ValueError, match="not both"):
        resumed.fit(X, y, epochs=4, seed=1, verbose=0, validation_split=0.2, validation_data=(X, y))
    history = resumed.fit(X, y, epochs=4, seed=1, verbose=0, validation_split=0.2)
    assert history.epoch == [2, 3]
    np.testing.assert_array_equal(resumed.layers[0].weight.data, model.layers[0].weight.data)


class FailsOnTrainBegin(callbacks.Callback):
    """A callback whose set-up fails (as TensorBoard's without tensorboardX)."""

    def on_train_begin(self, logs=None):
        raise RuntimeError("a bug in my callback")


class CtrlCOnEpochBegin(callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        raise KeyboardInterrupt


@pytest.mark.parametrize("failing, error", [(FailsOnTrainBegin, RuntimeError),
                                            (CtrlCOnEpochBegin, KeyboardInterrupt)])
def test_a_fit_failing_before_its_first_batch_leaves_the_resume_state(tmp_path, failing, error):
    """Only fit's own checks had left it: a callback failing in on_train_begin, or a Ctrl-C
    before the first batch, consumed the loaded run, and the corrected call started over
    from epoch 0, silently not the uninterrupted run (found by an attack)."""
    model, X, y, path = _trained_with_checkpoints(tmp_path)
    resumed = fastnn.load(path.format(epoch=2))
    with pytest.raises(error):
        resumed.fit(X, y, epochs=4, seed=1, verbose=0, validation_split=0.2, callbacks=[failing()])
    history = resumed.fit(X, y, epochs=4, seed=1, verbose=0, validation_split=0.2)
    assert history.epoch == [2, 3]
    np.testing.assert_array_equal(resumed.layers[0].weight.data, model.layers[0].weight.data)


def test_saving_the_optimizer_mid_epoch_warns_and_leaves_the_run_s_position_out(tmp_path):
    """The run state was the last finished epoch's while the weights and moments were past it:
    the resumed fit replayed batches onto weights that had taken them (found by an attack)."""
    rng = np.random.default_rng(0)
    X = rng.random((100, 8), dtype=np.float32)
    y = (X.sum(1) > 4).astype(np.int64)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(8, 2))
    model.compile(loss="cross_entropy", optimizer="adam")
    mid = tmp_path / "mid.safetensors"

    class SaveMidEpoch(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                with pytest.warns(UserWarning, match="middle of an epoch"):
                    self.model.save(mid, include_optimizer=True)

    model.fit(X, y, epochs=2, batch_size=20, seed=1, verbose=0, callbacks=[SaveMidEpoch()])
    assert "run" not in json.loads(io._read(mid)[0]["training"])
    end = tmp_path / "end.safetensors"
    model.save(end, include_optimizer=True)  # after the last epoch: the position is saved
    assert json.loads(io._read(end)[0]["training"])["run"]["epoch"] == 2
