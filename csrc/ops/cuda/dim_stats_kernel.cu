// CUDA kernels of failatlas::dim_stats. No torch headers (the CPU torch wheel's CUDA headers do not
// compile with nvcc, and this file must compile in every checkout: tests/test_build.py runs nvcc on it).
// dim_stats_glue.cpp checks the inputs, splits each column by group and sorts it (torch's sort, NaNs
// last), then calls the extern "C" launchers below. The per-value and per-column computations are those
// of ../dim_stats_merge.h (rank_element, histogram_sorted, finish), checked there against the CPU walk.

#include "../dim_stats_merge.h"  // relative: nvcc compiles this file alone too (tests/test_build.py)

#include <cuda_runtime.h>

#include <cstdint>

namespace {

namespace detail = failatlas::ops::dim_stats_detail;

constexpr int kThreads = 256;

// One thread per value: a block holds kThreads values of one column (blocks_per_column blocks per column),
// reduces their KS candidates (max) and 2U shares (sum) and adds them to the column's integers with one
// atomic each. a [D, n1] and b [D, n0]: each row sorted.
template <typename scalar_t>
__global__ void rank_kernel(
    const scalar_t* __restrict__ a,
    int64_t n1,
    const scalar_t* __restrict__ b,
    int64_t n0,
    int64_t blocks_per_column,
    unsigned long long* __restrict__ ks_num,
    unsigned long long* __restrict__ u2) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) / blocks_per_column;
  const int64_t e = (static_cast<int64_t>(blockIdx.x) % blocks_per_column) * kThreads + threadIdx.x;
  int64_t diff = 0, share = 0;
  if (e < n1 + n0) {
    detail::rank_element<scalar_t>(a + d * n1, n1, b + d * n0, n0, 1, e, &diff, &share);
  }
  unsigned long long m = static_cast<unsigned long long>(diff);
  unsigned long long s = static_cast<unsigned long long>(share);
  for (int offset = 16; offset > 0; offset /= 2) {
    const unsigned long long om = __shfl_down_sync(0xffffffffu, m, offset);
    s += __shfl_down_sync(0xffffffffu, s, offset);
    m = om > m ? om : m;
  }
  __shared__ unsigned long long warp_max[kThreads / 32];
  __shared__ unsigned long long warp_sum[kThreads / 32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      m = warp_max[w] > m ? warp_max[w] : m;
      s += warp_sum[w];
    }
    atomicMax(ks_num + d, m);
    atomicAdd(u2 + d, s);
  }
}

// One thread per column: ks and auroc from its integers, and both groups' histograms.
template <typename scalar_t>
__global__ void finish_kernel(
    const scalar_t* __restrict__ a,
    int64_t n1,
    const scalar_t* __restrict__ b,
    int64_t n0,
    int64_t D,
    const double* __restrict__ edges,
    int64_t bins,
    const unsigned long long* __restrict__ ks_num,
    const unsigned long long* __restrict__ u2,
    double* __restrict__ ks,
    double* __restrict__ auroc,
    int64_t* __restrict__ hist_true,
    int64_t* __restrict__ hist_false) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) {
    return;
  }
  detail::finish(
      static_cast<int64_t>(ks_num[d]), static_cast<int64_t>(u2[d]), n1, n0, ks + d, auroc + d);
  if (bins > 0) {
    const double* e = edges + d * (bins + 1);
    detail::histogram_sorted<scalar_t>(a + d * n1, n1, 1, e, bins, hist_true + d * bins);
    detail::histogram_sorted<scalar_t>(b + d * n0, n0, 1, e, bins, hist_false + d * bins);
  }
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
    int64_t* scratch,
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false,
    void* stream_ptr) {
  if (D == 0) {
    return static_cast<int>(cudaSuccess);
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  unsigned long long* ks_num = reinterpret_cast<unsigned long long*>(scratch);
  unsigned long long* u2 = ks_num + D;
  const int64_t N = n1 + n0;
  if (N > 0) {
    const int64_t blocks_per_column = (N + kThreads - 1) / kThreads;
    const int64_t blocks = D * blocks_per_column;
    if (blocks > 2147483647LL) {
      return static_cast<int>(cudaErrorInvalidConfiguration);
    }
    rank_kernel<scalar_t><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
        a, n1, b, n0, blocks_per_column, ks_num, u2);
    const int status = static_cast<int>(cudaGetLastError());
    if (status != 0) {
      return status;
    }
  }
  constexpr int threads = 128;
  const unsigned int blocks = static_cast<unsigned int>((D + threads - 1) / threads);
  finish_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
      a, n1, b, n0, D, edges, bins, ks_num, u2, ks, auroc, hist_true, hist_false);
  return static_cast<int>(cudaGetLastError());
}

} // namespace

// Launchers: a [D, n1] and b [D, n0], contiguous, each row (one column of values, one group) sorted
// ascending with NaNs last; edges [D, bins + 1] float64 (unused when bins == 0); scratch: 2·D int64, zeroed;
// ks, auroc [D]; hist_true, hist_false [D, bins], zeroed. Returns a cudaError_t as int (0 = success).
extern "C" int failatlas_dim_stats_cuda_f32(
    const float* a,
    int64_t n1,
    const float* b,
    int64_t n0,
    int64_t D,
    const double* edges,
    int64_t bins,
    int64_t* scratch,
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false,
    void* stream) {
  return launch<float>(a, n1, b, n0, D, edges, bins, scratch, ks, auroc, hist_true, hist_false, stream);
}

extern "C" int failatlas_dim_stats_cuda_f64(
    const double* a,
    int64_t n1,
    const double* b,
    int64_t n0,
    int64_t D,
    const double* edges,
    int64_t bins,
    int64_t* scratch,
    double* ks,
    double* auroc,
    int64_t* hist_true,
    int64_t* hist_false,
    void* stream) {
  return launch<double>(a, n1, b, n0, D, edges, bins, scratch, ks, auroc, hist_true, hist_false, stream);
}
