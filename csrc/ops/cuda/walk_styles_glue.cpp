// Registers the CUDA kernel of failatlas::walk_styles (compiled only in CUDA builds, see
// CMakeLists.txt): checks the inputs, then calls the launchers of walk_styles_kernel.cu.

#include "ops/walk_styles.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

extern "C" int failatlas_walk_styles_cuda_f32(
    const float*, const int64_t*, const float*, const float*, const float*, float*,
    int64_t, int64_t, int64_t, int64_t, void*);
extern "C" int failatlas_walk_styles_cuda_f64(
    const double*, const int64_t*, const double*, const double*, const double*, double*,
    int64_t, int64_t, int64_t, int64_t, void*);

namespace failatlas {
namespace ops {

namespace {

at::Tensor walk_styles_cuda(
    const at::Tensor& starts,
    const at::Tensor& dims,
    const at::Tensor& shifts,
    const at::Tensor& sigma,
    const at::Tensor& sign) {
  check_walk_styles_inputs(starts, dims, shifts, sigma, sign);
  TORCH_INTERNAL_ASSERT(starts.device().is_cuda());
  const c10::cuda::CUDAGuard guard(starts.device());
  const int64_t N = starts.size(0);
  const int64_t D = starts.size(1);
  const int64_t K = dims.size(0);
  const int64_t M = shifts.size(0);
  at::Tensor out = at::empty({N, K, M, D}, starts.options());
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor starts_c = starts.contiguous();
  const at::Tensor dims_c = dims.contiguous();
  const at::Tensor shifts_c = shifts.contiguous();
  const at::Tensor sigma_c = sigma.contiguous();
  const at::Tensor sign_c = sign.contiguous();
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  int status = 0;
  if (starts.scalar_type() == at::kFloat) {
    status = failatlas_walk_styles_cuda_f32(
        starts_c.const_data_ptr<float>(), dims_c.const_data_ptr<int64_t>(),
        shifts_c.const_data_ptr<float>(), sigma_c.const_data_ptr<float>(),
        sign_c.const_data_ptr<float>(), out.mutable_data_ptr<float>(), N, K, M, D, stream);
  } else {
    status = failatlas_walk_styles_cuda_f64(
        starts_c.const_data_ptr<double>(), dims_c.const_data_ptr<int64_t>(),
        shifts_c.const_data_ptr<double>(), sigma_c.const_data_ptr<double>(),
        sign_c.const_data_ptr<double>(), out.mutable_data_ptr<double>(), N, K, M, D, stream);
  }
  TORCH_CHECK(
      status == 0, "walk_styles: CUDA kernel launch failed: ",
      cudaGetErrorString(static_cast<cudaError_t>(status)));
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(failatlas, CUDA, m) {
  m.impl("walk_styles", TORCH_FN(walk_styles_cuda));
}

} // namespace ops
} // namespace failatlas
