#include "sim/traffic.h"

#include <algorithm>

#include "util/check.h"

namespace dsmoe::sim {

const char* exchange_name(int x) {
  static const char* names[] = {"dispatch", "combine", "combine_bwd", "dispatch_bwd"};
  return names[x];
}

void check_cluster(const Cluster& c) {
  DSMOE_CHECK(c.gpus >= 1, "--gpus must be at least 1, got ", c.gpus);
  DSMOE_CHECK(c.gpus_per_node >= 1, "--gpus-per-node must be at least 1, got ", c.gpus_per_node);
  DSMOE_CHECK(c.gpus <= c.gpus_per_node || c.gpus % c.gpus_per_node == 0, "--gpus ", c.gpus,
              " is not a whole number of nodes of --gpus-per-node ", c.gpus_per_node);
  DSMOE_CHECK(c.intra_bw > 0, "--intra-bw must be positive, got ", c.intra_bw);
  DSMOE_CHECK(c.inter_bw > 0, "--inter-bw must be positive, got ", c.inter_bw);
  DSMOE_CHECK(c.latency >= 0, "--latency must be non-negative, got ", c.latency);
}

int positions_per_node(const Cluster& c, int ep) {
  const int P = c.gpus_per_node;
  return ep > P && ep % P == 0 ? P : 0;
}

LayerTraffic layer_traffic(const TokenModel& tm, const Cluster& c, int ep, double tokens, double row_bytes,
                           double efficiency, bool node_dedup) {
  const int G = c.gpus;
  DSMOE_CHECK(ep >= 1 && G % ep == 0, "the expert-parallel size ", ep, " does not divide --gpus ", G);
  DSMOE_CHECK(static_cast<int>(tm.pairs.size()) == ep, "internal: token model for ", tm.pairs.size(),
              " positions, expert-parallel size ", ep);
  LayerTraffic t;
  t.rank.assign(kExchanges, std::vector<LinkBytes>(G));
  t.rows.assign(G, 0.0);
  t.own_rows.assign(G, 0.0);
  t.units_out.assign(G, 0.0);
  t.units_in.assign(G, 0.0);
  auto add = [&](int x, int from, int to, double rows) {
    const bool intra = c.node_of(from) == c.node_of(to);
    (intra ? t.rank[x][from].out_intra : t.rank[x][from].out_inter) += rows * row_bytes;
    (intra ? t.rank[x][to].in_intra : t.rank[x][to].in_inter) += rows * row_bytes;
  };
  const int ppn = node_dedup ? positions_per_node(c, ep) : 0;
  DSMOE_CHECK(ppn == 0 || static_cast<int>(tm.reach_node.size()) == ep / ppn, "internal: no node reach for ", ep / std::max(ppn, 1), " nodes");
  for (int s = 0; s < G; ++s) {
    const int base = s / ep * ep, ps = s % ep;
    t.own_rows[s] = tokens * tm.pairs[ps];
    t.rows[s] = tokens * tm.pairs[ps] * ep;  // every rank of the group sends it the same share
    if (ppn > 0) {  // the other nodes through one proxy each
      for (int k = 0; k < ep / ppn; ++k) {
        if (k == ps / ppn) continue;
        const int proxy = k * ppn + ps % ppn;
        const double crossing = tokens * tm.reach_node[k];
        add(kDispatch, s, base + proxy, crossing);
        add(kCombine, base + proxy, s, crossing);
        add(kCombineBwd, s, base + proxy, crossing);
        add(kDispatchBwd, base + proxy, s, crossing);
        t.units_out[s] += crossing;
        t.units_in[base + proxy] += crossing;
        for (int j = k * ppn; j < (k + 1) * ppn; ++j) {
          if (j == proxy) continue;
          add(kDispatch, base + proxy, base + j, tokens * tm.reach[j]);     // forwarded over NVLink
          add(kCombine, base + j, base + proxy, tokens * tm.pairs[j]);      // results to be summed
          add(kCombineBwd, base + proxy, base + j, tokens * tm.pairs[j]);
          add(kDispatchBwd, base + j, base + proxy, tokens * tm.reach[j]);
        }
      }
    }
    for (int j = 0; j < ep; ++j) {
      if (j == ps || (ppn > 0 && j / ppn != ps / ppn)) continue;
      const int dest = base + j;
      add(kDispatch, s, dest, tokens * tm.reach[j]);     // s's tokens with an expert on j
      add(kCombine, dest, s, tokens * tm.pairs[j]);      // their results come back per pair
      add(kCombineBwd, s, dest, tokens * tm.pairs[j]);   // pair gradients go out
      add(kDispatchBwd, dest, s, tokens * tm.reach[j]);  // token-copy gradients come back
      t.units_out[s] += tokens * tm.reach[j];
      t.units_in[dest] += tokens * tm.reach[j];
    }
  }
  if (ep == 1) return t;
  for (int x = 0; x < kExchanges; ++x) {
    double worst = 0;
    for (const LinkBytes& b : t.rank[x]) {
      const double intra = std::max(b.out_intra, b.in_intra) / c.intra_bw;
      const double inter = std::max(b.out_inter, b.in_inter) / c.inter_bw;
      worst = std::max(worst, std::max(intra, inter));
    }
    t.seconds[x] = c.latency + worst / efficiency;
  }
  return t;
}

}  // namespace dsmoe::sim
