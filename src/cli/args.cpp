#include "cli/args.h"

#include <cstdio>
#include <cstdlib>

#include "config/config_keys.h"
#include "util/check.h"

namespace dsmoe {

Args::Args(int argc, char** argv, int first, const std::set<std::string>& options,
           const std::set<std::string>& flags) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      rest_.assign(argv + i + 1, argv + argc);
      break;
    }
    if (a == "--help" || a == "-h") {
      help_ = true;
    } else if (a.rfind("--", 0) == 0) {
      std::string name = a.substr(2), value;
      size_t eq = name.find('=');
      bool inline_value = eq != std::string::npos && name.substr(0, eq) != "set";
      if (inline_value) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      if (flags.count(name) && !inline_value) {
        values_[name] = "1";
        continue;
      }
      DSMOE_CHECK(name == "set" || options.count(name), "unknown option --", name, " (see --help)");
      if (!inline_value) {
        DSMOE_CHECK(i + 1 < argc, "option --", name, " needs a value");
        value = argv[++i];
      }
      if (name == "set")
        overrides_.push_back(value);
      else
        values_[name] = value;
    } else {
      const size_t eq = a.find('=');
      DSMOE_CHECK(eq == std::string::npos || !config_internal::find_key(a.substr(0, eq)), a,
                  ": a config override needs --set before it (--set ", a, ")");
      positional_.push_back(a);
    }
  }
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int64_t Args::get_int(const std::string& name, int64_t fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name);
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  DSMOE_CHECK(!v.empty() && *end == '\0', "option --", name, ": expected an integer, got '", v, "'");
  return x;
}

double Args::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name);
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  DSMOE_CHECK(!v.empty() && *end == '\0', "option --", name, ": expected a number, got '", v, "'");
  return x;
}

bool Args::show_usage(bool well_formed, const char* usage, int* exit_code) const {
  if (!help_ && well_formed) return false;
  std::fputs(usage, help_ ? stdout : stderr);
  *exit_code = help_ ? 0 : 2;
  return true;
}

}  // namespace dsmoe
