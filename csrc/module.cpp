// The pybind11 module failatlas._C. Loading it runs the TORCH_LIBRARY registrations of csrc/ops/*;
// tensor math is reached through the dispatcher (torch.ops.failatlas.*), never through pybind11.
// This module carries metadata only (and, later, the engine object).

#include <pybind11/pybind11.h>

#ifndef FAILATLAS_VERSION
#define FAILATLAS_VERSION ""
#endif
#ifndef FAILATLAS_TORCH_VERSION
#define FAILATLAS_TORCH_VERSION ""
#endif
#ifndef FAILATLAS_WITH_CUDA
#define FAILATLAS_WITH_CUDA 0
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "failatlas native core: registers the torch.ops.failatlas operators";
  m.attr("__version__") = FAILATLAS_VERSION;
  m.attr("built_with_torch") = FAILATLAS_TORCH_VERSION;
  m.def(
      "cuda_built", [] { return FAILATLAS_WITH_CUDA != 0; },
      "True when the CUDA kernels were compiled in (torch with CUDA and nvcc at build time).");
}
