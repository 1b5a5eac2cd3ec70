// CUDA kernel of failatlas::dim_stats. No torch headers (the CPU torch wheel's CUDA headers do not
// compile with nvcc, and this file must compile in every checkout: tests/test_build.py runs nvcc on it).
// dim_stats_glue.cpp checks the inputs, splits the rows by group and sorts each group's columns (torch's
// sort), then calls the extern "C" launchers below.

#include "../dim_stats_merge.h"  // relative: nvcc compiles this file alone too (tests/test_build.py)

#include <cuda_runtime.h>

#include <cstdint>

namespace {

// One thread per column d: the sorted groups are row-major [n, D], so the threads of a warp read
// neighbouring values of one row (coalesced while their walks keep pace).
template <typename scalar_t>
__global__ void dim_stats_kernel(
    const scalar_t* __restrict__ a,
    int64_t n1,
    const scalar_t* __restrict__ b,
    int64_t n0,
    int64_t D,
    const double* __restrict__ edges,
    int64_t bins,
    double* __restrict__ ks,
    double* __restrict__ auroc,
    int64_t* __restrict__ hist_true,
    int64_t* __restrict__ hist_false) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) {
    return;
  }
  failatlas::ops::dim_stats_detail::merge_column<scalar_t>(
      a + d, n1, b + d, n0, D, bins > 0 ? edges + d * (bins + 1) : nullptr, bins, ks + d, auroc + d,
      hist_true + d * bins, hist_false + d * bins);
}

template <typename scalar_t>
int launch(
    const scalar_t* a,
    int64_t n1,
    const scalar_t* b,
    int64_t n0,
    int64_t D,
    const double* edges,
    int64_t bins,
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false,
    void* stream) {
  if (D == 0) {
    return static_cast<int>(cudaSuccess);
  }
  constexpr int threads = 128;
  const unsigned int blocks = static_cast<unsigned int>((D + threads - 1) / threads);
  dim_stats_kernel<scalar_t><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
      a, n1, b, n0, D, edges, bins, ks, auroc, hist_true, hist_false);
  return static_cast<int>(cudaGetLastError());
}

} // namespace

// Launchers: a [n1, D] and b [n0, D], contiguous, each column sorted ascending with NaNs last; edges
// [D, bins + 1] float64 (unused when bins == 0); ks, auroc [D]; hist_true, hist_false [D, bins], zeroed.
// Returns a cudaError_t as int (0 = success).
extern "C" int failatlas_dim_stats_cuda_f32(
    const float* a,
    int64_t n1,
    const float* b,
    int64_t n0,
    int64_t D,
    const double* edges,
    int64_t bins,
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false,
    void* stream) {
  return launch<float>(a, n1, b, n0, D, edges, bins, ks, auroc, hist_true, hist_false, stream);
}

extern "C" int failatlas_dim_stats_cuda_f64(
    const double* a,
    int64_t n1,
    const double* b,
    int64_t n0,
    int64_t D,
    const double* edges,
    int64_t bins,
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false,
    void* stream) {
  return launch<double>(a, n1, b, n0, D, edges, bins, ks, auroc, hist_true, hist_false, stream);
}
