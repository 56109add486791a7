// Reading the YAML of an experiment file with errors that name "file:line: key".
#pragma once
#include <yaml-cpp/yaml.h>

#include <set>
#include <string>
#include <vector>

#include "config/scalar.h"
#include "sweep/settings.h"
#include "util/check.h"

namespace dsmoe::sweep_internal {

// "a mapping", "'text'", ...: what a node is, for "expected ..., got ..." messages.
std::string describe(const YAML::Node& n);

// One `key: value` of a mapping, with where its key was written.
struct Field {
  std::string name;
  YAML::Node value;
  std::string where;  // "file:line"
  std::string at() const { return where + ": " + name; }  // the start of an error about it
};

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  std::string where(const YAML::Mark& mark) const;

  // The entries of a mapping, in file order, names prefixed with `prefix`; duplicates are errors.
  std::vector<Field> fields(const YAML::Node& map, const std::string& prefix) const;

  // Settings written like a config file (sections as nested mappings).
  std::vector<Setting> settings(const std::vector<Field>& entries) const;

  // Errors for entries whose name (less `prefix`) is not in `allowed`.
  static void expect_only(const std::vector<Field>& fields, const std::set<std::string>& allowed,
                          const std::string& prefix);

  static std::string scalar(const Field& f);

  template <class T>
  static T number(const Field& f) {
    T v{};
    std::string problem = config_internal::read_scalar(scalar(f), v);
    DSMOE_CHECK(problem.empty(), f.at(), ": ", problem);
    return v;
  }

 private:
  std::string source_;
};

}  // namespace dsmoe::sweep_internal
