// The simulator's token model and traffic against hand-computed small placements: uniform and
// skewed routing, device-limited routing, link classes and data-parallel replicas.
#include <gtest/gtest.h>

#include "sim/token_model.h"
#include "sim/traffic.h"
#include "test_util.h"

namespace dsmoe::sim {
namespace {

TEST(SimTokenModel, UniformIsTheRandomKSubset) {
  // N = 4, K = 2 on E = 2 ranks of 2 experts: 6 equally likely pairs; a token misses rank 1's
  // experts only with {0, 1}: reach = 5/6; one expected pair per rank.
  const TokenModel tm = token_model({0.25, 0.25, 0.25, 0.25}, 2, 2, 2, 0);
  for (int j = 0; j < 2; ++j) {
    EXPECT_NEAR(tm.reach[j], 5.0 / 6, 1e-12);
    EXPECT_NEAR(tm.pairs[j], 1.0, 1e-12);
  }
  // N = 8, K = 2, E = 4: P(no expert of a rank) = C(6,2)/C(8,2) = 15/28.
  const TokenModel t8 = token_model(std::vector<double>(8, 0.125), 2, 4, 4, 0);
  EXPECT_NEAR(t8.reach[3], 13.0 / 28, 1e-12);
  EXPECT_NEAR(t8.pairs[3], 0.5, 1e-12);
}

TEST(SimTokenModel, SkewedLoadsFitTheirMarginals) {
  // Weights (3, 1, 1, 1), K = 2: the pairs with expert 0 weigh 3, the others 1; total 12.
  // P(0 in S) = 9/12, P(1 in S) = 5/12: selection shares (9, 5, 5, 5) / 24.
  const TokenModel tm = token_model({9.0 / 24, 5.0 / 24, 5.0 / 24, 5.0 / 24}, 2, 2, 2, 0);
  EXPECT_NEAR(tm.pi[0], 0.75, 1e-9);
  EXPECT_NEAR(tm.pi[1], 5.0 / 12, 1e-9);
  EXPECT_NEAR(tm.pairs[0], 0.75 + 5.0 / 12, 1e-9);
  EXPECT_NEAR(tm.pairs[1], 10.0 / 12, 1e-9);
  EXPECT_NEAR(tm.reach[1], 1 - 3.0 / 12, 1e-9);  // misses rank 1 only with {0, 1}: weight 3
  EXPECT_NEAR(tm.reach[0], 1 - 1.0 / 12, 1e-9);  // misses rank 0 only with {2, 3}: weight 1
  const std::vector<double> w = fit_weights({9.0 / 24, 5.0 / 24, 5.0 / 24, 5.0 / 24}, 2);
  EXPECT_NEAR(w[0] / w[1], 3.0, 1e-8);
}

TEST(SimTokenModel, CapsAnExpertThatEveryTokenWouldTake) {
  // K = 2 of 3 experts with shares (0.8, 0.1, 0.1): K q_0 = 1.6 > 1, so expert 0 is capped at
  // 0.999 and the other two share 2 - 0.999.
  const std::vector<double> t = target_marginals({0.8, 0.1, 0.1}, 2);
  EXPECT_NEAR(t[0], 0.999, 1e-12);
  EXPECT_NEAR(t[1], (2 - 0.999) / 2, 1e-12);
}

TEST(SimTokenModel, DeviceLimitedRouting) {
  // N = 8, K = 2, E = D = 4, M = 1: both experts on one rank; 4 equally likely sets.
  const TokenModel m1 = token_model(std::vector<double>(8, 0.125), 2, 4, 4, 1);
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(m1.reach[j], 0.25, 1e-12);
    EXPECT_NEAR(m1.pairs[j], 0.5, 1e-12);
  }
  // N = 8, K = 3, D = 4, M = 2: of the C(8,3) = 56 sets, 4 * 8 = 32 span 3 groups; 24 remain.
  // Avoiding rank j: C(6,3) = 20 sets of the other 3 groups, 8 of which span all 3: 12.
  const TokenModel m2 = token_model(std::vector<double>(8, 0.125), 3, 4, 4, 2);
  EXPECT_NEAR(m2.reach[0], 1 - 12.0 / 24, 1e-12);
  EXPECT_NEAR(m2.pairs[0], 0.75, 1e-12);
  // D = 2 groups of 4 experts, E = 4 ranks of 2, M = 1: sets inside a group, 2 * C(4,2) = 12;
  // avoiding rank 0 (experts 0, 1): {2, 3} of group 0 and the 6 of group 1: reach 5/12.
  const TokenModel m3 = token_model(std::vector<double>(8, 0.125), 2, 4, 2, 1);
  EXPECT_NEAR(m3.reach[0], 5.0 / 12, 1e-12);
  // M >= D is no limit.
  const TokenModel free = token_model(std::vector<double>(8, 0.125), 2, 4, 4, 0);
  const TokenModel m4 = token_model(std::vector<double>(8, 0.125), 2, 4, 4, 4);
  EXPECT_NEAR(m4.reach[2], free.reach[2], 1e-12);
}

TEST(SimTokenModel, Errors) {
  EXPECT_NE(test::error_of([] { token_model(std::vector<double>(6, 1.0 / 6), 2, 4, 4, 0); }).find("not divisible"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { token_model(std::vector<double>(8, 0.125), 3, 4, 4, 1); }).find("cannot hold top_k"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { target_marginals({1, 0, 0, 0}, 2); }).find("only 1 experts have load"),
            std::string::npos);
}

TEST(SimTraffic, BytesPerExchangeSkewed) {
  // The skewed 4-expert model on 2 ranks of one node, 12 tokens per rank, 10-byte rows.
  const TokenModel tm = token_model({9.0 / 24, 5.0 / 24, 5.0 / 24, 5.0 / 24}, 2, 2, 2, 0);
  Cluster c;
  c.gpus = 2;
  c.gpus_per_node = 2;
  c.intra_bw = 100;
  c.latency = 0;
  const LayerTraffic t = layer_traffic(tm, c, 2, 12, 10, 1.0);
  // Dispatch: rank 0's tokens reach rank 1 with p 3/4: 9 units; rank 1's reach rank 0 with 11/12: 11.
  EXPECT_NEAR(t.rank[kDispatch][0].out_intra, 90, 1e-6);
  EXPECT_NEAR(t.rank[kDispatch][1].out_intra, 110, 1e-6);
  EXPECT_NEAR(t.rank[kDispatch][0].in_intra, 110, 1e-6);
  EXPECT_EQ(t.rank[kDispatch][0].out_inter, 0);
  // Combine: rank 0 returns rank 1's pairs on its experts, 12 * 14/12 = 14 rows; rank 1 returns 10.
  EXPECT_NEAR(t.rank[kCombine][0].out_intra, 140, 1e-6);
  EXPECT_NEAR(t.rank[kCombine][1].out_intra, 100, 1e-6);
  EXPECT_NEAR(t.rank[kCombineBwd][0].out_intra, 100, 1e-6);
  EXPECT_NEAR(t.rank[kDispatchBwd][0].out_intra, 110, 1e-6);
  // Rows computed: rank 0 holds 14/12 of a token's pairs from each of 2 ranks' 12 tokens.
  EXPECT_NEAR(t.rows[0], 28, 1e-6);
  EXPECT_NEAR(t.rows[1], 20, 1e-6);
  EXPECT_NEAR(t.own_rows[0], 14, 1e-6);
  // The slowest rank of the dispatch sends or receives 110 bytes at 100 B/s.
  EXPECT_NEAR(t.seconds[kDispatch], 1.1, 1e-9);
  EXPECT_NEAR(t.seconds[kCombine], 1.4, 1e-9);
}

TEST(SimTraffic, LinkClassesAndReplicas) {
  // 4 ranks, 2 per node, one expert each (N = 4, K = 2 uniform): reach = pairs = 1/2.
  const TokenModel tm = token_model({0.25, 0.25, 0.25, 0.25}, 2, 4, 4, 0);
  Cluster c;
  c.gpus = 4;
  c.gpus_per_node = 2;
  c.intra_bw = 10;
  c.inter_bw = 4;
  c.latency = 0.5;
  const LayerTraffic t = layer_traffic(tm, c, 4, 10, 8, 1.0);
  // Rank 0 sends 5 units to rank 1 (same node) and 5 to each of ranks 2, 3 (the other node).
  EXPECT_NEAR(t.rank[kDispatch][0].out_intra, 40, 1e-9);
  EXPECT_NEAR(t.rank[kDispatch][0].out_inter, 80, 1e-9);
  EXPECT_NEAR(t.seconds[kDispatch], 0.5 + 80.0 / 4, 1e-9);  // the NIC is the bottleneck
  // Expert-parallel groups of 2 ({0,1}, {2,3}): nothing crosses the nodes.
  const TokenModel t2 = token_model({0.25, 0.25, 0.25, 0.25}, 2, 2, 2, 0);
  const LayerTraffic r = layer_traffic(t2, c, 2, 10, 8, 1.0);
  for (int g = 0; g < 4; ++g) {
    EXPECT_EQ(r.rank[kDispatch][g].out_inter, 0);
    EXPECT_NEAR(r.rank[kDispatch][g].out_intra, 10 * 5.0 / 6 * 8, 1e-9);
  }
  // A dispatcher at half the bare bandwidth doubles the byte time, not the latency.
  const LayerTraffic slow = layer_traffic(tm, c, 4, 10, 8, 0.5);
  EXPECT_NEAR(slow.seconds[kDispatch], 0.5 + 40, 1e-9);
}

TEST(SimTraffic, OneRankMovesNothing) {
  const TokenModel tm = token_model({0.25, 0.25, 0.25, 0.25}, 2, 1, 1, 0);
  Cluster c;
  c.gpus = 1;
  const LayerTraffic t = layer_traffic(tm, c, 1, 100, 8, 1.0);
  EXPECT_EQ(t.seconds[kDispatch], 0);
  EXPECT_EQ(t.rank[kCombine][0].out_intra, 0);
  EXPECT_NEAR(t.rows[0], 200, 1e-9);
}

}  // namespace
}  // namespace dsmoe::sim

namespace dsmoe::sim {
namespace {

TEST(SimTraffic, HierarchicalDispatcherCrossesOncePerNode) {
  // 4 GPUs, 2 per node, one expert each, top-2 uniform: a token reaches a node (either of its 2
  // experts) with p 1 - 1/6 = 5/6, a GPU with 1/2. 12 tokens per rank, 1-byte rows.
  Cluster c;
  c.gpus = 4;
  c.gpus_per_node = 2;
  c.latency = 0;
  const TokenModel tm = token_model({0.25, 0.25, 0.25, 0.25}, 2, 4, 4, 0, positions_per_node(c, 4));
  ASSERT_EQ(tm.reach_node.size(), 2u);
  EXPECT_NEAR(tm.reach_node[1], 5.0 / 6, 1e-12);
  const LayerTraffic gpu = layer_traffic(tm, c, 4, 12, 1, 1.0, false);
  const LayerTraffic node = layer_traffic(tm, c, 4, 12, 1, 1.0, true);
  // Once per GPU: 12 * (1/2 + 1/2) rows to the other node; once per node: 12 * 5/6 = 10, to
  // rank 2 (the same local index), which forwards 12 * 1/2 = 6 of them to rank 3.
  EXPECT_NEAR(gpu.rank[kDispatch][0].out_inter, 12, 1e-9);
  EXPECT_NEAR(node.rank[kDispatch][0].out_inter, 10, 1e-9);
  EXPECT_NEAR(node.rank[kDispatch][0].out_intra, 6 + 6, 1e-9);  // to rank 1 directly, and forwarding rank 2's tokens
  EXPECT_NEAR(node.rank[kDispatch][2].in_inter, 10, 1e-9);
  // Results come back summed per node: 10 rows over the network, 6 pairs from rank 3 to rank 2.
  EXPECT_NEAR(node.rank[kCombine][2].out_inter, 10, 1e-9);
  EXPECT_NEAR(node.rank[kCombine][3].out_intra, 6 + 6, 1e-9);  // to rank 2 for rank 0, and to rank 2's own tokens
  // Device-limited to one node (D = 2 groups of 2 experts, M = 1): a token reaches one node, so
  // half the tokens cross, against all of them going once per GPU (12 rows) with the GPU dispatcher.
  const TokenModel m1 = token_model({0.25, 0.25, 0.25, 0.25}, 2, 4, 2, 1, 2);
  EXPECT_NEAR(layer_traffic(m1, c, 4, 12, 1, 1.0, true).rank[kDispatch][0].out_inter, 6, 1e-9);
  EXPECT_NEAR(layer_traffic(m1, c, 4, 12, 1, 1.0, false).rank[kDispatch][0].out_inter, 12, 1e-9);
}

}  // namespace
}  // namespace dsmoe::sim
