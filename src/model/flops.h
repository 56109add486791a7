// Parameter and FLOP counts of a config (what `dsmoe info` prints and metrics.h5 records).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace dsmoe {

struct ComponentCount {
  std::string name;
  int64_t total = 0;   // parameters stored
  int64_t active = 0;  // parameters one token uses
};

struct ModelCount {
  std::vector<ComponentCount> components;
  int64_t params_total = 0;
  int64_t params_active = 0;
  // Training FLOPs per token (forward + backward), llm.c's convention:
  // 6 * (activated matmul parameters, lm_head included, embedding lookup excluded)
  // + 6 * n_layers * d_model * seq_len (causal attention scores and values).
  double flops_per_token = 0;
};

ModelCount count_model(const Config& cfg);

// The component table (name, total, active) as lines of text, ending with the "all" row.
std::vector<std::string> parameter_table(const ModelCount& count);

}  // namespace dsmoe
