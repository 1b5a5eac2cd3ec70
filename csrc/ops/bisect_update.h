#pragma once
// bisect_update: one step of a batch of bisections (the corner-case search, analysis/corners.py).
//
//   mid = (lo + hi) / 2                 (floor division for int64 brackets, as Python's //)
//   p <= threshold:  lo' = mid, hi' = hi
//   otherwise:       lo' = lo,  hi' = mid   (a NaN p is "otherwise", as in corners.py)
//
// lo: the end known to have p <= threshold, hi: the end known to have p > threshold (corners.py's a and b:
// grid steps back from the bracket's top); either may be the larger. lo, hi [B] int64, float32 or float64
// (one dtype); p [B] float32 or float64, the probability measured at mid, compared with threshold in
// float64. Returns (lo', hi'), new tensors. The elementwise step is bisect_update_step.h (CPU and CUDA).

#include <ATen/core/Tensor.h>

namespace failatlas {
namespace ops {

// Checks ranks, dtypes, devices and sizes; throws c10::Error (RuntimeError in Python) naming the bad
// argument.
void check_bisect_update_inputs(const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& p);

} // namespace ops
} // namespace failatlas
