// CPU kernel of failatlas::bisect_update (schema and checks: ../bisect_update.cpp; the step:
// ../bisect_update_step.h).

#include "ops/bisect_update.h"
#include "ops/bisect_update_step.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

namespace failatlas {
namespace ops {

namespace {

constexpr int64_t kGrainElements = 32768;

template <typename bracket_t, typename prob_t>
void bisect_update_cpu_impl(
    const bracket_t* lo, const bracket_t* hi, const prob_t* p, double threshold, bracket_t* lo_out,
    bracket_t* hi_out, int64_t B) {
  at::parallel_for(0, B, kGrainElements, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      bisect_detail::step<bracket_t, prob_t>(lo[i], hi[i], p[i], threshold, lo_out + i, hi_out + i);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> bisect_update_cpu(
    const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& p, double threshold) {
  check_bisect_update_inputs(lo, hi, p);
  TORCH_INTERNAL_ASSERT(lo.device().is_cpu());
  const int64_t B = lo.size(0);
  at::Tensor lo_out = at::empty({B}, lo.options());
  at::Tensor hi_out = at::empty({B}, lo.options());
  if (B == 0) {
    return {lo_out, hi_out};
  }
  const at::Tensor lo_c = lo.contiguous();
  const at::Tensor hi_c = hi.contiguous();
  const at::Tensor p_c = p.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kLong, lo.scalar_type(), "bisect_update_cpu", [&] {
    using bracket_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "bisect_update_cpu_p", [&] {
      bisect_update_cpu_impl<bracket_t, scalar_t>(
          lo_c.const_data_ptr<bracket_t>(), hi_c.const_data_ptr<bracket_t>(), p_c.const_data_ptr<scalar_t>(),
          threshold, lo_out.mutable_data_ptr<bracket_t>(), hi_out.mutable_data_ptr<bracket_t>(), B);
    });
  });
  return {lo_out, hi_out};
}

} // namespace

TORCH_LIBRARY_IMPL(failatlas, CPU, m) {
  m.impl("bisect_update", TORCH_FN(bisect_update_cpu));
}

} // namespace ops
} // namespace failatlas
