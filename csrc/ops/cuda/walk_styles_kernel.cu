// CUDA kernel of failatlas::walk_styles. No torch headers (the CPU torch wheel's CUDA headers do not
// compile with nvcc, and this file must compile in every checkout: tests/test_build.py runs nvcc on it).
// walk_styles_glue.cpp checks the inputs and calls the extern "C" launchers below.

#include <cuda_runtime.h>

#include <cstdint>

namespace {

// Explicitly rounded operations: nvcc would otherwise fuse the multiply-add, and the result would
// differ in the last bit from the CPU kernel and the reference.
__device__ __forceinline__ float moved(float start, float shift, float sigma, float sign) {
  return __fadd_rn(start, __fmul_rn(__fmul_rn(shift, sigma), sign));
}
__device__ __forceinline__ double moved(double start, double shift, double sigma, double sign) {
  return __dadd_rn(start, __dmul_rn(__dmul_rn(shift, sigma), sign));
}

// One thread per output element (grid-stride), so that writes, the bulk of the traffic, coalesce.
template <typename scalar_t>
__global__ void walk_styles_kernel(
    const scalar_t* __restrict__ starts,
    const int64_t* __restrict__ dims,
    const scalar_t* __restrict__ shifts,
    const scalar_t* __restrict__ sigma,
    const scalar_t* __restrict__ sign,
    scalar_t* __restrict__ out,
    int64_t K,
    int64_t M,
    int64_t D,
    int64_t total) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t d = i % D;
    const int64_t row = i / D;
    const int64_t m = row % M;
    const int64_t k = (row / M) % K;
    const int64_t n = row / (M * K);
    const scalar_t start = starts[n * D + d];
    out[i] = (d == dims[k]) ? moved(start, shifts[m], sigma[d], sign[k]) : start;
  }
}

template <typename scalar_t>
int launch(
    const scalar_t* starts,
    const int64_t* dims,
    const scalar_t* shifts,
    const scalar_t* sigma,
    const scalar_t* sign,
    scalar_t* out,
    int64_t N,
    int64_t K,
    int64_t M,
    int64_t D,
    void* stream) {
  const int64_t total = N * K * M * D;
  if (total == 0) {
    return static_cast<int>(cudaSuccess);
  }
  constexpr int threads = 256;
  // Enough blocks to fill any current GPU several times over; the grid-stride loop does the rest.
  const int64_t wanted = (total + threads - 1) / threads;
  const unsigned int blocks = static_cast<unsigned int>(wanted < 65536 ? wanted : 65536);
  walk_styles_kernel<scalar_t><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
      starts, dims, shifts, sigma, sign, out, K, M, D, total);
  return static_cast<int>(cudaGetLastError());
}

} // namespace

// Launchers: raw, contiguous device pointers; returns a cudaError_t as int (0 = success).
extern "C" int failatlas_walk_styles_cuda_f32(
    const float* starts,
    const int64_t* dims,
    const float* shifts,
    const float* sigma,
    const float* sign,
    float* out,
    int64_t N,
    int64_t K,
    int64_t M,
    int64_t D,
    void* stream) {
  return launch<float>(starts, dims, shifts, sigma, sign, out, N, K, M, D, stream);
}

extern "C" int failatlas_walk_styles_cuda_f64(
    const double* starts,
    const int64_t* dims,
    const double* shifts,
    const double* sigma,
    const double* sign,
    double* out,
    int64_t N,
    int64_t K,
    int64_t M,
    int64_t D,
    void* stream) {
  return launch<double>(starts, dims, shifts, sigma, sign, out, N, K, M, D, stream);
}
