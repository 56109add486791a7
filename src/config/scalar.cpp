#include "config/scalar.h"

#include <charconv>
#include <cstdio>
#include <cmath>
#include <string>
#include <string_view>

namespace dsmoe::config_internal {
namespace {

std::string got(const char* type, const std::string& text) {
  return std::string("expected ") + type + ", got '" + text + "'";
}

// from_chars does not take the '+' that YAML allows.
std::string_view unsigned_part(const std::string& text) {
  std::string_view s = text;
  if (s.size() > 1 && s[0] == '+') s.remove_prefix(1);
  return s;
}

template <class T>
std::string read_integer(const std::string& text, T& out) {
  std::string_view s = unsigned_part(text);
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) return "integer out of range, got '" + text + "'";
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return got(type_name(v), text);
  out = v;
  return "";
}

}  // namespace

std::string read_scalar(const std::string& text, int& out) { return read_integer(text, out); }
std::string read_scalar(const std::string& text, int64_t& out) { return read_integer(text, out); }
std::string read_scalar(const std::string& text, uint64_t& out) { return read_integer(text, out); }

std::string read_scalar(const std::string& text, double& out) {
  std::string_view s = unsigned_part(text);
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !std::isfinite(v))
    return got(type_name(v), text);
  out = v;
  return "";
}

std::string read_scalar(const std::string& text, bool& out) {
  if (text == "true" || text == "True" || text == "TRUE") {
    out = true;
    return "";
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    out = false;
    return "";
  }
  return got(type_name(false), text);  // not type_name(out): `out` may be uninitialized
}

std::string read_scalar(const std::string& text, std::string& out) {
  // YAML is UTF-8; yaml-cpp passes other bytes through but writes them back as U+FFFD, so a
  // string that is not UTF-8 would not survive the resolved dump (config.yaml).
  if (!valid_utf8(text)) return "not valid UTF-8 text";
  // Nor do control characters: yaml-cpp keeps a lone carriage return in a plain scalar (with the
  // spaces before it), which the dump then writes where a reader ends the line.
  for (unsigned char c : text)
    if (c < 0x20 || c == 0x7F) {
      char what[48];
      std::snprintf(what, sizeof what, "contains a control character (byte 0x%02x)", c);
      return what;
    }
  out = text;
  return "";
}

bool valid_utf8(const std::string& text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = s[i];
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;  // overlong, range, surrogate
    i += len;
  }
  return true;
}

std::string show_scalar(int v) { return std::to_string(v); }
std::string show_scalar(int64_t v) { return std::to_string(v); }
std::string show_scalar(uint64_t v) { return std::to_string(v); }

// Like Python's repr: the shortest digits that read back exactly, positional unless the
// exponent is below -4 or above 15.
std::string show_scalar(double v) {
  char buf[400];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  size_t e = s.find('e');
  if (e != std::string::npos) {
    int exponent = std::stoi(s.substr(e + 1));
    if (exponent >= -4 && exponent < 16) {
      res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
      s.assign(buf, res.ptr);
    }
  }
  if (!std::isfinite(v) || s.find('.') != std::string::npos) return s;
  e = s.find('e');
  s.insert(e == std::string::npos ? s.size() : e, ".0");
  return s;
}

std::string show_scalar(bool v) { return v ? "true" : "false"; }
std::string show_scalar(const std::string& v) { return v; }

const char* type_name(int) { return "an integer"; }
const char* type_name(int64_t) { return "an integer"; }
const char* type_name(uint64_t) { return "a non-negative integer"; }
const char* type_name(double) { return "a number"; }
const char* type_name(bool) { return "true or false"; }
const char* type_name(const std::string&) { return "a string"; }

}  // namespace dsmoe::config_internal
