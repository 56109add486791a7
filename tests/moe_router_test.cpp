// route() on small hand-computed examples (docs/model.md, MoE FFN and Balance losses), and
// route_backward() against central finite differences in double.
//
// Most examples give logits as log(a_i): softmax(log a) = a / sum(a), so the scores are simple
// fractions and every expected number below is written out from them by hand.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "comm/comm.h"
#include "moe/router_math.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using Vec = std::vector<double>;
using Sel = std::vector<int32_t>;

// log of each entry, row by row: a token's softmax scores are its row divided by the row sum.
Vec logs(const std::vector<Vec>& rows) {
  Vec out;
  for (const auto& r : rows)
    for (double a : r) out.push_back(std::log(a));
  return out;
}

RouterSpec make_spec(int n, int k, ScoreKind kind = ScoreKind::softmax) {
  RouterSpec s;
  s.n_experts = n;
  s.top_k = k;
  s.score = kind;
  return s;
}

class Router : public ::testing::Test {
 protected:
  std::unique_ptr<Comm> comm = make_single_comm();

  // Routes all tokens of a one-rank micro-batch (Tt = tokens).
  Routing<double> run(const RouterSpec& spec, const Vec& logits, std::vector<float> bias = {},
                      bool training = false, uint64_t noise_key = 0, Vec noise_pre = {}) {
    if (bias.empty()) bias.assign(spec.n_experts, 0.0f);
    RouteContext ctx;
    ctx.tokens_global = static_cast<int64_t>(logits.size()) / spec.n_experts;
    ctx.training = training;
    ctx.noise_key = noise_key;
    return route<double>(spec, ctx, logits, std::move(noise_pre), bias, *comm);
  }
};

void expect_vec_near(const Vec& got, const Vec& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << what << " [" << i << "]";
}

// ---------------------------------------------------------------- scores, selection, gates

TEST_F(Router, SoftmaxTop2GatesAreScores) {
  auto spec = make_spec(4, 2);
  auto r = run(spec, logs({{1, 2, 4, 1}}));  // scores [1, 2, 4, 1] / 8
  EXPECT_EQ(r.tokens, 1);
  expect_vec_near(r.scores, {0.125, 0.25, 0.5, 0.125}, 1e-15, "scores");
  EXPECT_EQ(r.sel, (Sel{2, 1}));  // best first
  expect_vec_near(r.gate, {0.5, 0.25}, 1e-15, "gates");
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1}));
  EXPECT_EQ(r.load, (Vec{0, 1, 1, 0}));
  EXPECT_EQ(r.dropped, 0);
  EXPECT_TRUE(r.noise_eps.empty());
}

TEST_F(Router, TiesGoToTheLowerExpertIndex) {
  auto spec = make_spec(4, 2);
  auto r = run(spec, {0.3, 0.3, 0.3, 0.3,    // all equal
                      1.0, 2.0, 2.0, 0.0,    // tie for first place
                      2.0, 1.0, 2.0, 1.0,    // tie for first, then for third
                      0.0, 1.0, 0.5, 1.0});  // tie for first between 1 and 3
  EXPECT_EQ(r.sel, (Sel{0, 1, 1, 2, 0, 2, 1, 3}));
  for (int k = 0; k < 2; ++k) EXPECT_NEAR(r.gate[k], 0.25, 1e-15);

  auto spec1 = make_spec(4, 1, ScoreKind::softmax_topk);
  auto r1 = run(spec1, {5.0, 5.0, 5.0, 5.0, 0.0, 7.0, 1.0, 7.0});
  EXPECT_EQ(r1.sel, (Sel{0, 1}));
  expect_vec_near(r1.gate, {1.0, 1.0}, 1e-15, "softmax over one selected logit");

  auto spec2 = make_spec(4, 2, ScoreKind::sigmoid);
  auto r2 = run(spec2, {-1.0, 0.5, 0.5, 0.5});
  EXPECT_EQ(r2.sel, (Sel{1, 2}));
  expect_vec_near(r2.gate, {0.5, 0.5}, 1e-15, "sigmoid ties");
}

TEST_F(Router, BiasChangesSelectionButNotGates) {
  auto spec = make_spec(4, 2);
  // keys = scores + bias = [0.125, 0.25, 0.5, 0.125 + 0.5]: expert 3 first, then 2.
  auto r = run(spec, logs({{1, 2, 4, 1}}), {0.0f, 0.0f, 0.0f, 0.5f});
  EXPECT_EQ(r.sel, (Sel{3, 2}));
  expect_vec_near(r.gate, {0.125, 0.5}, 1e-15, "gates are the unbiased scores");
  expect_vec_near(r.scores, {0.125, 0.25, 0.5, 0.125}, 1e-15, "scores");
  EXPECT_EQ(r.load, (Vec{0, 0, 1, 1}));

  // Sigmoid: scores [1/2, 3/4, 1/4, 9/10]; bias +1 on expert 2 gives keys [.5, .75, 1.25, .9]:
  // selection {2, 3}, gates normalized over the unbiased scores: [1/4, 9/10] / (23/20).
  auto sg = make_spec(4, 2, ScoreKind::sigmoid);
  auto r2 = run(sg, {0.0, std::log(3.0), -std::log(3.0), std::log(9.0)}, {0.0f, 0.0f, 1.0f, 0.0f});
  EXPECT_EQ(r2.sel, (Sel{2, 3}));
  expect_vec_near(r2.gate, {0.25 / 1.15, 0.9 / 1.15}, 1e-15, "sigmoid gates with bias");

  // softmax_topk selects on logits + bias: logits [1, 3, 0, 2], bias +3.5 on expert 2 -> {2, 1};
  // gates = softmax([0, 3]) = [1, e^3] / (1 + e^3).
  auto st = make_spec(4, 2, ScoreKind::softmax_topk);
  auto r3 = run(st, {1.0, 3.0, 0.0, 2.0}, {0.0f, 0.0f, 3.5f, 0.0f});
  EXPECT_EQ(r3.sel, (Sel{2, 1}));
  const double e3 = std::exp(3.0);
  expect_vec_near(r3.gate, {1.0 / (1.0 + e3), e3 / (1.0 + e3)}, 1e-15, "softmax_topk gates with bias");
}

TEST_F(Router, SoftmaxTopkGatesAreSoftmaxOverSelectedLogits) {
  auto spec = make_spec(4, 2, ScoreKind::softmax_topk);
  auto r = run(spec, {1.0, 3.0, 0.0, 2.0});
  EXPECT_EQ(r.sel, (Sel{1, 3}));
  // softmax([3, 2]) = [e, 1] / (e + 1).
  const double e = std::exp(1.0);
  expect_vec_near(r.gate, {e / (e + 1.0), 1.0 / (e + 1.0)}, 1e-15, "gates");
  // The scores (used by P_i) are the softmax over all four logits.
  const double S = std::exp(1.0) + std::exp(3.0) + 1.0 + std::exp(2.0);
  expect_vec_near(r.scores, {std::exp(1.0) / S, std::exp(3.0) / S, 1.0 / S, std::exp(2.0) / S}, 1e-15, "scores");
}

TEST_F(Router, SigmoidGatesAreNormalizedOverTheSelection) {
  auto spec = make_spec(4, 2, ScoreKind::sigmoid);
  // sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(ln 9) = 9/10.
  auto r = run(spec, {0.0, std::log(3.0), -std::log(3.0), std::log(9.0)});
  expect_vec_near(r.scores, {0.5, 0.75, 0.25, 0.9}, 1e-15, "scores");
  EXPECT_EQ(r.sel, (Sel{3, 1}));
  // [0.9, 0.75] / 1.65 = [6/11, 5/11].
  expect_vec_near(r.gate, {6.0 / 11.0, 5.0 / 11.0}, 1e-15, "gates");
}

TEST_F(Router, NormTopkRenormalizesSoftmaxGates) {
  auto spec = make_spec(4, 2);
  spec.norm_topk = true;
  auto r = run(spec, logs({{1, 2, 4, 1}}));
  EXPECT_EQ(r.sel, (Sel{2, 1}));
  // [1/2, 1/4] / (3/4) = [2/3, 1/3].
  expect_vec_near(r.gate, {2.0 / 3.0, 1.0 / 3.0}, 1e-15, "gates");
  expect_vec_near(r.scores, {0.125, 0.25, 0.5, 0.125}, 1e-15, "scores are not renormalized");
}

// moe.force_balance (benchmarks): token t's experts are (t K + k) mod N whatever the logits, and
// the gates are computed as usual from those experts' scores. N = 3, K = 2, three tokens: every
// expert twice.
TEST_F(Router, ForceBalanceIsARoundRobinWithTheUsualGates) {
  auto spec = make_spec(3, 2);
  spec.force_balance = true;
  // Scores [1, 2, 5] / 8 twice, then [6, 1, 1] / 8; experts {0, 1}, {2, 0}, {1, 2}.
  auto r = run(spec, logs({{1, 2, 5}, {1, 2, 5}, {6, 1, 1}}));
  EXPECT_EQ(r.sel, (Sel{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(r.load, (Vec{2, 2, 2}));
  expect_vec_near(r.gate, {0.125, 0.25, 0.625, 0.125, 0.125, 0.125}, 1e-15, "gates are the chosen scores");
  spec.norm_topk = true;
  auto n = run(spec, logs({{1, 2, 5}, {1, 2, 5}, {6, 1, 1}}));
  expect_vec_near(n.gate, {1.0 / 3, 2.0 / 3, 5.0 / 6, 1.0 / 6, 0.5, 0.5}, 1e-15, "renormalized");
}

// ---------------------------------------------------------------- balance statistics

// Four tokens over N = 4 experts, two sequences of two tokens, D = 2 groups {0, 1}, {2, 3}.
// Score numerators (each row sums to 8):
//   t0 [4, 2, 1, 1]   t1 [2, 4, 1, 1]   t2 [4, 1, 2, 1]   t3 [1, 1, 4, 2]
// Column sums 11, 8, 8, 5 (total 32), so P = [11, 8, 8, 5] / 32 for every K.
const std::vector<Vec> kFourTokens = {{4, 2, 1, 1}, {2, 4, 1, 1}, {4, 1, 2, 1}, {1, 1, 4, 2}};

RouterSpec balance_spec(int k) {
  auto s = make_spec(4, k);
  s.device_groups = 2;
  s.seq_len = 2;
  s.expert_alpha = 0.1;
  s.device_alpha = 0.2;
  s.seq_alpha = 0.3;
  s.comm_alpha = 0.4;
  return s;
}

TEST_F(Router, BalanceLossesTopTwo) {
  auto r = run(balance_spec(2), logs(kFourTokens));
  // Selections: t0 {0, 1}, t1 {1, 0}, t2 {0, 2}, t3 {2, 3}.
  EXPECT_EQ(r.sel, (Sel{0, 1, 1, 0, 0, 2, 2, 3}));
  // Counts [3, 2, 2, 1]; f = N / (K Tt) * count = 4/8 * count = [1.5, 1, 1, 0.5].
  EXPECT_EQ(r.load, (Vec{3, 2, 2, 1}));
  // L_exp = (1.5*11 + 1*8 + 1*8 + 0.5*5) / 32 = 35 / 32.
  EXPECT_NEAR(r.loss_exp, 35.0 / 32.0, 1e-15);
  // f' = [(1.5 + 1)/2, (1 + 0.5)/2] = [1.25, 0.75]; P' = [19, 13] / 32.
  // L_dev = (1.25*19 + 0.75*13) / 32 = 33.5 / 32.
  EXPECT_NEAR(r.loss_dev, 33.5 / 32.0, 1e-15);
  // M = min(K, D) = 2. Devices reached: t0 {0}, t1 {0}, t2 {0, 1}, t3 {1} -> [3, 2].
  // f'' = D / (M Tt) * reach = 2/8 * [3, 2] = [0.75, 0.5]; L_comm = (0.75*19 + 0.5*13) / 32 = 20.75 / 32.
  EXPECT_NEAR(r.loss_comm, 20.75 / 32.0, 1e-15);
  // Sequence 0 (t0, t1): counts [2, 2, 0, 0], f = 4/(2*2) * count = [2, 2, 0, 0],
  //   P = ([4,2,1,1] + [2,4,1,1]) / 8 / 2 = [6, 6, 2, 2] / 16; sum f P = 24/16 = 1.5.
  // Sequence 1 (t2, t3): counts [1, 0, 2, 1], f = [1, 0, 2, 1], P = [5, 2, 6, 3] / 16;
  //   sum f P = (5 + 12 + 3) / 16 = 1.25.   Mean: 1.375.
  EXPECT_NEAR(r.loss_seq, 1.375, 1e-15);
  EXPECT_NEAR(r.aux_loss, 0.1 * 35.0 / 32.0 + 0.2 * 33.5 / 32.0 + 0.3 * 1.375 + 0.4 * 20.75 / 32.0, 1e-15);
}

TEST_F(Router, BalanceLossesTopOne) {
  auto r = run(balance_spec(1), logs(kFourTokens));
  EXPECT_EQ(r.sel, (Sel{0, 1, 0, 2}));
  // Counts [2, 1, 1, 0]; f = 4/4 * count = [2, 1, 1, 0]. L_exp = (2*11 + 8 + 8) / 32 = 38/32.
  EXPECT_EQ(r.load, (Vec{2, 1, 1, 0}));
  EXPECT_NEAR(r.loss_exp, 38.0 / 32.0, 1e-15);
  // f' = [1.5, 0.5]; L_dev = (1.5*19 + 0.5*13) / 32 = 35/32.
  EXPECT_NEAR(r.loss_dev, 35.0 / 32.0, 1e-15);
  // M = min(1, 2) = 1; reach [3, 1]; f'' = 2/4 * [3, 1] = [1.5, 0.5]; L_comm = 35/32.
  EXPECT_NEAR(r.loss_comm, 35.0 / 32.0, 1e-15);
  // Sequence 0: counts [1, 1, 0, 0], f = 4/2 * count = [2, 2, 0, 0], P = [6, 6, 2, 2]/16 -> 1.5.
  // Sequence 1: counts [1, 0, 1, 0], f = [2, 0, 2, 0], P = [5, 2, 6, 3]/16 -> 22/16 = 1.375.
  EXPECT_NEAR(r.loss_seq, (1.5 + 1.375) / 2, 1e-15);
  EXPECT_NEAR(r.aux_loss, 0.1 * 38.0 / 32.0 + 0.2 * 35.0 / 32.0 + 0.3 * 1.4375 + 0.4 * 35.0 / 32.0, 1e-15);
}

TEST_F(Router, DeviceLossWithOneOrEveryExpertPerGroup) {
  // D = 1: f' = mean f = 1 and P' = 1, so L_dev = 1 whatever the routing.
  auto s1 = balance_spec(2);
  s1.device_groups = 1;
  s1.seq_alpha = 0;
  auto r1 = run(s1, logs(kFourTokens));
  EXPECT_NEAR(r1.loss_dev, 1.0, 1e-15);
  EXPECT_EQ(r1.loss_seq, 0.0);  // seq_alpha = 0: not computed
  // D = N: one expert per group, L_dev = L_exp.
  auto s4 = balance_spec(2);
  s4.device_groups = 4;
  auto r4 = run(s4, logs(kFourTokens));
  EXPECT_NEAR(r4.loss_dev, 35.0 / 32.0, 1e-15);
  // And the comm loss with D = 4, M = min(2, 4) = 2: every token reaches 2 devices, reach = load,
  // f'' = 4 / (2*4) * [3, 2, 2, 1] = f, so L_comm = L_exp too.
  EXPECT_NEAR(r4.loss_comm, 35.0 / 32.0, 1e-15);
}

TEST_F(Router, SigmoidBalanceUsesUnnormalizedScores) {
  // One token, N = 2, K = 1: scores sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4; f = 2/1 * [1, 0].
  auto s = make_spec(2, 1, ScoreKind::sigmoid);
  s.expert_alpha = 1.0;
  auto r = run(s, {std::log(3.0), -std::log(3.0)});
  EXPECT_NEAR(r.loss_exp, 2.0 * 0.75, 1e-15);
  EXPECT_NEAR(r.aux_loss, 1.5, 1e-15);
  EXPECT_NEAR(r.gate[0], 1.0, 1e-15);
}

// ---------------------------------------------------------------- capacity

TEST_F(Router, CapacityKeepsTheFirstTokensPerExpert) {
  auto spec = make_spec(4, 1);
  spec.capacity_factor = 1.0;  // C = ceil(1.0 * 6 * 1 / 4) = ceil(1.5) = 2
  // Preferred experts in token order: 0, 0, 1, 0, 0, 1.
  const Vec a0 = {4, 1, 2, 1}, a1 = {1, 4, 2, 1};
  auto r = run(spec, logs({a0, a0, a1, a0, a0, a1}));
  EXPECT_EQ(r.sel, (Sel{0, 0, 1, 0, 0, 1}));
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 1, 0, 0, 1}));
  expect_vec_near(r.gate, {0.5, 0.5, 0.5, 0.0, 0.0, 0.5}, 1e-15, "gates");
  EXPECT_EQ(r.dropped, 2);
  EXPECT_EQ(r.load, (Vec{4, 2, 0, 0}));  // selections before dropping
}

TEST_F(Router, CapacityTopTwo) {
  // The four tokens: t0 {0, 1}, t1 {1, 0}, t2 {0, 2}, t3 {2, 3}.
  auto spec = balance_spec(2);
  spec.capacity_factor = 0.5;  // C = ceil(0.5 * 4 * 2 / 4) = 1
  auto r = run(spec, logs(kFourTokens));
  // Expert 0: t0 kept, t1 and t2 dropped; expert 1: t0 kept, t1 dropped; expert 2: t2 kept, t3
  // dropped; expert 3: t3 kept. Token 1 loses both of its experts.
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 0, 0, 0, 1, 0, 1}));
  // Kept gates are the scores, not renormalized: t0 [4, 2]/8, t2 k=1 is expert 2 (2/8), t3 k=1 is
  // expert 3 (2/8).
  expect_vec_near(r.gate, {0.5, 0.25, 0, 0, 0, 0.25, 0, 0.25}, 1e-15, "gates");
  EXPECT_EQ(r.dropped, 4);
  EXPECT_EQ(r.load, (Vec{3, 2, 2, 1}));
  // f counts selections before dropping, so the losses are those without capacity.
  EXPECT_NEAR(r.loss_exp, 35.0 / 32.0, 1e-15);
  EXPECT_NEAR(r.loss_seq, 1.375, 1e-15);

  spec.capacity_factor = 0.6;  // C = ceil(1.2) = 2: only t2's pair for expert 0 is dropped
  auto r2 = run(spec, logs(kFourTokens));
  EXPECT_EQ(r2.kept, (std::vector<uint8_t>{1, 1, 1, 1, 0, 1, 1, 1}));
  EXPECT_EQ(r2.dropped, 1);
  EXPECT_EQ(r2.gate[4], 0.0);
  EXPECT_NEAR(r2.gate[5], 0.25, 1e-15);
}

// ---------------------------------------------------------------- device-limited routing

TEST_F(Router, DeviceLimitedRoutingTakesExpertsFromTheBestGroup) {
  auto spec = make_spec(4, 2);
  spec.device_groups = 2;  // {0, 1}, {2, 3}
  spec.route_devices = 1;
  spec.comm_alpha = 1.0;
  // t0 [3, 1, 2, 2]: best expert 0 -> group 0 -> {0, 1} (unlimited top-2 would be {0, 2}).
  // t1 [1, 2, 4, 1]: best expert 2 -> group 1 -> {2, 3} (unlimited: {2, 1}).
  // t2 [3, 1, 3, 1]: the groups' best experts tie -> group 0 -> {0, 1}.
  auto r = run(spec, logs({{3, 1, 2, 2}, {1, 2, 4, 1}, {3, 1, 3, 1}}));
  EXPECT_EQ(r.sel, (Sel{0, 1, 2, 3, 0, 1}));
  expect_vec_near(r.gate, {3.0 / 8, 1.0 / 8, 4.0 / 8, 1.0 / 8, 3.0 / 8, 1.0 / 8}, 1e-15, "gates");
  // M = route_devices = 1. Reach [2, 1]; f'' = 2 / (1 * 3) * [2, 1] = [4/3, 2/3].
  // P = ([3,1,2,2] + [1,2,4,1] + [3,1,3,1]) / 8 / 3 = [7, 4, 9, 4] / 24; P' = [11, 13] / 24.
  // L_comm = (4/3 * 11 + 2/3 * 13) / 24 = 70 / 72.
  EXPECT_NEAR(r.loss_comm, 70.0 / 72.0, 1e-15);

  // The group choice uses scores + bias: +0.5 on expert 3 makes group 1 best for t0 -> {3, 2}.
  auto rb = run(spec, logs({{3, 1, 2, 2}}), {0.0f, 0.0f, 0.0f, 0.5f});
  EXPECT_EQ(rb.sel, (Sel{3, 2}));
  expect_vec_near(rb.gate, {0.25, 0.25}, 1e-15, "gates with bias");

  // Without the limit the same tokens spread over both groups.
  spec.route_devices = 0;
  auto ru = run(spec, logs({{3, 1, 2, 2}, {1, 2, 4, 1}}));
  EXPECT_EQ(ru.sel, (Sel{0, 2, 2, 1}));
}

TEST_F(Router, DeviceLimitedRoutingWithTwoOfThreeGroups) {
  auto spec = make_spec(6, 3);
  spec.device_groups = 3;  // {0, 1}, {2, 3}, {4, 5}
  spec.route_devices = 2;
  // Numerators [6, 5, 1, 2, 9, 3]: group bests 6, 2, 9 -> groups 2 and 0 -> top-3 of {0, 1, 4, 5}.
  auto r = run(spec, logs({{6, 5, 1, 2, 9, 3}}));
  EXPECT_EQ(r.sel, (Sel{4, 0, 1}));
  expect_vec_near(r.gate, {9.0 / 26, 6.0 / 26, 5.0 / 26}, 1e-15, "gates");
}

// ---------------------------------------------------------------- router noise

TEST_F(Router, NoiseOnlyInTrainingAndKeyedDeterministically) {
  auto spec = make_spec(4, 2);
  spec.noise = 0.5;
  Rng rng(3);
  const int tokens = 5;
  Vec logits(tokens * 4), pre(tokens * 4);
  for (auto& x : logits) x = rng.normal();
  for (auto& x : pre) x = rng.normal();

  auto ev = run(spec, logits, {}, false, 11, pre);
  EXPECT_EQ(ev.logits, logits) << "no noise outside training";
  EXPECT_TRUE(ev.noise_eps.empty());

  auto a = run(spec, logits, {}, true, 11, pre);
  auto b = run(spec, logits, {}, true, 11, pre);
  auto c = run(spec, logits, {}, true, 12, pre);
  EXPECT_EQ(a.logits, b.logits) << "same key, same noise";
  EXPECT_EQ(a.sel, b.sel);
  ASSERT_EQ(a.noise_eps.size(), logits.size());
  for (size_t p = 0; p < logits.size(); ++p) {
    EXPECT_NE(a.logits[p], logits[p]);
    EXPECT_NE(a.logits[p], c.logits[p]) << "another key, other noise";
    // logits += r * eps * softplus(u . noise_i), noise_eps = r * eps.
    EXPECT_NEAR(a.logits[p], logits[p] + a.noise_eps[p] * std::log1p(std::exp(pre[p])), 1e-14);
  }
  // Scores use the noisy logits.
  for (int t = 0; t < tokens; ++t) {
    double S = 0;
    for (int i = 0; i < 4; ++i) S += std::exp(a.logits[t * 4 + i]);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(a.scores[t * 4 + i], std::exp(a.logits[t * 4 + i]) / S, 1e-15);
  }
}

TEST_F(Router, NoiseDependsOnTheGlobalTokenIndex) {
  // A rank holding tokens 3..5 of a 6-token micro-batch (token_offset 3) draws the same noise for
  // them as a single rank holding all six.
  auto spec = make_spec(4, 2);
  spec.noise = 0.5;
  Rng rng(8);
  Vec logits(6 * 4), pre(6 * 4);
  for (auto& x : logits) x = rng.normal();
  for (auto& x : pre) x = rng.normal();
  auto all = run(spec, logits, {}, true, 42, pre);
  RouteContext ctx;
  ctx.tokens_global = 6;
  ctx.token_offset = 3;
  ctx.training = true;
  ctx.noise_key = 42;
  auto part = route<double>(spec, ctx, Vec(logits.begin() + 12, logits.end()), Vec(pre.begin() + 12, pre.end()),
                            std::vector<float>(4, 0.0f), *comm);
  ASSERT_EQ(part.tokens, 3);
  for (int p = 0; p < 12; ++p) EXPECT_EQ(part.noise_eps[p], all.noise_eps[12 + p]) << p;
  for (int p = 0; p < 12; ++p) EXPECT_EQ(part.logits[p], all.logits[12 + p]) << p;
}

TEST_F(Router, NoiseIsStandardNormalTimesRate) {
  auto spec = make_spec(4, 1);
  spec.noise = 0.5;
  const int tokens = 2000;
  Vec logits(tokens * 4, 0.0), pre(tokens * 4, 0.0);
  auto r = run(spec, logits, {}, true, 77, pre);
  double sum = 0, sum2 = 0;
  for (double e : r.noise_eps) {
    sum += e / 0.5;
    sum2 += (e / 0.5) * (e / 0.5);
  }
  const double n = static_cast<double>(r.noise_eps.size());
  // 8000 samples: standard errors 0.011 (mean) and 0.016 (variance).
  EXPECT_NEAR(sum / n, 0.0, 0.06);
  EXPECT_NEAR(sum2 / n, 1.0, 0.08);
}

// ---------------------------------------------------------------- max_violation

// The statistics and the backward go by chunks and tokens in a fixed order (routing/route_stats.h):
// the same bits on one thread as on two, with the chunks of 256 tokens and with sequences.
TEST_F(Router, StatisticsDoNotDependOnTheThreadCount) {
  const int N = 8, K = 2, tokens = 1200;
  RouterSpec spec = make_spec(N, K);
  spec.device_groups = 2;
  spec.expert_alpha = 0.1;
  spec.device_alpha = 0.2;
  spec.comm_alpha = 0.15;
  Rng rng(33);
  Vec logits(tokens * N), dgate(tokens * K);
  for (auto& x : logits) x = rng.normal();
  for (auto& x : dgate) x = rng.normal();
  const int threads = omp_get_max_threads();
  for (double seq_alpha : {0.0, 0.3}) {
    spec.seq_alpha = seq_alpha;
    spec.seq_len = 300;
    auto on = [&](int n) {
      omp_set_num_threads(n);
      Routing<double> r = run(spec, logits);
      return std::make_pair(r, route_backward<double>(spec, r, dgate, 0.5, nullptr));
    };
    const auto [one, dl_one] = on(1);
    const auto [two, dl_two] = on(2);
    EXPECT_EQ(one.partial.size(), (size_t)(seq_alpha > 0 ? 4 : 5) * (2 * N + 2)) << "chunks of " << one.stats.chunk;
    EXPECT_EQ(one.partial, two.partial);
    EXPECT_EQ(one.balance, two.balance);
    EXPECT_EQ(one.load, two.load);
    EXPECT_EQ(dl_one, dl_two);
    EXPECT_EQ(one.loss_seq > 0, seq_alpha > 0);
  }
  omp_set_num_threads(threads);
}

TEST(RouterMaxViolation, HandExamples) {
  EXPECT_DOUBLE_EQ(max_violation({3, 2, 2, 1}), 0.5);  // mean 2, max 3
  EXPECT_DOUBLE_EQ(max_violation({2, 2, 2}), 0.0);
  EXPECT_DOUBLE_EQ(max_violation({5, 0, 0, 0}), 3.0);  // mean 1.25, max 5
  EXPECT_DOUBLE_EQ(max_violation({0, 0, 0}), 0.0);     // no load
}

// ---------------------------------------------------------------- route_backward

struct GradCase {
  const char* name;
  std::function<void(RouterSpec&)> edit;
};
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class RouterGrad : public ::testing::TestWithParam<GradCase> {};

// F = sum_{t,k} c[t,k] g[t,k] + aux_loss as a function of the clean logits (and noise_pre),
// against route_backward with dgate = c (0 on dropped pairs) and loss_scale 1.
TEST_P(RouterGrad, MatchesFiniteDifferences) {
  const int N = 6, K = 2, T = 3, n_seq = 2, tokens = T * n_seq;
  RouterSpec spec = make_spec(N, K);
  spec.device_groups = 3;
  spec.seq_len = T;
  spec.expert_alpha = 0.1;
  spec.device_alpha = 0.2;
  spec.seq_alpha = 0.3;
  spec.comm_alpha = 0.15;
  GetParam().edit(spec);
  auto comm = make_single_comm();

  // Logits with gaps of at least 0.6 within a token, so h = 1e-6 never changes a selection.
  Rng rng(21);
  Vec logits(tokens * N), pre(tokens * N), c(tokens * K);
  for (int t = 0; t < tokens; ++t) {
    std::vector<int> perm(N);
    for (int i = 0; i < N; ++i) perm[i] = i;
    for (int i = N - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
    for (int i = 0; i < N; ++i) logits[t * N + i] = 0.7 * perm[i] - 1.5 + 0.1 * rng.uniform();
  }
  for (auto& x : pre) x = rng.normal();
  for (auto& x : c) x = rng.normal();
  const std::vector<float> bias(N, 0.0f);
  RouteContext ctx;
  ctx.tokens_global = tokens;
  ctx.training = true;
  ctx.noise_key = 5;

  auto base = route<double>(spec, ctx, logits, pre, bias, *comm);
  auto F = [&](const Vec& lg, const Vec& np) {
    auto r = route<double>(spec, ctx, lg, np, bias, *comm);
    EXPECT_EQ(r.sel, base.sel) << "a perturbation changed the selection";
    EXPECT_EQ(r.kept, base.kept);
    double s = r.aux_loss;
    for (int p = 0; p < tokens * K; ++p) s += c[p] * r.gate[p];
    return s;
  };
  Vec dgate(tokens * K);
  for (int p = 0; p < tokens * K; ++p) dgate[p] = base.kept[p] ? c[p] : 0.0;
  Vec dpre;
  Vec dlogits = route_backward<double>(spec, base, dgate, 1.0, &dpre);
  ASSERT_EQ(dlogits.size(), logits.size());

  // Central differences in double: truncation O(h^2) ~ 1e-12, rounding ~1e-16/h ~ 1e-10.
  const double h = 1e-6;
  for (int which = 0; which < (spec.noise > 0 ? 2 : 1); ++which) {
    Vec& x = which == 0 ? logits : pre;
    const Vec& g = which == 0 ? dlogits : dpre;
    ASSERT_EQ(g.size(), x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double keep = x[i];
      x[i] = keep + h;
      const double fp = F(logits, pre);
      x[i] = keep - h;
      const double fm = F(logits, pre);
      x[i] = keep;
      const double fd = (fp - fm) / (2 * h);
      EXPECT_NEAR(g[i], fd, 1e-7 + 1e-6 * std::fabs(fd)) << (which ? "dnoise_pre " : "dlogits ") << i;
    }
  }
  if (spec.noise <= 0) {
    EXPECT_TRUE(dpre.empty());
  }

  // loss_scale multiplies the balance terms only: dl(2) = dl(1) + dl_aux, dl_aux = dl(dgate = 0).
  Vec aux = route_backward<double>(spec, base, Vec(tokens * K, 0.0), 1.0, nullptr);
  Vec twice = route_backward<double>(spec, base, dgate, 2.0, nullptr);
  for (size_t i = 0; i < twice.size(); ++i) EXPECT_NEAR(twice[i], dlogits[i] + aux[i], 1e-14);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, RouterGrad,
    ::testing::Values(GradCase{"softmax", [](RouterSpec&) {}},
                      GradCase{"softmax_norm_topk", [](RouterSpec& s) { s.norm_topk = true; }},
                      GradCase{"softmax_topk", [](RouterSpec& s) { s.score = ScoreKind::softmax_topk; }},
                      GradCase{"sigmoid", [](RouterSpec& s) { s.score = ScoreKind::sigmoid; }},
                      GradCase{"device_limited", [](RouterSpec& s) { s.route_devices = 2; }},
                      GradCase{"capacity", [](RouterSpec& s) { s.capacity_factor = 0.5; }},
                      GradCase{"sigmoid_capacity",
                               [](RouterSpec& s) {
                                 s.score = ScoreKind::sigmoid;
                                 s.capacity_factor = 0.5;
                               }},
                      GradCase{"softmax_topk_capacity",
                               [](RouterSpec& s) {
                                 s.score = ScoreKind::softmax_topk;
                                 s.capacity_factor = 0.5;
                               }},
                      GradCase{"norm_topk_capacity_device_limited",
                               [](RouterSpec& s) {
                                 s.norm_topk = true;
                                 s.capacity_factor = 0.5;
                                 s.route_devices = 1;
                               }},
                      GradCase{"noise", [](RouterSpec& s) { s.noise = 0.05; }},
                      GradCase{"softmax_topk_noise",
                               [](RouterSpec& s) {
                                 s.score = ScoreKind::softmax_topk;
                                 s.noise = 0.05;
                               }}),
    [](const ::testing::TestParamInfo<GradCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace dsmoe
