"""fastnn.config(), thread control, and the command line."""

import json
import re

import numpy as np
import pytest

import fastnn
from fastnn import _C

from _ref import run_python


def test_config_keys_and_types():
    cfg = fastnn.config()
    assert isinstance(cfg, dict)
    for key in ("version", "isa", "openmp", "num_threads", "cuda"):
        assert key in cfg, f"config() lacks {key!r}: {sorted(cfg)}"
    assert isinstance(cfg["version"], str) and re.match(r"^\d+\.\d+", cfg["version"])
    assert cfg["isa"] in ("avx512", "avx2", "generic")
    assert cfg["isa"] == _C.get_isa()
    assert cfg["isa"] in _C.supported_isas()
    assert isinstance(cfg["openmp"], bool)
    assert isinstance(cfg["num_threads"], int) and cfg["num_threads"] >= 1
    assert cfg["num_threads"] == fastnn.get_num_threads()
    assert cfg["cuda"] is False


def test_version_matches_package():
    version = getattr(fastnn, "__version__", None)
    assert version is not None, "fastnn.__version__ missing"
    assert fastnn.config()["version"] == version


def test_config_reports_isa_change():
    for name in _C.supported_isas():
        _C.set_isa(name)
        assert fastnn.config()["isa"] == name


def test_c_config_keys():
    cfg = _C.config()
    for key in ("isa", "isa_supported", "openmp", "num_threads", "cuda"):
        assert key in cfg, f"_C.config() lacks {key!r}"
    assert list(cfg["isa_supported"]) == list(_C.supported_isas())


def test_default_isa_is_best_supported():
    proc = run_python("from fastnn import _C; print(_C.get_isa()); print(','.join(_C.supported_isas()))")
    assert proc.returncode == 0, proc.stderr
    isa, supported = proc.stdout.split()
    supported = supported.split(",")
    best = next(i for i in ("avx512", "avx2", "generic") if i in supported)
    assert isa == best


def test_set_get_num_threads_round_trip():
    for n in (1, 2, 3, 1):
        fastnn.set_num_threads(n)
        if fastnn.config()["openmp"]:
            assert fastnn.get_num_threads() == n
            assert fastnn.config()["num_threads"] == n
            assert _C.get_num_threads() == n
        else:
            assert fastnn.get_num_threads() == 1


def test_omp_num_threads_environment():
    if not fastnn.config()["openmp"]:
        pytest.skip("built without OpenMP")
    proc = run_python("import fastnn; print(fastnn.get_num_threads())", env_extra={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    proc = run_python("import fastnn; print(fastnn.get_num_threads())", env_extra={"OMP_NUM_THREADS": "2"})
    assert proc.stdout.strip() == "2"


def test_seed_is_callable_and_determines_init():
    fastnn.seed(3)
    a = fastnn.nn.Dense(4, 4).weight.data.copy()
    fastnn.seed(3)
    b = fastnn.nn.Dense(4, 4).weight.data.copy()
    np.testing.assert_array_equal(a, b)


def _accuracy_from_output(text):
    m = re.search(r"(?i)test[ _-]*acc(?:uracy)?\s*[:=]?\s*([0-9]*\.?[0-9]+)\s*(%?)", text)
    assert m, f"no test accuracy in output:\n{text[-2000:]}"
    value = float(m.group(1))
    return value / 100 if m.group(2) == "%" or value > 1 else value


def test_cli_train_two_epochs():
    proc = run_python(None, args=["-m", "fastnn", "train", "--epochs", "2"], timeout=240)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    acc = _accuracy_from_output(proc.stdout + proc.stderr)
    assert 0.5 <= acc <= 1.0, f"test accuracy {acc} after 2 epochs on digits"


def test_cli_train_with_options():
    args = ["-m", "fastnn", "train", "--data", "digits", "--hidden", "32,16", "--activation", "tanh",
            "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "16", "--epochs", "2", "--seed", "1"]
    proc = run_python(None, args=args, timeout=240)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    acc = _accuracy_from_output(proc.stdout + proc.stderr)
    assert 0.0 <= acc <= 1.0


def test_cli_bad_option_fails_cleanly():
    proc = run_python(None, args=["-m", "fastnn", "train", "--data", "no-such-dataset", "--epochs", "1"], timeout=120)
    assert proc.returncode != 0
    assert "no-such-dataset" in proc.stdout + proc.stderr
    assert proc.returncode not in (-11, -6, 139, 134), "crashed"


def test_env_generic_config_in_subprocess():
    proc = run_python("import json, fastnn; print(json.dumps(fastnn.config()))", env_extra={"FASTNN_ISA": "generic"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["isa"] == "generic"
