// Pieces of the inline assembly of AVX2's register tiles (the GEMM's 6 x 16 tiles in
// gemm/kernel_avx2.cpp, the direct convolution's 6 x 2-vector tiles in conv_direct_avx2.cpp):
// 12 accumulators in ymm0-11, the loop's operands in ymm12-15. As intrinsics, GCC 12 kept
// one of the 12 on the stack and copied registers about (the GEMM's tile, its operands in
// L1: 75% of the FMA peak on a Zen 3, 97-100% in assembly).
#pragma once

// The accumulators to zero.
#define FASTNN_AVX2_TILE_ZERO                                                              \
    "vxorps %%ymm0, %%ymm0, %%ymm0\n\t"                                                    \
    "vxorps %%ymm1, %%ymm1, %%ymm1\n\t"                                                    \
    "vxorps %%ymm2, %%ymm2, %%ymm2\n\t"                                                    \
    "vxorps %%ymm3, %%ymm3, %%ymm3\n\t"                                                    \
    "vxorps %%ymm4, %%ymm4, %%ymm4\n\t"                                                    \
    "vxorps %%ymm5, %%ymm5, %%ymm5\n\t"                                                    \
    "vxorps %%ymm6, %%ymm6, %%ymm6\n\t"                                                    \
    "vxorps %%ymm7, %%ymm7, %%ymm7\n\t"                                                    \
    "vxorps %%ymm8, %%ymm8, %%ymm8\n\t"                                                    \
    "vxorps %%ymm9, %%ymm9, %%ymm9\n\t"                                                    \
    "vxorps %%ymm10, %%ymm10, %%ymm10\n\t"                                                 \
    "vxorps %%ymm11, %%ymm11, %%ymm11\n\t"

// The accumulators moved to (TO: `vmovaps %%ymmI, OFF(%[OP])`) or from (`vmovaps OFF(%[OP]),
// %%ymmI`) the 12 32-byte aligned vectors at operand OP, ymm i at byte 32 i.
#define FASTNN_AVX2_TILE_MOVE_(FIRST, SECOND) "vmovaps " FIRST ", " SECOND "\n\t"
#define FASTNN_AVX2_TILE_STORE_ONE_(I, OFF, OP) FASTNN_AVX2_TILE_MOVE_("%%ymm" #I, #OFF "(%[" #OP "])")
#define FASTNN_AVX2_TILE_LOAD_ONE_(I, OFF, OP) FASTNN_AVX2_TILE_MOVE_(#OFF "(%[" #OP "])", "%%ymm" #I)
#define FASTNN_AVX2_TILE_EACH_(ONE, OP)                                                    \
    ONE(0, 0, OP) ONE(1, 32, OP) ONE(2, 64, OP) ONE(3, 96, OP) ONE(4, 128, OP)              \
    ONE(5, 160, OP) ONE(6, 192, OP) ONE(7, 224, OP) ONE(8, 256, OP) ONE(9, 288, OP)         \
    ONE(10, 320, OP) ONE(11, 352, OP)
#define FASTNN_AVX2_TILE_STORE(OP) FASTNN_AVX2_TILE_EACH_(FASTNN_AVX2_TILE_STORE_ONE_, OP)
#define FASTNN_AVX2_TILE_LOAD(OP) FASTNN_AVX2_TILE_EACH_(FASTNN_AVX2_TILE_LOAD_ONE_, OP)

// What every such block overwrites.
#define FASTNN_AVX2_TILE_CLOBBERS                                                          \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc"
