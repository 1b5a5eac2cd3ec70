// Registers the CUDA kernel of failatlas::bisect_update (compiled only in CUDA builds, see
// CMakeLists.txt): checks the inputs, then calls the launchers of bisect_update_kernel.cu.

#include "ops/bisect_update.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <tuple>

#define FAILATLAS_BISECT_LAUNCHER(NAME, BRACKET, PROB) \
  extern "C" int NAME(const BRACKET*, const BRACKET*, const PROB*, double, BRACKET*, BRACKET*, int64_t, void*);
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_i64_f32, int64_t, float)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_i64_f64, int64_t, double)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f32_f32, float, float)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f32_f64, float, double)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f64_f32, double, float)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f64_f64, double, double)
#undef FAILATLAS_BISECT_LAUNCHER

namespace failatlas {
namespace ops {

namespace {

template <typename bracket_t, typename prob_t>
using Launcher = int (*)(const bracket_t*, const bracket_t*, const prob_t*, double, bracket_t*, bracket_t*,
                         int64_t, void*);

template <typename bracket_t, typename prob_t>
int run(Launcher<bracket_t, prob_t> launcher, const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& p,
        double threshold, at::Tensor& lo_out, at::Tensor& hi_out, void* stream) {
  return launcher(
      lo.const_data_ptr<bracket_t>(), hi.const_data_ptr<bracket_t>(), p.const_data_ptr<prob_t>(), threshold,
      lo_out.mutable_data_ptr<bracket_t>(), hi_out.mutable_data_ptr<bracket_t>(), lo.size(0), stream);
}

std::tuple<at::Tensor, at::Tensor> bisect_update_cuda(
    const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& p, double threshold) {
  check_bisect_update_inputs(lo, hi, p);
  TORCH_INTERNAL_ASSERT(lo.device().is_cuda());
  const c10::cuda::CUDAGuard guard(lo.device());
  const int64_t B = lo.size(0);
  at::Tensor lo_out = at::empty({B}, lo.options());
  at::Tensor hi_out = at::empty({B}, lo.options());
  if (B == 0) {
    return {lo_out, hi_out};
  }
  const at::Tensor lo_c = lo.contiguous();
  const at::Tensor hi_c = hi.contiguous();
  const at::Tensor p_c = p.contiguous();
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const bool p32 = p.scalar_type() == at::kFloat;
  int status = 0;
  switch (lo.scalar_type()) {
    case at::kLong:
      status = p32 ? run<int64_t, float>(failatlas_bisect_update_cuda_i64_f32, lo_c, hi_c, p_c, threshold,
                                         lo_out, hi_out, stream)
                   : run<int64_t, double>(failatlas_bisect_update_cuda_i64_f64, lo_c, hi_c, p_c, threshold,
                                          lo_out, hi_out, stream);
      break;
    case at::kFloat:
      status = p32 ? run<float, float>(failatlas_bisect_update_cuda_f32_f32, lo_c, hi_c, p_c, threshold,
                                       lo_out, hi_out, stream)
                   : run<float, double>(failatlas_bisect_update_cuda_f32_f64, lo_c, hi_c, p_c, threshold,
                                        lo_out, hi_out, stream);
      break;
    default:
      status = p32 ? run<double, float>(failatlas_bisect_update_cuda_f64_f32, lo_c, hi_c, p_c, threshold,
                                        lo_out, hi_out, stream)
                   : run<double, double>(failatlas_bisect_update_cuda_f64_f64, lo_c, hi_c, p_c, threshold,
                                         lo_out, hi_out, stream);
  }
  TORCH_CHECK(
      status == 0, "bisect_update: CUDA kernel launch failed: ",
      cudaGetErrorString(static_cast<cudaError_t>(status)));
  return {lo_out, hi_out};
}

} // namespace

TORCH_LIBRARY_IMPL(failatlas, CUDA, m) {
  m.impl("bisect_update", TORCH_FN(bisect_update_cuda));
}

} // namespace ops
} // namespace failatlas
