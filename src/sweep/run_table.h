// The run table of `dsmoe sweep --dry-run`, as text and as JSON.
#pragma once
#include <string>

#include "sweep/plan.h"

namespace dsmoe {

// A header naming the target, then one line per run: name, parameters (total, activated),
// FLOPs per token, deviation from the target, tokens to train, the solved key.
std::string run_table_text(const SweepPlan& plan);

// One JSON array with an object per run: name, variant, seed, out, params_total, params_active,
// flops_per_token, flops_deviation, tokens, solved ({key, value} or null) and config (the
// resolved config, sections as objects).
std::string run_table_json(const SweepPlan& plan);

// The config as a JSON object, values typed as in the YAML.
std::string config_json(const Config& cfg);

}  // namespace dsmoe
