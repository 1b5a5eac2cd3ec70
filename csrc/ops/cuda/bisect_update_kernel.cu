// CUDA kernel of failatlas::bisect_update. No torch headers (the CPU torch wheel's CUDA headers do not
// compile with nvcc, and this file must compile in every checkout: tests/test_build.py runs nvcc on it).
// bisect_update_glue.cpp checks the inputs and calls the extern "C" launchers below.

#include "../bisect_update_step.h"  // relative: nvcc compiles this file alone too (tests/test_build.py)

#include <cuda_runtime.h>

#include <cstdint>

namespace {

template <typename bracket_t, typename prob_t>
__global__ void bisect_update_kernel(
    const bracket_t* __restrict__ lo,
    const bracket_t* __restrict__ hi,
    const prob_t* __restrict__ p,
    double threshold,
    bracket_t* __restrict__ lo_out,
    bracket_t* __restrict__ hi_out,
    int64_t B) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < B; i += stride) {
    failatlas::ops::bisect_detail::step<bracket_t, prob_t>(
        lo[i], hi[i], p[i], threshold, lo_out + i, hi_out + i);
  }
}

template <typename bracket_t, typename prob_t>
int launch(
    const bracket_t* lo,
    const bracket_t* hi,
    const prob_t* p,
    double threshold,
    bracket_t* lo_out,
    bracket_t* hi_out,
    int64_t B,
    void* stream) {
  if (B == 0) {
    return static_cast<int>(cudaSuccess);
  }
  constexpr int threads = 256;
  const int64_t wanted = (B + threads - 1) / threads;
  const unsigned int blocks = static_cast<unsigned int>(wanted < 65536 ? wanted : 65536);
  bisect_update_kernel<bracket_t, prob_t><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
      lo, hi, p, threshold, lo_out, hi_out, B);
  return static_cast<int>(cudaGetLastError());
}

} // namespace

// Launchers, one per (bracket dtype, p dtype): raw, contiguous device pointers of B elements; returns a
// cudaError_t as int (0 = success).
#define FAILATLAS_BISECT_LAUNCHER(NAME, BRACKET, PROB)                                              \
  extern "C" int NAME(                                                                             \
      const BRACKET* lo, const BRACKET* hi, const PROB* p, double threshold, BRACKET* lo_out,      \
      BRACKET* hi_out, int64_t B, void* stream) {                                                  \
    return launch<BRACKET, PROB>(lo, hi, p, threshold, lo_out, hi_out, B, stream);                 \
  }

FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_i64_f32, int64_t, float)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_i64_f64, int64_t, double)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f32_f32, float, float)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f32_f64, float, double)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f64_f32, double, float)
FAILATLAS_BISECT_LAUNCHER(failatlas_bisect_update_cuda_f64_f64, double, double)
