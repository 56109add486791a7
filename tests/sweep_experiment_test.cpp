// Experiment files: lists, grids, zips, seeds and the DeepSeekMoE and dense forms expand to the
// variants written out by hand below; mistakes are errors naming file:line: key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sweep/experiment.h"
#include "test_util.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using test::error_of;

// name, then "key=value" of every setting in order.
std::vector<std::string> describe(const Variant& v) {
  std::vector<std::string> out = {v.name};
  for (const Setting& s : v.settings) out.push_back(s.key + "=" + s.value);
  return out;
}

std::vector<std::vector<std::string>> table(const Experiment& e) {
  std::vector<std::vector<std::string>> out;
  for (const Variant& v : e.variants) out.push_back(describe(v));
  return out;
}

const char* kBase =
    "base:\n"
    "  model: {vocab_size: 256, d_model: 32, n_layers: 3, n_heads: 2, dense_hidden: 128}\n"
    "  moe: {n_routed: 8, top_k: 2, expert_hidden: 32}\n";

TEST(SweepExperiment, ListsGridsAndZipsExpandInOrder) {
  Experiment e = parse_experiment(std::string(kBase) +
                                      "sweep:\n"
                                      "  - name: plain\n"
                                      "    moe: {score: softmax_topk}\n"
                                      "  - grid: {moe.top_k: [1, 2], moe.n_shared: [0, 1, 2]}\n"
                                      "    name: 'k{top_k}-s{moe.n_shared}'\n"
                                      "  - zip: {moe.n_shared: [1, 2], moe.top_k: [3, 2]}\n"
                                      "    train: {steps: 5}\n"
                                      "  - grid: {balance.bias_rate: [0.0, 0.001]}\n"
                                      "    zip: {moe.n_routed: [4, 16], moe.expert_hidden: [64, 16]}\n",
                                  "e.yaml");
  EXPECT_EQ(e.name, "e");
  std::vector<std::vector<std::string>> expected = {
      {"plain", "moe.score=softmax_topk"},
      {"k1-s0", "moe.top_k=1", "moe.n_shared=0"},
      {"k1-s1", "moe.top_k=1", "moe.n_shared=1"},
      {"k1-s2", "moe.top_k=1", "moe.n_shared=2"},
      {"k2-s0", "moe.top_k=2", "moe.n_shared=0"},
      {"k2-s1", "moe.top_k=2", "moe.n_shared=1"},
      {"k2-s2", "moe.top_k=2", "moe.n_shared=2"},
      {"n_shared=1-top_k=3", "train.steps=5", "moe.n_shared=1", "moe.top_k=3"},
      {"n_shared=2-top_k=2", "train.steps=5", "moe.n_shared=2", "moe.top_k=2"},
      {"bias_rate=0.0-n_routed=4-expert_hidden=64", "balance.bias_rate=0.0", "moe.n_routed=4", "moe.expert_hidden=64"},
      {"bias_rate=0.0-n_routed=16-expert_hidden=16", "balance.bias_rate=0.0", "moe.n_routed=16",
       "moe.expert_hidden=16"},
      {"bias_rate=0.001-n_routed=4-expert_hidden=64", "balance.bias_rate=0.001", "moe.n_routed=4",
       "moe.expert_hidden=64"},
      {"bias_rate=0.001-n_routed=16-expert_hidden=16", "balance.bias_rate=0.001", "moe.n_routed=16",
       "moe.expert_hidden=16"},
  };
  EXPECT_EQ(table(e), expected);
  EXPECT_EQ(e.variants[1].where, "e.yaml:7");
  EXPECT_EQ(e.run_name, "{variant}-s{seed}");  // also without seeds: the run of a seed keeps its name
  EXPECT_TRUE(e.seeds.empty());

  // Settings resolve over the inline base.
  Config c = apply_settings(e.base, [&] {
    auto s = e.base_settings;
    s.insert(s.end(), e.variants[7].settings.begin(), e.variants[7].settings.end());
    return s;
  }());
  EXPECT_EQ(c.model.d_model, 32);
  EXPECT_EQ(c.moe.n_routed, 8);
  EXPECT_EQ(c.moe.n_shared, 1);
  EXPECT_EQ(c.moe.top_k, 3);
  EXPECT_EQ(c.train.steps, 5);
}

Config resolve(const Experiment& e, const std::string& variant) {
  for (const Variant& v : e.variants)
    if (v.name == variant) {
      std::vector<Setting> s = e.base_settings;
      s.insert(s.end(), v.settings.begin(), v.settings.end());
      return apply_settings(e.base, s);
    }
  throw Error("no variant " + variant);
}

TEST(SweepExperiment, DeepSeekMoEFormAndDenseVariants) {
  // The paper's ladder from a 16-expert top-2 base of width 256, plus a dense model.
  Experiment e = parse_experiment(
      "base:\n"
      "  model: {vocab_size: 256, d_model: 64, n_layers: 3, n_heads: 2, dense_hidden: 256}\n"
      "  deepseekmoe: {N0: 16, K0: 2}\n"
      "sweep:\n"
      "  - zip: {deepseekmoe.m: [1, 1, 2, 4], deepseekmoe.Ks: [0, 1, 1, 1]}\n"
      "    name: '{Ks}+{m}'\n"
      "  - name: wide\n"
      "    deepseekmoe: {m: 2, base_hidden: 512}\n"
      "  - name: dense\n"
      "    dense: {hidden: 300}\n",
      "ladder.yaml");
  struct Expected {
    const char* name;
    int n_routed, top_k, n_shared, expert_hidden;
  };
  for (const Expected& x : {Expected{"0+1", 16, 2, 0, 256}, Expected{"1+1", 15, 1, 1, 256},
                            Expected{"1+2", 31, 3, 1, 128}, Expected{"1+4", 63, 7, 1, 64}, Expected{"wide", 32, 4, 0, 256}}) {
    Config c = resolve(e, x.name);
    EXPECT_EQ(c.moe.n_routed, x.n_routed) << x.name;
    EXPECT_EQ(c.moe.top_k, x.top_k) << x.name;
    EXPECT_EQ(c.moe.n_shared, x.n_shared) << x.name;
    EXPECT_EQ(c.moe.expert_hidden, x.expert_hidden) << x.name;
    EXPECT_EQ(c.model.first_dense_layers, 1) << x.name;
    EXPECT_EQ(c.model.dense_hidden, 256) << x.name;
  }
  Config dense = resolve(e, "dense");
  EXPECT_EQ(dense.model.first_dense_layers, 3);
  EXPECT_EQ(dense.model.dense_hidden, 300);
  EXPECT_EQ(dense.n_moe_layers(), 0);
}

// Later settings win: a variant's moe key over the base's form, a variant's form over the base's keys.
TEST(SweepExperiment, LaterSettingsWinOverTheForm) {
  Experiment e = parse_experiment(
      "base:\n"
      "  model: {vocab_size: 256, d_model: 64, n_heads: 2, dense_hidden: 256}\n"
      "  moe: {n_routed: 5, top_k: 3}\n"
      "  deepseekmoe: {N0: 16, K0: 2}\n"
      "sweep:\n"
      "  - name: top1\n"
      "    moe: {top_k: 1}\n"
      "  - name: form\n",
      "order.yaml");
  Config top1 = resolve(e, "top1");
  EXPECT_EQ(top1.moe.top_k, 1);
  EXPECT_EQ(top1.moe.n_routed, 16);
  Config form = resolve(e, "form");
  EXPECT_EQ(form.moe.top_k, 2);
  EXPECT_EQ(form.moe.n_routed, 16);
}

TEST(SweepExperiment, SeedsRunNameBaseFileAndIsoFlops) {
  test::TempDir dir;
  test::write_file(dir.file("base.yaml"), "model: {vocab_size: 256, d_model: 32, n_heads: 2}\nseed: 9\n");
  const std::string path = dir.file("exp.yaml");
  test::write_file(path,
                   "experiment: my_exp\n"
                   "base: base.yaml\n"
                   "seeds: [3, 4]\n"
                   "run_name: '{seed}_{variant}'\n"
                   "ranks: 2\n"
                   "iso_flops: {reference: a, free: moe.expert_hidden, tolerance: 0.05}\n"
                   "sweep:\n"
                   "  - name: a\n"
                   "  - name: b\n"
                   "    moe: {top_k: 1}\n"
                   "  - name: c\n"
                   "    free: model.dense_hidden\n"
                   "  - name: d\n"
                   "    free: none\n");
  Experiment e = load_experiment(path);
  EXPECT_EQ(e.name, "my_exp");
  EXPECT_EQ(e.base.model.d_model, 32);
  EXPECT_EQ(e.base.seed, 9u);
  EXPECT_EQ(e.seeds, std::vector<uint64_t>({3, 4}));
  EXPECT_EQ(e.run_name, "{seed}_{variant}");
  EXPECT_EQ(e.ranks, 2);
  EXPECT_TRUE(e.iso.enabled);
  EXPECT_EQ(e.iso.reference, "a");
  EXPECT_EQ(e.iso.tolerance, 0.05);
  std::vector<std::string> free;
  for (const Variant& v : e.variants) free.push_back(v.free_key);
  EXPECT_EQ(free, std::vector<std::string>({"", "moe.expert_hidden", "model.dense_hidden", ""}));
  // Several seeds default to one run name per seed.
  EXPECT_EQ(parse_experiment("seeds: [1, 2]\nsweep: [{name: a}]\n", "x.yaml").run_name, "{variant}-s{seed}");
}

struct BadCase {
  const char* text;
  const char* error;
};

TEST(SweepExperiment, MistakesNameFileLineAndKey) {
  const std::vector<BadCase> cases = {
      {"sweep:\n  - name: a\n    moe: {top_kk: 2}\n", "bad.yaml:3: moe.top_kk: unknown key (did you mean moe.top_k?)"},
      {"sweep:\n  - name: a\n    moe.top_k: 2\n", "bad.yaml:3: moe.top_k: unknown key (in a variant, nest keys"},
      {"sweep:\n  - name: a\n    moe: 3\n", "bad.yaml:3: moe: expected a mapping of moe keys, got '3'"},
      {"sweep:\n  - name: a\n    moe: {top_k: [1]}\n", "bad.yaml:3: moe.top_k: expected a value, got a sequence"},
      {"sweep:\n  - name: a\n    name: b\n", "bad.yaml:3: name: duplicate key"},
      {"sweep:\n  - name: a\n    out: x\n", "bad.yaml:3: out: set by the sweep"},
      {"sweep:\n  - moe: {top_k: 1}\n", "bad.yaml:2: name: missing (a variant needs a name)"},
      {"sweep:\n  - name: a\n  - name: a\n", "bad.yaml:3: name: variant 'a' is already defined at bad.yaml:2"},
      {"sweep:\n  - name: a/b\n", "bad.yaml:2: name: 'a/b' has a character"},
      {"sweep:\n  - grid: {moe.top_k: 2}\n", "bad.yaml:2: moe.top_k: expected a non-empty list of values, got '2'"},
      {"sweep:\n  - grid: {moe.topk: [1]}\n", "bad.yaml:2: moe.topk: unknown key (did you mean moe.top_k?)"},
      {"sweep:\n  - zip:\n      moe.top_k: [1, 2]\n      moe.n_shared: [1]\n",
       "bad.yaml:2: zip: moe.n_shared has 1 values, moe.top_k has 2"},
      {"sweep:\n  - grid: {moe.top_k: [1, 2]}\n    name: x{kk}\n", "bad.yaml:3: name: unknown field {kk}"},
      {"sweep:\n  - grid: {moe.top_k: [1, 2]}\n    name: same\n", "bad.yaml:2: name: variant 'same' is already"},
      {"sweep:\n  - grid: {moe.top_k: [1, 2]}\n    moe: {top_k: 3}\n",
       "bad.yaml:3: moe.top_k: also set by the entry's grid or zip"},
      {"sweep:\n  - name: a\n    deepseekmoe: {n: 2}\n", "bad.yaml:3: deepseekmoe.n: unknown key (the DeepSeekMoE form"},
      {"sweep:\n  - name: a\n    dense: {width: 2}\n", "bad.yaml:3: dense.width: unknown key (the dense form has"},
      {"sweep:\n  - name: a\n    free: moe.score\n", "bad.yaml:3: free: expected an integer key, moe.score is a string"},
      {"sweep:\n  - name: a\n    free: dense.hidden\n", "bad.yaml:3: free: expected a config key"},
      {"sweep: []\n", "bad.yaml:1: sweep: expected a non-empty list of variants"},
      {"sweep:\n  - grid: {}\n", "bad.yaml:2: grid: expected at least one key"},
      {"sweep:\n  - grid: [1]\n", "bad.yaml:2: grid: expected a mapping of keys to lists of values, got a sequence"},
      {"sweep:\n  - grid: {moe.top_k: [[1]]}\n", "bad.yaml:2: moe.top_k: expected a value, got a sequence"},
      {"iso_flops: 3\nsweep: [{name: a}]\n", "bad.yaml:1: iso_flops: expected a mapping, got '3'"},
      {"{[1]: 2, sweep: [{name: a}]}\n", "bad.yaml:1: expected a key name, got a sequence"},
      {"base: [1]\nsweep: [{name: a}]\n", "bad.yaml:1: base: expected a value, got a sequence"},
      {"sweep:\n  - [1]\n", "bad.yaml:2: sweep: expected a mapping (a variant), got a sequence"},
      {"name: x\nsweep: [{name: a}]\n", "bad.yaml:1: name: unknown key (expected one of base, experiment,"},
      {"seeds: [1, x]\nsweep: [{name: a}]\n", "bad.yaml:1: seeds: expected a non-negative integer, got 'x'"},
      {"seeds: [1, 1]\nsweep: [{name: a}]\n", "bad.yaml:1: seeds: seed 1 is listed twice"},
      {"seeds: 3\nsweep: [{name: a}]\n", "bad.yaml:1: seeds: expected a non-empty list of seeds, got '3'"},
      {"run_name: '{variant}-{sed}'\nsweep: [{name: a}]\n", "bad.yaml:1: run_name: unknown field {sed}"},
      {"run_name: '{variant'\nsweep: [{name: a}]\n", "bad.yaml:1: run_name: unmatched '{'"},
      {"ranks: 0\nsweep: [{name: a}]\n", "bad.yaml:1: ranks: must be >= 1, got 0"},
      {"experiment: a/b\nsweep: [{name: a}]\n", "bad.yaml:1: experiment: 'a/b' has a character"},
      {"base: nope.yaml\nsweep: [{name: a}]\n", "bad.yaml:1: base: nope.yaml: cannot open config file"},
      {"base: {model: {d_modle: 3}}\nsweep: [{name: a}]\n", "bad.yaml:1: model.d_modle: unknown key"},
      {"iso_flops: {reference: zz}\nsweep: [{name: a}]\n", "bad.yaml:1: iso_flops.reference: no variant is named 'zz'"},
      {"iso_flops: {free: moe.top_k}\nsweep: [{name: a}]\n", "bad.yaml:1: iso_flops: give either reference"},
      {"iso_flops: {reference: a, target: 5}\nsweep: [{name: a}]\n", "bad.yaml:1: iso_flops: give either reference"},
      {"iso_flops: {target: -1}\nsweep: [{name: a}]\n", "bad.yaml:1: iso_flops.target: must be > 0"},
      {"iso_flops: {target: 1, tolerance: x}\nsweep: [{name: a}]\n",
       "bad.yaml:1: iso_flops.tolerance: expected a number, got 'x'"},
      {"iso_flops: {target: 1, tolarance: 1}\nsweep: [{name: a}]\n", "bad.yaml:1: iso_flops.tolarance: unknown key"},
      {"iso_flops: {target: 1, free: model.d_modle}\nsweep: [{name: a}]\n",
       "bad.yaml:1: iso_flops.free: unknown key (did you mean model.d_model?)"},
      {"sweep: [{name: a}]\nsweep: [{name: b}]\n", "bad.yaml:2: sweep: duplicate key"},
      {"base: {model: {n_layers: 2}}\n", "bad.yaml: sweep: missing"},
      {"sweep: [{name: a}\n", "bad.yaml:2: invalid YAML"},
      {"- 1\n", "bad.yaml: expected a mapping of experiment keys"},
  };
  for (const BadCase& c : cases)
    EXPECT_THAT(error_of([&] { parse_experiment(c.text, "bad.yaml"); }), HasSubstr(c.error)) << c.text;
  EXPECT_THAT(error_of([] { load_experiment("/nonexistent/e.yaml"); }),
              HasSubstr("/nonexistent/e.yaml: cannot open experiment file"));
}

// Errors found when a variant's settings are applied name the line of the setting responsible.
TEST(SweepExperiment, ResolutionErrorsNameTheSettingsLine) {
  const std::vector<BadCase> cases = {
      {"sweep:\n  - name: a\n    moe: {top_k: x}\n", "bad.yaml:3: moe.top_k: expected an integer, got 'x'"},
      {"sweep:\n  - name: a\n    moe: {top_k: 99}\n", "bad.yaml:3: moe.top_k: moe.top_k = 99 exceeds moe.n_routed"},
      {"sweep:\n  - name: a\n    deepseekmoe: {m: 2}\n", "bad.yaml:3: deepseekmoe.N0: missing"},
      {"sweep:\n  - name: a\n    deepseekmoe: {m: 3, N0: 4, K0: 1}\n",
       "bad.yaml:3: deepseekmoe.m: base_hidden 1024 is not divisible by m = 3"},
      {"sweep:\n  - name: a\n    deepseekmoe:\n      N0: 4\n      K0: 1\n      Ks: 1\n",
       "bad.yaml:6: deepseekmoe.Ks: m*K0 - Ks = 0 leaves no routed expert"},
      {"sweep:\n  - name: a\n    deepseekmoe: {N0: 4, K0: 1, Ks: -1}\n", "bad.yaml:3: deepseekmoe.Ks: must be >= 0"},
      {"sweep:\n  - name: a\n    deepseekmoe: {N0: 0, K0: 1}\n", "bad.yaml:3: deepseekmoe.N0: must be >= 1"},
      {"sweep:\n  - name: a\n    deepseekmoe: {N0: 4, K0: x}\n", "bad.yaml:3: deepseekmoe.K0: expected an integer"},
      {"sweep:\n  - name: a\n    dense: {hidden: 0}\n", "bad.yaml:3: dense.hidden: must be >= 1"},
  };
  for (const BadCase& c : cases)
    EXPECT_THAT(error_of([&] {
                  Experiment e = parse_experiment(c.text, "bad.yaml");
                  resolve(e, "a");
                }),
                HasSubstr(c.error))
        << c.text;
}

}  // namespace
}  // namespace dsmoe
