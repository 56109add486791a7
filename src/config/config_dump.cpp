// to_yaml and equality: both walk the key table.
#include <yaml-cpp/yaml.h>

#include "config/config.h"
#include "config/config_keys.h"
#include "config/scalar.h"

namespace dsmoe {
namespace {

// A string that a YAML reader would take for a number, a bool or null is quoted so it
// stays a string for readers other than dsmoe.
bool looks_typed(const std::string& s) {
  double d = 0;
  bool b = false;
  return YAML::IsNullString(s) || config_internal::read_scalar(s, d).empty() ||
         config_internal::read_scalar(s, b).empty();
}

}  // namespace

std::string to_yaml(const Config& cfg) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string open;  // the section whose mapping is being written
  const Config defaults;
  for (const auto& key : config_internal::config_keys()) {
    if (key.extension && key.equal(cfg, defaults)) continue;
    size_t dot = key.path.find('.');
    std::string section = dot == std::string::npos ? "" : key.path.substr(0, dot);
    if (section != open) {
      if (!open.empty()) out << YAML::EndMap;
      if (!section.empty()) out << YAML::Key << section << YAML::Value << YAML::BeginMap;
      open = section;
    }
    std::string value = key.show(cfg);
    out << YAML::Key << key.path.substr(section.empty() ? 0 : dot + 1) << YAML::Value;
    if (key.is_string && looks_typed(value)) out << YAML::DoubleQuoted;
    out << value;
  }
  if (!open.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

bool operator==(const Config& a, const Config& b) {
  for (const auto& key : config_internal::config_keys())
    if (!key.equal(a, b)) return false;
  return true;
}

}  // namespace dsmoe
