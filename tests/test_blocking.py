"""The CPU description, the cache model's blocking and the GEMM under every blocking.

Correctness must never depend on the blocking: the GEMM suite runs under the blocking the
model gives real machines' cache geometries, and under deliberately tiny blocks that put an
edge in every loop, each held to the float64 reference; and results are bit-identical with
1 and 2 threads under each (KC depends on k and the machine, never on the thread count).
"""
import itertools
import json
import math
import os

import numpy as np
import pytest

import fastnn
from fastnn import _C

from _ref import EPS32, run_python

# Real cache geometries (L1d, L2, L3 per core or shared; from each vendor's documentation).
GEOMETRIES = {
    "zen4": "32K:8,1M:8,32M:16",                 # Ryzen 7000 / EPYC 9004
    "zen5": "48K:12,1M:16,32M:16",               # Ryzen 9000 / EPYC 9005
    "sapphire-rapids": "48K:12,2M:16,300M:15",   # the Xeon of issue 11
    "skylake-client": "32K:8,256K:4,8M:16",      # Core i7-6700
    "avx2-laptop": "32K:8,256K:4,6M:12",         # a small 32 KiB / 256 KiB AVX2 laptop
}
ISAS = list(_C.supported_isas())
TRANSPOSES = list(itertools.product([False, True], repeat=2))


def reference(a, b, ta, tb, alpha=1.0, beta=0.0, c=None):
    A = a.astype(np.float64).T if ta else a.astype(np.float64)
    B = b.astype(np.float64).T if tb else b.astype(np.float64)
    expected, scale = alpha * (A @ B), abs(alpha) * (np.abs(A) @ np.abs(B))
    if c is not None and beta != 0.0:
        expected, scale = expected + beta * c, scale + abs(beta) * np.abs(c.astype(np.float64))
    return expected, scale


def check(got, expected, scale, k, what):
    tol = 4.0 * EPS32 * (math.sqrt(k) + 2.0) * scale + 1e-30
    err = np.abs(np.asarray(got, np.float64) - expected)
    bad = ~(err <= tol)
    assert not bad.any(), (f"{what}: {int(bad.sum())}/{bad.size} elements wrong, first at "
                           f"{tuple(np.argwhere(bad)[0])}")


def edge_shapes(blocking):
    """Shapes on the packed path (none small or skinny) with a partial block or panel in every
    loop: k just past one and two KC blocks, n past NC and past an NR panel, m past MC where
    MC is small enough to test, and past an MR panel."""
    kc, nc, mc, mr, nr = (blocking[x] for x in ("kc", "nc", "mc", "mr", "nr"))
    ks = sorted({max(17, kc + 1), max(17, 2 * kc + 3)} if kc <= 600 else {kc + 1})
    ns = sorted({max(17, nr + 1), min(nc + nr + 1, 700)})
    ms = sorted({max(17, mr + 1), min(mc + mr + 1, 300)})
    return [(m, n, k) for m, n, k in itertools.product(ms, ns, ks)][:6]


def run_suite(rng, what):
    """All transposes, alpha/beta, a strided output, an epilogue: each against float64."""
    blk = _C.blocking()
    for (m, n, k), (ta, tb) in itertools.product(edge_shapes(blk), TRANSPOSES):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        tag = f"{what} {blk} m={m} n={n} k={k} ta={ta} tb={tb}"
        expected, scale = reference(a, b, ta, tb)
        check(_C.gemm(a, b, transpose_a=ta, transpose_b=tb), expected, scale, k, tag)
        # alpha, beta into a strided view of a wider array (ldc > n), the rest untouched
        wide = rng.standard_normal((m, n + 5)).astype(np.float32)
        before = wide.copy()
        out = wide[:, 2:2 + n]
        c0 = out.astype(np.float64)
        _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, alpha=0.5, beta=-0.75)
        expected, scale = reference(a, b, ta, tb, alpha=0.5, beta=-0.75, c=c0)
        check(out, expected, scale, k, tag + " alpha/beta strided")
        np.testing.assert_array_equal(wide[:, :2], before[:, :2], err_msg=tag)
        np.testing.assert_array_equal(wide[:, 2 + n:], before[:, 2 + n:], err_msg=tag)
        # bias + relu epilogue, applied once after the last k-block
        bias = rng.standard_normal(n).astype(np.float32)
        got = _C.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, activation="relu")
        expected, scale = reference(a, b, ta, tb)
        check(got, np.maximum(expected + bias, 0.0), scale + np.abs(bias), k, tag + " bias+relu")


def bit_identical_threads(rng, what):
    blk = _C.blocking()
    m, n, k = max(edge_shapes(blk))
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    fastnn.set_num_threads(1)
    one = _C.gemm(a, b)
    fastnn.set_num_threads(2)
    two = _C.gemm(a, b)
    np.testing.assert_array_equal(one, two, err_msg=f"{what} {blk}: 1 vs 2 threads")


@pytest.fixture
def restore_blocking():
    yield
    for isa in ISAS:
        _C.reset_blocking(isa)


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("isa", ISAS)
def test_gemm_under_model_blocking_of_real_cpus(isa, geometry, rng, restore_blocking):
    _C.set_isa(isa)
    kc, nc, mc = _C.model_blocking(isa, GEOMETRIES[geometry])
    _C.set_blocking(kc, nc, mc)
    assert (_C.blocking()["kc"], _C.blocking()["nc"], _C.blocking()["mc"]) == (kc, nc, mc)
    run_suite(rng, f"{isa} {geometry}")
    bit_identical_threads(rng, f"{isa} {geometry}")


# kc, nc, mc: one k step per block; one NR panel per B block and one MR panel per A block;
# blocks that are not multiples of anything; and the smallest of all.
TINY = [(1, 1, 1), (3, 1, 1), (7, 17, 13), (16, 40, 20), (2, 100, 7)]


@pytest.mark.parametrize("kc,nc,mc", TINY)
@pytest.mark.parametrize("isa", ISAS)
def test_gemm_under_tiny_blocks(isa, kc, nc, mc, rng, restore_blocking):
    _C.set_isa(isa)
    _C.set_blocking(kc, nc, mc)
    blk = _C.blocking()
    assert blk["kc"] == kc and blk["source"] == "override"
    assert blk["nc"] % blk["nr"] == 0 and blk["nr"] <= blk["nc"] < nc + blk["nr"]
    assert blk["mc"] % blk["mr"] == 0 and blk["mr"] <= blk["mc"] < mc + blk["mr"]
    rng_shapes = [(19, 37, 23), (2 * blk["mr"] + 1, 3 * blk["nr"] + 1, 3 * kc + 2 if kc < 9 else 29)]
    for (m, n, k), (ta, tb) in itertools.product(rng_shapes, TRANSPOSES):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        expected, scale = reference(a, b, ta, tb)
        what = f"{isa} {blk} m={m} n={n} k={k} ta={ta} tb={tb}"
        check(_C.gemm(a, b, transpose_a=ta, transpose_b=tb), expected, scale, k, what)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        out = c0.copy()
        _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, alpha=-2.0, beta=1.0,
                bias=np.ones(n, np.float32), activation="tanh")
        expected, scale = reference(a, b, ta, tb, alpha=-2.0, beta=1.0, c=c0)
        check(out, np.tanh(expected + 1.0), scale + 1.0, k, what + " beta + epilogue")
    bit_identical_threads(rng, f"{isa} tiny")


def test_blocking_does_not_change_with_threads(restore_blocking):
    fastnn.set_num_threads(1)
    one = _C.blocking()
    fastnn.set_num_threads(2)
    assert _C.blocking() == one


# ----------------------------------------------------------------------------- the model
# Worked by hand from the model's rules (blocking.h), 4-byte floats, 64-byte lines: L2 less
# one way holds S floats; MC(KC) = floor((floor(S / KC) - NR) / MR) * MR, and KC minimizes
# 4/KC + 1/(2 MC):
#  zen 3, avx2 (6 x 16): L2 512K/8, S = 7 * 65536 / 4 = 114688. KC = 840: 136 - 16 = 120,
#   4/840 + 1/240 = 0.0089286; KC = 832 gives MC = 120 too (worse), KC = 848 gives
#   135 - 16 -> 114, 4/848 + 1/228 = 0.0091029. L3 32M/16, a way is 2 MiB: A's block (403
#   KB) takes 1, 14 for B: 14 * 2 MiB / (840 * 4) = 8738 columns; four L2s cap it:
#   4 * 512 KiB / (840 * 4) = 624.
#  sapphire rapids, avx512 (8 x 48): L2 2M/16, S = 15 * 131072 / 4 = 491520. KC = 1616:
#   304 - 48 = 256, 4/1616 + 1/512 = 0.0044284 (KC = 1608: 305 - 48 -> 256, 0.0044407;
#   KC = 1624: 302 - 48 -> 248, 0.0044792). L3: beyond four L2s, 4 * 2 MiB / (1616 * 4)
#   = 1297 -> 1296 (a multiple of 48).
#  the laptop, avx2: L2 256K/4, S = 3 * 65536 / 4 = 49152. KC = 520: 94 - 16 = 78,
#   4/520 + 1/156 = 0.0141026 (KC = 512: 96 - 16 -> 78, worse; KC = 528: 93 - 16 -> 72,
#   0.0145202). L3 6M/12, a way is 512 KiB: A's block (162 KB) takes 1, 10 for B:
#   10 * 524288 / (520 * 4) = 2520; four L2s: 4 * 256 KiB / (520 * 4) = 504 -> 496 (a
#   multiple of 16).
#  zen 5, avx512: L2 1M/16, S = 245760. KC = 1096: 224 - 48 = 176. L3 32M/16 (an override
#   has no sharing count: one thread): 14 * 2 MiB / 4384 = 6697 columns (3348 where cpuid
#   reports the L3 shared by two); four L2s: 4 MiB / 4384 = 956 -> 912.
@pytest.mark.parametrize("isa,spec,expected", [
    ("avx2", "32K:8,512K:8,32M:16", (840, 624, 120)),
    ("avx512", "48K:12,2M:16,300M:15", (1616, 1296, 256)),
    ("avx2", "32K:8,256K:4,6M:12", (520, 496, 78)),
    ("avx512", "48K:12,1M:16,32M:16", (1096, 912, 176)),
])
def test_model_blocking_worked_examples(isa, spec, expected):
    assert _C.model_blocking(isa, spec) == expected


KERNELS = {"avx512": (8, 48), "avx2": (6, 16), "generic": (4, 16)}


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_model_blocks_fit_the_levels_they_are_sized_for(isa, geometry):
    """A block + B micro-panel fit L2 but one way; B block + A block fit L3, the B block
    four L2s at most; and no other KC (with the largest MC that then fits) moves less from
    beyond L2."""
    kc, nc, mc = _C.model_blocking(isa, GEOMETRIES[geometry])
    mr, nr = KERNELS[isa]
    _, (l2, w2), (l3, _) = [_parse(level) for level in GEOMETRIES[geometry].split(",")]
    assert kc * (mc + nr) * 4 <= l2 * (w2 - 1) / w2
    assert kc * (mc + nc) * 4 <= l3
    assert kc * nc * 4 <= 4 * l2  # the B block: at most four L2s
    assert nc % nr == 0 and mc % mr == 0 and kc % 8 == 0 and 16 <= kc <= 2048
    floats = l2 * (w2 - 1) // w2 // 4
    for other in range(16, 2049, 8):
        other_mc = (floats // other - nr) // mr * mr
        if other_mc >= mr:
            assert 4 / kc + 0.5 / mc <= 4 / other + 0.5 / other_mc + 1e-12, (other, other_mc)


def _parse(level):
    size, ways = level.split(":")[:2]
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
    return int(size.rstrip("KMG")) * mult, int(ways)


# ----------------------------------------------------------------------------- the CPU description
def test_config_describes_the_cpu():
    cpu = fastnn.config()["cpu"]
    assert cpu["model_name"] and cpu["vendor"]
    assert set(cpu["features"]) == {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}
    assert [c["level"] for c in cpu["caches"]][:2] == [1, 2]
    for c in cpu["caches"]:
        assert c["size"] == c["sets"] * c["ways"] * c["line"] and c["line"] in (32, 64, 128, 256)
    # The ISAs the GEMM offers are the ones the features say the CPU and the OS run.
    assert ("avx512" in _C.supported_isas()) == cpu["features"]["avx512f"]
    assert ("avx2" in _C.supported_isas()) == (cpu["features"]["avx2"] and cpu["features"]["fma"])
    shown = dict(fastnn.config()["blocking"])
    assert shown.pop("tuning_file") is None   # the suite runs with FASTNN_TUNING=off
    assert shown == _C.blocking()


@pytest.mark.skipif(not os.path.exists("/sys/devices/system/cpu/cpu0/cache/index0/size"),
                    reason="no /sys cache description to compare with")
def test_cache_sizes_agree_with_the_kernel():
    """cpuid's geometry (or whichever source was used) matches what Linux reports in sysfs."""
    sysfs = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    for index in sorted(os.listdir(base)):
        if not index.startswith("index"):
            continue
        read = lambda f: open(os.path.join(base, index, f)).read().strip()  # noqa: E731
        if read("type") == "Instruction":
            continue
        size = read("size")
        sysfs[int(read("level"))] = (int(size[:-1]) << {"K": 10, "M": 20}[size[-1]]
                                     if size[-1] in "KM" else int(size), int(read("ways_of_associativity")))
    got = {c["level"]: (c["size"], c["ways"]) for c in fastnn.config()["cpu"]["caches"]}
    for level in (1, 2):
        assert got[level] == sysfs[level], f"L{level}: fastnn {got[level]}, sysfs {sysfs[level]}"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_caches_are_read_on_the_first_allowed_cpu_and_the_affinity_given_back():
    """Found by an attack: on a CPU with two kinds of cores (performance and efficiency) cpuid
    describes the core it runs on, so the blocking (the products' rounding) and the tuning
    key followed whichever core ran the import. The import now reads them on the first CPU
    the process may run on and gives the thread its affinity back."""
    code = ("import os, json\n"
            "before = sorted(os.sched_getaffinity(0))\n"
            "import fastnn\n"
            "print(json.dumps([before, sorted(os.sched_getaffinity(0)), "
            "fastnn.config()['cpu']['cache_spec']]))")
    # every CPU first: a child inherits this process's affinity, which an import that kept
    # its thread pinned would have narrowed as well
    every = "import os\ntry:\n    os.sched_setaffinity(0, range(os.cpu_count()))\nexcept OSError:\n    pass\n"
    before, after, spec = json.loads(run_python(every + code).stdout.strip().splitlines()[-1])
    assert before == after and spec == fastnn.config()["cpu"]["cache_spec"]
    if len(before) > 1:   # narrowed to the last CPU: its caches (one kind of core here)
        narrowed = run_python("import os; os.sched_setaffinity(0, {%d})\n" % before[-1] + code)
        one, after, spec = json.loads(narrowed.stdout.strip().splitlines()[-1])
        assert one == after == [before[-1]] and spec == fastnn.config()["cpu"]["cache_spec"]


def test_cache_override_changes_geometry_and_blocking():
    spec = GEOMETRIES["sapphire-rapids"]
    out = run_python("import fastnn, json; c = fastnn.config(); "
                     "print(json.dumps([c['cpu']['cache_source'], c['cpu']['cache_spec'], "
                     "c['cpu']['detected_cache_spec'], c['blocking']]))",
                     env_extra={"FASTNN_CACHE": spec, "FASTNN_TUNING": "off"})
    import json
    source, got_spec, detected, blocking = json.loads(out.stdout.strip().splitlines()[-1])
    assert source == "FASTNN_CACHE"
    assert got_spec == "48K:12:64,2M:16:64,300M:15:64"
    assert detected == fastnn.config()["cpu"]["cache_spec"]
    assert (blocking["kc"], blocking["nc"], blocking["mc"]) == _C.model_blocking(blocking["isa"], spec)
    assert blocking["source"] == "model"


@pytest.mark.parametrize("spec", ["48K", "48K:12,2M:16,300M:15,1G:16", "48Q:12", "48K:12:48",
                                  "2M:16,48K:12", "", "48K::64", "0:8",
                                  # 2^34 + 1 GiB: shifted first, it had wrapped to 1G (an attack)
                                  "48K:12,2M:16,17179869185G:16"])
def test_bad_cache_override_warns_and_is_ignored(spec):
    if spec == "":   # an empty variable is no override at all
        env = {"FASTNN_CACHE": ""}
    else:
        env = {"FASTNN_CACHE": spec}
    out = run_python("import warnings, json\n"
                     "with warnings.catch_warnings(record=True) as w:\n"
                     "    warnings.simplefilter('always')\n"
                     "    import fastnn\n"
                     "print(json.dumps([str(x.message) for x in w]))\n"
                     "print(fastnn.config()['cpu']['cache_source'])", env_extra=env)
    lines = out.stdout.strip().splitlines()
    import json
    messages, source = json.loads(lines[-2]), lines[-1]
    if spec in ("48K",):   # a valid one-level geometry: used
        assert source == "FASTNN_CACHE" and not messages
    elif spec == "":
        assert source != "FASTNN_CACHE" and not messages
    else:
        assert source != "FASTNN_CACHE"
        assert any("FASTNN_CACHE" in m and "ignored" in m for m in messages), messages


@pytest.mark.parametrize("spec,why", [("48K:12,2M", None), ("1K:2:16", None),
                                      ("48K:12,2M:16,300M:15:64", None)])
def test_model_blocking_accepts_valid_specs(spec, why):
    kc, nc, mc = _C.model_blocking("", spec)
    assert kc >= 16 and nc >= 1 and mc >= 1


@pytest.mark.parametrize("spec", ["x", "48K:0", "48K:12:100", "1G:8,1K:8", "48K:12,,2M:16", 7])
def test_model_blocking_names_bad_specs(spec):
    with pytest.raises((ValueError, TypeError), match="cache"):
        _C.model_blocking("", spec)
