#include "sweep/settings.h"

#include <map>

#include "config/config_keys.h"
#include "config/scalar.h"
#include "util/check.h"

namespace dsmoe {
namespace {

using config_internal::find_key;

const std::vector<std::string> kDeepSeekKeys = {"m", "N0", "K0", "Ks", "base_hidden"};

bool is_form_key(const std::string& key) {
  if (key == "dense.hidden") return true;
  for (const auto& k : kDeepSeekKeys)
    if (key == "deepseekmoe." + k) return true;
  return false;
}

// The integer values of the form keys that were set, with where each was set.
struct Forms {
  std::map<std::string, int> value;
  std::map<std::string, std::string> where;
  size_t last = 0;                          // position of the last form setting
  std::map<std::string, size_t> explicit_at;  // position of the last setting of each config key

  bool has(const std::string& key) const { return value.count(key) > 0; }
  bool deepseekmoe() const {
    for (const auto& k : kDeepSeekKeys)
      if (has("deepseekmoe." + k)) return true;
    return false;
  }
  // Where one of the form's keys was set: errors about a missing key point there.
  std::string any_where(const std::string& prefix) const {
    for (const auto& [key, w] : where)
      if (key.rfind(prefix, 0) == 0) return w;
    return "";
  }
};

void set_config_key(Config& cfg, const Setting& s) {
  const config_internal::Key* key = find_key(s.key);
  DSMOE_ASSERT(key);
  std::string problem = key->read(cfg, s.value);
  DSMOE_CHECK(problem.empty(), s.where, ": ", s.key, ": ", problem);
  cfg.origin[s.key] = s.where;
}

void set_int(Config& cfg, int& field, const std::string& key, int value, const std::string& where) {
  field = value;
  cfg.origin[key] = where;
}

// Later settings win: a key the form derives keeps a value set after the form's last key.
void set_derived(Config& cfg, const Forms& f, int& field, const std::string& key, int value,
                 const std::string& where) {
  auto it = f.explicit_at.find(key);
  if (it == f.explicit_at.end() || it->second < f.last) set_int(cfg, field, key, value, where);
}

void resolve_deepseekmoe(Config& cfg, const Forms& f) {
  const std::string start = f.any_where("deepseekmoe.");
  for (const char* required : {"deepseekmoe.N0", "deepseekmoe.K0"})
    DSMOE_CHECK(f.has(required), start, ": ", required, ": missing (the DeepSeekMoE form needs N0 and K0)");
  auto get = [&](const std::string& k, int fallback) { return f.has(k) ? f.value.at(k) : fallback; };
  auto at = [&](const std::string& k) { return f.has(k) ? f.where.at(k) : start; };
  const int m = get("deepseekmoe.m", 1), n0 = get("deepseekmoe.N0", 0), k0 = get("deepseekmoe.K0", 0);
  const int ks = get("deepseekmoe.Ks", 0), base = get("deepseekmoe.base_hidden", cfg.model.dense_hidden);
  for (const char* k : {"deepseekmoe.m", "deepseekmoe.N0", "deepseekmoe.K0", "deepseekmoe.base_hidden"})
    DSMOE_CHECK(get(k, 1) >= 1, at(k), ": ", k, ": must be >= 1, got ", get(k, 1));
  DSMOE_CHECK(ks >= 0, at("deepseekmoe.Ks"), ": deepseekmoe.Ks: must be >= 0, got ", ks);
  DSMOE_CHECK(base % m == 0, at("deepseekmoe.m"), ": deepseekmoe.m: base_hidden ", base,
              " is not divisible by m = ", m);
  DSMOE_CHECK(m * k0 - ks >= 1, at("deepseekmoe.Ks"), ": deepseekmoe.Ks: m*K0 - Ks = ", m * k0 - ks,
              " leaves no routed expert per token");
  set_derived(cfg, f, cfg.moe.n_routed, "moe.n_routed", m * n0 - ks, at("deepseekmoe.N0"));
  set_derived(cfg, f, cfg.moe.top_k, "moe.top_k", m * k0 - ks, at("deepseekmoe.K0"));
  set_derived(cfg, f, cfg.moe.n_shared, "moe.n_shared", ks, at("deepseekmoe.Ks"));
  set_derived(cfg, f, cfg.moe.expert_hidden, "moe.expert_hidden", base / m, at("deepseekmoe.m"));
}

}  // namespace

std::string setting_key_problem(const std::string& key) {
  if (is_form_key(key)) return "";
  if (key == "name" || key == "out") return "set by the sweep (the variant's name, runs/<experiment>/<run>)";
  if (key.rfind("deepseekmoe.", 0) == 0)
    return "unknown key (the DeepSeekMoE form has deepseekmoe.{m, N0, K0, Ks, base_hidden})";
  if (key.rfind("dense.", 0) == 0) return "unknown key (the dense form has dense.hidden)";
  if (find_key(key)) return "";
  std::string near = config_internal::suggest_key(key);
  return near.empty() ? "unknown key" : "unknown key (did you mean " + near + "?)";
}

Config apply_settings(Config cfg, const std::vector<Setting>& settings) {
  Forms forms;
  for (size_t i = 0; i < settings.size(); ++i) {
    const Setting& s = settings[i];
    if (!is_form_key(s.key)) {
      set_config_key(cfg, s);
      forms.explicit_at[s.key] = i;
      continue;
    }
    forms.last = i;
    int v = 0;
    std::string problem = config_internal::read_scalar(s.value, v);
    DSMOE_CHECK(problem.empty(), s.where, ": ", s.key, ": ", problem);
    forms.value[s.key] = v;
    forms.where[s.key] = s.where;
  }
  // A dense variant of a sweep whose base uses the DeepSeekMoE form has no MoE layer, so the
  // form has nothing to resolve.
  if (forms.has("dense.hidden")) {
    const std::string& at = forms.where.at("dense.hidden");
    const int hidden = forms.value.at("dense.hidden");
    DSMOE_CHECK(hidden >= 1, at, ": dense.hidden: must be >= 1, got ", hidden);
    set_int(cfg, cfg.model.dense_hidden, "model.dense_hidden", hidden, at);
    set_int(cfg, cfg.model.first_dense_layers, "model.first_dense_layers", cfg.model.n_layers, at);
  } else if (forms.deepseekmoe()) {
    resolve_deepseekmoe(cfg, forms);
  }
  validate_config(cfg, 0);
  return cfg;
}

std::string integer_key_problem(const std::string& key) {
  const config_internal::Key* k = find_key(key);
  if (!k) {
    std::string problem = setting_key_problem(key);
    return problem.empty() ? "expected a config key (the forms resolve to moe.expert_hidden, model.dense_hidden, ...)"
                           : problem;
  }
  return std::string(k->type) == config_internal::type_name(0) ? "" : cat("expected an integer key, ", key,
                                                                           " is ", k->type);
}

void set_integer_key(Config& cfg, const std::string& key, int64_t value, const std::string& where) {
  DSMOE_ASSERT(integer_key_problem(key).empty());
  set_config_key(cfg, Setting{key, std::to_string(value), where});
}

}  // namespace dsmoe
