#pragma once
// walk_styles: a batch of single-dimension walks in StyleSpace.
//
//   out[n, k, m, :] = starts[n, :], except out[n, k, m, dims[k]] += shifts[m] * sigma[dims[k]] * sign[k]
//
// starts [N, D], dims [K] int64, shifts [M] (in sigma units), sigma [D], sign [K]; out [N, K, M, D].
// The schema is defined in walk_styles.cpp; each backend (cpu/, cuda/) registers one kernel.

#include <ATen/core/Tensor.h>

namespace failatlas {
namespace ops {

// Checks everything a kernel relies on (ranks, dtypes, devices, sizes, every dims value in [0, D));
// throws c10::Error (RuntimeError in Python) naming the bad argument and value.
void check_walk_styles_inputs(
    const at::Tensor& starts,
    const at::Tensor& dims,
    const at::Tensor& shifts,
    const at::Tensor& sigma,
    const at::Tensor& sign);

} // namespace ops
} // namespace failatlas
