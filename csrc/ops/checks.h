#pragma once
// Helpers of the ops' argument checks (walk_styles.cpp, dim_stats.cpp, bisect_update.cpp): names of
// dtypes and shapes, and numbers formatted without an ostream.
//
// Numbers in messages go through std::to_string / snprintf, never through an ostream: in a CUDA build
// against the lent GPU machine's torch 2.11, every error message that streamed an integer crashed the
// process while messages made of strings worked (benchmarks/RESULTS.md, 2026-11-28; likely two C++
// runtimes whose locale facets disagree).

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace failatlas {
namespace ops {
namespace checks {

inline std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float:
      return "float32";
    case c10::ScalarType::Double:
      return "float64";
    case c10::ScalarType::Half:
      return "float16";
    case c10::ScalarType::BFloat16:
      return "bfloat16";
    case c10::ScalarType::Long:
      return "int64";
    case c10::ScalarType::Int:
      return "int32";
    case c10::ScalarType::Bool:
      return "bool";
    case c10::ScalarType::Byte:
      return "uint8";
    case c10::ScalarType::Char:
      return "int8";
    case c10::ScalarType::Short:
      return "int16";
    case c10::ScalarType::ComplexFloat:
      return "complex64";
    case c10::ScalarType::ComplexDouble:
      return "complex128";
    default:
      return c10::toString(t);
  }
}

inline std::string num(int64_t v) {
  return std::to_string(v);
}

// Shortest round-trip form ("0.5", "1e-09", "nan"), as Python's repr of the float prints it.
inline std::string num(double v) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) {
      break;
    }
  }
  return buf;
}

// "[4, 1280]"
inline std::string shape_str(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    out += (i ? ", " : "") + num(t.size(i));
  }
  return out + "]";
}

} // namespace checks
} // namespace ops
} // namespace failatlas
