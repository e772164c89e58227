"""Every notebook in notebooks/ runs top to bottom, in its short setting, without an error.

Each notebook opens with one install cell (tagged "install": a ``%pip install`` of the
clone with extras) and a parameters cell (tagged "parameters") setting ``QUICK = False``.
The test does not run the install cell (the package is installed already; its extras and
path are checked instead, as tests/test_readme.py checks the README's), and runs a cell
``QUICK = True`` right after the parameters cell. The kernel is this interpreter's
(ipykernel in its environment), with the fastnn this test imports first on its path, and
runs in a temporary directory; the modules of the extras the install cell does not name
are stubbed to raise ImportError, as they would be missing for a learner who ran just that
cell. Committed notebooks carry no outputs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import fastnn
from test_readme import check_pip_install, child_env, extras_of, newcomer_blocker, pip_args

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
LECTURE = ["neuron", "xor", "gradient_descent", "vanishing", "overfitting"]
EXERCISES = 4


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def tagged(nb: dict, tag: str) -> list[int]:
    return [i for i, cell in enumerate(nb["cells"])
            if tag in cell.get("metadata", {}).get("tags", [])]


def test_a_notebook_per_exercise_and_lecture_idea():
    names = [p.stem for p in PATHS]
    assert len([n for n in names if n.startswith("exercise_")]) == EXERCISES, names
    for idea in LECTURE:
        assert any(idea in n for n in names), f"no notebook on {idea!r}: {names}"
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"README.md's Notebooks section does not name {missing}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_valid(path):
    """nbformat v4, no outputs or execution counts, one install cell first among the code
    cells and then the parameters cell."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    for i in code:
        cell = nb.cells[i]
        assert not cell.outputs and cell.execution_count is None, \
            f"{path.name}: cell {i} has outputs or an execution count: strip them " \
            "(jupyter nbconvert --clear-output --inplace)"
    installs = [i for i in code if "%pip" in nb.cells[i].source or "!pip" in nb.cells[i].source]
    assert tagged(nb, "install") == installs == code[:1], \
        f"{path.name}: the first code cell, and only it, installs, tagged 'install'"
    commands = [line for line in nb.cells[installs[0]].source.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 1, f"{path.name}: the install cell runs {commands}"
    args = pip_args(commands[0])
    assert args is not None, f"{path.name}: {commands[0]!r} is not a %pip install"
    check_pip_install(args, NOTEBOOKS)  # Jupyter runs a notebook in its own folder
    assert tagged(nb, "parameters") == code[1:2], \
        f"{path.name}: the second code cell, tagged 'parameters', sets QUICK"
    assert "QUICK = False" in nb.cells[code[1]].source.splitlines()


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A Jupyter data folder whose one kernel spec runs this interpreter's ipykernel, so
    that neither another Python's 'python3' kernel nor a user's kernels are picked up."""
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "fastnn-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fastnn test", "language": "python"}))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, kernel_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for name in read(path).get("metadata", {}).get("fastnn", {}).get("datasets", []):
        if not fastnn.datasets.is_available(name):
            pytest.skip(f"dataset {name!r} is not available here: "
                        f"{fastnn.datasets.info(name).how_to_get}")
    nb = nbformat.read(path, as_version=4)
    install = nb.cells[tagged(nb, "install")[0]].source.splitlines()
    extras = extras_of(pip_args(next(line for line in install if line.startswith("%pip"))))
    nb.cells = [cell for i, cell in enumerate(nb.cells) if i not in tagged(nb, "install")]
    at = tagged(nb, "parameters")[0] + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell("QUICK = True  # injected by the test"))
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    # Only what the install cell names (and the kernel) can be imported.
    for name, value in child_env(newcomer_blocker(tmp_path, extras, ("ipykernel",))).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MPLBACKEND")  # the notebooks' %matplotlib inline picks the backend
    client = nbclient.NotebookClient(nb, kernel_name="fastnn-test", timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        failure = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # no terminal colours
    if failure:  # reported outside the except clause: pytest then omits the coloured original
        pytest.fail(f"{path.name}: a cell failed\n{failure}")
    images = sum(1 for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.get("outputs", []) if "image/png" in out.get("data", {}))
    assert images >= 1, f"{path.name}: no figure was shown inline"
