// The model's tensors, named as in the checkpoint (docs/model.md, Checkpoint), in one table.
#pragma once
#include <string>

#include "config/config.h"
#include "params/param_table.h"

namespace dsmoe {

// Experts [expert_first, expert_first + n_local) of every MoE layer are held by this rank.
// Within a layer wq, wk, wv are adjacent so they form one [3d, d] matrix. The routed experts'
// tensors come after every other tensor, so they form one range (ParamTable::sharded_begin).
ParamTable build_param_table(const Config& cfg, int expert_first, int n_local_experts);

std::string layer_prefix(int layer);  // "layers/<l>/"

}  // namespace dsmoe
