// The router's host-side math (docs/model.md, MoE FFN and Balance losses), which the Router
// (moe/router.h) calls where the host takes part, and tests and bench/host_routing.cpp run
// whole: scores, top-k selection (with bias, device-limited routing and capacity dropping in
// global token order), gates, balance statistics and losses, and the backward from gate
// gradients to router logits, over one micro-batch of one layer; statistics are global through
// Comm. The per-token part and the statistics are routing/'s, which the backends also run.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "routing/route_stats.h"

namespace dsmoe {

ScoreKind parse_score_kind(const std::string& s);

struct RouterSpec {
  int n_experts = 0;       // N
  int top_k = 0;           // K
  ScoreKind score = ScoreKind::softmax;
  bool norm_topk = false;
  double noise = 0;        // router_noise r (training only)
  double capacity_factor = 0;
  int device_groups = 1;   // D (resolved, >= 1)
  int route_devices = 0;   // M for device-limited routing, 0 = off
  double expert_alpha = 0, device_alpha = 0, seq_alpha = 0, comm_alpha = 0;
  int seq_len = 0;         // T, for the sequence-wise loss
  bool force_balance = false;  // benchmarks only: route_row.h
  RouteRowSpec row() const {
    return {n_experts, top_k, score, norm_topk, device_groups, route_devices, force_balance};
  }
};

// Where this rank's tokens sit in the global micro-batch, and the noise key.
struct RouteContext {
  int64_t tokens_global = 0;    // Tt
  int64_t token_offset = 0;     // global index of this rank's first token
  bool training = false;        // router noise only in training
  uint64_t noise_key = 0;       // hash of (seed, step, micro-batch, layer)
  // Selections [N] of each expert by tokens of the micro-batch before this rank's that no rank
  // routes now (generation with a KV cache: the cached positions), which capacity counts first;
  // empty: none.
  std::vector<int64_t> earlier_selections;
};

// The statistics' spec of one micro-batch (chunks are the sequences with the sequence-wise loss).
RouteStatsSpec stats_spec(const RouterSpec& spec, const RouteContext& ctx);

template <typename T>
struct Routing {
  int tokens = 0;               // local tokens
  // On the host only where the MoE layer needs them there (route() fills them all):
  std::vector<T> logits;        // [tokens, N] as scored (noisy in training with noise)
  std::vector<T> noise_pre;     // [tokens, N] u . noise_i (empty without noise)
  std::vector<T> noise_eps;     // [tokens, N] r * eps (empty without noise)
  std::vector<T> scores;        // [tokens, N] s
  std::vector<int32_t> sel;     // [tokens, K] selected experts, best first
  std::vector<T> gate;          // [tokens, K] g, 0 where dropped
  std::vector<uint8_t> kept;    // [tokens, K] 0 = dropped by capacity (for the host plan)
  // Global statistics of this micro-batch.
  std::vector<double> load;     // [N] selections per expert (before dropping)
  int64_t dropped = 0;
  double aux_loss = 0;          // this layer's balance terms
  double loss_exp = 0, loss_dev = 0, loss_seq = 0, loss_comm = 0;
  RouteStatsSpec stats;         // how the statistics were taken (routing/route_stats.h)
  std::vector<double> partial;  // [chunks, W] this rank's chunk statistics
  std::vector<double> balance;  // [N + kBalanceLosses] the balance terms' gradient and losses
};

// logits: [tokens, N] clean router logits u . router_i; noise_pre: u . noise_i or empty.
// bias: [N] balance bias (selection only). Reads the global statistics through comm.
template <typename T>
Routing<T> route(const RouterSpec& spec, const RouteContext& ctx, std::vector<T> logits,
                 std::vector<T> noise_pre, const std::vector<float>& bias, Comm& comm);

// The same in parts, for a backend that routes on its device: the noise added to r.logits
// (training with noise; r.noise_pre set); once r holds scores, sel and gate (route_row's), the
// statistics, capacity dropping and the losses (route_stats.h's stages on host threads).
template <typename T>
void add_router_noise(const RouterSpec& spec, const RouteContext& ctx, Routing<T>& r);
template <typename T>
void route_statistics(const RouterSpec& spec, const RouteContext& ctx, Routing<T>& r, Comm& comm);

// This rank's totals [W + 1] -> the global micro-batch's, in place, after capacity dropping
// (each expert keeps the first C tokens of the global micro-batch in token order: reads this
// rank's counts, the first N totals, ctx.earlier_selections and r.sel; sets r.kept and zeroes
// the dropped gates of r.gate); r.dropped gets the global number of dropped pairs.
template <typename T>
void add_up_statistics(const RouterSpec& spec, const RouteContext& ctx, std::vector<double>& totals, Routing<T>& r,
                       Comm& comm);
// r.load, the losses and r.balance from the global totals [W + 1] and balance terms.
template <typename T>
void set_statistics(const RouterSpec& spec, const std::vector<double>& totals, std::vector<double> balance,
                    Routing<T>& r);

// dgate: [tokens, K] dL/dg (0 for dropped pairs). Returns dL/dlogits [tokens, N] (the loss scale
// multiplies the balance terms) and, with noise, dL/dnoise_pre in *dnoise_pre.
template <typename T>
std::vector<T> route_backward(const RouterSpec& spec, const Routing<T>& r, const std::vector<T>& dgate,
                              double loss_scale, std::vector<T>* dnoise_pre);
// dL/dnoise_pre [tokens, N] from dL/dlogits (training with noise).
template <typename T>
std::vector<T> noise_backward(const Routing<T>& r, const std::vector<T>& dlogits);

// max_i load_i / mean(load) - 1 (0 when no load).
double max_violation(const std::vector<double>& load);

}  // namespace dsmoe
