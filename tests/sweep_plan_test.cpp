// The run table: FLOP and parameter counts against hand counts, the iso-FLOPs solver against
// closed-form solutions, the tolerance check, and run names and folders.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sweep/plan.h"
#include "test_util.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using test::error_of;

SweepPlan plan(const std::string& text, const std::string& root = "runs") {
  return plan_sweep(parse_experiment(text, "e.yaml"), root);
}

// The first run of a variant.
const PlannedRun& run(const SweepPlan& p, const std::string& variant) {
  for (const PlannedRun& r : p.runs)
    if (r.variant == variant) return r;
  throw Error("no run of " + variant);
}

// Config A: d 64, 3 layers (1 dense of width 256, 2 MoE: 8 routed of width 256, top-2), V 256,
// T 64, untied. Config B: d 32, 2 MoE layers (2 shared + 4 routed of width 8, top-1, router
// noise), V 100, T 16, tied embeddings.
const char* kTwoConfigs =
    "sweep:\n"
    "  - name: a\n"
    "    model: {vocab_size: 256, d_model: 64, n_layers: 3, n_heads: 2, seq_len: 64, dense_hidden: 256}\n"
    "    moe: {n_routed: 8, n_shared: 0, top_k: 2, expert_hidden: 256}\n"
    "    train: {steps: 10, batch_size: 4}\n"
    "  - name: b\n"
    "    model: {vocab_size: 100, d_model: 32, n_layers: 2, n_heads: 2, seq_len: 16, first_dense_layers: 0,\n"
    "            tie_embeddings: true}\n"
    "    moe: {n_routed: 4, n_shared: 2, top_k: 1, expert_hidden: 8, router_noise: 0.1}\n";

TEST(SweepPlan, CountsMatchAHandCount) {
  SweepPlan p = plan(kTwoConfigs);
  ASSERT_EQ(p.runs.size(), 2u);
  // A: embedding 256*64 = 16384, attention 3*4*64^2 = 49152, dense FFN 3*64*256 = 49152,
  // experts 2 layers * 8 * 49152 = 786432 (active 2 * 2 * 49152 = 196608), router 2*8*64 = 1024,
  // norms 7*64 = 448, head 16384.
  const PlannedRun& a = run(p, "a");
  EXPECT_EQ(a.count.params_total, 16384 + 49152 + 49152 + 786432 + 1024 + 448 + 16384);
  EXPECT_EQ(a.count.params_active, 16384 + 49152 + 49152 + 196608 + 1024 + 448 + 16384);
  // 6 * matmul parameters a token uses (no embedding, no norms) + 6 * L * d * T.
  EXPECT_EQ(a.count.flops_per_token, 6.0 * (49152 + 49152 + 196608 + 1024 + 16384) + 6.0 * 3 * 64 * 64);
  EXPECT_EQ(a.tokens, 10 * 4 * 64);
  // B: embedding 3200, attention 2*4*32^2 = 8192, shared 2 layers * 2 * 3*32*8 = 3072, experts
  // 2*4*768 = 6144 (active 2*1*768 = 1536), router with noise 2 * 2*4*32 = 512, norms 5*32 = 160,
  // head tied (its matmul still counts).
  const PlannedRun& b = run(p, "b");
  EXPECT_EQ(b.count.params_total, 3200 + 8192 + 3072 + 6144 + 512 + 160);
  EXPECT_EQ(b.count.params_active, 3200 + 8192 + 3072 + 1536 + 512 + 160);
  EXPECT_EQ(b.count.flops_per_token, 6.0 * (8192 + 3072 + 1536 + 512 + 3200) + 6.0 * 2 * 32 * 16);
  // Without iso_flops the first variant is the yardstick and nothing is enforced.
  EXPECT_FALSE(p.iso);
  EXPECT_EQ(p.target, a.count.flops_per_token);
  EXPECT_DOUBLE_EQ(b.deviation, b.count.flops_per_token / a.count.flops_per_token - 1);
  EXPECT_NO_THROW(check_tolerance(p));
}

const char* kIsoBase =
    "base:\n"
    "  model: {vocab_size: 256, d_model: 64, n_layers: 3, n_heads: 2, seq_len: 64, dense_hidden: 256}\n"
    "  moe: {n_routed: 8, n_shared: 0, top_k: 2, expert_hidden: 256}\n";

TEST(SweepPlan, SolverFindsTheNearestValue) {
  SweepPlan p = plan(std::string(kIsoBase) +
                     "iso_flops: {reference: ref, tolerance: 0.001}\n"
                     "sweep:\n"
                     "  - name: ref\n"
                     "  - name: dense\n"
                     "    dense: {hidden: 1}\n"
                     "    free: model.dense_hidden\n"
                     "  - name: top1\n"
                     "    moe: {top_k: 1}\n"
                     "    free: moe.expert_hidden\n");
  const double target = 6.0 * (49152 + 49152 + 196608 + 1024 + 16384) + 6.0 * 3 * 64 * 64;  // as above
  EXPECT_EQ(p.target, target);
  // Dense: 6 * (3*4*64^2 + 3*3*64*h + 256*64) + 6*3*64*64 = target gives h = 428.44: 428 is nearest.
  const PlannedRun& dense = run(p, "dense");
  EXPECT_EQ(dense.solved_key, "model.dense_hidden");
  EXPECT_EQ(dense.solved_value, 428);
  EXPECT_EQ(dense.cfg.model.dense_hidden, 428);
  EXPECT_EQ(dense.cfg.n_moe_layers(), 0);
  EXPECT_EQ(dense.count.flops_per_token, 6.0 * (49152 + 3 * 3 * 64 * 428 + 16384) + 6.0 * 3 * 64 * 64);
  // Top-1 of 8: the one routed expert doubles its width to keep the FLOPs: exactly 512.
  const PlannedRun& top1 = run(p, "top1");
  EXPECT_EQ(top1.solved_value, 512);
  EXPECT_EQ(top1.deviation, 0);
  EXPECT_EQ(run(p, "ref").solved_key, "");
  EXPECT_TRUE(out_of_tolerance(p).empty());
}

TEST(SweepPlan, ToleranceIsEnforcedAndResidualReported) {
  // FLOPs = 768000 + 589824 * top_k: the target wants top_k = 8.87, but top_k cannot exceed
  // n_routed = 8; 8 is the nearest valid value, 8.6 % short.
  SweepPlan p = plan(std::string(kIsoBase) +
                     "iso_flops: {target: 6.0e6, free: moe.top_k, tolerance: 0.02}\n"
                     "sweep:\n"
                     "  - name: k\n"
                     "  - name: wide\n"
                     "    moe: {expert_hidden: 1024}\n");
  const PlannedRun& k = run(p, "k");
  EXPECT_EQ(k.solved_value, 8);
  EXPECT_DOUBLE_EQ(k.deviation, (768000.0 + 589824 * 8) / 6.0e6 - 1);
  // wide: FLOPs = 768000 + 2359296 * top_k = 6e6 at top_k = 2.22: 2 is nearer than 3.
  EXPECT_EQ(run(p, "wide").solved_value, 2);
  ASSERT_EQ(out_of_tolerance(p).size(), 2u);
  EXPECT_THAT(out_of_tolerance(p)[0], HasSubstr("k: -"));
  const std::string err = error_of([&] { check_tolerance(p); });
  EXPECT_THAT(err, HasSubstr("differ from the target by more than the tolerance 2.00 %"));
  EXPECT_THAT(err, HasSubstr("--ignore-tolerance"));
}

TEST(SweepPlan, KeepVariantsDropsTheOthersAndTheirFindings) {
  // The target comes from k, and both variants miss it (as above); keeping `wide` keeps its runs
  // (two seeds) and its finding, and the target.
  SweepPlan p = plan(std::string(kIsoBase) +
                     "seeds: [1, 2]\n"
                     "iso_flops: {target: 6.0e6, free: moe.top_k, tolerance: 0.02}\n"
                     "sweep:\n"
                     "  - name: k\n"
                     "  - name: wide\n"
                     "    moe: {expert_hidden: 1024}\n"
                     "  - name: k2\n");
  const double target = p.target;
  keep_variants(p, "wide");
  ASSERT_EQ(p.runs.size(), 2u);
  EXPECT_EQ(p.runs[0].name, "wide-s1");
  EXPECT_EQ(p.runs[1].name, "wide-s2");
  ASSERT_EQ(out_of_tolerance(p).size(), 1u);
  EXPECT_THAT(out_of_tolerance(p)[0], HasSubstr("wide: "));
  EXPECT_EQ(p.target, target);

  SweepPlan q = plan(std::string(kIsoBase) + "sweep: [{name: a}, {name: b}, {name: c}]\n");
  keep_variants(q, "c,a");
  ASSERT_EQ(q.runs.size(), 2u);  // in the experiment's order
  EXPECT_EQ(q.runs[0].variant, "a");
  EXPECT_EQ(q.runs[1].variant, "c");
  EXPECT_THAT(error_of([&] { keep_variants(q, "a,d"); }),
              HasSubstr("--only: e has no variant 'd' (its variants: a, b, c)"));
  EXPECT_THAT(error_of([&] { keep_variants(q, "a,"); }), HasSubstr("has no variant ''"));
}

TEST(SweepPlan, BaselineIsTheIsoFlopsReferenceElseTheFirstVariant) {
  SweepPlan p = plan(std::string(kIsoBase) + "iso_flops: {reference: b, free: moe.top_k}\n"
                                             "sweep: [{name: a}, {name: b}, {name: c}]\n");
  EXPECT_EQ(p.baseline, "b");
  EXPECT_EQ(p.variants, std::vector<std::string>({"a", "b", "c"}));
  keep_variants(p, "c");  // the experiment's baseline and variants, whatever runs are kept
  EXPECT_EQ(p.baseline, "b");
  EXPECT_EQ(p.variants.size(), 3u);
  EXPECT_EQ(plan(std::string(kIsoBase) + "sweep: [{name: x}, {name: y}]\n").baseline, "x");
}

TEST(SweepPlan, SolverErrors) {
  EXPECT_THAT(error_of([] {
                plan(std::string(kIsoBase) + "iso_flops: {target: 1.0e9, free: model.n_heads}\nsweep: [{name: a}]\n");
              }),
              HasSubstr("e.yaml:5: a: model.n_heads cannot reach 1e+09 FLOPs per token"));
  // No top_k within reach of the target is valid (it must stay <= n_routed = 8).
  EXPECT_THAT(error_of([] {
                plan(std::string(kIsoBase) + "iso_flops: {target: 1.0e14, free: moe.top_k}\nsweep: [{name: a}]\n");
              }),
              HasSubstr("e.yaml:5: a: moe.top_k: no valid value near"));
}

TEST(SweepPlan, RunsGetNamesSeedsAndFolders) {
  SweepPlan p = plan(std::string(kIsoBase) + "seeds: [7, 8]\nsweep: [{name: a}, {name: b, seed: 3}]\n", "/tmp/r");
  std::vector<std::string> names, outs, configs;
  std::vector<uint64_t> seeds;
  for (const PlannedRun& r : p.runs) {
    names.push_back(r.name);
    outs.push_back(r.cfg.out);
    configs.push_back(r.cfg.name);
    seeds.push_back(r.cfg.seed);
  }
  EXPECT_EQ(p.dir, "/tmp/r/e");
  EXPECT_EQ(names, std::vector<std::string>({"a-s7", "a-s8", "b-s7", "b-s8"}));
  EXPECT_EQ(outs, std::vector<std::string>({"/tmp/r/e/a-s7", "/tmp/r/e/a-s8", "/tmp/r/e/b-s7", "/tmp/r/e/b-s8"}));
  EXPECT_EQ(configs, std::vector<std::string>({"a", "a", "b", "b"}));
  EXPECT_EQ(seeds, std::vector<uint64_t>({7, 8, 7, 8}));
  // Without seeds a run keeps its config's seed, and its name says which.
  const SweepPlan unseeded = plan(std::string(kIsoBase) + "sweep: [{name: a, seed: 3}]\n");
  const PlannedRun& own = run(unseeded, "a");
  EXPECT_EQ(own.cfg.seed, 3u);
  EXPECT_EQ(own.name, "a-s3");
  // One seed or several, the run of a seed keeps its name: adding seeds renames nothing.
  EXPECT_EQ(plan(std::string(kIsoBase) + "seeds: [7]\nsweep: [{name: a}]\n").runs[0].name, "a-s7");
  EXPECT_THAT(error_of([] { plan(std::string(kIsoBase) + "seeds: [1, 2]\nrun_name: 'x{variant}'\nsweep: [{name: a}]\n"); }),
              HasSubstr("e.yaml:5: run_name: runs of a and a are both named 'xa' (use {variant} and {seed})"));
  EXPECT_THAT(error_of([] { plan(std::string(kIsoBase) + "run_name: '{variant}/x'\nsweep: [{name: a}]\n"); }),
              HasSubstr("e.yaml:4: run_name: 'a/x' has a character"));
}

TEST(SweepPlan, VocabularyComesFromTheDataWhenZero) {
  test::TempDir dir;
  test::write_file(dir.file("t.txt"), "hello");
  SweepPlan p = plan("base: {model: {vocab_size: 0}, data: {path: '" + dir.file("t.txt") + "'}}\nsweep: [{name: a}]\n");
  EXPECT_EQ(p.runs[0].cfg.model.vocab_size, 256);
}

}  // namespace
}  // namespace dsmoe
