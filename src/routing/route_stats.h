// The router's balance statistics and its backward (docs/model.md, Balance losses), as plain code
// that both backends compile: the CPU backend runs it on threads, the CUDA backend
// (kernels/router.cu) on the GPU, so that routing never has to visit the host. Stage 1 below
// (chunk_statistic) is the host's; the GPU computes the same columns with a block per chunk.
//
// The statistics go in three stages, each in a fixed order (no atomics), so that the result does
// not depend on the thread count:
//  1. per chunk of `chunk` tokens, W = 2N + D columns (chunk_statistic): [0, N) selections of
//     each expert, [N, N + D) tokens reaching each device group, [N + D, 2N + D) score sums;
//  2. totals [W + 1]: the columns summed over chunks in chunk order, and the sequence-wise loss'
//     sum (the chunks are the sequences when that loss is on) — all of them sums over this rank's
//     tokens, which the ranks then add up (a global micro-batch);
//  3. from the global totals, the balance terms' gradient per expert and the losses (balance).
// The backward (route_row_backward) reads the balance array, and the chunks' selection counts
// for the sequence-wise term.
#pragma once
#include <cstdint>

#include "routing/route_row.h"

namespace dsmoe {

struct RouteStatsSpec {
  RouteRowSpec row;
  double expert_alpha = 0, device_alpha = 0, seq_alpha = 0, comm_alpha = 0;
  int seq_len = 0;            // T
  int chunk = 256;            // tokens per chunk of stage 1: T with the sequence-wise loss
  double tokens_global = 0;   // Tt, the global micro-batch's tokens
  DSMOE_HOST_DEVICE int columns() const { return 2 * row.n_experts + row.device_groups; }
  DSMOE_HOST_DEVICE int chunks(int tokens) const { return (tokens + chunk - 1) / chunk; }
};

// The balance array [N + kBalanceLosses]: dL_aux/ds_i for every token (without the loss scale
// and the sequence-wise term), then the losses.
enum BalanceEntry { kLossExp, kLossDev, kLossSeq, kLossComm, kAuxLoss, kBalanceLosses };

// Column j of chunk c's statistics, of `tokens` tokens.
template <typename T>
double chunk_statistic(const RouteStatsSpec& spec, const T* scores, const int32_t* sel, int tokens, int c, int j) {
  const int N = spec.row.n_experts, K = spec.row.top_k, D = spec.row.device_groups, per_group = N / D;
  const int t0 = c * spec.chunk, t1 = t0 + spec.chunk < tokens ? t0 + spec.chunk : tokens;
  double acc = 0;
  if (j < N) {
    for (int64_t p = (int64_t)t0 * K; p < (int64_t)t1 * K; ++p) acc += sel[p] == j;
  } else if (j < N + D) {
    const int group = j - N;
    for (int t = t0; t < t1; ++t) {
      bool hit = false;
      for (int k = 0; k < K; ++k) hit |= sel[(int64_t)t * K + k] / per_group == group;
      acc += hit;
    }
  } else {
    const int i = j - N - D;
    for (int t = t0; t < t1; ++t) acc += scores[(int64_t)t * N + i];
  }
  return acc;
}

// Entry j of the totals from the chunks' statistics [chunks, W].
DSMOE_HOST_DEVICE inline double chunk_total(const RouteStatsSpec& spec, const double* partial, int chunks, int j) {
  const int N = spec.row.n_experts, K = spec.row.top_k, D = spec.row.device_groups, W = spec.columns();
  double acc = 0;
  if (j < W) {
    for (int c = 0; c < chunks; ++c) acc += partial[(int64_t)c * W + j];
    return acc;
  }
  if (spec.seq_alpha <= 0) return 0;
  // The sequence-wise loss' sum over this rank's sequences: f_i P_i per sequence.
  const int T = spec.seq_len;
  for (int b = 0; b < chunks; ++b)
    for (int i = 0; i < N; ++i) {
      const double fb = N / (double(K) * T) * partial[(int64_t)b * W + i];
      acc += fb * partial[(int64_t)b * W + N + D + i] / T;
    }
  return acc;
}

// totals [W + 1] over the global micro-batch -> balance [N + kBalanceLosses].
DSMOE_HOST_DEVICE inline void balance_terms(const RouteStatsSpec& spec, const double* totals, double* balance) {
  const int N = spec.row.n_experts, K = spec.row.top_k, D = spec.row.device_groups, per_group = N / D;
  const int M = spec.row.route_devices > 0 ? spec.row.route_devices : (K < D ? K : D);
  const double Tt = spec.tokens_global;
  double* losses = balance + N;
  for (int e = 0; e < kBalanceLosses; ++e) losses[e] = 0;
  for (int i = 0; i < N; ++i) losses[kLossExp] += (N / (K * Tt) * totals[i]) * (totals[N + D + i] / Tt);
  for (int d = 0; d < D; ++d) {
    double f_dev = 0, p_dev = 0;
    for (int i = d * per_group; i < (d + 1) * per_group; ++i) {
      f_dev += N / (K * Tt) * totals[i] / per_group;
      p_dev += totals[N + D + i] / Tt;
    }
    const double f_comm = D / (M * Tt) * totals[N + d];
    losses[kLossDev] += f_dev * p_dev;
    losses[kLossComm] += f_comm * p_dev;
    for (int i = d * per_group; i < (d + 1) * per_group; ++i)
      balance[i] = (spec.expert_alpha * (N / (K * Tt) * totals[i]) + spec.device_alpha * f_dev +
                    spec.comm_alpha * f_comm) / Tt;
  }
  if (spec.seq_alpha > 0) losses[kLossSeq] = totals[spec.columns()] / (Tt / spec.seq_len);
  losses[kAuxLoss] = spec.expert_alpha * losses[kLossExp] + spec.device_alpha * losses[kLossDev] +
                     spec.seq_alpha * losses[kLossSeq] + spec.comm_alpha * losses[kLossComm];
}

// Token t's sequence's selections per expert [N] (the chunks are the sequences), or null without
// the sequence-wise loss.
DSMOE_HOST_DEVICE inline const double* sequence_counts(const RouteStatsSpec& spec, const double* partial, int t) {
  return spec.seq_alpha > 0 ? partial + (int64_t)(t / spec.chunk) * spec.columns() : nullptr;
}

// One token's dL/dlogit [N] from dL/dg [K] (0 for dropped pairs) and the balance terms: s [N]
// its scores, sel [K], logit [N] (read by softmax_topk only), seq_counts [N] its sequence's
// selections per expert (chunk statistics; read with the sequence-wise loss only). The loss scale
// multiplies the balance terms. Gates are differentiated as computed before dropping (a dropped
// pair has dg = 0, and kept gates are not renormalized).
template <typename T>
DSMOE_HOST_DEVICE void route_row_backward(const RouteStatsSpec& spec, const T* s, const int32_t* sel, const T* logit,
                                          const T* dg, const double* balance, const double* seq_counts,
                                          double loss_scale, T* dl) {
  const RouteRowSpec& row = spec.row;
  const int N = row.n_experts, K = row.top_k;
  const bool topk_softmax = row.score == ScoreKind::softmax_topk;
  const bool normalized = row.score == ScoreKind::sigmoid || row.norm_topk;
  // softmax_topk: the softmax over the selected logits; normalized gates: their sum.
  double mx = 0, sum = 0, fdg = 0;
  if (topk_softmax) {
    mx = logit[sel[0]];
    for (int k = 1; k < K; ++k) mx = mx > logit[sel[k]] ? mx : static_cast<double>(logit[sel[k]]);
    for (int k = 0; k < K; ++k) sum += exp_of(static_cast<double>(logit[sel[k]]) - mx);
    for (int k = 0; k < K; ++k) fdg += exp_of(static_cast<double>(logit[sel[k]]) - mx) / sum * dg[k];
  } else if (normalized) {
    for (int k = 0; k < K; ++k) sum += s[sel[k]];
    for (int k = 0; k < K; ++k) fdg += s[sel[k]] / sum * dg[k];
  }
  const int len = spec.seq_len;
  // dL/ds_i: the balance terms, plus the gates' where i is selected.
  auto ds_at = [&](int i) {
    double v = loss_scale * balance[i];
    if (seq_counts)
      v += loss_scale * (spec.seq_alpha * (N / (double(K) * len) * seq_counts[i]) / (len * (spec.tokens_global / len)));
    if (topk_softmax) return v;
    for (int k = 0; k < K; ++k)
      if (sel[k] == i) v += normalized ? (dg[k] - fdg) / sum : static_cast<double>(dg[k]);
    return v;
  };
  // softmax_topk's gates depend on the selected logits directly.
  auto direct = [&](int i) {
    T v = 0;
    if (topk_softmax)
      for (int k = 0; k < K; ++k)
        if (sel[k] == i) v = static_cast<T>(exp_of(static_cast<double>(logit[i]) - mx) / sum * (dg[k] - fdg));
    return v;
  };
  if (row.score == ScoreKind::sigmoid) {
    for (int i = 0; i < N; ++i) dl[i] = direct(i) + static_cast<T>(ds_at(i) * s[i] * (1.0 - s[i]));
    return;
  }
  double sds = 0;
  for (int i = 0; i < N; ++i) sds += s[i] * ds_at(i);
  for (int i = 0; i < N; ++i) dl[i] = direct(i) + static_cast<T>(s[i] * (ds_at(i) - sds));
}

#ifndef __CUDACC__
// The same on host threads: partial [chunks, W] and totals [W + 1] of `tokens` tokens.
template <typename T>
void route_partials_on_host(const RouteStatsSpec& spec, const T* scores, const int32_t* sel, int tokens,
                            double* partial, double* totals) {
  const int W = spec.columns(), chunks = spec.chunks(tokens);
#pragma omp parallel for schedule(static)
  for (int64_t cj = 0; cj < (int64_t)chunks * W; ++cj)
    partial[cj] = chunk_statistic(spec, scores, sel, tokens, static_cast<int>(cj / W), static_cast<int>(cj % W));
  for (int j = 0; j <= W; ++j) totals[j] = chunk_total(spec, partial, chunks, j);
}

// dlogits [tokens, N] from dgate [tokens, K] on host threads.
template <typename T>
void route_backward_on_host(const RouteStatsSpec& spec, const T* scores, const int32_t* sel, const T* logits,
                            const T* dgate, const double* balance, const double* partial, double loss_scale,
                            int tokens, T* dlogits) {
  const int64_t N = spec.row.n_experts, K = spec.row.top_k;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tokens; ++t)
    route_row_backward(spec, scores + t * N, sel + t * K, logits + t * N, dgate + t * K, balance,
                       sequence_counts(spec, partial, t), loss_scale, dlogits + t * N);
}
#endif

}  // namespace dsmoe
