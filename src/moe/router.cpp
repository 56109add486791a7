#include "moe/router.h"

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

template <typename T>
void route_statistics(const RouterSpec& spec, const RouteContext& ctx, Routing<T>& r, Comm& comm) {
  const int N = spec.n_experts, K = spec.top_k, D = spec.device_groups, tokens = r.tokens;
  DSMOE_ASSERT(N % D == 0);
  r.kept.assign((size_t)tokens * K, 1);

  // Global counts: selections per expert, tokens reaching each device group, score sums. Score
  // sums go by chunks of a fixed number of tokens added in chunk order, so they do not depend on
  // the thread count.
  constexpr int kChunk = 256;
  const int chunks = (tokens + kChunk - 1) / kChunk;
  std::vector<int64_t> counts(N, 0), reach(D, 0);
  std::vector<double> psum(N, 0.0), partial((size_t)chunks * N, 0.0);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c)
    for (int t = c * kChunk; t < std::min(tokens, (c + 1) * kChunk); ++t)
      for (int i = 0; i < N; ++i) partial[(size_t)c * N + i] += r.scores[(size_t)t * N + i];
  for (int c = 0; c < chunks; ++c)
    for (int i = 0; i < N; ++i) psum[i] += partial[(size_t)c * N + i];
  std::vector<uint8_t> hit(D);
  for (int t = 0; t < tokens; ++t) {
    std::fill(hit.begin(), hit.end(), 0);
    for (int k = 0; k < K; ++k) {
      int e = r.sel[(size_t)t * K + k];
      counts[e]++;
      hit[e / (N / D)] = 1;
    }
    for (int d = 0; d < D; ++d) reach[d] += hit[d];
  }

  // Capacity: each expert keeps the first C tokens of the global micro-batch in token order.
  int64_t dropped_local = 0;
  if (spec.capacity_factor > 0) {
    const int64_t cap = static_cast<int64_t>(std::ceil(spec.capacity_factor * ctx.tokens_global * K / N));
    std::vector<int64_t> seen(counts);
    comm.exscan_sum(seen.data(), N);  // selections of each expert on earlier ranks
    for (int t = 0; t < tokens; ++t)
      for (int k = 0; k < K; ++k) {
        size_t p = (size_t)t * K + k;
        if (seen[r.sel[p]]++ >= cap) {
          r.kept[p] = 0;
          r.gate[p] = 0;
          dropped_local++;
        }
      }
  }

  std::vector<int64_t> ints(counts);
  ints.insert(ints.end(), reach.begin(), reach.end());
  ints.push_back(dropped_local);
  comm.allreduce_sum(ints.data(), static_cast<int64_t>(ints.size()));
  comm.allreduce_sum(psum.data(), N);
  r.dropped = ints.back();
  r.load.assign(ints.begin(), ints.begin() + N);

  const double Tt = static_cast<double>(ctx.tokens_global);
  std::vector<double> f(N), P(N);
  for (int i = 0; i < N; ++i) {
    f[i] = N / (K * Tt) * r.load[i];
    P[i] = psum[i] / Tt;
    r.loss_exp += f[i] * P[i];
  }
  const int per_group = N / D;
  const int M = spec.route_devices > 0 ? spec.route_devices : std::min(K, D);
  std::vector<double> f_dev(D, 0.0), f_comm(D);
  for (int d = 0; d < D; ++d) {
    double p_dev = 0;
    for (int i = d * per_group; i < (d + 1) * per_group; ++i) {
      f_dev[d] += f[i] / per_group;
      p_dev += P[i];
    }
    f_comm[d] = D / (M * Tt) * static_cast<double>(ints[N + d]);
    r.loss_dev += f_dev[d] * p_dev;
    r.loss_comm += f_comm[d] * p_dev;
  }
  r.ds_all.resize(N);
  for (int i = 0; i < N; ++i)
    r.ds_all[i] = (spec.expert_alpha * f[i] + spec.device_alpha * f_dev[i / per_group] +
                   spec.comm_alpha * f_comm[i / per_group]) / Tt;

  // Sequence-wise: the same sum per sequence (this rank holds whole sequences), averaged.
  if (spec.seq_alpha > 0) {
    const int T_ = spec.seq_len, n_seq = tokens / T_;
    DSMOE_ASSERT(tokens % T_ == 0);
    const double seqs_global = Tt / T_;
    r.ds_seq.assign((size_t)n_seq * N, 0.0);
    double seq_sum = 0;
    for (int b = 0; b < n_seq; ++b) {
      std::vector<double> cnt(N, 0.0), ps(N, 0.0);
      for (int t = b * T_; t < (b + 1) * T_; ++t) {
        for (int k = 0; k < K; ++k) cnt[r.sel[(size_t)t * K + k]] += 1;
        for (int i = 0; i < N; ++i) ps[i] += r.scores[(size_t)t * N + i];
      }
      for (int i = 0; i < N; ++i) {
        double fb = N / (double(K) * T_) * cnt[i];
        seq_sum += fb * ps[i] / T_;
        r.ds_seq[(size_t)b * N + i] = spec.seq_alpha * fb / (T_ * seqs_global);
      }
    }
    comm.allreduce_sum(&seq_sum, 1);
    r.loss_seq = seq_sum / seqs_global;
  }
  r.aux_loss = spec.expert_alpha * r.loss_exp + spec.device_alpha * r.loss_dev + spec.seq_alpha * r.loss_seq +
               spec.comm_alpha * r.loss_comm;
}

template <typename T>
std::vector<T> route_backward(const RouterSpec& spec, const Routing<T>& r, const std::vector<T>& dgate,
                              double loss_scale, std::vector<T>* dnoise_pre) {
  const int N = spec.n_experts, K = spec.top_k;
  std::vector<T> dlogits((size_t)r.tokens * N, T(0));
#pragma omp parallel for schedule(static)
  for (int t = 0; t < r.tokens; ++t) {
    std::vector<double> ds(N);
    const T* s = &r.scores[(size_t)t * N];
    const int32_t* sel = &r.sel[(size_t)t * K];
    const T* dg = &dgate[(size_t)t * K];
    T* dl = &dlogits[(size_t)t * N];
    for (int i = 0; i < N; ++i) ds[i] = loss_scale * r.ds_all[i];
    if (!r.ds_seq.empty())
      for (int i = 0; i < N; ++i) ds[i] += loss_scale * r.ds_seq[(size_t)(t / spec.seq_len) * N + i];

    // Gates are differentiated as computed before dropping (a dropped pair has dg = 0, and the
    // kept gates are not renormalized), so the undropped gates are recomputed here.
    if (spec.score == ScoreKind::softmax_topk) {
      double sum = 0, mx = r.logits[(size_t)t * N + sel[0]];
      for (int k = 1; k < K; ++k) mx = std::max<double>(mx, r.logits[(size_t)t * N + sel[k]]);
      std::vector<double> full(K);
      for (int k = 0; k < K; ++k) sum += full[k] = std::exp(r.logits[(size_t)t * N + sel[k]] - mx);
      double fdg = 0;
      for (int k = 0; k < K; ++k) fdg += full[k] / sum * dg[k];
      for (int k = 0; k < K; ++k) dl[sel[k]] += static_cast<T>(full[k] / sum * (dg[k] - fdg));
    } else if (spec.score == ScoreKind::sigmoid || spec.norm_topk) {
      double S = 0, ugdg = 0;  // undropped normalized gates
      for (int k = 0; k < K; ++k) S += s[sel[k]];
      for (int k = 0; k < K; ++k) ugdg += s[sel[k]] / S * dg[k];
      for (int k = 0; k < K; ++k) ds[sel[k]] += (dg[k] - ugdg) / S;
    } else {
      for (int k = 0; k < K; ++k) ds[sel[k]] += dg[k];
    }
    if (spec.score == ScoreKind::sigmoid) {
      for (int i = 0; i < N; ++i) dl[i] += static_cast<T>(ds[i] * s[i] * (1.0 - s[i]));
    } else {
      double sds = 0;
      for (int i = 0; i < N; ++i) sds += s[i] * ds[i];
      for (int i = 0; i < N; ++i) dl[i] += static_cast<T>(s[i] * (ds[i] - sds));
    }
  }
  if (dnoise_pre && !r.noise_pre.empty()) {
    dnoise_pre->resize(dlogits.size());
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < dlogits.size(); ++p)
      (*dnoise_pre)[p] = static_cast<T>(dlogits[p] * r.noise_eps[p] * sigmoid(r.noise_pre[p]));
  }
  return dlogits;
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

}  // namespace dsmoe
