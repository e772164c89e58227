"""The package's shape: what ``import fastnn`` loads, and no import cycle between its modules.

A cycle that works only through import order (nn.sequential importing train, which imports
diagnostics, which imports nn.module) breaks as soon as someone imports the modules in
another order; the graph of module-level imports is checked to be acyclic instead.
"""
import ast
import json
import sys

import numpy as np
import pytest
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
    "fastnn", "fastnn._C", "fastnn._checks", "fastnn._device", "fastnn._random", "fastnn.data",
    "fastnn.functional", "fastnn.nn.autograd",
    "fastnn.init", "fastnn.losses", "fastnn.memory", "fastnn.nn.conv", "fastnn.nn.normalization",
    "fastnn.nn.pooling", "fastnn.nn", "fastnn.nn.activations", "fastnn.nn.layers",
    "fastnn.nn.module", "fastnn.nn.sequential", "fastnn.optim", "fastnn.precision", "fastnn.tensor",
    "fastnn.tuning",
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


# ----------------------------------------------------------------------------- one source per fact
def _stub_literal(name: str) -> set[str]:
    tree = ast.parse((PACKAGE / "_C.pyi").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return {elt.value for elt in node.value.slice.elts}
    raise AssertionError(f"{name} not in _C.pyi")


def test_activation_table_is_the_one_the_stubs_and_layers_use():
    from fastnn import _C, nn
    from _ref import act_forward

    table = _C.activations()
    assert _stub_literal("ActivationName") == set(table)
    assert table["linear"]["canonical"] == "identity" and table["gelu"]["backward_needs_input"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    for name, info in table.items():
        layer = nn.Dense(3, 4, activation=name)
        assert layer.activation == info["canonical"]
        assert layer.init is None
        z = x.astype(np.float64) @ layer.weight.data.T.astype(np.float64) + layer.bias.data
        np.testing.assert_allclose(layer(x), act_forward(info["canonical"], z, info["alpha"]),
                                   rtol=2e-5, atol=2e-6, err_msg=name)


def test_augment_stream_width_is_the_kernels():
    """Image i of a call reads the stream at offset + i * AUGMENT_STREAM_PER_IMAGE: one call
    over two images equals two calls, the second at that offset."""
    from fastnn import _C

    x = np.random.default_rng(1).random((2, 6, 6)).astype(np.float32)
    kw = dict(seed=7, max_shift=2.0, flip=True, max_rotation=20.0, noise_std=0.1)
    both = _C.augment_images(x, offset=5, **kw)
    second = _C.augment_images(x[1:], offset=5 + _C.AUGMENT_STREAM_PER_IMAGE, **kw)
    np.testing.assert_array_equal(both[1:], second)
    assert _C.AUGMENT_STREAM_PER_IMAGE == 8


# ----------------------------------------------------------------------------- _C.pyi against _C
def _split_top(text: str) -> list[str]:
    """Split at the commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + ([cur.strip()] if cur.strip() else [])


def _bound_signature(fn) -> list[list[tuple[str, bool, str | None]]]:
    """Per overload, [(name, keyword-only, default's repr or None)], from the signature lines
    pybind11 writes at the top of the docstring ("1. name(...)" for overloads)."""
    sigs = []
    for line in fn.__doc__.splitlines():
        if line[:1].isdigit() and f". {fn.__name__}(" in line:
            line = line.split(". ", 1)[1]
        if not line.startswith(fn.__name__ + "("):
            continue
        params, kwonly = [], False
        for p in _split_top(line[len(fn.__name__) + 1: line.rindex(") -> ")]):
            if p == "*":
                kwonly = True
                continue
            name, _, rest = p.partition(":")
            params.append((name.strip(), kwonly, rest.split(" = ", 1)[1] if " = " in rest else None))
        sigs.append(params)
    return sigs


def _stub_signatures() -> dict[str, list[list[tuple[str, bool, ast.expr | None]]]]:
    out: dict[str, list] = {}
    for node in ast.parse((PACKAGE / "_C.pyi").read_text()).body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            pos = a.posonlyargs + a.args
            defaults = [None] * (len(pos) - len(a.defaults)) + a.defaults
            params = [(x.arg, False, d) for x, d in zip(pos, defaults)]
            params += [(x.arg, True, d) for x, d in zip(a.kwonlyargs, a.kw_defaults)]
            out.setdefault(node.name, []).append(params)
    return out


def _same_default(bound: str | None, stub: ast.expr | None) -> bool:
    if bound is None or stub is None:
        return bound is None and stub is None
    if isinstance(stub, ast.Constant) and stub.value is Ellipsis:
        return True
    expected = ast.literal_eval(stub)
    try:
        got = ast.literal_eval(bound)
    except (ValueError, SyntaxError):  # a repr that is not a literal
        return str(expected) == bound
    if isinstance(expected, float) or isinstance(got, float):
        return np.float32(expected) == np.float32(got)  # pybind prints 0.01f as 0.0099999...
    return expected == got


def test_stubs_match_the_bound_signatures():
    """Every bound function is in _C.pyi with the same parameters in the same order, the same
    keyword-only ones and the same defaults (float32-equal for floats); every stubbed name
    exists; and the stub's module constants are bound."""
    from fastnn import _C

    stubs = _stub_signatures()
    bound = [n for n in dir(_C) if type(getattr(_C, n)).__name__ == "builtin_function_or_method"]
    problems = [f"{n}: in _C.pyi, not bound" for n in stubs if n not in bound]
    for n in bound:
        if n not in stubs:
            problems.append(f"{n}: bound, not in _C.pyi")
            continue
        b, s = _bound_signature(getattr(_C, n)), stubs[n]
        if len(b) != len(s):
            problems.append(f"{n}: {len(b)} signatures bound, {len(s)} in the stub")
            continue
        for bp, sp in zip(b, s):
            if [x[:2] for x in bp] != [x[:2] for x in sp]:
                problems.append(f"{n}: bound {[x[:2] for x in bp]}, stub {[x[:2] for x in sp]}")
                continue
            problems += [f"{n}({name}): default bound {bd}, stub {ast.unparse(sd) if sd else None}"
                         for (name, _, bd), (_, _, sd) in zip(bp, sp) if not _same_default(bd, sd)]
    tree = ast.parse((PACKAGE / "_C.pyi").read_text())
    problems += [f"{node.target.id}: in _C.pyi, not bound" for node in tree.body
                 if isinstance(node, ast.AnnAssign) and not hasattr(_C, node.target.id)]
    assert bound and not problems, "\n".join(problems)


# Layers, losses, optimizers and initialisers allocate through fastnn.memory (aligned, and
# on the device of the arrays they work with), never with NumPy's constructors.
NUMPY_ALLOCATORS = {"empty", "zeros", "ones", "full", "array", "asarray", "ascontiguousarray",
                    "empty_like", "zeros_like", "ones_like", "full_like", "concatenate", "stack"}
ALLOCATING_THROUGH_MEMORY = ["nn/module.py", "nn/layers.py", "nn/activations.py",
                             "nn/sequential.py", "nn/conv.py", "nn/pooling.py",
                             "nn/normalization.py", "optim.py", "losses.py", "init.py",
                             "_checks.py"]


@pytest.mark.parametrize("path", ALLOCATING_THROUGH_MEMORY)
def test_layers_and_optimizers_allocate_through_memory(path):
    tree = ast.parse((PACKAGE / path).read_text())
    calls = sorted({f"np.{node.func.attr} (line {node.lineno})" for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "np"
                    and node.func.attr in NUMPY_ALLOCATORS})
    assert not calls, f"fastnn/{path} allocates with NumPy: {calls}; use fastnn.memory"


def test_memory_arrays_are_aligned_and_owned():
    from fastnn import memory

    for shape, dtype in [((0,), np.float32), ((3, 5), np.float32), (7, np.int64), ((2, 3, 4), np.uint8)]:
        a = memory.empty(shape, dtype)
        assert memory.is_aligned(a) and a.flags.c_contiguous and a.dtype == dtype
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
        assert memory.owner(a).base is None and np.shares_memory(memory.owner(a), a) or a.size == 0
    np.testing.assert_array_equal(memory.zeros((2, 3)), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(memory.full(4, 2.5), np.full(4, 2.5, np.float32))
    x = np.arange(6, dtype=np.float32)
    assert memory.asarray(x) is x                                  # used where it is
    assert memory.asarray(x, copy=True) is not x and memory.is_aligned(memory.asarray(x, copy=True))
    y = memory.asarray(x[::2])                                     # not contiguous: copied
    assert y.flags.c_contiguous and memory.is_aligned(y)
    np.testing.assert_array_equal(y, x[::2])
    assert memory.device_of(x) == "cpu" and memory.to_host(x) is x
    with pytest.raises(ValueError, match="shape"):
        memory.empty((2, -1))
    with pytest.raises(RuntimeError, match="FASTNN_CUDA"):
        memory.empty(3, device="cuda")


def test_parameters_optimizer_state_and_workspace_are_aligned():
    from fastnn import memory, nn, optim

    model = nn.Sequential(nn.Dense(7, 5, activation="relu"), nn.Dense(5, 3), nn.Dense(3, 9))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    arrays = [a for p in model.parameters() for a in (p.data, p.grad)]
    arrays += [a for state in opt.state for a in state.values()]
    assert all(memory.is_aligned(a) for a in arrays)
    model(np.ones((4, 7), np.float32))
    model.backward(np.ones((4, 9), np.float32))
    opt.step()
    reused = model._workspace.arrays()
    assert reused and all(memory.is_aligned(a) for a in reused)
