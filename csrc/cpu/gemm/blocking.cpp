#include "blocking.h"

#include <algorithm>

namespace fastnn {

Blocking model_blocking(const std::vector<CacheLevel>& caches, int mr, int nr) {
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
    b.kc = 16;  // the floor, for an L1 too small for even that
    for (int64_t kc = 1024; kc > 16; kc -= 8)
        if (ways(kc * mr * kFloat, *l1) + ways(kc * nr * kFloat, *l1) <= l1->ways - 1) {
            b.kc = kc;
            break;
        }

    const int64_t way2 = l2->sets() * l2->line_bytes;
    const int64_t ways_a2 = std::max<int64_t>(1, l2->ways - 1 - ways(b.kc * nr * kFloat, *l2));
    const int64_t mc = ways_a2 * way2 / std::max(1, l2->shared_by) / (b.kc * kFloat);
    b.mc = std::max<int64_t>(mr, std::min<int64_t>(mc, int64_t{1} << 16) / mr * mr);

    if (!l3) l3 = l2;
    const int64_t way3 = l3->sets() * l3->line_bytes;
    const int64_t ways_b3 = std::max<int64_t>(1, l3->ways - 1 - ways(b.kc * b.mc * kFloat, *l3));
    const int64_t nc = ways_b3 * way3 / std::max(1, l3->shared_by) / (b.kc * kFloat);
    b.nc = std::max<int64_t>(nr, std::min<int64_t>(nc, 8192) / nr * nr);
    return b;
}

}  // namespace fastnn
