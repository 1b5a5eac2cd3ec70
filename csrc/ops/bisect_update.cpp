// Schema and argument checks of failatlas::bisect_update (kernels: cpu/bisect_update_kernel.cpp,
// cuda/bisect_update_kernel.cu, both running bisect_update_step.h). The Python side (fake tensor) is in
// ops/bisect_update.py.

#include "ops/bisect_update.h"

#include "ops/checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

namespace failatlas {
namespace ops {

using checks::dtype_name;
using checks::num;
using checks::shape_str;

void check_bisect_update_inputs(const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& p) {
  const std::pair<const at::Tensor*, const char*> all[] = {{&lo, "lo"}, {&hi, "hi"}, {&p, "p"}};
  for (const auto& [t, name] : all) {
    TORCH_CHECK(
        t->dim() == 1, "bisect_update: ", name, " must be 1-D [B], got a ", num(t->dim()),
        "-D tensor of shape ", shape_str(*t));
  }
  const auto dtype = lo.scalar_type();
  TORCH_CHECK(
      dtype == c10::ScalarType::Long || dtype == c10::ScalarType::Float ||
          dtype == c10::ScalarType::Double,
      "bisect_update: lo must be int64, float32 or float64, got ", dtype_name(dtype));
  TORCH_CHECK(
      hi.scalar_type() == dtype, "bisect_update: hi must have the dtype of lo (", dtype_name(dtype),
      "), got ", dtype_name(hi.scalar_type()));
  TORCH_CHECK(
      p.scalar_type() == c10::ScalarType::Float || p.scalar_type() == c10::ScalarType::Double,
      "bisect_update: p must be float32 or float64, got ", dtype_name(p.scalar_type()));
  for (const auto& [t, name] : all) {
    TORCH_CHECK(
        t->device() == lo.device(), "bisect_update: ", name, " is on ", t->device().str(),
        " but lo is on ", lo.device().str(), "; all inputs must be on one device");
  }
  const int64_t B = lo.size(0);
  TORCH_CHECK(
      hi.size(0) == B, "bisect_update: hi has ", num(hi.size(0)), " entries but lo has B = ", num(B));
  TORCH_CHECK(
      p.size(0) == B, "bisect_update: p has ", num(p.size(0)), " entries but lo has B = ", num(B));
}

} // namespace ops
} // namespace failatlas

TORCH_LIBRARY_FRAGMENT(failatlas, m) {
  m.def("bisect_update(Tensor lo, Tensor hi, Tensor p, float threshold) -> (Tensor, Tensor)");
}
