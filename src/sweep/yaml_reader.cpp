#include "sweep/yaml_reader.h"

#include "config/config_keys.h"

namespace dsmoe::sweep_internal {
namespace {

void add_setting(std::vector<Setting>& out, const std::string& key, const Field& f) {
  std::string problem = setting_key_problem(key);
  DSMOE_CHECK(problem.empty(), f.at(), ": ", problem);
  out.push_back({key, Reader::scalar(f), f.where});
}

}  // namespace

std::string describe(const YAML::Node& n) {
  if (n.IsMap()) return "a mapping";
  if (n.IsSequence()) return "a sequence";
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  return "nothing";
}

std::string Reader::where(const YAML::Mark& mark) const {
  return mark.line >= 0 ? cat(source_, ":", mark.line + 1) : source_;
}

std::vector<Field> Reader::fields(const YAML::Node& map, const std::string& prefix) const {
  std::vector<Field> out;
  std::set<std::string> seen;
  for (const auto& entry : map) {
    const std::string loc = where(entry.first.Mark());
    DSMOE_CHECK(entry.first.IsScalar(), loc, ": expected a key name, got ", describe(entry.first));
    Field f{prefix + entry.first.Scalar(), entry.second, loc};
    DSMOE_CHECK(seen.insert(f.name).second, f.at(), ": duplicate key");
    out.push_back(f);
  }
  return out;
}

std::vector<Setting> Reader::settings(const std::vector<Field>& entries) const {
  std::vector<Setting> out;
  for (const Field& f : entries) {
    DSMOE_CHECK(f.name.find('.') == std::string::npos, f.at(),
                ": unknown key (in a variant, nest keys under their section)");
    const bool section = config_internal::is_section(f.name) || f.name == "deepseekmoe" || f.name == "dense";
    if (!section) {
      add_setting(out, f.name, f);
      continue;
    }
    DSMOE_CHECK(f.value.IsMap(), f.at(), ": expected a mapping of ", f.name, " keys, got ", describe(f.value));
    for (const Field& inner : fields(f.value, f.name + ".")) add_setting(out, inner.name, inner);
  }
  return out;
}

void Reader::expect_only(const std::vector<Field>& fields, const std::set<std::string>& allowed,
                         const std::string& prefix) {
  for (const Field& f : fields) {
    if (allowed.count(f.name.substr(prefix.size()))) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw Error(cat(f.at(), ": unknown key (expected one of ", list, ")"));
  }
}

std::string Reader::scalar(const Field& f) {
  DSMOE_CHECK(f.value.IsScalar(), f.at(), ": expected a value, got ", describe(f.value));
  return f.value.Scalar();
}

}  // namespace dsmoe::sweep_internal
