// One simulated training step of a config on a cluster (docs/simulation.md): compute per rank
// from the FLOPs model, the straggler cost of uneven expert loads, the dispatcher's traffic and
// time per link class, what overlap hides, the gradient allreduce, and peak memory per rank.
#pragma once
#include <string>
#include <vector>

#include "config/config.h"
#include "sim/cluster.h"
#include "sim/memory.h"
#include "sim/routing_source.h"
#include "sim/traffic.h"

namespace dsmoe::sim {

// Per layer and rank, seconds of expert compute: the step waits for the slowest rank at every
// MoE layer (its combine), so the cost is sum over layers of (max - mean) over ranks.
struct Straggler {
  double mean_s = 0, max_s = 0;
  double cost_s() const { return max_s - mean_s; }
  std::vector<double> ratio;  // [layers] max / mean
};
Straggler straggler(const std::vector<std::vector<double>>& seconds);  // [layers][ranks]

struct SimResult {
  std::string config, routing;
  int gpus = 1, gpus_per_node = 1, ep = 1, device_groups = 1, route_devices = 0, micro_batches = 1;
  double tokens_per_rank = 0;  // per step
  double flops_per_token = 0;
  // Seconds per step.
  double dense_s = 0;       // non-expert compute (attention, dense FFN, shared experts, router, head)
  Straggler experts;        // routed-expert compute, mean rank and per-layer slowest
  double comm_s[kExchanges] = {0, 0, 0, 0};  // each exchange, all MoE layers and micro-batches
  double overlapped_s = 0;  // of comm, hidden behind shared and own-token experts
  double allreduce_s = 0;
  double comm_total() const { return comm_s[0] + comm_s[1] + comm_s[2] + comm_s[3]; }
  double exposed_s() const { return comm_total() - overlapped_s; }
  double compute_s() const { return dense_s + experts.max_s; }
  double step_s() const { return compute_s() + exposed_s() + allreduce_s; }
  double tokens_per_s() const { return tokens_per_rank * gpus / step_s(); }
  // Bytes per step, mean over ranks, [exchange]: sent intra-node, sent inter-node; and the max
  // over ranks of all bytes sent.
  double bytes_intra[kExchanges] = {0, 0, 0, 0}, bytes_inter[kExchanges] = {0, 0, 0, 0};
  double bytes_sent_mean() const;
  double bytes_sent_max = 0;
  std::vector<double> rank_bytes_sent;  // [gpus] per step
  std::vector<double> rank_expert_rows;  // [gpus] per step, all MoE layers
  std::vector<double> rank_memory;      // [gpus] bytes
  MemoryBreakdown memory;               // of the rank with the largest total
  int memory_rank = 0;
  std::vector<double> layer_imbalance;  // [moe layers] rows max / mean over ranks
  Rates rates;
  Cluster cluster;
};

// cfg must be resolved and valid for cluster.gpus ranks (validate_config).
SimResult simulate(const Config& cfg, const Cluster& cluster, const Rates& rates, const RoutingProfile& routing);

}  // namespace dsmoe::sim
