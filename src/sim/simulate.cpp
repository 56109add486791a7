#include "sim/simulate.h"

#include <algorithm>
#include <map>

#include "model/flops.h"
#include "model/layout.h"
#include "moe/placement.h"
#include "sim/token_model.h"
#include "util/check.h"

namespace dsmoe::sim {

Straggler straggler(const std::vector<std::vector<double>>& seconds) {
  Straggler s;
  for (const auto& layer : seconds) {
    DSMOE_CHECK(!layer.empty(), "straggler: a layer without ranks");
    double sum = 0, mx = 0;
    for (double x : layer) sum += x, mx = std::max(mx, x);
    const double mean = sum / layer.size();
    s.mean_s += mean;
    s.max_s += mx;
    s.ratio.push_back(mean > 0 ? mx / mean : 1.0);
  }
  return s;
}

double SimResult::bytes_sent_mean() const {
  double s = 0;
  for (int x = 0; x < kExchanges; ++x) s += bytes_intra[x] + bytes_inter[x];
  return s;
}

SimResult simulate(const Config& cfg, const Cluster& c, const Rates& rates, const RoutingProfile& routing) {
  check_cluster(c);
  const int G = c.gpus, E = cfg.parallel.expert_parallel > 0 ? cfg.parallel.expert_parallel : G;
  const int Lm = cfg.n_moe_layers(), N = cfg.moe.n_routed, K = cfg.moe.top_k;
  DSMOE_CHECK(G % E == 0, "parallel.expert_parallel = ", E, " does not divide --gpus ", G);
  DSMOE_CHECK(N % E == 0, "moe.n_routed = ", N, " is not divisible by the expert-parallel size ", E,
              " (parallel.expert_parallel, 0 = --gpus)");
  DSMOE_CHECK(static_cast<int>(routing.share.size()) == Lm, "internal: routing for ", routing.share.size(), " layers");
  DSMOE_CHECK(rates.compute > 0, "the compute rate must be positive, got ", rates.compute);
  DSMOE_CHECK(rates.dispatch_efficiency > 0, "the dispatch efficiency must be positive");
  const int mb = cfg.train.micro_batches;
  const int seqs = cfg.train.batch_size / mb / G;
  DSMOE_CHECK(seqs >= 1 && (int64_t)seqs * mb * G == cfg.train.batch_size, "train.batch_size ", cfg.train.batch_size,
              " is not divisible by train.micro_batches ", mb, " x --gpus ", G);
  SimResult r;
  r.config = cfg.name;
  r.routing = routing.source;
  r.gpus = G;
  r.gpus_per_node = c.gpus_per_node;
  r.ep = E;
  r.device_groups = cfg.balance.device_groups > 0 ? cfg.balance.device_groups : E;
  r.route_devices = cfg.moe.route_devices;
  r.micro_batches = mb;
  r.rates = rates;
  r.cluster = c;
  const double t = (double)seqs * cfg.model.seq_len;  // tokens per rank per micro-batch
  r.tokens_per_rank = t * mb;
  const ModelCount count = count_model(cfg);
  r.flops_per_token = count.flops_per_token;
  const double d = cfg.model.d_model, n = cfg.moe.expert_hidden, sh = (double)cfg.moe.n_shared * n;
  const double expert_flops_per_row = 6.0 * 3 * d * n;  // forward + backward of one (token, expert) pair
  // Recomputation in the backward (forward FLOPs: 2 per weight). train.recompute attention or
  // full: each layer's qkv product and attention forward (2 d seq_len for the causal scores and
  // values); moe or full: the experts' gate and up products, 4 d n per routed row and 4 d Ks n per
  // token for the shared experts.
  const bool attention_again = cfg.train.recomputes_attention();
  const bool experts_again = cfg.train.recomputes_experts();
  const double recompute_flops =
      (attention_again ? cfg.model.n_layers * (2.0 * 3 * d * d + 2.0 * d * cfg.model.seq_len) : 0) +
      (experts_again ? Lm * 4.0 * d * sh : 0);
  const double routed_flops_per_row = expert_flops_per_row + (experts_again ? 4.0 * d * n : 0);
  r.dense_s =
      (count.flops_per_token - expert_flops_per_row * K * Lm + recompute_flops) * r.tokens_per_rank / rates.compute;

  std::map<std::vector<double>, TokenModel> models;  // recorded profiles repeat over layers
  std::vector<std::vector<double>> expert_s(Lm);
  std::vector<RankRows> rank_rows(G);
  r.rank_bytes_sent.assign(G, 0.0);
  r.rank_expert_rows.assign(G, 0.0);
  for (int l = 0; l < Lm; ++l) {
    const std::vector<double>& q = routing.share[l];
    DSMOE_CHECK(static_cast<int>(q.size()) == N, "internal: routing with ", q.size(), " experts");
    auto it = models.find(q);
    const int ppn = rates.node_dedup ? positions_per_node(c, E) : 0;
    if (it == models.end()) it = models.emplace(q, token_model(q, K, E, r.device_groups, r.route_devices, ppn)).first;
    const LayerTraffic lt = layer_traffic(it->second, c, E, t, d * 4.0, rates.dispatch_efficiency, rates.node_dedup);
    for (int x = 0; x < kExchanges; ++x) {
      r.comm_s[x] += mb * lt.seconds[x];
      for (int g = 0; g < G; ++g) {
        r.bytes_intra[x] += mb * lt.rank[x][g].out_intra / G;
        r.bytes_inter[x] += mb * lt.rank[x][g].out_inter / G;
        r.rank_bytes_sent[g] += mb * (lt.rank[x][g].out_intra + lt.rank[x][g].out_inter);
      }
    }
    expert_s[l].resize(G);
    double rows_max = 0, rows_sum = 0, own_min = 1e300;
    for (int g = 0; g < G; ++g) {
      expert_s[l][g] = mb * lt.rows[g] * routed_flops_per_row / rates.compute;
      r.rank_expert_rows[g] += mb * lt.rows[g];
      rows_max = std::max(rows_max, lt.rows[g]);
      rows_sum += lt.rows[g];
      own_min = std::min(own_min, lt.own_rows[g]);
      double peak = lt.rows[g];  // buffers grow to the busiest recorded step
      if (!routing.row_share.empty()) {
        const ExpertPlacement at{N, E, g % E};
        for (const auto& row : routing.row_share[l]) {
          double share = 0;
          for (int i = at.first(); i < at.first() + at.per_rank(); ++i) share += row[i];
          peak = std::max(peak, t * E * K * share);
        }
      }
      rank_rows[g].rows.push_back(peak);
      rank_rows[g].own_rows.push_back(lt.own_rows[g]);
      rank_rows[g].units_out.push_back(lt.units_out[g]);
      rank_rows[g].units_in.push_back(lt.units_in[g]);
    }
    r.layer_imbalance.push_back(rows_sum > 0 ? rows_max / (rows_sum / G) : 1.0);
    if (rates.overlap && E > 1) {
      // Forward: while the tokens travel, the shared experts and the own tokens' experts run.
      const double hide = (2.0 * 3 * d * sh * t + 2.0 * 3 * d * n * own_min) / rates.compute;
      r.overlapped_s += mb * std::min(lt.seconds[kDispatch], hide);
    }
  }
  r.experts = straggler(expert_s);
  r.bytes_sent_max = *std::max_element(r.rank_bytes_sent.begin(), r.rank_bytes_sent.end());

  // Gradients: the non-expert ones summed over all ranks, the experts' over their shard's replicas
  // (ring allreduce: each rank sends 2 (n - 1) / n of the buffer).
  const ParamTable table = build_param_table(cfg, 0, N / E);
  const double expert_bytes = 4.0 * (table.size() - table.sharded_begin());
  const double other_bytes = 4.0 * table.sharded_begin();
  const double bw = G <= c.gpus_per_node ? c.intra_bw : c.inter_bw;
  // A ring collective over `ranks` in which each rank moves `passes` x (n - 1) / n of the bytes:
  // 2 for an allreduce, 1 for an all-gather.
  auto ring = [&](int ranks, double bytes, double passes) {
    return ranks > 1 ? c.latency + passes * (ranks - 1.0) / ranks * bytes / bw : 0.0;
  };
  r.allreduce_s = ring(G, other_bytes, 2) + ring(G / E, expert_bytes, 2);
  if (cfg.parallel.shard_optimizer)  // the updated blocks' all-gathers
    r.allreduce_s += ring(G, other_bytes, 1) + ring(G / E, expert_bytes, 1);

  r.rank_memory.assign(G, 0.0);
  double best = -1;
  for (int g = 0; g < G; ++g) {
    const MemoryBreakdown m = rank_memory(cfg, E, g % E, G / E, seqs, rates.backend, E > 1 ? rank_rows[g] : RankRows{});
    r.rank_memory[g] = m.total();
    if (m.total() > best) best = m.total(), r.memory = m, r.memory_rank = g;
  }
  return r;
}

}  // namespace dsmoe::sim
