"""The package's shape: what ``import fastnn`` loads, and no import cycle between its modules.

A cycle that works only through import order (nn.sequential importing train, which imports
diagnostics, which imports nn.module) breaks as soon as someone imports the modules in
another order; the graph of module-level imports is checked to be acyclic instead.
"""
import ast
import json
import sys
from pathlib import Path

import fastnn

from _ref import run_python

PACKAGE = Path(fastnn.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported: the module body, and the
    bodies of top-level try and if blocks except ``if TYPE_CHECKING:``."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)
        elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name)
                                               and node.test.id == "TYPE_CHECKING"):
            stack.extend(node.body + node.orelse)


def import_graph() -> dict[str, set[str]]:
    """fastnn module -> the fastnn modules its import runs (a submodule's packages too,
    except the importer's own, which are already being initialised)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files) | {"fastnn._C"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        if is_package:
            ancestors.add(name)
        targets = set()
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    root = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(root + ([base] if base else []))
                found = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if not target.startswith("fastnn"):
                    continue
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    t = ".".join(parts[:i])
                    if t in modules and t not in ancestors and t != name:
                        targets.add(t)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_fastnn_modules():
    graph = import_graph()
    assert graph["fastnn.diagnostics"] >= {"fastnn.nn", "fastnn.nn.module"}  # the graph sees packages
    cycle = find_cycle(graph)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# What `import fastnn` loads: the kernels, the layers and what a model needs to be built and
# stepped by hand. The training loop, its callbacks, metrics and diagnostics load with the
# first compile/fit; datasets, io, plotting, experiments and the optional packages on use.
EXPECTED_AT_IMPORT = {
    "fastnn", "fastnn._C", "fastnn._checks", "fastnn._random", "fastnn.data", "fastnn.init",
    "fastnn.losses", "fastnn.nn", "fastnn.nn.activations", "fastnn.nn.layers",
    "fastnn.nn.module", "fastnn.nn.sequential", "fastnn.optim", "fastnn.tuning",
}
NOT_AT_IMPORT = ["torch", "sklearn", "scipy", "matplotlib", "tqdm", "safetensors", "mpi4py"]


def test_import_fastnn_loads_what_it_should():
    out = run_python("import sys, json, fastnn\n"
                     "print(json.dumps(sorted(m for m in sys.modules "
                     "if m == 'fastnn' or m.startswith('fastnn.'))))\n"
                     f"print(json.dumps([m for m in {NOT_AT_IMPORT!r} if m in sys.modules]))")
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, optional = (json.loads(line) for line in out.stdout.splitlines()[-2:])
    assert set(loaded) == EXPECTED_AT_IMPORT, (sorted(set(loaded) - EXPECTED_AT_IMPORT),
                                               sorted(EXPECTED_AT_IMPORT - set(loaded)))
    assert optional == []


def test_training_methods_are_trains_functions():
    from fastnn import nn, train

    model = nn.Sequential(nn.Dense(2, 1))
    assert nn.Sequential.fit is train.fit
    assert model.fit.__func__ is train.fit and model.fit.__self__ is model
    assert model.compile.__doc__ == train.compile.__doc__
    assert "fastnn.train" in sys.modules
