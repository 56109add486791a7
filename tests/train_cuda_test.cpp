// A few training steps on the GPU (fp32) match the CPU backend's losses and weights, bf16 stays
// within a band of them, a checkpoint written on one backend loads on the other, and every
// train.recompute setting trains as keeping the activations does in less memory, the amount the
// memory model predicts; the same config trained twice gives the same bits. Skipped where no GPU
// is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda_loader.h"
#include "comm/comm.h"
#include "io/checkpoint.h"
#include "model/layout.h"
#include "sim/memory.h"
#include "train/engine.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

// A GPU (else the test skips), the tiny model's corpus, and one rank.
struct TrainCuda : ::testing::Test {
  test::TempDir dir;
  std::unique_ptr<Comm> comm = make_single_comm();
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no GPU: " << why;
    test::write_file(dir.file("corpus.txt"), test::make_corpus(2000, 11));
  }
  // The tiny model on that corpus, with these --set overrides.
  Config tiny(const std::vector<std::string>& sets) {
    return parse_config(test::tiny_yaml(dir.file("corpus.txt"), dir.file("out")), "tiny.yaml", sets);
  }
};

TEST_F(TrainCuda, StepsMatchTheCpuBackend) {
  auto config = [&](const char* backend, const char* precision = "fp32") {
    return tiny({std::string("backend=") + backend, std::string("precision=") + precision, "moe.capacity_factor=1.2",
                 "balance.device_alpha=0.05", "balance.device_groups=2", "train.micro_batches=2"});
  };
  Engine cpu(config("cpu"), *comm), gpu(config("cuda"), *comm);
  ASSERT_EQ(gpu.backend().name(), "cuda");
  for (int s = 0; s < 4; ++s) {
    StepStats a = cpu.train_step(), b = gpu.train_step();
    // fp32 on both, different summation orders: measured differences are ~1e-6.
    EXPECT_NEAR(a.loss, b.loss, 1e-4) << "step " << s;
    EXPECT_NEAR(a.aux_loss, b.aux_loss, 1e-5) << "step " << s;
    EXPECT_EQ(a.load, b.load) << "step " << s;
  }
  std::vector<float> pa = cpu.model().params_to_host(), pb = gpu.model().params_to_host();
  double worst = 0;
  for (size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, (double)std::fabs(pa[i] - pb[i]));
  EXPECT_LT(worst, 1e-4);
  EXPECT_NEAR(cpu.evaluate(), gpu.evaluate(), 1e-4);

  // A GPU checkpoint continues on the CPU.
  gpu.save_checkpoint(dir.file("gpu.h5"), StepStats{});
  Engine resumed(config("cpu"), *comm);
  resumed.load_checkpoint(dir.file("gpu.h5"));
  EXPECT_EQ(resumed.model().params_to_host(), pb);
}

TEST_F(TrainCuda, Bf16StaysWithinABandOfFp32) {
  auto config = [&](const char* precision) {
    return tiny({"backend=cuda", std::string("precision=") + precision});
  };
  Engine fp32(config("fp32"), *comm), bf16(config("bf16"), *comm);
  double first = 0, last = 0;
  for (int s = 0; s < 8; ++s) {
    StepStats a = fp32.train_step(), b = bf16.train_step();
    // bf16 rounds every product's inputs to 8 significant bits: the loss moves by ~1e-3.
    EXPECT_NEAR(a.loss, b.loss, 2e-2 * a.loss) << "step " << s;
    if (s == 0) first = b.loss;
    last = b.loss;
  }
  EXPECT_LT(last, first) << "bf16 training makes progress";
  EXPECT_NEAR(fp32.evaluate(), bf16.evaluate(), 2e-2 * fp32.evaluate());
}

// Recomputation runs the forward's kernels on the forward's inputs, so its weights differ from the
// stored path's no more than a second stored run's do (bitwise where the GPU's reductions are
// deterministic). The peak memory falls by what the memory model says. (The whole peak is
// compared with the model on the benchmark configs: on a model this small, what the model leaves
// out, such as the stream-ordered scratch whose high-water mark the engines of one process
// share, can be more than 5 % of it.)
TEST_F(TrainCuda, RecomputedActivationsTrainAsStoredInLessMemory) {
  for (const char* precision : {"fp32", "bf16"}) {
    // Two MoE layers, so that recomputing the experts saves one layer's.
    auto config = [&](const char* recompute) {
      return tiny({"backend=cuda", std::string("precision=") + precision, std::string("train.recompute=") + recompute,
                   "train.micro_batches=2", "model.n_layers=3"});
    };
    struct Run {
      std::vector<double> losses;
      std::vector<float> params;
      double peak = 0, predicted = 0;
    };
    auto train = [&](const char* recompute) {
      Engine e(config(recompute), *comm);
      Run r;
      for (int s = 0; s < 3; ++s) r.losses.push_back(e.train_step().loss);
      r.params = e.model().params_to_host();
      r.peak = static_cast<double>(e.backend().peak_bytes());
      const int seqs = e.config().train.batch_size / e.config().train.micro_batches;
      r.predicted = sim::rank_memory(e.config(), 1, 0, 1, seqs, "cuda", {}).total();
      return r;
    };
    const Run stored = train("none"), again = train("none");
    auto worst = [&](const Run& a) {
      double w = 0;
      for (size_t i = 0; i < a.params.size(); ++i) w = std::max(w, (double)std::fabs(a.params[i] - stored.params[i]));
      for (size_t i = 0; i < a.losses.size(); ++i) w = std::max(w, std::fabs(a.losses[i] - stored.losses[i]));
      return w;
    };
    for (const char* setting : {"attention", "moe", "full"}) {
      SCOPED_TRACE(std::string(precision) + ", recompute " + setting);
      const Run recomputed = train(setting);
      EXPECT_LE(worst(recomputed), worst(again));
      EXPECT_LT(recomputed.peak, stored.peak);
      EXPECT_NEAR(stored.peak - recomputed.peak, stored.predicted - recomputed.predicted,
                  0.05 * (stored.predicted - recomputed.predicted));
    }
  }
}

// Bitwise-reproducible GPU training: the kernels use no floating-point atomics (the router's
// counts are integers) and cuBLAS gives the same bits for the same problem on the same GPU, so
// two runs of one config, with router noise, capacity dropping, the device-level loss and
// micro-batches, write the same checkpoint: weights and both AdamW moments, bit for bit.
TEST_F(TrainCuda, SameConfigTwiceGivesTheSameBits) {
  for (const char* precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    const Config cfg = tiny({"backend=cuda", std::string("precision=") + precision, "moe.router_noise=0.2",
                             "moe.capacity_factor=1.2", "balance.device_alpha=0.05", "balance.device_groups=2",
                             "train.micro_batches=2"});
    std::vector<double> losses[2];
    for (int run = 0; run < 2; ++run) {
      Engine e(cfg, *comm);
      for (int s = 0; s < 4; ++s) losses[run].push_back(e.train_step().loss);
      e.save_checkpoint(dir.file("run" + std::to_string(run) + ".h5"), StepStats{});
    }
    EXPECT_EQ(losses[0], losses[1]);
    Config c = cfg;
    c.model.vocab_size = config_from_checkpoint(dir.file("run0.h5")).model.vocab_size;
    const ParamTable table = build_param_table(c, 0, c.moe.n_routed);
    const CheckpointState a = read_checkpoint(dir.file("run0.h5"), table, {1}, c.moe.n_routed);
    const CheckpointState b = read_checkpoint(dir.file("run1.h5"), table, {1}, c.moe.n_routed);
    EXPECT_EQ(a.params, b.params);
    EXPECT_EQ(a.m, b.m);
    EXPECT_EQ(a.v, b.v);
  }
}

}  // namespace
}  // namespace dsmoe
