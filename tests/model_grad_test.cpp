// The whole model's total loss (LM + every balance term) against central finite differences,
// in double precision, for every routing variant.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>

#include "backend/cpu_backend.h"
#include "model/layout.h"
#include "model/model.h"
#include "model_variants.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using test::Case;
using test::tiny_config;

class ModelGrad : public ::testing::TestWithParam<Case> {};

TEST_P(ModelGrad, TotalLossMatchesFiniteDifferences) {
  Config cfg = tiny_config();
  GetParam().edit(cfg);
  auto be = make_cpu_backend<double>();
  auto comm = make_single_comm();
  const int n_seqs = 3;
  Model<double> model(cfg, *be, *comm, n_seqs);
  model.init_params(42);
  std::vector<std::vector<float>> bias = model.bias();
  for (auto& b : bias)
    for (size_t i = 0; i < b.size(); ++i) b[i] = cfg.balance.bias_rate > 0 ? 0.05f * (i % 3) : 0.0f;
  model.set_bias(bias);

  const int R = n_seqs * cfg.model.seq_len;
  std::vector<int32_t> tokens(R), targets(R);
  Rng rng(7);
  for (int i = 0; i < R; ++i) {
    tokens[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
    targets[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
  }
  ForwardOpts opts;
  opts.training = true;
  opts.noise_key = 99;
  auto loss = [&]() {
    ForwardResult r = model.forward(tokens.data(), targets.data(), n_seqs, opts);
    return r.ce_sum / R + r.aux_loss;
  };

  model.zero_grads();
  loss();
  model.backward();
  const double* grad = model.grads();
  double* param = model.params();

  const double h = 1e-5;
  int checked = 0;
  for (const auto& t : model.table().tensors()) {
    for (int s = 0; s < 4; ++s) {  // four elements of every tensor
      const int64_t e = static_cast<int64_t>(rng.below(t.numel)), i = t.at(e);
      double keep = param[i];
      param[i] = keep + h;
      double lp = loss();
      param[i] = keep - h;
      double lm = loss();
      param[i] = keep;
      double fd = (lp - lm) / (2 * h);
      // Central differences in double: truncation O(h^2) ~ 1e-10 and rounding ~1e-16/h ~ 1e-11.
      EXPECT_NEAR(grad[i], fd, 1e-7 + 1e-5 * std::fabs(fd)) << t.name << " element " << e;
      checked++;
    }
  }
  EXPECT_GT(checked, 40);
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGrad, ::testing::ValuesIn(test::model_variants()), test::variant_name);

// Activations stored in bf16 (as the CUDA backend stores them under bf16; here the CPU backend
// made so) change the loss and every gradient by rounding only: within a band of the same model
// with fp32 storage. A buffer that one storage writes and the other reads (the FFN norm's output,
// which the router reads in fp32 and the experts' products in bf16) would not be.
TEST(ModelBf16Storage, LossAndGradientsNearFp32Storage) {
  const Config cfg = tiny_config();
  const int n_seqs = 3, R = n_seqs * cfg.model.seq_len;
  std::vector<int32_t> tokens(R), targets(R);
  Rng rng(9);
  for (int i = 0; i < R; ++i) {
    tokens[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
    targets[i] = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
  }
  auto comm = make_single_comm();
  auto run = [&](bool bf16, double* loss) {
    auto be = make_cpu_backend<float>(bf16);
    Model<float> model(cfg, *be, *comm, n_seqs);
    model.init_params(42);
    model.zero_grads();
    ForwardOpts opts;
    opts.training = true;
    const ForwardResult r = model.forward(tokens.data(), targets.data(), n_seqs, opts);
    *loss = r.ce_sum / R + r.aux_loss;
    model.backward();
    return std::vector<float>(model.grads(), model.grads() + model.table().size());
  };
  double loss32 = 0, loss16 = 0;
  const std::vector<float> g32 = run(false, &loss32), g16 = run(true, &loss16);
  EXPECT_NEAR(loss16, loss32, 0.01 * loss32);
  auto tensor_error = [&](const TensorInfo& t) {
    double diff = 0, norm = 0;
    for (int64_t e = 0; e < t.numel; ++e) {
      const int64_t i = t.at(e);
      diff += (double(g16[i]) - g32[i]) * (double(g16[i]) - g32[i]);
      norm += double(g32[i]) * g32[i];
    }
    return std::sqrt(diff / std::max(norm, 1e-30));
  };
  const ParamTable table = build_param_table(cfg, 0, cfg.moe.n_routed);
  for (const TensorInfo& t : table.tensors()) EXPECT_LT(tensor_error(t), 0.05) << t.name;
}

// The first backward after zero_grads writes the gradients (no zero fill of the whole buffer)
// and later ones add to them: on a buffer of NaNs, two backwards give the sum of each alone, and
// the experts that no token chose (their bias far below the others') get zeros.
class GradAccumulation : public ::testing::TestWithParam<Case> {
 protected:
  // The tiny model in double precision with `edit` and then the variant's edits applied.
  std::unique_ptr<Model<double>> make_model(const std::function<void(Config&)>& edit, uint64_t seed) {
    cfg = tiny_config();
    edit(cfg);
    GetParam().edit(cfg);
    auto model = std::make_unique<Model<double>>(cfg, *be, *comm, n_seqs);
    model->init_params(seed);
    return model;
  }
  static constexpr int n_seqs = 2;
  Config cfg;
  std::unique_ptr<Backend<double>> be = make_cpu_backend<double>();
  std::unique_ptr<Comm> comm = make_single_comm();
};

TEST_P(GradAccumulation, TwoBackwardsOnAStaleBufferSumEachAlone) {
  auto owned = make_model([](Config& c) { c.balance.bias_rate = 0.01; }, 5);  // the bias steers the choice
  Model<double>& model = *owned;
  const int R = n_seqs * cfg.model.seq_len;
  const std::vector<int> idle = {0, 3, 4};  // experts that take no token: two runs of them
  std::vector<std::vector<float>> bias = model.bias();
  for (auto& b : bias)
    for (int e : idle) b[e] = -100;
  model.set_bias(bias);
  std::vector<int32_t> batch[2][2];          // [batch][tokens, targets]
  Rng rng(3);
  for (auto& b : batch)
    for (auto& v : b) {
      v.resize(R);
      for (auto& x : v) x = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
    }
  const int64_t P = model.table().size();
  auto run = [&](std::vector<int> which) {
    std::fill(model.grads(), model.grads() + P, std::nan(""));
    model.zero_grads();
    for (int b : which) {
      ForwardOpts opts;
      opts.training = true;
      opts.loss_scale = 0.5;
      model.forward(batch[b][0].data(), batch[b][1].data(), n_seqs, opts);
      model.backward();
    }
    return std::vector<double>(model.grads(), model.grads() + P);
  };
  const std::vector<double> a = run({0}), b = run({1}), ab = run({0, 1});
  for (int64_t i = 0; i < P; ++i) {
    ASSERT_TRUE(std::isfinite(a[i]) && std::isfinite(ab[i])) << "element " << i;
    ASSERT_NEAR(ab[i], a[i] + b[i], 1e-12 * (1 + std::fabs(ab[i]))) << "element " << i;
  }
  int zero_experts = 0;
  for (const TensorInfo& t : model.table().tensors()) {
    if (t.name.find("moe/experts/") == std::string::npos) continue;
    const std::vector<double> grad = tensor_elements(t, a.data());
    const int64_t per_expert = t.slice();
    for (int e = 0; e < t.shape[0]; ++e) {
      const bool zero = std::all_of(grad.begin() + e * per_expert, grad.begin() + (e + 1) * per_expert,
                                    [](double x) { return x == 0; });
      EXPECT_EQ(zero, std::count(idle.begin(), idle.end(), e) > 0) << t.name << " expert " << e;
    }
    zero_experts++;
  }
  EXPECT_EQ(zero_experts, 3 * cfg.n_moe_layers());
}

// The gradient all-reduce starts on a stage's tensors as soon as the backward reports it: by then
// they must hold their final values, in a backward that writes them and in one that adds to them.
TEST_P(GradAccumulation, EachStageIsFinalWhenTheBackwardReportsIt) {
  auto owned = make_model([](Config& c) { c.moe.router_noise = 0.1; }, 6);
  Model<double>& model = *owned;
  const int R = n_seqs * cfg.model.seq_len;
  const auto stages = model.backward_stages();
  ASSERT_EQ(stages.size(), static_cast<size_t>(cfg.model.n_layers + 2));
  std::vector<int32_t> tokens(R), targets(R);
  Rng rng(4);
  for (auto* v : {&tokens, &targets})
    for (auto& x : *v) x = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
  model.zero_grads();
  for (int pass = 0; pass < 2; ++pass) {
    SCOPED_TRACE(pass == 0 ? "written" : "added to");
    ForwardOpts opts;
    opts.training = true;
    opts.noise_key = 9 + pass;
    model.forward(tokens.data(), targets.data(), n_seqs, opts);
    std::vector<std::vector<std::vector<double>>> seen;  // [stage][tensor] when reported
    model.backward([&](int stage) {
      ASSERT_EQ(stage, static_cast<int>(seen.size())) << "stages in order, each once";
      seen.emplace_back();
      for (const std::string& name : stages[stage])
        seen.back().push_back(tensor_elements(model.table().get(name), model.grads()));
    });
    ASSERT_EQ(seen.size(), stages.size());
    for (size_t s = 0; s < stages.size(); ++s)
      for (size_t i = 0; i < stages[s].size(); ++i)
        EXPECT_EQ(seen[s][i], tensor_elements(model.table().get(stages[s][i]), model.grads()))
            << stages[s][i] << " changed after its stage " << s << " was reported";
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GradAccumulation,
                         ::testing::Values(Case{"untied_shared", [](Config&) {}},
                                           Case{"tied_no_shared",
                                                [](Config& c) {
                                                  c.model.tie_embeddings = true;
                                                  c.moe.n_shared = 0;
                                                }}),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace dsmoe
