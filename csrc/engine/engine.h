// failatlas::Engine: the chunked evaluation loop over a fused TorchScript graph (issue 5, deliverable 3).
//
// The graph is a file written by failatlas.engine.fused.export_torchscript: s float32 [N, D] → logits
// [N, C], with the int64 scalar buffers meta_style_dim (D) and meta_num_classes (C). An Engine loads it
// once (CPU) and owns buffers that every call reuses: the style batch [batch, D] the graph reads, and the
// float64 logits/probabilities [batch, C] the softmax writes. At most `batch` styles exist at once beyond
// the caller's inputs and outputs, whatever N.
//
//   probs(s [N, D] f32, labels [N] i64)                    → p_y [N] f64 (and pred [N] i64)
//   walk(starts [N, D], labels [N], dims [K] i64, shifts [M] f64, scale [K] f64)
//                                                          → p_y [N, K, M] f64 (and pred [N, K, M] i64)
//   grad(s [N, D], labels [N])                             → ∂p_y/∂s [N, D] f32, per sample
//
// p_y is the float64 softmax of the float32 logits at the label (as failatlas.engine.WalkEngine); pred is
// the argmax class. A walk point is start[n] with dimension dims[k] moved by float32(shifts[m]·scale[k])
// (scale = sign·σ of that dimension; the step is computed in float64, then added in float32, as WalkEngine
// does). grad is failatlas.analysis.ranking.style_gradients (target "probability"): one backward of
// Σ_i softmax(logits_i)[y_i] (float32) per chunk, which gives every per-sample gradient at once because
// the graph is in eval mode (samples are independent).
//
// The graph runs as traced (no optimizing passes: the same float32 kernels as the eager model), forward
// passes under InferenceMode, gradients under autograd. `threads` > 0 sets torch's intra-op threads for
// the duration of each call (restored after); 0 leaves them alone. Calls on one Engine are serialized.
//
// Every problem (missing or foreign file, wrong shapes, dtypes or labels, a graph that fails) throws
// EngineError with a one-line message; nothing else escapes except std::bad_alloc. The engine links
// libtorch only (no Python), so a C++ program can use it alone (csrc/runner/failatlas_eval.cpp does).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace failatlas {

struct EngineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// `s` with line breaks and tabs turned into spaces and trailing spaces removed.
std::string one_line(std::string s);
// The informative part of a c10::Error: the interpreter's "RuntimeError: ..." line when there is one,
// else the first non-empty line, on one line. The std::exception form does the same for the errors the
// TorchScript interpreter throws for an exception raised inside a graph (and for any other what()).
std::string torch_message(const c10::Error& e);
std::string torch_message(const std::exception& e);

class Engine {
 public:
  static constexpr int64_t kDefaultBatch = 256;

  // Loads the fused graph at `path` (CPU, eval mode). batch ≥ 1: styles per forward pass; threads ≥ 0.
  explicit Engine(const std::string& path, int64_t batch = kDefaultBatch, int threads = 0);

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::string& path() const { return path_; }
  int64_t style_dim() const { return style_dim_; }
  int64_t num_classes() const { return num_classes_; }
  int64_t batch() const { return batch_; }
  int threads() const { return threads_; }

  // p_y [N] float64 of every row of s (float32 [N, D], CPU); pred [N] int64 when `pred` is given.
  at::Tensor probs(const at::Tensor& s, const at::Tensor& labels, at::Tensor* pred = nullptr);

  // p_y [N, K, M] float64 of every walk point (see the header comment); pred [N, K, M] when given.
  // scale: float64 [K], or undefined for all ones.
  at::Tensor walk(const at::Tensor& starts, const at::Tensor& labels, const at::Tensor& dims,
                  const at::Tensor& shifts, const at::Tensor& scale = at::Tensor(), at::Tensor* pred = nullptr);

  // Per-sample ∂p_y/∂s: float32 [N, D].
  at::Tensor grad(const at::Tensor& s, const at::Tensor& labels);

  // The loop under probs and walk, for callers that build their own points: row i (0 ≤ i < count) is
  // written by fill(i, row) into the engine's buffer (D floats), which returns its label in [0, C).
  // p_out[i] = p_y, pred_out[i] = the argmax class (pred_out may be null). fill runs under the engine's
  // lock: it must not call this engine.
  using RowFiller = std::function<int64_t(int64_t i, float* row)>;
  void evaluate_rows(int64_t count, const RowFiller& fill, double* p_out, int64_t* pred_out);

 private:
  at::Tensor run(const at::Tensor& s);  // logits [B, C] of a batch, checked
  void evaluate_rows_locked(int64_t count, const RowFiller& fill, double* p_out, int64_t* pred_out);
  at::Tensor check_styles(const at::Tensor& s, const char* what) const;
  at::Tensor check_labels(const at::Tensor& labels, int64_t n) const;

  std::string path_;
  torch::jit::Module module_;
  int64_t style_dim_ = 0, num_classes_ = 0, batch_ = kDefaultBatch;
  int threads_ = 0;
  at::Tensor styles_buf_;  // float32 [batch, D]: the graph's input, rewritten every chunk
  at::Tensor logits_buf_;  // float64 [batch, C]
  at::Tensor probs_buf_;   // float64 [batch, C]
  std::mutex mutex_;
};

}  // namespace failatlas
