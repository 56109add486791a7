// The memory settings' search (sim/memory_fit.h): every valid micro-batch count at each recompute
// setting with the optimizer sharded and not, each the simulation of that config; which fit a
// given memory; the fastest of those; the recomputations' costs and the optimizer term of the
// memory model by hand.
#include "sim/memory_fit.h"

#include <gtest/gtest.h>

#include "model/layout.h"
#include "sim_fixture.h"
#include "util/check.h"

namespace dsmoe::sim {
namespace {

struct Fit : ::testing::Test {
  Config cfg = tiny_sim_config();
  Cluster cluster;
  Rates rates;
  Fit() {
    cfg.train.batch_size = 8;  // 4 sequences per rank on 2 GPUs: 1, 2 or 4 micro-batches
    cluster.gpus = 2;
    cluster.gpus_per_node = 2;
    rates.compute = 1e4;
    rates.backend = "cpu";
  }
  std::vector<MemorySetting> settings(double memory) {
    return memory_settings(cfg, cluster, rates, load_routing("uniform", 1, 4), memory);
  }
};

TEST_F(Fit, EverySettingIsItsOwnSimulation) {
  const std::vector<MemorySetting> all = settings(1e12);
  ASSERT_EQ(all.size(), 24u);  // micro-batches 1, 2, 4 x recompute none, attention, moe, full x sharded or not
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].micro_batches, 1 << (i / 8));
    EXPECT_EQ(all[i].recompute, kRecomputeSettings[i % 8 / 2]);
    EXPECT_EQ(all[i].shard_optimizer, i % 2 == 1);
    Config c = cfg;
    c.train.micro_batches = all[i].micro_batches;
    c.train.recompute = all[i].recompute;
    c.parallel.shard_optimizer = all[i].shard_optimizer;
    const SimResult r = simulate(c, cluster, rates, load_routing("uniform", 1, 4));
    EXPECT_EQ(all[i].peak_bytes, r.memory.total());
    EXPECT_EQ(all[i].step_s, r.step_s());
    EXPECT_TRUE(all[i].fits);
  }
  EXPECT_EQ(all[11].sets(), "--set train.recompute=attention --set parallel.shard_optimizer=true --set train.micro_batches=2");
}

// Recomputing the attention costs its forward again: per token and layer, the qkv product
// (2 x 3 d^2) and the causal scores and values (2 d seq_len) at the compute rate.
TEST_F(Fit, RecomputeCostsTheAttentionForward) {
  const std::vector<MemorySetting> all = settings(1e12);
  const double d = cfg.model.d_model, tokens = 4 * cfg.model.seq_len;  // 4 sequences per rank
  const double flops = cfg.model.n_layers * (2 * 3 * d * d + 2 * d * cfg.model.seq_len) * tokens;
  EXPECT_NEAR(all[2].step_s - all[0].step_s, flops / rates.compute, 1e-12);
  EXPECT_LT(all[2].peak_bytes, all[0].peak_bytes);
}

// Recomputing the experts costs their gate and up products again (2 FLOPs per weight): per token
// and MoE layer, 4 d Ks n for the shared experts, and per routed row 4 d n; with uniform routing
// each of the 2 ranks computes top_k rows per token of its own (the expert time is the slowest
// rank's). full costs both recomputations.
TEST_F(Fit, RecomputeCostsTheExpertsGateAndUpProducts) {
  const std::vector<MemorySetting> all = settings(1e12);
  const double d = cfg.model.d_model, n = cfg.moe.expert_hidden, tokens = 4 * cfg.model.seq_len;
  const double flops = cfg.n_moe_layers() * (4 * d * cfg.moe.n_shared * n + cfg.moe.top_k * 4 * d * n) * tokens;
  EXPECT_NEAR(all[4].step_s - all[0].step_s, flops / rates.compute, 1e-12);
  EXPECT_NEAR(all[6].step_s - all[0].step_s, (all[2].step_s - all[0].step_s) + flops / rates.compute, 1e-12);
  EXPECT_LE(all[4].peak_bytes, all[0].peak_bytes);
}

// Sharding keeps each rank's blocks of the moments only. The tiny model on 2 ranks, expert-parallel
// 2: the replicated tensors [0, B) in blocks of ceil(B / 2) rounded up to 64 elements, one replica
// per expert shard (nothing of the experts is shared), so rank 0 keeps its whole expert part.
TEST_F(Fit, ShardedOptimizerTermByHand) {
  const std::vector<MemorySetting> all = settings(1e12);
  const ParamTable t = build_param_table(cfg, 0, 2);
  const int64_t replicated = t.sharded_begin(), experts = t.size() - replicated;
  const int64_t block = (replicated / 2 + (replicated % 2) + 63) / 64 * 64;
  const int64_t kept = block + experts;  // its expert state starts at the block's end (64-aligned)
  EXPECT_DOUBLE_EQ(all[0].peak_bytes - all[1].peak_bytes, 8.0 * (t.size() - kept));
}

TEST_F(Fit, FitsAgainstTheMemoryAndTheFastestOfThem) {
  const std::vector<MemorySetting> all = settings(1e12);
  // A memory between two peaks: exactly the settings at or below it fit.
  double below = all[0].peak_bytes;
  for (const MemorySetting& s : all) below = std::min(below, s.peak_bytes);
  const double memory = below + 1;
  const std::vector<MemorySetting> some = settings(memory);
  const MemorySetting* best = nullptr;
  for (const MemorySetting& s : some) {
    EXPECT_EQ(s.fits, s.peak_bytes <= memory);
    if (s.fits && (!best || s.step_s < best->step_s)) best = &s;
  }
  ASSERT_NE(best, nullptr);
  EXPECT_EQ(fastest_fit(some), best);
  EXPECT_EQ(fastest_fit(settings(below / 2)), nullptr);
  EXPECT_THROW(settings(0), Error);
}

}  // namespace
}  // namespace dsmoe::sim
