// How the kernels split their work, in one place. Two kinds, and which is which matters:
//  - speed only: how much work a thread takes before a fork pays, the tiles of stack
//    buffers. Change them freely: results stay bit-identical, since every element's
//    arithmetic is the same however a range is split.
//  - results: they fix the order of floating-point sums (partial sums over a fixed number
//    of elements or rows, then added in order), which is what makes results independent of
//    the thread count. Changing one changes results in the last bits, and so the exact
//    repetition of a run made with an earlier build.
// (The GEMM's blocks and thresholds are per ISA, in its context: cpu/gemm/gemm.h.)
#pragma once
#include <cstdint>

namespace fastnn {

// ---- speed only
constexpr int64_t kGrain = 1 << 15;         // elements per thread before a fork pays
constexpr int64_t kDropoutGrain = 1 << 14;  // dropout draws a random number per element
constexpr int64_t kRandomTile = 1024;       // random numbers drawn at a time, on the stack

// ---- results
constexpr int64_t kSumChunk = 4096;     // elements per partial sum: losses, penalty, sum_squares
constexpr int64_t kColumnSumRows = 32;  // rows per partial column sum: bias gradients

}  // namespace fastnn
