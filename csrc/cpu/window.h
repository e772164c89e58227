// What convolution and pooling share: the output columns a kernel tap (or window column)
// reads inside the image, the rest being padding.
#pragma once
#include <algorithm>
#include <cstdint>

namespace fastnn {

// The output columns [lo, hi) whose tap lands inside a row of width w: ix = ox * sw + offset,
// 0 <= ix < w.
inline void inside(int64_t ow, int64_t w, int64_t sw, int64_t offset, int64_t& lo, int64_t& hi) {
    lo = offset >= 0 ? 0 : (-offset + sw - 1) / sw;
    hi = w - 1 - offset < 0 ? 0 : (w - 1 - offset) / sw + 1;
    lo = std::min(lo, ow);
    hi = std::max(std::min(hi, ow), lo);
}

}  // namespace fastnn
