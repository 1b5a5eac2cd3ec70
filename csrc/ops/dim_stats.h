#pragma once
// dim_stats: per-dimension statistics of a [N, D] matrix split into two groups by a bool mask [N].
//
//   ks[d]     two-sample Kolmogorov–Smirnov statistic sup_x |F_true(x) − F_false(x)| of column d (exact:
//             the empirical CDFs compared after each run of tied values, in integer arithmetic)
//   auroc[d]  AUROC of column d as a score for mask = true (Mann–Whitney U / (n_true · n_false), ties ½)
//   hist_true[d, j], hist_false[d, j]
//             counts of each group in bin j of edges[d] (bins [e_j, e_{j+1}), the last one closed; values
//             below e_0 count in bin 0, above e_B or NaN in bin B − 1: the analysis's searchsorted + clamp)
// NaN values count as larger than every number and tie with each other.
//
// values [N, D] float32/float64; mask [N] bool; edges [D, B + 1] float32/float64 (non-decreasing rows)
// or none (then the histograms are [D, 0]). ks and auroc are float64 [D], NaN when a group is empty;
// the histograms int64 [D, B]. The schema is defined in dim_stats.cpp; each backend (cpu/, cuda/)
// registers one kernel; both run the merge walk of dim_stats_merge.h over the sorted columns of each group
// (one thread per column on CUDA: the layout that ran on the H200; a one-thread-per-value kernel was
// written (commit f449620) but never ran on a GPU, so it is not the one built).

#include <ATen/core/Tensor.h>

#include <optional>

namespace failatlas {
namespace ops {

// Checks everything a kernel relies on (ranks, dtypes, devices, sizes, every edges row non-decreasing
// and free of NaN); throws c10::Error (RuntimeError in Python) naming the bad argument and value.
void check_dim_stats_inputs(
    const at::Tensor& values,
    const at::Tensor& mask,
    const std::optional<at::Tensor>& edges);

} // namespace ops
} // namespace failatlas
