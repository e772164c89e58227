"""fastnn.config(), thread control, and the command line."""

import ast
import json
import os
import re
import time

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
    assert cfg["cuda"]["built"] is _C.cuda_info()["built"]
    if not cfg["cuda"]["available"]:
        assert cfg["cuda"]["reason"], "an unavailable CUDA says why"


def test_version_comes_from_pyproject_alone():
    """pyproject.toml holds the version; the build compiles it into _C, and the package,
    config() and the installed metadata all read that one."""
    import importlib.metadata
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    declared = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    assert fastnn.__version__ == _C.__version__ == declared
    assert fastnn.config()["version"] == declared
    assert importlib.metadata.version("fastnn-learn") == declared


def test_config_reports_isa_change():
    for name in _C.supported_isas():
        _C.set_isa(name)
        assert fastnn.config()["isa"] == name


def test_c_config_keys():
    cfg = _C.config()
    for key in ("isa", "isa_supported", "openmp", "num_threads"):
        assert key in cfg, f"_C.config() lacks {key!r}"
    assert list(cfg["isa_supported"]) == list(_C.supported_isas())


def test_default_isa_is_best_supported():
    proc = run_python("from fastnn import _C; print(_C.get_isa()); print(','.join(_C.supported_isas()))",
                      env_extra={"FASTNN_ISA": None})  # the default: no ISA forced
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


def test_cli_train_to_a_pipe_prints_one_line_per_epoch():
    # stdout is a pipe here: no progress bar redraws, one line per epoch (tqdm installed or not)
    proc = run_python_module(["train", "--data", "xor", "--hidden", "4", "--epochs", "2"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\r") == 0 and proc.stderr.count("\r") == 0
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line[:9] for line in epochs] == ["Epoch 1/2", "Epoch 2/2"]


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


def test_cli_train_with_course_options(tmp_path):
    model_path, png = tmp_path / "m.safetensors", tmp_path / "curves.png"
    proc = run_python_module(["train", "--data", "digits", "--epochs", "3", "--hidden", "32",
                              "--dropout", "0.1", "--l2", "1e-4", "--init", "he_uniform",
                              "--schedule", "cosine", "--augment", "1,5", "--early-stopping",
                              "2", "--diagnostics", "--save", str(model_path), "--plot", str(png)])
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "grad norm" in proc.stdout
    model = fastnn.load(model_path)
    X_test = fastnn.datasets.load("digits")[2]
    assert model.predict(X_test).shape == (len(X_test), 10)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_diagnostics_table_keeps_its_columns_for_long_layer_names(capsys):
    """Found by an attack: a name longer than 12 characters ("12:BatchNorm2d") pushed its
    row's numbers out of their columns."""
    from fastnn import cli

    assert cli.main(["train", "--data", "digits", "--model", "cnn", "--epochs", "1",
                     "--diagnostics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer"))
    table = lines[start:start + 1 + sum(1 for line in lines[start + 1:]
                                         if line[:1].isdigit() and ":" in line.split()[0])]
    assert any(len(line.split()[0]) > 12 for line in table[1:]), table
    end = table[0].index("grad norm") + len("grad norm")   # each number ends under its header
    assert all(line[end - 1] != " " and line[end] == " " for line in table[1:]), table


def test_cli_compare_prints_table_and_plot(tmp_path):
    png = tmp_path / "cmp.png"
    proc = run_python_module(["compare", "--data", "digits", "--optimizers", "sgd,adam",
                              "--lr", "0.1,0.01", "--epochs", "1", "--hidden", "16",
                              "--plot", str(png)])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    rows = [line.split()[:2] for line in lines[header + 2:header + 6]]
    assert rows == [["sgd", "0.1"], ["sgd", "0.01"], ["adam", "0.1"], ["adam", "0.01"]]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_compare_banner_says_validation(capsys):
    from fastnn import cli
    assert cli.main(["compare", "--data", "digits", "--hidden", "8", "--epochs", "1",
                     "--optimizers", "sgd", "--lr", "0.1"]) == 0
    out = capsys.readouterr().out
    n_val = len(fastnn.datasets.load("digits", validation=0.1)[2])   # the split compare makes
    assert re.search(rf"digits: \d+ train / {n_val} validation samples$", out.splitlines()[0])


def test_cli_builds_the_named_and_the_optioned_cnns(capsys):
    """--model and --conv build what their help says, in the summary the command prints."""
    from fastnn import cli

    def layers(*options):
        capsys.readouterr()
        assert cli.main(["train", "--epochs", "1", "--validation-split", "0", *options]) == 0
        out = capsys.readouterr().out
        return re.findall(r"^\d+: (\w+)\((.*?)\)\s", out, re.M)

    conv = layers("--data", "digits", "--conv", "4,6", "--hidden", "16")
    assert [name for name, _ in conv] == ["Reshape", "Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d",
                                          "Flatten", "Dense", "Dense"]
    assert conv[0][1] == "(1, 8, 8)" and conv[1][1].startswith("1, 4, kernel_size=3")
    assert conv[3][1].startswith("4, 6, kernel_size=3") and conv[6][1].startswith("24, 16")
    cnn = [name for name, _ in layers("--data", "digits", "--model", "cnn", "--conv", "4")]
    assert cnn == ["Reshape", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU",
                   "MaxPool2d", "Flatten", "Dense", "Dense"]
    lenet = layers("--data", "mnist-5k", "--model", "lenet", "--activation", "tanh")
    assert [args.split(",")[:2] for name, args in lenet if name in ("Conv2d", "Dense")] == [
        ["1", " 6"], ["6", " 16"], ["400", " 120"], ["120", " 84"], ["84", " 10"]]


@pytest.mark.parametrize("options,message", [
    (["--data", "moons", "--conv", "4"], "--model mlp --conv needs an image dataset; 'moons'"),
    (["--data", "xor", "--model", "cnn"], "--model cnn needs an image dataset; 'xor'"),
    (["--data", "digits", "--model", "lenet", "--conv", "4"], "--conv does not apply to --model"),
    (["--data", "digits", "--model", "lenet"], "lenet needs images of 12 x 12 pixels or more"),
])
def test_cli_cnn_options_fail_with_a_clear_error(options, message, capsys):
    from fastnn import cli

    assert cli.main(["train", "--epochs", "1", *options]) == 1
    assert message in capsys.readouterr().err


def test_cli_datasets_lists_availability():
    proc = run_python_module(["datasets"])
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert names == fastnn.datasets.available()
    assert "to get it" in proc.stdout  # "mnist" needs a path
    # the folder and the command, not the Python API's data_dir() and load('kmnist')
    assert "data_dir()" not in proc.stdout and "load(" not in proc.stdout
    assert str(fastnn.datasets.data_dir()) in proc.stdout


def test_cli_augment_on_points_is_a_clear_error():
    proc = run_python_module(["train", "--data", "moons", "--augment", "1,5", "--epochs", "1"])
    assert proc.returncode == 1 and "image dataset" in proc.stderr


def run_python_module(cli_args):
    return run_python(None, args=["-m", "fastnn", *cli_args], timeout=240)


def test_import_fastnn_defers_optional_modules():
    """``import fastnn`` loads only the core: the rarely needed submodules (PEP 562
    attributes of the package), the optional packages and costly imports they or the
    core use only inside functions come when first used (no timing asserted)."""
    lazy = ["fastnn.experiments", "fastnn.plot", "fastnn.datasets", "fastnn.io",
            "fastnn.schedulers", "fastnn.cli"]
    optional = ["matplotlib", "sklearn", "mlxtend", "safetensors", "tqdm", "torch"]
    # Loaded by fastnn only on use; checked as "not added on top of import numpy", which
    # holds whatever numpy itself imports.
    stdlib = ["numpy.random", "pathlib", "json", "csv", "gzip", "hashlib", "secrets"]
    proc = run_python(  # prints a list's repr: no json imported before fastnn
        "import sys; import numpy; before = set(sys.modules); import fastnn; "
        f"print([[m for m in {lazy + optional!r} if m in sys.modules], "
        f"[m for m in {stdlib!r} if m in sys.modules and m not in before]])")
    assert proc.returncode == 0, proc.stderr
    loaded, added = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"import fastnn loaded {loaded}"
    assert added == [], f"import fastnn imported {added} on top of numpy"
    # ... and they still come on first access, the same objects as before.
    proc = run_python(
        "import sys, fastnn; names = [n for n in fastnn.__all__ if n not in dir(fastnn)]; "
        "print(names, fastnn.load is fastnn.io.load, fastnn.experiments.__name__, "
        "fastnn.init.Initializer is not None, 'fastnn.plot' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "True", "fastnn.experiments", "True", "False"]


def test_readme_xor_command_trains_and_says_there_is_no_validation_split():
    proc = run_python(None, args=["-m", "fastnn", "train", "--data", "xor", "--hidden", "8",
                                  "--activation", "tanh", "--optimizer", "sgd", "--lr", "0.5",
                                  "--epochs", "500"], timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "--validation-split 0.1 of 4 training samples" in proc.stdout
    assert "test accuracy 1.0000" in proc.stdout  # XOR is learnt; test set == training set


def test_cli_compare_on_xor_validates_on_its_test_set():
    proc = run_python_module(["compare", "--data", "xor", "--hidden", "4", "--epochs", "2"])
    assert proc.returncode == 0, proc.stderr
    assert "validated on its test set" in proc.stdout
    assert re.search(r"^adam\s+0\.01\s+32\s", proc.stdout, re.M)


@pytest.mark.parametrize("flag,value", [("--lr", "-1"), ("--lr", "nan"), ("--validation-split", "1.5"),
                                        ("--dropout", "1"), ("--l2", "-0.1"), ("--clip-norm", "0"),
                                        ("--seed", "-1"), ("--seed", "1.5"), ("--hidden", "8,,4"),
                                        ("--augment", "a,b"), ("--augment", "2"), ("--augment", "2,-1")])
def test_cli_errors_name_the_flag(flag, value, capsys):
    from fastnn import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--data", "xor", "--epochs", "1", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and repr(value) in err


def test_cli_unknown_init_names_the_flag(capsys):
    from fastnn import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "xor", "--epochs", "1", "--init", "foo"])
    assert "argument --init: unknown init 'foo'" in capsys.readouterr().err


def test_cli_plateau_and_early_stopping_watch_the_loss_without_validation(capsys):
    from fastnn import cli

    assert cli.main(["train", "--data", "xor", "--hidden", "4", "--epochs", "3",
                     "--schedule", "plateau", "--early-stopping", "2"]) == 0
    assert "training without validation" in capsys.readouterr().out


def test_cli_train_banner_counts_the_samples_fit_trains_on(capsys):
    # With --validation-split (default 0.1) the banner said "1438 train / 359 test", then
    # every epoch trained on 1294: the held-out validation samples were counted as train.
    from fastnn import cli
    assert cli.main(["train", "--data", "digits", "--hidden", "8", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    trained = re.search(r"Epoch 1/1 \[(\d+)/\1\]", out).group(1)
    X_train, _, X_test, _ = fastnn.datasets.load("digits")
    n_val = len(X_train) - int(trained)
    assert n_val == round(0.1 * len(X_train))
    assert re.search(rf"digits: {trained} train / {n_val} validation / {len(X_test)} test "
                     r"samples$", out.splitlines()[0]), out.splitlines()[0]


_REFUSED = [(["--save", "{tmp}"], "is a folder"),
            (["--save", "{tmp}/a_file/model.safetensors"], "a_file is a file, not a folder"),
            (["--plot", "{tmp}/a_file/curves.png"], "a_file is a file, not a folder"),
            (["--plot", "{tmp}/curves.bogus"], "not '.bogus'"),
            # a folder no file can be made in (as root, /proc: a read-only one is writable)
            (["--save", "/proc/model.safetensors"], "cannot write in /proc"),
            (["--plot", "/proc/curves.png"], "cannot write in /proc"),
            (["--batch-norm"], "--batch-norm puts BatchNorm2d in --conv blocks"),
            (["--save", ""], "--save '' names no file"), (["--plot", " "], "--plot ' ' names no file"),
            # found by an attack: Path() drops the separator, so "newdir/" was written as a file
            (["--save", "{tmp}/newdir/"], "newdir/ is a folder; give a file name such as"),
            (["--plot", "{tmp}/figs/"], "figs/ is a folder; give a file name such as")]


@pytest.mark.parametrize("command,options,message",
                         [("train", *case) for case in _REFUSED] +
                         [("compare", *case) for case in _REFUSED if case[0][0] != "--save"])
def test_cli_refuses_outputs_and_options_before_training(command, options, message, tmp_path,
                                                         capsys):
    """Found by an attack: a --save folder or a --plot under a file ended in a traceback after
    training; a plot that failed was reported saved; --batch-norm without --conv did nothing."""
    from fastnn import cli

    (tmp_path / "a_file").write_text("")
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    assert cli.main([command, "--data", "xor", "--epochs", "1", *options]) == 1
    err = capsys.readouterr()
    assert message in err.err and "Epoch" not in err.out and "Traceback" not in err.err


def test_cli_out_of_memory_is_a_message_naming_the_settings(monkeypatch, capsys):
    """--hidden 100000000 ended in NumPy's _ArrayMemoryError traceback."""
    from fastnn import cli, nn

    def huge(*args, **kwargs):
        raise MemoryError("Unable to allocate 47.7 GiB for an array")

    monkeypatch.setattr(nn.Dense, "__init__", huge)
    assert cli.main(["train", "--data", "xor", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "--hidden" in err and "Traceback" not in err


def test_cli_hidden_empty_means_no_hidden_layer_and_plot_names_the_file_written(tmp_path, capsys):
    from fastnn import cli

    assert cli.main(["train", "--data", "moons", "--epochs", "1", "--hidden", "",
                     "--plot", str(tmp_path / "curves")]) == 0
    out = capsys.readouterr().out
    assert f"saved the curves to {tmp_path / 'curves.png'}" in out
    assert (tmp_path / "curves.png").is_file()
    assert re.search(r"^0: Dense\(2, 2\) ", out, re.MULTILINE) and "1: " not in out, out


def test_cli_prints_warnings_as_messages_and_takes_an_optimizer_in_any_case():
    """A warning showed fastnn's source file, line and code; compare took --optimizers Adam
    where train refused --optimizer Adam."""
    proc = run_python(None, args=["-m", "fastnn", "train", "--data", "digits", "--epochs", "1",
                                  "--optimizer", "Adam", "--lr", "1e30"])
    assert proc.returncode == 1, proc.stderr[-2000:]   # the training diverged: a failed run
    assert "fastnn: RuntimeWarning: fit: the loss became" in proc.stderr, proc.stderr
    assert "cli.py" not in proc.stderr and "warnings.warn" not in proc.stderr


def _idx_set(folder, train_images, train_labels, test_images, test_labels):
    folder.mkdir()
    for name, array in (("train-images-idx3-ubyte", train_images), ("train-labels-idx1-ubyte", train_labels),
                        ("t10k-images-idx3-ubyte", test_images), ("t10k-labels-idx1-ubyte", test_labels)):
        fastnn.datasets.save_idx(folder / name, np.asarray(array, np.uint8))
    return str(folder)


def test_cli_data_path_sets_are_checked_before_training(tmp_path, capsys):
    """Found by an attack: the output layer was sized from the training labels alone (a test
    label beyond them failed after the training), and wrongly sized or empty sets failed in
    NumPy's words."""
    from fastnn import cli

    rng = np.random.default_rng(0)
    images = lambda n, side=28: rng.integers(0, 255, (n, side, side))  # noqa: E731
    wider = _idx_set(tmp_path / "wider", images(40), np.arange(40) % 5, images(20), np.arange(20) % 10)
    assert cli.main(["train", "--data", "fashion-mnist", "--data-path", wider, "--epochs", "1",
                     "--hidden", "8", "--validation-split", "0"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    beyond = _idx_set(tmp_path / "beyond", images(40), np.arange(40) % 10, images(20), np.arange(20) % 12)
    assert cli.main(["train", "--data", "fashion-mnist", "--data-path", beyond, "--epochs", "1",
                     "--hidden", "8", "--validation-split", "0"]) == 0  # 12 outputs, not 10
    assert "Dense(8, 12)" in capsys.readouterr().out
    small = _idx_set(tmp_path / "small", images(40, 6), np.arange(40) % 10, images(20, 6), np.arange(20) % 10)
    empty = _idx_set(tmp_path / "empty", images(40), np.arange(40) % 10, np.zeros((0, 28, 28)), [])
    for folder, words in ((small, "needs 28x28 images; the training set in"), (empty, "the test set in")):
        assert cli.main(["train", "--data", "fashion-mnist", "--data-path", folder, "--epochs", "1"]) == 1
        err = capsys.readouterr().err
        assert words in err and folder in err and "Traceback" not in err


def test_cli_save_to_a_device_fails_before_training(capsys):
    """Found by an attack: --save /dev/null passed the early check and failed after the
    training (the model lost), with an "[Errno 17]" prefix."""
    from fastnn import cli

    assert cli.main(["train", "--data", "xor", "--epochs", "1", "--save", os.devnull]) == 1
    out, err = capsys.readouterr()
    assert "--save cannot write" in err and "not a regular file" in err and "Errno" not in err
    assert "Epoch" not in out


def test_cli_compare_checks_its_optimizers_as_train_does(capsys):
    from fastnn import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["compare", "--data", "digits", "--optimizers", "sgd,foo"])
    assert info.value.code == 2
    assert "argument --optimizers: invalid choice 'foo'" in capsys.readouterr().err
    assert cli.main(["compare", "--data", "digits", "--hidden", "8", "--epochs", "1",
                     "--optimizers", "sgd, ADAM", "--target", "0.955"]) == 0
    out = capsys.readouterr().out
    assert "run 2/2: adam lr=0.01 bs=32" in out  # a line as each run starts
    assert re.search(r"^optimizer\s.*\sepoch>=95\.5%\s", out, re.M)  # the target as given


def test_cli_test_loss_says_when_it_holds_the_penalty(capsys):
    from fastnn import cli

    assert cli.main(["train", "--data", "xor", "--epochs", "1", "--hidden", "4", "--l2", "0.1"]) == 0
    assert "test loss (incl. the L1/L2 penalty)" in capsys.readouterr().out
    assert cli.main(["train", "--data", "xor", "--epochs", "1", "--hidden", "4"]) == 0
    assert re.search(r"^test loss \d", capsys.readouterr().out, re.M)


def test_cli_ctrl_c_prints_a_line_not_a_traceback(monkeypatch, capsys):
    from fastnn import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(fastnn.nn.Sequential, "fit", interrupted)
    try:
        code = cli.main(["train", "--data", "xor", "--epochs", "1"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped cli.main (a traceback)")
    assert code == 130
    assert capsys.readouterr().err.strip() == "fastnn: interrupted"


def test_tune_refuses_a_tuning_file_it_cannot_write_before_timing(tmp_path, monkeypatch):
    """Found by an attack: the timing ran whole, then the write failed naming a .lock file.
    /proc takes no new file, for root too; elsewhere a read-only folder."""
    if os.path.isdir("/proc/self"):
        target = "/proc/fastnn-tuning.json"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = str(tmp_path / "ro" / "t.json")
        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("no folder here refuses this user a file")
    monkeypatch.setenv("FASTNN_TUNING_FILE", target)
    start = time.perf_counter()
    with pytest.raises(OSError, match=r"cannot write the tuning file .* \(from FASTNN_TUNING_FILE\)"):
        fastnn.tune(seconds=30, progress=False)
    assert time.perf_counter() - start < 10


def test_cli_export_to_a_folder_suggests_an_onnx_name(tmp_path, capsys):
    """Found by an attack: --onnx <folder> suggested "<folder>/model.safetensors"; and
    --onnx newdir/ (a folder by its separator) had been written as a file "newdir"."""
    from fastnn import cli

    for given in (str(tmp_path), str(tmp_path / "newdir") + os.sep):
        assert cli.main(["export", str(tmp_path / "m.safetensors"), "--onnx", given]) == 1
        err = capsys.readouterr().err
        assert "is a folder; give a file name such as" in err and "model.onnx" in err, err
        assert "safetensors" not in err.split("such as")[1]
    assert not (tmp_path / "newdir").exists()


def test_cli_export_refuses_to_write_the_onnx_graph_over_its_model(tmp_path, capsys):
    """An attack: --onnx MODEL replaced the saved model with the ONNX graph, exit 0."""
    from fastnn import cli, nn

    model = tmp_path / "m.safetensors"
    nn.Sequential(nn.Dense(4, 2)).save(model)
    before = model.read_bytes()
    for given in (str(model), str(tmp_path / "." / "m.safetensors")):
        assert cli.main(["export", str(model), "--onnx", given]) == 1
        assert "is MODEL itself" in capsys.readouterr().err
    assert model.read_bytes() == before


def test_cli_train_refuses_a_plot_that_would_replace_its_saved_model(tmp_path, capsys):
    """An attack: --save m.png --plot m (--plot adds .png) wrote the model, then the curves
    over it, reporting both saved, exit 0."""
    pytest.importorskip("matplotlib")
    from fastnn import cli

    model = tmp_path / "m.png"
    for plot in (str(model), str(tmp_path / "m"), str(tmp_path / "." / "m.png")):
        assert cli.main(["train", "--data", "xor", "--epochs", "1", "--save", str(model),
                         "--plot", plot]) == 1
        out, err = capsys.readouterr()
        assert "the file --save names" in err and plot in err and "Epoch" not in out, err
    assert not model.exists()


def test_cli_train_saves_no_diverged_model_and_exits_1(tmp_path, capsys):
    """Found by an attack: with --lr 1e9 training stopped on NaN weights, and the command
    then saved them, said so and exited 0 (fit's own checkpoints skip a broken model)."""
    from fastnn import cli

    model = tmp_path / "m.safetensors"
    assert cli.main(["train", "--data", "xor", "--epochs", "3", "--optimizer", "sgd",
                     "--lr", "1e9", "--save", str(model)]) == 1
    out, err = capsys.readouterr()
    assert "not saved" in err and "diverged" in err and "saved the model" not in out
    assert not model.exists()
    assert cli.main(["train", "--data", "xor", "--epochs", "1", "--save", str(model)]) == 0
    assert model.exists()


def test_cli_names_its_own_flags_and_checks_augment_before_loading(capsys):
    """Found by an attack: --data-path on a bundled set was refused in the API's words
    ("path="), and an --augment too large for the images failed after the data loaded and
    the summary printed, in Augment's words."""
    from fastnn import cli

    assert cli.main(["train", "--data", "digits", "--data-path", "/nowhere", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "--data-path applies to the sets read from files" in err and "path=" not in err
    assert cli.main(["train", "--data", "digits", "--augment", "8,0", "--epochs", "1"]) == 1
    out, err = capsys.readouterr()
    assert "--augment: Augment: max_shift=8.0" in err and "Total params" not in out, out
