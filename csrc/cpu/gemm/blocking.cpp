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
    const int64_t way1 = l1->sets() * l1->line_bytes;  // bytes in one way
    const int64_t ways_b1 = std::max<int64_t>(1, (l1->ways - 1) * nr / (mr + nr));
    b.kc = std::clamp<int64_t>(ways_b1 * way1 / (nr * kFloat), 16, 1024);

    const int64_t way2 = l2->sets() * l2->line_bytes;
    const int64_t ways_a2 = (b.kc * mr * kFloat + way2 - 1) / way2;
    const int64_t ways_b2 = std::max<int64_t>(1, l2->ways - 1 - ways_a2);
    const int64_t sharing = std::max(1, l2->shared_by);
    const int64_t nc = ways_b2 * way2 / sharing / (b.kc * kFloat);
    b.nc = std::max<int64_t>(nr, std::min<int64_t>(nc, int64_t{1} << 16) / nr * nr);

    if (!l3) l3 = l2;
    const int64_t way3 = l3->sets() * l3->line_bytes;
    const int64_t ways_b3 = (b.kc * b.nc * kFloat + way3 - 1) / way3;
    const int64_t ways_a3 = std::max<int64_t>(1, l3->ways - 1 - ways_b3);
    const int64_t mc = ways_a3 * way3 / std::max(1, l3->shared_by) / (b.kc * kFloat);
    b.mc = std::max<int64_t>(mr, std::min<int64_t>(mc, int64_t{1} << 16) / mr * mr);
    return b;
}

}  // namespace fastnn
