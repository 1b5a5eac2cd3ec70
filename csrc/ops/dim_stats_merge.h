#pragma once
// The per-column computations of failatlas::dim_stats, shared by the CPU kernel (cpu/dim_stats_kernel.cpp)
// and the CUDA kernel (cuda/dim_stats_kernel.cu): no torch headers, host and device code alike.
//
// Order: ascending, NaN after every number (+inf included) and all NaNs equal to each other (one run
// of ties); the statistics are those of this order. Each group's values are sorted in it: a (mask true,
// n1 values) and b (mask false, n0 values), element i at a[i * stride].
//
// merge_column (one task per column on the CPU, one thread per column on CUDA): one walk over the merged
// order, one run of tied values at a time:
//   run r with p values of a and q of b, after c1 values of a and c0 of b:
//     2U += p · (2 c0 + q)          Mann–Whitney U of a over b, ties ½ (so 2U is an integer)
//     then c1 += p, c0 += q and KS = max |c1 n0 − c0 n1|   (n0 n1 times the ECDF difference, exact)
//   and the run's values go to the bin of their value (one pointer, moving up: the runs are sorted).
// ks = KS / (n0 n1) and auroc = U / (n0 n1) in float64: the same roundings as the analysis code
// (failatlas/analysis/separation.py), whose integer and half-integer intermediates are exact too.
// Bins: index = (number of edges <= v) − 1 clamped to [0, B − 1] (NaN: B − 1), as searchsorted + clamp.

#include <cmath>
#include <cstdint>

#include "host_device.h"  // relative: nvcc compiles the kernels alone too

namespace failatlas {
namespace ops {
namespace dim_stats_detail {

template <typename T>
FAILATLAS_HD inline bool is_nan(T x) {
  return x != x;
}

// x strictly before y in the ascending order with NaNs last (NaNs equivalent to each other).
template <typename T>
FAILATLAS_HD inline bool before(T x, T y) {
  return x < y || (!is_nan(x) && is_nan(y));
}

// x and y tie in that order.
template <typename T>
FAILATLAS_HD inline bool same(T x, T y) {
  return x == y || (is_nan(x) && is_nan(y));
}

// ks and auroc from the integers KS = max |c1 n0 − c0 n1| and 2U; NaN when a group is empty.
FAILATLAS_HD inline void finish(int64_t ks_num, int64_t u2, int64_t n1, int64_t n0, double* ks, double* auroc) {
  const int64_t pairs = n1 * n0;
  if (pairs == 0) {
    *ks = static_cast<double>(NAN);
    *auroc = static_cast<double>(NAN);
  } else {
    *ks = static_cast<double>(ks_num) / static_cast<double>(pairs);
    *auroc = (0.5 * static_cast<double>(u2)) / static_cast<double>(pairs);
  }
}

// edges: the B + 1 edges of this column (float64, non-decreasing), or unused when bins == 0;
// hist_true, hist_false: this column's B counts, zero on entry.
template <typename T>
FAILATLAS_HD inline void merge_column(
    const T* a,
    int64_t n1,
    const T* b,
    int64_t n0,
    int64_t stride,
    const double* edges,
    int64_t bins,
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false) {
  int64_t i = 0, k = 0, c1 = 0, c0 = 0;
  int64_t ks_num = 0; // max |c1 n0 − c0 n1| over the run ends
  int64_t u2 = 0; // 2U
  int64_t bin = 0, in_true = 0, in_false = 0; // the current bin and its counts not yet written
  while (i < n1 || k < n0) {
    const bool take_a = i < n1 && (k == n0 || !before(b[k * stride], a[i * stride]));
    const T v = take_a ? a[i * stride] : b[k * stride];
    int64_t p = 0, q = 0;
    while (i + p < n1 && same(a[(i + p) * stride], v)) {
      ++p;
    }
    while (k + q < n0 && same(b[(k + q) * stride], v)) {
      ++q;
    }
    u2 += p * (2 * c0 + q);
    c1 += p;
    c0 += q;
    i += p;
    k += q;
    const int64_t diff = c1 * n0 - c0 * n1;
    const int64_t abs_diff = diff < 0 ? -diff : diff;
    if (abs_diff > ks_num) {
      ks_num = abs_diff;
    }
    if (bins > 0) {
      // bin = (number of edges <= v) − 1, clamped to [0, B − 1]; NaN counts above every edge.
      int64_t j = bin;
      if (is_nan(v)) {
        j = bins - 1;
      } else {
        const double x = static_cast<double>(v);
        while (j + 1 < bins && edges[j + 1] <= x) {
          ++j;
        }
      }
      if (j != bin) {
        hist_true[bin] += in_true;
        hist_false[bin] += in_false;
        in_true = in_false = 0;
        bin = j;
      }
      in_true += p;
      in_false += q;
    }
  }
  if (bins > 0) {
    hist_true[bin] += in_true;
    hist_false[bin] += in_false;
  }
  finish(ks_num, u2, n1, n0, ks, auroc);
}

} // namespace dim_stats_detail
} // namespace ops
} // namespace failatlas
