// Defaults, the resolved dump (to_yaml) and its round trip.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "config/config.h"
#include "config/config_keys.h"
#include "config/scalar.h"
#include "test_util.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The config format's example: every key of the format (docs/config.md, without the extensions)
// at its default, except vocab_size at the 256 that a text file gives.
const char* kFormatExample = R"(name: quickstart
seed: 1234
backend: auto            # auto | cpu | cuda
precision: fp32          # fp32 | bf16 (bf16: CUDA only; master weights fp32)
model:
  vocab_size: 256        # taken from the data when it is a .bin token file
  d_model: 256
  n_layers: 4
  n_heads: 4
  seq_len: 256
  first_dense_layers: 1
  dense_hidden: 1024
  rope_theta: 10000
  norm_eps: 1.0e-6
  tie_embeddings: false
  init_std: 0.02
moe:
  n_routed: 16           # N
  n_shared: 1            # Ks, each of width expert_hidden
  top_k: 2               # K, routed experts per token
  expert_hidden: 256     # n
  score: softmax         # softmax | softmax_topk | sigmoid
  norm_topk: false
  router_noise: 0.0
  capacity_factor: 0.0   # 0 = dropless
  route_devices: 0       # > 0: device-limited routing to at most this many device groups
balance:
  expert_alpha: 0.01
  device_alpha: 0.0
  device_groups: 0       # 0 = expert-parallel size
  seq_alpha: 0.0
  comm_alpha: 0.0        # DeepSeek-V2 communication balance loss
  bias_rate: 0.0         # > 0: auxiliary-loss-free bias balancing
train:
  steps: 1000
  batch_size: 32         # sequences per optimizer step, over all ranks
  micro_batches: 1       # gradient accumulation
  lr: 1.0e-3
  min_lr: 1.0e-4
  warmup_steps: 100
  schedule: cosine       # cosine | constant
  beta1: 0.9
  beta2: 0.95
  eps: 1.0e-8
  weight_decay: 0.1
  grad_clip: 1.0
  log_every: 10
  eval_every: 100
  eval_batches: 8
  checkpoint_every: 0    # 0 = only at the end
data:
  path: default          # default = the project's prepared English corpus
  val_fraction: 0.005
  shuffle: true
parallel:
  expert_parallel: 0     # ranks sharing one copy of the experts; 0 = all ranks
out: runs/quickstart
)";

Config every_key_changed();

std::set<std::string> key_paths(const YAML::Node& map, const std::string& prefix = "") {
  std::set<std::string> paths;
  for (const auto& kv : map) {
    std::string path = prefix + kv.first.Scalar();
    if (kv.second.IsMap()) {
      auto sub = key_paths(kv.second, path + ".");
      paths.insert(sub.begin(), sub.end());
    } else {
      paths.insert(path);
    }
  }
  return paths;
}

TEST(ConfigYaml, DefaultsAreTheFormatsExceptVocabFromData) {
  Config expected;
  EXPECT_EQ(expected.model.vocab_size, 0);  // the example's 256 is what the data gives for text
  expected.model.vocab_size = 256;
  EXPECT_EQ(parse_config(kFormatExample, "format example"), expected);
  EXPECT_EQ(parse_config("", "empty.yaml"), Config{});
}

// The keys dsmoe adds to the config format, each documented in docs/config.md (Extensions); the
// dump has them only when they are not at their default.
const std::set<std::string> kExtensions = {"moe.force_balance", "train.keep_checkpoints", "train.recompute",
                                            "parallel.grad_bucket_mb", "parallel.shard_optimizer"};

// The dump's keys are the format's, plus the documented extensions that are set.
TEST(ConfigYaml, DumpHasExactlyTheFormatsKeys) {
  const std::set<std::string> format = key_paths(YAML::Load(kFormatExample));
  EXPECT_EQ(key_paths(YAML::Load(to_yaml(Config{}))), format);
  Config c;
  c.train.keep_checkpoints = 3;
  std::set<std::string> with = format;
  with.insert("train.keep_checkpoints");
  EXPECT_EQ(key_paths(YAML::Load(to_yaml(c))), with);
  EXPECT_THAT(to_yaml(c), HasSubstr("\n  checkpoint_every: 0\n  keep_checkpoints: 3\ndata:\n"));
  // Every key of the dump of a config that sets everything is the format's or an extension.
  std::set<std::string> all = format;
  all.insert(kExtensions.begin(), kExtensions.end());
  EXPECT_EQ(key_paths(YAML::Load(to_yaml(every_key_changed()))), all);
  std::string doc = test::read_file(DSMOE_SOURCE_DIR "/docs/config.md");
  for (const std::string& key : kExtensions) EXPECT_THAT(doc, HasSubstr("**`" + key + "`**")) << key;
  for (const auto& key : config_internal::config_keys())
    EXPECT_EQ(key.extension, kExtensions.count(key.path) == 1) << key.path;
}

// docs/config.md's example block is every key at its default, and its table has a row per key.
TEST(ConfigYaml, DocsListEveryKeyWithItsDefault) {
  const std::string doc = test::read_file(DSMOE_SOURCE_DIR "/docs/config.md");
  const size_t begin = doc.find("```yaml\n");
  ASSERT_NE(begin, std::string::npos);
  const size_t end = doc.find("```\n", begin + 8);
  ASSERT_NE(end, std::string::npos);
  const std::string example = doc.substr(begin + 8, end - begin - 8);
  EXPECT_EQ(parse_config(example, "docs/config.md"), Config{});
  std::set<std::string> keys;
  for (const auto& key : config_internal::config_keys()) {
    keys.insert(key.path);
    EXPECT_THAT(doc, HasSubstr("\n| `" + key.path + "` |")) << key.path;
  }
  EXPECT_EQ(key_paths(YAML::Load(example)), keys);
}

TEST(ConfigYaml, DumpIsReadableInTheDocsOrder) {
  std::string y = to_yaml(Config{});
  EXPECT_THAT(y, StartsWith("name: quickstart\nseed: 1234\nbackend: auto\nprecision: fp32\n"
                            "model:\n  vocab_size: 0\n  d_model: 256\n"));
  EXPECT_THAT(y, HasSubstr("\n  norm_eps: 1.0e-06\n"));
  EXPECT_THAT(y, HasSubstr("\n  rope_theta: 10000.0\n"));
  EXPECT_THAT(y, HasSubstr("\n  lr: 0.001\n"));
  EXPECT_THAT(y, HasSubstr("\nparallel:\n  expert_parallel: 0\nout: runs/quickstart\n"));
  EXPECT_LT(y.find("\nmoe:"), y.find("\nbalance:"));
  EXPECT_LT(y.find("\nbalance:"), y.find("\ntrain:"));
  EXPECT_LT(y.find("\ntrain:"), y.find("\ndata:"));
}

Config every_key_changed() {
  Config c;
  c.name = "exp one";
  c.seed = 18446744073709551615ull;
  c.backend = "cuda";
  c.precision = "bf16";
  c.model = {50257, 384, 6, 8, 512, 0, 1536, 500000.0, 1.0 / 3.0, true, 0.1 + 0.2};
  c.moe = {64, 2, 6, 96, "sigmoid", true, 1e-300, 1.25, 2, true};
  c.balance = {0.003, 0.05, 8, 1e-4, 0.02, 0.001};
  c.train = {int64_t(1) << 40,
             64,
             4,
             3e-4,
             3e-5,
             2000,
             "constant",
             0.8,
             0.999,
             1e-10,
             0.0,
             0.5,
             1,
             0,
             2,
             500,
             3};
  c.data = {"data/tokens.bin", 0.1, false};
  c.parallel.expert_parallel = 4;
  c.parallel.grad_bucket_mb = 2.5;
  c.parallel.shard_optimizer = true;
  c.train.recompute = "attention";
  c.out = "runs/exp: one";
  return c;
}

TEST(ConfigYaml, EveryKeyRoundTrips) {
  Config c = every_key_changed();
  Config back = parse_config(to_yaml(c), "<dump>");
  EXPECT_EQ(back, c);
  EXPECT_EQ(to_yaml(back), to_yaml(c));
}

// Each key alone, set through --set to its value in the dump, changes the config: the key
// table, --set and equality cover every key.
TEST(ConfigYaml, EveryKeyCanBeSetAlone) {
  std::string dump = to_yaml(every_key_changed());
  YAML::Node values = YAML::Load(dump);
  for (const std::string& path : key_paths(values)) {
    size_t dot = path.find('.');
    YAML::Node v =
        dot == std::string::npos ? values[path] : values[path.substr(0, dot)][path.substr(dot + 1)];
    YAML::Emitter scalar;
    scalar << v;
    Config c = parse_config("", "<none>", {path + "=" + scalar.c_str()});
    EXPECT_NE(c, Config{}) << path;
    EXPECT_EQ(c.origin.at(path), "--set " + path + "=" + scalar.c_str());
  }
}

TEST(ConfigYaml, DoublesRoundTripExactlyAndShortest) {
  Config c = every_key_changed();
  std::string y = to_yaml(c);
  EXPECT_THAT(y, HasSubstr("norm_eps: 0.3333333333333333\n"));
  EXPECT_THAT(y, HasSubstr("init_std: 0.30000000000000004\n"));
  EXPECT_THAT(y, HasSubstr("router_noise: 1.0e-300\n"));
  EXPECT_THAT(y, HasSubstr("rope_theta: 500000.0\n"));
  EXPECT_THAT(y, HasSubstr("min_lr: 3.0e-05\n"));
  EXPECT_THAT(y, HasSubstr("seq_alpha: 0.0001\n"));
  EXPECT_THAT(y, HasSubstr("steps: 1099511627776\n"));
  Config back = parse_config(y, "<dump>");
  EXPECT_EQ(back.model.norm_eps, 1.0 / 3.0);
  EXPECT_EQ(back.model.init_std, 0.1 + 0.2);
  EXPECT_EQ(back.moe.router_noise, 1e-300);
}

TEST(ConfigYaml, AnyFiniteDoubleRoundTrips) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    uint64_t bits = rng();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    if (!std::isfinite(v)) continue;
    std::string text = config_internal::show_scalar(v);
    double back = 0;
    ASSERT_EQ(config_internal::read_scalar(text, back), "") << text;
    ASSERT_EQ(std::memcmp(&back, &v, sizeof v), 0) << text;
    ASSERT_NE(text.find('.'), std::string::npos) << text;
  }
}

TEST(ConfigYaml, StringsThatLookLikeOtherTypesStayStrings) {
  for (const char* name : {"123", "1.5e3", "true", "null", "~", "", "a: b", "#x", " x", "[x]"}) {
    Config c;
    c.name = name;
    std::string y = to_yaml(c);
    EXPECT_EQ(parse_config(y, "<dump>").name, name) << y;
    EXPECT_TRUE(YAML::Load(y)["name"].Tag() == "!") << "not quoted: " << name;
  }
}

TEST(ConfigYaml, EqualityComparesValuesNotOrigin) {
  Config a = parse_config("seed: 7\n", "a.yaml");
  Config b = parse_config("", "b.yaml", {"seed=7"});
  EXPECT_EQ(a, b);
  b.train.lr = 2e-3;
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace dsmoe
