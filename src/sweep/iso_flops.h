// Solving one integer key of a config so that its training FLOPs per token (count_model, the
// figure `dsmoe info` prints) come nearest a target.
#pragma once
#include <string>

#include "config/config.h"

namespace dsmoe {

struct Solved {
  int64_t value = 0;
  double flops_per_token = 0;
};

// Sets `key` of `cfg` to the valid value (validate_config passes) whose FLOPs per token are
// nearest `target`, preferring the smaller value on a tie. FLOPs must not decrease as the key
// grows (true of every width, count and length). Throws, starting with `context`, when no valid
// value reaches the target's neighbourhood or the key does not change the FLOPs.
Solved solve_iso_flops(Config& cfg, const std::string& key, double target, const std::string& context);

}  // namespace dsmoe
