// The one list of config keys, in the order of docs/config.md. Parsing, `--set`, the range checks,
// the resolved dump and equality all walk it.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"

namespace dsmoe::config_internal {

struct Key {
  std::string path;  // "model.d_model"; top-level keys have no dot
  const char* type;  // "an integer", for "expected ..." messages
  bool is_string;
  bool extension = false;  // dsmoe's own (docs/config.md, Extensions): dumped only when set
  // Each returns the problem, or "" when there is none.
  std::function<std::string(Config&, const std::string& scalar)> read;
  std::function<std::string(const Config&)> check;  // the key's own range
  std::function<std::string(const Config&)> show;   // YAML scalar text of the value
  std::function<bool(const Config&, const Config&)> equal;
};

const std::vector<Key>& config_keys();
const Key* find_key(const std::string& path);
bool is_section(const std::string& name);
// The key or section a mistyped name most likely meant, or "" when none is close.
std::string suggest_key(const std::string& path);

}  // namespace dsmoe::config_internal
