// Schema and argument checks of failatlas::dim_stats (kernels: cpu/dim_stats_kernel.cpp,
// cuda/dim_stats_kernel.cu, both computing with dim_stats_merge.h). The Python side (fake tensor) is in
// ops/dim_stats.py.

#include "ops/dim_stats.h"

#include "ops/checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>

namespace failatlas {
namespace ops {

using checks::dtype_name;
using checks::num;
using checks::shape_str;

void check_dim_stats_inputs(
    const at::Tensor& values,
    const at::Tensor& mask,
    const std::optional<at::Tensor>& edges) {
  TORCH_CHECK(
      values.dim() == 2, "dim_stats: values must be 2-D [N, D], got a ", num(values.dim()),
      "-D tensor of shape ", shape_str(values));
  TORCH_CHECK(
      mask.dim() == 1, "dim_stats: mask must be 1-D [N], got a ", num(mask.dim()),
      "-D tensor of shape ", shape_str(mask));
  const auto dtype = values.scalar_type();
  TORCH_CHECK(
      dtype == c10::ScalarType::Float || dtype == c10::ScalarType::Double,
      "dim_stats: values must be float32 or float64, got ", dtype_name(dtype));
  TORCH_CHECK(
      mask.scalar_type() == c10::ScalarType::Bool, "dim_stats: mask must be bool, got ",
      dtype_name(mask.scalar_type()));
  TORCH_CHECK(
      mask.device() == values.device(), "dim_stats: mask is on ", mask.device().str(),
      " but values is on ", values.device().str(), "; all inputs must be on one device");
  const int64_t N = values.size(0);
  const int64_t D = values.size(1);
  TORCH_CHECK(
      mask.size(0) == N, "dim_stats: mask has ", num(mask.size(0)), " entries but values has N = ",
      num(N), " rows");
  if (!edges.has_value()) {
    return;
  }
  const at::Tensor& e = *edges;
  TORCH_CHECK(
      e.dim() == 2, "dim_stats: edges must be 2-D [D, B + 1], got a ", num(e.dim()),
      "-D tensor of shape ", shape_str(e));
  TORCH_CHECK(
      e.scalar_type() == c10::ScalarType::Float || e.scalar_type() == c10::ScalarType::Double,
      "dim_stats: edges must be float32 or float64, got ", dtype_name(e.scalar_type()));
  TORCH_CHECK(
      e.device() == values.device(), "dim_stats: edges is on ", e.device().str(),
      " but values is on ", values.device().str(), "; all inputs must be on one device");
  TORCH_CHECK(
      e.size(0) == D, "dim_stats: edges has ", num(e.size(0)), " rows but values has D = ", num(D),
      " columns");
  TORCH_CHECK(
      e.size(1) >= 2, "dim_stats: edges must have at least 2 columns (one bin), got ", num(e.size(1)));
  if (e.numel() == 0) {
    return;
  }
  // D × (B + 1) edges: on CUDA one small copy; it keeps the kernels free of order checks.
  const at::Tensor host = e.to(c10::kCPU, c10::kDouble).contiguous();
  const double* v = host.const_data_ptr<double>();
  const int64_t cols = e.size(1);
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t j = 0; j + 1 < cols; ++j) {
      const double lo = v[d * cols + j];
      const double hi = v[d * cols + j + 1];
      TORCH_CHECK(
          lo <= hi, "dim_stats: edges[", num(d), "] must be non-decreasing and free of NaN, but edges[",
          num(d), ", ", num(j), "] = ", num(lo), " and edges[", num(d), ", ", num(j + 1), "] = ", num(hi));
    }
  }
}

} // namespace ops
} // namespace failatlas

TORCH_LIBRARY_FRAGMENT(failatlas, m) {
  m.def("dim_stats(Tensor values, Tensor mask, Tensor? edges=None) -> (Tensor, Tensor, Tensor, Tensor)");
}
