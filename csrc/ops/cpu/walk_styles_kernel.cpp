// CPU kernel of failatlas::walk_styles (schema and checks: ../walk_styles.cpp).

#include "ops/walk_styles.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

namespace failatlas {
namespace ops {

namespace {

// Elements per parallel task, as at::internal::GRAIN_SIZE (which lives in the heavy TensorIterator.h).
constexpr int64_t kGrainElements = 32768;

template <typename scalar_t>
void walk_styles_cpu_impl(
    const scalar_t* starts,
    const int64_t* dims,
    const scalar_t* shifts,
    const scalar_t* sigma,
    const scalar_t* sign,
    scalar_t* out,
    int64_t N,
    int64_t K,
    int64_t M,
    int64_t D) {
  // One task is one output row out[n, k, m, :]: a copy of starts[n] with one entry moved. Rows are
  // grouped so that a task copies about kGrainElements elements.
  const int64_t rows = N * K * M;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(D, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t m = r % M;
      const int64_t k = (r / M) % K;
      const int64_t n = r / (M * K);
      scalar_t* row = out + r * D;
      std::copy_n(starts + n * D, D, row);
      const int64_t d = dims[k];
      row[d] = starts[n * D + d] + shifts[m] * sigma[d] * sign[k];
    }
  });
}

at::Tensor walk_styles_cpu(
    const at::Tensor& starts,
    const at::Tensor& dims,
    const at::Tensor& shifts,
    const at::Tensor& sigma,
    const at::Tensor& sign) {
  check_walk_styles_inputs(starts, dims, shifts, sigma, sign);
  TORCH_INTERNAL_ASSERT(starts.device().is_cpu());
  const int64_t N = starts.size(0);
  const int64_t D = starts.size(1);
  const int64_t K = dims.size(0);
  const int64_t M = shifts.size(0);
  at::Tensor out = at::empty({N, K, M, D}, starts.options());
  if (out.numel() == 0) {
    return out;
  }
  // Transposed or sliced inputs are copied once; the kernel indexes dense rows.
  const at::Tensor starts_c = starts.contiguous();
  const at::Tensor dims_c = dims.contiguous();
  const at::Tensor shifts_c = shifts.contiguous();
  const at::Tensor sigma_c = sigma.contiguous();
  const at::Tensor sign_c = sign.contiguous();
  AT_DISPATCH_FLOATING_TYPES(starts.scalar_type(), "walk_styles_cpu", [&] {
    walk_styles_cpu_impl<scalar_t>(
        starts_c.const_data_ptr<scalar_t>(),
        dims_c.const_data_ptr<int64_t>(),
        shifts_c.const_data_ptr<scalar_t>(),
        sigma_c.const_data_ptr<scalar_t>(),
        sign_c.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(),
        N, K, M, D);
  });
  return out;
}

} // namespace

TORCH_LIBRARY_IMPL(failatlas, CPU, m) {
  m.impl("walk_styles", TORCH_FN(walk_styles_cpu));
}

} // namespace ops
} // namespace failatlas
