// The Router object of an MoE layer on the CPU backend, one rank, by hand values: its product
// gives the logits, its choices and gates are route_row's, the bias steers the choice and not
// the gate, capacity dropping shows on the host, and the bias update moves each expert toward
// the mean load. The router's math itself: moe_router_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "backend/cpu_backend.h"
#include "comm/comm.h"
#include "moe/router.h"

namespace dsmoe {
namespace {

// Routes `rows` (one token each, d = N) through an identity router, so that the logits are the
// rows themselves: log(a) gives the softmax scores a / sum(a).
struct RouterOnCpu : ::testing::Test {
  std::unique_ptr<Backend<double>> be = make_cpu_backend<double>();
  std::unique_ptr<Comm> comm = make_single_comm();
  Buf<double> logit_grads;

  RouterSpec spec(int n, int k) {
    RouterSpec s;
    s.n_experts = n;
    s.top_k = k;
    return s;
  }
  std::vector<double> identity(int n) {
    std::vector<double> w(static_cast<size_t>(n) * n, 0.0);
    for (int i = 0; i < n; ++i) w[static_cast<size_t>(i) * n + i] = 1;
    return w;
  }
  // Logs of each row's entries, row-major.
  std::vector<double> logs(const std::vector<std::vector<double>>& rows) {
    std::vector<double> out;
    for (const auto& r : rows)
      for (double a : r) out.push_back(std::log(a));
    return out;
  }
  void forward(Router<double>& router, std::vector<double>& u, std::vector<double>& w, int tokens) {
    RouteContext ctx;
    ctx.tokens_global = tokens;
    router.forward(u.data(), tokens, RouterWeights<double>{w.data(), nullptr}, ctx);
  }
};

TEST_F(RouterOnCpu, ChoicesGatesAndStatistics) {
  Router<double> router(*be, *comm, spec(4, 2), 4, 2, logit_grads);
  std::vector<double> w = identity(4), u = logs({{1, 2, 4, 1}, {4, 1, 1, 2}});  // scores: rows / 8
  forward(router, u, w, 2);
  EXPECT_EQ(to_host(*be, router.choices().data(), 4), (std::vector<int32_t>{2, 1, 0, 3}));  // best first
  EXPECT_EQ(to_host(*be, router.gates().data(), 4), (std::vector<double>{0.5, 0.25, 0.5, 0.25}));
  EXPECT_EQ(router.statistics().load, (std::vector<double>{1, 1, 1, 1}));
  EXPECT_EQ(router.statistics().dropped, 0);
  EXPECT_FALSE(router.drops());
}

TEST_F(RouterOnCpu, TheBiasSteersTheChoiceNotTheGate) {
  Router<double> router(*be, *comm, spec(4, 2), 4, 1, logit_grads);
  router.set_bias({0, 0, 0, 10});
  std::vector<double> w = identity(4), u = logs({{1, 2, 4, 1}});
  forward(router, u, w, 1);
  EXPECT_EQ(to_host(*be, router.choices().data(), 2), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(to_host(*be, router.gates().data(), 2), (std::vector<double>{0.125, 0.5}));  // the scores
}

TEST_F(RouterOnCpu, BiasUpdateMovesTowardTheMeanLoad) {
  Router<double> router(*be, *comm, spec(4, 1), 4, 1, logit_grads);
  const double load[4] = {1, 3, 2, 2};  // mean 2
  router.update_bias(load, 0.25);
  EXPECT_EQ(router.bias(), (std::vector<float>{0.25f, -0.25f, 0, 0}));
  router.update_bias(load, 0.25);
  EXPECT_EQ(router.bias(), (std::vector<float>{0.5f, -0.5f, 0, 0}));
  // The new bias is the one the next forward routes with: expert 0 now wins a token it lost by
  // less than 0.5 of score.
  std::vector<double> w = identity(4), u = logs({{1, 1.5, 1, 1}});  // scores 1/4.5, 1.5/4.5, ...
  forward(router, u, w, 1);
  EXPECT_EQ(to_host(*be, router.choices().data(), 1), (std::vector<int32_t>{0}));
}

TEST_F(RouterOnCpu, CapacityDroppingShowsOnTheHost) {
  RouterSpec s = spec(2, 1);
  s.capacity_factor = 1.0;  // capacity ceil(1.0 * 4 tokens * 1 / 2 experts) = 2 per expert
  Router<double> router(*be, *comm, s, 2, 4, logit_grads);
  std::vector<double> w = identity(2), u = logs({{3, 1}, {3, 1}, {3, 1}, {1, 3}});
  forward(router, u, w, 4);
  EXPECT_TRUE(router.drops());
  EXPECT_EQ(router.host_choices(), (std::vector<int32_t>{0, 0, 0, 1}));
  EXPECT_EQ(router.kept(), (std::vector<uint8_t>{1, 1, 0, 1}));  // expert 0 keeps its first two
  EXPECT_EQ(to_host(*be, router.gates().data(), 4), (std::vector<double>{0.75, 0.75, 0, 0.75}));
  EXPECT_EQ(router.statistics().dropped, 1);
  EXPECT_EQ(router.statistics().load, (std::vector<double>{3, 1}));  // selections, before dropping
}

}  // namespace
}  // namespace dsmoe
