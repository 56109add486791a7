// Bytes the dispatcher moves per step, per rank and link class (docs/simulation.md "Traffic").
// One MoE layer makes four exchanges per micro-batch: dispatch (a token's activation once to
// every other rank holding one of its experts), combine (each pair's result back), and in
// backward their adjoints (pair gradients out, unit gradients back). Rows are d_model floats.
#pragma once
#include <cstdint>
#include <vector>

#include "sim/cluster.h"
#include "sim/token_model.h"

namespace dsmoe::sim {

enum Exchange { kDispatch = 0, kCombine = 1, kCombineBwd = 2, kDispatchBwd = 3, kExchanges = 4 };
const char* exchange_name(int x);

struct LinkBytes {
  double out_intra = 0, out_inter = 0, in_intra = 0, in_inter = 0;
};

struct LayerTraffic {
  // [kExchanges][gpus]: bytes one micro-batch's exchange x moves for each rank.
  std::vector<std::vector<LinkBytes>> rank;
  std::vector<double> rows;  // [gpus] expert rows (token, expert pairs) each rank computes
  std::vector<double> own_rows;  // [gpus] of those, pairs of the rank's own tokens
  std::vector<double> units_out, units_in;  // [gpus] units sent and received in dispatch
  double seconds[kExchanges] = {0, 0, 0, 0};  // each exchange: slowest rank, link classes concurrent
};

// One MoE layer: `tokens` tokens per rank per micro-batch, expert-parallel groups of `ep`
// consecutive ranks, `row_bytes` per row.
//
// node_dedup = false is dsmoe's dispatcher (one unit per token and destination GPU). true models
// a hierarchical dispatcher (DeepSeek-V3's): a token crosses to another node once, to the GPU
// with its own local index there, which forwards it over NVLink to the GPUs of that node holding
// its experts; results come back the same way, summed per node before they cross (one row per
// token and node). Needs tm.reach_node for the group's node blocks.
LayerTraffic layer_traffic(const TokenModel& tm, const Cluster& c, int ep, double tokens, double row_bytes,
                           double efficiency, bool node_dedup = false);

// Consecutive expert-parallel positions on one node (node blocks of the group): 0 when a group
// does not consist of whole nodes or lies inside one (then node_dedup changes nothing).
int positions_per_node(const Cluster& c, int ep);

}  // namespace dsmoe::sim
