"""fastnn.tune and the tuning file: written by a run, loaded by the next import, never trusted
when damaged, edited or foreign; GEMM under a tuned blocking held to float64."""

import json
import os

import numpy as np
import pytest

import fastnn
from fastnn import _C, tuning

from _ref import run_python

# Blocked-path products (every dimension > 16, m n k > 2^18), small enough for a 1 s tune.
TINY = [(64, 200, 700), (70, 90, 100, True, False), (48, 170, 330, False, True)]
SIMULATED = "48K:12,2M:16,300M:15"  # a Sapphire Rapids core's caches, FASTNN_CACHE

# In a fresh interpreter: the blocking of every ISA, config()'s, the model's, and warnings.
PROBE = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import fastnn
from fastnn import _C
print(json.dumps({"config": fastnn.config()["blocking"],
                  "isas": {i: _C.blocking(i) for i in _C.supported_isas()},
                  "model": {i: list(_C.model_blocking(i)) for i in _C.supported_isas()},
                  "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
"""


@pytest.fixture(autouse=True)
def _model_blocking_after():
    """tune() applies its winner in this process: every test leaves the model's."""
    yield
    for isa in _C.supported_isas():
        _C.reset_blocking(isa)


def probe(path, **env):
    proc = run_python(PROBE, {"FASTNN_TUNING": "on", "FASTNN_TUNING_FILE": str(path), **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tuned_file(tmp_path, name="tuning.json", **kw):
    path = tmp_path / name
    result = fastnn.tune(1.0, shapes=TINY, progress=False, path=path, **kw)
    assert path.is_file() and result["path"] == str(path)
    return path, result


def entry(path):
    doc = json.loads(path.read_text())
    (key,) = doc["entries"]
    return doc, doc["entries"][key]["isas"]


def resign(doc):
    """The document with a valid checksum: a file that passes the checksum but not the rest."""
    payload = {k: v for k, v in doc.items() if k != "checksum"}
    return json.dumps({**payload, "checksum": tuning._checksum(payload)})


def assert_model(seen, what):
    for isa, b in seen["isas"].items():
        assert b["source"] == "model", f"{what}: {isa} uses a {b['source']} blocking {b}"
        assert [b["kc"], b["nc"], b["mc"]] == seen["model"][isa], what
    assert seen["config"]["tuning_file"] is None, what


def test_tune_writes_a_file_the_next_import_loads(tmp_path):
    path, result = tuned_file(tmp_path)
    isa = _C.get_isa()
    here = fastnn.config()["blocking"]
    assert (here["source"], here["tuning_file"]) == ("tuned", str(path))
    assert {k: here[k] for k in ("kc", "nc", "mc")} == result["winner"]
    assert result["model"] == dict(zip(("kc", "nc", "mc"), _C.model_blocking(isa)))
    assert result["speedup"] >= 1.0  # the model is a candidate, scored on the same rounds
    _, isas = entry(path)
    saved = {k: isas[isa][k] for k in ("kc", "nc", "mc")}
    assert saved == result["winner"]
    assert any(s["kc"] == result["model"]["kc"] and s["nc"] == result["model"]["nc"]
               and s["mc"] == result["model"]["mc"] for s in isas[isa]["scores"])

    seen = probe(path)
    assert seen["warnings"] == []
    loaded = seen["isas"][isa]
    assert loaded["source"] == "tuned"
    assert {k: loaded[k] for k in ("kc", "nc", "mc")} == saved
    assert seen["config"]["tuning_file"] == str(path)


def tune_simulated(path):
    """Tune in a subprocess whose FASTNN_CACHE makes it another CPU."""
    code = (f"import fastnn; fastnn.tune(1.0, shapes={TINY!r}, progress=False, "
            f"path={str(path)!r})")
    proc = run_python(code, {"FASTNN_CACHE": SIMULATED, "FASTNN_TUNING": "off"})
    assert proc.returncode == 0, proc.stderr


def test_file_keeps_every_cpu_and_isa(tmp_path):
    """Another geometry (FASTNN_CACHE) and every ISA in one file: entries merged, not
    replaced, and each loaded where it belongs."""
    path = tmp_path / "tuning.json"
    tune_simulated(path)
    for isa in _C.supported_isas():
        _C.set_isa(isa)
        tuned_file(tmp_path)
    doc = json.loads(path.read_text())
    assert len(doc["entries"]) == 2, sorted(doc["entries"])
    seen = probe(path)
    assert seen["warnings"] == []
    assert all(b["source"] == "tuned" for b in seen["isas"].values()), seen["isas"]
    simulated = probe(path, FASTNN_CACHE=SIMULATED)
    assert simulated["warnings"] == []
    assert simulated["config"]["source"] == "tuned"


def test_truncated_file_is_ignored_with_a_warning(tmp_path):
    path, _ = tuned_file(tmp_path)
    text = path.read_bytes()
    path.write_bytes(text[:len(text) // 2])
    seen = probe(path)
    assert len(seen["warnings"]) == 1, seen["warnings"]
    assert "RuntimeWarning" in seen["warnings"][0] and str(path) in seen["warnings"][0]
    assert "not valid JSON" in seen["warnings"][0]
    assert_model(seen, "truncated file")


def test_json_nested_beyond_the_stack_is_a_damaged_file(tmp_path):
    """load promises never to raise for the content: a RecursionError came out of json."""
    path = tmp_path / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.warns(RuntimeWarning, match="not valid JSON"):
        assert fastnn.tuning.load(path) == []


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge", "directory"])
def test_endless_or_odd_file_is_ignored_with_a_warning(tmp_path, kind):
    """FASTNN_TUNING_FILE=/dev/zero grew the import to 23 GB, reading to the end; a FIFO's
    open would wait for a writer. Each is refused, with a warning, before it is read."""
    path = {"dev-zero": "/dev/zero", "fifo": tmp_path / "fifo", "huge": tmp_path / "huge.json",
            "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "huge":
        path.write_bytes(b" " * (tuning.MAX_FILE_BYTES + 1))
    seen = probe(path)
    assert len(seen["warnings"]) == 1, seen["warnings"]
    assert str(path) in seen["warnings"][0]
    assert ("larger than" if kind == "huge" else "not a regular file") in seen["warnings"][0]
    assert_model(seen, kind)


def test_edited_file_is_ignored_with_a_warning(tmp_path):
    path, result = tuned_file(tmp_path)
    doc, isas = entry(path)
    isas[_C.get_isa()]["kc"] = result["winner"]["kc"] + 1  # valid, but not what tune wrote
    path.write_text(json.dumps(doc))
    seen = probe(path)
    assert len(seen["warnings"]) == 1, seen["warnings"]
    assert str(path) in seen["warnings"][0] and "checksum" in seen["warnings"][0]
    assert_model(seen, "edited file")


@pytest.mark.parametrize("field,value,expected", [
    ("kc", 0, "expected an int in [1, 65536]"), ("kc", "320", "expected an int"),
    ("nc", 2**21, "expected an int in [1, 1048576]"), ("mc", True, "expected an int"),
    ("nc", 17, "multiples of NR")])
def test_signed_file_with_invalid_values_is_ignored(tmp_path, field, value, expected):
    """A file whose checksum holds (written by a broken or foreign tool) is still checked."""
    path, _ = tuned_file(tmp_path)
    doc, isas = entry(path)
    isas[_C.get_isa()][field] = value
    path.write_text(resign(doc))
    seen = probe(path)
    assert len(seen["warnings"]) == 1 and expected in seen["warnings"][0], seen["warnings"]
    assert_model(seen, f"{field} = {value!r}")


def test_other_format_version_is_ignored_with_a_warning(tmp_path):
    path, _ = tuned_file(tmp_path)
    doc = json.loads(path.read_text())
    doc["version"] = tuning.FORMAT_VERSION + 1
    path.write_text(resign(doc))
    seen = probe(path)
    assert len(seen["warnings"]) == 1 and "format version" in seen["warnings"][0]
    assert_model(seen, "other version")


def test_foreign_file_is_silently_unused(tmp_path):
    path = tmp_path / "tuning.json"
    tune_simulated(path)
    seen = probe(path)  # this CPU's own geometry: the file has no entry for it
    assert seen["warnings"] == []
    assert_model(seen, "foreign file")


def test_entry_for_another_kernel_shape_is_silently_unused(tmp_path):
    """A blocking tuned for another MR x NR (an older fastnn's kernel) is stale, not damaged."""
    path, _ = tuned_file(tmp_path)
    doc, isas = entry(path)
    isas[_C.get_isa()]["nr"] *= 2
    path.write_text(resign(doc))
    seen = probe(path)
    assert seen["warnings"] == []
    assert_model(seen, "another kernel shape")


def test_import_without_a_file_stays_light(tmp_path):
    """With tuning on and no file, import fastnn reads nothing and imports no json,
    hashlib or pathlib on top of numpy (test_cli_config runs with FASTNN_TUNING=off)."""
    code = ("import sys, numpy; before = set(sys.modules); import fastnn; "
            "print([m for m in ('json', 'hashlib', 'pathlib', 'fastnn.io') "
            "if m in sys.modules and m not in before], fastnn.config()['blocking']['source'])")
    proc = run_python(code, {"FASTNN_TUNING": "on",
                             "FASTNN_TUNING_FILE": str(tmp_path / "none.json")})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.split() == ["[]", "model"], proc.stdout


def test_tuning_off_ignores_a_valid_file(tmp_path):
    path, _ = tuned_file(tmp_path)
    assert probe(path)["config"]["source"] == "tuned"
    for off in ("off", "0", "false", "no"):  # as the other FASTNN_ switches read them
        seen = probe(path, FASTNN_TUNING=off)
        assert seen["warnings"] == []
        assert_model(seen, f"FASTNN_TUNING={off}")
    seen = probe(path, FASTNN_TUNING="of")  # a typo is said, not taken for off
    assert len(seen["warnings"]) == 1 and "FASTNN_TUNING='of'" in seen["warnings"][0]
    assert seen["config"]["source"] == "tuned"


def test_default_path_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTNN_TUNING_FILE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tuning.tuning_path() == tmp_path / "fastnn" / "tuning.json"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec: ignore it
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tuning.tuning_path() == tmp_path / ".cache" / "fastnn" / "tuning.json"
    monkeypatch.setenv("FASTNN_TUNING_FILE", str(tmp_path / "w.json"))
    assert tuning.tuning_path() == tmp_path / "w.json"


def test_no_home_folder_is_named_not_made_in_the_working_folder(tmp_path, monkeypatch):
    """Found by an attack: with no HOME and no password entry (a container run under a random
    uid) expanduser("~") stays "~", and tune() wrote ./~/.cache/fastnn/tuning.json; datasets
    said "Could not determine home directory". Both now name the variable to set."""
    import pwd

    from fastnn import datasets

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "XDG_CACHE_HOME", "FASTNN_TUNING_FILE", "FASTNN_DATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="FASTNN_TUNING_FILE or XDG_CACHE_HOME"):
        tuning.tuning_path()
    with pytest.raises(RuntimeError, match="FASTNN_TUNING_FILE"):
        fastnn.tune(1.0, shapes=TINY, progress=False)
    with pytest.raises(RuntimeError, match="FASTNN_DATA or XDG_CACHE_HOME"):
        datasets.data_dir()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tuning._load_at_import()   # no file to read: nothing said at import
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")   # ignored, as the XDG spec says
    with pytest.raises(RuntimeError, match="FASTNN_DATA"):
        datasets.data_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.data_dir() == tmp_path / "fastnn" / "datasets"
    assert tuning.tuning_path() == tmp_path / "fastnn" / "tuning.json"


def test_a_damaged_file_under_w_error_fails_the_import_with_its_own_message(tmp_path):
    """Found by an attack: under ``python -W error`` the damaged file's warning, raised as an
    error, was caught and warned again, one message nested inside another."""
    path, _ = tuned_file(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    proc = run_python(None, {"FASTNN_TUNING": "on", "FASTNN_TUNING_FILE": str(path)},
                      args=["-W", "error", "-c", "import fastnn"])
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.count("ignoring the tuning file") == 1 and "not valid JSON" in last, last


GEMM_CHECK = """
import itertools, json, math
import numpy as np
import fastnn
from fastnn import _C
eps = float(np.finfo(np.float32).eps)
rng = np.random.default_rng(7)
worst = 0.0
for isa in _C.supported_isas():
    _C.set_isa(isa)
    assert _C.blocking(isa)["source"] == "tuned", _C.blocking(isa)
    for (ta, tb), m, n, k in itertools.product(itertools.product([False, True], repeat=2),
                                               (97, 301), (45, 257), (71, 517)):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        A, B = a.astype(np.float64), b.astype(np.float64)
        A, B = (A.T if ta else A), (B.T if tb else B)
        got = fastnn.matmul(a, b, transpose_a=ta, transpose_b=tb).astype(np.float64)
        tol = 4 * eps * (math.sqrt(k) + 2) * (np.abs(A) @ np.abs(B)) + 1e-30
        worst = max(worst, float(np.max(np.abs(got - A @ B) / tol)))
print(json.dumps({"worst": worst, "blocking": {i: _C.blocking(i) for i in _C.supported_isas()}}))
"""


@pytest.mark.parametrize("blocking", ["winner", "tiny"], ids=["winner", "tiny-blocks"])
def test_gemm_under_a_loaded_blocking_matches_float64(tmp_path, blocking):
    """Every ISA under the file's blocking (the tune's winner, or tiny blocks that exercise
    every edge), all transposes, awkward sizes on the blocked path (each dimension > 16, m n k
    > 2^18: smaller products take the small path, which has no blocking): error within
    float32 rounding."""
    path = tmp_path / "tuning.json"
    for isa in _C.supported_isas():
        _C.set_isa(isa)
        tuned_file(tmp_path)
    if blocking == "tiny":
        doc = json.loads(path.read_text())
        for isas in (e["isas"] for e in doc["entries"].values()):
            for b in isas.values():  # kc 17, column blocks of 3 NR, row blocks of 2 MR
                b["kc"], b["nc"], b["mc"] = 17, 3 * b["nr"], 2 * b["mr"]
        path.write_text(resign(doc))
    proc = run_python(GEMM_CHECK, {"FASTNN_TUNING": "on", "FASTNN_TUNING_FILE": str(path)})
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["worst"] <= 1.0, out
    if blocking == "tiny":
        assert all((b["kc"], b["nc"], b["mc"]) == (17, 3 * b["nr"], 2 * b["mr"])
                   for b in out["blocking"].values()), out["blocking"]


def test_failed_save_keeps_the_blocking_in_use(tmp_path, monkeypatch):
    """tune() that cannot write its file raises and leaves the blocking as it found it; a
    path that cannot be a file is refused before the timing."""
    before = _C.blocking()

    def no_timing(*args, **kwargs):
        raise AssertionError("the candidates were made: the timing began")

    with monkeypatch.context() as m:
        m.setattr(fastnn.tuning, "candidates", no_timing)
        with pytest.raises(IsADirectoryError, match="is a folder"):
            fastnn.tune(5.0, shapes=TINY, progress=False, path=tmp_path)
    assert _C.blocking() == before

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fastnn.io, "write_atomic", disk_full)
    with pytest.raises(OSError, match="No space left"):
        fastnn.tune(0.3, shapes=TINY, progress=False, path=tmp_path / "t.json")
    assert _C.blocking() == before


@pytest.mark.parametrize("kw,names", [
    ({"seconds": 0}, "seconds"), ({"seconds": float("nan")}, "seconds"),
    ({"seconds": 10**400}, "seconds"), ({"shapes": [(4, 4)]}, "shapes"),
    ({"shapes": [(4, 0, 4)]}, "shapes"), ({"shapes": [(4, 4, 4, 1, 0)]}, "shapes"),
    ({"shapes": []}, "shapes"), ({"threads": 0}, "threads")])
def test_tune_rejects_bad_arguments(tmp_path, kw, names):
    before = _C.blocking()
    with pytest.raises(ValueError, match=names):
        fastnn.tune(**{"seconds": 1.0, "shapes": TINY, "progress": False,
                       "path": tmp_path / "t.json", **kw})
    assert not (tmp_path / "t.json").exists()
    assert _C.blocking() == before


def test_cli_tune(tmp_path):
    path = tmp_path / "tuning.json"
    proc = run_python(None, {"FASTNN_TUNING_FILE": str(path)},
                      args=["-m", "fastnn", "tune", "--seconds", "0.1", "--threads", "1"])
    assert proc.returncode == 0, proc.stderr
    for text in ("CPU:", "model's blocking: kc", "tuned blocking:", "speedup over the model's",
                 f"saved to {path}"):
        assert text in proc.stdout, proc.stdout
    _, isas = entry(path)
    assert isas[_C.get_isa()]["threads"] == 1
    bad = run_python(None, {"FASTNN_TUNING_FILE": str(path)},
                     args=["-m", "fastnn", "tune", "--seconds", "0"])
    assert bad.returncode == 2 and "--seconds" in bad.stderr


@pytest.mark.parametrize("seconds", [True, "3", None, [3]])
def test_tune_refuses_seconds_that_are_not_a_number(tmp_path, seconds):
    with pytest.raises(TypeError, match="seconds must be a number"):
        fastnn.tune(seconds, shapes=TINY, progress=False, path=tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_tune_takes_numpys_numbers_and_says_when_it_has_no_time_to_compare(tmp_path):
    """np.int64(1) had been refused as not "a finite number > 0" (an attack); a budget too
    short for two candidates had saved the model's blocking as tuned without a word."""
    path = tmp_path / "t.json"
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        assert fastnn.tune(np.int64(1), shapes=TINY, progress=False, path=path)["rounds"] >= 1
    with pytest.warns(RuntimeWarning, match="leaves no time to compare blockings"):
        result = fastnn.tune(np.float32(1e-9), shapes=TINY, progress=False, path=path)
    assert result["candidates"] == 1 and result["winner"] == result["model"]


def test_tuners_run_at_once_keep_each_others_entries(tmp_path):
    """One tuner per ISA started together on one file: each had written back the file it
    read, the last rename dropping the others' entries (an attack saw 1 or 2 of 3 left)."""
    path = tmp_path / "tuning.json"
    isas = _C.supported_isas()
    start = __import__("time").time() + 2.0
    code = ("import os, time, fastnn\n"
            f"time.sleep(max(0.0, {start!r} - time.time()))\n"
            "fastnn.tune(0.05, shapes=[(16, 16, 16)], progress=False)\n")
    procs = [__import__("subprocess").Popen(
        [__import__("sys").executable, "-c", code],
        env={**os.environ, "FASTNN_TUNING_FILE": str(path), "FASTNN_ISA": isa, "FASTNN_TUNING": "off"})
        for isa in isas for _ in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    _, entries = entry(path)
    assert sorted(entries) == sorted(isas)


def test_tune_replaces_an_entry_that_load_would_refuse(tmp_path):
    """load applies all of a CPU's ISA entries or none: a damaged one of another ISA had
    been kept by tune, so its new entry was never used (an attack)."""
    path, _ = tuned_file(tmp_path)
    doc, isas = entry(path)
    isa = _C.get_isa()
    other = next(i for i in _C.supported_isas() if i != isa)
    isas[other] = {**isas[isa], "kc": 0, "mr": _C.blocking(other)["mr"], "nr": _C.blocking(other)["nr"]}
    path.write_text(resign(doc))
    assert probe(path)["config"]["source"] == "model"  # the whole entry refused
    with pytest.warns(RuntimeWarning, match=f"dropping the tuning file's {other} entry"):
        fastnn.tune(1.0, shapes=TINY, progress=False, path=path)
    _, isas = entry(path)
    assert other not in isas
    assert probe(path)["config"]["source"] == "tuned"


@pytest.mark.parametrize("kw,error,words", [
    ({"path": ""}, ValueError, r"tune: path is empty; give a file name"),
    ({"path": 3}, TypeError, r"tune: path must be a str or os\.PathLike .*got int 3"),
    ({"path": b"/tmp/x.json"}, TypeError, r"tune: path must be a str .*got bytes .*os\.fsdecode"),
    ({"progress": "yes"}, TypeError, r"tune: progress must be True or False; got str 'yes'"),
    ({"progress": None}, TypeError, r"tune: progress must be True or False")])
def test_tune_names_a_bad_path_or_progress_before_timing(tmp_path, monkeypatch, kw, error,
                                                          words):
    """An attack: path="" said "'' is a folder", 3 and bytes gave pathlib's TypeErrors naming
    nothing, and progress="yes" was taken."""
    monkeypatch.setattr(fastnn.tuning, "candidates", lambda *a, **k: pytest.fail("timed"))
    before = _C.blocking()
    with pytest.raises(error, match=words):
        fastnn.tune(0.2, **{"shapes": [(16, 16, 16)], "path": tmp_path / "t.json", **kw})
    assert _C.blocking() == before and not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("path,error,words", [
    ("", ValueError, r"tuning\.load: path is empty"),
    (3, TypeError, r"tuning\.load: path must be a str or os\.PathLike .*got int 3")])
def test_load_names_a_bad_path(path, error, words):
    with pytest.raises(error, match=words):
        tuning.load(path)


def test_tune_with_an_enormous_budget_caps_its_rounds(tmp_path):
    """seconds=1e308 (finite, so accepted) made an infinite quotient that int() refused: an
    OverflowError traceback from the CLI (an attack). The rounds stop at their cap."""
    result = fastnn.tune(1e308, shapes=TINY, progress=False, path=tmp_path / "t.json")
    assert 1 <= result["rounds"] <= fastnn.tuning._MAX_ROUNDS
