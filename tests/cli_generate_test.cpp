// `dsmoe generate` with its KV cache prints what the uncached generation before it printed for
// the same checkpoint (the goldens below, from that version of the command), greedy and sampled,
// on a prompt that the generation carries past seq_len.
#include <gtest/gtest.h>

#include <algorithm>

#include "backend/cpu_backend.h"
#include "config/config.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "test_util.h"

namespace dsmoe {
namespace {

// A model at its initialization (its weights are functions of the seed alone, the same on every
// machine) with a dense layer, shared experts, a balance bias and capacity dropping. Its head
// scores only the lowercase letters and the space (the other rows are 0), so that the output is
// printable.
void write_initialized_checkpoint(const std::string& path) {
  const Config cfg = parse_config(
      "name: golden\nseed: 11\n"
      "model: {vocab_size: 256, d_model: 32, n_layers: 3, n_heads: 2, seq_len: 24, first_dense_layers: 1, "
      "dense_hidden: 48, init_std: 0.5}\n"
      "moe: {n_routed: 4, n_shared: 1, top_k: 2, expert_hidden: 16, capacity_factor: 0.75}\n"
      "data: {path: none.txt}\n",
      "<golden>");
  auto be = make_cpu_backend<float>();
  auto comm = make_single_comm();
  Model<float> model(cfg, *be, *comm, 1);
  model.init_params(cfg.seed);
  CheckpointState st;
  st.params = model.params_to_host();
  const TensorInfo& head = model.table().get("lm_head");
  const int d = cfg.model.d_model;
  for (int v = 0; v < cfg.model.vocab_size; ++v)
    if (v != ' ' && (v < 'a' || v > 'z'))
      for (int j = 0; j < d; ++j) st.params[head.at((int64_t)v * d + j)] = 0;
  st.m.assign(st.params.size(), 0.0f);
  st.v = st.m;
  st.moe_layers = model.moe_layers();
  st.bias.assign(st.moe_layers.size(), {0.3f, -0.2f, 0.1f, 0.0f});
  st.meta.config_yaml = to_yaml(cfg);
  write_checkpoint(path, model.table(), st);
}

class CliGenerate : public ::testing::Test {
 protected:
  void SetUp() override { write_initialized_checkpoint(ck); }
  test::TempDir dir;
  const std::string ck = dir.file("checkpoint.h5");
};

TEST_F(CliGenerate, GreedyOutputIsTheUncachedOnes) {
  const test::RunResult r =
      test::run_dsmoe("generate --checkpoint " + ck + " --prompt 'the cat' --max-new-tokens 40 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "the catgggmmcccmmymsymkssxxqyjkskkxgnkcnkxglgck\n");
}

// The same random numbers, one per token, as before.
TEST_F(CliGenerate, SampledOutputIsTheUncachedOnes) {
  const test::RunResult r = test::run_dsmoe("generate --checkpoint " + ck +
                                            " --prompt 'the cat' --max-new-tokens 40 --temperature 0.8 --top-k 5 "
                                            "--seed 3");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "the catggggczyfucmxgmxemxymjvefnufgwgmmwzfxxm g\n");
}

}  // namespace
}  // namespace dsmoe
