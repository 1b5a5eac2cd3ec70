// failatlas::Engine (see engine.h). Integers reach messages through std::to_string only (streaming them
// into c10::str/ostreams crashed a CUDA build).

#include "engine/engine.h"
#include "ops/checks.h"  // dtype names as torch's Python prints them ("float64", not "Double")

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <utility>

namespace failatlas {

std::string one_line(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

namespace {

std::string informative_line(const std::string& text) {
  std::vector<std::string> lines;
  size_t a = 0;
  while (a <= text.size()) {
    size_t b = text.find('\n', a);
    if (b == std::string::npos) b = text.size();
    std::string line = text.substr(a, b - a);
    size_t i = line.find_first_not_of(" \t\r");
    if (i != std::string::npos) lines.push_back(line.substr(i));
    a = b + 1;
  }
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    for (const char* tag : {"RuntimeError: ", "ValueError: ", "IndexError: ", "TypeError: "}) {
      size_t p = it->find(tag);
      if (p != std::string::npos) return one_line(it->substr(p));
    }
  }
  if (lines.empty()) return "unknown torch error";
  std::string first = lines.front();
  // torch's zip reader appends a paragraph of speculation to every failure: keep the failure itself.
  const size_t speculation = first.find(" This is an internal miniz error");
  if (speculation != std::string::npos) first = first.substr(0, speculation);
  return one_line(first);
}

}  // namespace

std::string torch_message(const c10::Error& e) { return informative_line(e.what_without_backtrace()); }

std::string torch_message(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return torch_message(*c10_error);
  return informative_line(e.what());
}

namespace {

const char* const kExportHint = "write one with failatlas.engine.fused.export_torchscript";

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string shape_str(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) out += (i ? ", " : "") + std::to_string(t.size(i));
  return out + "]";
}

std::string dtype_str(const at::Tensor& t) { return ops::checks::dtype_name(t.scalar_type()); }

int64_t meta_value(torch::jit::Module& m, const char* name, const std::string& path) {
  if (!m.hasattr(name)) {
    throw EngineError("model " + path + " is TorchScript but not a failatlas fused graph (it has no " + name +
                      " buffer); " + kExportHint);
  }
  c10::IValue v = m.attr(name);
  if (!v.isTensor() || v.toTensor().numel() != 1 || v.toTensor().is_floating_point() ||
      v.toTensor().is_complex() || v.toTensor().scalar_type() == at::kBool) {
    throw EngineError("model " + path + ": " + name + " is not an integer scalar buffer; it is not a failatlas "
                      "fused graph (" + kExportHint + ")");
  }
  return v.toTensor().to(at::kLong).item<int64_t>();
}

// torch's intra-op threads set for one call and restored after (0: left alone).
class ThreadsGuard {
 public:
  explicit ThreadsGuard(int threads) : old_(at::get_num_threads()) {
    if (threads > 0 && threads != old_) {
      at::set_num_threads(threads);
      changed_ = true;
    }
  }
  ~ThreadsGuard() {
    if (changed_) at::set_num_threads(old_);
  }
  ThreadsGuard(const ThreadsGuard&) = delete;
  ThreadsGuard& operator=(const ThreadsGuard&) = delete;

 private:
  int old_;
  bool changed_ = false;
};

// Runs `fn` with the engine's settings (threads, the graph as traced), turning torch's errors (c10::Error,
// and the std::runtime_error the TorchScript interpreter throws for an exception raised inside a graph)
// into EngineError; EngineError and std::bad_alloc pass through.
template <typename F>
auto guarded(int threads, F&& fn) -> decltype(fn()) {
  ThreadsGuard threads_guard(threads);
  // Run the graph as traced: no profiling/optimizing passes, so results match eager float32 kernels and
  // the first batches cost no re-specialization. (The flag is thread-local; the guard restores it.)
  torch::jit::GraphOptimizerEnabledGuard optimize(false);
  try {
    return fn();
  } catch (const EngineError&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw EngineError(torch_message(e));
  }
}

// Allocates with `fn`; a failure (too large for memory or for a tensor) becomes an EngineError naming
// what was allocated and how to make it smaller.
template <typename F>
auto allocating(const std::string& what, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    throw EngineError("cannot allocate " + what + " (" + torch_message(e) + ")");
  }
}

at::Tensor check_finite(const at::Tensor& t, const char* what) {
  if (t.numel() && !at::isfinite(t).all().item<bool>()) {
    throw EngineError(std::string(what) + " contain NaN or infinite values");
  }
  return t;
}

at::Tensor check_1d(const at::Tensor& t, const char* what, at::ScalarType dtype, int64_t size = -1) {
  if (!t.defined()) throw EngineError(std::string(what) + " is missing (an undefined tensor)");
  if (!t.device().is_cpu()) throw EngineError(std::string(what) + " must be a CPU tensor, got one on " + t.device().str());
  if (t.scalar_type() != dtype) {
    throw EngineError(std::string(what) + " must be " + ops::checks::dtype_name(dtype) + ", got " + dtype_str(t));
  }
  if (t.dim() != 1 || (size >= 0 && t.size(0) != size)) {
    throw EngineError(std::string(what) + " must have shape [" + (size >= 0 ? std::to_string(size) : "K") +
                      "], got " + shape_str(t));
  }
  return t.contiguous();
}

}  // namespace

Engine::Engine(const std::string& path, int64_t batch, int threads) : path_(path), batch_(batch), threads_(threads) {
  if (batch < 1) throw EngineError("batch must be at least 1, got " + std::to_string(batch));
  if (threads < 0) throw EngineError("threads must be 0 (torch's setting) or more, got " + std::to_string(threads));
  if (!is_file(path)) throw EngineError("model not found: " + path + " (" + kExportHint + ")");
  // Normal tensors, never inference tensors, even when the caller is in InferenceMode: grad() needs them.
  c10::InferenceMode normal(false);
  try {
    module_ = torch::jit::load(path, c10::Device(c10::kCPU));
  } catch (const c10::Error& e) {
    throw EngineError("model " + path + " is not a readable TorchScript archive (" + torch_message(e) + "); " +
                      kExportHint);
  } catch (const std::exception& e) {
    throw EngineError("model " + path + " is not a readable TorchScript archive (" + one_line(e.what()) + "); " +
                      kExportHint);
  }
  module_.eval();
  for (const at::Tensor& p : module_.parameters()) p.requires_grad_(false);  // gradients flow to s only
  style_dim_ = meta_value(module_, "meta_style_dim", path);
  num_classes_ = meta_value(module_, "meta_num_classes", path);
  if (style_dim_ <= 0 || num_classes_ <= 0) {
    throw EngineError("model " + path + " records style width " + std::to_string(style_dim_) + " and " +
                      std::to_string(num_classes_) + " classes; it is damaged (export it again)");
  }
  allocating("the engine's buffers for batches of " + std::to_string(batch_) + " styles of width " +
                 std::to_string(style_dim_) + " and " + std::to_string(num_classes_) + " classes; use a smaller "
                 "batch size",
             [&] {
               styles_buf_ = at::zeros({batch_, style_dim_}, at::kFloat);
               logits_buf_ = at::empty({batch_, num_classes_}, at::kDouble);
               probs_buf_ = at::empty({batch_, num_classes_}, at::kDouble);
             });
}

at::Tensor Engine::run(const at::Tensor& s) {
  c10::IValue out;
  try {
    out = module_.forward({s});
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {  // c10::Error, or the interpreter's error for one raised in the graph
    throw EngineError("model " + path_ + " failed on a batch of " + std::to_string(s.size(0)) + " styles (" +
                      torch_message(e) + ")");
  }
  if (!out.isTensor()) {
    throw EngineError("model " + path_ + " returned " + out.tagKind() +
                      ", not a logits tensor; it is not a failatlas fused graph");
  }
  at::Tensor logits = out.toTensor();
  if (logits.dim() != 2 || logits.size(0) != s.size(0) || logits.size(1) != num_classes_ ||
      logits.scalar_type() != at::kFloat) {
    throw EngineError("model " + path_ + " returned logits of shape " + shape_str(logits) + " (" +
                      dtype_str(logits) + ") for " + std::to_string(s.size(0)) + " styles; expected [" +
                      std::to_string(s.size(0)) + ", " + std::to_string(num_classes_) +
                      "] float32 (its meta_num_classes)");
  }
  // NaN p_y would read as "never reaches 0.5" (no corner case) downstream: refuse it here, once for all callers
  at::Tensor finite = at::isfinite(logits).all(1);
  if (!finite.all().item<bool>()) {
    const int64_t row = at::logical_not(finite).nonzero()[0][0].item<int64_t>();
    throw EngineError("model " + path_ + " returned NaN or infinite logits for row " + std::to_string(row) +
                      " of a batch of " + std::to_string(s.size(0)) + " styles; check the model's weights, and "
                      "that the styles and shifts are not so large that the images overflow");
  }
  return logits;
}

at::Tensor Engine::check_styles(const at::Tensor& s, const char* what) const {
  if (!s.defined()) throw EngineError(std::string(what) + " is missing (an undefined tensor)");
  if (!s.device().is_cpu()) throw EngineError(std::string(what) + " must be a CPU tensor, got one on " + s.device().str());
  if (s.scalar_type() != at::kFloat) throw EngineError(std::string(what) + " must be float32, got " + dtype_str(s));
  if (s.dim() != 2 || s.size(1) != style_dim_) {
    throw EngineError(std::string(what) + " must have shape [N, " + std::to_string(style_dim_) + "] (the style width of " +
                      path_ + "), got " + shape_str(s));
  }
  return check_finite(s.contiguous(), what);
}

at::Tensor Engine::check_labels(const at::Tensor& labels, int64_t n) const {
  at::Tensor y = check_1d(labels, "labels", at::kLong, n);
  if (n) {
    const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    if (lo < 0 || hi >= num_classes_) {
      throw EngineError("labels must be classes in [0, " + std::to_string(num_classes_) + ") of " + path_ + ", got " +
                        std::to_string(lo) + ".." + std::to_string(hi));
    }
  }
  return y;
}

void Engine::evaluate_rows(int64_t count, const RowFiller& fill, double* p_out, int64_t* pred_out) {
  std::lock_guard<std::mutex> lock(mutex_);
  evaluate_rows_locked(count, fill, p_out, pred_out);
}

void Engine::evaluate_rows_locked(int64_t count, const RowFiller& fill, double* p_out, int64_t* pred_out) {
  if (count <= 0) return;
  guarded(threads_, [&] {
    c10::InferenceMode inference;
    const int64_t D = style_dim_, C = num_classes_;
    std::vector<int64_t> y(size_t(std::min(count, batch_)));
    float* rows = styles_buf_.data_ptr<float>();
    for (int64_t a = 0; a < count; a += batch_) {
      const int64_t b = std::min(count - a, batch_);
      for (int64_t i = 0; i < b; ++i) {
        const int64_t label = fill(a + i, rows + i * D);
        if (label < 0 || label >= C) {
          throw EngineError("label " + std::to_string(label) + " of point " + std::to_string(a + i) +
                            " is out of range for a model with " + std::to_string(C) + " classes");
        }
        y[size_t(i)] = label;
      }
      at::Tensor logits = run(styles_buf_.narrow(0, 0, b));
      // p_y: the float64 softmax of the float32 logits (as the Python evaluators), in reused buffers.
      at::Tensor lg = logits_buf_.narrow(0, 0, b);
      at::Tensor pr = probs_buf_.narrow(0, 0, b);
      lg.copy_(logits);
      at::softmax_out(pr, lg, 1);
      const double* pp = pr.data_ptr<double>();
      for (int64_t i = 0; i < b; ++i) p_out[a + i] = pp[i * C + y[size_t(i)]];
      if (pred_out) {
        at::Tensor c = logits.argmax(1).contiguous();
        const int64_t* cc = c.data_ptr<int64_t>();
        std::copy(cc, cc + b, pred_out + a);
      }
    }
  });
}

at::Tensor Engine::probs(const at::Tensor& s_in, const at::Tensor& labels_in, at::Tensor* pred) {
  std::lock_guard<std::mutex> lock(mutex_);
  at::Tensor s, y;
  guarded(threads_, [&] {
    s = check_styles(s_in, "styles");
    y = check_labels(labels_in, s.size(0));
  });
  const int64_t N = s.size(0), D = style_dim_;
  at::Tensor p = allocating("the results of " + std::to_string(N) + " styles", [&] {
    if (pred) *pred = at::empty({N}, at::kLong);
    return at::empty({N}, at::kDouble);
  });
  const float* ss = s.data_ptr<float>();
  const int64_t* yy = y.data_ptr<int64_t>();
  evaluate_rows_locked(
      N,
      [&](int64_t i, float* row) {
        std::memcpy(row, ss + i * D, size_t(D) * sizeof(float));
        return yy[i];
      },
      p.data_ptr<double>(), pred ? pred->data_ptr<int64_t>() : nullptr);
  return p;
}

at::Tensor Engine::walk(const at::Tensor& starts_in, const at::Tensor& labels_in, const at::Tensor& dims_in,
                        const at::Tensor& shifts_in, const at::Tensor& scale_in, at::Tensor* pred) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t D = style_dim_;
  at::Tensor starts, y, dims, shifts, scale;
  guarded(threads_, [&] {
    starts = check_styles(starts_in, "starts");
    y = check_labels(labels_in, starts.size(0));
    dims = check_1d(dims_in, "dims", at::kLong);
    const int64_t K = dims.size(0);
    if (K && (dims.min().item<int64_t>() < 0 || dims.max().item<int64_t>() >= D)) {
      throw EngineError("dims must be style dimensions in [0, " + std::to_string(D) + "), got " +
                        std::to_string(dims.min().item<int64_t>()) + ".." + std::to_string(dims.max().item<int64_t>()));
    }
    shifts = check_finite(check_1d(shifts_in, "shifts", at::kDouble), "shifts");
    scale = scale_in.defined() ? check_finite(check_1d(scale_in, "scale", at::kDouble, K), "scale")
                               : at::ones({K}, at::kDouble);
  });
  const int64_t N = starts.size(0), K = dims.size(0), M = shifts.size(0);
  std::vector<float> steps;
  at::Tensor p = allocating("the results of a walk of " + std::to_string(N) + " starts × " + std::to_string(K) +
                                " dims × " + std::to_string(M) + " shifts; walk fewer at a time",
                            [&] {
                              // the largest first (p: N·K·M doubles), so a walk too large for memory fails
                              // before anything is written (a resized vector is filled with zeros)
                              at::Tensor out = at::empty({N, K, M}, at::kDouble);
                              if (pred) *pred = at::empty({N, K, M}, at::kLong);
                              steps.resize(size_t(K * M));
                              return out;
                            });
  // steps[k][m] = float32(shift·scale) computed in float64, added to the float32 start (WalkEngine).
  const double* sh = shifts.data_ptr<double>();
  const double* sc = scale.data_ptr<double>();
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m = 0; m < M; ++m) steps[size_t(k * M + m)] = float(sh[m] * sc[k]);
  }
  const float* ss = starts.data_ptr<float>();
  const int64_t* yy = y.data_ptr<int64_t>();
  const int64_t* dd = dims.data_ptr<int64_t>();
  evaluate_rows_locked(
      N * K * M,
      [&](int64_t i, float* row) {
        const int64_t n = i / (K * M), k = (i / M) % K;
        std::memcpy(row, ss + n * D, size_t(D) * sizeof(float));
        const int64_t d = dd[k];
        row[d] = row[d] + steps[size_t(i % (K * M))];
        return yy[n];
      },
      p.data_ptr<double>(), pred ? pred->data_ptr<int64_t>() : nullptr);
  return p;
}

at::Tensor Engine::grad(const at::Tensor& s_in, const at::Tensor& labels_in) {
  std::lock_guard<std::mutex> lock(mutex_);
  return guarded(threads_, [&] {
    const at::Tensor s = check_styles(s_in, "styles");
    const int64_t N = s.size(0);
    const at::Tensor y = check_labels(labels_in, N);
    at::Tensor out = at::empty({N, style_dim_}, at::kFloat);
    c10::InferenceMode normal(false);
    at::AutoGradMode grad_mode(true);
    for (int64_t a = 0; a < N; a += batch_) {
      const int64_t b = std::min(N - a, batch_);
      at::Tensor buf = styles_buf_.narrow(0, 0, b);
      buf.copy_(s.narrow(0, a, b));
      at::Tensor x = buf.detach().requires_grad_(true);  // a fresh leaf on the reused buffer
      at::Tensor logits = run(x);
      // style_gradients(target="probability"): Σ_i softmax(logits_i)[y_i] in float32, one backward.
      at::Tensor t = at::softmax(logits, 1).gather(1, y.narrow(0, a, b).unsqueeze(1)).sum();
      out.narrow(0, a, b).copy_(torch::autograd::grad({t}, {x})[0]);
    }
    return out;
  });
}

}  // namespace failatlas
