#include "moe/router_math.h"

#include <algorithm>
#include <cmath>

#include "util/check.h"
#include "util/rng.h"

namespace dsmoe {

ScoreKind parse_score_kind(const std::string& s) {
  if (s == "softmax") return ScoreKind::softmax;
  if (s == "softmax_topk") return ScoreKind::softmax_topk;
  if (s == "sigmoid") return ScoreKind::sigmoid;
  throw Error("moe.score: unknown score '" + s + "'");
}

double max_violation(const std::vector<double>& load) {
  double sum = 0, mx = 0;
  for (double l : load) {
    sum += l;
    mx = std::max(mx, l);
  }
  if (sum <= 0) return 0;
  return mx / (sum / load.size()) - 1.0;
}

namespace {

double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

template <typename T>
void add_router_noise(const RouterSpec& spec, const RouteContext& ctx, Routing<T>& r) {
  const int N = spec.n_experts, tokens = r.tokens;
  r.noise_eps.resize(r.logits.size());
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < N; ++i) {
      size_t p = (size_t)t * N + i;
      double eps = normal_from_key(hash_key(ctx.noise_key, ctx.token_offset + t, i));
      r.noise_eps[p] = static_cast<T>(spec.noise * eps);
      r.logits[p] += static_cast<T>(r.noise_eps[p] * softplus(r.noise_pre[p]));
    }
}

template <typename T>
Routing<T> route(const RouterSpec& spec, const RouteContext& ctx, std::vector<T> logits, std::vector<T> noise_pre,
                 const std::vector<float>& bias, Comm& comm) {
  const int N = spec.n_experts, K = spec.top_k;
  DSMOE_ASSERT(static_cast<int>(bias.size()) == N);
  Routing<T> r;
  r.tokens = static_cast<int>(logits.size() / N);
  r.logits = std::move(logits);
  if (ctx.training && spec.noise > 0) {
    r.noise_pre = std::move(noise_pre);
    add_router_noise(spec, ctx, r);
  }
  r.scores.resize(r.logits.size());
  r.sel.resize((size_t)r.tokens * K);
  r.gate.resize((size_t)r.tokens * K);
  route_rows(spec.row(), r.logits.data(), bias.data(), r.scores.data(), r.sel.data(), r.gate.data(), r.tokens);
  route_statistics(spec, ctx, r, comm);
  return r;
}

RouteStatsSpec stats_spec(const RouterSpec& spec, const RouteContext& ctx) {
  RouteStatsSpec s;
  s.row = spec.row();
  s.expert_alpha = spec.expert_alpha;
  s.device_alpha = spec.device_alpha;
  s.seq_alpha = spec.seq_alpha;
  s.comm_alpha = spec.comm_alpha;
  s.seq_len = spec.seq_len;
  if (spec.seq_alpha > 0) s.chunk = spec.seq_len;
  s.tokens_global = static_cast<double>(ctx.tokens_global);
  return s;
}

template <typename T>
void add_up_statistics(const RouterSpec& spec, const RouteContext& ctx, std::vector<double>& totals, Routing<T>& r,
                       Comm& comm) {
  const int N = spec.n_experts, K = spec.top_k;
  const int64_t pairs = (int64_t)r.tokens * K;
  r.kept.assign(pairs, 1);
  int64_t dropped = 0;
  if (spec.capacity_factor > 0) {
    const int64_t cap = static_cast<int64_t>(std::ceil(spec.capacity_factor * ctx.tokens_global * K / N));
    std::vector<int64_t> seen(totals.begin(), totals.begin() + N);
    comm.exscan_sum(seen.data(), N);  // selections of each expert on earlier ranks
    for (size_t i = 0; i < ctx.earlier_selections.size(); ++i) seen[i] += ctx.earlier_selections[i];
    for (int64_t p = 0; p < pairs; ++p)
      if (seen[r.sel[p]]++ >= cap) {
        r.kept[p] = 0;
        r.gate[p] = 0;
        dropped++;
      }
  }
  totals.push_back(static_cast<double>(dropped));
  comm.allreduce_sum(totals.data(), static_cast<int64_t>(totals.size()));
  r.dropped = static_cast<int64_t>(totals.back());
  totals.pop_back();
}

template <typename T>
void set_statistics(const RouterSpec& spec, const std::vector<double>& totals, std::vector<double> balance,
                    Routing<T>& r) {
  r.load.assign(totals.begin(), totals.begin() + spec.n_experts);
  const double* losses = balance.data() + spec.n_experts;
  r.loss_exp = losses[kLossExp];
  r.loss_dev = losses[kLossDev];
  r.loss_seq = losses[kLossSeq];
  r.loss_comm = losses[kLossComm];
  r.aux_loss = losses[kAuxLoss];
  r.balance = std::move(balance);
}

template <typename T>
void route_statistics(const RouterSpec& spec, const RouteContext& ctx, Routing<T>& r, Comm& comm) {
  DSMOE_ASSERT(spec.n_experts % spec.device_groups == 0);
  const RouteStatsSpec s = r.stats = stats_spec(spec, ctx);
  DSMOE_ASSERT(s.seq_alpha <= 0 || r.tokens % s.seq_len == 0);  // this rank holds whole sequences
  const int W = s.columns();
  r.partial.resize((size_t)s.chunks(r.tokens) * W);
  std::vector<double> totals(W + 1);
  route_partials_on_host(s, r.scores.data(), r.sel.data(), r.tokens, r.partial.data(), totals.data());
  add_up_statistics(spec, ctx, totals, r, comm);
  std::vector<double> balance(spec.n_experts + kBalanceLosses);
  balance_terms(s, totals.data(), balance.data());
  set_statistics(spec, totals, std::move(balance), r);
}

template <typename T>
std::vector<T> route_backward(const RouterSpec& spec, const Routing<T>& r, const std::vector<T>& dgate,
                              double loss_scale, std::vector<T>* dnoise_pre) {
  std::vector<T> dlogits((size_t)r.tokens * spec.n_experts);
  route_backward_on_host(r.stats, r.scores.data(), r.sel.data(), r.logits.data(), dgate.data(), r.balance.data(),
                         r.partial.data(), loss_scale, r.tokens, dlogits.data());
  if (dnoise_pre && !r.noise_pre.empty()) *dnoise_pre = noise_backward(r, dlogits);
  return dlogits;
}

template <typename T>
std::vector<T> noise_backward(const Routing<T>& r, const std::vector<T>& dlogits) {
  std::vector<T> dnoise(dlogits.size());
#pragma omp parallel for schedule(static)
  for (size_t p = 0; p < dlogits.size(); ++p)
    dnoise[p] = static_cast<T>(dlogits[p] * r.noise_eps[p] * sigmoid(r.noise_pre[p]));
  return dnoise;
}

template Routing<float> route(const RouterSpec&, const RouteContext&, std::vector<float>, std::vector<float>,
                              const std::vector<float>&, Comm&);
template void add_router_noise(const RouterSpec&, const RouteContext&, Routing<float>&);
template void add_router_noise(const RouterSpec&, const RouteContext&, Routing<double>&);
template void route_statistics(const RouterSpec&, const RouteContext&, Routing<float>&, Comm&);
template void route_statistics(const RouterSpec&, const RouteContext&, Routing<double>&, Comm&);
template Routing<double> route(const RouterSpec&, const RouteContext&, std::vector<double>, std::vector<double>,
                               const std::vector<float>&, Comm&);
template std::vector<float> route_backward(const RouterSpec&, const Routing<float>&, const std::vector<float>&,
                                           double, std::vector<float>*);
template std::vector<double> route_backward(const RouterSpec&, const Routing<double>&, const std::vector<double>&,
                                            double, std::vector<double>*);

#define DSMOE_ROUTER_PARTS(T)                                                                                   \
  template void add_up_statistics(const RouterSpec&, const RouteContext&, std::vector<double>&, Routing<T>&,   \
                                  Comm&);                                                                     \
  template void set_statistics(const RouterSpec&, const std::vector<double>&, std::vector<double>, Routing<T>&);  \
  template std::vector<T> noise_backward(const Routing<T>&, const std::vector<T>&);
DSMOE_ROUTER_PARTS(float)
DSMOE_ROUTER_PARTS(double)

}  // namespace dsmoe
