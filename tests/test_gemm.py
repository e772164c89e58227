"""GEMM (fastnn._C.gemm, _C.gemm_reference, fastnn.matmul) against NumPy float64."""

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _C

import _ref
from _ref import EPS32, SIZES, names_argument, run_python

TRANSPOSES = list(itertools.product([False, True], repeat=2))
TRANS_IDS = [f"{'T' if ta else 'N'}{'T' if tb else 'N'}" for ta, tb in TRANSPOSES]
# A k of two k-blocks or more on every machine: the model's KC is at most 2048 (blocking.h,
# held by test_blocking), and the suite runs without a tuning file.
K_BLOCKS = 2100


def operands(rng, m, n, k, ta, tb, dtype=np.float32):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def reference(a, b, ta=False, tb=False, alpha=1.0, beta=0.0, c=None):
    """(expected, error scale): alpha*op(a)@op(b) + beta*c in float64, and |alpha||A||B| + |beta||C|."""
    A = np.asarray(a, dtype=np.float64)
    B = np.asarray(b, dtype=np.float64)
    A = A.T if ta else A
    B = B.T if tb else B
    expected = alpha * (A @ B)
    scale = abs(alpha) * (np.abs(A) @ np.abs(B))
    if c is not None and beta != 0.0:
        C = np.asarray(c, dtype=np.float64)
        expected = expected + beta * C
        scale = scale + abs(beta) * np.abs(C)
    return expected, scale


def check(result, expected, scale, k, what):
    """float32 GEMM tolerance: error <= 4 eps32 (sqrt(k) + 2) (|A||B|) elementwise."""
    assert isinstance(result, np.ndarray), f"{what}: returned {type(result).__name__}, not ndarray"
    assert result.dtype == np.float32, f"{what}: dtype {result.dtype}, expected float32"
    assert result.shape == expected.shape, f"{what}: shape {result.shape}, expected {expected.shape}"
    r = result.astype(np.float64)
    assert np.all(np.isfinite(r)), f"{what}: non-finite values"
    tol = 4.0 * EPS32 * (math.sqrt(k) + 2.0) * scale + 1e-30
    err = np.abs(r - expected)
    bad = err > tol
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        pytest.fail(f"{what}: {int(bad.sum())}/{bad.size} elements wrong; first at {i}: got {r[i]!r}, "
                    f"expected {expected[i]!r} (tol {tol[i]:.3g}); max |err|/scale = "
                    f"{float(np.max(err / np.maximum(scale, 1e-30))):.3g}")


def run_gemm(fn, a, b, ta, tb, k, what, **kw):
    res = fn(a, b, transpose_a=ta, transpose_b=tb, **kw)
    expected, scale = reference(a, b, ta, tb, alpha=kw.get("alpha", 1.0))
    check(res, expected, scale, k, what)


# ----------------------------------------------------------------------------- shapes x transposes x ISA
@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_gemm_awkward_shapes(isa, ta, tb, m, rng):
    for n, k in itertools.product(SIZES, SIZES):
        a, b = operands(rng, m, n, k, ta, tb)
        run_gemm(_C.gemm, a, b, ta, tb, k, f"gemm[{isa}] m={m} n={n} k={k} ta={ta} tb={tb}")


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_gemm_reference_awkward_shapes(ta, tb, m, rng):
    for n, k in itertools.product(SIZES, SIZES):
        a, b = operands(rng, m, n, k, ta, tb)
        run_gemm(_C.gemm_reference, a, b, ta, tb, k, f"gemm_reference m={m} n={n} k={k} ta={ta} tb={tb}")


VECTOR_SHAPES = [  # (m, n, k): row vector times matrix, matrix times column, dot, outer products
    (1, 1000, 300), (1000, 1, 300), (1, 1, 5000), (300, 257, 1), (1, 129, 1), (129, 1, 1),
    (1, 7, 129), (129, 7, 1), (2, 3, 1031),
]


@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_gemm_vector_shapes(isa, ta, tb, rng):
    for m, n, k in VECTOR_SHAPES:
        a, b = operands(rng, m, n, k, ta, tb)
        run_gemm(_C.gemm, a, b, ta, tb, k, f"gemm[{isa}] m={m} n={n} k={k} ta={ta} tb={tb}")
        run_gemm(_C.gemm_reference, a, b, ta, tb, k, f"gemm_reference m={m} n={n} k={k}")


@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_gemm_larger_than_cache_blocks(isa, ta, tb, rng):
    # Several cache blocks in every dimension, none of them a multiple of a power of two.
    for m, n, k in [(300, 517, 1029), (1031, 65, 263)]:
        a, b = operands(rng, m, n, k, ta, tb)
        run_gemm(_C.gemm, a, b, ta, tb, k, f"gemm[{isa}] m={m} n={n} k={k} ta={ta} tb={tb}")


@pytest.mark.parametrize("m,n,k,ta,tb", [(1, 1, 3_000_000, False, False),   # rows, one lane
                                          (3, 2, 3_000_000, False, False),
                                          (4, 2, 1_000_001, False, False),   # B^T packed, dots
                                          (2, 3, 3_000_000, False, True),    # dots
                                          (16, 2, 1_500_000, True, False)],  # swapped rows
                         ids=["1x1", "3x2", "4x2", "2x3-NT", "16x2-TN"])
def test_gemm_long_k_keeps_float32_precision(isa, m, n, k, ta, tb, rng):
    """Millions of positive products into each element (where one running float sum drifts
    most): within 32 ulps of the largest (k-blocks of C, as BLAS sums), on every small form
    and path (one float sum along all of k lost 1.3e-3 at k = 3e6)."""
    a = rng.random((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.random((n, k) if tb else (k, n), dtype=np.float32)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    got = _C.gemm(a, b, transpose_a=ta, transpose_b=tb)
    assert np.abs(got - want).max() <= 32 * EPS32 * np.abs(want).max()


def test_gemm_sum_past_2_to_the_24_of_ones(isa):
    """1 x k ones times k x 1 ones, k = 2^24 + 8: the exact count (a running float sum stops
    at 2^24, where adding 1 rounds back)."""
    k = 2**24 + 8
    got = _C.gemm(np.ones((1, k), np.float32), np.ones((k, 1), np.float32))
    assert got[0, 0] == k


def test_gemm_matches_gemm_reference(isa, rng):
    for (m, n, k), (ta, tb) in itertools.product([(129, 127, 128), (7, 300, 129)], TRANSPOSES):
        a, b = operands(rng, m, n, k, ta, tb)
        fast = _C.gemm(a, b, transpose_a=ta, transpose_b=tb).astype(np.float64)
        ref = _C.gemm_reference(a, b, transpose_a=ta, transpose_b=tb).astype(np.float64)
        _, scale = reference(a, b, ta, tb)
        assert np.all(np.abs(fast - ref) <= 8 * EPS32 * (math.sqrt(k) + 2) * scale), (m, n, k, ta, tb)


# ----------------------------------------------------------------------------- alpha, beta, out=
ALPHA_BETA = [(1.0, 0.0), (1.0, 1.0), (0.5, -0.75), (-2.0, 1.0), (0.0, 2.0), (1.5, 0.0)]


@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference"])
@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_gemm_alpha_beta_out(isa, fn_name, ta, tb, rng):
    fn = getattr(_C, fn_name)
    for (m, n, k), (alpha, beta) in itertools.product([(7, 129, 128), (129, 1, 127), (1, 7, 1)], ALPHA_BETA):
        a, b = operands(rng, m, n, k, ta, tb)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        out = c0.copy()
        ret = fn(a, b, out, transpose_a=ta, transpose_b=tb, alpha=alpha, beta=beta)
        expected, scale = reference(a, b, ta, tb, alpha=alpha, beta=beta, c=c0)
        what = f"{fn_name}[{isa}] out= m={m} n={n} k={k} ta={ta} tb={tb} alpha={alpha} beta={beta}"
        check(out, expected, scale + 1e-6, k, what + " (out updated in place)")
        if ret is not None:
            np.testing.assert_array_equal(np.asarray(ret), out, err_msg=what + ": returned array != out")


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_gemm_narrow_last_panel_writes_only_its_columns(isa, beta, rng):
    # n = 48 q + r: the last column panel is r wide (the AVX-512 path computes only its
    # vectors and stores with a mask). `out` is a column slice of a wider array whose
    # other columns hold a sentinel that must survive.
    m, k = 64, 200
    for r in (1, 15, 16, 17, 31, 32, 33, 40, 47):
        n = 96 + r
        a, b = operands(rng, m, n, k, False, True)
        wide = np.full((m, n + 5), 7.0, np.float32)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        wide[:, :n] = c0
        _C.gemm(a, b, wide[:, :n], transpose_b=True, beta=beta)
        expected, scale = reference(a, b, False, True, beta=beta, c=c0)
        check(wide[:, :n], expected, scale + 1e-6, k, f"gemm[{isa}] n={n} beta={beta}")
        np.testing.assert_array_equal(wide[:, n:], 7.0, err_msg=f"gemm[{isa}] n={n}: wrote past column n")


def check_in_sentinel(m, n, k, c0, expected, scale, what, run):
    """run(out) writes C into `out`, the top-left m x n corner of a larger array whose other
    rows and columns hold a sentinel that must survive; on 1 and 2 threads, the same bits."""
    results = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        big = np.full((m + 3, n + 5), 7.0, np.float32)
        big[:m, :n] = c0
        run(big[:m, :n])
        at = f"{what}, {threads} threads"
        check(big[:m, :n], expected, scale + 1e-6, k, at)
        np.testing.assert_array_equal(big[m:], 7.0, err_msg=at + ": wrote past row m")
        np.testing.assert_array_equal(big[:, n:], 7.0, err_msg=at + ": wrote past column n")
        results.append(big[:m, :n].copy())
    np.testing.assert_array_equal(results[0], results[1], err_msg=f"{what}: 1 and 2 threads differ")


@pytest.mark.parametrize("beta", [0.0, 0.5])
@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_gemm_edge_tiles_write_only_their_rows_and_columns(isa, ta, tb, beta, rng):
    # m = 192 + r leaves a last row panel of r rows for both kernels (8 x 48 and 6 x 16) and
    # n = 96 + 4 a 4-column panel: the edge kernels compute only those rows and vectors and
    # store into C in place (B read in place or packed). Over 128 rows and with 100 columns
    # (past the narrow-B rows form's 64), the small path's rows form (small_form) never takes
    # the product. `out` is the top-left corner of a larger array whose other rows and columns
    # hold a sentinel that must survive; 1 and 2 threads give the same bits.
    n, k = 100, 200
    for r in range(1, 8):
        m = 192 + r
        a, b = operands(rng, m, n, k, ta, tb)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        expected, scale = reference(a, b, ta, tb, beta=beta, c=c0)
        check_in_sentinel(m, n, k, c0, expected, scale,
                          f"gemm[{isa}] m={m} n={n} k={k} ta={ta} tb={tb} beta={beta}",
                          lambda out: _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, beta=beta))


@pytest.mark.parametrize("epilogue", ["none", "bias", "relu", "bias+relu"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_gemm_transposed_path_writes_only_its_rows_and_columns(isa, beta, epilogue, rng):
    # B transposed, at most MC rows and k at least 4 x m rounded up to 16 (a batch's forward
    # product): the transposed path reads B's rows in place and stores tiles of C^T back
    # transposed, bias and relu added as they go. m = 64 + r leaves a last panel of op(A)^T r
    # columns wide (r rows of C), n = 37 a last block of 1 row of B (one column of C) on AVX2's
    # 6 rows, 5 on AVX-512's 8; k % 4 of 1-3 leaves steps after the kernel's unrolled ones.
    # With k = 20 the same shapes take the packed path. The sentinel around `out` must survive
    # and 1 and 2 threads give the same bits.
    n = 37
    for r, k in [(1, 321), (5, 322), (7, 20), (15, 403), (16, 320)]:
        m = 64 + r
        a, b = operands(rng, m, n, k, False, True)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32) if "bias" in epilogue else None
        act = "relu" if "relu" in epilogue else "identity"
        expected, scale = reference(a, b, False, True, beta=beta, c=c0)
        if bias is not None:
            expected, scale = expected + bias, scale + np.abs(bias)
        if act == "relu":
            expected = np.maximum(expected, 0.0)
        check_in_sentinel(m, n, k, c0, expected, scale,
                          f"gemm[{isa}] m={m} n={n} k={k} beta={beta} {epilogue}",
                          lambda out: _C.gemm(a, b, out, transpose_b=True, beta=beta, bias=bias,
                                              activation=act))


@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference"])
def test_gemm_out_keyword_and_beta_ignored_without_out(fn_name, rng):
    fn = getattr(_C, fn_name)
    a, b = operands(rng, 7, 128, 129, False, False)
    # out=None: a new array, beta is ignored.
    res = fn(a, b, alpha=2.0, beta=5.0)
    expected, scale = reference(a, b, alpha=2.0)
    check(res, expected, scale, 129, f"{fn_name} out=None beta ignored")
    out = np.ones((7, 128), np.float32)
    fn(a, b, out=out, alpha=1.0, beta=1.0)
    expected, scale = reference(a, b, alpha=1.0, beta=1.0, c=np.ones((7, 128)))
    check(out, expected, scale, 129, f"{fn_name} out= keyword")


# ----------------------------------------------------------------------------- fastnn.matmul
@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_matmul_against_numpy(ta, tb, rng):
    for m, n, k in [(1, 1, 1), (7, 129, 127), (128, 1, 129), (1, 127, 7), (129, 128, 300)]:
        a, b = operands(rng, m, n, k, ta, tb)
        res = fastnn.matmul(a, b, transpose_a=ta, transpose_b=tb)
        expected, scale = reference(a, b, ta, tb)
        check(np.asarray(res), expected, scale, k, f"matmul m={m} n={n} k={k} ta={ta} tb={tb}")
        assert isinstance(res, np.ndarray)


def test_matmul_default_no_transpose(rng):
    a, b = operands(rng, 33, 17, 65, False, False)
    expected, scale = reference(a, b)
    check(fastnn.matmul(a, b), expected, scale, 65, "matmul(a, b)")


# ----------------------------------------------------------------------------- hypothesis
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 300), n=st.integers(1, 300), k=st.integers(1, 300),
       ta=st.booleans(), tb=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_gemm_hypothesis(isa, m, n, k, ta, tb, seed):
    rng = np.random.default_rng(seed)
    a, b = operands(rng, m, n, k, ta, tb)
    run_gemm(_C.gemm, a, b, ta, tb, k, f"gemm[{isa}] m={m} n={n} k={k} ta={ta} tb={tb}")


# ----------------------------------------------------------------------------- determinism, ISA selection
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)], ids=["NN", "TT"])
def test_gemm_bit_identical_one_and_two_threads(isa, ta, tb, rng):
    # threads split rows; split columns (few rows), across k-blocks; direct path; the small
    # path's rows form split by columns (op(B) past half of L2: 32 x 784 x 1024 NN)
    assert _C.blocking()["kc"] < K_BLOCKS
    for m, n, k in [(515, 300, 257), (64, 1024, K_BLOCKS), (30, 530, K_BLOCKS + 100), (1000, 1, 999),
                    (32, 784, 1024)]:
        a, b = operands(rng, m, n, k, ta, tb)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        results = []
        for threads in (1, 2):
            _ref.use_threads(threads)
            out = c0.copy()
            _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, alpha=0.5, beta=0.25)
            results.append((_C.gemm(a, b, transpose_a=ta, transpose_b=tb), out))
        np.testing.assert_array_equal(results[0][0], results[1][0], err_msg=f"{isa} {m}x{n}x{k} out=None")
        np.testing.assert_array_equal(results[0][1], results[1][1], err_msg=f"{isa} {m}x{n}x{k} out=")


def test_supported_isas_and_current():
    isas = _C.supported_isas()
    assert "generic" in isas
    assert set(isas) <= {"avx512", "avx2", "generic"}
    assert _C.get_isa() in isas


def test_set_isa_round_trip():
    for name in _C.supported_isas():
        _C.set_isa(name)
        assert _C.get_isa() == name


def test_set_isa_rejects_unknown_name():
    before = _C.get_isa()
    with pytest.raises(ValueError, match="(?i)avx|isa|bogus|generic"):
        _C.set_isa("bogus")
    assert _C.get_isa() == before


_ENV_SCRIPT = r"""
import json, numpy as np, fastnn
from fastnn import _C
rng = np.random.default_rng(5)
a = rng.standard_normal((129, 300)).astype(np.float32)
b = rng.standard_normal((127, 300)).astype(np.float32)
c = _C.gemm(a, b, transpose_b=True)
exp = a.astype(np.float64) @ b.astype(np.float64).T
scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)).T
ok = bool(np.all(np.abs(c - exp) <= 4 * 1.2e-7 * (300 ** 0.5 + 2) * scale))
print(json.dumps({"isa": _C.get_isa(), "config_isa": fastnn.config()["isa"], "ok": ok}))
"""


@pytest.mark.parametrize("name", ["generic"] + [i for i in _C.supported_isas() if i != "generic"])
def test_env_var_forces_isa_at_import(name):
    proc = run_python(_ENV_SCRIPT, env_extra={"FASTNN_ISA": name}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["isa"] == name, info
    assert info["config_isa"] == name, info
    assert info["ok"], f"gemm wrong under FASTNN_ISA={name}"


# ----------------------------------------------------------------------------- accepted input layouts
@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference", "matmul"])
def test_gemm_accepts_any_float_layout(fn_name, rng):
    fn = fastnn.matmul if fn_name == "matmul" else getattr(_C, fn_name)
    base_a = rng.standard_normal((40, 90))
    base_b = rng.standard_normal((90, 60))
    variants = {
        "float32 C": (base_a.astype(np.float32), base_b.astype(np.float32)),
        "float64": (base_a, base_b),
        "fortran": (np.asfortranarray(base_a.astype(np.float32)), np.asfortranarray(base_b)),
        "float16": (base_a.astype(np.float16), base_b.astype(np.float16)),
        "transposed view": (np.ascontiguousarray(base_a.T).T, np.ascontiguousarray(base_b.T.astype(np.float32)).T),
        "strided": (np.repeat(base_a, 2, axis=1)[:, ::2], np.repeat(base_b, 3, axis=0)[::3]),
        "negative stride": (base_a[::-1].copy()[::-1], base_b[:, ::-1].copy()[:, ::-1]),
        "list": (base_a.tolist(), base_b.tolist()),
    }
    for name, (a, b) in variants.items():
        a_arr = np.asarray(a)
        b_arr = np.asarray(b)
        if name == "strided":
            assert not a_arr.flags.c_contiguous and not b_arr.flags.c_contiguous
        a32 = a_arr.astype(np.float32).astype(np.float64)
        b32 = b_arr.astype(np.float32).astype(np.float64)
        res = fn(a, b)
        expected, scale = reference(a32, b32)
        check(np.asarray(res), expected, scale, 90, f"{fn_name} input {name}")
    # Transposes combined with non-contiguous inputs.
    a = np.asfortranarray(rng.standard_normal((90, 40)))
    b = rng.standard_normal((60, 180)).astype(np.float32)[:, ::2]
    res = fn(a, b, transpose_a=True, transpose_b=True)
    expected, scale = reference(a.astype(np.float32), b, True, True)
    check(np.asarray(res), expected, scale, 90, f"{fn_name} fortran/strided with transposes")


def test_gemm_does_not_modify_inputs(rng):
    a, b = operands(rng, 33, 44, 55, False, True)
    a0, b0 = a.copy(), b.copy()
    _C.gemm(a, b, transpose_b=True, alpha=3.0)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


# ----------------------------------------------------------------------------- bad input
def _raises(fn, *args, names=(), exc=(TypeError, ValueError), **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    msg = str(info.value)
    if names:
        assert names_argument(msg, *names), f"message does not name {names}: {msg!r}"
    return msg


BAD_DTYPES = {
    "str": lambda s: np.full(s, "x"),
    "object": lambda s: np.empty(s, dtype=object),
}


@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference", "matmul"])
@pytest.mark.parametrize("dtype", list(BAD_DTYPES))
def test_gemm_rejects_non_float_dtype(fn_name, dtype):
    fn = fastnn.matmul if fn_name == "matmul" else getattr(_C, fn_name)
    good_a = np.ones((3, 4), np.float32)
    good_b = np.ones((4, 5), np.float32)
    bad = BAD_DTYPES[dtype]
    _raises(fn, bad((3, 4)), good_b, names=("a",))
    _raises(fn, good_a, bad((4, 5)), names=("b",))


@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference", "matmul"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_gemm_converts_integer_and_bool_inputs(fn_name, dtype):
    # Real numbers of any dtype are accepted (uint8 pixels, say) and converted to float32.
    fn = fastnn.matmul if fn_name == "matmul" else getattr(_C, fn_name)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2 if dtype is np.bool_ else 50, size=(5, 7)).astype(dtype)
    b = rng.standard_normal((7, 4))
    expected = a.astype(np.float64) @ b
    np.testing.assert_allclose(fn(a, b), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference", "matmul"])
def test_gemm_rejects_wrong_rank(fn_name):
    fn = fastnn.matmul if fn_name == "matmul" else getattr(_C, fn_name)
    good_a = np.ones((3, 4), np.float32)
    good_b = np.ones((4, 5), np.float32)
    for bad in (np.ones(4, np.float32), np.ones((2, 3, 4), np.float32), np.float32(1.0)):
        msg = _raises(fn, bad, good_b, names=("a",), exc=ValueError)
        assert str(bad.ndim) in msg or str(bad.shape) in msg, msg
        _raises(fn, good_a, bad, names=("b",), exc=ValueError)


@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference", "matmul"])
def test_gemm_rejects_mismatched_inner_dimension(fn_name):
    fn = fastnn.matmul if fn_name == "matmul" else getattr(_C, fn_name)
    a = np.ones((3, 4), np.float32)
    b = np.ones((5, 6), np.float32)
    msg = _raises(fn, a, b, names=("a", "b"), exc=ValueError)
    assert "4" in msg and "5" in msg, f"message should give both inner dimensions: {msg!r}"
    # Transposes change which dimensions must agree.
    _raises(fn, a, np.ones((6, 4), np.float32), exc=ValueError)  # needs transpose_b
    _raises(fn, a, np.ones((4, 6), np.float32), transpose_a=True, exc=ValueError)
    fn(a, np.ones((6, 4), np.float32), transpose_b=True)  # and with it, fine


@pytest.mark.parametrize("fn_name", ["gemm", "gemm_reference"])
def test_gemm_rejects_bad_out(fn_name):
    fn = getattr(_C, fn_name)
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    for bad_out in (np.zeros((3, 6), np.float32), np.zeros((5, 3), np.float32),  # shape
                    np.zeros((3, 5), np.float64),  # dtype (in place: float32 required)
                    np.zeros((5, 3), np.float32).T,  # not C-contiguous
                    np.zeros((3, 10), np.float32)[:, ::2],  # strided
                    np.zeros(15, np.float32)):  # rank
        before = bad_out.copy()
        _raises(fn, a, b, bad_out, names=("out",), beta=1.0)
        np.testing.assert_array_equal(bad_out, before)


def test_gemm_zero_sized_dimensions_do_not_crash():
    # Either a clear ValueError or the mathematically right (possibly empty) result.
    cases = [((0, 4), (4, 5), (0, 5)), ((3, 4), (4, 0), (3, 0)), ((3, 0), (0, 5), (3, 5))]
    for sa, sb, sc in cases:
        a = np.ones(sa, np.float32)
        b = np.ones(sb, np.float32)
        try:
            res = _C.gemm(a, b)
        except ValueError:
            continue
        assert res.shape == sc
        assert np.all(res == 0)


def test_gemm_beta_zero_ignores_out_contents(rng):
    # BLAS convention: with beta == 0 the old contents of out (even NaN/inf) are not read.
    a, b = operands(rng, 129, 7, 300, False, False)
    for fn in (_C.gemm, _C.gemm_reference):
        out = np.full((129, 7), np.nan, np.float32)
        out[0, 0] = np.inf
        fn(a, b, out, alpha=1.0, beta=0.0)
        expected, scale = reference(a, b)
        check(out, expected, scale, 300, f"{fn.__name__} beta=0 with NaN in out")


def test_gemm_out_overlapping_input_is_rejected():
    a = np.eye(4, dtype=np.float32)
    b = np.ones((4, 4), np.float32)
    a0 = a.copy()
    for args in ((a, b, a), (b, a, a)):
        with pytest.raises(ValueError) as info:
            _C.gemm(*args, beta=1.0)
        assert names_argument(str(info.value), "out"), str(info.value)
    np.testing.assert_array_equal(a, a0)


def test_gemm_from_several_python_threads(rng):
    """The GIL is released inside kernels (not for tiny products): concurrent calls must stay correct."""
    import threading

    cases = []
    for i in range(4):
        m, n, k = 130 + i, 257 - i, 300 + 3 * i
        a, b = operands(rng, m, n, k, bool(i & 1), bool(i & 2))
        cases.append((a, b, bool(i & 1), bool(i & 2), _C.gemm(a, b, transpose_a=bool(i & 1), transpose_b=bool(i & 2))))
    errors = []

    def work(case):
        a, b, ta, tb, expected = case
        try:
            for _ in range(5):
                got = _C.gemm(a, b, transpose_a=ta, transpose_b=tb)
                if not np.array_equal(got, expected):
                    errors.append("concurrent result differs")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(c,)) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_gemm_releases_the_gil(rng):
    """Another Python thread makes progress while a long GEMM runs (counts, no clocks)."""
    import threading

    fastnn.set_num_threads(1)
    a = rng.standard_normal((1200, 1200)).astype(np.float32)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        while counter[0] == 0:
            pass
        progress = []
        for _ in range(3):
            before = counter[0]
            _C.gemm(a, a)
            progress.append(counter[0] - before)
    finally:
        stop.set()
        t.join()
    assert max(progress) > 1000, f"other thread advanced only {progress} steps during gemm calls"
