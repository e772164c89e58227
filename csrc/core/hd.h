// FASTNN_HD: a function that both the CPU's C++ and the GPU's kernels call, compiled for both
// by nvcc and as plain C++ by the host compiler (the optimizer's element, the Philox generator).
#pragma once

#ifdef __CUDACC__
#define FASTNN_HD __host__ __device__
#else
#define FASTNN_HD
#endif
