// Which memory settings make a config fit a GPU's memory: every combination of the settings that
// trade memory for time (each train.recompute setting; parallel.shard_optimizer off and on;
// train.micro_batches from 1 up to a sequence per rank per micro-batch), simulated on the same
// cluster and routing, with the largest rank's peak memory, the step time and whether it fits
// (docs/simulation.md "Fitting memory").
#pragma once
#include <string>
#include <vector>

#include "config/config.h"
#include "sim/simulate.h"

namespace dsmoe::sim {

struct MemorySetting {
  std::string recompute = "none";
  bool shard_optimizer = false;
  int micro_batches = 1;
  double peak_bytes = 0;  // the largest rank's
  double step_s = 0, tokens_per_s = 0;
  bool fits = false;  // peak_bytes <= the GPU's memory
  // The --set arguments that choose it.
  std::string sets() const;
};

// In order of micro-batches, then recompute as kRecomputeSettings, then the optimizer unsharded
// before sharded. cfg must be valid for cluster.gpus ranks.
std::vector<MemorySetting> memory_settings(const Config& cfg, const Cluster& cluster, const Rates& rates,
                                           const RoutingProfile& routing, double gpu_memory_bytes);

// The fastest setting that fits, or null.
const MemorySetting* fastest_fit(const std::vector<MemorySetting>& settings);

}  // namespace dsmoe::sim
