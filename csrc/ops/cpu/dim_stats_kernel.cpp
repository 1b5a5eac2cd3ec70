// CPU kernel of failatlas::dim_stats (schema and checks: ../dim_stats.cpp; the per-column walk:
// ../dim_stats_merge.h).

#include "ops/dim_stats.h"
#include "ops/dim_stats_merge.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace failatlas {
namespace ops {

namespace {

// Sorts [begin, end) ascending with NaNs last (a valid strict weak order for std::sort: the NaNs are
// moved out of its way first).
template <typename scalar_t>
void sort_nan_last(scalar_t* begin, scalar_t* end) {
  scalar_t* finite_end = std::partition(begin, end, [](scalar_t v) { return v == v; });
  std::sort(begin, finite_end);
}

template <typename scalar_t>
void dim_stats_cpu_impl(
    const scalar_t* columns, // [D, N], column d at columns + d * N
    const uint8_t* mask,
    const double* edges, // [D, B + 1] or null
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false,
    int64_t N,
    int64_t D,
    int64_t B,
    int64_t n1) {
  // One task sorts and walks whole columns (about N log N each); columns are grouped so that a task
  // reads about 32768 values.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(N, 1));
  at::parallel_for(0, D, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buffer(static_cast<size_t>(N));
    scalar_t* a = buffer.data();
    scalar_t* b = buffer.data() + n1;
    for (int64_t d = begin; d < end; ++d) {
      const scalar_t* column = columns + d * N;
      int64_t ia = 0, ib = 0;
      for (int64_t n = 0; n < N; ++n) {
        if (mask[n] != 0) {
          a[ia++] = column[n];
        } else {
          b[ib++] = column[n];
        }
      }
      sort_nan_last(a, a + n1);
      sort_nan_last(b, b + (N - n1));
      dim_stats_detail::merge_column<scalar_t>(
          a, n1, b, N - n1, 1, edges ? edges + d * (B + 1) : nullptr, B, ks + d, auroc + d,
          hist_true + d * B, hist_false + d * B);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dim_stats_cpu(
    const at::Tensor& values,
    const at::Tensor& mask,
    const std::optional<at::Tensor>& edges) {
  check_dim_stats_inputs(values, mask, edges);
  TORCH_INTERNAL_ASSERT(values.device().is_cpu());
  const int64_t N = values.size(0);
  const int64_t D = values.size(1);
  const int64_t B = edges.has_value() ? edges->size(1) - 1 : 0;
  const auto f64 = values.options().dtype(at::kDouble);
  const auto i64 = values.options().dtype(at::kLong);
  at::Tensor ks = at::empty({D}, f64);
  at::Tensor auroc = at::empty({D}, f64);
  at::Tensor hist_true = at::zeros({D, B}, i64);
  at::Tensor hist_false = at::zeros({D, B}, i64);
  if (D == 0) {
    return {ks, auroc, hist_true, hist_false};
  }
  // Columns as contiguous rows (one transposed copy unless values already is column-major).
  const at::Tensor columns = values.t().contiguous();
  // The mask's bytes are read as uint8 and tested against 0: a bool tensor viewed from other bytes
  // (uint8.view(bool), numpy's view, torch.empty) may hold 2..255 for True, and reading those as bool
  // is undefined (the compiler added the byte to n1, and the partition then overran its buffer).
  const at::Tensor mask_c = mask.contiguous();
  const uint8_t* mask_ptr = reinterpret_cast<const uint8_t*>(mask_c.const_data_ptr<bool>());
  int64_t n1 = 0;
  for (int64_t n = 0; n < N; ++n) {
    n1 += mask_ptr[n] != 0 ? 1 : 0;
  }
  at::Tensor edges_c;
  if (B > 0) {
    edges_c = edges->to(at::kDouble).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "dim_stats_cpu", [&] {
    dim_stats_cpu_impl<scalar_t>(
        columns.const_data_ptr<scalar_t>(), mask_ptr, B > 0 ? edges_c.const_data_ptr<double>() : nullptr,
        ks.mutable_data_ptr<double>(), auroc.mutable_data_ptr<double>(),
        hist_true.mutable_data_ptr<int64_t>(), hist_false.mutable_data_ptr<int64_t>(), N, D, B, n1);
  });
  return {ks, auroc, hist_true, hist_false};
}

} // namespace

TORCH_LIBRARY_IMPL(failatlas, CPU, m) {
  m.impl("dim_stats", TORCH_FN(dim_stats_cpu));
}

} // namespace ops
} // namespace failatlas
