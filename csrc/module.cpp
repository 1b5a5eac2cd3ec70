// The pybind11 module failatlas._C. Loading it runs the TORCH_LIBRARY registrations of csrc/ops/*;
// tensor math is reached through the dispatcher (torch.ops.failatlas.*), never through pybind11.
// This module carries metadata and the engine object, failatlas._C.Engine (csrc/engine/engine.h), which
// failatlas.engine.native.NativeEngine wraps with input checks.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <tuple>

#include "engine/engine.h"

#ifndef FAILATLAS_VERSION
#define FAILATLAS_VERSION ""
#endif
#ifndef FAILATLAS_TORCH_VERSION
#define FAILATLAS_TORCH_VERSION ""
#endif
#ifndef FAILATLAS_WITH_CUDA
#define FAILATLAS_WITH_CUDA 0
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "failatlas native core: registers the torch.ops.failatlas operators; the engine object Engine";
  m.attr("__version__") = FAILATLAS_VERSION;
  m.attr("built_with_torch") = FAILATLAS_TORCH_VERSION;
  // sha256 over "relative path\nsha256 of the file\n" of every file under csrc/ (CMakeLists.txt)
  m.attr("source_sha256") = FAILATLAS_CSRC_SHA256;
  m.def(
      "cuda_built", [] { return FAILATLAS_WITH_CUDA != 0; },
      "True when the CUDA kernels were compiled in (torch with CUDA and nvcc at build time).");

  // Every failatlas::EngineError (bad file, shapes, dtypes, labels; a graph that fails) arrives as
  // failatlas._C.EngineError, a ValueError, with the engine's one-line message.
  py::register_exception<failatlas::EngineError>(m, "EngineError", PyExc_ValueError);

  using failatlas::Engine;
  // The GIL is released while the engine works (its calls are serialized per Engine by a mutex).
  using release = py::call_guard<py::gil_scoped_release>;
  py::class_<Engine>(m, "Engine",
                     "Engine(path, batch=256, threads=0): a fused TorchScript graph (s float32 [N, D] -> logits) "
                     "with reused buffers; probs, walk and grad evaluate it in chunks of `batch` styles. "
                     "threads > 0: torch's intra-op threads during each call. Errors raise EngineError.")
      .def(py::init<const std::string&, int64_t, int>(), py::arg("path"), py::arg("batch") = Engine::kDefaultBatch,
           py::arg("threads") = 0, release())
      .def_property_readonly("path", &Engine::path)
      .def_property_readonly("style_dim", &Engine::style_dim)
      .def_property_readonly("num_classes", &Engine::num_classes)
      .def_property_readonly("batch", &Engine::batch)
      .def_property_readonly("threads", &Engine::threads)
      .def(
          "probs",
          [](Engine& e, const at::Tensor& s, const at::Tensor& labels) {
            at::Tensor pred;
            at::Tensor p = e.probs(s, labels, &pred);
            return std::make_tuple(p, pred);
          },
          py::arg("s"), py::arg("labels"), release(),
          "(p_y float64 [N], pred int64 [N]) of styles s float32 [N, D] and labels int64 [N]")
      .def(
          "walk",
          [](Engine& e, const at::Tensor& starts, const at::Tensor& labels, const at::Tensor& dims,
             const at::Tensor& shifts, const std::optional<at::Tensor>& scale) {
            at::Tensor pred;
            at::Tensor p = e.walk(starts, labels, dims, shifts, scale.value_or(at::Tensor()), &pred);
            return std::make_tuple(p, pred);
          },
          py::arg("starts"), py::arg("labels"), py::arg("dims"), py::arg("shifts"), py::arg("scale") = py::none(),
          release(),
          "(p_y float64 [N, K, M], pred int64 [N, K, M]): starts float32 [N, D], labels int64 [N], dims int64 [K], "
          "shifts float64 [M]; dimension dims[k] moved by float32(shifts[m] * scale[k]) (scale float64 [K], "
          "default ones)")
      .def("grad", &Engine::grad, py::arg("s"), py::arg("labels"), release(),
           "per-sample gradients d p_y / d s, float32 [N, D], of styles s float32 [N, D] and labels int64 [N]");
}
