#include "blocking.h"

#include <algorithm>
#include <numeric>

namespace fastnn {

Blocking model_blocking(const std::vector<CacheLevel>& caches, int mr, int nr) {
    constexpr int64_t kBBlockL2s = 4;  // the B block's cap, in L2s (blocking.h)
    constexpr int64_t kFloat = sizeof(float);
    const CacheLevel* l1 = nullptr;
    const CacheLevel* l2 = nullptr;
    const CacheLevel* l3 = nullptr;
    for (const CacheLevel& c : caches) {
        if (c.level == 1 && !l1) l1 = &c;
        if (c.level == 2 && !l2) l2 = &c;
        if (c.level == 3 && !l3) l3 = &c;
    }
    CacheLevel fallback_l1{1, 32 << 10, 8, 64, 1};
    if (!l1) l1 = &fallback_l1;
    CacheLevel fallback_l2{2, l1->size_bytes * 8, 8, l1->line_bytes, 1};  // no L2 reported
    if (!l2) l2 = &fallback_l2;

    Blocking b;
    auto ways = [](int64_t bytes, const CacheLevel& c) {
        const int64_t way = c.sets() * c.line_bytes;
        return (bytes + way - 1) / way;
    };
    // The A block and the B micro-panel share the L2 left after one way, per thread; pick
    // the (KC, MC) with the least traffic from beyond it, a float of C weighing four of B:
    // 4/KC for C, 1/(2 MC) for B.
    const int64_t l2_floats =
        std::max(1, l2->ways - 1) * l2->sets() * l2->line_bytes / std::max(1, l2->shared_by) / kFloat;
    b.kc = 16;  // the floor, for an L2 too small for even that
    b.mc = mr;
    double best = 0.0;
    for (int64_t kc = 16; kc <= 2048; kc += 8) {
        const int64_t mc = (l2_floats / kc - nr) / mr * mr;
        if (mc < mr) break;
        const double traffic = 4.0 / double(kc) + 0.5 / double(mc);
        if (best == 0.0 || traffic < best) {
            best = traffic;
            b.kc = kc;
            b.mc = mc;
        }
    }

    if (!l3) l3 = l2;
    const int64_t way3 = l3->sets() * l3->line_bytes;
    const int64_t ways_b3 = std::max<int64_t>(1, l3->ways - 1 - ways(b.kc * b.mc * kFloat, *l3));
    const int64_t l3_nc = ways_b3 * way3 / std::max(1, l3->shared_by) / (b.kc * kFloat);
    const int64_t l2_share = l2->size_bytes / std::max(1, l2->shared_by);
    const int64_t nc = std::min(l3_nc, kBBlockL2s * l2_share / (b.kc * kFloat));
    b.nc = std::max<int64_t>(nr, std::min<int64_t>(nc, 8192) / nr * nr);
    return b;
}

Blocking model_blocking_bf16(const std::vector<CacheLevel>& caches, int mr, int nr) {
    int64_t l1 = 32 << 10, l2 = 0;
    for (const CacheLevel& c : caches) {
        if (c.level == 1) l1 = c.size_bytes;
        if (c.level == 2 && !l2) l2 = c.size_bytes / std::max(1, c.shared_by);
    }
    if (l2 == 0) l2 = 8 * l1;  // no L2 reported
    Blocking b;
    b.kc = std::max<int64_t>(32, 2 * l1 / 3 / ((mr + nr) * 2) / 32 * 32);
    b.nc = std::max<int64_t>(nr, l2 / 8 / (b.kc * 2) / nr * nr);
    b.mc = std::max<int64_t>(mr, l2 / 4 / (b.nc * 4) / mr * mr);
    return b;
}

bool strided_rows_fit_l2(const std::vector<CacheLevel>& caches, int64_t rows, int64_t stride_bytes) {
    for (const CacheLevel& c : caches) {
        if (c.level != 2) continue;
        const int64_t way = c.sets() * c.line_bytes;
        const int64_t shared = std::gcd(std::max<int64_t>(stride_bytes, 1), way);
        return rows * shared <= way * std::max(1, c.ways / 2);
    }
    return false;  // no L2 reported: pack
}

}  // namespace fastnn
