// Training end to end on a tiny model: it learns, it is deterministic, and a run stopped
// and resumed ends bit-identical to one that never stopped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "comm/comm.h"
#include "io/checkpoint.h"
#include "io/h5.h"
#include "sim/memory.h"
#include "model/layout.h"
#include "train/engine.h"
#include "train/trainer.h"
#include "train_fixture.h"
#include "util/host_info.h"
#include "util/version.h"

namespace dsmoe {
namespace {

using test::TempDir;

struct TinyRun {
  TempDir dir;
  std::string corpus = dir.file("corpus.txt");
  TinyRun() { test::write_file(corpus, test::make_corpus(3000, 11)); }
  Config config(const std::vector<std::string>& overrides, const std::string& out = "out") {
    return parse_config(test::tiny_yaml(corpus, dir.file(out)), "tiny.yaml", overrides);
  }
};

CheckpointState read_all(const Config& cfg, const std::string& path) {
  Config c = cfg;
  c.model.vocab_size = config_from_checkpoint(path).model.vocab_size;
  std::vector<int> moe_layers;
  for (int l = 0; l < c.model.n_layers; ++l)
    if (c.is_moe_layer(l)) moe_layers.push_back(l);
  return read_checkpoint(path, build_param_table(c, 0, c.moe.n_routed), moe_layers, c.moe.n_routed);
}


TEST(TrainLoop, TinyModelLearnsBelowUnigramEntropy) {
  TinyRun run;
  Config cfg = run.config({"train.steps=120", "train.warmup_steps=5", "train.log_every=20",
                           "train.eval_every=60", "train.eval_batches=4"});
  auto comm = make_single_comm();
  TrainSummary s = run_training(cfg, *comm);
  const double h1 = test::unigram_entropy(test::read_file(run.corpus));
  // Uniform guessing costs ln(vocab) ~ 4.4 nats; the unigram entropy (~2.9 nats here) is the
  // floor for any model that ignores context. Beating it by 0.5 nats needs learned context.
  EXPECT_LT(s.final_eval_loss, h1 - 0.5) << "unigram entropy " << h1;
  EXPECT_EQ(s.steps_run, 120);
}

TEST(TrainLoop, SameConfigGivesBitIdenticalRuns) {
  TinyRun run;
  auto comm = make_single_comm();
  const std::vector<std::string> extra = {"moe.router_noise=0.3"};
  Config a = run.config(extra, "a"), b = run.config(extra, "b");
  run_training(a, *comm);
  run_training(b, *comm);
  CheckpointState ca = read_all(a, a.out + "/checkpoint.h5"), cb = read_all(b, b.out + "/checkpoint.h5");
  EXPECT_EQ(ca.params, cb.params);
  EXPECT_EQ(ca.m, cb.m);
  EXPECT_EQ(test::read_series(a.out + "/metrics.h5", "train/loss"), test::read_series(b.out + "/metrics.h5", "train/loss"));
}

TEST(TrainLoop, ResumeContinuesBitIdentically) {
  TinyRun run;
  auto comm = make_single_comm();
  // Every piece of state a resume must restore: AdamW moments and step, the balance bias,
  // shuffled data order, router noise, capacity dropping, gradient accumulation.
  const std::vector<std::string> extra = {"moe.router_noise=0.3", "moe.capacity_factor=1.0",
                                          "balance.bias_rate=0.01", "train.micro_batches=2", "data.shuffle=true"};
  Config straight = run.config(extra, "straight"), split = run.config(extra, "split");
  run_training(straight, *comm);
  EXPECT_EQ(run_training(split, *comm, {3}).steps_run, 3);
  EXPECT_EQ(read_all(split, split.out + "/checkpoint.h5").meta.step, 3);
  EXPECT_EQ(run_training(split, *comm).steps_run, 5);

  CheckpointState a = read_all(straight, straight.out + "/checkpoint.h5");
  CheckpointState b = read_all(split, split.out + "/checkpoint.h5");
  EXPECT_EQ(a.meta.step, 8);
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.m, b.m);
  EXPECT_EQ(a.v, b.v);
  EXPECT_EQ(a.bias, b.bias);
  EXPECT_EQ(a.meta.loss, b.meta.loss);
  // The resumed metrics hold each step once, with the same values.
  EXPECT_EQ(test::read_series(split.out + "/metrics.h5", "train/step"),
            std::vector<double>({1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(test::read_series(straight.out + "/metrics.h5", "train/loss"),
            test::read_series(split.out + "/metrics.h5", "train/loss"));
  EXPECT_EQ(test::read_series(split.out + "/metrics.h5", "eval/step"), std::vector<double>({4, 8}));
  // Each attempt is recorded: the start, then the resume from step 3.
  h5::Handle f = h5::open_file(split.out + "/metrics.h5", H5F_ACC_RDONLY);
  ASSERT_TRUE(f.valid());
  const std::string attempts = h5::read_attr_string(f, "attempts");
  EXPECT_EQ(std::count(attempts.begin(), attempts.end(), '\n'), 2) << attempts;
  EXPECT_NE(attempts.find("Z from step 0: dsmoe "), std::string::npos) << attempts;
  EXPECT_NE(attempts.find("Z from step 3: dsmoe "), std::string::npos) << attempts;
}

// DSMOE_NAN_AT (a test hook) puts a NaN into the gradients at the given steps.
struct NanAt {
  explicit NanAt(const char* steps) { setenv("DSMOE_NAN_AT", steps, 1); }
  ~NanAt() { unsetenv("DSMOE_NAN_AT"); }
};

TEST(TrainLoop, NonFiniteStepIsSkippedAndTrainingGoesOn) {
  TinyRun run;
  auto comm = make_single_comm();
  NanAt nan("2");
  Engine engine(run.config({"balance.bias_rate=0.01"}), *comm);
  engine.train_step();
  engine.train_step();
  const std::vector<float> before = engine.model().params_to_host();
  const std::vector<std::vector<float>> bias_before = engine.model().bias();
  StepStats bad = engine.train_step();
  EXPECT_TRUE(bad.skipped);
  EXPECT_FALSE(std::isfinite(bad.grad_norm));
  EXPECT_EQ(engine.model().params_to_host(), before) << "a skipped step leaves the weights as they were";
  EXPECT_EQ(engine.model().bias(), bias_before);
  EXPECT_EQ(engine.step(), 3);
  StepStats good = engine.train_step();
  EXPECT_FALSE(good.skipped);
  const std::vector<float> after = engine.model().params_to_host();
  EXPECT_NE(after, before);
  for (float w : after) ASSERT_TRUE(std::isfinite(w));
}

TEST(TrainLoop, SkippedStepsAreCountedAndTooManyInARowStopTheRun) {
  TinyRun run;
  auto comm = make_single_comm();
  {
    NanAt nan("1,4");
    Config cfg = run.config({"train.log_every=2"}, "one");
    EXPECT_EQ(run_training(cfg, *comm).skipped_steps, 2);
    // Rows after steps 2, 4, 6, 8: step 2 holds the skip at engine step 1 (the 2nd step), step
    // 6 the one at engine step 4 (the 5th).
    EXPECT_EQ(test::read_series(cfg.out + "/metrics.h5", "train/skipped_steps"), std::vector<double>({1, 0, 1, 0}));
  }
  NanAt nan("1,2,3");
  Config cfg = run.config({}, "three");
  try {
    run_training(cfg, *comm, {0, 2});
    FAIL() << "three non-finite steps in a row must stop the run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 steps in a row"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--max-skipped-steps 2"), std::string::npos) << e.what();
  }
}

// The model's buffers, the dispatcher's included, are sized for one micro-batch: 2 micro-batches of
// 4 sequences take the memory of 4 sequences (beside the parameters and optimizer state).
TEST(TrainLoop, MemoryEstimateMatchesWhatTheBackendAllocates) {
  TinyRun run;
  auto comm = make_single_comm();
  for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{
           {}, {"model.d_model=64", "moe.top_k=3", "moe.n_shared=2"}, {"train.micro_batches=2"},
           {"train.recompute=attention"}, {"train.recompute=moe"}, {"train.recompute=full", "train.micro_batches=2"}}) {
    Engine engine(run.config(extra), *comm);
    engine.train_step();
    const double measured = static_cast<double>(engine.backend().peak_bytes());
    const int seqs = engine.config().train.batch_size / engine.config().train.micro_batches;
    const double estimate = sim::rank_memory(engine.config(), 1, 0, 1, seqs, "cpu", {}).total();
    // The estimate counts the buffers the model allocates; small allocations are rounded up.
    EXPECT_NEAR(estimate, measured, 0.05 * measured);
  }
}

// moe.force_balance (dsmoe bench --force-balance): every expert of every layer gets the same
// rows each step (the tiny model's tokens per micro-batch times top_k divide by N), and the step
// still trains.
TEST(TrainLoop, ForcedBalanceGivesEveryExpertTheSameRows) {
  TinyRun run;
  auto comm = make_single_comm();
  Engine engine(run.config({"moe.force_balance=true"}), *comm);
  const int N = engine.config().moe.n_routed;
  for (int s = 0; s < 2; ++s) {
    const StepStats st = engine.train_step();
    ASSERT_EQ(st.load.size() % N, 0u);
    const double rows = static_cast<double>(engine.tokens_per_step()) * engine.config().moe.top_k / N;
    for (double l : st.load) EXPECT_EQ(l, rows) << "step " << s;
    EXPECT_TRUE(std::isfinite(st.loss));
  }
}

TEST(TrainLoop, MetricsFileHasTheSpecLayout) {
  TinyRun run;
  auto comm = make_single_comm();
  Config cfg = run.config({"balance.bias_rate=0.01"});
  run_training(cfg, *comm);
  const std::string path = cfg.out + "/metrics.h5";
  EXPECT_EQ(test::read_series(path, "train/tokens").back(), 8 * 8 * 32);
  h5::Handle f = h5::open_file(path, H5F_ACC_RDONLY);
  ASSERT_TRUE(f.valid());
  EXPECT_EQ(h5::read_attr_string(f, "backend"), "cpu");
  EXPECT_EQ(h5::read_attr_int64(f, "world_size"), 1);
  EXPECT_GT(h5::read_attr_int64(f, "params_active"), 0);
  EXPECT_LT(h5::read_attr_int64(f, "params_active"), h5::read_attr_int64(f, "params_total"));
  EXPECT_GT(h5::read_attr_double(f, "flops_per_token"), 0);
  EXPECT_NE(h5::read_attr_string(f, "config").find("n_routed: 4"), std::string::npos);
  // Provenance: the build, the device, the host and the command of the attempt.
  EXPECT_EQ(h5::read_attr_string(f, "dsmoe_version"), source_version());
  EXPECT_NE(source_version(), std::string());
  EXPECT_EQ(h5::read_attr_string(f, "device"), device_description("cpu"));
  EXPECT_EQ(h5::read_attr_string(f, "host"), host_name());
  EXPECT_NE(h5::read_attr_string(f, "command").find("train_loop_test"), std::string::npos);
  const std::string attempts = h5::read_attr_string(f, "attempts");
  EXPECT_NE(attempts.find("Z from step 0: dsmoe " + std::string(source_version()) + ", 1 rank(s), cpu on " +
                          device_description("cpu") + ", host " + host_name() + ": "),
            std::string::npos)
      << attempts;
  for (const char* name : {"train/step", "train/loss", "train/aux_loss", "train/lr", "train/grad_norm", "train/tokens",
                           "train/tokens_per_s", "train/step_time_s", "train/time/compute", "train/time/dispatch",
                           "train/time/combine", "train/time/allreduce", "train/comm/bytes_sent",
                           "train/comm/recv_imbalance", "experts/step"})
    EXPECT_EQ(h5::shape(h5::open_dataset(f, name)), std::vector<int64_t>({8})) << name;
  for (const char* name : {"train/rank/step_time_s", "train/rank/time/compute", "train/rank/time/dispatch",
                           "train/rank/time/combine", "train/rank/time/allreduce", "train/rank/expert_rows",
                           "train/rank/tokens_received"})
    EXPECT_EQ(h5::shape(h5::open_dataset(f, name)), std::vector<int64_t>({8, 1})) << name;
  EXPECT_EQ(h5::shape(h5::open_dataset(f, "experts/load")), std::vector<int64_t>({8, 1, 4}));
  EXPECT_EQ(h5::shape(h5::open_dataset(f, "experts/bias")), std::vector<int64_t>({8, 1, 4}));
  EXPECT_EQ(h5::shape(h5::open_dataset(f, "experts/max_violation")), std::vector<int64_t>({8, 1}));
  EXPECT_EQ(h5::shape(h5::open_dataset(f, "experts/dropped")), std::vector<int64_t>({8, 1}));
  EXPECT_EQ(h5::shape(h5::open_dataset(f, "eval/loss")), std::vector<int64_t>({2}));
  // Every step routes batch * seq_len * top_k (token, expert) pairs.
  std::vector<double> load(8 * 4);
  h5::read_rows(h5::open_dataset(f, "experts/load"), H5T_NATIVE_DOUBLE, 0, {8, 1, 4}, load.data());
  for (int s = 0; s < 8; ++s) EXPECT_EQ(load[s * 4] + load[s * 4 + 1] + load[s * 4 + 2] + load[s * 4 + 3], 8 * 32 * 2);
}

}  // namespace
}  // namespace dsmoe
