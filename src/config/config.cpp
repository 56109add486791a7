// Reading a config: the YAML file, then `--set` overrides, then validate_config.
#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "config/config_keys.h"
#include "util/check.h"

namespace dsmoe {
namespace {

using config_internal::Key;

std::string at(const std::string& source, const YAML::Mark& mark) {
  return mark.line >= 0 ? cat(source, ":", mark.line + 1) : source;
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Scalar:
      return "'" + n.Scalar() + "'";
    default:
      return "nothing";
  }
}

std::string unknown_key(const std::string& path) {
  // The top-level keys of an experiment file (docs/experiments.md), which `dsmoe sweep` runs.
  for (const char* k : {"sweep", "experiment", "seeds", "iso_flops", "run_name", "base"})
    if (path == k) return "unknown key: this is an experiment file, not a run config: run it with `dsmoe sweep FILE`";
  std::string near = config_internal::suggest_key(path);
  return near.empty() ? "unknown key" : "unknown key (did you mean " + near + "?)";
}

// `prefix` starts an error message; `origin` is recorded as where the key was set.
void set_key(Config& cfg, const Key& key, const YAML::Node& value, const std::string& prefix,
             const std::string& origin) {
  std::string problem = value.IsScalar() ? key.read(cfg, value.Scalar())
                                         : cat("expected ", key.type, ", got ", describe(value));
  DSMOE_CHECK(problem.empty(), prefix, ": ", problem);
  cfg.origin[key.path] = origin;
}

// Reads the keys of one mapping: the top level (section "") or a section such as "model".
void read_mapping(Config& cfg, const YAML::Node& map, const std::string& section) {
  std::set<std::string> seen;
  for (const auto& entry : map) {
    const YAML::Node& name = entry.first;
    const YAML::Node& value = entry.second;
    std::string loc = at(cfg.source, name.Mark());
    DSMOE_CHECK(name.IsScalar(), loc, ": expected a key name, got ", describe(name));
    // Dotted names are for --set; a file that mixed them with sections could set a key twice.
    DSMOE_CHECK(name.Scalar().find('.') == std::string::npos, loc, ": ", name.Scalar(),
                ": unknown key (in a file, nest keys under their section)");
    std::string path = section.empty() ? name.Scalar() : section + "." + name.Scalar();
    DSMOE_CHECK(seen.insert(path).second, loc, ": ", path, ": duplicate key");
    if (section.empty() && config_internal::is_section(path)) {
      // An empty section (all keys commented out) is null: it keeps the defaults.
      DSMOE_CHECK(value.IsMap() || value.IsNull(), loc, ": ", path, ": expected a mapping of ",
                  path, " keys, got ", describe(value));
      read_mapping(cfg, value, path);
      continue;
    }
    const Key* key = config_internal::find_key(path);
    DSMOE_CHECK(key, loc, ": ", path, ": ", unknown_key(path));
    set_key(cfg, *key, value, cat(loc, ": ", path), loc);
  }
}

// `where` names the text in errors; the line is added when the text is a file's.
YAML::Node load_yaml(const std::string& text, const std::string& where, bool is_file) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(cat(is_file ? at(where, e.mark) : where, ": invalid YAML: ", e.msg));
  }
}

void apply_override(Config& cfg, const std::string& text) {
  size_t eq = text.find('=');
  DSMOE_CHECK(eq != std::string::npos && eq > 0, "--set ", text, ": expected key=value");
  std::string path = text.substr(0, eq);
  std::string origin = "--set " + text;
  DSMOE_CHECK(!config_internal::is_section(path), origin, ": ", path,
              " is a section; set one of its keys");
  const Key* key = config_internal::find_key(path);
  DSMOE_CHECK(key, origin, ": ", unknown_key(path));
  YAML::Node value = load_yaml(text.substr(eq + 1), origin, false);
  set_key(cfg, *key, value, origin, origin);
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Config cfg;
  cfg.source = source;
  YAML::Node root = load_yaml(yaml_text, source, true);
  // A file of comments only is null: every key keeps its default.
  if (!root.IsNull()) {
    DSMOE_CHECK(root.IsMap(), at(source, root.Mark()),
                ": expected a mapping of config keys at the top level, got ", describe(root));
    read_mapping(cfg, root, "");
  }
  for (const auto& o : overrides) apply_override(cfg, o);
  validate_config(cfg, 0);
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  // A regular file only: a FIFO or a device (`base: /dev/stdin` in an experiment) would block
  // or never end.
  std::error_code ec;
  std::ifstream f(path, std::ios::binary);
  DSMOE_CHECK(f.is_open() && std::filesystem::is_regular_file(path, ec), path,
              ": cannot open config file");
  const uintmax_t size = std::filesystem::file_size(path, ec);
  DSMOE_CHECK(!ec && size <= (uintmax_t{16} << 20), path, ": not a config file (",
              ec ? ec.message() : cat(size, " bytes, more than 16 MiB"), ")");
  std::stringstream text;
  text << f.rdbuf();
  return parse_config(text.str(), path, overrides);
}

}  // namespace dsmoe
