"""Fuzz test: every public binding of fastnn._C, fastnn.matmul and every layer of fastnn.nn,
called with drawn dtypes (float32/64/16, ints, bool, complex, object, str), layouts
(transposed, negative strides, strided slices, broadcast, misaligned, read-only), sizes
around the kernels' vector and tile widths, NaN/Inf, aliased arguments and bad labels.

The property of every call: it raises TypeError, ValueError or MemoryError with a message
naming the offending argument, or it returns (and writes) what a float64 NumPy reference
gives, to float32 tolerance; a valid call must succeed. Never a crash, never garbage.

A crash must fail a test, not kill the suite: run under pytest, the hypothesis bodies run
in a child process (`python tests/test_fuzz.py NAME...`, which is also how to run them by
hand), and a test whose child dies fails with the signal, the call in progress and the
child's output; the remaining tests go on in a new child. scripts/sanitize.sh runs the
suite, and so these children, under ASan and UBSan. FASTNN_FUZZ_EXAMPLES (default 25) is
hypothesis' max_examples per test; the cases are the same each run unless FASTNN_FUZZ_RANDOM=1.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _C, nn

import _ref
from _ref import EPS32, bf16_round, names_argument
from _ref import augment_ref, dropout_ref, uniform_ref

EXAMPLES = int(os.environ.get("FASTNN_FUZZ_EXAMPLES", "25"))
# The same cases every run, so that CI fails for a change and not for a draw; the
# exploring run (FASTNN_FUZZ_RANDOM=1, with more examples) draws new ones each time.
RANDOM = os.environ.get("FASTNN_FUZZ_RANDOM") == "1"
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, print_blob=True,
                    suppress_health_check=list(HealthCheck))
FUZZ: dict = {}          # test name -> hypothesis test, run by the child
TRACE = os.environ.get("FASTNN_FUZZ_TRACE")  # the child writes the call in progress here

ACTS = ["identity", "linear", "sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu", "softplus"]
LIPSCHITZ = {"gelu": 1.13}   # max |f'| where it exceeds 1 (leaky_relu, elu: |alpha|)
REAL = ["float32"] * 8 + ["float64", "float16", "int8", "int32", "int64", "uint8", "bool"]
NOT_REAL = ["complex64", "object", "<U3"]
LAYOUTS = ["c"] * 6 + ["f", "neg", "slice", "broadcast", "misaligned", "readonly"]
TINY32 = float(np.finfo(np.float32).tiny)
HUGE = 2**35   # elements: "huge" is a broadcast view whose float32 copy cannot be allocated
# sizes around the vector widths (4, 8, 16 floats) and the tiles (6x16, 8x48, 64-wide rows)
SMALL = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65]
WIDE = st.one_of(st.integers(0, 130), st.integers(48, 64), st.sampled_from(SMALL))


# ----------------------------------------------------------------------------- the harness
def fuzz(**strategies):
    """Registers a hypothesis body for the child; pytest sees a test that reports the
    child's outcome for it."""
    def deco(body):
        FUZZ[body.__name__] = SETTINGS(given(**strategies)(body))

        def test(fuzz_outcomes):
            outcome = fuzz_outcomes(body.__name__)
            if outcome:
                pytest.fail(outcome, pytrace=False)

        test.__name__, test.__doc__ = body.__name__, body.__doc__
        return test
    return deco


def trace(what: str) -> None:
    """Record the call about to be made: if it crashes the child, the parent reports it."""
    if TRACE:
        with open(TRACE, "w") as f:
            f.write(what)


def _report(out: str) -> str:
    """The child's output from its first sanitizer or fatal-error line (else its tail)."""
    starts = [i for i in (out.find(m) for m in ("runtime error:", "ERROR: AddressSanitizer",
                                                 "Fatal Python error", "libgomp:")) if i >= 0]
    start = max(0, out.rfind("\n", 0, min(starts)) + 1) if starts else max(0, len(out) - 6000)
    return out[start:start + 6000]


def _died(proc) -> str:
    rc = proc.returncode
    return f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"


@pytest.fixture(scope="module")
def fuzz_outcomes(request):
    """Runs the selected fuzz bodies in child processes; returns name -> failure text ('' if
    it passed)."""
    names = [item.name for item in request.session.items if item.name in FUZZ]
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results, tr = os.path.join(tmp, "results.jsonl"), os.path.join(tmp, "trace.txt")
        env = dict(os.environ, FASTNN_FUZZ_TRACE=tr)
        env.pop("FASTNN_ISA", None)
        while names:
            open(results, "w").close()
            open(tr, "w").close()
            try:
                proc = subprocess.run([sys.executable, __file__, results, *names], env=env,
                                      capture_output=True, text=True, timeout=900)
                how, out = _died(proc), proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as e:
                how, out = "a timeout (900 s)", str(e.stdout or "") + str(e.stderr or "")
            with open(results) as f:
                for line in f:
                    rec = json.loads(line)
                    outcomes[rec["name"]] = rec["error"]
            names = [n for n in names if n not in outcomes]
            if names:  # the child died in names[0]
                with open(tr) as f:
                    call = f.read()
                outcomes[names.pop(0)] = (f"the fuzz child died ({how}) during this call:\n{call}\n"
                                          f"--- its output ---\n{_report(out)}")
    return lambda name: outcomes.get(name, f"{name}: no outcome from the child")


def child_main(results: str, names: list[str]) -> None:
    for name in names:
        trace(f"{name}: (no call yet)")
        try:
            FUZZ[name]()
            error = ""
        except Exception as e:  # noqa: BLE001 - hypothesis' report, with the falsifying example
            error = "".join(traceback.format_exception(e))
        with open(results, "a") as f:
            f.write(json.dumps({"name": name, "error": error}) + "\n")


# ----------------------------------------------------------------------------- arguments
class Arg:
    """A drawn array argument: the array, the float64 values a kernel sees after the
    documented conversion to float32 (None for a non-numeric dtype), and what the binding
    must do with it: 'ok', 'may' (misaligned float32: reject it or compute right) or 'bad'."""

    def __init__(self, name, array, recipe, in_place=False):
        self.name, self.a, self.recipe = name, array, recipe
        kind = array.dtype.kind
        self.v = np.zeros(0) if array.size > HUGE else \
            np.full(array.shape, np.nan) if kind not in "biuf" else seen(array)
        if array.size > HUGE:   # must raise (MemoryError or a ValueError naming it)
            self.verdict = "bad"
        elif in_place:
            fit = (array.dtype == np.float32 and array.flags.c_contiguous
                   and array.flags.writeable)
            self.verdict = ("ok" if array.flags.aligned else "may") if fit else "bad"
        elif kind not in "biuf":
            self.verdict = "bad"
        else:
            self.verdict = "may" if array.dtype == np.float32 and not array.flags.aligned else "ok"

    def __repr__(self):
        return self.recipe


def seen(a):
    with np.errstate(all="ignore"):
        return np.asarray(a).astype(np.float32).astype(np.float64)


def values(rng, shape, profile):
    """float64 values: normal, wide (1e-6..1e6, both signs) or with NaN/Inf/zeros/denormals."""
    v = rng.standard_normal(shape)
    if profile == "wide":
        v = np.sign(v) * 10.0 ** rng.uniform(-6, 6, shape)
    elif profile == "special":
        specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40])
        hit = rng.random(shape) < 0.2
        v = np.where(hit, specials[rng.integers(0, len(specials), shape)], v)
    return v


def build(shape, dtype, layout, v):
    dt = np.dtype(dtype)
    with np.errstate(all="ignore"):
        if dt.kind in "iu":
            info = np.iinfo(dt)
            v = np.clip(np.nan_to_num(np.round(v * 3)), info.min, info.max)
        t = (v > 0) if dt.kind == "b" else v.astype(dt)
    if layout == "f":
        return np.asfortranarray(t)
    if layout == "neg":
        return np.flip(np.flip(t).copy())
    if layout == "slice" and t.ndim:
        base = np.zeros(t.shape[:-1] + (2 * t.shape[-1] + 1,), dt)
        base[..., 1::2] = t
        return base[..., 1::2]
    if layout == "huge" and t.ndim:
        return np.broadcast_to(np.ones(1, dt), (2 ** (40 // t.ndim),) * t.ndim)
    if layout == "broadcast" and t.ndim and t.shape[0]:
        return np.broadcast_to(t[:1], t.shape)
    if layout == "misaligned" and dt.kind != "O":
        buf = bytearray(t.nbytes + 1)
        a = np.frombuffer(buf, dt, count=t.size, offset=1).reshape(t.shape)
        a[...] = t
        return a
    a = t.copy()
    if layout == "readonly":
        a.setflags(write=False)
    return a


@st.composite
def arg(draw, name, shape, *, in_place=False, dtypes=None, profiles=("normal", "wide", "special"),
        transform=None):
    """An Arg of `shape`; in-place arguments are mostly valid float32 C arrays."""
    if dtypes is None:
        dtypes = ["float32"] * 20 + REAL + NOT_REAL if in_place else REAL + NOT_REAL
    dtype = draw(st.sampled_from(dtypes))
    layout = draw(st.sampled_from(["c"] * 20 + LAYOUTS if in_place else LAYOUTS + ["huge"]))
    profile = draw(st.sampled_from(profiles))
    seed = draw(st.integers(0, 2**16))
    v = values(np.random.default_rng(seed), shape, profile)
    if transform is not None:
        v = transform(v)
    recipe = f"{name}=build({tuple(shape)}, {dtype!r}, {layout!r}, values(rng({seed}), {profile!r}))"
    return Arg(name, build(shape, dtype, layout, v), recipe, in_place)


def check_call(what, call, args, bad=(), check=None, maybe=()):
    """call() must raise naming a bad (or may-be-bad) argument when there is one, and else
    return a result that check(result) accepts."""
    bad = set(bad) | {a.name for a in args if a.verdict == "bad"}
    maybe = set(maybe) | {a.name for a in args if a.verdict == "may"}
    trace(f"{what}\n" + "\n".join(map(repr, args)))
    try:
        result = call()
    except (TypeError, ValueError, MemoryError) as e:
        assert bad or maybe, f"{what}: a valid call raised {type(e).__name__}: {e}"
        assert isinstance(e, MemoryError) or names_argument(str(e), *(bad | maybe)), \
            f"{what}: the error does not name any of {sorted(bad | maybe)}: {type(e).__name__}: {e}"
        return None
    assert not bad, f"{what}: accepted bad argument(s) {sorted(bad)} and returned {result!r:.300}"
    if check is not None:
        check(result)
    return result


def draw_out(data, shape, alias, elementwise=False, name="out"):
    """An out= argument: None (half the draws), a drawn in-place array of `shape` (its
    dtype and layout checked), one of another shape, or the input `alias` itself (right
    for an elementwise op, which may write over its input; refused otherwise)."""
    kind = data.draw(st.sampled_from(["none"] * 4 + ["new", "new", "shape", "alias"]))
    if kind == "none":
        return None
    if kind == "new":
        return data.draw(arg(name, shape, in_place=True))
    if kind == "shape":
        out = data.draw(arg(name, (*shape[:-1], shape[-1] + 1) if shape else (2,), in_place=True))
        out.verdict = "bad"
        return out
    out = Arg(name, alias.a, f"{name}={alias.name}", in_place=True)
    if out.verdict == "ok" and alias.a.shape != tuple(shape):
        out.verdict = "bad"
    elif out.verdict == "ok" and not elementwise and alias.a.size:
        out.verdict = "bad"   # read and written at once: the error names both
    return out


def returned_in(out, result):
    """A valid out= is the array returned."""
    if out is not None and out.verdict == "ok":
        assert result is out.a, f"{out.name}= not returned"


def agreeing(actual, expected, tol):
    """Where actual == expected within tol (expected finite in float32), NaN where it is
    NaN, the same infinity where it overflows float32."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    with np.errstate(all="ignore"):
        e32 = expected.astype(np.float32).astype(np.float64)
        ok = (np.isnan(actual) & np.isnan(e32)) | (actual == e32) | (np.abs(actual - expected) <= tol)
        # the kernels flush denormals to zero (fastnn.set_flush_denormal): below 2^-126, 0 is right
        ok |= (np.abs(expected) < TINY32) & (np.abs(actual) < TINY32)
    return ok


def agree(actual, expected, tol, what, skip=None):
    """actual agrees with expected (see agreeing) everywhere but where skip is set."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    ok = agreeing(actual, expected, tol)
    if skip is not None:
        ok |= skip
    if not ok.all():
        i = tuple(np.argwhere(~ok)[0])
        t = np.broadcast_to(tol, actual.shape)[i]
        raise AssertionError(f"{what}: {int((~ok).sum())}/{ok.size} elements wrong; first at {i}: "
                             f"got {actual[i]!r}, expected {expected[i]!r} (tol {t:.3g})")


def as_read(v):
    """The values a kernel reads: denormals as zero while fastnn flushes them."""
    if not fastnn.config()["flush_denormals"]:
        return v
    return np.where(np.abs(v) < TINY32, np.copysign(0.0, v), v)


def act_ref(name, x, alpha):
    with np.errstate(all="ignore"):
        return _ref.act_forward(name, x, alpha)


def act_from_y(name, y, g, alpha, x):
    """f'(x) * g as activation_backward documents it: from the output y (gelu: from x)."""
    with np.errstate(all="ignore"):
        if name in ("identity", "linear"):
            return g.copy()
        if name == "sigmoid":
            return g * y * (1 - y)
        if name == "tanh":
            return g * (1 - y * y)
        if name == "relu":
            return np.where(y > 0, g, 0.0)
        if name == "leaky_relu":
            return np.where(y > 0, g, alpha * g)
        if name == "elu":
            return np.where(y > 0, g, g * (y + alpha))
        if name == "softplus":
            return -g * np.expm1(-y)
        return g * _ref.act_derivative("gelu", x)


def dropped_non_finite(x, keep):
    """Where a dropped entry is NaN/Inf, 0 (as documented) and NaN (x * 0, as torch) both pass."""
    return ~keep & ~np.isfinite(x)


def lipschitz(name, alpha):
    return max(1.0, LIPSCHITZ.get(name, 1.0), abs(alpha) if name in ("leaky_relu", "elu") else 1.0)


def matmul_tol(A, B, k):
    with np.errstate(all="ignore"):
        return 4 * EPS32 * (math.sqrt(k) + 2) * (np.abs(A) @ np.abs(B))


# ----------------------------------------------------------------------------- GEMM
OUT_KINDS = ["none"] * 3 + ["ok", "rows", "float64", "shape", "stride", "readonly", "fortran",
                            "is_a", "misaligned"]
BIAS_KINDS = ["none"] * 3 + ["ok", "shape", "out_row"]


@fuzz(data=st.data(), fn=st.sampled_from(["gemm", "gemm_reference", "matmul"]),
      m=st.sampled_from(SMALL), n=WIDE, k=st.sampled_from(SMALL + [100, 130]),
      ta=st.booleans(), tb=st.booleans(), isa=st.sampled_from(list(_C.supported_isas())),
      precision=st.sampled_from(["fp32", "fp32", "bf16", "bf16", "fp8"]),
      bf16_path=st.sampled_from(list(_C.supported_bf16_paths())))
def test_gemm(data, fn, m, n, k, ta, tb, isa, precision, bf16_path):
    """gemm, gemm_reference and fastnn.matmul: shapes, transposes, out, bias, epilogue,
    precision (bf16 on each bf16 path: the product of the bf16-rounded operands)."""
    shape_bug = data.draw(st.sampled_from([None] * 8 + ["rank_a", "rank_b", "inner"]))
    a = data.draw(arg("a", (k, m) if ta else (m, k)))
    b = data.draw(arg("b", (n, k + (shape_bug == "inner")) if tb else (k + (shape_bug == "inner"), n)))
    if shape_bug == "rank_a":
        a = Arg("a", a.a.reshape(-1), a.recipe + ".reshape(-1)")
    if shape_bug == "rank_b":
        b = Arg("b", b.a.reshape(1, *b.a.shape), b.recipe + ".reshape(1, ...)")
    args, bad, kw = [a, b], set(), {"transpose_a": ta, "transpose_b": tb, "precision": precision}
    if shape_bug:
        bad |= {"a", "b"}
    if precision == "fp8":
        bad.add("precision")
    # the operands a bf16 product reads: rounded (except on the fp32 path; the reference
    # always rounds); the kernels' bf16 instructions read a subnormal as zero whatever the
    # denormal setting
    rounded = precision == "bf16" and (fn == "gemm_reference" or bf16_path != "fp32")
    round_ab = bf16_round if rounded else (lambda v: v)
    flush_ab = (lambda v: np.where(np.abs(v) < TINY32, np.copysign(0.0, v), v)) if rounded else as_read
    out = bias = None
    if fn != "matmul":
        alpha = data.draw(st.sampled_from([1.0, 0.0, -0.5, 2.5]))
        act = data.draw(st.sampled_from(ACTS + ["bogus"]))
        act_alpha = data.draw(st.sampled_from([0.01, 1.0, -0.3]))
        kw.update(alpha=alpha, activation=act, activation_alpha=act_alpha)
        if act == "bogus":
            bad.add("bogus")
        okind = data.draw(st.sampled_from(OUT_KINDS))
        if okind != "none":
            beta = data.draw(st.sampled_from([0.0, 1.0, -2.0]))
            kw["beta"] = beta
            o = data.draw(arg("out", (m, n), in_place=True, dtypes=["float32"]))
            arr = o.a
            if okind == "rows":  # a row slice of a wider array: allowed
                base = np.zeros((m, n + 3), np.float32)
                base[:, :n] = arr
                arr = base[:, :n]
            elif okind == "float64":
                arr = arr.astype(np.float64)
            elif okind == "shape":
                arr = np.zeros((m, n + 1), np.float32)
            elif okind == "stride":
                arr = build((m, n), "float32", "slice", o.v)
            elif okind == "readonly":
                arr = arr.copy()
                arr.setflags(write=False)
            elif okind == "fortran":
                arr = np.asfortranarray(arr)
            elif okind == "misaligned":
                arr = build((m, n), "float32", "misaligned", o.v)
            elif okind == "is_a" and a.a.shape == (m, n) and a.a.dtype == np.float32 \
                    and a.a.flags.c_contiguous and a.a.flags.writeable:
                arr = a.a
            out = Arg("out", arr, f"{o.recipe} as {okind}")
            empty = m == 0 or n == 0   # strides of an empty array mean nothing
            unit_cols = empty or n <= 1 or arr.strides[1] == 4
            rows_ok = empty or m <= 1 or (arr.strides[0] > 0 and arr.strides[0] % 4 == 0
                                 and arr.strides[0] // 4 >= n)
            out.verdict = ("bad" if arr.dtype != np.float32 or arr.shape != (m, n) or not unit_cols
                           or not rows_ok or not arr.flags.writeable
                           else "may" if not arr.flags.aligned or arr is a.a else "ok")
            args.append(out)
            kw["out"] = arr
        bkind = data.draw(st.sampled_from(BIAS_KINDS))
        if bkind == "out_row" and out is not None and m > 0 and out.verdict == "ok":
            bias = Arg("bias", out.a[0], "bias=out[0]")
            bias.verdict = "may"  # aliases what the kernel writes: reject, or read it first
        elif bkind in ("ok", "shape", "out_row"):
            bias = data.draw(arg("bias", (n + (bkind == "shape"),)))
            if bkind == "shape":
                bad.add("bias")
        if bias is not None:
            args.append(bias)
            kw["bias"] = bias.a
    c0 = None if out is None else out.v.copy()
    b0 = None if bias is None else bias.v.copy()

    def check(res):
        assert res.dtype == np.float32 and res.shape == (m, n)
        if out is not None:
            assert res is out.a or np.shares_memory(res, out.a), "gemm: out= not returned"
        alpha = kw.get("alpha", 1.0)
        name = kw.get("activation", "identity")
        alpha_act = kw.get("activation_alpha", 0.01)

        def expected(read, read_ab):
            A, B = read_ab(round_ab(a.v.T if ta else a.v)), read_ab(round_ab(b.v.T if tb else b.v))
            with np.errstate(all="ignore"):
                if alpha == 0.0 or k == 0:  # BLAS: A and B are not read
                    z, scale = np.zeros((m, n)), np.zeros((m, n))
                else:
                    z, scale = alpha * (A @ B), abs(alpha) * (np.abs(A) @ np.abs(B))
                if c0 is not None and kw["beta"] != 0.0:
                    z, scale = z + kw["beta"] * read(c0), scale + abs(kw["beta"] * read(c0))
                if b0 is not None:
                    z, scale = z + read(b0), scale + np.abs(read(b0))
                y = act_ref(name, z, alpha_act)
                return y, (lipschitz(name, alpha_act) * 4 * EPS32 * (math.sqrt(k) + 2) * scale
                           + 2e-5 * np.abs(y) + 1e-30)
        y, tol = expected(lambda v: v, lambda v: v)
        # a denormal read as 0 (inf * denormal: NaN, not inf) is as right as one read as it is
        y_read, tol_read = expected(as_read, flush_ab)
        agree(res, y, tol, f"{fn}[{isa}, {precision} on {bf16_path}] m={m} n={n} k={k} ta={ta} tb={tb} {kw.keys() - {'out'}}",
              skip=agreeing(res, y_read, tol_read))

    _C.set_isa(isa)
    _C.set_bf16_path(bf16_path)
    call = (lambda: fastnn.matmul(a.a, b.a, **kw)) if fn == "matmul" else \
        (lambda: getattr(_C, fn)(a.a, b.a, **kw))
    check_call(f"{fn}[{isa}, {bf16_path}](a, b, **{ {k_: v for k_, v in kw.items() if k_ not in ('out', 'bias')} })",
               call, args, bad, check)


# ----------------------------------------------------------------------------- elementwise
@fuzz(data=st.data(), name=st.sampled_from(ACTS + ["bogus"]), rows=st.sampled_from(SMALL),
      cols=WIDE, alpha=st.sampled_from([0.01, 1.0, 0.3, -0.5]))
def test_activation_forward(data, name, rows, cols, alpha):
    x = data.draw(arg("x", (rows, cols)))
    bad = {"bogus"} if name == "bogus" else set()
    out = draw_out(data, (rows, cols), x, elementwise=True)
    kw = {} if out is None else {"out": out.a}

    def check(y):
        assert y.dtype == np.float32
        returned_in(out, y)
        agree(y, act_ref(name, x.v, alpha), 2e-5 * np.abs(act_ref(name, x.v, alpha)) + 1e-37,
              f"activation_forward({name!r}, alpha={alpha}) {x.a.shape}")

    check_call(f"activation_forward({name!r}, x, alpha={alpha}, out={out})",
               lambda: _C.activation_forward(name, x.a, alpha, **kw),
               [x] + ([] if out is None else [out]), bad, check)


@fuzz(data=st.data(), name=st.sampled_from(ACTS), rows=st.sampled_from(SMALL), cols=WIDE,
      alpha=st.sampled_from([0.01, 1.0, -0.5]), with_x=st.booleans(),
      out_kind=st.sampled_from(["none", "none", "new", "grad_y", "y", "overlap"]),
      bias_kind=st.sampled_from(["none", "none", "ok", "shape", "is_out"]))
def test_activation_backward(data, name, rows, cols, alpha, with_x, out_kind, bias_kind):
    shape = (rows, cols)
    y = data.draw(arg("y", shape, profiles=("normal", "special")))
    g = data.draw(arg("grad_y", shape, profiles=("normal", "special")))
    args, bad, kw = [y, g], set(), {}
    x = None
    if with_x or name == "gelu":
        x = data.draw(arg("x", shape, profiles=("normal", "special")))
        kw["x"] = x.a
        if name == "gelu":
            args.append(x)
    if name == "gelu" and not with_x:
        del kw["x"]
        bad.add("x")
    if name in ("elu", "leaky_relu") and alpha < 0:   # derivatives read from y's sign
        bad.add("alpha")
    out = None
    if out_kind == "new":
        out = data.draw(arg("out", shape, in_place=True))
    elif out_kind in ("grad_y", "y"):
        src = g if out_kind == "grad_y" else y
        out = Arg("out", src.a, f"out={src.name}", in_place=True)
        if out.verdict == "ok":
            out.verdict = "ok" if out_kind == "grad_y" else "may"  # grad_y is documented
    elif out_kind == "overlap" and rows * cols > 1:
        base = np.random.default_rng(rows * cols).standard_normal(rows * cols + 1).astype(np.float32)
        g = Arg("grad_y", base[:-1].reshape(shape), "grad_y=base[:-1]")
        out = Arg("out", base[1:].reshape(shape), "out=base[1:] (overlaps grad_y)", in_place=True)
        out.verdict = "may"
        args[1] = g
    if out is not None:
        kw["out"] = out.a
        args.append(out)
    db = None
    if bias_kind != "none":
        if bias_kind == "is_out" and out is not None and out.verdict == "ok" and rows * cols:
            db = Arg("bias_grad", out.a[0], "bias_grad=out[0]", in_place=True)
            db.verdict = "bad"   # two outputs in the same memory: no order makes both right
        else:
            db = data.draw(arg("bias_grad", (cols + (bias_kind == "shape"),), in_place=True))
            if bias_kind == "shape":
                bad.add("bias_grad")
        kw["bias_grad"] = db.a
        args.append(db)
    y0, g0, db0 = y.v.copy(), g.v.copy(), None if db is None else db.v.copy()
    xv = None if x is None else x.v.copy()

    def check(res):
        if out is not None:
            assert res is out.a, "activation_backward: out= not returned"
        # Kernels read a denormal as 0 (fastnn.set_flush_denormal): relu'(denormal) is 0.
        expected = act_from_y(name, as_read(y0), as_read(g0), alpha,
                              None if xv is None else as_read(xv))
        nan_in = np.isnan(y0) | (np.isnan(xv) if name == "gelu" else False)
        tol = 1e-5 * (np.abs(expected) + np.abs(g0)) + 1e-30
        # An infinite gradient times a derivative that is 0 or nearly so (gelu near -10, the
        # sigmoid of a tiny output), which float32 may flush to 0 or keep: NaN or inf, both
        # honest.
        derivative = act_from_y(name, as_read(y0), np.ones_like(g0), alpha,
                                None if xv is None else as_read(xv))
        with np.errstate(invalid="ignore"):
            inf_times_tiny = (np.isinf(g0) & ~nan_in & ~(np.abs(derivative) >= 2.0**-100)
                              & ~np.isfinite(res))
        agree(res, expected, tol, f"activation_backward({name!r}) {shape}",
              skip=nan_in | inf_times_tiny)
        if db is not None:
            with np.errstate(all="ignore"):
                col = db0 + np.where(nan_in, 0, expected).sum(axis=0)
                ctol = 1e-5 * (np.abs(db0) + np.abs(expected).sum(axis=0)) * (rows + 2) + 1e-30
            agree(db.a, col, ctol, f"activation_backward({name!r}) bias_grad",
                  # float32 partial sums may overflow where the float64 total does not
                  skip=np.isnan(col) | nan_in.any(axis=0)
                  | (np.abs(expected).sum(axis=0) + np.abs(db0) > np.finfo(np.float32).max))

    check_call(f"activation_backward({name!r}, y, grad_y, alpha={alpha}, {sorted(kw)})",
               lambda: _C.activation_backward(name, y.a, g.a, alpha, **kw), args, bad, check)


@fuzz(data=st.data(), rows=st.sampled_from(SMALL), cols=WIDE,
      beta=st.sampled_from([0.0, 1.0, -0.5]), alias=st.booleans())
def test_column_sum(data, rows, cols, beta, alias):
    x = data.draw(arg("x", (rows, cols)))
    out = data.draw(arg("out", (cols,), in_place=True))
    if alias and x.a.dtype == np.float32 and x.a.flags.c_contiguous and rows and x.a.flags.writeable:
        out = Arg("out", x.a[0], "out=x[0]", in_place=True)
        out.verdict = "may"
    o0 = out.v.copy()

    def check(res):
        with np.errstate(all="ignore"):
            expected = beta * o0 + x.v.sum(axis=0) if beta else x.v.sum(axis=0)
            kept = np.abs(beta * o0) if beta else 0.0
            tol = 1e-5 * (kept + np.abs(x.v).sum(axis=0)) * (rows + 2) ** 0.5 + 1e-30
        agree(out.a, expected, tol, f"column_sum {x.a.shape} beta={beta}")

    check_call("column_sum(x, out, beta)", lambda: _C.column_sum(x.a, out.a, beta), [x, out],
               check=check)


@fuzz(data=st.data(), rows=st.sampled_from(SMALL), cols=WIDE)
def test_softmax(data, rows, cols):
    x = data.draw(arg("x", (rows, cols)))
    bad = {"x"} if cols == 0 else set()   # no rows: an empty batch, no classes: an error

    def check(y):
        agree(y, _ref.softmax(x.v) if rows * cols else y, 1e-5 * np.abs(y) + 1e-7,
              f"softmax_forward {x.a.shape}")

    with np.errstate(all="ignore"):
        check_call("softmax_forward(x)", lambda: _C.softmax_forward(x.a), [x], bad, check)
    g = data.draw(arg("grad_y", (rows, cols)))
    p = data.draw(arg("y", (rows, cols), dtypes=["float32", "float64"], profiles=("normal",),
                      transform=lambda v: np.exp(v) / np.exp(v).sum(axis=-1, keepdims=True)))

    def check_b(gx):
        with np.errstate(all="ignore"):
            scale = np.abs(p.v) * (np.abs(g.v) + (np.abs(g.v * p.v)).sum(axis=1, keepdims=True))
        agree(gx, _ref.softmax_backward(p.v, g.v), 4 * EPS32 * (cols + 2) * scale + 1e-30,
              f"softmax_backward {p.a.shape}")

    with np.errstate(all="ignore"):
        check_call("softmax_backward(y, grad_y)", lambda: _C.softmax_backward(p.a, g.a), [p, g],
                   {"y"} if cols == 0 else set(), check_b)


@fuzz(data=st.data(), rows=st.sampled_from(SMALL), cols=st.sampled_from(SMALL),
      idx_dtype=st.sampled_from(["int64", "int32", "uint8", "int8", "uint64", "float64", "bool"]),
      n=st.integers(0, 70), oob=st.sampled_from([None] * 4 + [-1, "rows", 2**63, 2**40]),
      out_kind=st.sampled_from(["none", "none", "ok", "is_x", "shape"]))
def test_gather_rows(data, rows, cols, idx_dtype, n, oob, out_kind):
    x = data.draw(arg("x", (rows, cols)))
    rng = np.random.default_rng(n)
    idx = rng.integers(0, max(rows, 1), n)
    bad = set()
    if rows == 0 and n:
        bad.add("index")
    if oob is not None and n:
        val = rows if oob == "rows" else oob
        if np.can_cast(np.min_scalar_type(val), idx_dtype) or idx_dtype in ("int64", "uint64"):
            with np.errstate(all="ignore"):
                idx = idx.astype(np.int64 if val != 2**63 else np.uint64)
                idx[rng.integers(0, n)] = val
            bad.add("index")
    with np.errstate(all="ignore"):
        index = Arg("index", idx.astype(idx_dtype), f"index={idx.tolist()!r:.200} as {idx_dtype}")
    index.verdict = "ok"
    if idx_dtype in ("float64", "bool"):
        bad.add("index")
    args, kw = [x, index], {}
    if out_kind != "none":
        if out_kind == "is_x" and x.a.dtype == np.float32 and x.a.flags.c_contiguous \
                and x.a.flags.writeable and n == rows:
            out = Arg("out", x.a, "out=x", in_place=True)
            out.verdict = "may"
        else:
            out = data.draw(arg("out", (n + (out_kind == "shape"), cols), in_place=True))
            if out_kind == "shape":
                bad.add("out")
        args.append(out)
        kw["out"] = out.a
    xv = None if x.v is None else x.v.copy()

    def check(res):
        assert res.shape == (n, cols) and res.dtype == np.float32
        agree(res, xv[idx.astype(np.int64)], 0.0, f"gather_rows {x.a.shape} n={n}")

    check_call("gather_rows(x, index, **kw)", lambda: _C.gather_rows(x.a, index.a, **kw), args,
               bad, check)


# ----------------------------------------------------------------------------- losses
def bce_probs_torch(p, t):
    """PyTorch's BCELoss: each log clamped at -100, the gradient's denominator at 1e-12."""
    with np.errstate(all="ignore"):
        lp, lq = np.maximum(np.log(p), -100.0), np.maximum(np.log1p(-p), -100.0)
        per = -(t * lp + (1 - t) * lq)
        grad = (p - t) / np.maximum(p * (1 - p), 1e-12) / p.size
    return float(per.mean()), grad


@fuzz(data=st.data(), which=st.sampled_from(["mse", "bce_logits", "bce_probs"]),
      rows=st.sampled_from(SMALL), cols=WIDE, mismatch=st.sampled_from([False] * 6 + [True]))
def test_elementwise_losses(data, which, rows, cols, mismatch):
    probs = which == "bce_probs"
    to_prob = (lambda v: 1 / (1 + np.exp(-v))) if probs else None
    pred = data.draw(arg("pred", (rows, cols), transform=to_prob,
                         profiles=("normal", "special") if probs else ("normal", "wide", "special")))
    target = data.draw(arg("target", (rows, cols + mismatch),
                           transform=(lambda v: (v > 0) * 1.0) if which != "mse" else None))
    bad = {"pred", "target"} if mismatch else {"pred"} if rows * cols == 0 else set()
    p, t = pred.v, target.v

    def check(res):
        loss, grad = res
        with np.errstate(all="ignore"):
            if which == "mse":
                ref_loss, ref_grad = _ref.mse(p, t)
                scale = np.abs(p) + np.abs(t)
                ltol = 1e-5 * float(np.mean(scale * scale))
            elif which == "bce_logits":
                ref_loss, ref_grad = _ref.bce_logits(p, t)
                scale = 1 + np.abs(p)
                ltol = 1e-5 * float(np.mean(scale * (1 + np.abs(t))))
            else:
                ref_loss, ref_grad = bce_probs_torch(p, t)
                scale = np.abs(ref_grad) * p.size
                ltol = 1e-5 * (abs(ref_loss) + 1)
        agree(np.float64(loss), ref_loss, ltol, f"{which} loss {p.shape}")
        agree(grad, ref_grad, 1e-5 * (np.abs(ref_grad) + scale / p.size) + 1e-30,
              f"{which} grad {p.shape}")

    fn = {"mse": lambda: _C.mse(pred.a, target.a),
          "bce_logits": lambda: _C.binary_cross_entropy(pred.a, target.a),
          "bce_probs": lambda: _C.binary_cross_entropy(pred.a, target.a, from_logits=False)}[which]
    check_call(f"{which}(pred, target)", fn, [pred, target], bad, check)


@fuzz(data=st.data(), rows=st.sampled_from(SMALL), classes=WIDE,
      label_dtype=st.sampled_from(["int64", "int64", "int32", "uint8", "int8", "uint64",
                                   "float64", "bool"]),
      oob=st.sampled_from([None] * 4 + [-1, "classes", 2**63, 2**31]),
      wrong_len=st.sampled_from([False] * 6 + [True]))
def test_cross_entropy(data, rows, classes, label_dtype, oob, wrong_len):
    logits = data.draw(arg("logits", (rows, classes)))
    rng = np.random.default_rng(rows * 131 + classes)
    labels = rng.integers(0, max(classes, 1), rows + wrong_len).astype(np.int64)
    bad = set()
    if rows * classes == 0:
        bad.add("logits")
    if wrong_len:
        bad.add("labels")
    if oob is not None and len(labels):
        val = classes if oob == "classes" else oob
        kinds = np.iinfo(label_dtype) if label_dtype not in ("float64", "bool") else None
        if kinds is not None and kinds.min <= val <= kinds.max:
            labels = labels.astype(label_dtype)
            labels[rng.integers(0, len(labels))] = val
            bad.add("labels")
    if label_dtype in ("float64", "bool"):
        bad.add("labels")
    with np.errstate(all="ignore"):
        lab = Arg("labels", np.asarray(labels).astype(label_dtype),
                  f"labels={labels.tolist()!r:.200} as {label_dtype}")
        if (lab.a.astype(np.int64) != labels).any():  # 128 as int8 is -128: out of range
            bad.add("labels")
    lab.verdict = "ok"
    x = logits.v

    def check(res):
        loss, grad = res
        with np.errstate(all="ignore"):
            ref_loss, ref_grad = _ref.cross_entropy(x, lab.a.astype(np.int64))
            big = float(np.abs(x).max(axis=1).mean()) + 1
        agree(np.float64(loss), ref_loss, 1e-5 * big, f"cross_entropy loss {x.shape}")
        agree(grad, ref_grad, 1e-4 * np.abs(ref_grad) + 1e-6 / max(rows, 1),
              f"cross_entropy grad {x.shape}")

    check_call("cross_entropy(logits, labels)", lambda: _C.cross_entropy(logits.a, lab.a),
               [logits, lab], bad, check)

    def check_matches(res):  # the accuracy metric's count: NumPy's argmax, a NaN row a miss
        x32 = np.asarray(x, np.float32)
        want = int(np.sum((np.argmax(x32, 1) == lab.a.astype(np.int64)) & ~np.isnan(x32).any(1)))
        assert res == want, f"argmax_matches {x.shape}: {res}, NumPy {want}"

    check_call("argmax_matches(logits, labels)", lambda: _C.argmax_matches(logits.a, lab.a),
               [logits, lab], bad, check_matches)

    target = data.draw(arg("target", (rows, classes + wrong_len), profiles=("normal",),
                           transform=lambda v: np.abs(v)))

    def check_soft(res):
        loss, grad = res
        t = target.v
        with np.errstate(all="ignore"):
            ref_loss, ref_grad = _ref.cross_entropy_soft(x, t)
            big = float((t.sum(axis=1) * (np.abs(x).max(axis=1) + 1)).mean()) + 1
            gtol = 1e-4 * (np.abs(_ref.softmax(x)) * t.sum(axis=1, keepdims=True) + t) / rows + 1e-30
        agree(np.float64(loss), ref_loss, 1e-5 * big, f"cross_entropy_soft loss {x.shape}")
        agree(grad, ref_grad, gtol, f"cross_entropy_soft grad {x.shape}")

    bad_soft = ({"logits"} if rows * classes == 0 else set()) | \
        ({"logits", "target"} if wrong_len else set())
    check_call("cross_entropy_soft(logits, target)",
               lambda: _C.cross_entropy_soft(logits.a, target.a), [logits, target], bad_soft,
               check_soft)


# ----------------------------------------------------------------------------- optimizers
def opt_ref(which, p, g, st_, hp):
    """One step from the given state in float64: (new arrays by name, magnitude of their
    terms, for the tolerance)."""
    lr, wd = hp["lr"], hp.get("weight_decay", 0.0)
    new, mag = {}, {}
    if which == "sgd":
        mu = hp["momentum"]
        d, md = g + wd * p, np.abs(g) + np.abs(wd * p)
        if mu == 0:
            new["param"], mag["param"] = p - lr * d, np.abs(p) + abs(lr) * md
        else:
            v = mu * st_["velocity"] + d
            mv = np.abs(mu * st_["velocity"]) + md
            new["velocity"], mag["velocity"] = v, mv
            step, ms = (d + mu * v, md + abs(mu) * mv) if hp["nesterov"] else (v, mv)
            new["param"], mag["param"] = p - lr * step, np.abs(p) + abs(lr) * ms
    elif which == "adam":
        b1, b2, t = hp["beta1"], hp["beta2"], hp["step"]
        dec = hp["decoupled"]
        w = p * (1 - lr * wd) if dec else p
        gg = g + (0.0 if dec else wd) * w
        mg = np.abs(g) + np.abs((0.0 if dec else wd) * w)
        m = b1 * st_["m"] + (1 - b1) * gg
        v = b2 * st_["v"] + (1 - b2) * gg * gg
        den = np.sqrt(v) / math.sqrt(1 - b2 ** t) + hp["eps"]
        ss = lr / (1 - b1 ** t)
        new.update(m=m, v=v, param=w - ss * m / den)
        mm = np.abs(b1 * st_["m"]) + abs(1 - b1) * mg
        mag.update(m=mm, v=np.abs(b2 * st_["v"]) + (1 - b2) * mg * mg,
                   param=np.abs(w) + abs(ss) * (mm + 2 * np.abs(m)) / den)
    elif which == "adagrad":
        gg, mg = g + wd * p, np.abs(g) + np.abs(wd * p)
        s = st_["sum_sq"] + gg * gg
        clr = lr / (1 + (hp["step"] - 1) * hp["lr_decay"])
        den = np.sqrt(s) + hp["eps"]
        new.update(sum_sq=s, param=p - clr * gg / den)
        mag.update(sum_sq=np.abs(st_["sum_sq"]) + mg * mg, param=np.abs(p) + abs(clr) * 2 * mg / den)
    else:
        a, mu = hp["alpha"], hp["momentum"]
        gg, mg = g + wd * p, np.abs(g) + np.abs(wd * p)
        sq = a * st_["square_avg"] + (1 - a) * gg * gg
        new["square_avg"], mag["square_avg"] = sq, np.abs(a * st_["square_avg"]) + mg * mg
        var = sq
        if hp["centered"]:
            ga = st_["grad_avg"] + (1 - a) * (gg - st_["grad_avg"])
            new["grad_avg"], mag["grad_avg"] = ga, np.abs(st_["grad_avg"]) + mg
            var = np.maximum(sq - ga * ga, 0.0)
        avg = np.sqrt(var) + hp["eps"]
        q, mq = gg / avg, 2 * mg / avg
        if mu > 0:
            buf = mu * st_["momentum_buf"] + q
            mb = np.abs(mu * st_["momentum_buf"]) + mq
            new["momentum_buf"], mag["momentum_buf"] = buf, mb
            new["param"], mag["param"] = p - lr * buf, np.abs(p) + abs(lr) * mb
        else:
            new["param"], mag["param"] = p - lr * q, np.abs(p) + abs(lr) * mq
    return new, mag


STATES = {"sgd": ["velocity"], "adam": ["m", "v"], "adagrad": ["sum_sq"],
          "rmsprop": ["square_avg", "momentum_buf", "grad_avg"]}
NONNEG = {"v", "sum_sq", "square_avg"}


@fuzz(data=st.data(), which=st.sampled_from(list(STATES)), n=WIDE,
      two_d=st.booleans(), size_bug=st.sampled_from([None] * 8 + ["grad", "state"]),
      alias=st.sampled_from([None] * 5 + ["grad_is_param", "state_is_param", "states_same",
                                          "overlap"]))
def test_optimizer_steps(data, which, n, two_d, size_bug, alias):
    """sgd_step, adam_step, adagrad_step, rmsprop_step: one step against the float64 formula."""
    shape = (n // 3, 3) if two_d and n % 3 == 0 else (n,)
    lr = data.draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0]))
    wd = data.draw(st.sampled_from([0.0, 0.01, 0.5]))
    hp = {"lr": lr, "weight_decay": wd}
    bad = set()
    if which == "sgd":
        hp.update(momentum=data.draw(st.sampled_from([0.0, 0.9, -0.5])), nesterov=data.draw(st.booleans()))
        names = ["velocity"] if hp["momentum"] != 0 else []
    elif which == "adam":
        hp.update(beta1=data.draw(st.sampled_from([0.9, 0.0, 0.5])),
                  beta2=data.draw(st.sampled_from([0.999, 0.5])),
                  eps=data.draw(st.sampled_from([1e-8, 1e-3])),
                  step=data.draw(st.sampled_from([1, 2, 10, 1000, 0, -3])),
                  decoupled=data.draw(st.booleans()))
        names = ["m", "v"]
        if hp["step"] < 1:
            bad.add("step")
    elif which == "adagrad":
        hp.update(eps=data.draw(st.sampled_from([1e-10, 1e-3])),
                  lr_decay=data.draw(st.sampled_from([0.0, 0.05])),
                  step=data.draw(st.sampled_from([1, 3, 100, 0])))
        names = ["sum_sq"]
        if hp["step"] < 1:
            bad.add("step")
    else:
        hp.update(alpha=data.draw(st.sampled_from([0.99, 0.5])),
                  eps=data.draw(st.sampled_from([1e-8, 1e-3])),
                  momentum=data.draw(st.sampled_from([0.0, 0.9, -0.5])),
                  centered=data.draw(st.booleans()))
        names = ["square_avg"] + (["momentum_buf"] if hp["momentum"] > 0 else []) + \
            (["grad_avg"] if hp["centered"] else [])
        if hp["momentum"] < 0:
            bad.add("momentum")
    prof = ("normal", "special")
    param = data.draw(arg("param", shape, in_place=True, profiles=prof))
    grad = data.draw(arg("grad", (n + (size_bug == "grad"),), profiles=prof))
    if size_bug == "grad":
        bad |= {"grad", "param"}
    states = {}
    for s in names:
        size = (n + 1,) if size_bug == "state" and s == names[0] else shape
        states[s] = data.draw(arg(s, size, in_place=True, profiles=prof,
                                  transform=np.abs if s in NONNEG else None))
        if size != shape:
            bad |= {s, "param"}
    if which == "rmsprop" and hp["centered"] and all(states[s].verdict == "ok" for s in names) \
            and states["square_avg"].a.shape == states["grad_avg"].a.shape:
        # a state that a history of gradients can produce: square_avg >= grad_avg**2
        with np.errstate(all="ignore"):
            states["square_avg"].a[...] = 2 * states["grad_avg"].v ** 2 + 1 + states["square_avg"].v
        states["square_avg"].v = seen(states["square_avg"].a)
    # aliasing: any of these either raises or computes as if the arrays were separate
    if param.verdict == "ok" and n > 1:
        if alias == "grad_is_param":
            grad = Arg("grad", param.a, "grad=param")
            grad.verdict = "may"
        elif alias == "state_is_param" and names:
            states[names[0]] = Arg(names[0], param.a, f"{names[0]}=param", in_place=True)
            states[names[0]].verdict = "bad"   # two arrays written: no order makes it right
        elif alias == "states_same" and len(names) > 1:
            states[names[1]] = Arg(names[1], states[names[0]].a, f"{names[1]}={names[0]}",
                                   in_place=True)
            states[names[1]].verdict = "bad"
        elif alias == "overlap":
            base = np.random.default_rng(n).standard_normal(n + 1).astype(np.float32)
            param = Arg("param", base[1:].reshape(shape), "param=base[1:]", in_place=True)
            grad = Arg("grad", base[:-1], "grad=base[:-1] (overlaps param)")
            grad.verdict = "may"
    p0, g0 = param.v.copy(), None if grad.v is None else grad.v.copy()
    s0 = {k: (None if a.v is None else a.v.copy()) for k, a in states.items()}
    args = [param, grad, *states.values()]

    def check(_):
        with np.errstate(all="ignore"):
            new, mag = opt_ref(which, p0, g0.reshape(p0.shape), s0, hp)
            # denormal inputs read as zero while fastnn flushes them: that result is right too
            read, _ = opt_ref(which, as_read(p0), as_read(g0.reshape(p0.shape)),
                              {k: None if v is None else as_read(v) for k, v in s0.items()}, hp)
        outs = {"param": param, **states}
        for key, expected in new.items():
            tol = 64 * EPS32 * mag[key] + 1e-30
            agree(outs[key].a, expected, tol, f"{which}_step {shape} {hp}: {key}",
                  skip=np.isnan(mag[key]) | agreeing(outs[key].a, read[key], tol))

    p, g = param.a, grad.a
    sa = {k: a.a for k, a in states.items()}
    hp_c = {k: v for k, v in hp.items()}
    # segments (the thread split's rows): the whole buffer as rows of `shape`, or a bad table
    segments = data.draw(st.sampled_from([None, "whole", "past_end", "overlap", "negative", "shape"]))
    if segments is not None:
        rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (n, 1)
        hp_c["segments"] = {"whole": [[0, rows, cols]], "past_end": [[0, rows + 1, cols]],
                            "overlap": [[0, 1, 1], [0, 1, 1]], "negative": [[0, -1, 1]],
                            "shape": [0, rows, cols]}[segments]
        if segments != "whole":
            bad.add("segments")
    if which == "sgd":
        call = lambda: _C.sgd_step(p, g, sa.get("velocity"), **hp_c)  # noqa: E731
    elif which == "adam":
        call = lambda: _C.adam_step(p, g, sa["m"], sa["v"], **hp_c)  # noqa: E731
    elif which == "adagrad":
        call = lambda: _C.adagrad_step(p, g, sa["sum_sq"], **hp_c)  # noqa: E731
    else:
        call = lambda: _C.rmsprop_step(p, g, sa["square_avg"], sa.get("momentum_buf"),  # noqa: E731
                                       sa.get("grad_avg"), **hp_c)
    check_call(f"{which}_step(**{hp})", call, args, bad, check)


# ----------------------------------------------------------------------------- reductions, in place
@fuzz(data=st.data(), n=WIDE, l1=st.sampled_from([0.0, 0.1, -1.0, float("nan")]),
      l2=st.sampled_from([0.0, 0.01, float("inf")]), alias=st.booleans())
def test_penalty_and_reductions(data, n, l1, l2, alias):
    """add_penalty_grad, sum_squares, sum_abs, scale_, axpby_, clip_."""
    p = data.draw(arg("param", (n,)))
    g = data.draw(arg("grad", (n,), in_place=True))
    if alias and p.a.dtype == np.float32 and p.a.flags.c_contiguous and p.a.flags.writeable and n:
        g = Arg("grad", p.a, "grad=param", in_place=True)
        g.verdict = "may"
    bad = ({"l1"} if not (l1 >= 0) else set()) | ({"l2"} if not math.isfinite(l2) else set())
    pv, gv = p.v.copy() if p.v is not None else None, g.v.copy() if g.v is not None else None

    def check(total):
        with np.errstate(all="ignore"):
            expected = gv + np.float32(l1) * np.sign(pv) + np.float32(2 * l2) * pv
            tol = 4 * EPS32 * (np.abs(gv) + abs(l1) + abs(2 * l2 * pv)) + 1e-30
            # sign(denormal) read as sign(0): as right as the sign of the value itself
            p_read = as_read(pv)
            read = as_read(gv) + np.float32(l1) * np.sign(p_read) + np.float32(2 * l2) * p_read
            agree(g.a, expected, tol, f"add_penalty_grad l1={l1} l2={l2}",
                  skip=agreeing(g.a, read, tol))
            ref = l1 * np.abs(pv).sum() + l2 * (pv * pv).sum()
        agree(np.float64(total), ref, 1e-9 * abs(ref) + 1e-30, "add_penalty_grad penalty")

    check_call(f"add_penalty_grad(param, grad, {l1}, {l2})",
               lambda: _C.add_penalty_grad(p.a, g.a, l1, l2), [p, g], bad, check)

    x = data.draw(arg("x", (n,)))
    with np.errstate(all="ignore"):
        check_call("sum_squares(x)", lambda: _C.sum_squares(x.a), [x],
                   check=lambda s: agree(np.float64(s), (x.v ** 2).sum(),
                                         1e-9 * (x.v ** 2).sum() + 1e-30, "sum_squares"))
        check_call("sum_abs(x)", lambda: _C.sum_abs(x.a), [x],
                   check=lambda s: agree(np.float64(s), np.abs(x.v).sum(),
                                         1e-9 * np.abs(x.v).sum() + 1e-30, "sum_abs"))
    y = data.draw(arg("x", (n,), in_place=True))
    y0 = y.v.copy() if y.v is not None else None
    factor = data.draw(st.sampled_from([0.5, -2.0, 0.0, 1e30, float("nan")]))
    with np.errstate(all="ignore"):
        check_call(f"scale_(x, {factor})", lambda: _C.scale_(y.a, factor), [y],
                   check=lambda _: agree(y.a, y0 * np.float32(factor), 0.0, f"scale_ {factor}",
                                         skip=agreeing(y.a, as_read(y0) * np.float32(factor), 0.0)))
    y = data.draw(arg("y", (n,), in_place=True))
    x = data.draw(arg("x", (n,)))
    y0 = y.v.copy() if y.v is not None else None
    with np.errstate(all="ignore"):
        def axpby_ref(yv, xv):  # the two products and the sum each round once in float32
            return np.float32(factor) * yv - 0.5 * xv, 2 * EPS32 * (np.abs(factor * yv) + np.abs(xv))
        check_call(f"axpby_(y, x, {factor}, -0.5)", lambda: _C.axpby_(y.a, x.a, factor, -0.5),
                   [y, x], check=lambda _: agree(
                       y.a, *axpby_ref(y0, x.v), "axpby_",
                       skip=agreeing(y.a, *axpby_ref(as_read(y0), as_read(x.v)))))
    z = data.draw(arg("x", (n,), in_place=True))
    z0 = z.v.copy() if z.v is not None else None
    low, high = data.draw(st.sampled_from([(-1.0, 1.0), (0.0, 0.0), (-np.inf, 0.5), (1.0, -1.0),
                                           (float("nan"), 1.0), (-1e300, 1e300)]))
    with np.errstate(all="ignore"):
        check_call(f"clip_(x, {low}, {high})", lambda: _C.clip_(z.a, low, high), [z],
                   bad={"low", "high"} if not (low <= high) else (),
                   check=lambda _: agree(z.a, np.minimum(np.maximum(z0, np.float32(low)),
                                                         np.float32(high)), 0.0, "clip_"))


# ----------------------------------------------------------------------------- random streams
SEEDS = st.sampled_from([0, 1, 12345, 2**32 + 7, 2**64 - 1, -1, 2**64, True, 1.5])


@fuzz(data=st.data(), n=st.one_of(WIDE, st.sampled_from([-1, 2**40, 2**62])), seed=SEEDS,
      offset=SEEDS, p=st.sampled_from([0.0, 0.1, 0.5, 0.99, 1 - 2**-24, 1 - 2**-26, 1.0, -0.1,
                                  float("nan")]))
def test_random_and_dropout(data, n, seed, offset, p):
    """random_uniform, dropout_forward, dropout_backward."""
    def bad_int(v, name):
        if isinstance(v, (bool, float)) or not 0 <= v < 2**64:
            return {name}
        return set()
    bad = bad_int(seed, "seed") | bad_int(offset, "offset")
    huge = n >= 2**40

    def check_u(u):
        assert u.shape == (n,) and u.dtype == np.float32
        agree(u, uniform_ref(n, seed, offset), 0.0, f"random_uniform({n}, {seed}, {offset})")

    check_call(f"random_uniform({n}, {seed}, {offset})",
               lambda: _C.random_uniform(n, seed, offset), [],
               bad | ({"n"} if n < 0 or huge else set()), None if huge else check_u)
    if huge:
        return
    x_shape = (max(n, 0) // 5, 5) if n % 2 else (max(n, 0),)
    x = data.draw(arg("x", x_shape))
    bad_p = {"p"} if not (0 <= p <= 1 - 2**-24) else set()  # above, p is 1.0 in float32
    for fn, name in ((_C.dropout_forward, "x"), (_C.dropout_backward, "grad_y")):
        x.name = name
        out = draw_out(data, x_shape, x, elementwise=True)
        kw = {} if out is None else {"out": out.a}
        x_v = x.v.copy()

        def check_d(y):
            returned_in(out, y)
            expected, keep = dropout_ref(x_v, p, seed, offset)
            agree(y, expected, 2 * EPS32 * (1 + p / (1 - p)) * np.abs(expected),
                  f"{fn.__name__}(p={p})", skip=dropped_non_finite(x_v, keep))

        with np.errstate(all="ignore"):
            check_call(f"{fn.__name__}({name}, {p}, {seed}, {offset}, out={out})",
                       lambda: fn(x.a, p, seed, offset, **kw), [x] + ([] if out is None else [out]),
                       bad | bad_p, check_d)
        if out is not None and out.a is x.a:
            return  # x was written over


@fuzz(data=st.data(), n=st.integers(0, 3), c=st.sampled_from([None, 1, 3]),
      h=st.sampled_from([1, 2, 5, 8, 17]), w=st.sampled_from([1, 3, 8, 16, 17, 33]),
      shift=st.sampled_from([0.0, 0.5, 2.0, 3.7, 1e6, -1.0, float("nan")]),
      flip=st.booleans(), rot=st.sampled_from([0.0, 15.0, 180.0, float("inf")]),
      noise=st.sampled_from([0.0, 0.0, 0.1]), seed=st.integers(0, 2**64 - 1),
      offset=st.integers(0, 2**40), rank_bug=st.sampled_from([False] * 6 + [True]))
def test_augment_images(data, n, c, h, w, shift, flip, rot, noise, seed, offset, rank_bug):
    shape = (n, h, w) if c is None else (n, c, h, w)
    if rank_bug:
        shape = (n, h * w)
    x = data.draw(arg("x", shape, profiles=("normal", "special")))
    bad = ({"x"} if rank_bug else set()) | ({"max_shift"} if not shift >= 0 else set()) | \
        ({"max_rotation"} if not math.isfinite(rot) else set())

    def check(y):
        assert y.shape == shape and y.dtype == np.float32
        with np.errstate(all="ignore"):
            expected = augment_ref(x.v, seed, offset, max_shift=shift, flip=flip, max_rotation=rot)
        big = np.abs(np.where(np.isfinite(x.v), x.v, 0)).max(initial=0)
        agree(y, expected, 1e-5 * (big + 1) + 8 * noise,
              f"augment_images {shape} shift={shift} flip={flip} rot={rot} noise={noise}",
              # A rotation's float32 taps may give a non-finite pixel a tiny weight where the
              # float64 reference gives it none: then the result is non-finite, never wrong.
              skip=np.isnan(expected) | np.isinf(expected)
              | (~np.isfinite(y) & ~np.isfinite(x.v).all()))

    check_call(f"augment_images(x, seed={seed}, offset={offset}, max_shift={shift}, flip={flip}, "
               f"max_rotation={rot}, noise_std={noise})",
               lambda: _C.augment_images(x.a, seed=seed, offset=offset, max_shift=shift, flip=flip,
                                         max_rotation=rot, noise_std=noise), [x], bad, check)


# ----------------------------------------------------------------------------- the activation table
@fuzz(args=st.sampled_from([(), (1,), ("relu",), (None,)]),
      name=st.sampled_from(["relu", "linear", "gelu", "GELU", "", "softmax", "identity", "elu"]))
def test_activation_table(args, name):
    """activations() takes no argument and lists exactly the names the kernels accept."""
    trace(f"activations(*{args!r})")
    if args:
        with pytest.raises(TypeError):
            _C.activations(*args)
        return
    table = _C.activations()
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    trace(f"activation_forward({name!r}, ...)")
    if name in table:
        assert table[table[name]["canonical"]]["canonical"] == table[name]["canonical"]
        assert np.isfinite(_C.activation_forward(name, x, table[name]["alpha"])).all()
    else:
        with pytest.raises(ValueError) as err:
            _C.activation_forward(name, x)
        assert all(known in str(err.value) for known in table), str(err.value)


# ----------------------------------------------------------------------------- configuration
# (more threads than this machine's 2 cores would only measure OpenMP's spinning, issue 18)
@fuzz(threads=st.sampled_from([1, 2, 100000, 0, -1, 2**31, True, 2.0]),
      via=st.sampled_from(["_C", "fastnn"]), isa=st.sampled_from(["avx512", "avx2", "generic",
                                                                    "AVX2", "", "sse"]),
      peak_threads=st.sampled_from([1, 2, 100000, 0, -4]),
      seconds=st.sampled_from([0.0, 0.01, -1.0, float("nan")]),
      flush=st.sampled_from([True, False, np.bool_(False), 1, 0.0, None, "no"]))
def test_threads_isa_and_config(threads, via, isa, peak_threads, seconds, flush):
    """set_num_threads then a parallel GEMM, set_isa (and _elementwise_isa), fma_peak_gflops,
    set_flush_denormals, config."""
    old_threads, old_isa = _C.get_num_threads(), _C.get_isa()
    many = {"n"} if threads > 1024 else set()   # refused, or capped to what runs here
    size = 2048 if many else 300   # a product that asks for 32768 threads, or one for 68
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    a64 = a[:8].astype(np.float64)   # rows checked
    expected, scale = a64 @ b, np.abs(a64) @ np.abs(b)
    tol = 4 * EPS32 * (math.sqrt(size) + 2) * scale
    try:
        bad = {"n"} if isinstance(threads, (bool, float)) or threads < 1 else set()
        setter = _C.set_num_threads if via == "_C" else fastnn.set_num_threads
        trace(f"{via}.set_num_threads({threads!r})")
        try:
            setter(threads)
        except (TypeError, ValueError) as e:
            assert (bad or many) and names_argument(str(e), "n"), f"set_num_threads: {e!r}"
        else:
            assert not bad, f"{via}.set_num_threads({threads!r}) was accepted"
            assert 1 <= _C.get_num_threads() <= _C.max_num_threads()
            trace(f"set_num_threads({threads!r}), then a {size}x{size} matmul")
            agree(fastnn.matmul(a, b)[:8], expected, tol, f"matmul on {threads} threads")
        runs = isa in _C.supported_isas()
        check_call(f"set_isa({isa!r})", lambda: _C.set_isa(isa), [], set() if runs else {isa or "''"})
        assert _C.get_isa() == (isa if runs else old_isa)
        assert _C._elementwise_isa() == _C.get_isa(), "the elementwise kernels follow set_isa"
        _C.set_num_threads(old_threads)
        trace(f"set_isa({isa!r}), then a {size}x{size} matmul")
        agree(fastnn.matmul(a, b)[:8], expected, tol, f"matmul on {_C.get_isa()}")
        cfg = fastnn.config()
        assert cfg["isa"] == _C.get_isa() and cfg["isa_supported"] == _C.supported_isas()
        bad = {"threads"} if not 1 <= peak_threads <= _C.max_num_threads() else set()
        bad |= {"seconds"} if not seconds >= 0 else set()
        peak = check_call(f"fma_peak_gflops(threads={peak_threads}, seconds={seconds})",
                          lambda: _C.fma_peak_gflops(threads=peak_threads, seconds=seconds), [],
                          bad)
        assert peak is None or peak >= 0.0
        is_bool = isinstance(flush, (bool, np.bool_))
        setter = _C.set_flush_denormals if via == "_C" else fastnn.set_flush_denormal
        name = "on" if via == "_C" else "mode"
        done = check_call(f"{via} flush denormals ({flush!r})", lambda: setter(flush) or True, [],
                          set() if is_bool and (via == "fastnn" or isinstance(flush, bool)) else {name})
        if done:
            assert fastnn.config()["flush_denormals"] == bool(flush)
            agree(fastnn.matmul(a, b)[:8], expected, tol, f"matmul, flush_denormals={flush!r}")
    finally:
        _C.set_num_threads(old_threads)
        _C.set_isa(old_isa)
        _C.set_flush_denormals(True)


@fuzz(data=st.data(), path=st.sampled_from(["amx", "avx512_bf16", "fp32", "AMX", "", "fp16"]),
      blocking_of=st.sampled_from(["amx", "avx512_bf16", "fp32", "", "tf32"]),
      shape=st.sampled_from([(0,), (1,), (17,), (40,), (3, 33), (2, 3, 5)]), vector=st.booleans(),
      kernels=st.tuples(st.booleans(), st.booleans()), rates=st.tuples(st.floats(), st.floats()))
def test_bf16_bindings(data, path, blocking_of, shape, vector, kernels, rates):
    """set_bf16_path / bf16_path / supported_bf16_paths / bf16_path_description / bf16_blocking,
    then a bf16 product on the path in use held to the float64 product of the rounded inputs;
    bf16_convert on drawn arrays held to the reference in _ref.py; bf16_auto_path and the
    rule behind it (_bf16_choice, any rates, NaN and infinities too) held to the rule written
    again."""
    old = _C.bf16_path()
    assert _C.bf16_auto_path() in _C.supported_bf16_paths()
    (amx, dot_kernel), (dot, fma) = kernels, rates
    want = "amx" if amx else "avx512_bf16" if dot_kernel and dot >= 1.5 * fma else "fp32"
    assert _C._bf16_choice(amx, dot_kernel, dot, fma) == want
    try:
        runs = path in _C.supported_bf16_paths()
        check_call(f"set_bf16_path({path!r})", lambda: _C.set_bf16_path(path), [],
                   set() if runs else {path or "''"})
        assert _C.bf16_path() == (path if runs else old)
        assert fastnn.config()["bf16"] == _C.bf16_path_description()
        assert _C.bf16_path_description().startswith(_C.bf16_path())
        kernel = blocking_of in ("amx", "avx512_bf16")
        blk = check_call(f"bf16_blocking({blocking_of!r})", lambda: _C.bf16_blocking(blocking_of), [],
                         set() if kernel else {blocking_of or "''"})
        if blk is not None:
            kc, nc, mc = blk
            assert kc >= 32 and kc % 32 == 0 and nc >= 1 and mc >= 1
        x = data.draw(arg("x", shape))

        def check_convert(res):
            assert res.dtype == np.uint16 and res.shape == x.a.shape
            np.testing.assert_array_equal(res, _ref.bf16_bits(x.v))
        check_call(f"bf16_convert(x, vector={vector})", lambda: _C.bf16_convert(x.a, vector=vector),
                   [x], check=check_convert)
        rng = np.random.default_rng(len(shape))
        a = rng.standard_normal((37, 70)).astype(np.float32)
        b = rng.standard_normal((70, 45)).astype(np.float32)
        rounded = _C.bf16_path() != "fp32"
        A, B = (bf16_round(a), bf16_round(b)) if rounded else (a, b)
        A, B = A.astype(np.float64), B.astype(np.float64)
        trace(f"matmul(precision='bf16') on {_C.bf16_path()}")
        agree(fastnn.matmul(a, b, precision="bf16"), A @ B, 4 * EPS32 * 72 * (np.abs(A) @ np.abs(B)),
              f"bf16 product on {_C.bf16_path()}")
    finally:
        _C.set_bf16_path(old)


def arch_runs_reference(archs, major, minor):
    """csrc/core/cuda.h's rule, written again: machine code ("-real") within its major from
    its minor up, PTX ("-virtual") from its capability up, a bare number both."""
    for arch in archs.split(","):
        digits, _, kind = arch.partition("-")
        if not 2 <= len(digits) <= 4 or any(c not in "0123456789" for c in digits):
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind != "virtual" and major == a_major and minor >= a_minor:
            return True
        if kind != "real" and (major, minor) >= (a_major, a_minor):
            return True
    return False


@fuzz(archs=st.one_of(st.text(max_size=24), st.sampled_from(
          ["80-real,90", "90", "80-virtual", "86-real,,", "999999999999", "8", "-real", "80-",
           "90a-real", "native", "80-real;90", "1000-real"])),
      major=st.one_of(st.integers(-3, 13), st.sampled_from([2**31, -2**31 - 1, 2**40, 8.0, None])),
      minor=st.one_of(st.integers(-3, 12), st.sampled_from([2**31, 9.0])))
def test_cuda_bindings(archs, major, minor):
    """cuda_arch_runs on drawn architecture lists and capabilities, held to the rule written
    here (out-of-range or non-int capabilities refused by name); cuda_info's keys and types;
    cuda_selftest either passes (a GPU) or raises a RuntimeError that says why not."""
    ok = all(isinstance(v, int) and -2**31 <= v < 2**31 for v in (major, minor))
    check_call(f"cuda_arch_runs({archs!r}, {major!r}, {minor!r})",
               lambda: _C.cuda_arch_runs(archs, major, minor), [],
               set() if ok else {"major", "minor"},
               check=lambda r: r is arch_runs_reference(archs, major, minor))
    info = _C.cuda_info()
    assert isinstance(info["built"], bool) and isinstance(info["available"], bool)
    assert isinstance(info["reason"], str) and bool(info["reason"]) != info["available"]
    try:
        _C.cuda_selftest()
        assert info["available"], "the self-test passed where cuda_info says no device"
    except RuntimeError as e:
        assert not info["available"] and info["reason"] in str(e)


DEVICE_ARRAY_DTYPES = ["float32", "int64", "int32", "uint8"]


@fuzz(shape=st.lists(st.sampled_from([0, 1, 2, 3, 7, 64, -1, 2**40]), max_size=4),
      dtype=st.sampled_from(DEVICE_ARRAY_DTYPES + ["float64", "float16", "bool", "int8", "", "f4"]),
      device=st.sampled_from(["cpu", "cpu", "cuda", "cuda:0", "cuda:7", "gpu", "", "cuda:", "cuda:-1",
                              "cuda:99999999999", "CPU"]),
      layout=st.sampled_from(["c", "transposed", "strided"]), via=st.sampled_from(["numpy", "dlpack"]))
def test_device_array_bindings(shape, dtype, device, layout, via):
    """DeviceArray.empty / from_numpy / from_dlpack / numpy / __dlpack__ and the allocator's
    stats on drawn shapes, dtypes, devices and layouts: the values back unchanged, or an
    error naming the argument (a device this build or machine lacks: RuntimeError saying why)."""
    valid_shape = all(s >= 0 for s in shape)
    # too big to allocate; with a zero among the sizes (no bytes), only sizes whose product
    # overflows, a shape NumPy refuses too (ValueError)
    nonzero = math.prod(s for s in shape if s)
    huge = valid_shape and nonzero >= (2**60 if 0 in shape else 2**40)
    valid_dtype = dtype in DEVICE_ARRAY_DTYPES
    on_cpu = device == "cpu"
    well_formed = on_cpu or (device in ("cuda", "cuda:0", "cuda:7", "cuda:99999999999"))
    stats_before = _C.device_memory_stats("cpu")
    try:
        a = _C.DeviceArray.empty(shape, dtype, device)
    except (TypeError, ValueError) as e:
        assert not (valid_shape and valid_dtype and well_formed) or "device" in str(e) or (
            huge and 0 in shape and "too big" in str(e)), e
        a = None
    except MemoryError:
        assert huge and 0 not in shape
        a = None
    except RuntimeError as e:
        assert not on_cpu and ("CUDA" in str(e) or "cuda" in str(e)), e
        a = None
    if a is not None:
        assert on_cpu and valid_shape and valid_dtype and not huge
        assert a.shape == tuple(shape) and a.dtype == dtype and a.numpy().shape == tuple(shape)
    if not (valid_dtype and valid_shape) or huge or not on_cpu:
        return
    rng = np.random.default_rng(len(shape))
    base = (rng.standard_normal((*shape, 2)) * 40).astype(dtype)
    x = base[..., 0] if layout == "strided" else np.ascontiguousarray(base[..., 0])
    if layout == "transposed":
        x = x.T
    if via == "numpy":
        got = _C.DeviceArray.from_numpy(x, device)
        assert got.data_ptr != (x.ctypes.data if x.size else -1)
    else:
        contiguous = x.flags.c_contiguous or x.size <= 1
        try:
            got = _C.DeviceArray.from_dlpack(x.__dlpack__())
        except ValueError as e:
            assert not contiguous and "not C-contiguous" in str(e), e
            return
        assert contiguous
    np.testing.assert_array_equal(got.numpy(), x)
    np.testing.assert_array_equal(np.from_dlpack(got), x)
    del got  # only `a` is still held
    stats = _C.device_memory_stats("cpu")
    step = 512 if a.nbytes < 1 << 20 else 2 << 20
    assert stats["in_use_bytes"] == stats_before["in_use_bytes"] + max(1, -(-a.nbytes // step)) * step
    _C.device_empty_cache(device)
    assert _C.device_memory_stats(device)["cached_bytes"] == 0


@fuzz(rows=st.sampled_from([0, 1, 5, 64]), cols=st.sampled_from([1, 3, 16]),
      begin=st.integers(-3, 70), end=st.integers(-3, 70),
      shape=st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 15, -1, 2**62]), max_size=3),
      value=st.sampled_from([0.0, -1.5, float("inf"), float("nan")]), dtype=st.sampled_from(DEVICE_ARRAY_DTYPES))
def test_device_array_views(rows, cols, begin, end, shape, value, dtype):
    """DeviceArray.view_rows / reshape / fill_ / copy_ on drawn ranges, shapes and values: the
    NumPy slice's values and shape, or a TypeError / ValueError; never a crash."""
    x = (np.arange(rows * cols) % 7).astype(dtype).reshape(rows, cols)
    a = _C.DeviceArray.from_numpy(x, "cpu")
    try:
        v = a.view_rows(begin, end)
    except ValueError:
        assert not 0 <= begin <= end <= rows
        v = None
    if v is not None:
        np.testing.assert_array_equal(v.numpy(), x[begin:end])
        try:
            r = v.reshape(shape)
        except ValueError:
            assert (any(s < 0 for s in shape) or math.prod(s for s in shape if s) >= 2**60
                    or math.prod(shape) != (end - begin) * cols)
        else:
            np.testing.assert_array_equal(r.numpy(), x[begin:end].reshape(shape))
        try:
            v.fill_(value)
        except TypeError:
            assert dtype != "float32"
        else:
            expected = x.copy()
            expected[begin:end] = value
            np.testing.assert_array_equal(a.numpy(), expected)
            a.copy_(x)
            np.testing.assert_array_equal(a.numpy(), x)


@fuzz(precision=st.sampled_from(["fp32", "tf32", "", "TF32", "bf16", "fp32 ", 32, None]),
      via=st.sampled_from(["_C", "fastnn"]))
def test_matmul_precision(precision, via):
    """set_matmul_precision / get_matmul_precision: "fp32" and "tf32" taken, anything else
    refused naming the argument, the setting unchanged; the CPU's GEMM unaffected."""
    before = _C.get_matmul_precision()
    setter = _C.set_matmul_precision if via == "_C" else fastnn.set_matmul_precision
    try:
        done = check_call(f"{via}.set_matmul_precision({precision!r})", lambda: setter(precision) or True, [],
                          set() if precision in ("fp32", "tf32") else {"precision"})
        assert _C.get_matmul_precision() == (precision if done else before)
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        np.testing.assert_array_equal(fastnn.matmul(a, a.T), a.astype(np.float64) @ a.T)
    finally:
        _C.set_matmul_precision("fp32")


DEVICE_OP_ARGS = ["device"] * 6 + ["numpy", "int64", "short", "alias", "tensor", "list"]


@fuzz(op=st.sampled_from(["gemm", "activation_forward", "activation_backward", "cross_entropy",
                          "gather_rows", "dropout_forward", "sgd_step", "adam_step", "column_sum", "mse",
                          "binary_cross_entropy", "sum_squares", "sum_abs", "add_penalty_grad", "clip_",
                          "adagrad_step", "rmsprop_step", "softmax_forward", "softmax_backward",
                          "cross_entropy_soft"]),
      act=st.sampled_from(ACTS), n=st.sampled_from([0, 1, 7, 16, 1000]), cols=st.sampled_from([1, 3, 8]),
      kinds=st.lists(st.sampled_from(DEVICE_OP_ARGS), min_size=4, max_size=4),
      with_bias=st.booleans(), momentum=st.sampled_from([0.0, 0.9]))
def test_device_op_bindings(op, act, n, cols, kinds, with_bias, momentum):
    """gemm, activation_forward/backward, cross_entropy, gather_rows, dropout_forward, sgd_step,
    adam_step, column_sum, mse, binary_cross_entropy, sum_squares, sum_abs, add_penalty_grad,
    clip_, adagrad_step, rmsprop_step, softmax_forward/backward and cross_entropy_soft on a device
    array ("cpu"
    DeviceArrays) with the other arguments drawn: device arrays, host arrays, int64 device
    arrays, a size short, the first array again, a fastnn.Tensor, a list. With device arrays
    (or Tensors) only, the NumPy op's result; with a host, int64 or short one, a TypeError or
    ValueError; the first array again, either; never a crash."""
    from fastnn.tensor import Tensor

    rng = np.random.default_rng(n + cols)
    host = [np.abs(rng.standard_normal((n, cols))).astype(np.float32) * 3 for _ in range(4)]
    bias = rng.standard_normal(cols).astype(np.float32)
    if op == "activation_backward":
        host[0] = _C.activation_forward(act, host[0] - 1.5)  # y
    first = _C.DeviceArray.from_numpy(host[0], "cpu")

    def make(kind, values):
        if kind == "short" and values.size:
            return _C.DeviceArray.from_numpy(values.ravel()[:-1], "cpu")
        array = _C.DeviceArray.from_numpy(values.astype(np.int64) if kind == "int64" else values, "cpu")
        return {"alias": first, "numpy": values, "list": values.tolist(), "tensor": Tensor(array)}.get(kind, array)

    args = [first] + [make(k, v) for k, v in zip(kinds[1:], host[1:])]
    used = {"gemm": [1], "cross_entropy": [1], "gather_rows": [1], "dropout_forward": [1],
            "activation_forward": [1], "activation_backward": [1, 3] + [2] * (act == "gelu"),
            "sgd_step": [1] + [2] * (momentum != 0), "adam_step": [1, 2, 3], "column_sum": [1], "mse": [1],
            "binary_cross_entropy": [1], "sum_squares": [], "sum_abs": [], "add_penalty_grad": [1],
            "clip_": [], "adagrad_step": [1, 2], "rmsprop_step": [1, 2] + [3] * (momentum != 0),
            "softmax_forward": [], "softmax_backward": [1], "cross_entropy_soft": [1]}[op]  # x: gelu's only
    used_kinds = [kinds[i] if kinds[i] != "short" or host[0].size else "device" for i in used]
    bias_arg = make(kinds[0], bias) if with_bias and op == "activation_backward" else None
    if bias_arg is not None:
        used_kinds.append(kinds[0] if kinds[0] != "short" else "short")
    plain = all(k in ("device", "tensor") for k in used_kinds)
    bad = any(k in ("numpy", "int64", "list", "short") for k in used_kinds)
    if op == "cross_entropy":  # integer labels: an int64 device array is right, the float first not
        labels = rng.integers(0, cols, n)
        args[1] = make(kinds[1], labels)
        plain = n > 0 and kinds[1] in ("device", "tensor", "int64")
        bad = n == 0 or kinds[1] in ("numpy", "list", "short", "alias")
    if op == "gather_rows":  # an index: int64 on the device, or integers on the host
        labels = rng.integers(0, max(n, 1), n) if n else np.zeros(0, np.int64)
        args[1] = make(kinds[1], labels)
        on_host = ("numpy", "list") if n else ("numpy",)  # an empty list is float64 to NumPy
        plain = kinds[1] in ("device", "tensor", "int64", *on_host)
        bad = kinds[1] == "alias"  # float32: not an index
    if op in ("mse", "binary_cross_entropy", "cross_entropy_soft", "softmax_backward"):
        # two inputs (the same one twice is fine); an empty pred has no mean, softmax's rows may be none
        empty_ok, kind = op == "softmax_backward", used_kinds[0]  # an empty array cannot be short
        plain = (n > 0 or empty_ok) and kind in ("device", "tensor", "alias")
        bad = (n == 0 and not empty_ok) or kind in ("numpy", "int64", "list", "short")
    if op == "column_sum":  # out: a bias-shaped array (the first array again never fits beside it)
        args[1] = make(kinds[1], bias)
        plain = kinds[1] in ("device", "tensor")
        bad = not plain
    expected = [h.copy() for h in host]
    expected_bias = bias.copy()
    trace(f"{op}({act!r}, n={n}, cols={cols}, kinds={kinds}, bias={with_bias}, momentum={momentum})")
    try:
        if op == "gemm":  # first @ args[1].T, the activation as the epilogue
            got = _C.gemm(args[0], args[1], transpose_b=True, activation=act)
            want = _C.gemm(expected[0], expected[1], transpose_b=True, activation=act)
        elif op == "cross_entropy":
            got_loss, got = _C.cross_entropy(args[0], args[1])
            want_loss, want = _C.cross_entropy(expected[0], labels)
            assert got_loss == want_loss
        elif op == "dropout_forward":  # an unaligned offset: a partial first Philox block
            got, want = (_C.dropout_forward(args[0], 0.3, 7, 5, out=args[1]),
                         _C.dropout_forward(expected[0], 0.3, 7, 5))
        elif op == "gather_rows":
            got, want = _C.gather_rows(args[0], args[1]), _C.gather_rows(expected[0], labels)
        elif op == "activation_forward":
            got = _C.activation_forward(act, args[0], out=args[1])
            want = _C.activation_forward(act, expected[0])
        elif op == "activation_backward":
            got = _C.activation_backward(act, args[0], args[1], x=args[2], out=args[3], bias_grad=bias_arg)
            want = _C.activation_backward(act, expected[0], expected[1], x=expected[2],
                                          bias_grad=expected_bias if with_bias else None)
        elif op == "column_sum":
            _C.column_sum(args[0], args[1], beta=0.5)
            got, want = args[1], expected_bias
            _C.column_sum(expected[0], want, beta=0.5)
        elif op in ("mse", "binary_cross_entropy"):
            got_loss, got = getattr(_C, op)(args[0], args[1])
            want_loss, want = getattr(_C, op)(expected[0], expected[0] if kinds[1] == "alias" else expected[1])
            assert got_loss == want_loss
        elif op == "cross_entropy_soft":
            got_loss, got = _C.cross_entropy_soft(args[0], args[1])
            want_loss, want = _C.cross_entropy_soft(expected[0], expected[0] if kinds[1] == "alias" else expected[1])
            assert got_loss == want_loss
        elif op == "softmax_forward":
            got, want = _C.softmax_forward(args[0]), _C.softmax_forward(expected[0])
        elif op == "softmax_backward":
            got = _C.softmax_backward(args[0], args[1])
            want = _C.softmax_backward(expected[0], expected[0] if kinds[1] == "alias" else expected[1])
        elif op in ("sum_squares", "sum_abs"):
            assert getattr(_C, op)(args[0]) == getattr(_C, op)(expected[0])
            got, want = args[0], expected[0]
        elif op == "add_penalty_grad":
            assert _C.add_penalty_grad(args[0], args[1], 0.1, 0.2) == _C.add_penalty_grad(
                expected[0], expected[1], 0.1, 0.2)
            got, want = args[1], expected[1]
        elif op == "adagrad_step":
            kw = dict(lr=0.1, eps=1e-10, weight_decay=0.01, lr_decay=0.1, step=2)
            _C.adagrad_step(args[0], args[1], args[2], **kw)
            _C.adagrad_step(expected[0], expected[1], expected[2], **kw)
            got, want = args[0], expected[0]
        elif op == "rmsprop_step":  # momentum's buffer only with momentum
            kw = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01, momentum=momentum, centered=False)
            _C.rmsprop_step(args[0], args[1], args[2], args[3] if momentum else None, None, **kw)
            _C.rmsprop_step(expected[0], expected[1], expected[2], expected[3] if momentum else None, None, **kw)
            got, want = args[0], expected[0]
        elif op == "clip_":
            _C.clip_(args[0], 0.5, 2.0)
            _C.clip_(expected[0], 0.5, 2.0)
            got, want = args[0], expected[0]
        elif op == "sgd_step":
            _C.sgd_step(args[0], args[1], args[2], lr=0.1, momentum=momentum, weight_decay=0.01)
            _C.sgd_step(expected[0], expected[1], expected[2], lr=0.1, momentum=momentum, weight_decay=0.01)
            got, want = args[0], expected[0]
        else:
            kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, step=2)
            _C.adam_step(args[0], args[1], args[2], args[3], **kw)
            _C.adam_step(expected[0], expected[1], expected[2], expected[3], **kw)
            got, want = args[0], expected[0]
    except (TypeError, ValueError) as e:
        assert not plain, e
        return
    assert not bad, f"accepted {used_kinds}"
    if plain:
        got = got._array if isinstance(got, Tensor) else got
        np.testing.assert_array_equal(got.numpy().reshape(want.shape), want)
        if bias_arg is not None:
            got_bias = bias_arg._array if isinstance(bias_arg, Tensor) else bias_arg
            np.testing.assert_array_equal(got_bias.numpy(), expected_bias)


BLOCK_SIZES = [1, 2, 5, 16, 17, 64, 300, 4096, 65536, 65537, 0, -3, 2**40, True, 8.0, None]
CACHE_SPECS = [None, "32K:8,512K:8,32M:16", "48K:12,2M:16,300M:15", "4K:2", "1K:1:16,2K:2:16",
               "", "48K:", "48Q:12", "2M:16,48K:12", "48K:12:63", "1:1", "48K:12,2M:16,1G:16,2G:16",
               "48K:0", 48, "0K:8", "9999999999999G"]


@fuzz(kc=st.sampled_from(BLOCK_SIZES), nc=st.sampled_from(BLOCK_SIZES),
      mc=st.sampled_from(BLOCK_SIZES), isa=st.sampled_from(["", "avx512", "avx2", "generic", "sse"]),
      source=st.sampled_from(["override", "tuned", "model", ""]),
      cache=st.sampled_from(CACHE_SPECS), shape=st.tuples(st.integers(1, 70), st.integers(1, 70),
                                                          st.integers(1, 70)))
def test_blocking_bindings(kc, nc, mc, isa, source, cache, shape):
    """set_blocking / reset_blocking / blocking / model_blocking / fma_peak_per_core, then a
    GEMM held to float64 under whatever blocking was accepted."""
    runs = isa == "" or isa in _C.supported_isas()
    bad_isa = set() if runs else {"isa"}
    def block_bad(value, name, hi):
        if value is None and name == "mc":
            return set()
        if value is None or isinstance(value, (bool, float)) or not 1 <= value <= hi:
            return {name}
        return set()
    bad = block_bad(kc, "kc", 65536) | block_bad(nc, "nc", 2**20) | block_bad(mc, "mc", 2**20)
    bad |= set() if source in ("override", "tuned") else {"source"}
    old_isa = _C.get_isa()
    try:
        if runs and isa:
            _C.set_isa(isa)
        done = check_call(f"set_blocking({kc!r}, {nc!r}, {mc!r}, source={source!r}, isa={isa!r})",
                          lambda: _C.set_blocking(kc, nc, mc, source=source, isa=isa) or True, [],
                          bad | bad_isa, maybe={"kc", "nc", "mc"} if bad_isa else ())
        info = check_call(f"blocking({isa!r})", lambda: _C.blocking(isa), [], bad_isa)
        if done and info is not None:
            assert info["kc"] == kc and info["nc"] >= nc and info["nc"] % info["nr"] == 0
            assert info["source"] == source
            if mc is not None:
                assert info["mc"] >= mc and info["mc"] % info["mr"] == 0
        m, n, k = shape
        rng = np.random.default_rng(m * 10000 + n * 100 + k)
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        expected = a.astype(np.float64) @ b
        tol = 4 * EPS32 * (math.sqrt(k) + 2) * (np.abs(a).astype(np.float64) @ np.abs(b))
        trace(f"gemm {m}x{n}x{k} under {_C.blocking()}")
        agree(fastnn.matmul(a, b), expected, tol, f"matmul under {_C.blocking()}")
        check_call(f"reset_blocking({isa!r})", lambda: _C.reset_blocking(isa), [], bad_isa)
        if not bad_isa:
            assert _C.blocking(isa)["source"] == "model"
        valid_specs = {None, "32K:8,512K:8,32M:16", "48K:12,2M:16,300M:15", "4K:2", "1K:1:16,2K:2:16"}
        cache_bad = set() if cache in valid_specs else {"cache"}
        built = set() if isa in ("", "avx512", "avx2", "generic") else {"isa"}  # run here or not
        got = check_call(f"model_blocking({isa!r}, {cache!r})", lambda: _C.model_blocking(isa, cache),
                         [], built | cache_bad)
        if got is not None:
            assert all(isinstance(v, int) and v >= 1 for v in got)
        peak = check_call(f"fma_peak_per_core({isa!r})", lambda: _C.fma_peak_per_core(isa), [], bad_isa)
        assert peak is None or peak > 0.0
    finally:
        _C.reset_blocking("")
        _C.set_isa(old_isa)


# ----------------------------------------------------------------------------- convolution, pooling, batch norm
KERNELS = [1, 2, 3, 5, (3, 2), 0, (3, 3, 3)]
STRIDES = [1, 1, 2, 3, 0]
PADS = [0, 0, 1, 2, (1, 0), -1]


def pair_ok(v, low):
    pair = v if isinstance(v, tuple) else (v, v)
    return len(pair) == 2 and all(isinstance(e, int) and e >= low for e in pair)


def geometry_bad(shape, k, s, p, d):
    """The conv arguments a call must refuse, given an NCHW input shape."""
    bad = {name for name, v, low in (("kernel_size", k, 1), ("stride", s, 1), ("padding", p, 0),
                                     ("dilation", d, 1)) if not pair_ok(v, low)}
    if bad:
        return bad
    (kh, kw), (ph, pw), (dh, dw) = [_ref.pair(v) for v in (k, p, d)]
    if shape[1] == 0 or shape[2] + 2 * ph < dh * (kh - 1) + 1 or shape[3] + 2 * pw < dw * (kw - 1) + 1:
        return {"x", "input_shape", "kernel_size"}  # named by its shapes
    return set()


@fuzz(data=st.data(), fn=st.sampled_from(["conv2d_reference", "conv2d_forward", "conv2d_backward",
                                          "depthwise", "depthwise_backward"]),
      n=st.sampled_from([0, 1, 2, 3]), c=st.sampled_from([1, 2, 3, 4]),
      h=st.sampled_from([1, 2, 3, 5, 7, 8]), w=st.sampled_from([1, 3, 5, 8]),
      k=st.sampled_from(KERNELS), s=st.sampled_from(STRIDES), p=st.sampled_from(PADS),
      d=st.sampled_from([1, 1, 2, 0]), groups=st.sampled_from([1, 2, "c"]), mult=st.sampled_from([1, 2]),
      act=st.sampled_from(["identity", "relu", "tanh"]),
      precision=st.sampled_from(["fp32", "fp32", "bf16", "fp8"]))
def test_conv_bindings(data, fn, n, c, h, w, k, s, p, d, groups, mult, act, precision):
    """conv2d_reference / conv2d_forward / conv2d_backward / depthwise forward and backward
    against the float64 references (conv2d's precision: bf16 products within bf16's
    rounding of both operands, 2^-8 each)."""
    shape = (n, c, h, w)
    geo = dict(stride=s, padding=p, dilation=d)
    bad = geometry_bad(shape, k, s, p, d)
    if not pair_ok(k, 1):
        return  # the weight's shape gives the kernel: a bad one cannot be drawn
    kh, kw = _ref.pair(k)
    dw = fn.startswith("depthwise")
    g = c if dw or groups == "c" else groups
    oc = c * mult if dw else 2 * g
    x = data.draw(arg("x", shape))
    w_shape = (oc, c // g if c % g == 0 else 1, kh, kw)
    wt = data.draw(arg("weight", w_shape))
    bias = data.draw(arg("bias", (oc,)))
    bad = {b for b in bad if b != "kernel_size"} | ({"x", "weight", "kernel_size"} & bad)
    if c % g:
        bad |= {"groups", "weight"}
    precision_kw = {}
    rel = 1e-5
    if fn in ("conv2d_forward", "conv2d_backward"):
        precision_kw = {"precision": precision}
        bad |= {"precision"} if precision == "fp8" else set()
        rel = 1e-2 if precision == "bf16" else rel
    big = lambda a: np.abs(np.where(np.isfinite(a), a, 0)).max(initial=0) + 1  # noqa: E731

    def expected():
        with np.errstate(all="ignore"):
            return _ref.conv2d(x.v, wt.v, bias.v, s, p, d, g)

    def check(y, activation="identity"):
        e = _ref.act_forward(activation, expected())
        agree(y, e, rel * big(x.v) * big(wt.v) * (c * kh * kw + 1) + 1e-5 * big(bias.v),
              f"{fn} {shape} w={w_shape} {geo}", skip=~np.isfinite(e))
    out_shape = (n, oc, 1, 1) if bad else _ref.conv2d(np.zeros(shape), np.zeros(w_shape),
                                                      None, s, p, d, g).shape
    if fn == "conv2d_reference":
        check_call(f"conv2d_reference(x, w, b, groups={g}, **{geo})",
                   lambda: _C.conv2d_reference(x.a, wt.a, bias.a, groups=g, **geo), [x, wt, bias],
                   bad, check)
        return
    if fn in ("conv2d_forward", "depthwise"):
        out = draw_out(data, out_shape, x)
        out_kw = {} if out is None else {"out": out.a}
        args = [x, wt, bias] + ([] if out is None else [out])

        def check_out(y, activation="identity"):
            returned_in(out, y)
            check(y, activation)
    if fn == "conv2d_forward":
        check_call(f"conv2d_forward(x, w, b, groups={g}, activation={act!r}, out={out}, "
                   f"**{geo}, **{precision_kw})",
                   lambda: _C.conv2d_forward(x.a, wt.a, bias.a, groups=g, activation=act, **out_kw,
                                             **geo, **precision_kw),
                   args, bad, lambda y: check_out(y, act))
        return
    if fn == "depthwise":
        check_call(f"depthwise_conv2d_forward(x, w, b, out={out}, **{geo})",
                   lambda: _C.depthwise_conv2d_forward(x.a, wt.a, bias.a, **out_kw, **geo), args,
                   bad, check_out)
        return
    gy = data.draw(arg("grad_y", out_shape))
    gw = data.draw(arg("grad_weight", w_shape, in_place=True))
    gb = data.draw(arg("grad_bias", (oc,), in_place=True))
    gw0, gb0 = gw.v.copy(), gb.v.copy()
    out = draw_out(data, shape, x)

    def check_b(dx):
        returned_in(out, dx)
        if n == 0 or not np.isfinite(x.v).all() or not np.isfinite(gy.v).all():
            return  # the sums of non-finite values: NaN or inf in either, both honest
        col, _ = _ref.im2col(x.v, k, s, p, d)
        rows = gy.v.transpose(0, 2, 3, 1).reshape(-1, oc)
        og, kk = oc // g, col.shape[1] // g
        edw = np.concatenate([rows[:, i * og:(i + 1) * og].T @ col[:, i * kk:(i + 1) * kk]
                              for i in range(g)]).reshape(w_shape)
        tol = max(rel, 1e-4) * (big(x.v) * big(gy.v) * (rows.shape[0] + 1) + np.abs(gw0))
        agree(gw.a, 0.5 * gw0 + edw, tol, f"{fn} grad_weight", skip=~np.isfinite(0.5 * gw0 + edw))
        agree(gb.a, gb0 + rows.sum(axis=0), 1e-4 * (np.abs(rows).sum(axis=0) + np.abs(gb0) + 1),
              f"{fn} grad_bias", skip=~np.isfinite(gb0))
        assert dx.shape == shape
    call = _C.depthwise_conv2d_backward if dw else _C.conv2d_backward
    call_kw = {} if dw else {"groups": g, **precision_kw}
    if out is not None:
        call_kw["out"] = out.a
    check_call(f"{call.__name__}(x, w, grad_y, grad_weight, grad_bias=gb, beta=0.5, {call_kw}, **{geo})",
               lambda: call(x.a, wt.a, gy.a, gw.a, grad_bias=gb.a, beta=0.5, **call_kw, **geo),
               [x, wt, gy, gw, gb] + ([] if out is None else [out]), bad, check_b)


@fuzz(data=st.data(), fn=st.sampled_from(["max", "avg"]), n=st.sampled_from([0, 1, 2]),
      c=st.sampled_from([1, 3]), h=st.sampled_from([1, 2, 5, 7]), w=st.sampled_from([1, 4, 6]),
      k=st.sampled_from(KERNELS[:-1]), s=st.sampled_from([None, 1, 2, 0]),
      p=st.sampled_from([0, 1, (1, 0), 2, -1]), corrupt=st.sampled_from([None] * 4 + [-1, "plane", 2**62]))
def test_pool_bindings(data, fn, n, c, h, w, k, s, p, corrupt):
    """Max and average pooling, forward and backward (argmax range-checked)."""
    shape = (n, c, h, w)
    bad = {name for name, v, low in (("kernel_size", k, 1), ("stride", 1 if s is None else s, 1),
                                     ("padding", p, 0)) if not pair_ok(v, low)}
    if not bad:
        (kh, kw), (ph, pw) = _ref.pair(k), _ref.pair(p)
        if 2 * ph > kh or 2 * pw > kw:
            bad = {"padding"}
        elif h + 2 * ph < kh or w + 2 * pw < kw:
            bad = {"x", "input_shape", "kernel_size"}
    x = data.draw(arg("x", shape))
    forward = _C.maxpool2d_forward if fn == "max" else _C.avgpool2d_forward
    y_shape = shape if bad else _ref.avgpool2d(np.zeros(shape), k, s, p).shape
    out = draw_out(data, y_shape, x)
    kw = {} if out is None else {"out": out.a}
    argmax_out = None
    if fn == "max" and data.draw(st.booleans()):
        dtype = data.draw(st.sampled_from(["int64", "int64", "int32", "float32"]))
        argmax_out = Arg("argmax_out", np.zeros(y_shape, dtype), f"argmax_out=zeros({dtype})")
        argmax_out.verdict = "ok" if dtype == "int64" else "bad"
        kw["argmax_out"] = argmax_out.a
    extra = [a for a in (out, argmax_out) if a is not None]

    def check(res):
        returned_in(out, res[0] if fn == "max" else res)
        if argmax_out is not None:
            assert res[1] is argmax_out.a, "argmax_out= not returned"
        if fn == "max":
            y, a = res
            ey, ea = _ref.maxpool2d(x.v, k, s, p)
            agree(y, ey, 0.0, f"maxpool2d {shape} k={k} s={s} p={p}")
            finite = np.isfinite(ey) & ~np.isnan(ey)
            assert (a[finite] == ea[finite]).all(), "maxpool2d argmax"
        else:
            ey = _ref.avgpool2d(x.v, k, s, p)
            agree(res, ey, 1e-6 * (np.abs(np.where(np.isfinite(x.v), x.v, 0)).max(initial=0) + 1),
                  f"avgpool2d {shape}", skip=~np.isfinite(ey))
    res = check_call(f"{fn}pool2d_forward(x, {k}, stride={s}, padding={p}, {kw})",
                     lambda: forward(x.a, k, stride=s, padding=p, **kw), [x] + extra, bad, check)
    if res is None:
        return
    out_shape = (res[0] if fn == "max" else res).shape
    gy = data.draw(arg("grad_y", out_shape))
    dx_out = draw_out(data, shape, gy)
    kw = {} if dx_out is None else {"out": dx_out.a}
    if fn == "avg":
        def check_avg(dx):
            returned_in(dx_out, dx)
            e = _ref.avgpool2d_backward(gy.v, shape, k, s, p)
            agree(dx, e, 1e-5 * (np.abs(np.where(np.isfinite(gy.v), gy.v, 0)).max(initial=0) + 1),
                  "avgpool2d_backward", skip=~np.isfinite(e))
        check_call(f"avgpool2d_backward(grad_y, ..., {kw})",
                   lambda: _C.avgpool2d_backward(gy.a, shape, k, stride=s, padding=p, **kw),
                   [gy] + ([] if dx_out is None else [dx_out]), set(), check_avg)
        return
    argmax = res[1].copy()
    bad_b = set()
    if corrupt is not None and argmax.size:
        argmax.flat[0] = h * w if corrupt == "plane" else corrupt
        bad_b = {"argmax"}

    def check_max(dx):
        returned_in(dx_out, dx)
        with np.errstate(all="ignore"):
            e = _ref.maxpool2d_backward(gy.v, argmax, shape)
        # an input value sums the gradients of up to kh kw windows
        taps = int(np.prod(_ref.pair(k)))
        agree(dx, e, 1e-5 * (np.abs(np.where(np.isfinite(gy.v), gy.v, 0)).max(initial=0) + 1) * taps,
              "maxpool2d_backward", skip=~np.isfinite(e))
    check_call(f"maxpool2d_backward(grad_y, argmax, ..., {kw})",
               lambda: _C.maxpool2d_backward(gy.a, argmax, shape, k, stride=s, padding=p, **kw),
               [gy] + ([] if dx_out is None else [dx_out]), bad_b, check_max)


@fuzz(data=st.data(), shape=st.sampled_from([(4, 3), (1, 2), (2, 3, 5), (3, 2, 4, 4), (1, 1, 1, 1),
                                             (0, 3), (2, 0, 3)]),
      training=st.booleans(), momentum=st.sampled_from([0.1, 0.0, 1.0, 1.5, float("nan")]),
      eps=st.sampled_from([1e-5, 1e-3, 0.0, -1.0]), affine=st.booleans(), relu=st.booleans(),
      wrong=st.sampled_from([None] * 4 + ["weight", "running_mean", "save_invstd", "grad_weight"]))
def test_batchnorm_bindings(data, shape, training, momentum, eps, affine, relu, wrong):
    """batch norm forward and backward, training and evaluation, with a fused relu or not,
    against the float64 formulas."""
    c = shape[1]
    x = data.draw(arg("x", shape, profiles=("normal", "wide")))
    size = lambda name: c + (wrong == name)  # noqa: E731
    gamma = data.draw(arg("weight", (size("weight"),), profiles=("normal",))) if affine else None
    beta = data.draw(arg("bias", (c,), profiles=("normal",))) if affine else None
    rm = data.draw(arg("running_mean", (size("running_mean"),), in_place=training, profiles=("normal",)))
    rv = data.draw(arg("running_var", (c,), in_place=training, profiles=("normal",),
                       transform=np.abs))
    mean = data.draw(arg("save_mean", (c,), in_place=True, profiles=("normal",)))
    inv = data.draw(arg("save_invstd", (size("save_invstd"),), in_place=True, profiles=("normal",)))
    bad = set()
    if len(shape) < 2 or c == 0:
        bad.add("x")
    elif training and math.prod(shape) // c < 2:
        bad |= {"x", "training"}
    if not 0.0 <= momentum <= 1.0:
        bad.add("momentum")
    if not eps > 0:
        bad.add("eps")
    if wrong in ("weight", "running_mean", "save_invstd") and (affine or wrong != "weight") and c:
        bad.add(wrong)
    rm0, rv0 = rm.v.copy(), rv.v.copy()
    out = draw_out(data, shape, x)
    args = [a for a in (x, gamma, beta, rm, rv, mean, inv, out) if a is not None]
    kw = {"relu": relu} if out is None else {"relu": relu, "out": out.a}

    def check(y):
        returned_in(out, y)
        with np.errstate(all="ignore"):
            ey, erm, erv, _, _ = _ref.batchnorm(x.v, None if gamma is None else gamma.v,
                                                None if beta is None else beta.v, rm0, rv0,
                                                training, momentum, eps)
            if relu:  # NaN passes, as activation_forward's
                ey = np.where(ey < 0, 0.0, ey)
        scale = np.abs(np.where(np.isfinite(ey), ey, 0)).max(initial=0) + 1
        agree(y, ey, 1e-3 * scale, f"batchnorm_forward {shape} training={training}",
              skip=~np.isfinite(ey))
        if training:
            agree(rm.a, erm, 1e-4 * (np.abs(erm) + 1), "running_mean", skip=~np.isfinite(erm))
    y = check_call(f"batchnorm_forward(x, ..., training={training}, momentum={momentum}, eps={eps}, "
                   f"relu={relu})",
                   lambda: _C.batchnorm_forward(x.a, None if gamma is None else gamma.a,
                                                None if beta is None else beta.a, rm.a, rv.a,
                                                mean.a, inv.a, training=training, momentum=momentum,
                                                eps=eps, **kw), args, bad, check)
    if y is None:
        return
    g = data.draw(arg("grad_y", shape, profiles=("normal",)))
    gg = data.draw(arg("grad_weight", (size("grad_weight"),), in_place=True, profiles=("normal",)))
    bad_b = {"grad_weight"} if wrong == "grad_weight" and c else set()
    dx_out = draw_out(data, shape, g)
    kw = {"relu": True, "bias": None if beta is None else beta.a} if relu else {}
    if dx_out is not None:
        kw["out"] = dx_out.a

    def check_b(dx):
        returned_in(dx_out, dx)
        with np.errstate(all="ignore"):
            edx, _, _ = _ref.batchnorm_backward(x.v, np.where(y <= 0, 0.0, g.v) if relu else g.v,
                                                None if gamma is None else gamma.v,
                                                mean.a, inv.a, training)
        scale = np.abs(np.where(np.isfinite(edx), edx, 0)).max(initial=0) + 1
        agree(dx, edx, 1e-3 * scale * (np.abs(g.v).max(initial=0) + 1), "batchnorm_backward",
              skip=~np.isfinite(edx))
    check_call("batchnorm_backward(x, grad_y, ...)",
               lambda: _C.batchnorm_backward(x.a, g.a, None if gamma is None else gamma.a, mean.a,
                                             inv.a, training=training, grad_weight=gg.a, **kw),
               [x, g, gg] + ([gamma] if gamma is not None else []) +
               ([] if dx_out is None else [dx_out]), bad_b, check_b)


IMAGE_LAYERS = {
    "conv": lambda c: nn.Conv2d(c, 3, 3, padding=1),
    "conv_relu_stride": lambda c: nn.Conv2d(c, 4, (3, 2), stride=2, activation="relu"),
    "conv_groups": lambda c: nn.Conv2d(c, 2 * c, 1, groups=c if c > 1 else 1),
    "conv_gelu_same_dilated": lambda c: nn.Conv2d(c, 2, 3, padding="same", dilation=2, activation="gelu"),
    "maxpool": lambda c: nn.MaxPool2d(2),
    "avgpool": lambda c: nn.AvgPool2d(3, stride=1, padding=1),
    "global": lambda c: nn.GlobalAvgPool2d(),
    "bn2d": lambda c: nn.BatchNorm2d(c),
    "bn2d_eval": lambda c: nn.BatchNorm2d(c).eval(),
    "reshape": lambda c: nn.Reshape((-1,)),
    "cnn": lambda c: nn.Sequential(nn.Conv2d(c, 4, 3, padding=1, activation="relu"), nn.MaxPool2d(2),
                                   nn.BatchNorm2d(4), nn.Flatten()),
    "cnn_bn_relu": lambda c: nn.Sequential(nn.Conv2d(c, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                           nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),  # fused
}


@fuzz(data=st.data(), kind=st.sampled_from(list(IMAGE_LAYERS)), n=st.sampled_from([0, 1, 2, 3]),
      c=st.sampled_from([1, 2, 3]), h=st.sampled_from([1, 2, 4, 5, 7]), w=st.sampled_from([1, 3, 4, 6]),
      seed=st.integers(0, 2**16))
def test_image_layers(data, kind, n, c, h, w, seed):
    """The image layers on drawn inputs: the output (or an error naming the input) and a
    backward pass of the right shape, finite where the input is; never a crash."""
    fastnn.seed(seed)
    layer = IMAGE_LAYERS[kind](c)
    x = data.draw(arg("input", (n, c, h, w), profiles=("normal", "wide")))
    try:
        expected_shape = layer.output_shape((n, c, h, w))
        fits = True
    except ValueError:
        fits = False
    training_bn = (kind in ("bn2d", "cnn") and n * (h * w if kind == "bn2d" else 1) < 2
                   or kind == "cnn_bn_relu" and n * h * w < 2)
    maybe = {"input", "x", "training"} if (not fits or training_bn or n == 0) else set()

    def check(y):
        assert y.shape == expected_shape, f"{kind}: {y.shape} != {expected_shape}"
        finite_in = x.v.size == 0 or np.isfinite(x.v).all()
        if finite_in and kind not in ("bn2d", "cnn", "cnn_bn_relu"):
            assert np.isfinite(y).all(), f"{kind}: non-finite output from a finite input"
    y = check_call(f"{kind}: {layer!r} on input", lambda: layer(x.a), [x], set() if fits else {"input"},
                   check, maybe)
    if y is None or not y.size:
        return
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
    trace(f"{kind}: {layer!r} backward")
    dx = layer.backward(g)
    assert dx.shape == (n, c, h, w), f"{kind}: backward gave {dx.shape}"


# ----------------------------------------------------------------------------- layers
ACT_LAYERS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU,
              "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus}
ALPHA = {"leaky_relu": 0.01, "elu": 1.0}   # the layers' default slope / scale
# kind -> what follows the Dense layer (None: the Dense layer alone; "id": passes it through)
LAYER_KINDS = {"dense": None, "dense_act": None, "dropout": "dropout", "dropout_eval": "id",
               "flatten": "id", "softmax": "softmax", **{k: k for k in ACT_LAYERS},
               "seq_dense_dropout": "id", "seq_dense_flatten": "id", "seq_dense_tanh": "tanh"}


def layer_ref(kind, dense, xv, g, seed, offset):
    """Float64 forward of test_layers' model and, with g, its input and weight gradients."""
    sub, alone = LAYER_KINDS[kind], not kind.startswith("seq")
    h, z, W = xv, None, dense.weight.data.astype(np.float64)
    with np.errstate(all="ignore"):
        if sub is None or not alone:
            z = h @ W.T + (dense.bias.data if dense.bias is not None else 0.0)
            h = act_ref(dense.activation, z, ALPHA.get(dense.activation, 0.0))
        if sub in ACT_LAYERS:
            y = act_ref(sub, h, ALPHA.get(sub, 0.0))
        elif sub == "softmax":
            y = _ref.softmax(h)
        elif sub == "dropout":
            y = dropout_ref(h, 0.3, seed, offset)[0]
        else:
            y = h
        if g is None:
            return y, None
        if sub in ACT_LAYERS:
            gh = act_from_y(sub, y, g, ALPHA.get(sub, 0.0), h)
        elif sub == "softmax":
            gh = _ref.softmax_backward(y, g)
        elif sub == "dropout":
            gh = dropout_ref(g, 0.3, seed, offset)[0]
        else:
            gh = g
        if z is None:
            return y, {"dx": gh}
        dz = act_from_y(dense.activation, h, gh, ALPHA.get(dense.activation, 0.0), z)
        dW = dz.T @ xv + 2 * dense.l2 * W
        return y, {"dx": dz @ W, "dW": dW}


@fuzz(data=st.data(), kind=st.sampled_from(list(LAYER_KINDS)), batch=st.sampled_from(SMALL + [300]),
      features=st.sampled_from([1, 3, 8, 16, 17, 48, 49]), hidden=st.sampled_from([1, 4, 16, 49]),
      act=st.sampled_from(ACTS[1:]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_layers(data, kind, batch, features, hidden, act, bias, seed):
    """Every layer of fastnn.nn, alone and after a Dense in a Sequential: forward (twice: the
    first output must survive the second call), backward, and predict."""
    fastnn.seed(seed)
    sub = LAYER_KINDS[kind]
    dense = nn.Dense(features, hidden, activation=None if kind == "dense" else act, bias=bias,
                     l2=0.01 if seed % 2 else 0.0)
    layer = (dense if sub is None else nn.Dropout(0.3, seed=seed) if kind == "dropout"
             else nn.Dropout(0.5, seed=seed).eval() if "dropout" in kind
             else nn.Flatten() if "flatten" in kind else nn.Softmax() if sub == "softmax"
             else ACT_LAYERS[sub]())
    seq = kind.startswith("seq")
    model = nn.Sequential(dense, layer) if seq else layer
    x = data.draw(arg("input", (batch, features)))
    x2 = data.draw(arg("input", (batch, features), dtypes=["float32", "float64"], profiles=("normal",),
                       in_place=True))  # a valid second input (in_place: no "huge" layout)
    offset2 = batch * features if kind == "dropout" else 0

    def check(y):
        expected, _ = layer_ref(kind, dense, x.v, None, seed, 0)
        skip = dropped_non_finite(x.v, dropout_ref(x.v, 0.3, seed, 0)[1]) if kind == "dropout" \
            else None
        # The Dense's float32 sum errs in proportion to its terms, not to the sum: "wide" inputs
        # (up to 1e6) made terms of 1e5 whose sum cancelled to 25.8, 0.06 off in float32. Its
        # bound, about features * 2^-24 * sum |terms| (4x that here), joins the usual tolerance.
        terms = 0.0
        if sub is None or seq:
            with np.errstate(all="ignore"):
                terms = np.abs(x.v) @ np.abs(dense.weight.data.astype(np.float64)).T
            terms = np.where(np.isfinite(terms), terms, 0.0)
        sum_error = 2 * (features + 2) * float(np.finfo(np.float32).eps) * terms
        agree(y, expected, 1e-4 * (np.abs(expected) + 1) * math.sqrt(features + 2) + sum_error,
              f"{kind} forward {x.a.shape}", skip=skip)

    what = f"{kind}: {model!r} on x"
    # an empty batch: the result (0, ...) or a ValueError naming the input
    y = check_call(what, lambda: model(x.a), [x], check=check,
                   maybe={"input", "x"} if batch == 0 else ())
    if y is None:
        return
    y_copy = np.array(y, copy=True)
    trace(f"{what}, second call")
    model(x2.a)
    assert np.array_equal(y, y_copy, equal_nan=True), \
        f"{kind}: the first forward's output changed when the model ran again"
    if batch:
        g = np.random.default_rng(seed + 1).standard_normal(y.shape)
        trace(f"{what}: backward")
        dx = model.backward(g.astype(np.float32))
        _, ref = layer_ref(kind, dense, x2.v, g, seed, offset2)
        agree(dx, ref["dx"], 1e-3 * (np.abs(ref["dx"]) + 1) * math.sqrt(features + hidden),
              f"{kind} backward dx")
        if "dW" in ref:
            agree(dense.weight.grad, ref["dW"], 1e-3 * (np.abs(ref["dW"]) + 1) * math.sqrt(batch + 1),
                  f"{kind} backward weight.grad")
    if seq:  # predict goes in batches of 256 rows
        big = seen(np.random.default_rng(seed).standard_normal((600, features)))
        trace(f"{what}: predict on 600 rows")
        expected, _ = layer_ref(kind, dense, big, None, seed, 0)
        agree(model.predict(big.astype(np.float32)), expected,
              1e-4 * (np.abs(expected) + 1) * math.sqrt(features + 2), f"{kind} predict")


# ----------------------------------------------------------------------------- functional ops
def _sigmoid(v):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


def _softmax(v):
    e = np.exp(v - v.max(axis=1, keepdims=True)) if v.size else v
    return e / e.sum(axis=1, keepdims=True) if v.size else v


# op -> (float64 forward of x (and b), float64 input gradient of x given g and b)
UNARY_REFS = {
    "relu": (lambda v: np.maximum(v, 0), lambda v, g: g * (v > 0)),
    "sigmoid": (_sigmoid, lambda v, g: g * _sigmoid(v) * (1 - _sigmoid(v))),
    "tanh": (np.tanh, lambda v, g: g * (1 - np.tanh(v) ** 2)),
    "softmax": (_softmax, lambda v, g: _softmax(v) * (g - (g * _softmax(v)).sum(1, keepdims=True))),
    "flatten": (lambda v: v.reshape(len(v), math.prod(v.shape[1:])), None),
    "reshape": (lambda v: v.reshape(-1, 2), None),
    "concat": (lambda v: np.concatenate([v, v], axis=1), None),
}
B_KINDS = ["scalar", "same", "row", "col", "self", "bad"]


class _Recorded(nn.Module):
    """A model of a user's: only a forward (the recorder derives its backward)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@fuzz(data=st.data(), op=st.sampled_from([*UNARY_REFS, "add", "mul"]), rows=st.sampled_from([0, 1, 2, 5]),
      cols=st.sampled_from([1, 2, 3, 8]), recorded=st.booleans(), b_kind=st.sampled_from(B_KINDS),
      seed=st.integers(0, 2**16))
def test_functional_ops(data, op, rows, cols, recorded, b_kind, seed):
    """fastnn.functional's ops on drawn inputs, alone and inside a recorded forward (whose
    backward the recorder derives): the float64 answer, forward and backward, or an error
    naming the bad argument; never a crash."""
    fn = getattr(fastnn.functional, op)
    name = "input" if recorded else "a" if op in ("add", "mul") else "arrays" if op == "concat" else "x"
    x = data.draw(arg(name, (rows, cols, 2) if op in ("flatten", "reshape") else (rows, cols),
                      profiles=("normal", "wide")))
    args, b, bad = [x], None, set()
    if op in ("add", "mul"):
        if b_kind == "scalar":
            b = 0.5
        elif b_kind == "self":
            b = "self"
        else:
            shape = {"same": (rows, cols), "row": (1, cols), "col": (rows, 1), "bad": (rows, cols + 1)}[b_kind]
            b = data.draw(arg("b", shape, profiles=("normal", "wide")))
            args.append(b)
            try:
                np.broadcast_shapes(x.a.shape, b.a.shape)
            except ValueError:
                bad = {"a", "b"}
    bv = None if b is None else 0.5 if b_kind == "scalar" else x.v if b_kind == "self" else b.v

    def call(xx):
        if op == "concat":
            return fn([xx, xx])
        if op == "reshape":
            return fn(xx, (-1, 2))
        if op in ("add", "mul"):
            return fn(xx, xx if b_kind == "self" else 0.5 if b_kind == "scalar" else b.a)
        return fn(xx)

    if bad or any(a.verdict == "bad" for a in args):   # the call must raise: no answer to hold it to
        expected = tol = None
    else:
        expected, tol = _functional_expected(op, x.v, bv)
    model = _Recorded(call) if recorded else None

    def check(y):
        agree(y, expected, tol, f"fnn.{op} forward")
    y = check_call(f"fnn.{op} ({'recorded' if recorded else 'alone'}, b {b_kind})",
                   (lambda: model(x.a)) if recorded else (lambda: call(x.a)), args, bad, check)
    if y is None or not recorded:
        return
    g = np.random.default_rng(seed).standard_normal(y.shape)
    trace(f"fnn.{op} recorded backward")
    dx = model.backward(g.astype(np.float32))
    with np.errstate(all="ignore"):
        if op in ("add", "mul"):
            ref = (2 * g * x.v if b_kind == "self" else g * bv) if op == "mul" else \
                g * (2 if b_kind == "self" else 1)
            stretched = tuple(i for i in range(2) if x.v.shape[i] == 1 < ref.shape[i])
            ref = ref.sum(axis=stretched, keepdims=True) if stretched else ref
        elif op == "concat":
            ref = g[:, :cols] + g[:, cols:]
        elif UNARY_REFS[op][1] is None:
            ref = g.reshape(x.v.shape)
        else:
            ref = UNARY_REFS[op][1](x.v, g)
    # a product's rounding scales with its other factor
    scale = np.abs(g).max(initial=0) * (np.abs(bv).max(initial=0) if op == "mul" else 1)
    agree(dx, ref, 1e-5 * (np.abs(ref) + 1) + 8 * EPS32 * scale, f"fnn.{op} recorded backward")


def _functional_expected(op, v, bv):
    """The float64 forward of test_functional_ops and the tolerance a float32 result needs."""
    with np.errstate(all="ignore"):
        if op == "add":
            expected = v + bv
        elif op == "mul":
            expected = v * bv
        else:
            expected = UNARY_REFS[op][0](v)
    tol = 1e-5 * (np.abs(expected) + 1) if op in ("sigmoid", "tanh", "softmax") else \
        4 * EPS32 * np.abs(expected) + TINY32
    return expected, tol


# ----------------------------------------------------------------------------- coverage
def test_fuzz_covers_every_binding_and_layer():
    """A new binding or layer needs a fuzz target here."""
    covered = {"gemm", "gemm_reference", "activation_forward", "activation_backward",
               "column_sum", "softmax_forward", "softmax_backward", "gather_rows", "mse",
               "binary_cross_entropy", "cross_entropy", "cross_entropy_soft", "argmax_matches", "sgd_step",
               "adam_step", "adagrad_step", "rmsprop_step", "add_penalty_grad", "sum_squares",
               "sum_abs", "scale_", "axpby_", "clip_", "random_uniform", "dropout_forward", "dropout_backward",
               "augment_images", "set_num_threads", "get_num_threads", "set_isa", "get_isa",
               "supported_isas", "config", "fma_peak_gflops", "max_num_threads", "blocking",
               "set_blocking", "reset_blocking", "model_blocking", "fma_peak_per_core",
               "_elementwise_isa", "activations", "set_flush_denormals", "conv2d_reference",
               "conv2d_forward", "conv2d_backward", "depthwise_conv2d_forward",
               "depthwise_conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
               "avgpool2d_forward", "avgpool2d_backward", "batchnorm_forward", "batchnorm_backward",
               "bf16_convert", "bf16_path", "bf16_path_description", "supported_bf16_paths",
               "bf16_auto_path", "_bf16_choice",
               "set_bf16_path", "bf16_blocking", "cuda_info", "cuda_selftest", "cuda_arch_runs", "DeviceArray",
               "device_memory_stats", "device_empty_cache", "set_matmul_precision",
               "get_matmul_precision"}
    public = {n for n in dir(_C) if not n.startswith("__") and callable(getattr(_C, n))}
    assert public == covered, f"not fuzzed: {sorted(public - covered)}; gone: {sorted(covered - public)}"
    layers = {n for n in nn.__all__ if n not in ("Module", "Parameter", "Sequential")}
    fuzzed = {"Dense", "Dropout", "Flatten", "Softmax", *(c.__name__ for c in ACT_LAYERS.values()),
              "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm2d", "Reshape",
              "BatchNorm1d"}
    assert layers == fuzzed, f"layers not fuzzed: {sorted(layers - fuzzed)}"
    ops = set(fastnn.functional.__all__)
    assert ops == {*UNARY_REFS, "add", "mul"}, f"functional ops not fuzzed: {sorted(ops - {*UNARY_REFS})}"



@fuzz(op=st.sampled_from(["conv_forward", "conv_backward", "depthwise", "max", "avg", "batch_norm"]),
      n=st.sampled_from([0, 1, 2]), c=st.sampled_from([1, 2, 4]), h=st.sampled_from([1, 3, 6]),
      w=st.sampled_from([1, 4, 5]), k=st.sampled_from([1, 2, 3, (3, 1)]), s=st.sampled_from([1, 2, 0]),
      p=st.sampled_from([0, 1, 2, -1]), d=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2, 3]),
      swap=st.sampled_from([None, None, None, "first", "second", "third"]),
      kind=st.sampled_from(["numpy", "short", "int64"]))
def test_device_conv_and_pool_bindings(op, n, c, h, w, k, s, p, d, groups, swap, kind):
    """conv2d_forward/backward, depthwise_conv2d_forward, max/avg pooling forward and backward
    and batchnorm_forward (training) on device arrays ("cpu" DeviceArrays): with every array on the device, what the
    NumPy op gives (bit for bit) or the same error type it raises; with one array swapped for a
    host array, a short one or an int64 one, a TypeError or ValueError; never a crash."""
    rng = np.random.default_rng(n * 31 + c * 7 + h + w)
    kh, kw = k if isinstance(k, tuple) else (k, k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    oc = 2 * groups
    wt = rng.standard_normal((c if op == "depthwise" else oc, 1 if op == "depthwise" else max(c // groups, 1),
                              kh, kw)).astype(np.float32)
    bias = rng.standard_normal(wt.shape[0]).astype(np.float32)
    if op == "batch_norm":  # per-channel weight and bias
        wt, bias = rng.standard_normal((2, c)).astype(np.float32)

    def device(a, position):
        if swap != position:
            return _C.DeviceArray.from_numpy(a, "cpu")
        if kind == "short":
            return _C.DeviceArray.from_numpy(a.ravel()[:-1] if a.size else np.zeros(1, a.dtype), "cpu")
        return a if kind == "numpy" else _C.DeviceArray.from_numpy(a.astype(np.int64), "cpu")

    def run(arrays, on_host):
        geo = dict(stride=s, padding=p)
        if op == "batch_norm":  # x, weight, bias; the statistics' arrays on the same side
            stats = [np.full(max(c, 1), 0.5, np.float32) for _ in range(4)]
            if not on_host:
                stats = [_C.DeviceArray.from_numpy(a, "cpu") for a in stats]
            return _C.batchnorm_forward(arrays[0], arrays[1], arrays[2], *stats, training=True, momentum=0.1)
        if op == "conv_forward":
            return _C.conv2d_forward(arrays[0], arrays[1], arrays[2], **geo, dilation=d, groups=groups,
                                     activation="relu")
        if op == "depthwise":
            return _C.depthwise_conv2d_forward(arrays[0], arrays[1], arrays[2], **geo, dilation=d)
        if op == "conv_backward":
            return _C.conv2d_backward(arrays[0], arrays[1], arrays[2], arrays[3], beta=0.5, **geo, dilation=d,
                                      groups=groups)
        forward = getattr(_C, f"{op}pool2d_forward")
        if swap is None or swap == "first":
            return forward(arrays[0], k, **geo)
        y = forward(x, k, **geo)  # backward: grad_y (and argmax) swapped
        g = np.random.default_rng(1).standard_normal((y[0] if op == "max" else y).shape).astype(np.float32)
        if op == "max":
            return _C.maxpool2d_backward(g if on_host else device(g, "second"),
                                         y[1] if on_host else device(y[1], "third"), x.shape, k, **geo)
        return _C.avgpool2d_backward(g if on_host else device(g, "second"), x.shape, k, **geo)

    host = [x, wt, bias if op != "conv_backward" else None, None]
    if op == "conv_backward":
        try:
            y = _C.conv2d_forward(x, wt, None, stride=s, padding=p, dilation=d, groups=groups)
        except (TypeError, ValueError):
            y = np.zeros((n, oc, 1, 1), np.float32)
        host[2], host[3] = rng.standard_normal(y.shape).astype(np.float32), np.zeros_like(wt)
    trace(f"{op} x={x.shape} w={wt.shape} k={k} s={s} p={p} d={d} groups={groups} swap={swap} kind={kind}")
    try:
        host_run = [a if a is None else a.copy() for a in host]  # grad_weight is written in place
        want, want_error = run(host_run, True), None
    except (TypeError, ValueError) as e:
        want, want_error = None, type(e)
    positions = ["first", "second", "third", "fourth"]
    on_device = [None if a is None else device(a, positions[i]) for i, a in enumerate(host)]
    try:
        got = run(on_device, False)
    except (TypeError, ValueError) as e:
        assert swap is not None or type(e) is want_error, f"{type(e).__name__}: {e} (NumPy's op: {want_error})"
        return
    assert want_error is None, f"accepted what NumPy's op refuses ({want_error.__name__})"
    # pooling's only array on the host runs there (avg's backward has no third)
    harmless = swap is None or (op in ("max", "avg") and swap == "first" and kind == "numpy") or (
        op == "avg" and (swap == "third" or (swap == "second" and kind == "numpy"))) or (
        op == "max" and swap == "third" and kind == "int64")  # argmax is int64 anyway
    assert harmless, f"accepted a {kind} {swap} array"
    for g_, w_ in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
        if w_ is not None:
            np.testing.assert_array_equal(g_.numpy() if hasattr(g_, "numpy") else g_, w_)
    if op == "conv_backward":  # grad_weight, in place
        np.testing.assert_array_equal(on_device[3].numpy() if hasattr(on_device[3], "numpy") else on_device[3],
                                      host_run[3])


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2:])
