// The router's per-token part (docs/model.md, MoE FFN): one token's scores, its top-K experts and
// their gates. Plain code that both backends compile: the CPU backend runs it on threads, the
// CUDA backend (kernels/router.cu) one token per GPU thread, so both choose alike.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#ifdef __CUDACC__
#define DSMOE_HOST_DEVICE __host__ __device__
#else
#define DSMOE_HOST_DEVICE
#endif

namespace dsmoe {

enum class ScoreKind { softmax, softmax_topk, sigmoid };

// exp in the argument's precision (expf for float) on either side.
template <typename T>
DSMOE_HOST_DEVICE inline T exp_of(T x) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same<T, float>::value) return expf(x);
  else return exp(x);
#else
  return std::exp(x);
#endif
}

// What a token's routing depends on (RouterSpec's per-token fields).
struct RouteRowSpec {
  int n_experts = 0;      // N
  int top_k = 0;          // K
  ScoreKind score = ScoreKind::softmax;
  bool norm_topk = false;
  int device_groups = 1;  // D
  int route_devices = 0;  // M for device-limited routing (at most 64 groups), 0 = off
  // Benchmarks only (moe.force_balance): token t's experts are (t K + k) mod N, k < K, whatever
  // the keys, so every expert gets the same rows; the scores and gates are computed as usual.
  bool force_balance = false;
};

// logit [N] (noisy in training with noise), bias [N] (selection only) -> s [N] the scores (the
// full softmax for softmax_topk too: P_i uses it), sel [K] the experts, best first (key = score,
// or logit for softmax_topk, plus bias; ties to the lower index; with route_devices, only among
// the M groups whose best key is highest), g [K] their gates. token: the row's index among the
// rows routed together (force_balance's round robin).
template <typename T>
DSMOE_HOST_DEVICE void route_row(const RouteRowSpec& spec, const T* logit, const float* bias, T* s, int32_t* sel,
                                 T* g, int64_t token) {
  const int n = spec.n_experts, K = spec.top_k;
  if (spec.score == ScoreKind::sigmoid) {
    for (int i = 0; i < n; ++i) s[i] = static_cast<T>(1.0 / (1.0 + exp_of(-static_cast<double>(logit[i]))));
  } else {
    // The exponentials in T (expf for float: a third of double exp's cost, and the router's
    // largest; s holds them exactly), their sum and the quotients in double.
    T mx = logit[0];
    for (int i = 1; i < n; ++i) mx = logit[i] > mx ? logit[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      s[i] = exp_of(static_cast<T>(logit[i] - mx));
      sum += s[i];
    }
    for (int i = 0; i < n; ++i) s[i] = static_cast<T>(s[i] / sum);
  }
  const T* base = spec.score == ScoreKind::softmax_topk ? logit : s;
  auto key = [&](int i) { return base[i] + static_cast<T>(bias[i]); };

  // Device-limited routing: M rounds of picking the group with the best key, ties to the lower.
  const int per_group = n / spec.device_groups;
  uint64_t groups_on = ~uint64_t(0);
  if (spec.route_devices > 0) {
    groups_on = 0;
    for (int m = 0; m < spec.route_devices; ++m) {
      int best_group = -1;
      T best = 0;
      for (int i = 0; i < n; ++i) {
        const int grp = i / per_group;
        if ((groups_on >> grp) & 1) continue;
        if (best_group < 0 || key(i) > best) best = key(i), best_group = grp;
      }
      groups_on |= uint64_t(1) << best_group;
    }
  }
  // Top-K in the order K rounds of argmax would give, in one pass keeping the K best sorted.
  int kept = spec.force_balance ? K : 0;
  for (int k = 0; k < kept; ++k) sel[k] = static_cast<int32_t>((token * K + k) % n);
  for (int i = 0; i < n && !spec.force_balance; ++i) {
    if (spec.route_devices > 0 && !((groups_on >> (i / per_group)) & 1)) continue;
    const T ki = key(i);
    if (kept == K && !(ki > key(sel[K - 1]))) continue;
    int at = kept < K ? kept++ : K - 1;
    for (; at > 0 && ki > key(sel[at - 1]); --at) sel[at] = sel[at - 1];
    sel[at] = i;
  }

  if (spec.score == ScoreKind::softmax_topk) {  // softmax over the selected logits, in double
    T mx = logit[sel[0]];
    for (int k = 1; k < K; ++k) mx = logit[sel[k]] > mx ? logit[sel[k]] : mx;
    double sum = 0;
    for (int k = 0; k < K; ++k) sum += exp_of(static_cast<double>(logit[sel[k]] - mx));
    for (int k = 0; k < K; ++k) g[k] = static_cast<T>(exp_of(static_cast<double>(logit[sel[k]] - mx)) / sum);
    return;
  }
  const bool normalize = spec.score == ScoreKind::sigmoid || spec.norm_topk;
  double sum = 0;
  for (int k = 0; k < K; ++k) sum += s[sel[k]];
  for (int k = 0; k < K; ++k) g[k] = normalize ? static_cast<T>(s[sel[k]] / sum) : s[sel[k]];
}

#ifndef __CUDACC__
// route_row over `rows` tokens on host threads: logits [rows, N] -> scores [rows, N], sel and
// gate [rows, K].
template <typename T>
void route_rows(const RouteRowSpec& spec, const T* logits, const float* bias, T* scores, int32_t* sel, T* gate,
                int rows) {
  const int64_t N = spec.n_experts, K = spec.top_k;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < rows; ++t)
    route_row(spec, logits + t * N, bias, scores + t * N, sel + t * K, gate + t * K, t);
}
#endif

}  // namespace dsmoe
