// train.recompute attention, moe and full keep one layer's attention activations, experts' gate and
// up products, or both, and recompute each layer's in the backward: the same losses and gradients
// to the bit as keeping them all (double precision, every routing variant, two micro-batches
// accumulating), the backend's peak memory smaller by exactly the layers' sets it no longer keeps,
// and generation refused where it needs every layer's keys and values.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "backend/cpu_backend.h"
#include "model/model.h"
#include "model_variants.h"
#include "util/check.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

constexpr int kSeqs = 3;

struct Trained {
  std::vector<double> losses;
  std::vector<double> grads;
  size_t peak = 0;
};

// Two micro-batches' forward and backward of the tiny model; the peak is of its own backend.
// T float with bf16_storage: the activations stored in bf16, as the GPU's bf16 path stores them.
template <typename T = double>
Trained train_two_micro_batches(Config cfg, bool bf16_storage = false) {
  auto be = make_cpu_backend<T>(bf16_storage);
  auto comm = make_single_comm();
  Model<T> model(cfg, *be, *comm, kSeqs);
  model.init_params(42);
  const int R = kSeqs * cfg.model.seq_len;
  Rng rng(7);
  Trained out;
  model.zero_grads();
  for (int micro = 0; micro < 2; ++micro) {
    std::vector<int32_t> tokens(R), targets(R);
    for (int i = 0; i < R; ++i) {
      tokens[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
      targets[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
    }
    ForwardOpts opts;
    opts.training = true;
    opts.noise_key = 99 + micro;
    opts.loss_scale = 0.5;
    const ForwardResult r = model.forward(tokens.data(), targets.data(), kSeqs, opts);
    out.losses.push_back(r.ce_sum);
    out.losses.push_back(r.aux_loss);
    model.backward();
  }
  for (T g : to_host(*be, model.grads(), model.table().size())) out.grads.push_back(g);
  out.peak = be->peak_bytes();
  return out;
}

class Recompute : public ::testing::TestWithParam<test::Case> {};

TEST_P(Recompute, EverySettingGivesTheStoredGradientsToTheBitInLessMemory) {
  Config cfg = test::tiny_config();
  GetParam().edit(cfg);
  const Trained stored = train_two_micro_batches(cfg);
  const auto& m = cfg.model;
  const int64_t R = (int64_t)kSeqs * m.seq_len, n = cfg.moe.expert_hidden, sh = (int64_t)cfg.moe.n_shared * n;
  // attention: per layer, qkv [R, 3d], the attention's output [R, d] and its saved tensor, all but
  // one set. moe: per MoE layer, the routed experts' gu [R top_k, 2n] and the shared experts' gu
  // and act [R, 3 sh], all but one set.
  const int64_t saved = make_cpu_backend<double>()->attention_saved_size(kSeqs, m.seq_len, m.n_heads);
  const int64_t attention = (m.n_layers - 1) * (4 * R * m.d_model + saved);
  const int64_t experts = std::max(cfg.n_moe_layers() - 1, 0) * (R * cfg.moe.top_k * 2 * n + R * 3 * sh);
  for (const char* setting : {"attention", "moe", "full"}) {
    SCOPED_TRACE(setting);
    cfg.train.recompute = setting;
    const Trained recomputed = train_two_micro_batches(cfg);
    EXPECT_EQ(recomputed.losses, stored.losses);
    EXPECT_EQ(recomputed.grads, stored.grads);
    const std::string s = setting;
    const int64_t saving = (s == "moe" ? 0 : attention) + (s == "attention" ? 0 : experts);
    EXPECT_EQ(stored.peak - recomputed.peak, saving * sizeof(double));
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Recompute, ::testing::ValuesIn(test::model_variants()), test::variant_name);

// With the activations stored in bf16 (what the GPU's bf16 path keeps), the recomputed ones are
// rounded alike: the same gradients to the bit in float.
TEST(Recompute, Bf16StoredActivationsToo) {
  Config cfg = test::tiny_config();
  const Trained stored = train_two_micro_batches<float>(cfg, true);
  for (const char* setting : {"attention", "moe", "full"}) {
    SCOPED_TRACE(setting);
    cfg.train.recompute = setting;
    const Trained recomputed = train_two_micro_batches<float>(cfg, true);
    EXPECT_EQ(recomputed.losses, stored.losses);
    EXPECT_EQ(recomputed.grads, stored.grads);
    EXPECT_LT(recomputed.peak, stored.peak);
  }
  EXPECT_NE(stored.grads, train_two_micro_batches<float>(test::tiny_config()).grads) << "bf16 storage rounds";
}

TEST(Recompute, GenerationNeedsEveryLayersKeysAndValues) {
  Config cfg = test::tiny_config();
  cfg.train.recompute = "attention";
  auto be = make_cpu_backend<float>();
  auto comm = make_single_comm();
  Model<float> model(cfg, *be, *comm, 1);
  model.init_params(1);
  const int32_t token = 3;
  try {
    model.forward_positions(&token, 0, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.recompute: none"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsmoe
