"""Every script in examples/ runs with --quick: exit status 0, its result table printed,
its figures written (non-empty PNG files) into the --out directory given.

Each example runs in its own Python process, as a learner would run it. The checks on
the printed output look for each table's header and for the lesson's result where a
--quick run already shows it (XOR needs the hidden layer, a too-large learning rate
diverges, a deep sigmoid network's gradients vanish). The Fashion-MNIST accuracy claim
(>= 88% in 10 epochs) and the CNN's (>= 92% in 5) need full runs: tests marked slow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Case:
    """What one example needs and must produce."""

    def __init__(self, datasets: tuple[str, ...], patterns: list[str], figures: list[str]):
        self.datasets = datasets
        self.patterns = patterns  # regular expressions, each matched against some line
        self.figures = figures


CASES = {
    "01_neuron_and_activations.py": Case(
        (), [r"^x1\s+x2\s+x3\s+z = w\.x \+ b\s+y = f\(z\)\s+dy/dz$",
             r"^activation\s+f\(x\)\s+f\(-2\)\s+f\(0\)\s+f\(2\)\s+f'\(-2\)\s+f'\(0\)\s+f'\(2\)",
             *(rf"^{name}\s" for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu",
                                          "gelu", "softplus"))],
        ["activations.png"]),
    "02_xor_depth.py": Case(
        (), [r"^model\s+params\s+loss\s+p\(y=1\) per point\s+accuracy \(tie 1/2\)\s+"
             r"seeds at 100%$",
             # four ties, half a point each: chance, whatever float noise makes of the
             # logits (evaluate's argmax had said 25, 50 or 75%)
             r"^single layer \(2 -> 2\)\s+6\s+0\.693\d\s+0\.50 0\.50 0\.50 0\.50\s+"
             r"50%\s+0/\d+$",
             r"^hidden layer \(2 -> 4 tanh -> 2\)\s+22\s+\S+\s+0\.00 1\.00 1\.00 0\.00\s+100%\s+"
             r"(\d+)/\1$"],
        ["xor_decision_boundaries.png"]),
    "03_gradient_descent_variants.py": Case(
        ("mnist-5k",),
        [r"^variant\s+batch\s+updates/epoch\s+updates\s+train loss\s+test acc\s+time \(s\)",
         r"^batch GD\s+all\s+1\s", r"^stochastic GD\s+1\s+1000\s", r"^mini-batch GD\s+32\s+32\s"],
        ["gradient_descent_variants.png"]),
    "04_deeper_wider_mnist5k.py": Case(
        ("mnist-5k",),
        [r"^network\s+hidden layers\s+params\s+train acc\s+test acc\s+gap\s+time \(s\)$",
         r"^784-32-10\s+1\s+25,450\s", r"^784-128-128-128-128-10\s+4\s+151,306\s",
         r"^784-512-512-10\s+2\s+669,706\s", r"^Total params: 151,306$"],
        ["deeper_wider_mnist5k.png"]),
    "05_fashion_mnist_mlp.py": Case(
        ("fashion-mnist",),
        [r"^epoch\s+lr\s+loss\s+accuracy\s+val_loss\s+val_accuracy\s+time \(s\)$",
         r"^\s+2\s+\S+\s+\d\.\d{4}\s+\d+\.\d\d%", r"^class\s+images\s+accuracy\s+most often",
         r"^Ankle boot\s+1000\s", r"^test accuracy: \d+\.\d\d% \(target 88%"],
        ["fashion_mnist_curves.png", "fashion_mnist_confusion.png", "fashion_mnist_samples.png"]),
    "06_learning_rates.py": Case(
        ("mnist-5k",),
        [r"^optimizer\s+lr\s+batch\s+val acc\s+best val\s+train loss\s+epoch>=90%\s+time\s+status$",
         r"^sgd\s+0\.1\s+32\s.*\sok$", r"^sgd\s+1\s+32\s.*\sdiverged$",
         r"^1\s+.*too large: the loss overflowed \(diverged\)$", r"NaN/Inf after \d+ updates",
         r"^steepest fall of the smoothed loss \(fastnn's suggested_lr\)\s+\S+$"],
        ["learning_rates.png", "learning_rates_first_epoch.png", "lr_range_test.png"]),
    "07_optimizers.py": Case(
        ("fashion-mnist",),
        [r"^optimizer\s+lr\s+update$",
         r"^optimizer\s+lr\s+batch\s+val acc\s+best val\s+train loss\s+epoch>=85%\s+time\s+status$",
         *(rf"^{name}\s+{lr}\s+32\s.*\sok$" for name, lr in (
             ("sgd", "0.1"), ("momentum", "0.01"), ("nesterov", "0.01"), ("adagrad", "0.03"),
             ("rmsprop", "0.001"), ("adam", "0.001"), ("adamw", "0.001")))],
        ["optimizers.png"]),
    "08_vanishing_gradients.py": Case(
        ("mnist-5k",),
        [r"^network\s+activation\s+init\s+first layer\s+last layer\s+last/first",
         r"^sigmoid_normal\s+sigmoid\s+normal\s+\S+\s+\S+\s+\d\.\d\de\+0[2-9]\s.*\syes$",
         r"^relu_he\s+relu\s+he_normal\s.*\sno$",
         r"^  sigmoid_normal: GradientWarning: vanishing gradients in epoch 1",
         r"^  relu_he: \(none\)$", r"^layer\s+sigmoid_normal\s+sigmoid_glorot\s+relu_he$"],
        ["gradient_flow_sigmoid_normal.png", "gradient_flow_relu_he.png",
         "gradient_norm_by_layer.png"]),
    "09_overfitting_cures.py": Case(
        ("mnist-5k",),
        [r"^variant\s+train acc\s+val acc\s+acc gap\s+train loss\s+val loss\s+loss gap",
         *(rf"^{re.escape(name)}\s+\d+\.\d\d%\s+\d+\.\d\d%\s+[+-]\d+\.\d\d%\s" for name in (
             "no regularisation", "L2 (5e-3)", "dropout (0.2, 0.5)", "augmentation",
             "all three")),
         r"^final train-validation loss gap: "],
        ["overfitting_cures.png"]),
    "10_cnn_fashion_mnist.py": Case(
        ("fashion-mnist",),
        [r"^model\s+params\s+s/epoch\s+val acc\s+test acc$",
         r"^MLP 784-512-256-10\s+535,818\s+\d+\.\d\s+\d+\.\d\d%\s+\d+\.\d\d%$",
         r"^CNN 2x\(conv-conv-pool\), 128\s+468,010\s+\d+\.\d\s+\d+\.\d\d%\s+\d+\.\d\d%$",
         r"^1: Conv2d\(1, 32, kernel_size=3, padding='same', bias=False\)\s+\(None, 32, 28, 28\)",
         r"^the CNN's most frequent mistake: \S.* taken for \S.* \(\d+ times\)$",
         r"^CNN test accuracy: \d+\.\d\d% \(target 92% in 5 epochs"],
        ["cnn_curves.png", "cnn_first_layer_filters.png", "cnn_feature_maps.png",
         "cnn_confusion.png"]),
    "11_cnn_batchnorm.py": Case(
        ("fashion-mnist",),
        [r"^network\s+loss epoch 1\s+final loss\s+val acc\s+s/epoch\s+warnings$",
         r"^plain\s+\d\.\d{4}\s+\d\.\d{4}\s+\d+\.\d\d%\s", r"^batch norm\s+\d\.\d{4}\s",
         r"^conv\s+plain\s+batch norm$", r"^6\s+\S+\s+\S+$",
         r"^batch norm: first/last convolution gradient norm \S+$"],
        ["cnn_batchnorm.png"]),
}


def run_example(script: str, out: Path, *args: str, timeout: float = 180) -> str:
    """Run examples/<script> with --out and args; return its stdout (fail on a non-zero
    exit, showing stderr)."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=out.parent)
    assert proc.returncode == 0, (f"{script} {' '.join(args)} exited with {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


def skip_unless_available(case: Case) -> None:
    pytest.importorskip("matplotlib")
    for name in case.datasets:
        if not fastnn.datasets.is_available(name):
            pytest.skip(f"dataset {name!r} is not available here: "
                        f"{fastnn.datasets.info(name).how_to_get}")


def test_every_example_has_a_case_and_a_readme_line():
    scripts = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert scripts == sorted(CASES), "an example without a test case, or a case without example"
    readme = (EXAMPLES / "README.md").read_text()
    missing = [s for s in scripts if f"examples/{s}" not in readme]
    assert not missing, f"examples/README.md does not give the command of {missing}"


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs_quick(script, tmp_path):
    case = CASES[script]
    skip_unless_available(case)
    out = tmp_path / "figures"
    stdout = run_example(script, out, "--quick", "--seed", "0")
    lines = stdout.splitlines()
    for pattern in case.patterns:
        assert any(re.search(pattern, line) for line in lines), \
            f"{script}: no line of the output matches {pattern!r}; output:\n{stdout}"
    for name in case.figures:
        path = out / name
        assert path.is_file(), f"{script} did not write {name}; {out} holds " \
                               f"{sorted(p.name for p in out.iterdir()) if out.exists() else []}"
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), f"{path} is not a PNG image"
    written = {p.name for p in out.iterdir()}
    assert written == set(case.figures), f"{script} wrote {sorted(written)}"


@pytest.mark.parametrize("script, args, words", [
    ("02_xor_depth.py", ["--seed", "-1"], "argument --seed"),
    ("03_gradient_descent_variants.py", ["--lr", "0"], "argument --lr"),
    ("03_gradient_descent_variants.py", ["--lr", "nan"], "argument --lr"),
    # passed a "> 0" check, then failed in the optimizer with a traceback: its own check now
    ("03_gradient_descent_variants.py", ["--lr", "1e-300"], "argument --lr: lr must be > 0 and "
                                                             "at least 1.175e-38"),
    ("11_cnn_batchnorm.py", ["--lr", "1e-300"], "argument --lr: lr must be > 0"),
    ("11_cnn_batchnorm.py", ["--lr", "1e39"], "argument --lr: lr must be at most 3.403e+38"),
    ("04_deeper_wider_mnist5k.py", ["--epochs", "0"], "argument --epochs"),  # had meant 20
    ("01_neuron_and_activations.py", ["--out", "{file}"], "argument --out"),
    ("01_neuron_and_activations.py", ["--out", "/proc"], "argument --out"),  # takes no file
])
def test_example_options_out_of_range_are_usage_errors(script, args, words, tmp_path):
    """They had ended in a traceback after the parse (or, --epochs 0, run the default)."""
    (tmp_path / "a_file").write_text("")
    args = [a.replace("{file}", str(tmp_path / "a_file")) for a in args]
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_gradient_descent_example_says_when_the_variants_diverged(tmp_path):
    """Its conclusion ("more updates learn more") had been printed when every run diverged."""
    skip_unless_available(CASES["03_gradient_descent_variants.py"])
    out = run_example("03_gradient_descent_variants.py", tmp_path / "out", "--quick", "--lr", "1e6")
    assert re.search(r"^at lr 1000000\.0, .*diverged", out, re.MULTILINE), out
    assert "more updates learn more" not in out


def test_gradient_descent_example_reports_a_variant_fit_stopped_with_the_updates_it_ran(tmp_path):
    """An attack: at --lr 1e10 mini-batch GD turns NaN in epoch 1, fit stops before its
    on_epoch_end, and the rates divided by the recorded time, 0: a ZeroDivisionError; a
    variant stopped later had its rates divided by every planned epoch's updates."""
    skip_unless_available(CASES["03_gradient_descent_variants.py"])
    out = run_example("03_gradient_descent_variants.py", tmp_path / "out", "--quick", "--lr", "1e10")
    assert re.search(r"^mini-batch GD\s+32\s+32\s+32\s+nan\s", out, re.MULTILINE), out  # not 96
    assert re.search(r"^mini-batch GD: the loss or the weights became NaN/Inf in epoch 1 of 3; "
                     r"fit stopped there", out, re.MULTILINE), out
    assert re.search(r"^at lr 10000000000\.0, .*mini-batch GD.* diverged", out, re.MULTILINE), out


def test_cnn_batchnorm_example_says_when_no_gradient_reached_the_last_convolution(tmp_path):
    """An attack: at --lr 3 (seed 0) the plain network's ReLUs die, every gradient norm is 0,
    and first/last had been a ZeroDivisionError."""
    skip_unless_available(CASES["11_cnn_batchnorm.py"])
    out = run_example("11_cnn_batchnorm.py", tmp_path / "out", "--quick", "--lr", "3")
    assert re.search(r"^plain: (first/last convolution gradient norm \S+|no gradient reached "
                     r"the last convolution in the last epoch)", out, re.MULTILINE), out


def test_point_labels_of_close_points_do_not_overlap():
    """The deeper/wider figure's labels piled up where networks of similar size scored alike:
    _common.label_points moves each label clear of the others and of the points."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    sys.path.insert(0, str(EXAMPLES))
    try:
        from _common import label_points
    finally:
        sys.path.remove(str(EXAMPLES))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    xs, ys = [1.0e5, 1.05e5, 1.1e5, 1.2e5, 6e5], [0.836, 0.834, 0.835, 0.80, 0.88]
    ax.scatter(xs, ys, s=60)
    ax.set_xscale("log")
    notes = label_points(ax, xs, ys, [f"784-{k}-10 network" for k in range(len(xs))])
    fig.draw_without_rendering()
    boxes = [Text.get_window_extent(note) for note in notes]
    points = ax.transData.transform(np.column_stack([xs, ys]))
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1:]), f"label {i} overlaps"
        assert not any(box.overlaps(Bbox.from_extents(px - 3, py - 3, px + 3, py + 3))
                       for px, py in points), f"label {i} covers a point"


@pytest.mark.slow
def test_fashion_mnist_example_reaches_88_percent_in_10_epochs(tmp_path):
    """The claim of examples/05: >= 88% test accuracy after its 10 epochs (a full run)."""
    skip_unless_available(CASES["05_fashion_mnist_mlp.py"])
    stdout = run_example("05_fashion_mnist_mlp.py", tmp_path, "--seed", "0", timeout=600)
    epochs = re.findall(r"^\s+(\d+)\s+\d\.\d\de-\d\d\s", stdout, re.MULTILINE)
    assert epochs == [str(e) for e in range(1, 11)], stdout
    match = re.search(r"^test accuracy: (\d+\.\d\d)%", stdout, re.MULTILINE)
    assert match, stdout
    assert float(match.group(1)) >= 88.0, stdout


@pytest.mark.slow
def test_cnn_example_reaches_92_percent_in_5_epochs(tmp_path):
    """The claim of examples/10: the CNN reaches >= 92% test accuracy in 5 epochs (seed 0)."""
    skip_unless_available(CASES["10_cnn_fashion_mnist.py"])
    stdout = run_example("10_cnn_fashion_mnist.py", tmp_path, "--seed", "0", timeout=1200)
    match = re.search(r"^CNN test accuracy: (\d+\.\d\d)% \(target 92% in 5 epochs",
                      stdout, re.MULTILINE)
    assert match, stdout
    assert float(match.group(1)) >= 92.0, stdout
