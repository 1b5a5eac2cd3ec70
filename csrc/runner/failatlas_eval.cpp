// failatlas-eval: walks and the corner-case search on a fused TorchScript graph, without Python.
//
//   failatlas-eval walk    --model fused.pt --styles s.npy --labels y.npy --dims 3,17 --shifts 0,0.5,1
//                          --sigma sigma.npy --sign 1,-1 --out result.json
//   failatlas-eval corners --model fused.pt --styles s.npy --labels y.npy --dims 3,17
//                          --sigma sigma.npy --sign 1,-1 [--step 5 --max-shift 100 --tol 0.01]
//                          [--refine secant|bisection] --out result.json
//
// The model is a graph written by failatlas.engine.fused.export_torchscript (s: float32 [N, D] → logits
// [N, C], with the int64 buffers meta_style_dim and meta_num_classes). Styles are float32 [N, D] .npy
// files, labels int64 [N], sigma float32 [D] (the population σ of each style dimension).
//
// walk: p_y[n][k][m] = softmax probability of labels[n] at styles[n] with dimension dims[k] moved by
// shifts[m]·sigma[dims[k]]·sign[k] (as failatlas.engine.WalkEngine: the step is computed in float64 and
// added to the float32 style), pred = the argmax class.
//
// corners: failatlas.analysis.CornerCaseSearch.search(starts=styles, labels=labels, dims=dims, pairs=False)
// with directions sign and σ sigma, reproduced step for step: bracket at step, 2·step, … (max_shift last),
// then a search over the grid hi − m·tol between the last two bracket points (refine="secant": where logit
// p_y interpolated between the bracket's ends crosses 0, the midpoint after two steps that moved the same
// end; refine="bisection": the midpoint); every round
// evaluates one batch holding the next point of every pending (start, dim) row. Walk points are
// float32(float64(s) + σ·(sign·t)), exactly as the Python search builds them.
//
// The model runs in a failatlas::Engine (csrc/engine/engine.h), the same evaluation loop that
// failatlas._C.Engine exposes to Python: this file parses arguments, reads the inputs, builds walk and
// search points into the engine's buffer and writes JSON.
//
// Every error (bad arguments, unreadable or mismatched inputs, a model that fails to run) prints one line
// "failatlas-eval: error: ..." on stderr and exits with status 2. Integers reach messages through
// std::to_string only (streaming them into c10::str/ostreams crashed a CUDA build).

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "runner/npy.h"

#ifndef FAILATLAS_VERSION
#define FAILATLAS_VERSION "unknown"
#endif
#ifndef FAILATLAS_TORCH_VERSION
#define FAILATLAS_TORCH_VERSION "unknown"
#endif

namespace {

using failatlas::Engine;
using failatlas::EngineError;
using failatlas::one_line;
using failatlas::torch_message;

constexpr int kExitError = 2;
constexpr double kThreshold = 0.5;  // failatlas.analysis.corners.THRESHOLD

// A user-facing error: one line, exit status 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* const kUsage =
    "usage: failatlas-eval walk --model FUSED.pt --styles S.npy --labels Y.npy --dims D1,D2,..\n"
    "                           --shifts T1,T2,.. --sigma SIGMA.npy --sign G1,G2,.. --out RESULT.json\n"
    "                           [--batch-size 256] [--threads N]\n"
    "       failatlas-eval corners --model FUSED.pt --styles S.npy --labels Y.npy --dims D1,D2,..\n"
    "                              --sigma SIGMA.npy --sign G1,G2,.. --out RESULT.json\n"
    "                              [--step 5] [--max-shift 100] [--tol 0.01] [--refine secant|bisection]\n"
    "                              [--batch-size 256] [--threads N]\n"
    "       failatlas-eval --help | --version\n"
    "\n"
    "FUSED.pt: a fused graph from failatlas.engine.fused.export_torchscript (styles -> logits).\n"
    "S.npy: float32 [N, D] start styles; Y.npy: int64 [N] labels; SIGMA.npy: float32 [D] sigma per dimension.\n"
    "--dims: style dimensions to walk; --sign: one direction per dimension; shifts, step, max-shift, tol\n"
    "in sigma units. walk writes {\"p_y\": N x K x M, \"pred\": N x K x M, ...}; corners writes, per start\n"
    "and dimension, the smallest grid shift with p_y <= 0.5 (\"shift\", \"p_at_shift\", \"found\", ...).\n"
    "Errors: one line on stderr, exit status 2.\n";

// --- small helpers --------------------------------------------------------------------------------

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string json_number(double v) { return std::isfinite(v) ? fmt_double(v) : std::string("null"); }

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> split_commas(const std::string& text, const std::string& opt) {
  std::vector<std::string> out;
  size_t a = 0;
  while (true) {
    size_t b = text.find(',', a);
    std::string item = text.substr(a, b == std::string::npos ? std::string::npos : b - a);
    size_t i = item.find_first_not_of(' '), j = item.find_last_not_of(' ');
    item = i == std::string::npos ? std::string() : item.substr(i, j - i + 1);
    if (item.empty()) throw InputError(opt + ": empty entry in '" + text + "' (give a comma-separated list)");
    out.push_back(item);
    if (b == std::string::npos) break;
    a = b + 1;
  }
  return out;
}

int64_t parse_int(const std::string& s, const std::string& opt) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE)
    throw InputError(opt + ": '" + s + "' is not an integer");
  return int64_t(v);
}

double parse_double(const std::string& s, const std::string& opt) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) throw InputError(opt + ": '" + s + "' is not a number");
  if (errno == ERANGE && std::fabs(v) > 1.0)  // overflow; an underflow (1e-320) is a valid tiny number
    throw InputError(opt + ": '" + s + "' is out of the range of a double");
  if (!std::isfinite(v)) throw InputError(opt + ": '" + s + "' is not a finite number");
  return v;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& opt) {
  std::vector<int64_t> out;
  for (const auto& item : split_commas(text, opt)) out.push_back(parse_int(item, opt));
  return out;
}

std::vector<double> parse_double_list(const std::string& text, const std::string& opt) {
  std::vector<double> out;
  for (const auto& item : split_commas(text, opt)) out.push_back(parse_double(item, opt));
  return out;
}

// --- arguments ----------------------------------------------------------------------------------------

struct Args {
  std::string mode;
  std::map<std::string, std::string> opts;

  bool has(const std::string& k) const { return opts.count(k) != 0; }
  const std::string& get(const std::string& k) const {
    auto it = opts.find(k);
    if (it == opts.end()) throw InputError(mode + ": " + k + " is required (see failatlas-eval --help)");
    return it->second;
  }
};

Args parse_args(int argc, char** argv) {
  static const std::set<std::string> common = {"--model", "--styles", "--labels", "--dims", "--sigma",
                                               "--sign",  "--out",    "--batch-size", "--threads"};
  static const std::set<std::string> walk_only = {"--shifts"};
  static const std::set<std::string> corners_only = {"--step", "--max-shift", "--tol", "--refine"};
  if (argc < 2) throw InputError("no mode given: use 'failatlas-eval walk ...' or 'failatlas-eval corners ...' "
                                 "(see failatlas-eval --help)");
  Args a;
  a.mode = argv[1];
  if (a.mode != "walk" && a.mode != "corners")
    throw InputError("unknown mode '" + a.mode + "': use walk or corners (see failatlas-eval --help)");
  for (int i = 2; i < argc; ++i) {
    std::string tok = argv[i], value;
    if (tok.rfind("--", 0) != 0) throw InputError(a.mode + ": unexpected argument '" + tok + "'");
    size_t eq = tok.find('=');
    if (eq != std::string::npos) {
      value = tok.substr(eq + 1);
      tok = tok.substr(0, eq);
    } else {
      if (i + 1 >= argc) throw InputError(a.mode + ": " + tok + " needs a value");
      value = argv[++i];
    }
    const bool known = common.count(tok) || (a.mode == "walk" ? walk_only.count(tok) : corners_only.count(tok));
    if (!known) throw InputError(a.mode + ": unknown option " + tok + " (see failatlas-eval --help)");
    if (a.opts.count(tok)) throw InputError(a.mode + ": " + tok + " is given twice");
    a.opts[tok] = value;
  }
  return a;
}

// --- inputs -------------------------------------------------------------------------------------------

struct Inputs {
  std::unique_ptr<Engine> model;
  int64_t N = 0, D = 0, K = 0;
  std::vector<float> styles;  // [N, D]
  std::vector<int64_t> labels;
  std::vector<int64_t> dims;
  std::vector<double> sign;
  std::vector<double> sigma;  // [D], float32 values widened
  int64_t batch = 256;
  std::string out;
};

Inputs load_inputs(const Args& a) {
  Inputs in;
  // Cheap checks first, so that a typo is reported before the model is loaded.
  in.out = a.get("--out");
  {
    size_t slash = in.out.find_last_of('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : in.out.substr(0, slash));
    if (in.out.empty() || in.out.back() == '/')
      throw InputError("--out " + in.out + ": give the name of the result file (e.g. result.json), not a folder");
    if (!is_dir(dir)) throw InputError("--out " + in.out + ": its folder does not exist");
    if (is_dir(in.out)) throw InputError("--out " + in.out + " is a folder; give the name of the result file");
  }
  in.dims = parse_int_list(a.get("--dims"), "--dims");
  in.sign = parse_double_list(a.get("--sign"), "--sign");
  if (in.sign.size() != in.dims.size()) {
    throw InputError("--sign has " + std::to_string(in.sign.size()) + " entries but --dims has " +
                     std::to_string(in.dims.size()) + "; give one direction per dimension");
  }
  for (size_t k = 0; k < in.sign.size(); ++k) {
    if (in.sign[k] != 1.0 && in.sign[k] != -1.0) {
      throw InputError("--sign: entry " + std::to_string(k) + " is " + fmt_double(in.sign[k]) +
                       "; each dimension is walked in a direction 1 or -1 (the size of a step is --shifts or --step)");
    }
  }
  in.K = int64_t(in.dims.size());
  if (a.has("--batch-size")) {
    in.batch = parse_int(a.get("--batch-size"), "--batch-size");
    if (in.batch < 1) throw InputError("--batch-size must be at least 1, got " + std::to_string(in.batch));
  }
  int threads = 0;  // torch's default
  if (a.has("--threads")) {
    int64_t t = parse_int(a.get("--threads"), "--threads");
    if (t < 1 || t > 4096) throw InputError("--threads must be in [1, 4096], got " + std::to_string(t));
    threads = int(t);
  }
  const std::string styles_path = a.get("--styles"), labels_path = a.get("--labels"), sigma_path = a.get("--sigma");
  const std::string model_path = a.get("--model");

  auto styles = failatlas::npy::read_float32(styles_path, "styles");
  if (styles.shape.size() != 2) {
    throw InputError("styles file " + styles_path + ": shape " + failatlas::npy::shape_str(styles.shape) +
                     ", expected [N, D] (2-D float32)");
  }
  in.N = styles.shape[0];
  in.D = styles.shape[1];
  if (in.N == 0) throw InputError("styles file " + styles_path + " has no rows (shape [0, D])");
  for (float v : styles.values) {
    if (!std::isfinite(v)) throw InputError("styles file " + styles_path + " contains NaN or infinite values");
  }
  in.styles = std::move(styles.values);

  auto labels = failatlas::npy::read_int64(labels_path, "labels");
  if (labels.shape.size() != 1 || labels.shape[0] != in.N) {
    throw InputError("labels file " + labels_path + ": shape " + failatlas::npy::shape_str(labels.shape) +
                     ", expected (" + std::to_string(in.N) + ",): one int64 label per row of the styles");
  }
  in.labels = std::move(labels.values);

  auto sigma = failatlas::npy::read_float32(sigma_path, "sigma");
  if (sigma.shape.size() != 1) {
    throw InputError("sigma file " + sigma_path + ": shape " + failatlas::npy::shape_str(sigma.shape) +
                     ", expected (" + std::to_string(in.D) + ",): one float32 sigma per style dimension");
  }
  for (float v : sigma.values) {
    if (!std::isfinite(v)) throw InputError("sigma file " + sigma_path + " contains NaN or infinite values");
    if (v < 0) {
      throw InputError("sigma file " + sigma_path + " contains a negative value (" + fmt_double(v) +
                       "): sigma is a standard deviation; the direction of a walk is --sign");
    }
    in.sigma.push_back(double(v));
  }

  for (size_t k = 0; k < in.dims.size(); ++k) {
    if (in.dims[k] < 0 || in.dims[k] >= in.D) {
      throw InputError("--dims: dimension " + std::to_string(in.dims[k]) + " is out of range for styles with D = " +
                       std::to_string(in.D) + " (valid: 0.." + std::to_string(in.D - 1) + ")");
    }
  }

  // The model before sigma's length: styles of the wrong width are named as such, not as a sigma of the
  // wrong length.
  in.model = std::make_unique<Engine>(model_path, in.batch, threads);
  if (in.model->style_dim() != in.D) {
    throw InputError("model " + model_path + " takes styles of width " + std::to_string(in.model->style_dim()) +
                     " but " + styles_path + " has width " + std::to_string(in.D) +
                     "; use styles of the generator the graph was exported from");
  }
  if (sigma.shape[0] != in.D) {
    throw InputError("sigma file " + sigma_path + ": shape " + failatlas::npy::shape_str(sigma.shape) +
                     ", expected (" + std::to_string(in.D) + ",): one float32 sigma per style dimension");
  }

  for (size_t n = 0; n < in.labels.size(); ++n) {
    if (in.labels[n] < 0 || in.labels[n] >= in.model->num_classes()) {
      throw InputError("labels file " + labels_path + ": label " + std::to_string(in.labels[n]) + " at row " +
                       std::to_string(n) + " is out of range for a model with " +
                       std::to_string(in.model->num_classes()) + " classes");
    }
  }
  return in;
}

void write_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw InputError("--out " + path + ": cannot write " + tmp);
    f << text;
    f.flush();
    if (!f) throw InputError("--out " + path + ": writing " + tmp + " failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw InputError("--out " + path + ": cannot replace it");
  }
}

template <typename T, typename F>
std::string json_list(const std::vector<T>& v, F f) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    out += f(v[i]);
  }
  return out + "]";
}

std::string int_str(int64_t v) { return std::to_string(v); }

// --- walk ---------------------------------------------------------------------------------------------

int run_walk(const Args& a) {
  std::vector<double> shifts = parse_double_list(a.get("--shifts"), "--shifts");
  Inputs in = load_inputs(a);
  const int64_t N = in.N, D = in.D, K = in.K, M = int64_t(shifts.size());
  const int64_t total = N * K * M;
  // dimension dims[k] moved by float32(shift·scale[k]) with scale = sign·σ, as WalkEngine
  std::vector<double> scale(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) scale[size_t(k)] = in.sign[size_t(k)] * in.sigma[size_t(in.dims[size_t(k)])];
  at::Tensor pred_t;
  const at::Tensor p_t = in.model->walk(
      at::from_blob(in.styles.data(), {N, D}, at::kFloat), at::from_blob(in.labels.data(), {N}, at::kLong),
      at::from_blob(in.dims.data(), {K}, at::kLong), at::from_blob(shifts.data(), {M}, at::kDouble),
      at::from_blob(scale.data(), {K}, at::kDouble), &pred_t);
  const double* p_y = p_t.data_ptr<double>();
  const int64_t* pred = pred_t.data_ptr<int64_t>();
  std::string out = "{\n  \"format\": \"failatlas-eval-walk\",\n";
  out += "  \"version\": " + json_string(FAILATLAS_VERSION) + ",\n";
  out += "  \"model\": " + json_string(a.get("--model")) + ",\n";
  out += "  \"n\": " + std::to_string(N) + ", \"style_dim\": " + std::to_string(D) + ",\n";
  out += "  \"dims\": " + json_list(in.dims, int_str) + ",\n";
  out += "  \"sign\": " + json_list(in.sign, json_number) + ",\n";
  out += "  \"shifts\": " + json_list(shifts, json_number) + ",\n";
  out += "  \"images\": " + std::to_string(total) + ",\n";
  for (int pass = 0; pass < 2; ++pass) {
    out += pass == 0 ? "  \"p_y\": [" : "  \"pred\": [";
    for (int64_t n = 0; n < N; ++n) {
      out += n ? ",\n    [" : "\n    [";
      for (int64_t k = 0; k < K; ++k) {
        out += k ? ", [" : "[";
        for (int64_t m = 0; m < M; ++m) {
          const size_t i = size_t((n * K + k) * M + m);
          if (m) out += ", ";
          out += pass == 0 ? json_number(p_y[i]) : std::to_string(pred[i]);
        }
        out += "]";
      }
      out += "]";
    }
    out += pass == 0 ? "\n  ],\n" : "\n  ]\n";
  }
  out += "}\n";
  write_file(in.out, out);
  return 0;
}

// --- corners ------------------------------------------------------------------------------------------

enum class Phase { Bracket, Bisect, Before, Done };

// Search state of one (start, dim) row: failatlas.analysis.corners._Row.
struct Row {
  int64_t start = 0, dim = 0;
  double direction = 1.0, sigma = 1.0;
  Phase phase = Phase::Bracket;
  size_t j = 0;
  double lo = 0.0, hi = 0.0, p_lo = NAN;
  int64_t a = 0, b = 0, mb = 0;
  bool aligned = true;
  double p_a = NAN, p_b = NAN;
  int64_t m = 0;     // the grid point being evaluated in the refinement
  int64_t same = 0;  // refinement steps in a row that moved the same end (a: > 0, b: < 0)
  bool found = false, at_start = false;
  bool has_shift = false, has_before = false, has_last = false;
  double shift = NAN, p_at = NAN, shift_before = NAN, p_before = NAN, p_start = NAN, p_last = NAN;
  int64_t evaluations = 0;

  double t_of(int64_t m_, double tol) const { return m_ == mb ? lo : hi - double(m_) * tol; }

  // _Row.next_m of failatlas/analysis/corners.py
  int64_t next_m(bool secant) const {
    const int64_t mid = (a + b) / 2;
    if (!secant || b - a <= 2 || std::llabs(same) >= 2) return mid;
    const double la = logit(p_a), lb = logit(p_b);
    if (!(lb > la)) return mid;
    const double x = double(a) + double(b - a) * (-la) / (lb - la);
    return std::min(std::max(int64_t(std::floor(x)), a + 1), b - 1);
  }

  static double logit(double p) {
    p = std::min(std::max(p, 1e-12), 1.0 - 1e-12);
    return std::log(p / (1.0 - p));
  }
};

double positive_option(const Args& a, const std::string& opt, double fallback) {
  if (!a.has(opt)) return fallback;
  double v = parse_double(a.get(opt), opt);
  if (!(v > 0)) throw InputError(opt + " must be a positive number of sigma, got " + a.get(opt));
  return v;
}

int run_corners(const Args& a) {
  const double step = positive_option(a, "--step", 5.0);
  const double max_shift = positive_option(a, "--max-shift", 100.0);
  const double tol = positive_option(a, "--tol", 0.01);
  if (tol > step) {
    throw InputError("--tol (" + fmt_double(tol) + (a.has("--tol") ? "" : ", its default") + ") must not exceed --step (" +
                     fmt_double(step) + ")");
  }
  // as the Python search (corners.MAX_BRACKETS, MAX_GRID): counts that stay exact in int64 and double
  if (max_shift / step > 1e6 || step / tol > 1e12)
    throw InputError("--step " + fmt_double(step) + ", --max-shift " + fmt_double(max_shift) + " and --tol " +
                     fmt_double(tol) + " ask for more than 1,000,000 bracket points or 1e12 grid points per step; "
                     "use a larger --step or --tol, or a smaller --max-shift");
  const std::string refine = a.has("--refine") ? a.get("--refine") : std::string("secant");
  if (refine != "secant" && refine != "bisection")
    throw InputError("--refine must be secant or bisection, got '" + refine + "'");
  const bool secant = refine == "secant";
  Inputs in = load_inputs(a);
  {
    std::set<int64_t> seen;
    for (int64_t d : in.dims) {
      if (!seen.insert(d).second) throw InputError("--dims: dimension " + std::to_string(d) + " is listed twice");
    }
  }
  for (size_t k = 0; k < in.sign.size(); ++k) {  // --sign is ±1 (load_inputs)
    const double sg = in.sigma[size_t(in.dims[k])];
    if (!(sg > 0)) {
      throw InputError("sigma of dimension " + std::to_string(in.dims[k]) + " is " + fmt_double(sg) +
                       ": a shift in sigma units moves nothing; leave it out of --dims");
    }
  }
  const int64_t N = in.N, D = in.D, K = in.K;

  // bracket points: step, 2·step, … and max_shift last (_Setup)
  const int64_t J = std::max<int64_t>(1, int64_t(std::ceil(max_shift / step - 1e-9)));
  std::vector<double> grid;
  for (int64_t j = 0; j < J; ++j) grid.push_back(std::min(double(j + 1) * step, max_shift));

  std::vector<Row> rows;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      Row r;
      r.start = n;
      r.dim = in.dims[size_t(k)];
      r.direction = in.sign[size_t(k)];
      r.sigma = in.sigma[size_t(r.dim)];
      rows.push_back(r);
    }
  }
  auto open_bracket = [&](Row& r, size_t j, double p_hi) {
    r.hi = grid[j];
    r.lo = j > 0 ? grid[j - 1] : 0.0;
    r.mb = std::max<int64_t>(1, int64_t(std::ceil((r.hi - r.lo) / tol - 1e-9)));
    r.aligned = std::fabs((r.hi - double(r.mb) * tol) - r.lo) <= 1e-9 * std::max(1.0, r.hi);
    r.a = 0;
    r.b = r.mb;
    r.p_a = p_hi;
    r.p_b = r.p_lo;
    r.phase = Phase::Bisect;
  };

  int64_t rounds = 0, images = 0;
  // round 0: every start
  std::vector<double> p0(static_cast<size_t>(N));
  {
    const at::Tensor p_start = in.model->probs(at::from_blob(in.styles.data(), {N, D}, at::kFloat),
                                               at::from_blob(in.labels.data(), {N}, at::kLong));
    std::copy(p_start.data_ptr<double>(), p_start.data_ptr<double>() + N, p0.begin());
  }
  ++rounds;
  images += N;
  for (Row& r : rows) {
    r.p_start = r.p_lo = p0[size_t(r.start)];
    if (r.p_start <= kThreshold) {
      r.found = r.at_start = r.has_shift = true;
      r.shift = 0.0;
      r.p_at = r.p_start;
      r.phase = Phase::Done;
    }
  }
  std::vector<Row*> pending;
  std::vector<double> t, p;
  while (true) {
    pending.clear();
    for (Row& r : rows) {
      if (r.phase != Phase::Done) pending.push_back(&r);
    }
    if (pending.empty()) break;
    t.clear();
    for (Row* r : pending) {
      if (r->phase == Phase::Bracket) {
        t.push_back(grid[r->j]);
      } else if (r->phase == Phase::Bisect) {
        r->m = r->next_m(secant);
        t.push_back(r->t_of(r->m, tol));
      } else {  // Before: the grid point below the shift was not shift − tol (unaligned bracket)
        t.push_back(r->shift - tol);
      }
    }
    // walk points: float32(float64(s) + σ·(direction·t)) (_walk_rows through walk_styles in float64),
    // written straight into the engine's batch buffer
    const size_t P = pending.size();
    p.resize(P);
    in.model->evaluate_rows(
        int64_t(P),
        [&](int64_t i, float* row) {
          const Row& r = *pending[size_t(i)];
          const float* s0 = in.styles.data() + r.start * D;
          std::copy(s0, s0 + D, row);
          row[r.dim] = float(double(s0[r.dim]) + r.sigma * (r.direction * t[size_t(i)]));
          return in.labels[size_t(r.start)];
        },
        p.data(), nullptr);
    ++rounds;
    images += int64_t(P);
    for (size_t i = 0; i < P; ++i) {
      Row& r = *pending[i];
      const double tt = t[i], pp = p[i];
      r.evaluations += 1;
      if (r.phase == Phase::Bracket) {
        r.p_last = pp;
        r.has_last = true;
        if (pp <= kThreshold) {
          open_bracket(r, r.j, pp);
        } else {
          r.p_lo = pp;
          r.j += 1;
          if (r.j == grid.size()) r.phase = Phase::Done;
        }
      } else if (r.phase == Phase::Bisect) {
        if (pp <= kThreshold) {
          r.a = r.m;
          r.p_a = pp;
          r.same = std::max<int64_t>(r.same, 0) + 1;
        } else {
          r.b = r.m;
          r.p_b = pp;
          r.same = std::min<int64_t>(r.same, 0) - 1;
        }
      } else {
        r.shift_before = tt;
        r.p_before = pp;
        r.has_before = true;
        r.phase = Phase::Done;
      }
      if (r.phase == Phase::Bisect && r.b - r.a == 1) {
        r.found = r.has_shift = true;
        r.shift = r.t_of(r.a, tol);
        r.p_at = r.p_a;
        if (r.b < r.mb || r.aligned) {
          r.shift_before = r.t_of(r.b, tol);
          r.p_before = r.p_b;
          r.has_before = true;
          r.phase = Phase::Done;
        } else {
          r.phase = Phase::Before;
        }
      }
    }
  }

  auto grid_nk = [&](auto value) {
    std::string out = "[";
    for (int64_t n = 0; n < N; ++n) {
      out += n ? ",\n    [" : "\n    [";
      for (int64_t k = 0; k < K; ++k) {
        if (k) out += ", ";
        out += value(rows[size_t(n * K + k)]);
      }
      out += "]";
    }
    return out + "\n  ]";
  };
  auto opt = [](bool has, double v) { return has ? json_number(v) : std::string("null"); };
  std::string out = "{\n  \"format\": \"failatlas-eval-corners\",\n";
  out += "  \"version\": " + json_string(FAILATLAS_VERSION) + ",\n";
  out += "  \"method\": \"batched-" + refine + "\",\n";
  out += "  \"model\": " + json_string(a.get("--model")) + ",\n";
  out += "  \"n\": " + std::to_string(N) + ", \"style_dim\": " + std::to_string(D) + ",\n";
  out += "  \"dims\": " + json_list(in.dims, int_str) + ",\n";
  out += "  \"sign\": " + json_list(in.sign, json_number) + ",\n";
  out += "  \"step\": " + json_number(step) + ", \"max_shift\": " + json_number(max_shift) +
         ", \"tol\": " + json_number(tol) + ", \"threshold\": " + json_number(kThreshold) + ",\n";
  out += "  \"rounds\": " + std::to_string(rounds) + ", \"images\": " + std::to_string(images) + ",\n";
  out += "  \"p_start\": " + json_list(p0, json_number) + ",\n";
  out += "  \"found\": " + grid_nk([](const Row& r) { return std::string(r.found ? "true" : "false"); }) + ",\n";
  out += "  \"at_start\": " + grid_nk([](const Row& r) { return std::string(r.at_start ? "true" : "false"); }) + ",\n";
  out += "  \"shift\": " + grid_nk([&](const Row& r) { return opt(r.has_shift, r.shift); }) + ",\n";
  out += "  \"p_at_shift\": " + grid_nk([&](const Row& r) { return opt(r.has_shift, r.p_at); }) + ",\n";
  out += "  \"shift_before\": " + grid_nk([&](const Row& r) { return opt(r.has_before, r.shift_before); }) + ",\n";
  out += "  \"p_before\": " + grid_nk([&](const Row& r) { return opt(r.has_before, r.p_before); }) + ",\n";
  out += "  \"p_last\": " + grid_nk([&](const Row& r) { return opt(r.has_last, r.p_last); }) + ",\n";
  out += "  \"evaluations\": " + grid_nk([](const Row& r) { return std::to_string(r.evaluations); }) + "\n";
  out += "}\n";
  write_file(in.out, out);
  return 0;
}

int fail(const std::string& message) {
  std::cerr << "failatlas-eval: error: " << one_line(message) << std::endl;
  return kExitError;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 2) {
      const std::string first = argv[1];
      const auto is_help = [](const std::string& s) { return s == "-h" || s == "--help" || s == "help"; };
      // `failatlas-eval --help`, and `failatlas-eval corners --help` (help anywhere after the mode)
      bool help = is_help(first);
      for (int i = 2; i < argc && !help; ++i) help = is_help(argv[i]) && std::string(argv[i]) != "help";
      if (help) {
        std::cout << kUsage;
        return 0;
      }
      if (first == "--version") {
        std::cout << "failatlas-eval " << FAILATLAS_VERSION << " (torch " << FAILATLAS_TORCH_VERSION << ")\n";
        return 0;
      }
    }
    Args args = parse_args(argc, argv);
    return args.mode == "walk" ? run_walk(args) : run_corners(args);
  } catch (const InputError& e) {
    return fail(e.what());
  } catch (const EngineError& e) {
    return fail(e.what());
  } catch (const failatlas::npy::NpyError& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(torch_message(e));
  } catch (const std::bad_alloc&) {
    return fail("out of memory (try a smaller --batch-size)");
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown error");
  }
}
