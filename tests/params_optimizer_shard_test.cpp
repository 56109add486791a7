// The sharded optimizer's blocks (params/optimizer_shard.h) by hand: how a range is cut, which
// elements each rank's AdamW state covers and where, that the ranks together cover every element
// exactly once, and the state's round trip through the buffer's layout.
#include "params/optimizer_shard.h"

#include <gtest/gtest.h>

namespace dsmoe {
namespace {

TEST(SplitRange, EqualBlocksRoundedUpTheLastShorter) {
  Blocks b = split_range(0, 1000, 4, 64);  // 250 per rank, rounded up to 256
  EXPECT_EQ(b.offsets, (std::vector<int64_t>{0, 256, 512, 768}));
  EXPECT_EQ(b.counts, (std::vector<int64_t>{256, 256, 256, 232}));
  b = split_range(10, 20, 4, 64);  // fewer elements than one aligned block: the others empty
  EXPECT_EQ(b.offsets, (std::vector<int64_t>{10, 20, 20, 20}));
  EXPECT_EQ(b.counts, (std::vector<int64_t>{10, 0, 0, 0}));
  b = split_range(5, 5, 2, 64);
  EXPECT_EQ(b.counts, (std::vector<int64_t>{0, 0}));
  b = split_range(0, 7, 1, 1);
  EXPECT_EQ(b.counts, (std::vector<int64_t>{7}));
}

TEST(OptimizerShard, WholeBufferIsOneRange) {
  const OptimizerShard s = whole_buffer(123);
  EXPECT_FALSE(s.sharded);
  ASSERT_EQ(s.ranges.size(), 1u);
  EXPECT_EQ(s.ranges[0].begin, 0);
  EXPECT_EQ(s.ranges[0].end, 123);
  EXPECT_EQ(s.ranges[0].state, 0);
  EXPECT_EQ(s.state_size, 123);
}

TEST(OptimizerShard, BlocksOfTheWorldAndOfTheReplicas) {
  // 4 ranks, expert-parallel 2: replicated [0, 300) over 4 ranks (blocks of 128), experts
  // [300, 500) over the 2 replicas (blocks of 128).
  OptimizerShard s = shard_over_replicas(300, 500, 1, 4, 0, 2);
  EXPECT_TRUE(s.sharded);
  ASSERT_EQ(s.ranges.size(), 2u);
  EXPECT_EQ(s.ranges[0].begin, 128);
  EXPECT_EQ(s.ranges[0].end, 256);
  EXPECT_EQ(s.ranges[0].state, 0);
  EXPECT_EQ(s.ranges[1].begin, 300);
  EXPECT_EQ(s.ranges[1].end, 428);
  EXPECT_EQ(s.ranges[1].state, 128);
  EXPECT_EQ(s.state_size, 256);
  EXPECT_EQ(s.replicated.counts, (std::vector<int64_t>{128, 128, 44, 0}));
  EXPECT_EQ(s.experts.counts, (std::vector<int64_t>{128, 72}));

  s = shard_over_replicas(300, 500, 2, 4, 1, 2);  // a short replicated block: its experts' state aligned
  ASSERT_EQ(s.ranges.size(), 2u);
  EXPECT_EQ(s.ranges[0].begin, 256);
  EXPECT_EQ(s.ranges[0].end, 300);
  EXPECT_EQ(s.ranges[1].begin, 428);
  EXPECT_EQ(s.ranges[1].end, 500);
  EXPECT_EQ(s.ranges[1].state, 64);
  EXPECT_EQ(s.state_size, 64 + 72);

  s = shard_over_replicas(300, 500, 3, 4, 1, 2);  // no replicated block at all
  ASSERT_EQ(s.ranges.size(), 1u);
  EXPECT_EQ(s.ranges[0].begin, 428);
  EXPECT_EQ(s.ranges[0].state, 0);
  EXPECT_EQ(s.state_size, 72);
}

TEST(OptimizerShard, RanksTogetherCoverEveryElementOnce) {
  for (int world : {1, 2, 3, 4, 8})
    for (int ep = 1; ep <= world; ++ep) {
      if (world % ep) continue;
      const int replicas = world / ep;
      for (int64_t experts : {0, 1, 63, 64, 1000}) {
        const int64_t size = experts + 777;
        // The replicated part is covered once over the world; each expert shard once over its
        // replicas (ranks r with the same r % ep hold the same experts; replica index r / ep).
        std::vector<int> replicated(experts, 0);
        std::vector<std::vector<int>> shard(ep, std::vector<int>(size - experts, 0));
        for (int r = 0; r < world; ++r) {
          const OptimizerShard s = shard_over_replicas(experts, size, r, world, r / ep, replicas);
          int64_t state = 0;
          for (const auto& g : s.ranges) {
            EXPECT_GE(g.state, state);
            state = g.state + (g.end - g.begin);
            for (int64_t i = g.begin; i < g.end; ++i) ++(i < experts ? replicated[i] : shard[r % ep][i - experts]);
          }
          EXPECT_EQ(s.state_size, state);
        }
        for (int c : replicated) ASSERT_EQ(c, 1) << world << " " << ep << " " << experts;
        for (const auto& v : shard)
          for (int c : v) ASSERT_EQ(c, 1) << world << " " << ep << " " << experts;
      }
    }
}

TEST(OptimizerShard, StateRoundTripsThroughTheBufferLayout) {
  const OptimizerShard s = shard_over_replicas(300, 500, 1, 4, 1, 2);
  std::vector<float> whole(500);
  for (size_t i = 0; i < whole.size(); ++i) whole[i] = static_cast<float>(i);
  const std::vector<float> state = shard_state(s, whole);
  ASSERT_EQ(state.size(), static_cast<size_t>(s.state_size));
  EXPECT_EQ(state[0], 128.0f);                         // the first replicated element of rank 1
  EXPECT_EQ(state[s.ranges[1].state], 428.0f);         // the first expert element of replica 1
  std::vector<float> back(500, -1.0f);
  place_shard_state(s, state, &back);
  for (const auto& g : s.ranges)
    for (int64_t i = g.begin; i < g.end; ++i) ASSERT_EQ(back[i], whole[i]);
  EXPECT_EQ(back[0], -1.0f);  // elements of other ranks untouched
}

}  // namespace
}  // namespace dsmoe
