#include "sim/token_model.h"

#include <algorithm>
#include <cmath>

#include "moe/placement.h"
#include "util/check.h"

namespace dsmoe::sim {
namespace {

// Elementary symmetric polynomials e_0..e_K of w[first, last).
std::vector<double> esp(const std::vector<double>& w, size_t first, size_t last, int K) {
  std::vector<double> e(K + 1, 0.0);
  e[0] = 1;
  for (size_t i = first; i < last; ++i)
    for (int k = K; k >= 1; --k) e[k] += w[i] * e[k - 1];
  return e;
}

// P(i in S) without a device limit, for every i: w_i e_{K-1}(w without i) / e_K(w), with
// prefix and suffix polynomials (O(N K^2)).
std::vector<double> inclusion(const std::vector<double>& w, int K) {
  const size_t N = w.size();
  std::vector<std::vector<double>> pre(N + 1, std::vector<double>(K + 1, 0.0)), suf = pre;
  pre[0][0] = 1;
  for (size_t i = 0; i < N; ++i) {
    pre[i + 1] = pre[i];
    for (int k = 1; k <= K; ++k) pre[i + 1][k] += w[i] * pre[i][k - 1];
  }
  suf[N][0] = 1;
  for (size_t i = N; i-- > 0;) {
    suf[i] = suf[i + 1];
    for (int k = 1; k <= K; ++k) suf[i][k] += w[i] * suf[i + 1][k - 1];
  }
  const double total = pre[N][K];
  std::vector<double> pi(N);
  for (size_t i = 0; i < N; ++i) {
    double without = 0;  // e_{K-1} of the others
    for (int j = 0; j <= K - 1; ++j) without += pre[i][j] * suf[i + 1][K - 1 - j];
    pi[i] = w[i] * without / total;
  }
  return pi;
}

}  // namespace

std::vector<double> target_marginals(const std::vector<double>& q, int K, double cap) {
  const size_t N = q.size();
  DSMOE_CHECK(K >= 1 && static_cast<size_t>(K) < N, "top_k ", K, " must be in [1, n_routed ", N, ")");
  double total = 0;
  for (double x : q) {
    DSMOE_CHECK(x >= 0 && std::isfinite(x), "expert load shares must be finite and non-negative");
    total += x;
  }
  DSMOE_CHECK(total > 0, "expert loads are all zero");
  size_t positive = 0;
  for (double x : q) positive += x > 0;
  DSMOE_CHECK(positive >= static_cast<size_t>(K), "only ", positive, " experts have load; top_k is ", K);
  // Water-filling: experts above the cap take the cap, the rest share what is left in proportion.
  std::vector<double> t(N);
  std::vector<bool> capped(N, false);
  for (;;) {
    double free_mass = 0, left = K;
    for (size_t i = 0; i < N; ++i) {
      if (capped[i]) left -= cap;
      else free_mass += q[i];
    }
    bool changed = false;
    for (size_t i = 0; i < N; ++i) {
      t[i] = capped[i] ? cap : q[i] * left / free_mass;
      if (!capped[i] && t[i] > cap) capped[i] = changed = true;
    }
    if (!changed) return t;
  }
}

std::vector<double> fit_weights(const std::vector<double>& q, int K) {
  const std::vector<double> t = target_marginals(q, K);
  std::vector<double> w(t);
  for (int it = 0; it < 2000; ++it) {
    const std::vector<double> pi = inclusion(w, K);
    double worst = 0, mean = 0;
    int n = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (t[i] <= 0) continue;
      worst = std::max(worst, std::fabs(pi[i] - t[i]) / t[i]);
      w[i] *= t[i] / pi[i];
    }
    for (double x : w)
      if (x > 0) mean += x, ++n;
    for (double& x : w) x /= mean / n;
    if (worst < 1e-10) break;
  }
  return w;
}

double set_weight_sum(const std::vector<double>& w, int K, int groups, int max_groups) {
  if (max_groups <= 0 || max_groups >= groups) return esp(w, 0, w.size(), K)[K];
  const size_t per = w.size() / groups;
  // s[m][k]: weight of the k-sets of the groups so far that use m of them.
  std::vector<std::vector<double>> s(max_groups + 1, std::vector<double>(K + 1, 0.0));
  s[0][0] = 1;
  for (int g = 0; g < groups; ++g) {
    const std::vector<double> e = esp(w, g * per, (g + 1) * per, K);
    auto next = s;  // not using group g
    for (int m = 1; m <= max_groups; ++m)
      for (int k = 1; k <= K; ++k) {
        double add = 0;
        for (int j = 1; j <= k; ++j) add += s[m - 1][k - j] * e[j];
        next[m][k] += add;
      }
    s = std::move(next);
  }
  double total = 0;
  for (int m = 0; m <= max_groups; ++m) total += s[m][K];
  return total;
}

TokenModel token_model(const std::vector<double>& q, int K, int E, int D, int M, int positions_per_node) {
  const int N = static_cast<int>(q.size());
  DSMOE_CHECK(E >= 1 && N % E == 0, "n_routed ", N, " is not divisible by the expert-parallel size ", E);
  DSMOE_CHECK(D >= 1 && N % D == 0, "n_routed ", N, " is not divisible by the device groups ", D);
  const std::vector<double> w = fit_weights(q, K);
  const bool limited = M > 0 && M < D;
  DSMOE_CHECK(!limited || (int64_t)M * (N / D) >= K, "route_devices ", M, " groups of ", N / D,
              " experts cannot hold top_k ", K);
  TokenModel tm;
  const double total = set_weight_sum(w, K, D, M);
  if (limited) {
    tm.pi.resize(N);
    for (int i = 0; i < N; ++i) {
      std::vector<double> without = w;
      without[i] = 0;
      tm.pi[i] = 1 - set_weight_sum(without, K, D, M) / total;
    }
  } else {
    tm.pi = inclusion(w, K);
  }
  const ExpertPlacement placement{N, E, 0};
  tm.pairs.assign(E, 0.0);
  tm.reach.assign(E, 0.0);
  for (int i = 0; i < N; ++i) tm.pairs[placement.owner(i)] += tm.pi[i];
  for (int j = 0; j < E; ++j) {
    if (E == 1) {
      tm.reach[j] = 1;
      break;
    }
    std::vector<double> without = w;
    const ExpertPlacement at{N, E, j};
    std::fill(without.begin() + at.first(), without.begin() + at.first() + at.per_rank(), 0.0);
    tm.reach[j] = 1 - set_weight_sum(without, K, D, M) / total;
  }
  if (positions_per_node > 0) {
    DSMOE_CHECK(E % positions_per_node == 0, "internal: ", E, " positions in nodes of ", positions_per_node);
    const int per_node = N / E * positions_per_node;
    for (int k = 0; k < E / positions_per_node; ++k) {
      std::vector<double> without = w;
      std::fill(without.begin() + k * per_node, without.begin() + (k + 1) * per_node, 0.0);
      tm.reach_node.push_back(E / positions_per_node == 1 ? 1.0 : 1 - set_weight_sum(without, K, D, M) / total);
    }
  }
  return tm;
}

}  // namespace dsmoe::sim
