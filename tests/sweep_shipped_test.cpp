// The shipped experiments plan within their iso-FLOPs tolerance with every solved key at its
// best value, each CPU experiment has a GPU twin, the paper's ablations share one recipe with
// three seeds, and the paper's models count within 3 % of the published parameters.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data/batches.h"
#include "model/flops.h"
#include "sweep/plan.h"
#include "util/check.h"

namespace dsmoe {
namespace {

const std::string kDir = DSMOE_SOURCE_DIR "/experiments/";

double flops_at(Config cfg, const std::string& key, int64_t value) {
  set_integer_key(cfg, key, value, "test");
  return count_model(cfg).flops_per_token;
}

bool valid(const Config& cfg) {
  try {
    validate_config(cfg, 0);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// Whether the final evaluation of a run on the default corpus (docs/model.md, Data: 39,952,321
// tokens of GCIDE) stays inside the validation split, which Engine checks before training.
bool evaluation_fits_the_default_corpus(const Config& cfg) {
  const Split split = split_tokens(39952321, cfg.data.val_fraction, cfg.model.seq_len);
  return static_cast<int64_t>(cfg.train.eval_batches) * cfg.train.batch_size <= eval_windows(split, cfg.model.seq_len);
}

std::vector<std::string> variant_names(const SweepPlan& p) {
  std::vector<std::string> out;
  for (const PlannedRun& r : p.runs)
    if (out.empty() || out.back() != r.variant) out.push_back(r.variant);
  return out;
}

TEST(SweepShipped, ExperimentsMeetTheirIsoFlopsTolerance) {
  for (const char* name : {"ablation_granularity", "ablation_shared_ratio", "balance_methods", "standard_vs_deepseek"}) {
    const SweepPlan cpu = plan_sweep(load_experiment(kDir + name + ".yaml"), "runs");
    const SweepPlan gpu = plan_sweep(load_experiment(kDir + name + "_gpu.yaml"), "runs");
    EXPECT_EQ(variant_names(cpu), variant_names(gpu)) << name;
    for (const SweepPlan* p : {&cpu, &gpu}) {
      EXPECT_TRUE(p->iso) << p->experiment;
      EXPECT_NO_THROW(check_tolerance(*p)) << p->experiment;
      for (const PlannedRun& r : p->runs) {
        EXPECT_LE(std::fabs(r.deviation), p->tolerance) << r.name;
        EXPECT_EQ(r.cfg.backend, p == &cpu ? "cpu" : "cuda") << r.name;
        EXPECT_EQ(r.cfg.precision, p == &cpu ? "fp32" : "bf16") << r.name;
        EXPECT_TRUE(evaluation_fits_the_default_corpus(r.cfg)) << r.name;
        if (r.solved_key.empty()) continue;
        // No neighbouring valid value comes nearer the target.
        const double gap = std::fabs(r.count.flops_per_token - p->target);
        for (int64_t v : {r.solved_value - 1, r.solved_value + 1}) {
          Config c = r.cfg;
          set_integer_key(c, r.solved_key, v, "test");
          if (valid(c)) {
            EXPECT_GE(std::fabs(flops_at(r.cfg, r.solved_key, v) - p->target), gap) << r.name << " " << v;
          }
        }
      }
    }
  }
}

// docs/results.md compares these experiments' variants with each other and across files: every run
// trains the same tokens with the same schedule and evaluates the same tokens, seeds 1-3, and an
// experiment with an iso-FLOPs reference stays within its tolerance.
TEST(SweepShipped, PaperAblationsShareOneRecipeWithThreeSeeds) {
  const Config* first = nullptr;
  std::vector<SweepPlan> plans;
  for (const char* name : {"paper_granularity", "paper_shared_isolation", "paper_standard_vs_deepseek", "paper_balance"})
    plans.push_back(plan_sweep(load_experiment(kDir + name + ".yaml"), "runs"));
  for (const SweepPlan& p : plans) {
    if (p.iso) {
      EXPECT_NO_THROW(check_tolerance(p)) << p.experiment;
    }
    for (const std::string& v : variant_names(p)) {
      std::vector<uint64_t> seeds;
      for (const PlannedRun& r : p.runs)
        if (r.variant == v) seeds.push_back(r.cfg.seed);
      EXPECT_EQ(seeds, (std::vector<uint64_t>{1, 2, 3})) << p.experiment << " " << v;
    }
    for (const PlannedRun& r : p.runs) {
      if (!first) first = &r.cfg;
      EXPECT_EQ(r.cfg.backend, "cuda") << r.name;
      EXPECT_EQ(r.cfg.precision, "bf16") << r.name;
      EXPECT_EQ(r.tokens, 19660800) << r.name;
      EXPECT_EQ(r.cfg.train.lr, first->train.lr) << r.name;
      EXPECT_EQ(r.cfg.train.min_lr, first->train.min_lr) << r.name;
      EXPECT_EQ(r.cfg.train.warmup_steps, first->train.warmup_steps) << r.name;
      EXPECT_EQ(r.cfg.train.eval_batches, first->train.eval_batches) << r.name;
      EXPECT_EQ(r.cfg.data.val_fraction, first->data.val_fraction) << r.name;
      EXPECT_EQ(r.cfg.model.d_model, first->model.d_model) << r.name;
      EXPECT_EQ(r.cfg.model.n_layers, first->model.n_layers) << r.name;
      EXPECT_TRUE(evaluation_fits_the_default_corpus(r.cfg)) << r.name;
    }
  }
}

TEST(SweepShipped, EveryShippedConfigIsValidAndEvaluatesWithinTheDefaultCorpus) {
  int configs = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(kDir)) {
    const std::string path = entry.path().string();
    if (entry.path().extension() != ".yaml" || path.find("_gpu.yaml") != std::string::npos) continue;
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Experiment files (the test above) and simulation scenarios (dsmoe simulate) are not configs.
    if (text.find("\nexperiment:") != std::string::npos || text.find("\nsimulate:") != std::string::npos) continue;
    const Config cfg = load_config(path);
    EXPECT_TRUE(valid(cfg)) << path;
    EXPECT_EQ(cfg.data.path, "default") << path;
    EXPECT_TRUE(evaluation_fits_the_default_corpus(cfg)) << path;
    ++configs;
  }
  EXPECT_EQ(configs, 8);  // quickstart, the 3 paper models, gpu_small, gpu_wide, granularity_coarse/_fine
}

// The granularity tax's two bench configs train what the two ends of ablation_granularity_gpu
// train: the same config but for a run's bookkeeping (name, seed, output, logging, evaluation,
// checkpoints) and the dense width its MoE-only layer stack never uses.
TEST(SweepShipped, GranularityBenchConfigsAreTheExperimentsEnds) {
  const SweepPlan plan = plan_sweep(load_experiment(kDir + "ablation_granularity_gpu.yaml"), "runs");
  for (const auto& [variant, file] : {std::pair<std::string, std::string>{"gshard-0+2of16", "granularity_coarse"},
                                      {"ds-1+7of63", "granularity_fine"}}) {
    const PlannedRun* run = nullptr;
    for (const PlannedRun& r : plan.runs)
      if (r.variant == variant) run = &r;
    ASSERT_NE(run, nullptr) << variant;
    const Config bench = load_config(kDir + "bench/" + file + ".yaml");
    Config cfg = run->cfg;
    cfg.name = bench.name;
    cfg.seed = bench.seed;
    cfg.out = bench.out;
    cfg.train.log_every = bench.train.log_every;
    cfg.train.eval_every = bench.train.eval_every;
    cfg.train.eval_batches = bench.train.eval_batches;
    cfg.train.checkpoint_every = bench.train.checkpoint_every;
    cfg.model.dense_hidden = bench.model.dense_hidden;
    EXPECT_EQ(cfg, bench) << file << " against " << variant << ":\n" << to_yaml(bench) << "\nthe experiment's:\n"
                          << to_yaml(cfg);
  }
}

TEST(SweepShipped, PaperModelsMatchThePublishedSizes) {
  struct Published {
    const char* file;
    double total, active;
  };
  for (const Published& p : {Published{"deepseekmoe_2b", 2.0e9, 0.3e9}, Published{"deepseekmoe_16b", 16.4e9, 2.8e9},
                             Published{"deepseekmoe_145b", 144.6e9, 22.2e9}}) {
    const ModelCount c = count_model(load_config(kDir + "configs/" + p.file + ".yaml"));
    EXPECT_NEAR(c.params_total / p.total, 1.0, 0.03) << p.file << " total " << c.params_total;
    EXPECT_NEAR(c.params_active / p.active, 1.0, 0.03) << p.file << " active " << c.params_active;
  }
}

}  // namespace
}  // namespace dsmoe
