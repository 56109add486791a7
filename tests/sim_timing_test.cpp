// The step-time model: the straggler term on a constructed load matrix, and one simulated step
// of a tiny config against hand-computed compute, exchange and allreduce times.
#include <gtest/gtest.h>

#include "sim/simulate.h"
#include "test_util.h"
#include "sim_fixture.h"

namespace dsmoe::sim {
namespace {

TEST(SimStraggler, ConstructedLoadMatrix) {
  // Layer 0: ranks take 1, 2, 3 s (mean 2, max 3); layer 1: even (4 each); layer 2: one rank idle.
  const Straggler s = straggler({{1, 2, 3}, {4, 4, 4}, {0, 3, 3}});
  EXPECT_DOUBLE_EQ(s.mean_s, 2 + 4 + 2);
  EXPECT_DOUBLE_EQ(s.max_s, 3 + 4 + 3);
  EXPECT_DOUBLE_EQ(s.cost_s(), 2);
  ASSERT_EQ(s.ratio.size(), 3u);
  EXPECT_DOUBLE_EQ(s.ratio[0], 1.5);
  EXPECT_DOUBLE_EQ(s.ratio[1], 1.0);
  EXPECT_DOUBLE_EQ(s.ratio[2], 1.5);
}

TEST(SimStep, HandComputedTwoRanks) {
  Cluster c;
  c.gpus = 2;
  c.gpus_per_node = 2;
  c.intra_bw = 1000;
  c.latency = 0;
  Rates rates;
  rates.compute = 1e4;
  rates.overlap = false;
  rates.backend = "cpu";
  const SimResult r = simulate(tiny_sim_config(), c, rates, load_routing("uniform", 1, 4));
  // FLOPs per token (llm.c convention): 6 * (attention 512 + dense 288 + shared 144 + 2 routed
  // 288 + router 32 + head 128) + 6 * 2 * 8 * 4 = 8736, of which routed 6 * 288 = 1728.
  EXPECT_DOUBLE_EQ(r.flops_per_token, 8736);
  EXPECT_DOUBLE_EQ(r.tokens_per_rank, 4);
  EXPECT_NEAR(r.dense_s, (8736 - 1728) * 4 / 1e4, 1e-12);
  // Each rank computes 8 rows (2 ranks x 4 tokens x 1 pair per rank) of 6 * 144 FLOPs.
  EXPECT_NEAR(r.experts.mean_s, 8 * 864 / 1e4, 1e-12);
  EXPECT_NEAR(r.experts.cost_s(), 0, 1e-15);
  // Dispatch: 4 tokens x 5/6 reach x 32 bytes; combine: 4 pairs x 32 bytes; at 1000 B/s.
  EXPECT_NEAR(r.comm_s[kDispatch], 4 * 5.0 / 6 * 32 / 1000, 1e-12);
  EXPECT_NEAR(r.comm_s[kCombine], 4 * 32 / 1000.0, 1e-12);
  EXPECT_NEAR(r.bytes_sent_mean(), 2 * (4 * 5.0 / 6 * 32) + 2 * 4 * 32, 1e-9);
  // Allreduce of the 1848 - 576 non-expert floats over 2 ranks: 2 * 1/2 * 1272 * 4 bytes.
  EXPECT_NEAR(r.allreduce_s, 1272 * 4 / 1000.0, 1e-12);
  EXPECT_NEAR(r.step_s(), r.dense_s + r.experts.max_s + r.comm_total() + r.allreduce_s, 1e-15);

  // Overlap hides the forward dispatch behind the shared expert (2 * 144 FLOPs per token) and the
  // own tokens' experts (2 pairs of 2 * 144): 4 * 288 + 2 * 288 = 1728 FLOPs = 0.1728 s.
  rates.overlap = true;
  const SimResult o = simulate(tiny_sim_config(), c, rates, load_routing("uniform", 1, 4));
  EXPECT_NEAR(o.overlapped_s, std::min(o.comm_s[kDispatch], 1728 / 1e4), 1e-12);
  EXPECT_NEAR(o.exposed_s(), o.comm_total() - o.overlapped_s, 1e-15);
}

TEST(SimStep, SkewAndDeviceLimit) {
  Config cfg = tiny_sim_config();
  cfg.moe.n_routed = 16;
  cfg.train.batch_size = 4;
  Cluster c;
  c.gpus = 4;
  c.gpus_per_node = 4;
  Rates rates;
  const SimResult even = simulate(cfg, c, rates, load_routing("uniform", 1, 16));
  const SimResult skew = simulate(cfg, c, rates, load_routing("zipf:1.5", 1, 16));
  EXPECT_NEAR(even.experts.cost_s(), 0, 1e-15);
  EXPECT_GT(skew.experts.cost_s(), 0.1 * skew.experts.mean_s);
  EXPECT_GT(skew.layer_imbalance[0], 1.1);
  cfg.moe.route_devices = 1;
  const SimResult limited = simulate(cfg, c, rates, load_routing("uniform", 1, 16));
  // One rank per token: 3/4 of the tokens leave (vs 1 - C(12,2)/C(16,2) = 0.45 per rank).
  EXPECT_NEAR(limited.bytes_intra[kDispatch], 4 * 0.75 * 32, 1e-9);
  EXPECT_NEAR(even.bytes_intra[kDispatch], 4 * 3 * (1 - 66.0 / 120) * 32, 1e-9);
}

TEST(SimStep, Errors) {
  Cluster c;
  c.gpus = 3;
  c.gpus_per_node = 3;
  Config three = tiny_sim_config();
  three.train.batch_size = 6;
  EXPECT_NE(test::error_of([&] { simulate(three, c, Rates{}, load_routing("uniform", 1, 4)); })
                .find("moe.n_routed = 4 is not divisible by the expert-parallel size 3"),
            std::string::npos);
  c.gpus = 12;
  c.gpus_per_node = 8;
  EXPECT_NE(test::error_of([&] { check_cluster(c); }).find("not a whole number of nodes"), std::string::npos);
  c.gpus = 2;
  c.gpus_per_node = 2;
  Config cfg = tiny_sim_config();
  cfg.train.batch_size = 3;
  EXPECT_NE(test::error_of([&] { simulate(cfg, c, Rates{}, load_routing("uniform", 1, 4)); }).find("train.batch_size"),
            std::string::npos);
}

}  // namespace
}  // namespace dsmoe::sim
