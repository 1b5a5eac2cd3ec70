// Registers the CUDA kernel of failatlas::dim_stats (compiled only in CUDA builds, see CMakeLists.txt):
// checks the inputs, splits the rows by group, sorts each group's columns with torch's sort (NaNs last,
// as the merge walk expects), then calls the launchers of dim_stats_kernel.cu.

#include "ops/dim_stats.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <tuple>

extern "C" int failatlas_dim_stats_cuda_f32(
    const float*, int64_t, const float*, int64_t, int64_t, const double*, int64_t, double*, double*,
    int64_t*, int64_t*, void*);
extern "C" int failatlas_dim_stats_cuda_f64(
    const double*, int64_t, const double*, int64_t, int64_t, const double*, int64_t, double*, double*,
    int64_t*, int64_t*, void*);

namespace failatlas {
namespace ops {

namespace {

// The rows of values in group `rows` (int64 indices), each column sorted ascending: [n, D], contiguous.
at::Tensor sorted_rows(const at::Tensor& values, const at::Tensor& rows) {
  at::Tensor part = values.index_select(0, rows);
  if (part.size(0) > 1) {
    part = std::get<0>(part.sort(0));
  }
  return part.contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dim_stats_cuda(
    const at::Tensor& values,
    const at::Tensor& mask,
    const std::optional<at::Tensor>& edges) {
  check_dim_stats_inputs(values, mask, edges);
  TORCH_INTERNAL_ASSERT(values.device().is_cuda());
  const c10::cuda::CUDAGuard guard(values.device());
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
  const at::Tensor a = sorted_rows(values, mask.nonzero().view({-1}));
  const at::Tensor b = sorted_rows(values, mask.logical_not().nonzero().view({-1}));
  at::Tensor edges_c;
  if (B > 0) {
    edges_c = edges->to(at::kDouble).contiguous();
  }
  const double* edges_ptr = B > 0 ? edges_c.const_data_ptr<double>() : nullptr;
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  int status = 0;
  if (values.scalar_type() == at::kFloat) {
    status = failatlas_dim_stats_cuda_f32(
        a.const_data_ptr<float>(), a.size(0), b.const_data_ptr<float>(), b.size(0), D, edges_ptr, B,
        ks.mutable_data_ptr<double>(), auroc.mutable_data_ptr<double>(),
        hist_true.mutable_data_ptr<int64_t>(), hist_false.mutable_data_ptr<int64_t>(), stream);
  } else {
    status = failatlas_dim_stats_cuda_f64(
        a.const_data_ptr<double>(), a.size(0), b.const_data_ptr<double>(), b.size(0), D, edges_ptr, B,
        ks.mutable_data_ptr<double>(), auroc.mutable_data_ptr<double>(),
        hist_true.mutable_data_ptr<int64_t>(), hist_false.mutable_data_ptr<int64_t>(), stream);
  }
  TORCH_CHECK(
      status == 0, "dim_stats: CUDA kernel launch failed: ",
      cudaGetErrorString(static_cast<cudaError_t>(status)));
  return {ks, auroc, hist_true, hist_false};
}

} // namespace

TORCH_LIBRARY_IMPL(failatlas, CUDA, m) {
  m.impl("dim_stats", TORCH_FN(dim_stats_cuda));
}

} // namespace ops
} // namespace failatlas
