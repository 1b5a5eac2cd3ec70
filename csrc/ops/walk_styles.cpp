// Schema and argument checks of failatlas::walk_styles (kernels: cpu/walk_styles_kernel.cpp,
// cuda/walk_styles_kernel.cu). The Python side (fake tensor, autograd) is in ops/walk_styles.py.

#include "ops/walk_styles.h"

#include "ops/checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>

namespace failatlas {
namespace ops {

namespace {

using checks::dtype_name;
using checks::num;
using checks::shape_str;

void check_1d(const at::Tensor& t, const char* name, const char* shape) {
  TORCH_CHECK(
      t.dim() == 1, "walk_styles: ", name, " must be 1-D ", shape, ", got a ", num(t.dim()),
      "-D tensor of shape ", shape_str(t));
}

} // namespace

void check_walk_styles_inputs(
    const at::Tensor& starts,
    const at::Tensor& dims,
    const at::Tensor& shifts,
    const at::Tensor& sigma,
    const at::Tensor& sign) {
  TORCH_CHECK(
      starts.dim() == 2, "walk_styles: starts must be 2-D [N, D], got a ", num(starts.dim()),
      "-D tensor of shape ", shape_str(starts));
  check_1d(dims, "dims", "[K]");
  check_1d(shifts, "shifts", "[M]");
  check_1d(sigma, "sigma", "[D]");
  check_1d(sign, "sign", "[K]");

  const auto dtype = starts.scalar_type();
  TORCH_CHECK(
      dtype == c10::ScalarType::Float || dtype == c10::ScalarType::Double,
      "walk_styles: starts must be float32 or float64, got ", dtype_name(dtype));
  const std::pair<const at::Tensor*, const char*> same_dtype[] = {
      {&shifts, "shifts"}, {&sigma, "sigma"}, {&sign, "sign"}};
  for (const auto& [t, name] : same_dtype) {
    TORCH_CHECK(
        t->scalar_type() == dtype, "walk_styles: ", name, " must have the dtype of starts (",
        dtype_name(dtype), "), got ", dtype_name(t->scalar_type()));
  }
  TORCH_CHECK(
      dims.scalar_type() == c10::ScalarType::Long, "walk_styles: dims must be int64, got ",
      dtype_name(dims.scalar_type()));

  const std::pair<const at::Tensor*, const char*> same_device[] = {
      {&dims, "dims"}, {&shifts, "shifts"}, {&sigma, "sigma"}, {&sign, "sign"}};
  for (const auto& [t, name] : same_device) {
    TORCH_CHECK(
        t->device() == starts.device(), "walk_styles: ", name, " is on ", t->device().str(),
        " but starts is on ", starts.device().str(), "; all inputs must be on one device");
  }

  const int64_t D = starts.size(1);
  const int64_t K = dims.size(0);
  TORCH_CHECK(
      sigma.size(0) == D, "walk_styles: sigma has ", num(sigma.size(0)),
      " entries but starts has D = ", num(D), " columns");
  TORCH_CHECK(
      sign.size(0) == K, "walk_styles: sign has ", num(sign.size(0)), " entries but dims has K = ",
      num(K));

  if (K == 0) {
    return;
  }
  // K is small (the walked dimensions); on CUDA this is one small copy, and it keeps the kernels free
  // of bounds checks.
  const at::Tensor host_dims = dims.to(c10::kCPU).contiguous();
  const int64_t* values = host_dims.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < K; ++k) {
    TORCH_CHECK(
        values[k] >= 0 && values[k] < D, "walk_styles: dims[", num(k), "] = ", num(values[k]),
        " is out of range for starts with D = ", num(D));
  }
}

} // namespace ops
} // namespace failatlas

TORCH_LIBRARY(failatlas, m) {
  m.def(
      "walk_styles(Tensor starts, Tensor dims, Tensor shifts, Tensor sigma, Tensor sign) -> Tensor");
}
