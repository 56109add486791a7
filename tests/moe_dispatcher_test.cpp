// The local dispatcher with "token-stamped" payloads: x[t, :] = t + 1, so every dispatched row
// names the token it came from, and every combined pair names the expert row it came from.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu_backend.h"
#include "comm/comm.h"
#include "moe/dispatcher.h"
#include "moe/router.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using Vec = std::vector<double>;

struct Plan {
  int tokens = 0, n_experts = 0, k = 0;
  std::vector<int32_t> sel;  // [tokens, k]
  std::vector<uint8_t> kept;  // [tokens, k]
};

// Tokens (in order) that have a kept pair with expert e.
std::vector<int> tokens_of(const Plan& p, int e) {
  std::vector<int> out;
  for (int t = 0; t < p.tokens; ++t)
    for (int k = 0; k < p.k; ++k)
      if (p.sel[t * p.k + k] == e && p.kept[t * p.k + k]) out.push_back(t);
  return out;
}

class LocalDispatch : public ::testing::Test {
 protected:
  std::unique_ptr<Backend<double>> be = make_cpu_backend<double>();

  Buf<double> dev(const Vec& v) {
    Buf<double> b(*be, static_cast<int64_t>(std::max<size_t>(v.size(), 1)));
    if (!v.empty()) to_device(*be, b.data(), v);
    return b;
  }
  Vec host(const Buf<double>& b, int64_t n) { return to_host(*be, b.data(), n); }

  // Plans p on disp and checks dispatch, combine and both backwards against the stamps.
  void check_round_trip(Dispatcher<double>& disp, const Plan& p, int d) {
    const int P = p.tokens * p.k;
    disp.plan(p.sel, p.kept, p.tokens, p.k);

    // Row counts per expert.
    std::vector<int> start(p.n_experts + 1, 0);
    ASSERT_EQ(static_cast<int>(disp.expert_rows().size()), p.n_experts);
    for (int e = 0; e < p.n_experts; ++e) {
      EXPECT_EQ(disp.expert_rows()[e], static_cast<int>(tokens_of(p, e).size())) << "expert " << e;
      start[e + 1] = start[e] + disp.expert_rows()[e];
    }
    int kept_pairs = 0;
    for (uint8_t k : p.kept) kept_pairs += k;
    ASSERT_EQ(disp.rows(), kept_pairs);
    const int R = disp.rows();
    auto expert_of_row = [&](int r) {
      int e = 0;
      while (start[e + 1] <= r) ++e;
      return e;
    };

    // dispatch: every row of expert e's group is a token that selected e (and kept it), in token order.
    Vec x((size_t)p.tokens * d);
    for (int t = 0; t < p.tokens; ++t)
      for (int j = 0; j < d; ++j) x[(size_t)t * d + j] = t + 1;
    auto xb = dev(x);
    auto xe = dev(Vec((size_t)R * d, -9.0));
    disp.dispatch(xe, xb, d);
    Vec xeh = host(xe, (int64_t)R * d);
    std::vector<int> row_token(R);
    for (int e = 0; e < p.n_experts; ++e) {
      std::vector<int> got;
      for (int r = start[e]; r < start[e + 1]; ++r) {
        const double stamp = xeh[(size_t)r * d];
        for (int j = 0; j < d; ++j) ASSERT_EQ(xeh[(size_t)r * d + j], stamp) << "row " << r << " mixes tokens";
        row_token[r] = static_cast<int>(stamp) - 1;
        got.push_back(row_token[r]);
      }
      EXPECT_EQ(got, tokens_of(p, e)) << "rows of expert " << e;
    }

    // combine(dispatch(x)) with identity experts: y_pairs[t*K+k] = x[t] if kept, else 0.
    auto yp = dev(Vec((size_t)P * d, 77.0));  // garbage: dropped pairs must come back as 0
    disp.combine(yp, xe, d);
    Vec yph = host(yp, (int64_t)P * d);
    for (int q = 0; q < P; ++q)
      for (int j = 0; j < d; ++j)
        EXPECT_EQ(yph[(size_t)q * d + j], p.kept[q] ? q / p.k + 1.0 : 0.0) << "pair " << q;

    // combine with "expert e multiplies by e + 1": each pair gets the row of its own expert.
    Vec ye(xeh);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < d; ++j) ye[(size_t)r * d + j] *= expert_of_row(r) + 1;
    auto yeb = dev(ye);
    disp.combine(yp, yeb, d);
    yph = host(yp, (int64_t)P * d);
    for (int q = 0; q < P; ++q)
      for (int j = 0; j < d; ++j)
        EXPECT_EQ(yph[(size_t)q * d + j], p.kept[q] ? (q / p.k + 1.0) * (p.sel[q] + 1) : 0.0) << "pair " << q;

    // combine_backward: row r gets the gradient of its pair; stamp pairs with q + 1 (+ column/8).
    Vec dyp((size_t)P * d);
    for (int q = 0; q < P; ++q)
      for (int j = 0; j < d; ++j) dyp[(size_t)q * d + j] = q + 1 + j / 8.0;
    auto dypb = dev(dyp);
    auto dye = dev(Vec((size_t)R * d, -5.0));
    disp.combine_backward(dye, dypb, d);
    Vec dyeh = host(dye, (int64_t)R * d);
    for (int r = 0; r < R; ++r) {
      const int q = static_cast<int>(dyeh[(size_t)r * d]) - 1;
      ASSERT_GE(q, 0);
      ASSERT_LT(q, P);
      EXPECT_TRUE(p.kept[q]) << "row " << r;
      EXPECT_EQ(p.sel[q], expert_of_row(r)) << "row " << r;
      EXPECT_EQ(q / p.k, row_token[r]) << "row " << r;
      for (int j = 0; j < d; ++j) EXPECT_EQ(dyeh[(size_t)r * d + j], dyp[(size_t)q * d + j]);
    }

    // dispatch_backward accumulates: dx[t] = init + sum over t's kept pairs of dxe rows. With
    // dxe = combine_backward(dy_pairs), dx[t] = init + sum over kept k of dy_pairs[t*K+k].
    auto dx = dev(Vec((size_t)p.tokens * d, 0.25));
    disp.dispatch_backward(dx, dye, d);
    Vec dxh = host(dx, (int64_t)p.tokens * d);
    for (int t = 0; t < p.tokens; ++t)
      for (int j = 0; j < d; ++j) {
        double want = 0.25;
        for (int k = 0; k < p.k; ++k)
          if (p.kept[t * p.k + k]) want += dyp[((size_t)t * p.k + k) * d + j];
        EXPECT_EQ(dxh[(size_t)t * d + j], want) << "token " << t << " column " << j;
      }

    // The backward of dispatch is the transpose: <dxe, dispatch(x)> = <dispatch_backward(dxe), x>.
    double lhs = 0, rhs = 0;
    for (int i = 0; i < R * d; ++i) lhs += dyeh[i] * xeh[i];
    for (int i = 0; i < p.tokens * d; ++i) rhs += (dxh[i] - 0.25) * x[i];
    EXPECT_DOUBLE_EQ(lhs, rhs);
  }
};

TEST_F(LocalDispatch, RandomRoutingRoundTrip) {
  Plan p;
  p.tokens = 9;
  p.n_experts = 5;
  p.k = 2;
  Rng rng(31);
  for (int t = 0; t < p.tokens; ++t) {
    int a = static_cast<int>(rng.below(p.n_experts));
    int b = static_cast<int>(rng.below(p.n_experts - 1));
    if (b >= a) ++b;  // distinct experts per token
    p.sel.push_back(a);
    p.sel.push_back(b);
    p.kept.push_back(rng.uniform() < 0.75);
    p.kept.push_back(rng.uniform() < 0.75);
  }
  p.kept[4 * 2] = p.kept[4 * 2 + 1] = 0;  // token 4 loses both pairs
  p.kept[0] = p.kept[1] = 1;
  auto disp = make_local_dispatcher<double>(*be, p.n_experts, 12, p.k, 3);
  check_round_trip(*disp, p, 3);
}

TEST_F(LocalDispatch, HandPlan) {
  // 4 tokens, 3 experts, K = 2. Token 2 has both pairs dropped, token 3's second pair dropped.
  Plan p{4, 3, 2, {2, 0, 0, 1, 1, 2, 2, 0}, {1, 1, 1, 1, 0, 0, 1, 0}};
  auto disp = make_local_dispatcher<double>(*be, 3, 4, 2, 2);
  disp->plan(p.sel, p.kept, p.tokens, p.k);
  EXPECT_EQ(disp->expert_rows(), (std::vector<int>{2, 1, 2}));  // 0: t0, t1; 1: t1; 2: t0, t3
  EXPECT_EQ(disp->rows(), 5);
  Vec x = {1, 1, 2, 2, 3, 3, 4, 4};
  auto xb = dev(x);
  auto xe = dev(Vec(10, 0.0));
  disp->dispatch(xe, xb, 2);
  EXPECT_EQ(host(xe, 10), (Vec{1, 1, 2, 2, 2, 2, 1, 1, 4, 4}));
  check_round_trip(*disp, p, 2);
}

TEST_F(LocalDispatch, AllTokensToOneExpert) {
  Plan p;
  p.tokens = 6;
  p.n_experts = 4;
  p.k = 1;
  p.sel.assign(6, 2);
  p.kept.assign(6, 1);
  auto disp = make_local_dispatcher<double>(*be, 4, 6, 1, 3);
  disp->plan(p.sel, p.kept, p.tokens, p.k);
  EXPECT_EQ(disp->expert_rows(), (std::vector<int>{0, 0, 6, 0}));
  check_round_trip(*disp, p, 3);
}

TEST_F(LocalDispatch, EveryPairDropped) {
  Plan p{3, 2, 2, {0, 1, 1, 0, 0, 1}, {0, 0, 0, 0, 0, 0}};
  auto disp = make_local_dispatcher<double>(*be, 2, 3, 2, 2);
  disp->plan(p.sel, p.kept, p.tokens, p.k);
  EXPECT_EQ(disp->rows(), 0);
  EXPECT_EQ(disp->expert_rows(), (std::vector<int>{0, 0}));
  check_round_trip(*disp, p, 2);
}

TEST_F(LocalDispatch, ReplanWithFewerTokens) {
  auto disp = make_local_dispatcher<double>(*be, 3, 8, 2, 2);
  Plan big{8, 3, 2, {0, 1, 1, 2, 2, 0, 0, 2, 1, 0, 2, 1, 0, 1, 1, 2}, std::vector<uint8_t>(16, 1)};
  check_round_trip(*disp, big, 2);
  Plan small{3, 3, 2, {2, 1, 2, 0, 1, 0}, {1, 0, 1, 1, 1, 1}};
  check_round_trip(*disp, small, 2);
  // K may change between plans as long as tokens * K fits.
  Plan k1{5, 3, 1, {1, 1, 0, 2, 1}, {1, 1, 1, 1, 0}};
  check_round_trip(*disp, k1, 2);
}

TEST_F(LocalDispatch, FollowsRouterCapacityDecisions) {
  // Route with capacity, then dispatch: no expert gets more than C rows, drops come back as 0.
  RouterSpec spec;
  spec.n_experts = 4;
  spec.top_k = 2;
  spec.capacity_factor = 0.75;  // C = ceil(0.75 * 10 * 2 / 4) = 4
  RouteContext ctx;
  ctx.tokens_global = 10;
  Rng rng(5);
  Vec logits(40);
  for (auto& v : logits) v = rng.normal();
  for (int t = 0; t < 10; ++t) logits[t * 4 + 1] += 3.0;  // everyone wants expert 1
  auto comm = make_single_comm();
  auto r = route<double>(spec, ctx, logits, {}, std::vector<float>(4, 0.0f), *comm);
  EXPECT_EQ(r.load[1], 10);
  int64_t over = 0;  // selections beyond C = 4, per expert (expert 1 alone drops 6)
  for (double l : r.load) over += std::max<int64_t>(0, static_cast<int64_t>(l) - 4);
  EXPECT_EQ(r.dropped, over);
  EXPECT_GE(r.dropped, 6);
  Plan p{10, 4, 2, r.sel, r.kept};
  auto disp = make_local_dispatcher<double>(*be, 4, 10, 2, 3);
  disp->plan(p.sel, p.kept, p.tokens, p.k);
  for (int e = 0; e < 4; ++e) EXPECT_LE(disp->expert_rows()[e], 4) << "expert " << e;
  check_round_trip(*disp, p, 3);
}

}  // namespace
}  // namespace dsmoe
