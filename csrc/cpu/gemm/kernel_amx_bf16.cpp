// AMX-BF16 microkernel, 32 x 32: four 16 x 16 fp32 accumulator tiles (tmm0-3), two A tiles
// of 16 rows x 32 ks (tmm4-5) and two B tiles of 16 k pairs x 16 columns (tmm6-7) per 32 ks.
// A is packed as 32-k groups of 32 rows x 32 bf16 (each a pair of A tiles, rows 64 bytes
// apart); B in the VNNI pairs that the AVX512_BF16 path packs too, 32 columns wide, so a B
// tile is half of each 128-byte row. The accumulator tiles are loaded from and stored to the
// driver's fp32 accumulator block. Compiled with -mavx512f -mavx512bf16 -mamx-tile
// -mamx-bf16; only called when the CPU has AMX-BF16 and AVX512_BF16 (B's packing is
// kernel_avx512_bf16.cpp's) and Linux granted this process the tile state (amx_permitted).
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bf16.h"
#include "bf16_avx512.h"

namespace fastnn {
namespace {

using namespace bf16_avx512;

constexpr int MR = 32, NR = 32, KA = 32;

// ldtilecfg's 64-byte operand: palette 1, every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
    uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// The configuration is per thread, and another library may have loaded its own on this
// thread since: loaded at the start of every thread's share of a product.
void begin() {
    static const TileConfig config;
    _tile_loadconfig(&config);
}

void pack_a(bool trans, const float* a, int64_t lda, int64_t rows, int64_t kc, uint16_t* out) {
    const int64_t kp = (kc + KA - 1) / KA * KA;
    if (trans) {
        // A row of A is one k of op(A), contiguous across op(A)'s rows: for 16 of those rows,
        // 16 k pairs as 16 vectors of pairs, transposed into each row's 32 ks.
        for (int64_t p0 = 0; p0 < kp; p0 += KA)
            for (int64_t i0 = 0; i0 < MR; i0 += 16) {
                const __mmask16 m = first(rows - i0);
                __m512i r[16];
                for (int q = 0; q < 16; ++q) {
                    const int64_t p = p0 + 2 * q;
                    r[q] = bf16_pairs(p < kc ? _mm512_maskz_loadu_ps(m, a + p * lda + i0) : _mm512_setzero_ps(),
                                      p + 1 < kc ? _mm512_maskz_loadu_ps(m, a + (p + 1) * lda + i0) : _mm512_setzero_ps());
                }
                transpose_16x16(r);
                for (int l = 0; l < 16; ++l)
                    _mm512_storeu_si512(out + (p0 / KA * MR + i0 + l) * KA, r[l]);
            }
        return;
    }
    // a row's 32 ks of a group, converted in one instruction (zeros from kc on); the rows
    // past `rows` zero. A call per 32 values (bf16_convert) had made packing A a ninth of a
    // 512 x 512 x 784 product.
    for (int64_t i = 0; i < MR; ++i)
        for (int64_t p = 0; p < kp; p += KA)
            _mm512_storeu_si512(out + (p / KA * MR + i) * KA,
                                i < rows ? row_pairs(a + i * lda + p, kc - p) : _mm512_setzero_si512());
}

void pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t cols, uint16_t* out) {
    pack_b_pairs(trans, b, ldb, kc, (kc + KA - 1) / KA * KA, cols, NR, out);
}

// The products of kp ks into tiles 0-3, which hold C's four 16 x 16 quarters on entry.
inline void accumulate(int64_t kp, const uint16_t* a, const uint16_t* b) {
    for (int64_t q = 0; q < kp / KA; ++q, a += MR * KA, b += KA * NR) {
        _tile_loadd(4, a, KA * 2);
        _tile_loadd(6, b, NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b + 32, NR * 4);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a + 16 * KA, KA * 2);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
}

// acc (a whole 32 x 32 tile, rows ld floats apart) += the products; zeroed first when fresh.
void kernel(int64_t kp, const uint16_t* a, const uint16_t* b, float* acc, int64_t ld, bool fresh) {
    const int64_t stride = ld * int64_t{sizeof(float)};
    if (fresh) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, acc, stride);
        _tile_loadd(1, acc + 16, stride);
        _tile_loadd(2, acc + 16 * ld, stride);
        _tile_loadd(3, acc + 16 * ld + 16, stride);
    }
    accumulate(kp, a, b);
    _tile_stored(0, acc, stride);
    _tile_stored(1, acc + 16, stride);
    _tile_stored(2, acc + 16 * ld, stride);
    _tile_stored(3, acc + 16 * ld + 16, stride);
}

}  // namespace

bool amx_permitted() {
    // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): Linux enables the 8 KiB tile
    // state per process on request; without it the first tile instruction faults.
    static const bool granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    return granted;
}

// one_block_kcs 4 (k up to 1024 with the Xeon's KC of 256): the tiles load their operands
// from L2 fast enough that the accumulator's round trip costs more (gemm_bf16.cpp).
const Bf16Kernel kAmxBf16Kernel = {"amx", MR, NR, KA, 4, begin, pack_a, pack_b, kernel};

}  // namespace fastnn
