// Which experts one token selects, as a probability model (docs/simulation.md "Tokens").
//
// A token's K experts are a conditional-Poisson sample: P(S) is proportional to the product of
// w_i over i in S, over the sets S of exactly K experts (and, with device-limited routing, only
// the sets whose experts lie in at most M of the D device groups). The weights w are fitted so
// that, without the device limit, P(i in S) = K * q_i for the given shares q of the selections
// (q sums to 1). Uniform weights give the uniformly random K-subset. From this model the
// traffic needs two numbers per expert-parallel position: the expected experts of a token
// there (pairs) and the probability that a token has at least one there (it then sends its
// activation there once: a unit).
#pragma once
#include <vector>

namespace dsmoe::sim {

struct TokenModel {
  std::vector<double> pi;     // [N] P(expert i is among a token's experts); sums to K
  std::vector<double> pairs;  // [E] expected experts of a token on EP position j (sum of pi)
  std::vector<double> reach;  // [E] P(a token has at least one expert on EP position j)
  // [E / positions_per_node] P(a token has at least one expert on node block k of the group);
  // empty unless asked for.
  std::vector<double> reach_node;
};

// Selection shares capped so that no expert is in more than `cap` of the tokens (K * q_i <=
// cap) and renormalized to K: the marginals the model is fitted to.
std::vector<double> target_marginals(const std::vector<double>& q, int K, double cap = 0.999);

// Fitted weights w (mean 1 over experts with q > 0) with P(i in S) = target_marginals(q, K).
std::vector<double> fit_weights(const std::vector<double>& q, int K);

// Sum over admissible K-sets of prod w_i. groups: D contiguous device groups (D divides N);
// max_groups: M (0 or >= D: no device limit).
double set_weight_sum(const std::vector<double>& w, int K, int groups, int max_groups);

// The model for shares q, top-K, E expert-parallel positions (contiguous blocks of N/E experts,
// src/moe/placement.h), D device groups and route_devices M (0: none). positions_per_node > 0
// also fills reach_node for blocks of that many consecutive positions (one node each).
TokenModel token_model(const std::vector<double>& q, int K, int E, int D, int M, int positions_per_node = 0);

}  // namespace dsmoe::sim
