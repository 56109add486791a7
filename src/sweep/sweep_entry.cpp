#include "sweep/sweep_entry.h"

#include "sweep/name_template.h"

namespace dsmoe::sweep_internal {
namespace {

// The values of one grid or zip key.
struct Axis {
  std::string key;
  std::vector<Setting> values;
};

std::vector<Axis> axes(const Reader& r, const Field& f) {
  DSMOE_CHECK(f.value.IsMap(), f.at(), ": expected a mapping of keys to lists of values, got ", describe(f.value));
  std::vector<Axis> out;
  for (const Field& k : r.fields(f.value, "")) {
    std::string problem = setting_key_problem(k.name);
    DSMOE_CHECK(problem.empty(), k.at(), ": ", problem);
    DSMOE_CHECK(k.value.IsSequence() && k.value.size() > 0, k.at(), ": expected a non-empty list of values, got ",
                describe(k.value));
    Axis axis{k.name, {}};
    for (const auto& v : k.value) {
      DSMOE_CHECK(v.IsScalar(), r.where(v.Mark()), ": ", k.name, ": expected a value, got ", describe(v));
      axis.values.push_back({k.name, v.Scalar(), r.where(v.Mark())});
    }
    out.push_back(axis);
  }
  DSMOE_CHECK(!out.empty(), f.at(), ": expected at least one key");
  return out;
}

// The combinations of an entry's grid and zip: each is the settings it adds.
std::vector<std::vector<Setting>> combinations(const std::vector<Axis>& grid, const std::vector<Axis>& zip,
                                               const std::string& zip_at, const std::string& entry_at) {
  size_t count = 1;
  for (const Axis& axis : grid) {
    count *= axis.values.size();  // each factor <= kMaxVariants after the check, so no overflow
    DSMOE_CHECK(count <= kMaxVariants, entry_at, ": grid: more than ", kMaxVariants,
                " combinations (an experiment has at most ", kMaxVariants, " variants)");
  }
  std::vector<std::vector<Setting>> combos = {{}};
  for (const Axis& axis : grid) {
    std::vector<std::vector<Setting>> next;
    for (const auto& c : combos)
      for (const Setting& v : axis.values) {
        next.push_back(c);
        next.back().push_back(v);
      }
    combos = next;
  }
  if (zip.empty()) return combos;
  const size_t n = zip.front().values.size();
  DSMOE_CHECK(count * n <= kMaxVariants, zip_at, ": more than ", kMaxVariants,
              " combinations (an experiment has at most ", kMaxVariants, " variants)");
  for (const Axis& axis : zip)
    DSMOE_CHECK(axis.values.size() == n, zip_at, ": ", axis.key, " has ", axis.values.size(), " values, ",
                zip.front().key, " has ", n, " (zipped lists must have the same length)");
  std::vector<std::vector<Setting>> next;
  for (const auto& c : combos)
    for (size_t i = 0; i < n; ++i) {
      next.push_back(c);
      for (const Axis& axis : zip) next.back().push_back(axis.values[i]);
    }
  return next;
}

std::string leaf(const std::string& key) { return key.substr(key.rfind('.') + 1); }

// A variant name: the entry's template over its settings (by full key and by last component),
// or for grids and zips without one, "key=value" of what the combination sets.
std::string variant_name(const Field* name, const std::vector<Setting>& fixed, const std::vector<Setting>& combo,
                         const std::string& entry_at) {
  if (!name) {
    DSMOE_CHECK(!combo.empty(), entry_at, ": name: missing (a variant needs a name)");
    std::string out;
    for (const Setting& s : combo) out += (out.empty() ? "" : "-") + leaf(s.key) + "=" + s.value;
    return out;
  }
  std::map<std::string, std::string> fields;
  for (const auto* list : {&fixed, &combo})
    for (const Setting& s : *list) fields[s.key] = fields[leaf(s.key)] = s.value;
  return expand_template(Reader::scalar(*name), fields, name->at());
}

}  // namespace

std::vector<Variant> read_sweep_entry(const Reader& r, const YAML::Node& node, const std::string& default_free) {
  const std::string entry_at = r.where(node.Mark());
  DSMOE_CHECK(node.IsMap(), entry_at, ": sweep: expected a mapping (a variant), got ", describe(node));
  const Field *name = nullptr, *free = nullptr;
  std::vector<Axis> grid, zip;
  std::string zip_at;
  std::vector<Field> rest;
  const std::vector<Field> entries = r.fields(node, "");
  for (const Field& f : entries) {
    if (f.name == "name") name = &f;
    else if (f.name == "free") free = &f;
    else if (f.name == "grid") grid = axes(r, f);
    else if (f.name == "zip") zip = axes(r, f), zip_at = f.at();
    else rest.push_back(f);
  }
  std::string free_key = default_free;
  if (free) {
    free_key = Reader::scalar(*free) == "none" ? "" : Reader::scalar(*free);
    std::string problem = free_key.empty() ? "" : integer_key_problem(free_key);
    DSMOE_CHECK(problem.empty(), free->at(), ": ", problem);
  }
  const std::vector<Setting> fixed = r.settings(rest);
  std::vector<Variant> out;
  for (const auto& combo : combinations(grid, zip, zip_at, entry_at)) {
    Variant v{variant_name(name, fixed, combo, entry_at), fixed, free_key, entry_at};
    for (const Setting& s : combo)
      for (const Setting& f : fixed)
        DSMOE_CHECK(s.key != f.key, f.where, ": ", f.key, ": also set by the entry's grid or zip");
    v.settings.insert(v.settings.end(), combo.begin(), combo.end());
    out.push_back(v);
  }
  return out;
}

}  // namespace dsmoe::sweep_internal
