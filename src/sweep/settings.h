// Keys set by an experiment file over a base config: config keys ("moe.top_k") and the keys of
// two shorthand forms that resolve to config keys once every setting is applied:
//   deepseekmoe.{m, N0, K0, Ks, base_hidden}: n_routed = m*N0 - Ks, top_k = m*K0 - Ks,
//     n_shared = Ks, expert_hidden = base_hidden / m (base_hidden defaults to model.dense_hidden);
//   dense.hidden: every layer a dense FFN of that width (first_dense_layers = n_layers).
// Later settings win; the DeepSeekMoE form counts as set where its last key is, so a variant's
// moe.top_k overrides the top-k of a base's form, and a variant's form the base's moe keys.
#pragma once
#include <string>
#include <vector>

#include "config/config.h"

namespace dsmoe {

struct Setting {
  std::string key;    // dotted path
  std::string value;  // the YAML scalar as written
  std::string where;  // "file:line"
};

// "" when `key` can be set by an experiment, else the problem ("unknown key (did you mean ...?)").
std::string setting_key_problem(const std::string& key);

// Applies `settings` over `base` in order, resolves the forms and validates (world size not yet
// known). Errors name where the responsible setting was written, then its key.
Config apply_settings(Config base, const std::vector<Setting>& settings);

// Sets one integer config key (as the iso-FLOPs solver does); `where` is recorded as its origin.
void set_integer_key(Config& cfg, const std::string& key, int64_t value, const std::string& where);

// "" when `key` is an integer config key, else the problem.
std::string integer_key_problem(const std::string& key);

}  // namespace dsmoe
