#pragma once
// The elementwise step of failatlas::bisect_update (see bisect_update.h), shared by the CPU kernel and the
// CUDA kernel: no torch headers, host and device code alike.

#include <cstdint>

#include "host_device.h"  // relative: nvcc compiles the kernels alone too

namespace failatlas {
namespace ops {
namespace bisect_detail {

// Floor of (lo + hi) / 2, as Python's (lo + hi) // 2 (C++ division truncates towards zero). The sum wraps
// as torch's int64 addition does, computed in unsigned arithmetic (signed overflow is undefined in C++).
FAILATLAS_HD inline int64_t midpoint(int64_t lo, int64_t hi) {
  const int64_t s = static_cast<int64_t>(static_cast<uint64_t>(lo) + static_cast<uint64_t>(hi));
  const int64_t q = s / 2;
  return (s % 2 != 0 && s < 0) ? q - 1 : q;
}
// (lo + hi) / 2 rounded once, in the bracket's dtype (the halving is exact).
FAILATLAS_HD inline float midpoint(float lo, float hi) {
  return (lo + hi) / 2.0f;
}
FAILATLAS_HD inline double midpoint(double lo, double hi) {
  return (lo + hi) / 2.0;
}

template <typename bracket_t, typename prob_t>
FAILATLAS_HD inline void step(
    bracket_t lo, bracket_t hi, prob_t p, double threshold, bracket_t* lo_out, bracket_t* hi_out) {
  const bracket_t mid = midpoint(lo, hi);
  const bool flipped = static_cast<double>(p) <= threshold;
  *lo_out = flipped ? mid : lo;
  *hi_out = flipped ? hi : mid;
}

} // namespace bisect_detail
} // namespace ops
} // namespace failatlas
