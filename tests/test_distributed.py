"""fastnn.distributed and fit(distributed=True): the world of one in this process, and
two ranks under ``mpirun -np 2`` on small scripts in subprocesses (skipped, with the
reason, where mpirun, mpi4py or the MPI library is missing)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap
import types
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn as fnn
from fastnn import distributed as dist, nn, optim

SRC = str(Path(fnn.__file__).resolve().parent.parent)


@functools.lru_cache(maxsize=None)
def _mpirun(ranks: int = 2) -> list[str] | str:
    """mpirun's command line for `ranks` ranks on this machine, or why there is none."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode:
        why = (probe.stderr.strip().splitlines() or [""])[-1]
        return f'mpi4py or its MPI library is missing (pip install "fastnn-learn[mpi]"): {why}'
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    command = [mpirun, "-np", str(ranks)]
    if "Open MPI" in version:  # two ranks even on one core; as root in CI containers
        command.append("--oversubscribe")
        if os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


def _run(tmp_path: Path, script: str, timeout: float = 60,
         ranks: int = 2, all_reduce: str = "auto") -> subprocess.CompletedProcess:
    command = _mpirun(ranks)
    if isinstance(command, str):
        pytest.skip(command)
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTNN_ALLREDUCE=all_reduce,
               PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    return subprocess.run([*command, sys.executable, str(path), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# The training both sides run: data and model from fixed seeds, n samples, per-rank batch B.
_SETUP = """
import numpy as np, fastnn as fnn
from fastnn import nn, optim

def data(n):  # n training samples, then 20 for validation
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(n + 20, 10)).astype(np.float32), rng.integers(0, 3, n + 20)
    return X[:n], y[:n], (X[n:], y[n:])

def model():
    m = nn.Sequential(nn.Dense(10, 16, activation="relu"), nn.Dense(16, 3))
    m.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1, momentum=0.9),
              metrics=["accuracy", "f1", "precision", "top_2_accuracy"])
    return m

def flat(m):
    return np.concatenate([p.data.ravel() for p in m.parameters()])
"""

# (samples, per-rank batch size, epochs): 643 = 20 global batches of 32 and one of 3
# (shares of 1 and 2), 3 epochs = 63 steps; 33 = one global batch of 32 and one of 1,
# so that rank 1's share of the last one is empty.
_CASES = [(643, 16, 3), (33, 16, 2)]


@pytest.mark.parametrize("all_reduce", ["auto", "ring"])
def test_two_ranks_train_as_one_process_on_the_global_batches(tmp_path, all_reduce):
    """On one machine "auto" all-reduces through shared memory; "ring" is the path
    between machines."""
    expected_kind = {"auto": "_SharedAllReduce", "ring": "_RingAllReduce"}[all_reduce]
    script = _SETUP + f"""
import json, sys, zlib
from fastnn import distributed as dist
r = dist.rank()

class Checksums(fnn.callbacks.Callback):  # of every rank's weights after each epoch
    def on_epoch_end(self, epoch, logs=None):
        sums.append(zlib.crc32(flat(self.model).tobytes()))

for n, batch, epochs in {_CASES!r}:
    fnn.seed(r)  # rank 1 starts elsewhere: rank 0's weights and shuffling must win
    X, y, val = data(n)
    m = model()
    sums = []
    h = m.fit(X, y, epochs=epochs, batch_size=batch, validation_data=val, verbose=0,
              distributed=True, callbacks=[Checksums()])
    json.dump(sums, open(f"{{sys.argv[1]}}/crc{{n}}_{{r}}.json", "w"))
    kind = type(dist._all_reduces[m.compiled.optimizer._flat]).__name__
    assert kind == {expected_kind!r}, kind
    np.save(f"{{sys.argv[1]}}/w{{n}}_{{r}}.npy", flat(m))
    json.dump(h.history, open(f"{{sys.argv[1]}}/h{{n}}_{{r}}.json", "w"))

class Stop(fnn.callbacks.Callback):  # given on rank 0 alone: its decision must be everyone's
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True

h = m.fit(X, y, epochs=5, batch_size=batch, verbose=0, distributed=True,
          callbacks=[Stop()] if dist.is_main() else [])
open(f"{{sys.argv[1]}}/stopped_{{r}}", "w").write(str(len(h.epoch)))
"""
    _checked(_run(tmp_path, script, all_reduce=all_reduce))
    import json
    namespace: dict = {}
    exec(_SETUP, namespace)
    assert [(tmp_path / f"stopped_{r}").read_text() for r in (0, 1)] == ["1", "1"]
    for n, batch, epochs in _CASES:
        fnn.seed(0)
        X, y, val = namespace["data"](n)
        m = namespace["model"]()
        h = m.fit(X, y, epochs=epochs, batch_size=2 * batch, validation_data=val, verbose=0)
        expected = namespace["flat"](m)
        w0, w1 = np.load(tmp_path / f"w{n}_0.npy"), np.load(tmp_path / f"w{n}_1.npy")
        assert w0.tobytes() == w1.tobytes(), f"n={n}: the ranks' weights differ"
        crc = [json.loads((tmp_path / f"crc{n}_{r}.json").read_text()) for r in (0, 1)]
        assert len(crc[0]) == epochs and crc[0] == crc[1], f"n={n}: epoch checksums {crc}"
        assert np.linalg.norm(w0 - expected) <= 1e-6 * np.linalg.norm(expected), n
        for r in (0, 1):
            logs = json.loads((tmp_path / f"h{n}_{r}.json").read_text())
            assert logs.keys() == h.history.keys()
            for key, values in h.history.items():
                np.testing.assert_allclose(logs[key], values, rtol=1e-5, err_msg=key)


def test_dropout_and_augment_repeat_and_resume_bit_for_bit(tmp_path):
    script = _SETUP + """
import json, sys
from fastnn import distributed as dist
r, out = dist.rank(), sys.argv[1]
X, y, _ = data(91)  # 91 = 2 global batches of 32 and one of 27 (13 and 14)
ckpt = f"{out}/ckpt.safetensors"

def run(stop_after=None, resume=False):
    fnn.seed(r)
    m = fnn.load(ckpt) if resume else nn.Sequential(
        nn.Dense(10, 16, activation="relu"), nn.Dropout(0.3), nn.Dense(16, 3))
    if not resume:
        m.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-2))
    callbacks = [fnn.callbacks.ModelCheckpoint(ckpt, save_best_only=False,
                                                include_optimizer=True)]
    if stop_after is not None:
        class Stop(fnn.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                self.model.stop_training = epoch + 1 == stop_after
        callbacks.append(Stop())
    m.fit(X, y, epochs=4, batch_size=16, seed=3, verbose=0, distributed=True,
          augment=fnn.data.Augment((2, 5), noise_std=0.1), callbacks=callbacks)
    return flat(m), m.layers[1].seed

a, seed = run()
b, _ = run()
run(stop_after=2)
c, _ = run(resume=True)
np.savez(f"{out}/r{r}.npz", a=a, b=b, c=c, seed=np.uint64(seed))
"""
    _checked(_run(tmp_path, script))
    got = [np.load(tmp_path / f"r{r}.npz") for r in (0, 1)]
    assert got[0]["a"].tobytes() == got[1]["a"].tobytes(), "the ranks' weights differ"
    assert got[0]["seed"] != got[1]["seed"], "the ranks drew the same dropout masks"
    for r in (0, 1):
        assert got[r]["b"].tobytes() == got[r]["a"].tobytes(), "a second run differs"
        assert got[r]["c"].tobytes() == got[r]["a"].tobytes(), "the resumed run differs"
    # rank 0's checkpoint (after epoch 4 of the resumed run) loads and trains in one process
    m = fnn.load(tmp_path / "ckpt.safetensors")
    X = np.random.default_rng(0).normal(size=(40, 10)).astype(np.float32)
    history = m.fit(X, np.arange(40) % 3, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_cli_train_distributed_reports_and_saves_once(tmp_path):
    script = """
import os, sys
from fastnn.cli import main
os.chdir(sys.argv[1])
sys.exit(main(["train", "--distributed", "--data", "moons", "--hidden", "8", "--epochs", "2",
               "--save", "m.safetensors"]))
"""
    output = _checked(_run(tmp_path, script)).stdout
    assert output.count("test accuracy") == 1 and output.count("Total params") == 1, output
    assert output.count("Epoch 2/2") == 1, output
    assert output.count("saved the model to m.safetensors") == 1
    loaded = fnn.load(tmp_path / "m.safetensors")  # rank 0's, loaded in one process
    assert loaded.predict(np.zeros((3, 2), np.float32)).shape == (3, 2)


def test_primitives_against_numpy(tmp_path):
    script = """
import sys
import numpy as np
from fastnn import distributed as dist
r, out = dist.rank(), sys.argv[1]
a = np.arange(6, dtype=np.float64).reshape(2, 3) * (r + 1) - r
i = np.array([3, -1, 7], np.int32) * (1 - 2 * r)
results = {f"{op}_f": dist.all_reduce(a, op) for op in ("sum", "mean", "max", "min")}
results.update({f"{op}_i": dist.all_reduce(i, op) for op in ("sum", "mean", "max", "min")})
results["bcast"] = dist.broadcast(a, root=1)
assert (a == np.arange(6).reshape(2, 3) * (r + 1) - r).all()  # inputs left alone
try:
    dist.all_reduce(np.zeros(2 + r))
except ValueError as err:
    results["mismatch"] = np.array(str(err))
dist.barrier()
np.savez(f"{out}/r{r}.npz", size=dist.world_size(), main=dist.is_main(), **results)
"""
    _checked(_run(tmp_path, script))
    a = [np.arange(6, dtype=np.float64).reshape(2, 3) * (r + 1) - r for r in (0, 1)]
    i = [np.array([3, -1, 7], np.int32) * (1 - 2 * r) for r in (0, 1)]
    expected = {"sum_f": a[0] + a[1], "mean_f": (a[0] + a[1]) / 2,
                "max_f": np.maximum(*a), "min_f": np.minimum(*a),
                "sum_i": i[0] + i[1], "mean_i": (i[0] + i[1]) / 2,
                "max_i": np.maximum(*i), "min_i": np.minimum(*i), "bcast": a[1]}
    for r in (0, 1):
        got = np.load(tmp_path / f"r{r}.npz")
        assert int(got["size"]) == 2 and bool(got["main"]) == (r == 0)
        for key, value in expected.items():
            assert got[key].dtype == value.dtype, key
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        message = str(got["mismatch"])
        assert "rank 0: shape (2,)" in message and "rank 1: shape (3,)" in message


_WEIGHTS = {2: [0.75, 0.25], 3: [0.5, 0.0, 0.5], 4: [0.125, 0.375, 0.25, 0.25]}


@pytest.mark.parametrize("kind", ["_RingAllReduce", "_SharedAllReduce"])
@pytest.mark.parametrize("ranks", sorted(_WEIGHTS))
def test_gradient_reduction_is_the_weighted_sum_on_every_rank(tmp_path, ranks, kind):
    """fit's all-reduces with weights (ring messages, or sums in shared memory), on buffers
    that the ranks do not divide evenly (nor into cache lines), one shorter than the world,
    shorter than a cache line per rank; each sum of a shared one twice, as fit reuses it."""
    script = f"""
import sys
import numpy as np
from fastnn import distributed as dist
dist.init()
r = dist.rank()
node = dist._comm.Split_type(dist._MPI.COMM_TYPE_SHARED, key=r)
sums = {{}}
for n in (0, {ranks - 1}, 7, 16 * {ranks} + 1, 1001):
    parts = [np.random.default_rng([n, r, i]).standard_normal(n).astype(np.float32)
             for i in range(2)]
    if {kind!r} == "_RingAllReduce":
        reduce = dist._RingAllReduce(np.empty(n, np.float32))
    else:
        reduce = dist._SharedAllReduce(n, node)
        assert n == 0 or reduce.grad.ctypes.data % 64 == 0
    for i, part in enumerate(parts):
        reduce.grad[...] = part
        reduce(np.array({_WEIGHTS[ranks]!r}))
        sums[f"n{{n}}_{{i}}"] = reduce.grad.copy()
np.savez(f"{{sys.argv[1]}}/r{{r}}.npz", **sums)
"""
    _checked(_run(tmp_path, script, ranks=ranks))
    got = [np.load(tmp_path / f"r{r}.npz") for r in range(ranks)]
    for key in got[0].files:
        n, i = map(int, key[1:].split("_"))
        parts = [np.random.default_rng([n, r, i]).standard_normal(n).astype(np.float32)
                 for r in range(ranks)]
        expected = sum(w * p.astype(np.float64) for w, p in zip(_WEIGHTS[ranks], parts))
        bound = ranks * 2 * np.finfo(np.float32).eps * sum(np.abs(p) for p in parts)
        assert got[0][key].shape == (n,)
        assert (np.abs(got[0][key] - expected) <= bound).all(), key
        for r in range(1, ranks):
            assert got[r][key].tobytes() == got[0][key].tobytes(), f"{key}: rank {r} differs"


def test_without_room_for_shared_memory_fit_falls_back_to_the_ring(tmp_path):
    script = _SETUP + """
import sys, warnings
from fastnn import distributed as dist

def no_room(*args):  # as MPI_Win_allocate_shared fails on a full /dev/shm
    raise dist._MPI.Exception(dist._MPI.ERR_NO_MEM)

dist._SharedAllReduce = no_room
fnn.seed(0)
X, y, _ = data(64)
m = model()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m.fit(X, y, epochs=1, batch_size=16, verbose=0, distributed=True)
assert type(dist._all_reduces[m.compiled.optimizer._flat]).__name__ == "_RingAllReduce"
said = [str(w.message) for w in caught if "shared memory" in str(w.message)]
assert len(said) == (dist.rank() == 0), said
np.save(f"{sys.argv[1]}/w{dist.rank()}.npy", flat(m))
"""
    _checked(_run(tmp_path, script))
    assert np.load(tmp_path / "w0.npy").tobytes() == np.load(tmp_path / "w1.npy").tobytes()
    result = _run(tmp_path, script, all_reduce="shared")  # asked for: an error, not the ring
    assert result.returncode != 0
    assert "FASTNN_ALLREDUCE=shared: MPI could not allocate" in result.stdout + result.stderr


def test_an_unknown_all_reduce_is_refused_by_name(tmp_path):
    script = _SETUP + """
fnn.seed(0)
X, y, _ = data(32)
model().fit(X, y, epochs=1, batch_size=16, verbose=0, distributed=True)
"""
    result = _run(tmp_path, script, all_reduce="tree", timeout=30)
    assert result.returncode != 0
    assert "FASTNN_ALLREDUCE must be one of auto, shared, ring; got 'tree'" in (
        result.stdout + result.stderr)


def test_a_rank_that_raises_aborts_the_job_with_its_traceback(tmp_path):
    script = """
from fastnn import distributed as dist
if dist.rank() == 1:
    raise ValueError("boom on rank 1")
dist.barrier()  # rank 0 would wait here for ever
"""
    start = time.perf_counter()
    result = _run(tmp_path, script, timeout=30)
    assert time.perf_counter() - start < 20
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" in output and "ValueError: boom on rank 1" in output


@pytest.mark.parametrize("differ", ["samples", "epochs", "batch_size", "model"])
def test_ranks_that_call_fit_differently_are_refused_not_left_waiting(tmp_path, differ):
    """Found by an attack: ranks given other sample counts, epochs or batch sizes took other
    numbers of steps, and the job hung in an all-reduce with no message; another model
    failed with MPI_ERR_TRUNCATE."""
    script = _SETUP + f"""
from fastnn import distributed as dist
other = dist.rank() == 1
fnn.seed(0)
X, y, _ = data(48 if other and {differ!r} == "samples" else 40)
m = nn.Sequential(nn.Dense(10, 24 if other and {differ!r} == "model" else 16), nn.Dense(
    24 if other and {differ!r} == "model" else 16, 3))
m.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1))
m.fit(X, y, epochs=3 if other and {differ!r} == "epochs" else 2,
      batch_size=8 if other and {differ!r} == "batch_size" else 4, verbose=0, distributed=True)
"""
    result = _run(tmp_path, script, timeout=60)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "fit(distributed=True): the ranks must call fit alike" in output, output[-2000:]
    assert {"model": "parameters"}.get(differ, differ) + " is " in output


def test_a_rank_whose_weights_turn_nan_stops_every_rank(tmp_path):
    """Found by an attack: fit's stop on non-finite weights was each rank's own, so a rank
    whose weights a callback of its own made NaN stopped alone and the other waited for
    ever in the next epoch's all-reduce."""
    script = _SETUP + """
import warnings
from fastnn import callbacks, distributed as dist
class Poison(callbacks.Callback):  # after the epoch's last step: no all-reduce spreads it
    done = False
    def on_batch_end(self, batch, logs=None):
        if dist.rank() == 1 and batch == 3 and not self.done:  # 64 samples, 2 x 8 a step
            self.done = True
            self.model.parameters()[0].data[0, 0] = np.nan
fnn.seed(0)
X, y, _ = data(64)
m = model()
with warnings.catch_warnings(record=True):
    warnings.simplefilter("always")
    history = m.fit(X, y, epochs=4, batch_size=8, verbose=0, distributed=True,
                    callbacks=[Poison()])
import sys, pathlib  # a file per rank: the ranks' prints interleave on mpirun's stdout
pathlib.Path(sys.argv[1], f"rank{dist.rank()}.txt").write_text(
    f"epochs {len(history.history['loss'])} stop {history.stop_reason is not None}")
"""
    _checked(_run(tmp_path, script, timeout=60))
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "epochs 1 stop True", rank


def test_a_world_of_one_outside_mpirun():
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    dist.barrier()
    a = np.array([[1.5, -2.0]], np.float32)
    for op in ("sum", "mean", "max", "min"):
        got = dist.all_reduce(a, op)
        assert got is not a and got.dtype == a.dtype
        np.testing.assert_array_equal(got, [[1.5, -2.0]])
    np.testing.assert_array_equal(dist.all_reduce(np.array([3, 4]), "mean"), [3.0, 4.0])
    np.testing.assert_array_equal(dist.broadcast(a), a)
    with pytest.raises(ValueError, match="op must be one of .*got 'avg'"):
        dist.all_reduce(a, "avg")
    with pytest.raises(ValueError, match=r"root must be a rank in \[0, 1\); got 1"):
        dist.broadcast(a, root=1)
    with pytest.raises(TypeError, match="integers or floats; got dtype <U1"):
        dist.all_reduce(np.array(["x"]))


def test_fit_distributed_in_a_world_of_one_is_fit():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(70, 6)).astype(np.float32)
    y = rng.integers(0, 2, 70)
    weights = []
    for distributed in (False, True):
        fnn.seed(3)
        m = nn.Sequential(nn.Dense(6, 8, activation="relu"), nn.Dropout(0.3), nn.Dense(8, 2))
        m.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-2))
        m.fit(X, y, epochs=2, batch_size=16, seed=5, verbose=0, distributed=distributed)
        weights.append(np.concatenate([p.data.ravel() for p in m.parameters()]))
    assert weights[0].tobytes() == weights[1].tobytes()


def test_under_mpirun_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(dist, "_comm", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ImportError, match=r"one of 2 started by mpirun.*"
                                          r'pip install "fastnn-learn\[mpi\]".*openmpi-bin'):
        dist.init()


def test_all_reduce_keeps_a_scalar_a_scalar():
    got = dist.all_reduce(2.5, "max")
    assert got.shape == () and got == 2.5


def _alone(env: dict[str, str]) -> subprocess.CompletedProcess:
    """A process started on its own with the launcher's variables ``env``."""
    code = "from fastnn import distributed as d; print(d.world_size(), d.rank(), d.is_main())"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=dict(clean, **env, PYTHONPATH=os.pathsep.join(
                              filter(None, [SRC, os.environ.get("PYTHONPATH")]))))


@pytest.mark.parametrize("variable", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"])
def test_an_mpi4py_of_another_mpi_than_the_launcher_s_is_refused(variable):
    """An attack: mpi4py's MPI saw a world of one under MPICH's launcher, and each of the N
    processes trained alone, silently ("1 0 True")."""
    if isinstance(_mpirun(), str) and "mpi4py" in _mpirun():
        pytest.skip(_mpirun())
    got = _alone({variable: "2", "PMI_RANK": "1"})
    assert got.returncode != 0, got.stdout
    assert "RuntimeError" in got.stderr and f"{variable}=2" in got.stderr, got.stderr
    assert "world of 1" in got.stderr and "mpi4py's MPI is not the launcher's" in got.stderr


def test_a_mismatched_mpi_is_refused_before_any_collective(monkeypatch):
    """The same in this process, with an mpi4py whose COMM_WORLD is a world of one."""
    fake = types.ModuleType("mpi4py")
    fake.MPI = types.SimpleNamespace(COMM_WORLD=dist._World1(),
                                     Get_library_version=lambda: "MPICH Version: 4.0\n")
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.setattr(dist, "_comm", None)
    monkeypatch.setattr(dist, "_MPI", None)
    monkeypatch.setenv("PMI_SIZE", "3")
    with pytest.raises(RuntimeError, match=r"one of 3 .*\(PMI_SIZE=3\).*world of 1.*not the "
                                           r"launcher's.*MPICH Version: 4\.0"):
        dist.init()
    assert dist._comm is None  # not left as a world of one for the next call
    monkeypatch.setenv("PMI_SIZE", "1")  # a launcher's job of one is a world of one
    dist.init()
    assert dist.world_size() == 1


@pytest.mark.parametrize("value", ["²", "٣", "2x", "-2"])
def test_a_launcher_size_that_is_no_ascii_number_is_named(monkeypatch, value):
    """"²" passed str.isdigit() and int() then failed naming nothing; "٣" was taken as 3."""
    monkeypatch.setattr(dist, "_comm", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", value)
    with pytest.raises(ValueError, match=f"OMPI_COMM_WORLD_SIZE .*whole number.*got {value!r}"):
        dist.init()
