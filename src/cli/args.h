// Command-line arguments of one subcommand: positionals, `--name value` options, `--flag`s,
// repeated `--set key=value` overrides, and after a `--` the rest, untouched. Unknown options
// are errors.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

namespace dsmoe {

class Args {
 public:
  // `options` take a value, `flags` do not; "--set" is always accepted and may repeat.
  Args(int argc, char** argv, int first, const std::set<std::string>& options, const std::set<std::string>& flags);
  const std::vector<std::string>& positional() const { return positional_; }
  const std::vector<std::string>& overrides() const { return overrides_; }
  const std::vector<std::string>& rest() const { return rest_; }  // after `--`
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  double get_double(const std::string& name, double fallback) const;
  bool help() const { return help_; }
  // With --help, or when the arguments are not `well_formed`, prints `usage` (to stdout for
  // --help, else stderr) and returns true; *exit_code is then 0 or 2.
  bool show_usage(bool well_formed, const char* usage, int* exit_code) const;

 private:
  std::vector<std::string> positional_, overrides_, rest_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

}  // namespace dsmoe
