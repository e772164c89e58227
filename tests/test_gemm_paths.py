"""The GEMM's internal paths, each held to NumPy float64: the direct path for small and
skinny products, the packed path with several k-blocks and edge tiles, and the epilogue
(bias + activation applied to C tiles) that Dense's forward pass uses."""

import numpy as np
import pytest

from fastnn import _C

import _ref
from test_gemm import K_BLOCKS, TRANSPOSES, TRANS_IDS, check, operands, reference

# (m, n, k): direct path (thin n, thin m, thin k, tiny) and packed path (k > one k-block,
# m and n off the tile sizes, a single row panel shared by threads). Few rows of C read
# the big operand in place (gemm.cpp, kFewPanels): with a transposed B the transposed path
# (all of op(A) in one A block; edge rows of B, a narrow last panel of op(A)^T, two
# k-blocks at k = K_BLOCKS), with a non-transposed B its rows in place (n = 1000 leaves a
# narrower packed panel) or, at a 4 KiB row stride (n = 1024), packed one panel at a time.
# A narrow B (17-64 columns) beside 128 rows or more goes by rows of C on AVX-512 (small_form:
# op(B) packed by the register transpose where transposed, its rows 8 at a time and a tail).
# Up to 128 rows with B not transposed go by rows in strips of B (784 columns in strips of 96
# and one of 16 at k = 1030 on a 2 MiB L2; 512 as 288 + 224 at k = 256), unless B's rows, a
# power of two apart, crowd into few of L2's sets (n = 512, k = 1100: packed). A thin B^T
# with a short k goes by rows of C after packing op(B) (200 x 10 x 64 NT), a longer k by dot
# products (1000 x 10 x 300 NT).
PATH_SHAPES = [(1000, 10, 300), (9, 700, 300), (500, 300, 5), (33, 17, 13),
               (515, 301, K_BLOCKS), (8, 1100, 900), (200, 200, 200),
               (33, 517, K_BLOCKS), (100, 203, 70), (40, 1000, 300), (40, 1024, 300),
               (130, 1, 700), (77, 16, 64), (33, 3, 8), (64, 33, 16), (100, 40, 90),
               (300, 21, 135), (517, 64, 77), (129, 40, 1000), (48, 784, 1030), (32, 512, 256),
               (64, 512, 1100), (200, 10, 64)]
ACTIVATIONS = ["identity", "relu", "sigmoid", "tanh", "leaky_relu"]


@pytest.mark.parametrize("m,n,k", PATH_SHAPES)
@pytest.mark.parametrize("ta,tb", TRANSPOSES, ids=TRANS_IDS)
def test_paths_against_numpy(isa, m, n, k, ta, tb, rng):
    a, b = operands(rng, m, n, k, ta, tb)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    out = c0.copy()
    _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, alpha=-0.5, beta=1.5)
    expected, scale = reference(a, b, ta, tb, alpha=-0.5, beta=1.5, c=c0)
    check(out, expected, scale, k, f"gemm[{isa}] {m}x{n}x{k} ta={ta} tb={tb}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("m,n,k", PATH_SHAPES)
def test_epilogue_bias_and_activation(isa, activation, m, n, k, rng):
    # The forward pass of Dense: x @ W.T + b, then the activation.
    x, w = operands(rng, m, n, k, False, True)
    bias = rng.standard_normal(n).astype(np.float32)
    got = _C.gemm(x, w, transpose_b=True, bias=bias, activation=activation, activation_alpha=0.1)
    z, scale = reference(x, w, False, True)
    z = z + bias
    expected = _ref.act_forward(activation, z, 0.1)
    # Every activation here is 1-Lipschitz, so the product's error bound carries over.
    check(got, expected, scale + np.abs(bias), k, f"gemm[{isa}] {m}x{n}x{k} +bias {activation}")
    ref = _C.gemm_reference(x, w, transpose_b=True, bias=bias, activation=activation,
                            activation_alpha=0.1)
    check(ref, expected, scale + np.abs(bias), k, f"gemm_reference {m}x{n}x{k} +bias {activation}")


def test_epilogue_applies_once_after_beta(rng):
    # With beta, the epilogue acts on alpha*AB + beta*C, after the last k-block only.
    m, n, k = 40, 60, K_BLOCKS
    a, b = operands(rng, m, n, k, False, False)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    out = c0.copy()
    _C.gemm(a, b, out, alpha=0.5, beta=2.0, bias=bias, activation="relu")
    z, scale = reference(a, b, alpha=0.5, beta=2.0, c=c0)
    check(out, np.maximum(z + bias, 0.0), scale + np.abs(bias), k, "gemm beta + bias + relu")


@pytest.mark.parametrize("transpose_b", [True, False])
@pytest.mark.parametrize("m,n,k", PATH_SHAPES)
def test_fused_epilogue_equals_the_separate_steps_bit_for_bit(isa, m, n, k, transpose_b, rng):
    """Bias and relu fused in the kernel's store (the transposed path) or applied per tile
    give exactly activation_forward(gemm + bias): NaN kept, -0.0 kept, two k-blocks, beta."""
    a, b = operands(rng, m, n, k, False, transpose_b)
    a.flat[::7] = -0.0
    a[0, 0] = np.nan
    bias = rng.standard_normal(n).astype(np.float32)
    bias[::5] = -0.0
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    fused, plain = c0.copy(), c0.copy()
    _C.gemm(a, b, fused, transpose_b=transpose_b, alpha=0.5, beta=-1.5, bias=bias, activation="relu")
    _C.gemm(a, b, plain, transpose_b=transpose_b, alpha=0.5, beta=-1.5, bias=bias)
    np.testing.assert_array_equal(fused.view(np.uint32),
                                  _C.activation_forward("relu", plain).view(np.uint32))


def test_epilogue_with_empty_k(rng):
    out = _C.gemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32),
                  bias=np.arange(4, dtype=np.float32) - 1.5, activation="relu")
    np.testing.assert_array_equal(out, np.tile([0.0, 0.0, 0.5, 1.5], (3, 1)).astype(np.float32))


def test_epilogue_rejects_bad_bias():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="bias"):
        _C.gemm(a, b, bias=np.ones(4, np.float32))
    with pytest.raises(TypeError, match="bias"):
        _C.gemm(a, b, bias=np.array(["x"] * 5))
    with pytest.raises(ValueError, match="activation"):
        _C.gemm(a, b, activation="swish")


@pytest.mark.parametrize("m,n,k", PATH_SHAPES)
def test_paths_bit_identical_with_one_and_two_threads(isa, m, n, k, rng):
    a, b = operands(rng, m, n, k, False, True)
    bias = rng.standard_normal(n).astype(np.float32)
    results = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        results.append(_C.gemm(a, b, transpose_b=True, bias=bias, activation="tanh"))
    np.testing.assert_array_equal(results[0], results[1])


# The small path splits between threads after deciding on the whole product: with B
# transposed it refuses 16 rows or more, and it once decided per thread, so with 2 threads a
# 28-row product gave one thread 12 rows (taken) and the other 16 (refused); the packed path
# then redid all of C, adding beta C into the first 12 rows twice. Few rows (m < 16) are
# split by columns instead; either way each element is summed as on one thread.
SMALL_SPLITS = [(28, 2048, 16, False, True), (28, 4096, 8, False, True), (20, 2048, 12, False, True),
                (10, 1000, 128, True, False), (10, 1000, 128, False, False), (12, 784, 300, False, True),
                (3, 4100, 40, True, True), (15, 700, 200, False, False),
                # the thin forms (small_gemm.h): B^T packed for dot products (NN, n <= 16),
                # C^T by rows stored transposed (TN), 64 rows a block; op(B) packed for rows
                # (k <= 16, B transposed); few rows and one block of columns split by rows;
                (1000, 3, 200, False, False), (1000, 16, 64, False, False), (700, 1, 999, False, False),
                (1000, 3, 200, True, False), (257, 16, 8, True, False), (130, 1, 700, True, False),
                (686, 12, 599, True, True), (130, 1, 70, True, True),
                (700, 300, 7, False, True), (700, 33, 16, True, True), (13, 34, 977, False, False),
                # op(B) within L1: rows of C whatever the size; a thin B under 32 rows of C
                (300, 40, 90, False, True), (300, 40, 90, True, False), (26, 7, 1093, True, False),
                # op(B) in strips sized for L2 (a strip: half an L2 of 2 MiB or less here)
                (20, 17000, 16, False, True), (20, 17000, 16, True, True), (15, 2000, 200, False, False),
                # a row of C within one vector (n <= 16, AVX2 8): 8 rows at a time, then by 4
                (1003, 10, 32, False, False), (1003, 5, 32, False, False), (13, 7, 300, True, False),
                (16, 16, 500, True, False), (23, 8, 90, True, True),
                # few rows in passes of up to 8 (AVX-512: as equal as can be), AVX2's of 4
                (5, 2000, 50, False, False), (9, 1000, 128, True, False), (13, 700, 200, False, False),
                # a long k in k-blocks that leave strips of 256 columns in a quarter of L2
                # (small_k_block: several on any L2 of 2 MiB or less), sized from all of n, not
                # from a thread's 64-column blocks
                (9, 300, 1100, True, False), (5, 300, 2100, False, False),
                # one column of C with A transposed: A's rows summed whole, four at a time
                # (k % 4 of 1-3 after them)
                (300, 1, 1003, True, False), (257, 1, 66, True, True), (77, 1, 9, True, False)]


@pytest.mark.parametrize("m,n,k,ta,tb", SMALL_SPLITS, ids=str)
def test_small_path_split_between_threads(isa, m, n, k, ta, tb, rng):
    a, b = operands(rng, m, n, k, ta, tb)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    expected, scale = reference(a, b, ta, tb, alpha=-0.5, beta=1.5, c=c0)
    results = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        out = c0.copy()
        _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, alpha=-0.5, beta=1.5)
        check(out, expected, scale, k, f"gemm[{isa}] {m}x{n}x{k} ta={ta} tb={tb}, {threads} threads")
        results.append((out, _C.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, activation="tanh")))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[0][1], np.tanh(reference(a, b, ta, tb)[0] + bias), rtol=1e-4, atol=1e-4)


def test_thin_b_too_long_to_copy_goes_by_rows(isa, rng):
    """A thin B (n <= 16) whose B^T would take more than four L2s (of 2 MiB or less) is not
    copied for dot products; rows of C read it where it is. Same bits on 1 and 2 threads."""
    m, n, k = 20, 16, 140_000
    a, b = operands(rng, m, n, k, False, False)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    expected, scale = reference(a, b, False, False, alpha=0.5, beta=-1.0, c=c0)
    results = []
    for threads in (1, 2):
        _ref.use_threads(threads)
        out = c0.copy()
        _C.gemm(a, b, out, alpha=0.5, beta=-1.0)
        check(out, expected, scale, k, f"gemm[{isa}] {m}x{n}x{k}, {threads} threads")
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])


def test_repeated_parallel_calls_agree(rng):
    # Threads that share packed buffers must never overwrite what another still reads:
    # many runs of a shape with several row and k blocks, all bit-identical.
    _ref.use_threads(2)
    a, b = operands(rng, 515, 301, K_BLOCKS, False, True)
    first = _C.gemm(a, b, transpose_b=True)
    expected, scale = reference(a, b, False, True)
    check(first, expected, scale, K_BLOCKS, f"gemm 515x301x{K_BLOCKS}")
    for _ in range(300):
        np.testing.assert_array_equal(_C.gemm(a, b, transpose_b=True), first)
