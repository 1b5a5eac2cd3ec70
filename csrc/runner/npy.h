// A minimal reader of NumPy .npy files (format versions 1.0, 2.0 and 3.0) for failatlas-eval.
//
// Only what the runner needs: little-endian float32 ('<f4') and int64 ('<i8') arrays in C order.
// Anything else (another dtype, big endian, fortran_order True, object arrays, a damaged header, a
// truncated or overlong data section) is refused with an NpyError whose message names the file and
// says what was found. Numbers go into messages through std::to_string only.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace failatlas::npy {

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The parsed array: shape and raw little-endian data (converted to host order by the typed readers).
struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

namespace detail {

inline std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

// A tiny parser for the header's Python dict literal:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Values: a quoted string, True/False, or a tuple of non-negative integers.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& where) : s_(text), where_(where) {}

  Header parse() {
    Header h;
    bool have_descr = false, have_order = false, have_shape = false;
    skip();
    expect('{');
    while (true) {
      skip();
      if (peek() == '}') { ++i_; break; }
      std::string key = quoted();
      skip();
      expect(':');
      skip();
      if (key == "descr") {
        h.descr = quoted();
        have_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        h.shape = tuple();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "' in the header");
      }
      skip();
      if (peek() == ',') { ++i_; continue; }
      skip();
      if (peek() == '}') { ++i_; break; }
      fail("expected ',' or '}' in the header");
    }
    skip();
    if (i_ != s_.size()) fail("trailing characters after the header dict");
    if (!have_descr || !have_order || !have_shape)
      fail("the header lacks one of 'descr', 'fortran_order', 'shape'");
    return h;
  }

 private:
  const std::string& s_;
  const std::string& where_;
  size_t i_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw NpyError(where_ + ": not a valid .npy file (" + what + ")");
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "' in the header");
    ++i_;
  }
  std::string quoted() {
    char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string in the header");
    ++i_;
    size_t end = s_.find(q, i_);
    if (end == std::string::npos) fail("unterminated string in the header");
    std::string out = s_.substr(i_, end - i_);
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) { i_ += 4; return true; }
    if (s_.compare(i_, 5, "False") == 0) { i_ += 5; return false; }
    fail("fortran_order must be True or False");
  }
  std::vector<int64_t> tuple() {
    std::vector<int64_t> out;
    expect('(');
    while (true) {
      skip();
      if (peek() == ')') { ++i_; break; }
      if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("the shape must be a tuple of integers");
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        if (v > (int64_t{1} << 50)) fail("a dimension of the shape is too large");
        v = v * 10 + (s_[i_] - '0');
        ++i_;
      }
      if (peek() == 'L') ++i_;  // Python 2 longs
      out.push_back(v);
      skip();
      if (peek() == ',') { ++i_; continue; }
      skip();
      if (peek() == ')') { ++i_; break; }
      fail("the shape must be a tuple of integers");
    }
    return out;
  }
};

inline bool host_is_little_endian() {
  const uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

}  // namespace detail

inline std::string shape_str(const std::vector<int64_t>& shape) { return detail::shape_str(shape); }

// Read the header and the raw data of `path`. `want_descr` is the only dtype accepted ('<f4' or '<i8');
// `what` names the array in messages (e.g. "styles"); `dtype_name` is the numpy name ("float32").
inline Header read_raw(const std::string& path, const std::string& what, const std::string& want_descr,
                       const std::string& dtype_name, size_t itemsize, std::vector<unsigned char>& data) {
  const std::string where = what + " file " + path;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw NpyError(where + ": not a regular file (a folder or a device); give a .npy file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw NpyError(where + ": cannot open it (missing or unreadable)");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw NpyError(where + ": read error");
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (bytes.size() < 10 || std::memcmp(bytes.data(), magic, 6) != 0)
    throw NpyError(where + ": not a .npy file (no \\x93NUMPY magic); write it with numpy.save");
  const unsigned major = bytes[6];
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = size_t(bytes[8]) | (size_t(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw NpyError(where + ": not a valid .npy file (truncated header)");
    header_len = size_t(bytes[8]) | (size_t(bytes[9]) << 8) | (size_t(bytes[10]) << 16) | (size_t(bytes[11]) << 24);
    offset = 12;
  } else {
    throw NpyError(where + ": unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(unsigned(bytes[7])) + " (1.0, 2.0 and 3.0 are read)");
  }
  if (offset + header_len > bytes.size()) throw NpyError(where + ": not a valid .npy file (truncated header)");
  std::string text(reinterpret_cast<const char*>(bytes.data() + offset), header_len);
  Header h = detail::HeaderParser(detail::trim(text), where).parse();
  if (h.descr != want_descr) {
    throw NpyError(where + ": dtype '" + h.descr + "', expected little-endian " + dtype_name + " ('" +
                   want_descr + "'); convert it with array.astype('" + want_descr + "')");
  }
  if (h.fortran_order) {
    throw NpyError(where + ": the array is stored in Fortran order; save a C-order copy "
                   "(numpy.ascontiguousarray) instead");
  }
  size_t count = 1;
  for (int64_t d : h.shape) {
    if (d != 0 && count > (size_t{1} << 60) / size_t(d)) throw NpyError(where + ": the shape is too large");
    count *= size_t(d);
  }
  const size_t have = bytes.size() - offset - header_len;
  const size_t want = count * itemsize;
  if (have != want) {
    throw NpyError(where + ": shape " + detail::shape_str(h.shape) + " needs " + std::to_string(want) +
                   " bytes of data but the file has " + std::to_string(have) + " (truncated or damaged)");
  }
  data.assign(bytes.begin() + long(offset + header_len), bytes.end());
  if (!detail::host_is_little_endian()) {
    for (size_t i = 0; i < count; ++i) {
      unsigned char* p = data.data() + i * itemsize;
      for (size_t a = 0, b = itemsize - 1; a < b; ++a, --b) std::swap(p[a], p[b]);
    }
  }
  return h;
}

template <typename T>
struct Array {
  std::vector<int64_t> shape;
  std::vector<T> values;  // C order
};

inline Array<float> read_float32(const std::string& path, const std::string& what) {
  std::vector<unsigned char> raw;
  Header h = read_raw(path, what, "<f4", "float32", 4, raw);
  Array<float> out{h.shape, std::vector<float>(raw.size() / 4)};
  if (!raw.empty()) std::memcpy(out.values.data(), raw.data(), raw.size());
  return out;
}

inline Array<int64_t> read_int64(const std::string& path, const std::string& what) {
  std::vector<unsigned char> raw;
  Header h = read_raw(path, what, "<i8", "int64", 8, raw);
  Array<int64_t> out{h.shape, std::vector<int64_t>(raw.size() / 8)};
  if (!raw.empty()) std::memcpy(out.values.data(), raw.data(), raw.size());
  return out;
}

}  // namespace failatlas::npy
