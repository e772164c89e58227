"""README.md and examples/README.md are tests: every command and code block they show runs,
so that none can fail for a newcomer who copies it.

What runs, and the only changes made to it:

- Python blocks run as written, one file's blocks in order in one fresh interpreter (a later
  block uses the names of an earlier one, as a reader's session would), in a temporary
  directory, matplotlib on Agg. PYTHON_SUBSTITUTIONS shortens the training (each one must
  match, so that a stale one fails).
- Shell blocks run line by line in a temporary directory. ``fastnn ...`` runs as
  ``python -m fastnn ...`` (the same entry point; that the console script is declared is
  checked) and ``python`` is this interpreter; paths under examples/ are the repository's.
  ``fastnn train`` and ``fastnn compare`` get ``--epochs 1`` (replacing any ``--epochs N``)
  and ``--data mnist-5k`` in place of ``--data fashion-mnist`` (one epoch of its 60,000
  images is most of a minute for the CNN); example scripts get ``--quick`` (as the README
  says) and ``--out`` into the temporary directory.
- ``pip install`` cannot run here: the extras it names must exist in pyproject.toml and the
  local path it installs must hold a pyproject.toml; other requirements must be well-formed.
  This holds for inline ``pip install`` spans in the prose too.
- Every command and block runs as for a newcomer who installed only what README.md's first
  ``pip install`` names: the modules of the other extras' packages that this install does
  not bring (with their dependencies, as installed here) are stubbed out to raise
  ImportError (newcomer_blocker), so that a command needing another extra fails here too.
- A command in EXCUSED is not run, each for the reason given there; a block or command that
  is neither runnable by the rules above nor excused fails the test.

examples/README.md gives each script's command inline; tests/test_examples.py runs every
one of them with --quick (and checks that the README names each), so they are checked here
only to name an existing script that that test covers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "examples" / "README.md"]

# (pattern, replacement): applied to the Python blocks, each must match at least once.
PYTHON_SUBSTITUTIONS = [
    (r"\bepochs=\d+", "epochs=2"),                            # model.fit(..., epochs=30)
    (r"for epoch in range\(\d+\)", "for epoch in range(1)"),  # the training loop by hand
]

# Commands shown but not run here, each with the reason.
EXCUSED = {
    "python -m pytest -q": "runs this whole suite, of which this test is a part",
    "sudo apt-get install dataset-fashion-mnist": "installs a system package; the tests that "
        "need Fashion-MNIST skip without it, and .ci/run installs it",
    "python -m pytest tests/test_examples.py": "runs a test file of this suite",
    "jupyter notebook notebooks/": "opens a browser; tests/test_notebooks.py executes every "
        "notebook",
    "bash scripts/wheel_smoke.sh dist": "builds, repairs and installs a wheel (a minute or more); "
        ".ci/run runs it",
}

TRAINING = {"train", "compare"}
SLOW_SECONDS = 3.0  # a command expected to take longer is marked slow (CI still runs it)


# ----------------------------------------------------------------------------- parsing
def fenced_blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, first line number, text) of every fenced block of a Markdown file: ```
    or ~~~, indented under a list item too (the indent removed), an info string after the
    language ignored."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^( *)(```|~~~)\s*([^\s{]*)", lines[i])
        if match:
            indent, fence = match.group(1), match.group(2)
            end = next(j for j in range(i + 1, len(lines))
                       if lines[j].lstrip().startswith(fence))
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                    for line in lines[i + 1:end]]
            blocks.append((match.group(3), i + 2, "\n".join(body)))
            i = end
        i += 1
    return blocks


def inline_spans(path: Path) -> list[str]:
    """Every `inline code` span outside the fenced blocks."""
    text = re.sub(r"^ *(```|~~~).*?^ *\1", "", path.read_text(), flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", text)


def shell_commands(text: str) -> list[str]:
    """A shell block's commands: one a line (a trailing backslash continues it), comments
    dropped."""
    commands, pending = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        # Quoted again, so that a quoted argument stays one ("&&" stays the separator).
        command = " ".join(w if w == "&&" else shlex.quote(w)
                           for w in shlex.split(pending + line, comments=True))
        pending = ""
        if command:
            commands.append(command)
    return commands


def distribution_name() -> str:
    """The name pip installs fastnn under (pyproject.toml's [project] name)."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^\[project\]\n(?:.*\n)*?name\s*=\s*"([^"]+)"', text, re.M).group(1)


def pyproject() -> tuple[dict[str, list[str]], set[str]]:
    """The extras (name -> requirements) and the console scripts pyproject.toml declares
    (read with regular expressions: tomllib is Python 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text()

    def section(name: str) -> str:
        body = re.search(rf"^\[{re.escape(name)}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
        assert body, f"pyproject.toml has no [{name}] section"
        return body.group(1)
    extras = {name: re.findall(r'"([^"]+)"', reqs) for name, reqs in
              re.findall(r"^([A-Za-z0-9_.-]+)\s*=\s*\[(.*?)\]", section(
                  "project.optional-dependencies"), re.M | re.S)}
    return extras, set(re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section("project.scripts"), re.M))


# ----------------------------------------------------------------------------- pip install
def check_pip_install(args: list[str], base: Path) -> None:
    """What ``pip install args`` (run in ``base``) names exists: local paths with a
    pyproject.toml, their extras in it; fastnn under its distribution name (never ``fastnn``,
    another project's on PyPI), from PyPI or ``name[extras] @ git+URL``, with extras that exist;
    other requirements well-formed."""
    extras, _ = pyproject()
    ours = distribution_name()
    targets = [a for a in args if not a.startswith("-")]
    assert targets, f"pip install {' '.join(args)}: installs nothing"
    for target in targets:
        target = re.sub(r"\s*@\s*git\+\S+$", "", target)  # a git URL: what it names is checked
        match = re.fullmatch(r"([^\[\]]+?)(?:\[([^\]]*)\])?", target)
        assert match, f"pip install {target!r}: not a requirement or a path"
        where, named = match.group(1), match.group(2)
        assert _normal(where) != "fastnn", \
            f"pip install {target!r} installs another project (PyPI's fastnn); ours is {ours!r}"
        if where.startswith(".") or _normal(where) == _normal(ours):
            assert not where.startswith(".") or (base / where / "pyproject.toml").is_file(), \
                f"pip install {target!r}: {(base / where).resolve()} holds no pyproject.toml"
            unknown = sorted({e.strip() for e in (named or "").split(",")} - set(extras) - {""})
            assert not unknown, (f"pip install {target!r}: pyproject.toml has no extra "
                                 f"{unknown}; it declares {sorted(extras)}")
        else:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,-]+\])?"
                                r"((==|>=|<=|~=|>|<)[\w.*+!-]+)?", target), \
                f"pip install {target!r}: not a well-formed requirement"


def pip_args(command: str) -> list[str] | None:
    """The arguments of a ``pip install`` / ``python -m pip install`` / ``%pip install``
    command, or None for another command."""
    words = shlex.split(command)
    for prefix in (["pip", "install"], ["%pip", "install"], ["pip3", "install"],
                   ["python", "-m", "pip", "install"]):
        if words[:len(prefix)] == prefix:
            return words[len(prefix):]
    return None


# ----------------------------------------------------------------------------- running
def runnable(command: str, tmp: Path) -> tuple[list[str], float]:
    """The argv that runs ``command`` here (see the module docstring) and its expected
    seconds, or an AssertionError saying why it cannot run."""
    words = shlex.split(command)
    if words[0] == "fastnn":
        _, scripts = pyproject()
        assert "fastnn" in scripts, "the README runs `fastnn`, pyproject.toml declares no " \
                                    "such console script"
        words = ["python", "-m", "fastnn", *words[1:]]
    assert words[0] in ("python", "python3"), \
        f"{command!r}: neither run by this test's rules nor in EXCUSED"
    argv, seconds = [sys.executable, *words[1:]], 1.0
    if argv[1:3] == ["-m", "fastnn"] and len(argv) > 3 and argv[3] in TRAINING:
        if "--epochs" in argv:
            argv[argv.index("--epochs") + 1] = "1"
        else:
            argv += ["--epochs", "1"]
        if "--data" in argv and argv[argv.index("--data") + 1] == "fashion-mnist":
            argv[argv.index("--data") + 1] = "mnist-5k"
        if "--model" in argv or "--conv" in argv:
            seconds = 5.0
    elif len(argv) > 1 and argv[1].startswith("examples/"):
        script = ROOT / argv[1]
        assert script.is_file(), f"{command!r}: {script} does not exist"
        argv[1:2] = [str(script)]
        argv += ["--quick", "--out", str(tmp / "out")]
        seconds = 4.0
    return argv, seconds


def child_env(blocked: Path | None = None) -> dict[str, str]:
    """This environment, matplotlib on Agg, and the fastnn this test imported first on the
    path (a relative PYTHONPATH such as src would not hold in another directory); with
    ``blocked``, that folder of stubs (newcomer_blocker) ahead of everything."""
    path = [str(blocked or ""), str(Path(fastnn.__file__).resolve().parents[1]),
            os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(filter(None, path))}


# ----------------------------------------------------------------------------- a newcomer's install
def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _brought_by(requirements: list[str]) -> set[str]:
    """The distributions that installing ``requirements`` brings, with their dependencies
    as this environment's metadata declares them (their own extras left out)."""
    import importlib.metadata as metadata

    seen: set[str] = set()
    todo = [r for r in requirements if "extra ==" not in r]
    while todo:
        name = _normal(re.match(r"[A-Za-z0-9._-]+", todo.pop()).group(0))
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [r for r in metadata.requires(name) or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            pass
    return seen


def _import_names(distribution: str) -> set[str]:
    """The top-level modules an installed distribution provides (none if not installed)."""
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return set()
    top = dist.read_text("top_level.txt")
    if top:
        return set(top.split())
    names = {Path(f.parts[0]).stem for f in dist.files or [] if len(f.parts) > 0
             and not f.parts[0].endswith((".dist-info", ".data")) and f.parts[0] != ".."}
    return {n for n in names if n.isidentifier() and not n.startswith("__")}


def extras_of(args: list[str]) -> set[str]:
    """The extras that ``pip install args`` asks for on local paths (``.[data,plot]``)."""
    return {e.strip() for a in args if a.startswith(".")
            for e in (re.fullmatch(r"[^\[]*\[([^\]]*)\]", a) or [None, ""])[1].split(",")
            if e.strip()}


def newcomer_extras() -> set[str]:
    """The extras of README.md's first ``pip install``: what a newcomer has installed."""
    for language, _, text in fenced_blocks(ROOT / "README.md"):
        for command in shell_commands(text) if language != "python" else []:
            for part in command.split("&&"):
                args = pip_args(part.strip())
                if args is not None:
                    return extras_of(args)
    raise AssertionError("README.md installs nothing")


def newcomer_blocker(tmp: Path, chosen: set[str] | None = None, also: tuple[str, ...] = ()
                     ) -> Path:
    """A folder of stub packages, one for every module of an extra that README.md's first
    install (or the extras ``chosen``, and the packages ``also``) does not bring: put first
    on the path, a command runs as it would for a newcomer who installed just that
    (``import safetensors`` then raises ImportError)."""
    extras, _ = pyproject()
    chosen = newcomer_extras() if chosen is None else chosen
    allowed = _brought_by([r for e in chosen for r in extras[e]] + list(also))
    others = {_normal(re.match(r"[A-Za-z0-9._-]+", r).group(0))
              for e in extras if e not in chosen for r in extras[e]} - allowed
    folder = tmp / "not-installed"
    for distribution in others:
        for name in _import_names(distribution):
            (folder / name).mkdir(parents=True, exist_ok=True)
            message = (f"{name} ({distribution}) is not installed by the extras "
                       f"{sorted(chosen)}")
            (folder / name / "__init__.py").write_text(f"raise ImportError({message!r})\n")
    return folder


def run(argv: list[str], cwd: Path, timeout: float = 300) -> str:
    env = child_env(newcomer_blocker(cwd))
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(argv)} exited with {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n"
                                  f"{proc.stderr[-3000:]}")
    return proc.stdout


# ----------------------------------------------------------------------------- cases
def _commands() -> list:
    """One pytest param per shell command of the READMEs' fenced blocks."""
    params = []
    for readme in READMES:
        for language, line, text in fenced_blocks(readme):
            if language not in ("bash", "sh", "shell", "console"):
                continue
            for command in shell_commands(text):
                for part in (p.strip() for p in command.split("&&")):
                    name = f"{readme.relative_to(ROOT)}:{line}:{part}"
                    slow = False
                    if part not in EXCUSED and pip_args(part) is None:
                        try:
                            slow = runnable(part, Path("/nonexistent"))[1] > SLOW_SECONDS
                        except AssertionError:
                            pass  # reported by the test itself
                    marks = [pytest.mark.slow] if slow else []
                    params.append(pytest.param(readme, part, id=name, marks=marks))
    return params


def test_every_block_is_python_or_shell():
    """A block of another language would be neither run nor excused."""
    for readme in READMES:
        for language, line, _ in fenced_blocks(readme):
            assert language in ("python", "bash", "sh", "shell", "console"), \
                f"{readme.name}:{line}: a ```{language} block: this test runs only python " \
                f"and shell blocks"


def test_every_excuse_is_used():
    """An excuse for a command no README shows any more is removed."""
    shown = set()
    for readme in READMES:
        for language, _, text in fenced_blocks(readme):
            if language != "python":
                shown.update(p.strip() for c in shell_commands(text) for p in c.split("&&"))
        shown.update(inline_spans(readme))
    assert not set(EXCUSED) - shown, f"EXCUSED names commands no README shows: " \
                                     f"{sorted(set(EXCUSED) - shown)}"


def test_install_hints_name_this_distribution():
    """Every ``pip install`` that the package's messages, docstrings, benches, examples,
    notebooks and READMEs tell a user to type names this distribution (pyproject.toml's
    name, with extras it declares) or a local path: ``pip install "fastnn[io]"`` would fetch
    PyPI's unrelated fastnn. README.md says how to install from PyPI and from a git URL."""
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "bench").glob("*.py"),
             *(ROOT / "examples").rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb"), *READMES]
    hints = 0
    for path in files:
        text = path.read_text()
        for match in re.finditer(r"""pip install\s+(?:\\?"([^"\\\s]+)\\?"|'([^'\s]+)'|([^"'\s`),;]+))""",
                                 text):
            target = next(g for g in match.groups() if g)
            if not target.startswith("-"):
                # a path is relative to where it runs: a notebook's folder, else the clone
                check_pip_install([target], path.parent if path.suffix == ".ipynb" else ROOT)
                hints += 1
    assert hints > 10, f"found only {hints} install hints: is the pattern still right?"
    ours = distribution_name()
    shown = [pip_args(p.strip()) for language, _, text in fenced_blocks(ROOT / "README.md")
             if language != "python" for c in shell_commands(text) for p in c.split("&&")]
    named = [" ".join(a) for a in shown if a and any(_normal(re.split(r"[\[@ ]", t)[0]) ==
                                                     _normal(ours) for t in a)]
    assert any("@ git+" in a for a in named) and any("@" not in a for a in named), \
        f"README.md shows no `pip install {ours}` from PyPI and from a git URL: {named}"


@pytest.mark.parametrize("readme,command", _commands())
def test_shell_command(readme, command, tmp_path):
    if command in EXCUSED:
        return
    pip = pip_args(command)
    if pip is not None:
        check_pip_install(pip, ROOT)
        return
    argv, _ = runnable(command, tmp_path)
    run(argv, tmp_path)


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_commands(readme):
    """Inline ``pip install`` spans name extras and paths that exist; examples/README.md's
    script commands name scripts that tests/test_examples.py runs."""
    spec = importlib.util.spec_from_file_location("_readme_examples",
                                                  ROOT / "tests" / "test_examples.py")
    examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(examples)
    for span in inline_spans(readme):
        for part in (p.strip() for p in span.split("&&")):
            pip = pip_args(part) if part[:1].isalpha() or part.startswith("%") else None
            if pip is not None:
                check_pip_install(pip, ROOT)
            match = re.fullmatch(r"python examples/(\S+\.py)", part)
            if match and readme.parent.name == "examples":
                assert match.group(1) in examples.CASES, \
                    f"{readme.name}: `{part}` names a script tests/test_examples.py does not run"
            elif readme.parent.name == "examples" and re.match(r"(python|fastnn|sudo|pip)\s",
                                                                part):
                assert part in EXCUSED or pip is not None, \
                    f"{readme.name}: `{part}` is neither run by a test nor in EXCUSED"


# The runner of a README's Python blocks: each block in turn, in one namespace.
_RUNNER = """
import json, sys
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"--- block at line {line}", flush=True)
    exec(compile(code, f"README block at line {line}", "exec"), namespace)
"""


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks(readme, tmp_path):
    blocks = [(line, text) for language, line, text in fenced_blocks(readme)
              if language == "python"]
    if not blocks:
        return
    used = set()
    for i, (line, code) in enumerate(blocks):
        for pattern, replacement in PYTHON_SUBSTITUTIONS:
            code, n = re.subn(pattern, replacement, code)
            if n:
                used.add(pattern)
        blocks[i] = (line, code)
    if readme.name == "README.md" and readme.parent == ROOT:
        stale = [p for p, _ in PYTHON_SUBSTITUTIONS if p not in used]
        assert not stale, f"PYTHON_SUBSTITUTIONS that no longer match README.md: {stale}"
    env = child_env(newcomer_blocker(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(blocks),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"{readme.name}'s Python blocks failed\nstdout:\n"
                                  f"{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")


def test_substitutions_change_only_what_they_say():
    """The rewriting is minimal: the rules touch epochs, data and output options only."""
    tmp = Path("/tmp/x")
    argv, _ = runnable("fastnn train --data fashion-mnist --conv 32,64 --hidden 128 --epochs 5",
                       tmp)
    assert argv == [sys.executable, "-m", "fastnn", "train", "--data", "mnist-5k", "--conv",
                    "32,64", "--hidden", "128", "--epochs", "1"]
    argv, _ = runnable("fastnn datasets", tmp)
    assert argv == [sys.executable, "-m", "fastnn", "datasets"]
    argv, _ = runnable("python examples/02_xor_depth.py", tmp)
    assert argv == [sys.executable, str(ROOT / "examples" / "02_xor_depth.py"), "--quick",
                    "--out", str(tmp / "out")]
    assert fastnn.datasets.info("mnist-5k").image_shape == \
        fastnn.datasets.info("fashion-mnist").image_shape


def test_no_block_is_missed_and_quoting_is_kept(tmp_path):
    """A block indented under a list item, one fenced with ~~~ or with an info string after
    its language is still a block (skipping it would let it fail unseen), and a quoted
    argument stays one argument."""
    page = tmp_path / "page.md"
    page.write_text("1. Install:\n\n   ```bash\n   pip install .\n   ```\n\n"
                    "~~~python\nprint(1)\n~~~\n\n```python title=\"x.py\"\nprint(2)\n```\n")
    assert fenced_blocks(page) == [("bash", 4, "pip install ."), ("python", 8, "print(1)"),
                                   ("python", 12, "print(2)")]
    command, = shell_commands('python -c "import fastnn; print(1)"  # check')
    assert shlex.split(command) == ["python", "-c", "import fastnn; print(1)"]
    assert shell_commands("pip install . && fastnn datasets") == \
        ["pip install . && fastnn datasets"]
