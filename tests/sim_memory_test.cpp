// The memory model against a hand count of a tiny model, and against what the CPU backend
// actually allocates for a model (forward and backward run once).
#include <gtest/gtest.h>

#include "backend/cpu_backend.h"
#include "model/model.h"
#include "sim/memory.h"
#include "sim/memory_fit.h"
#include "util/rng.h"
#include "sim_fixture.h"

namespace dsmoe::sim {
namespace {

TEST(SimMemory, HandCountOneRank) {
  // Parameters: embedding and head 2 * 16 * 8 = 256, final norm 8, per layer 2 norms + 4 d^2 =
  // 272 (x2), dense FFN 3 * 12 * 8 = 288, router 4 * 8 = 32, shared expert 3 * 6 * 8 = 144,
  // routed experts 4 * 144 = 576: 1848 floats.
  const MemoryBreakdown m = rank_memory(tiny_sim_config(), 1, 0, 1, 1, "cpu", {});
  EXPECT_EQ(m.weights, 1848 * 4);
  EXPECT_EQ(m.grads, 1848 * 4);
  EXPECT_EQ(m.optimizer, 2 * 1848 * 4);
  // Activations, R = 4 tokens, attention probabilities 1 * 2 * 4 * 4 = 32 per layer:
  //   per layer x h qkv att 6 R d + 2 R + 32 = 232 (x2), ln1 and ln2 once 2 R d = 64; dense 3 R * 12 = 144;
  //   head: tokens, targets, xs_final, ln_f, rstd_f, logits, losses = 4 + 4 + 32 + 32 + 4 + 64 + 4 = 144;
  //   MoE: logits and scores 2 R N = 32, gates and choices 16, shared gu + act 3 * 4 * 6 = 72,
  //   gu 8 * 12, the gates by combine row 8, the router's statistics in doubles (W = 2 N + D =
  //   9 columns of one chunk, totals 10, balance N + 5 = 9: 28 doubles, 56 floats): 280.
  EXPECT_EQ(m.activations, (2 * 232 + 64 + 144 + 144 + 280) * 4);
  // Scratch: dx dtmp dqkv 5 R d = 160, attention 32; MoE: xe 8 * 8 and act 8 * 6 (rebuilt by
  // the backward), dgate by pair and by row 8 + 8, yc 64 (backward dyc, then dxe), dgu 2 * 48
  // and dact 48 (the dense FFN's backward uses them: 2 R 12 and R 12, no larger), tmp (the
  // router's logit gradients) R N = 16.
  EXPECT_EQ(m.scratch, (160 + 32 + 64 + 48 + 16 + 64 + 96 + 48 + 16) * 4);
  // Dispatcher on one rank: pair_row 8, self_token 8, CSR over tokens 5 + 8.
  EXPECT_EQ(m.dispatch, 29 * 4);
  EXPECT_EQ(m.total(), 4 * 1848 * 4 + 1096 * 4 + 544 * 4 + 29 * 4);
}

// train.recompute: attention keeps one layer's qkv, att and attention probabilities, not both's:
// (4 R d + 32) fewer floats, R = 4, d = 8.
TEST(SimMemory, RecomputedAttentionKeepsOneLayersSet) {
  Config cfg = tiny_sim_config();
  const MemoryBreakdown stored = rank_memory(cfg, 1, 0, 1, 1, "cpu", {});
  cfg.train.recompute = "attention";
  const MemoryBreakdown recomputed = rank_memory(cfg, 1, 0, 1, 1, "cpu", {});
  EXPECT_EQ(stored.activations - recomputed.activations, (4 * 4 * 8 + 32) * 4);
  EXPECT_EQ(stored.total() - recomputed.total(), (4 * 4 * 8 + 32) * 4);
}

// train.recompute: moe keeps one MoE layer's routed gu (8 pairs x 12) and shared gu and act
// (3 x 4 x 6), in the scratch, instead of each layer's: with 3 layers (2 MoE), the activations
// lose both layers' sets and the scratch gains one. full adds the attention's saving.
TEST(SimMemory, RecomputedExpertsKeepOneLayersSet) {
  Config cfg = tiny_sim_config();
  cfg.model.n_layers = 3;
  const MemoryBreakdown stored = rank_memory(cfg, 1, 0, 1, 1, "cpu", {});
  cfg.train.recompute = "moe";
  const MemoryBreakdown moe = rank_memory(cfg, 1, 0, 1, 1, "cpu", {});
  EXPECT_EQ(stored.activations - moe.activations, 2 * (96 + 72) * 4);
  EXPECT_EQ(moe.scratch - stored.scratch, (96 + 72) * 4);
  cfg.train.recompute = "full";
  const MemoryBreakdown full = rank_memory(cfg, 1, 0, 1, 1, "cpu", {});
  EXPECT_EQ(stored.total() - full.total(), (96 + 72) * 4 + 2 * (4 * 4 * 8 + 32) * 4);
}

TEST(SimMemory, ExpertShardAndReceivedRows) {
  // Rank 1 of 2: experts 2 and 3 only (2 * 144 fewer floats), and a routing that brings it 12
  // rows (8 of its own pairs are 3 here), sends 4 units and receives 6.
  RankRows rows{{12}, {3}, {4}, {6}};
  const MemoryBreakdown one = rank_memory(tiny_sim_config(), 1, 0, 1, 1, "cpu", {});
  const MemoryBreakdown m = rank_memory(tiny_sim_config(), 2, 1, 1, 1, "cpu", rows);
  EXPECT_EQ(m.weights, (1848 - 288) * 4);
  // gu 12 * 12 (grown past the 8 pairs it was made for: 12 > 8 * 1.25), the gates by combine
  // row: 12 rows + the 5 own pairs computed elsewhere = 17; xe, act and yc grow in the scratch.
  // Two device groups: one more column of router statistics, in the chunk and in the totals
  // (2 doubles, 4 floats).
  EXPECT_EQ(m.activations - one.activations, ((12 - 8) * 12 + (17 - 8) + 4) * 4);
  // Dispatcher: pair_row 8, self_token 3, CSR 5 + 3; units 4, CSR 5 + 4, expand 9, unit CSR 7 + 9,
  // send buffer 4 rows and receive buffer 6 rows of 8.
  EXPECT_EQ(m.dispatch, (8 + 3 + 5 + 3 + 4 + 5 + 4 + 9 + 7 + 9 + 4 * 8 + 6 * 8) * 4);
}

TEST(SimMemory, CudaAttentionAndBf16Copies) {
  Config cfg = tiny_sim_config();
  const MemoryBreakdown cpu = rank_memory(cfg, 1, 0, 1, 1, "cpu", {});
  const MemoryBreakdown fp32 = rank_memory(cfg, 1, 0, 1, 1, "cuda", {});
  // CUDA saves one log-sum-exp per (sequence, head, query): 8 instead of 32 per layer, and the
  // same for the backward scratch.
  EXPECT_EQ(cpu.activations - fp32.activations, 2 * (32 - 8) * 4);
  EXPECT_EQ(cpu.scratch - fp32.scratch, (32 - 8) * 4);
  EXPECT_EQ(fp32.bf16, 0);
  cfg.precision = "bf16";
  const MemoryBreakdown bf16 = rank_memory(cfg, 1, 0, 1, 1, "cuda", {});
  // 2 bytes per parameter; the largest fp32 input of one product in bf16 (the head's weight
  // gradient: dlogits, R * V = 64 elements); 32 MiB of cuBLASLt workspace; the attention
  // backward's copies: 2 heads x 128 padded rows, each 4 x 16 bf16 and 2 floats (136 bytes).
  EXPECT_EQ(bf16.bf16, 2 * 1848 + 2 * 64 + 32 * 1048576 + 256 * 136);
  // Stored in bf16, half the bytes: qkv and att of both layers, ln1 and ln_f (2 * 4 R d + 2 R d =
  // 320), the dense FFN's gu and act (3 R 12 = 144), the shared expert's (72), the experts' gu
  // (96); less the FFN norm's output copied in bf16 for the products (R d = 32, 2 bytes each);
  // in the scratch, dqkv (96) and the FFNs' xe (64), act (48), yc, dyc and dxe (64), dgu (96) and
  // dact (48).
  EXPECT_EQ(fp32.activations - bf16.activations, (320 + 144 + 72 + 96) * 2 - 32 * 2);
  EXPECT_EQ(fp32.scratch - bf16.scratch, (96 + 64 + 48 + 64 + 96 + 48) * 2);
}

TEST(SimMemory, MatchesTheCpuBackendsPeak) {
  for (const char* recompute : kRecomputeSettings) {
    SCOPED_TRACE(std::string("train.recompute ") + recompute);
    Config cfg = tiny_sim_config();
    cfg.model.d_model = 64;
    cfg.model.seq_len = 32;
    cfg.model.vocab_size = 256;
    cfg.model.n_layers = 3;
    cfg.model.dense_hidden = 128;
    cfg.moe.n_routed = 8;
    cfg.moe.expert_hidden = 32;
    cfg.train.recompute = recompute;
    const int seqs = 4;
    auto be = make_cpu_backend<float>();
    auto comm = make_single_comm();
    Model<float> model(cfg, *be, *comm, seqs);
    model.init_params(3);
    const int R = seqs * cfg.model.seq_len;
    std::vector<int32_t> tokens(R), targets(R);
    Rng rng(11);
    for (int i = 0; i < R; ++i) tokens[i] = rng.below(256), targets[i] = rng.below(256);
    ForwardOpts opts;
    opts.training = true;
    opts.tokens_global = R;
    model.forward(tokens.data(), targets.data(), seqs, opts);
    model.backward();
    const MemoryBreakdown m = rank_memory(cfg, 1, 0, 1, seqs, "cpu", {});
    const double measured = static_cast<double>(be->peak_bytes());
    const double predicted = m.total() - m.optimizer;  // the model alone: no AdamW state here
    EXPECT_NEAR(predicted / measured, 1.0, 0.01) << "predicted " << predicted << ", measured " << measured;
  }
}

}  // namespace
}  // namespace dsmoe::sim
