// Reading config files and --set overrides, and the errors they give.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "config/config.h"
#include "test_util.h"
#include "util/check.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;

using test::error_of;

// Writes `text` as exp.yaml in a fresh directory and loads it; errors name "exp.yaml".
class ConfigFile : public ::testing::Test {
 protected:
  Config load(const std::string& text, const std::vector<std::string>& overrides = {}) {
    test::write_file(path(), text);
    return load_config(path(), overrides);
  }
  std::string load_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
    return error_of([&] { load(text, overrides); });
  }
  std::string path() const { return dir.file("exp.yaml"); }
  test::TempDir dir;
};

TEST_F(ConfigFile, ReadsEveryKindOfValue) {
  Config c = load(R"(name: tiny
seed: 18446744073709551615
backend: cpu
model:
  vocab_size: 512
  d_model: 64
  n_heads: 2
  rope_theta: 5e5
  norm_eps: 1.0e-5
  tie_embeddings: true
moe:
  score: softmax_topk
  capacity_factor: 2      # an integer is a fine double
train:
  steps: 10000000000
  lr: +3e-4
  schedule: constant
data:
  path: "data/x y.bin"
  shuffle: False
out: runs/tiny
)");
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.seed, 18446744073709551615ull);
  EXPECT_EQ(c.backend, "cpu");
  EXPECT_EQ(c.model.vocab_size, 512);
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.model.n_heads, 2);
  EXPECT_EQ(c.model.rope_theta, 5e5);
  EXPECT_EQ(c.model.norm_eps, 1e-5);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.moe.score, "softmax_topk");
  EXPECT_EQ(c.moe.capacity_factor, 2.0);
  EXPECT_EQ(c.train.steps, 10000000000);
  EXPECT_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.train.schedule, "constant");
  EXPECT_EQ(c.data.path, "data/x y.bin");
  EXPECT_FALSE(c.data.shuffle);
  EXPECT_EQ(c.out, "runs/tiny");
  // Untouched keys keep their defaults.
  EXPECT_EQ(c.model.n_layers, 4);
  EXPECT_EQ(c.moe.n_routed, 16);
  EXPECT_EQ(c.train.batch_size, 32);
  EXPECT_EQ(c.source, path());
  EXPECT_EQ(c.origin.at("model.d_model"), path() + ":6");
  EXPECT_EQ(c.origin.count("model.n_layers"), 0u);
}

TEST_F(ConfigFile, EmptyFileAndEmptySectionKeepDefaults) {
  EXPECT_EQ(load(""), Config{});
  EXPECT_EQ(load("# only a comment\n"), Config{});
  EXPECT_EQ(load("model:\n  # d_model: 8\ntrain:\n"), Config{});
}

TEST_F(ConfigFile, MissingFile) {
  EXPECT_EQ(error_of([&] { load_config(dir.file("none.yaml")); }),
            dir.file("none.yaml") + ": cannot open config file");
  EXPECT_EQ(error_of([&] { load_config(dir.path); }), dir.path + ": cannot open config file");
  // Not a regular file: a FIFO (or /dev/stdin) would block instead of failing.
  EXPECT_EQ(error_of([&] { load_config("/dev/null"); }), "/dev/null: cannot open config file");
}

TEST_F(ConfigFile, MalformedYamlNamesLine) {
  EXPECT_THAT(load_error("name: x\nmodel:\n  d_model: [1, 2\n"),
              HasSubstr("exp.yaml:4: invalid YAML: "));
  EXPECT_THAT(load_error("name: x\n  bad: indent\n"), HasSubstr("exp.yaml:2: invalid YAML: "));
}

TEST_F(ConfigFile, UnknownKeysWithSuggestions) {
  std::string text = "name: x\n";
  for (int i = 2; i < 11; ++i) text += "# line " + std::to_string(i) + "\n";
  EXPECT_THAT(load_error(text + "model:\n  d_model: 64\n  d_modle: 64\n"),
              HasSubstr("exp.yaml:13: model.d_modle: unknown key (did you mean model.d_model?)"));
  EXPECT_THAT(load_error("modle:\n  d_model: 64\n"),
              HasSubstr("exp.yaml:1: modle: unknown key (did you mean model?)"));
  EXPECT_THAT(load_error("d_model: 64\n"),
              HasSubstr("exp.yaml:1: d_model: unknown key (did you mean model.d_model?)"));
  EXPECT_THAT(load_error("model:\n  top_k: 4\n"),
              HasSubstr("exp.yaml:2: model.top_k: unknown key (did you mean moe.top_k?)"));
  std::string far = load_error("train:\n  frobnicate: 1\n");
  EXPECT_THAT(far, HasSubstr("exp.yaml:2: train.frobnicate: unknown key"));
  EXPECT_THAT(far, ::testing::Not(HasSubstr("did you mean")));
  EXPECT_THAT(load_error("model.d_model: 64\n"),
              HasSubstr("exp.yaml:1: model.d_model: unknown key"));
}

TEST_F(ConfigFile, StructureErrors) {
  EXPECT_THAT(load_error("- name\n- x\n"),
              HasSubstr("exp.yaml:1: expected a mapping of config keys at the top level"));
  EXPECT_THAT(load_error("just text\n"),
              HasSubstr("exp.yaml:1: expected a mapping of config keys at the top level"));
  EXPECT_THAT(load_error("name: x\nmodel: 3\n"),
              HasSubstr("exp.yaml:2: model: expected a mapping of model keys, got '3'"));
  EXPECT_THAT(load_error("train: [1, 2]\n"),
              HasSubstr("exp.yaml:1: train: expected a mapping of train keys, got a sequence"));
  EXPECT_THAT(load_error("model:\n  d_model: 64\n  d_model: 32\n"),
              HasSubstr("exp.yaml:3: model.d_model: duplicate key"));
}

TEST_F(ConfigFile, WrongTypesNameLineAndKey) {
  const std::pair<const char*, const char*> cases[] = {
      {"model:\n  d_model: abc\n", "exp.yaml:2: model.d_model: expected an integer, got 'abc'"},
      {"model:\n  d_model: 1.5\n", "exp.yaml:2: model.d_model: expected an integer, got '1.5'"},
      {"model:\n  n_layers: 3000000000\n",
       "exp.yaml:2: model.n_layers: integer out of range, got '3000000000'"},
      {"train:\n  steps: 1e3\n", "exp.yaml:2: train.steps: expected an integer, got '1e3'"},
      {"seed: -1\n", "exp.yaml:1: seed: expected a non-negative integer, got '-1'"},
      {"seed: 18446744073709551616\n", "exp.yaml:1: seed: integer out of range"},
      {"train:\n  lr: fast\n", "exp.yaml:2: train.lr: expected a number, got 'fast'"},
      {"train:\n  lr: .inf\n", "exp.yaml:2: train.lr: expected a number, got '.inf'"},
      {"train:\n  lr:\n", "exp.yaml:2: train.lr: expected a number, got nothing"},
      {"data:\n  shuffle: yes\n", "exp.yaml:2: data.shuffle: expected true or false, got 'yes'"},
      {"data:\n  shuffle: 1\n", "exp.yaml:2: data.shuffle: expected true or false, got '1'"},
      {"name: [a]\n", "exp.yaml:1: name: expected a string, got a sequence"},
      {"data:\n  path: {a: 1}\n", "exp.yaml:2: data.path: expected a string, got a mapping"},
      // yaml-cpp would write it back as U+FFFD: config.yaml would hold another name
      {"name: caf\xe9\n", "exp.yaml:1: name: not valid UTF-8 text"},
      {"name: run  \r  # comment\n", "exp.yaml:1: name: contains a control character (byte 0x0d)"},
      {"out: \"runs/a\\tb\"\n", "exp.yaml:1: out: contains a control character (byte 0x09)"},
      {"out: \"runs/\xed\xa0\x80\"\n", "exp.yaml:1: out: not valid UTF-8 text"},  // a surrogate
  };
  for (const auto& [text, message] : cases)
    EXPECT_THAT(load_error(text), HasSubstr(message)) << text;
}

TEST_F(ConfigFile, OutOfRangeValuesNameLineAndKey) {
  const std::pair<const char*, const char*> cases[] = {
      {"name: x\nmoe:\n  score: soft\n",
       "exp.yaml:3: moe.score: must be one of softmax, softmax_topk, sigmoid, got 'soft'"},
      {"backend: gpu\n", "exp.yaml:1: backend: must be one of auto, cpu, cuda, got 'gpu'"},
      {"precision: fp16\n", "exp.yaml:1: precision: must be one of fp32, bf16, got 'fp16'"},
      {"train:\n  schedule: linear\n",
       "exp.yaml:2: train.schedule: must be one of cosine, constant"},
      {"model:\n  d_model: 0\n", "exp.yaml:2: model.d_model: must be >= 1, got 0"},
      {"model:\n  vocab_size: -1\n", "exp.yaml:2: model.vocab_size: must be >= 0, got -1"},
      {"model:\n  first_dense_layers: -1\n", "exp.yaml:2: model.first_dense_layers: must be >= 0"},
      {"model:\n  norm_eps: 0\n", "exp.yaml:2: model.norm_eps: must be > 0.0, got 0.0"},
      {"model:\n  rope_theta: -1\n", "exp.yaml:2: model.rope_theta: must be > 0.0"},
      {"moe:\n  n_shared: -1\n", "exp.yaml:2: moe.n_shared: must be >= 0"},
      {"moe:\n  top_k: 0\n", "exp.yaml:2: moe.top_k: must be >= 1"},
      {"moe:\n  router_noise: -0.5\n", "exp.yaml:2: moe.router_noise: must be >= 0.0, got -0.5"},
      {"balance:\n  expert_alpha: -1\n", "exp.yaml:2: balance.expert_alpha: must be >= 0.0"},
      {"balance:\n  device_groups: -2\n", "exp.yaml:2: balance.device_groups: must be >= 0"},
      {"parallel:\n  grad_bucket_mb: -1\n", "exp.yaml:2: parallel.grad_bucket_mb: must be >= 0.0, got -1"},
      {"train:\n  lr: 0\n", "exp.yaml:2: train.lr: must be > 0.0"},
      {"train:\n  beta2: 1\n", "exp.yaml:2: train.beta2: must be in [0, 1), got 1.0"},
      {"train:\n  beta1: -0.1\n", "exp.yaml:2: train.beta1: must be in [0, 1)"},
      {"train:\n  eps: 0\n", "exp.yaml:2: train.eps: must be > 0.0"},
      {"train:\n  steps: 0\n", "exp.yaml:2: train.steps: must be >= 1"},
      {"train:\n  warmup_steps: -1\n", "exp.yaml:2: train.warmup_steps: must be >= 0"},
      {"train:\n  log_every: 0\n", "exp.yaml:2: train.log_every: must be >= 1"},
      {"train:\n  eval_every: -1\n", "exp.yaml:2: train.eval_every: must be >= 0"},
      {"data:\n  val_fraction: 0\n", "exp.yaml:2: data.val_fraction: must be in (0, 1), got 0.0"},
      {"data:\n  val_fraction: 1\n", "exp.yaml:2: data.val_fraction: must be in (0, 1)"},
      {"parallel:\n  expert_parallel: -1\n", "exp.yaml:2: parallel.expert_parallel: must be >= 0"},
      {"out: ''\n", "exp.yaml:1: out: must not be empty"},
  };
  for (const auto& [text, message] : cases)
    EXPECT_THAT(load_error(text), HasSubstr(message)) << text;
}

TEST_F(ConfigFile, OverridesApplyInOrderAfterTheFile) {
  Config c =
      load("model:\n  d_model: 64\n", {"model.d_model=128", "train.lr=2e-3", "name=a b",
                                       "data.shuffle=false", "train.lr=3e-3", "out='runs/x: y'"});
  EXPECT_EQ(c.model.d_model, 128);
  EXPECT_EQ(c.train.lr, 3e-3);
  EXPECT_EQ(c.name, "a b");
  EXPECT_FALSE(c.data.shuffle);
  EXPECT_EQ(c.out, "runs/x: y");
  EXPECT_EQ(c.origin.at("model.d_model"), "--set model.d_model=128");
  EXPECT_EQ(c.origin.at("train.lr"), "--set train.lr=3e-3");
}

TEST_F(ConfigFile, OverrideErrors) {
  EXPECT_EQ(load_error("", {"model.foo=1"}), "--set model.foo=1: unknown key");
  EXPECT_EQ(load_error("", {"model.d_modl=1"}),
            "--set model.d_modl=1: unknown key (did you mean model.d_model?)");
  EXPECT_EQ(load_error("", {"model.d_model"}), "--set model.d_model: expected key=value");
  EXPECT_EQ(load_error("", {"=3"}), "--set =3: expected key=value");
  EXPECT_EQ(load_error("", {"model=3"}), "--set model=3: model is a section; set one of its keys");
  EXPECT_EQ(load_error("", {"model.d_model=abc"}),
            "--set model.d_model=abc: expected an integer, got 'abc'");
  EXPECT_EQ(load_error("", {"model.d_model="}),
            "--set model.d_model=: expected an integer, got nothing");
  EXPECT_EQ(load_error("", {"model.d_model=[1, 2]"}),
            "--set model.d_model=[1, 2]: expected an integer, got a sequence");
  EXPECT_THAT(load_error("", {"model.d_model=[1"}),
              HasSubstr("--set model.d_model=[1: invalid YAML: "));
  // Range checks run after every override, naming the override that set the value.
  EXPECT_EQ(load_error("", {"model.d_model=0"}), "--set model.d_model=0: must be >= 1, got 0");
  EXPECT_EQ(load(R"(model:
  d_model: 0
)",
                 {"model.d_model=64"})
                .model.d_model,
            64);
}

TEST(ConfigText, ParseConfigNamesItsSource) {
  EXPECT_EQ(error_of([] { parse_config("model:\n  d_model: x\n", "<string>"); }),
            "<string>:2: model.d_model: expected an integer, got 'x'");
  EXPECT_EQ(parse_config("seed: 5\n", "<string>", {"seed=6"}).seed, 6u);
}

}  // namespace
}  // namespace dsmoe
