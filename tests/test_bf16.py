"""bfloat16 GEMM (matmul(precision="bf16"), _C.gemm(precision="bf16")): the fp32 -> bf16
conversion against a reference written here, and the product, on every bf16 path this CPU
runs, against a float64 product of the bf16-rounded inputs."""

import itertools
import os
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import _C

import _ref
from _ref import EPS32, bf16_bits, bf16_round, run_python, use_threads

KERNEL_PATHS = ["amx", "avx512_bf16"]  # best first, as the selection ranks them
TRANSPOSES = list(itertools.product([False, True], repeat=2))
TRANS_IDS = [f"{'T' if ta else 'N'}{'T' if tb else 'N'}" for ta, tb in TRANSPOSES]


def bits(*words):
    return np.array(words, dtype=np.uint32).view(np.float32)


# ----------------------------------------------------------------------------- conversion
SPECIAL = {
    # fp32 bits: bf16 bits (worked by hand)
    0x3F800000: 0x3F80,  # 1.0
    0x3F808000: 0x3F80,  # 1 + 2^-8: a tie, to even (down)
    0x3F818000: 0x3F82,  # 1 + 3 * 2^-8: a tie, to even (up)
    0x3F808001: 0x3F81,  # just past the tie: up
    0x3F807FFF: 0x3F80,  # just below it: down
    0xBF808001: 0xBF81,  # negative: by magnitude
    0x00000000: 0x0000, 0x80000000: 0x8000,  # signed zeros
    0x7F800000: 0x7F80, 0xFF800000: 0xFF80,  # infinities
    0x7FC00000: 0x7FC0, 0xFFC00001: 0xFFC0,  # quiet NaNs
    0x7F800001: 0x7FC0,  # a signalling NaN whose payload is below bf16's: still a NaN, quiet
    0x7FBFFFFF: 0x7FFF,  # rounding would carry into the exponent: NaN kept, not inf
    0x00000001: 0x0000,  # the smallest subnormal: rounds to 0
    0x00008000: 0x0000,  # subnormal tie: to even (0)
    0x00018000: 0x0002,  # subnormal tie: to even (up)
    0x00010000: 0x0001,  # the smallest bf16 subnormal: kept, not flushed
    0x807F0000: 0x807F,  # a negative subnormal, exact
    0x7F7FFFFF: 0x7F80,  # fp32's max finite: past bf16's max + half an ulp: inf
    0x7F7F8000: 0x7F80,  # bf16 max + half an ulp, a tie: the even neighbour is inf
    0x7F7F7FFF: 0x7F7F,  # just below it: bf16's max finite
    0xFF7FFFFF: 0xFF80,  # -inf
}


def conversion_inputs():
    rng = np.random.default_rng(7)
    random_bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32)
    # every exponent's neighbourhood of the rounding point (low halves 0x7FFF, 0x8000, 0x8001)
    highs = np.arange(0, 2**16, 7, dtype=np.uint32) << 16
    near = (highs[:, None] | np.array([0x7FFF, 0x8000, 0x8001, 0xFFFF, 0], np.uint32)).ravel()
    return np.concatenate([np.array(list(SPECIAL), np.uint32), random_bits, near]).view(np.float32)


def test_reference_here_matches_hand_worked_cases():
    x = bits(*SPECIAL)
    assert [hex(v) for v in bf16_bits(x)] == [hex(v) for v in SPECIAL.values()]


@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
@pytest.mark.parametrize("flush", [True, False], ids=["ftz", "ieee"])
def test_conversion_matches_reference(vector, flush):
    """Scalar and vector conversions, with and without flushing denormals (the conversion is
    integer work, so MXCSR must not change it: subnormals are rounded, not flushed)."""
    x = conversion_inputs()
    old = _C.config()["flush_denormals"]
    fastnn.set_flush_denormal(flush)
    try:
        got = _C.bf16_convert(x, vector=vector)
    finally:
        fastnn.set_flush_denormal(old)
    want = bf16_bits(x)
    bad = np.flatnonzero(got != want)
    assert got.dtype == np.uint16 and got.shape == x.shape
    assert bad.size == 0, [(hex(x.view(np.uint32)[i]), hex(got[i]), hex(want[i])) for i in bad[:5]]


def test_conversion_tail_lengths():
    """Every length around the vector width: the vector body and the scalar tail agree."""
    x = np.random.default_rng(1).standard_normal(70).astype(np.float32)
    for n in range(0, 70):
        np.testing.assert_array_equal(_C.bf16_convert(x[:n]), bf16_bits(x[:n]))


# ----------------------------------------------------------------------------- the product
@pytest.fixture(params=KERNEL_PATHS)
def path(request):
    try:
        _C.set_bf16_path(request.param)
    except ValueError as err:
        pytest.skip(f"bf16 path {request.param} does not run here: {err}")
    assert _C.bf16_path() == request.param
    return request.param


def expected(a, b, ta, tb, alpha=1.0, beta=0.0, c=None, bias=None):
    """(float64 product of the bf16-rounded operands, error bound of an fp32 accumulation)."""
    A = bf16_round(a).astype(np.float64)
    B = bf16_round(b).astype(np.float64)
    A, B = (A.T if ta else A), (B.T if tb else B)
    k = A.shape[1]
    z = alpha * (A @ B)
    scale = abs(alpha) * (np.abs(A) @ np.abs(B))
    if c is not None and beta != 0.0:
        z, scale = z + beta * c.astype(np.float64), scale + abs(beta) * np.abs(c.astype(np.float64))
    if bias is not None:
        z, scale = z + bias, scale + np.abs(bias)
    return z, 2 * (k + 2) * EPS32 * scale + 1e-30


def operands(rng, m, n, k, ta, tb):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    return a, b


SHAPES = [(1, 1, 1), (1, 7, 17), (7, 1, 33), (17, 33, 1), (33, 65, 129), (65, 129, 7),
          (129, 17, 65), (7, 7, 2), (33, 17, 3), (40, 50, 1100),  # k-blocks
          (70, 100, 1500),  # several k-blocks (past AMX's one-block k), whole and partial tiles
          (300, 70, 50), (40, 300, 90)]  # on 2 threads: chunks of rows, of columns (AMX)


@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_product(path, rng, m, n, k, ta, tb):
    a, b = operands(rng, m, n, k, ta, tb)
    got = fastnn.matmul(a, b, transpose_a=ta, transpose_b=tb, precision="bf16")
    want, tol = expected(a, b, ta, tb)
    assert got.dtype == np.float32 and got.shape == (m, n)
    err = np.abs(got - want)
    assert (err <= tol).all(), f"{path} max err {err.max():.3g}, bound {tol[err > tol].min():.3g}"


@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
# k 700: one k-block on AMX (up to 4 KCs), three on AVX512_BF16; 1300: k-blocks on both
@pytest.mark.parametrize("k", [45, 700, 1300], ids=["k45", "k700", "k1300"])
def test_alpha_beta_epilogue_and_strides(path, rng, ta, tb, k):
    """alpha, beta on a strided out (a row slice of a wider array), bias and activation,
    operands that are slices of wider arrays (leading dimensions > their widths)."""
    m, n = 37, 61
    a_big, b_big = operands(rng, m + 5, n + 9, k + 3, ta, tb)
    a, b = a_big[: (k if ta else m), : (m if ta else k)], b_big[: (n if tb else k), : (k if tb else n)]
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    bias = rng.standard_normal(n).astype(np.float32)
    for alpha, beta, act in [(1.0, 0.0, "identity"), (-0.5, 2.0, "identity"), (2.5, 1.0, "relu"),
                             (1.0, -1.0, "tanh"), (1.0, 0.0, "relu")]:  # 1, 0: whole tiles straight to out
        base = np.full((m, n + 4), np.nan, np.float32)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        base[:, :n] = c0
        out = base[:, :n]
        res = _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, alpha=alpha, beta=beta,
                      bias=bias, activation=act, precision="bf16")
        assert res is out or np.shares_memory(res, out)
        z, tol = expected(a, b, ta, tb, alpha, beta, c0, bias)
        want = {"identity": z, "relu": np.maximum(z, 0), "tanh": np.tanh(z)}[act]
        err = np.abs(out - want)
        assert (err <= tol + 2e-6 * np.abs(want)).all(), f"{path} {alpha=} {beta=} {act}: {err.max():.3g}"
        assert np.isnan(base[:, n:]).all(), "wrote past out's columns"


def test_packing_rounds_as_the_reference(path, rng):
    """Every packing (rows along k, and ks in rows, for A and for B; packed 64 ks at a time
    along k and 32 where the ks are rows, here whole chunks and a last partial one) rounds
    as the reference: with the
    other operand the identity, each product is the rounded operand itself. SPECIAL's finite
    values (ties, the largest values, subnormals) sit among random ones; a vector with a
    subnormal is rounded another way in the packing than one without. The kernels take bf16
    subnormals as zero, so those are not compared; the largest fp32 subnormal, which rounds
    up to bf16's smallest normal, is."""
    k, n = 109, 50
    special = np.append(bits(*SPECIAL), bits(0x007FFFFF, 0x80400000))
    special = special[np.isfinite(bf16_round(special))]
    values = rng.standard_normal((k, n)).astype(np.float32)
    cells = rng.choice(k * n, size=len(special), replace=False)
    values.flat[cells] = special
    rounded = bf16_round(values)
    bf16_subnormal = (np.abs(rounded) < np.finfo(np.float32).tiny) & (rounded != 0)
    assert np.isfinite(rounded).all() and bf16_subnormal.any() and (rounded == 2.0**-126).any()
    eye = np.eye(k, dtype=np.float32)
    for ta, tb in TRANSPOSES:
        # values as B (k x n): C = I B; as A (n x k): C = A I
        b = values.T.copy() if tb else values
        got_b = fastnn.matmul(eye, b, transpose_a=ta, transpose_b=tb, precision="bf16")
        a = values if ta else values.T.copy()
        got_a = fastnn.matmul(a, eye, transpose_a=ta, transpose_b=tb, precision="bf16")
        for got, want, mask in [(got_b, rounded, bf16_subnormal), (got_a, rounded.T, bf16_subnormal.T)]:
            bad = (got != want) & ~mask
            assert not bad.any(), f"{path} {ta=} {tb=}: {got[bad][:4]} for {want[bad][:4]}"
    # NaN, infinities and what rounds to them, through 1 x 1 products (a tail of one k)
    one = np.ones((1, 1), np.float32)
    for x in bits(0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7FC00000, 0x7F800001):
        want = bf16_round(np.array([x], np.float32))[0]
        for got in (fastnn.matmul(one, np.full((1, 1), x), precision="bf16"),
                    fastnn.matmul(np.full((1, 1), x), one, precision="bf16")):
            assert (np.isnan(want) and np.isnan(got[0, 0])) or got[0, 0] == want, f"{path} {x}"


def test_beta_zero_ignores_nan_in_out(path, rng):
    a, b = operands(rng, 20, 50, 30, False, False)
    out = np.full((20, 50), np.nan, np.float32)
    _C.gemm(a, b, out, beta=0.0, precision="bf16")
    want, tol = expected(a, b, False, False)
    assert (np.abs(out - want) <= tol).all()



def test_sum_past_2_to_the_24_of_ones(path):
    """1 x k ones times k x 1 ones, k = 2^24 + 4096 (ones are exact in bf16): the exact count,
    as the fp32 GEMM gives it. A running fp32 sum stops at 2^24 (adding 1 rounds back); the
    avx512_bf16 kernel had carried its lanes' sums across k-blocks and returned 2^24 (found by
    an attack); each k-block now starts from zero and is added to the accumulator."""
    k = 2**24 + 4096
    got = _C.gemm(np.ones((1, k), np.float32), np.ones((k, 1), np.float32), precision="bf16")
    assert got[0, 0] == k

def test_reference_binding(rng):
    """_C.gemm_reference(precision="bf16") is the float64 product of the rounded inputs."""
    a, b = operands(rng, 9, 11, 13, True, False)
    got = _C.gemm_reference(a, b, transpose_a=True, precision="bf16")
    want, _ = expected(a, b, True, False)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


THREAD_CODE = """
import numpy as np, fastnn
from fastnn import _C
rng = np.random.default_rng(3)
for path in [p for p in _C.supported_bf16_paths() if p != "fp32"]:
    _C.set_bf16_path(path)
    for m, n, k, ta, tb in [(96, 200, 300, False, True), (8, 400, 200, True, False),
                            (300, 8, 1100, False, False), (129, 130, 2100, True, True),
                            (520, 100, 70, True, False)]:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        runs = []
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            runs.append(fastnn.matmul(a, b, transpose_a=ta, transpose_b=tb, precision="bf16").tobytes())
        print(path, m, n, k, "same" if runs[0] == runs[1] else "DIFFERENT")
"""


def test_threads_bit_identical():
    """1 and 2 threads, bit for bit: split by rows, by columns, across k-blocks. In a fresh
    process without the load guard, which would run "2 threads" on one on a busy machine."""
    use_threads(2)
    r = run_python(THREAD_CODE, env_extra={"FASTNN_ADAPTIVE_THREADS": "0", "FASTNN_BF16": ""})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    kernels = [p for p in _C.supported_bf16_paths() if p != "fp32"]
    if not kernels:
        pytest.skip("no bf16 kernel runs here")
    assert sum("same" in line for line in lines) == 5 * len(kernels), r.stdout


def test_fp32_path_is_the_fp32_product(monkeypatch, rng):
    """FASTNN_BF16=fp32 (or set_bf16_path): precision="bf16" runs gemm itself, bit for bit."""
    a, b = operands(rng, 70, 90, 110, False, False)
    _C.set_bf16_path("fp32")
    if _C.bf16_auto_path() == "fp32":  # no bf16 instructions here: a lack as well as a choice
        monkeypatch.setattr(fastnn.precision, "_warned", False)
        with pytest.warns(RuntimeWarning, match="runs float32 products here"):
            got = fastnn.matmul(a, b, precision="bf16")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # chosen, not a lack: no warning
            got = fastnn.matmul(a, b, precision="bf16")
    assert got.tobytes() == fastnn.matmul(a, b).tobytes()


def test_fp32_default_unchanged(rng):
    a, b = operands(rng, 70, 90, 110, False, True)
    assert fastnn.matmul(a, b, transpose_b=True).tobytes() == \
        _C.gemm(a, b, transpose_b=True, precision="fp32").tobytes()


def test_warns_once_without_bf16_instructions(monkeypatch, rng):
    monkeypatch.setattr(_C, "bf16_path", lambda: "fp32")
    monkeypatch.setattr(_C, "bf16_auto_path", lambda: "fp32")
    monkeypatch.setattr(_C, "bf16_path_description", lambda: "fp32 (no bf16 instructions: test)")
    monkeypatch.setattr(fastnn.precision, "_warned", False)
    _C.set_bf16_path("fp32")
    a, b = operands(rng, 3, 4, 5, False, False)
    with pytest.warns(RuntimeWarning, match="no bf16 instructions"):
        fastnn.matmul(a, b, precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnn.matmul(a, b, precision="bf16")


def test_no_warning_when_the_user_chose_fp32(rng):
    """fp32 chosen by set_bf16_path (or FASTNN_BF16) where a bf16 kernel would run: no warning."""
    if _C.bf16_auto_path() == "fp32":
        pytest.skip("fastnn itself picks fp32 here")
    _C.set_bf16_path("fp32")
    a, b = operands(rng, 3, 4, 5, False, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnn.matmul(a, b, precision="bf16")


# ----------------------------------------------------------------------------- selection, errors
@pytest.mark.parametrize("amx,avx512_bf16,dot,fma,want", [
    (True, True, 0.0, 0.0, "amx"),                     # AMX wherever it runs
    (False, True, 370.0, 185.0, "avx512_bf16"),        # twice the FMA rate (issue 17's figure for Zen 4, 5)
    (False, True, 92.0, 185.0, "fp32"),                # at half of it (Intel Xeon, AMX refused)
    (False, True, 277.0, 185.0, "fp32"),               # under 1.5x: conversions eat the gain
    (False, False, 0.0, 185.0, "fp32")])               # no bf16 instructions
def test_choice_takes_a_bf16_kernel_only_where_it_is_faster(amx, avx512_bf16, dot, fma, want):
    assert _C._bf16_choice(amx, avx512_bf16, dot, fma) == want


def test_config_names_the_path():
    cfg = fastnn.config()
    paths = _C.supported_bf16_paths()
    assert paths[-1] == "fp32" and cfg["bf16"] == _C.bf16_path_description()
    features = cfg["cpu"]["features"]
    best = _C.bf16_auto_path()
    if not (os.environ.get("FASTNN_BF16") or os.environ.get("FASTNN_ISA")):  # else they chose
        assert _C.bf16_path() == best
    if "amx" in paths:
        assert best == "amx"
    elif "avx512_bf16" in paths:  # avx512_bf16 where its measured rate pays, else fp32 saying why
        assert best == "avx512_bf16" or cfg["bf16"].startswith("fp32 (avx512_bf16 is no faster here")
    else:
        assert best == "fp32"
    assert ("avx512_bf16" in paths) == features["avx512_bf16"]
    if not features["amx_bf16"]:
        assert "amx" not in paths


@pytest.mark.parametrize("forced", ["fp32"] + KERNEL_PATHS)
def test_environment_forces_the_path(forced):
    code = "import fastnn, warnings; print(fastnn.config()['bf16'])"
    r = run_python(code, env_extra={"FASTNN_BF16": forced})
    assert r.returncode == 0, r.stderr
    if forced == "fp32":
        assert r.stdout.strip() == "fp32 (forced by FASTNN_BF16=fp32)"
    elif forced in _C.supported_bf16_paths():
        assert r.stdout.strip() == forced and "RuntimeWarning" not in r.stderr
    else:
        assert f"FASTNN_BF16={forced} is not a bf16 path this CPU runs" in r.stderr


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lower_isa_leaves_bf16_on_fp32(isa):
    """FASTNN_ISA below AVX-512 (where this CPU runs it) takes the AVX-512 bf16 kernels away too."""
    if isa not in _C.supported_isas():
        pytest.skip(f"this CPU does not run {isa}")
    r = run_python("import fastnn; print(fastnn.config()['bf16'])",
                   env_extra={"FASTNN_ISA": isa, "FASTNN_BF16": None})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"fp32 (ISA {isa}, by FASTNN_ISA or set_isa: the bf16 kernels are AVX-512 code)"


def test_set_isa_moves_bf16_as_fastnn_isa_does_unless_a_path_was_chosen():
    """Found by an attack: set_isa("avx2") had left bf16 on AMX (FASTNN_ISA=avx2 took it to
    fp32), and config() gave the environment's reason after the path had changed."""
    if "avx2" not in _C.supported_isas() or _C.bf16_auto_path() == "fp32":
        pytest.skip("needs AVX2 and a bf16 kernel picked here")
    isa = _C.get_isa()
    try:
        _C.set_bf16_path("auto")
        _C.set_isa("avx2")
        assert _C.bf16_path() == "fp32"
        assert fastnn.config()["bf16"] == ("fp32 (ISA avx2, by FASTNN_ISA or set_isa: the bf16 "
                                           "kernels are AVX-512 code)")
        _C.set_isa("avx512")
        assert _C.bf16_path() == _C.bf16_auto_path() == fastnn.config()["bf16"]
        _C.set_bf16_path("fp32")  # chosen: set_isa leaves it
        _C.set_isa("avx2")
        _C.set_isa("avx512")
        assert fastnn.config()["bf16"] == "fp32 (set by set_bf16_path)"
        _C.set_bf16_path("auto")
        assert _C.bf16_path() == _C.bf16_auto_path()
    finally:
        _C.set_isa(isa)
        _C.set_bf16_path("auto")


def test_environment_names_are_read_in_any_case_with_spaces_around():
    """Found by an attack: FASTNN_ISA=AVX2 (or " avx2") warned that this CPU does not run
    avx2, and FASTNN_BF16=AMX or =auto (which set_bf16_path takes) warned likewise."""
    code = "import fastnn; from fastnn import _C; print(_C.get_isa(), _C.bf16_path())"
    plain = run_python(code, env_extra={"FASTNN_ISA": None, "FASTNN_BF16": None})
    assert plain.returncode == 0, plain.stderr
    isa, path = plain.stdout.split()
    for env in ({"FASTNN_ISA": f" {isa.upper()} "}, {"FASTNN_BF16": path.upper() + "\t"},
                {"FASTNN_BF16": "Auto"}):
        r = run_python(code, env_extra={"FASTNN_ISA": None, "FASTNN_BF16": None, **env})
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [isa, path] and "Warning" not in r.stderr, (env, r.stderr)
    r = run_python(code, env_extra={"FASTNN_ISA": "sse4", "FASTNN_BF16": None})
    supported = ", ".join(f"'{name}'" for name in _C.supported_isas())
    assert f"FASTNN_ISA=sse4 is not a path this CPU runs (it runs {supported}); using {isa}" in r.stderr


def test_environment_unknown_path_warns():
    code = "import fastnn; print(fastnn.config()['bf16'])"
    r = run_python(code, env_extra={"FASTNN_BF16": "fp8"})
    assert r.returncode == 0, r.stderr
    assert "FASTNN_BF16=fp8 is not a bf16 path this CPU runs" in r.stderr
    unset = run_python(code, env_extra={"FASTNN_BF16": None})
    assert r.stdout.strip() == unset.stdout.strip()  # the path chosen without FASTNN_BF16


def test_errors(rng):
    a, b = operands(rng, 3, 4, 5, False, False)
    with pytest.raises(ValueError, match=r"matmul: precision must be 'fp32' or 'bf16'; got 'fp16'"):
        fastnn.matmul(a, b, precision="fp16")
    with pytest.raises(ValueError, match=r"gemm_reference: argument 'precision'"):
        _C.gemm_reference(a, b, precision="BF16")
    with pytest.raises(TypeError, match=r"matmul: precision must be a str"):
        fastnn.matmul(a, b, precision=16)
    with pytest.raises(ValueError, match=r"inner dimensions differ"):
        fastnn.matmul(a, a, precision="bf16")
    with pytest.raises(ValueError, match=r"'tf32' is not a bf16 path.*supported: .*'fp32'"):
        _C.set_bf16_path("tf32")
    with pytest.raises(TypeError, match=r"bf16_convert: argument 'x'"):
        _C.bf16_convert("abc")


@pytest.mark.parametrize("name,mr,nr", [("amx", 32, 32), ("avx512_bf16", 8, 48)])
def test_blocking_fits_the_caches(name, mr, nr):
    """model_blocking_bf16: the micro-panels in L1, the fp32 accumulator block in L2."""
    kc, nc, mc = _C.bf16_blocking(name)
    caches = {c["level"]: c for c in fastnn.config()["cpu"]["caches"]}
    assert kc % 32 == 0 and nc % nr == 0 and mc % mr == 0
    assert kc * (mr + nr) * 2 <= caches[1]["size"] * 2 / 3 or kc == 32
    if 2 in caches:
        l2 = caches[2]["size"] / max(1, caches[2]["shared_by"])
        assert mc * nc * 4 <= l2 / 4 or mc == mr
        assert kc * nc * 2 <= l2 / 8 or nc == nr
    with pytest.raises(ValueError, match="not a bf16 kernel"):
        _C.bf16_blocking("fp32")


def test_a_large_product_of_several_k_blocks_streams_its_c_right(path, rng):
    """A C larger than twice L2, of several k-blocks, with beta 0, is written by streaming
    stores (alpha applied; a row start off a 16-byte boundary, ldc odd, element by element
    up to one); beta != 0 reads C and goes the cached way. Held to the reference."""
    m, n, k = 1100, 1003, 1100  # 4.4 MB of C, k past one block
    a, b = operands(rng, m, n, k, False, False)
    base = np.full((m, n + 1), np.nan, np.float32)
    out = base[:, 1:]  # rows start 4 bytes past an aligned address
    _C.gemm(a, b, out, alpha=0.5, precision="bf16")
    z, tol = expected(a, b, False, False, alpha=0.5)
    assert (np.abs(out - z) <= tol + 2e-6 * np.abs(z)).all()
    assert np.isnan(base[:, 0]).all()
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    got = c0.copy()
    _C.gemm(a, b, got, beta=2.0, precision="bf16")
    z, tol = expected(a, b, False, False, beta=2.0, c=c0)
    assert (np.abs(got - z) <= tol + 2e-6 * np.abs(z)).all()
