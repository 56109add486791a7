// Generation with a KV cache (model/generator.h) against the uncached path it replaced: a forward
// over the window of the last seq_len tokens (padded with token 0 after them) for every token,
// read at the window's last position.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "backend/cpu_backend.h"
#include "model/generator.h"
#include "model/model.h"
#include "model_variants.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using test::Case;

// The uncached path: the logits of the token after `context` from a forward of its window.
std::vector<float> window_logits(Model<float>& model, const std::vector<int32_t>& context) {
  const int T = model.config().model.seq_len;
  const int n = static_cast<int>(std::min<size_t>(context.size(), T));
  std::vector<int32_t> window(T, 0);
  std::copy(context.end() - n, context.end(), window.begin());
  model.forward(window.data(), nullptr, 1, ForwardOpts{});
  return model.logits_row_to_host(n - 1);
}

float max_magnitude(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

float max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

int argmax(const std::vector<float>& v) { return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin()); }

// Greedy continuation of `prompt` by `n_new` tokens, each from next_logits(context).
std::vector<int32_t> greedy(std::vector<int32_t> context, int n_new,
                            const std::function<std::vector<float>(const std::vector<int32_t>&)>& next_logits) {
  for (int i = 0; i < n_new; ++i) context.push_back(argmax(next_logits(context)));
  return context;
}

class Generate : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    cfg = test::tiny_config();
    cfg.model.seq_len = 12;
    GetParam().edit(cfg);
    model = make_model();
    reference = make_model();
  }
  std::unique_ptr<Model<float>> make_model() const {
    auto m = std::make_unique<Model<float>>(cfg, *be, *comm, 1);
    m->init_params(17);
    std::vector<std::vector<float>> bias = m->bias();
    for (auto& b : bias)
      for (size_t i = 0; i < b.size(); ++i) b[i] = 0.2f * static_cast<float>(i % 3) - 0.2f;
    m->set_bias(bias);
    return m;
  }
  std::vector<int32_t> prompt(int n) const {
    std::vector<int32_t> p(n);
    Rng rng(3);
    for (auto& t : p) t = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
    return p;
  }
  // Token for token: the cached generation and the uncached one.
  void expect_same_generation(int prompt_len, int n_new) {
    Generator generator(*model);
    const std::vector<int32_t> cached =
        greedy(prompt(prompt_len), n_new, [&](const auto& c) { return generator.next_logits(c); });
    const std::vector<int32_t> uncached =
        greedy(prompt(prompt_len), n_new, [&](const auto& c) { return window_logits(*reference, c); });
    EXPECT_EQ(cached, uncached);
  }

  // 20 steps' logits against the window forward's, each within `rel` of its largest magnitude.
  void expect_step_logits_near(float rel) {
    Generator generator(*model);
    std::vector<int32_t> context = prompt(4);
    for (int i = 0; i < 20; ++i) {
      const std::vector<float> cached = generator.next_logits(context);
      const std::vector<float> want = window_logits(*reference, context);
      EXPECT_LE(max_difference(cached, want), rel * max_magnitude(want)) << context.size() << " tokens";
      context.push_back(argmax(want));
    }
  }

  Config cfg;
  std::unique_ptr<Backend<float>> be = make_cpu_backend<float>();
  std::unique_ptr<Comm> comm = make_single_comm();
  std::unique_ptr<Model<float>> model, reference;  // the same, one for each path (a forward clears the cache)
};

TEST_P(Generate, GreedyWithinSeqLenEqualsUncached) { expect_same_generation(3, 8); }  // ends at 11 < 12

TEST_P(Generate, GreedyPastSeqLenEqualsUncached) { expect_same_generation(5, 30); }  // slides 23 times

// Every step's logits, from the first (the prompt at once) through the one-position steps to the
// sliding window, against the window forward's last position. Both are fp32 over the same math,
// the cached step's products on fewer rows: they may differ by rounding only. Tolerance: 1e-5
// of the largest logit's magnitude, per logit (observed: equal here; at most 1.1e-6 at the
// quickstart model's shapes, d_model 256, seq_len 64, 70 steps).
TEST_P(Generate, StepLogitsEqualWindowForwardLastPosition) { expect_step_logits_near(1e-5f); }

// Activations stored in bf16 (as the CUDA backend stores them under precision: bf16; here the
// CPU backend made so): the cached rows are read where they lie in the bf16 buffers. A rounding
// difference between the paths can flip a stored value's last bf16 bit (4e-3 relative), so the
// tolerance is 2e-2 of the largest logit's magnitude (observed: equal).
TEST_P(Generate, StepLogitsNearWindowForwardUnderBf16Storage) {
  model.reset();  // their buffers go back to the backend they came from
  reference.reset();
  be = make_cpu_backend<float>(/*bf16_storage=*/true);
  model = make_model();
  reference = make_model();
  expect_step_logits_near(2e-2f);
}

// A context that is not the last one grown by a token starts the cache over.
TEST_P(Generate, AnotherContextStartsOver) {
  Generator generator(*model);
  const std::vector<int32_t> a = prompt(6);
  std::vector<int32_t> b = a;
  b[2] = (b[2] + 1) % cfg.model.vocab_size;
  generator.next_logits(a);
  const std::vector<float> got = generator.next_logits(b);
  const std::vector<float> want = window_logits(*reference, b);
  for (size_t v = 0; v < want.size(); ++v) EXPECT_NEAR(got[v], want[v], 1e-5f * (1 + std::fabs(want[v])));
}

INSTANTIATE_TEST_SUITE_P(Variants, Generate, ::testing::ValuesIn(test::model_variants()), test::variant_name);

}  // namespace
}  // namespace dsmoe
