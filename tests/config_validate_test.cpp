// Combinations of keys that cannot run, at parse time and once the world size is known.
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

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse_config(text, "exp.yaml", overrides); });
}

std::string validate_error(const std::string& text, int world_size) {
  Config c = parse_config(text, "exp.yaml");
  return error_of([&] { validate_config(c, world_size); });
}

TEST(ConfigValidate, DefaultsAreValidOnAnyWorldSize) {
  for (int world : {1, 2, 4, 8, 16}) EXPECT_NO_THROW(validate_config(Config{}, world)) << world;
}

TEST(ConfigValidate, TopKAboveRoutedExperts) {
  EXPECT_EQ(parse_error("name: x\nmoe:\n  top_k: 20\n"),
            "exp.yaml:3: moe.top_k: moe.top_k = 20 exceeds moe.n_routed = 16");
  // top_k left at its default: the key the user changed is the one named.
  EXPECT_EQ(parse_error("moe:\n  n_routed: 1\n"),
            "exp.yaml:2: moe.n_routed: moe.top_k = 2 exceeds moe.n_routed = 1");
  EXPECT_EQ(parse_error("", {"moe.top_k=17"}),
            "--set moe.top_k=17: moe.top_k = 17 exceeds moe.n_routed = 16");
  EXPECT_EQ(parse_error("moe:\n  top_k: 16\n"), "(no error)");
}

TEST(ConfigValidate, HeadsMustDivideModelWidthIntoEvenHeads) {
  EXPECT_EQ(parse_error("model:\n  d_model: 100\n  n_heads: 3\n"),
            "exp.yaml:3: model.n_heads: model.d_model = 100 is not divisible by model.n_heads = 3");
  EXPECT_THAT(parse_error("model:\n  d_model: 96\n  n_heads: 32\n"),
              HasSubstr("exp.yaml:3: model.n_heads: head dim model.d_model / model.n_heads = 3 "
                        "must be even"));
  EXPECT_THAT(parse_error("model:\n  d_model: 260\n"),
              HasSubstr("exp.yaml:2: model.d_model: head dim"));
  EXPECT_EQ(parse_error("model:\n  d_model: 96\n  n_heads: 48\n"), "(no error)");
}

TEST(ConfigValidate, DenseLayersAtMostAllLayers) {
  EXPECT_EQ(parse_error("model:\n  n_layers: 2\n  first_dense_layers: 3\n"),
            "exp.yaml:3: model.first_dense_layers: model.first_dense_layers = 3 exceeds "
            "model.n_layers = 2");
  Config dense = parse_config("model:\n  n_layers: 2\n  first_dense_layers: 2\n", "exp.yaml");
  EXPECT_EQ(dense.n_moe_layers(), 0);
}

TEST(ConfigValidate, MicroBatchesDivideBatch) {
  EXPECT_EQ(parse_error("train:\n  batch_size: 32\n  micro_batches: 3\n"),
            "exp.yaml:3: train.micro_batches: train.batch_size = 32 is not divisible by "
            "train.micro_batches = 3");
  EXPECT_EQ(parse_error("train:\n  micro_batches: 5\n"),
            "exp.yaml:2: train.micro_batches: train.batch_size = 32 is not divisible by "
            "train.micro_batches = 5");
}

TEST(ConfigValidate, BatchSplitsOverRanks) {
  const std::string text = "moe:\n  n_routed: 12\ntrain:\n  batch_size: 12\n  micro_batches: 2\n";
  EXPECT_EQ(validate_error(text, 1), "(no error)");
  EXPECT_EQ(validate_error(text, 2), "(no error)");
  EXPECT_EQ(validate_error(text, 3), "(no error)");
  EXPECT_EQ(validate_error(text, 4),
            "exp.yaml:4: train.batch_size: train.batch_size = 12 is not divisible by "
            "train.micro_batches x world size = 2 x 4 (world size 4)");
  EXPECT_EQ(validate_error("train:\n  micro_batches: 2\n", 3),
            "exp.yaml:2: train.micro_batches: train.batch_size = 32 is not divisible by "
            "train.micro_batches x world size = 2 x 3 (world size 3)");
  EXPECT_THAT(error_of([] { validate_config(parse_config("", "exp.yaml"), 3); }),
              HasSubstr("exp.yaml: train.batch_size (default): "));
  EXPECT_THAT(error_of([] { validate_config(Config{}, 3); }),
              ::testing::StartsWith("train.batch_size (default): "));
}

TEST(ConfigValidate, Bf16NeedsCuda) {
  EXPECT_EQ(parse_error("backend: cpu\nprecision: bf16\n"),
            "exp.yaml:2: precision: precision bf16 needs the CUDA backend, but backend is cpu");
  EXPECT_EQ(parse_error("backend: cuda\nprecision: bf16\n"), "(no error)");
  EXPECT_EQ(parse_error("precision: bf16\n"), "(no error)");  // auto may pick CUDA
}

TEST(ConfigValidate, DeviceGroupsDivideExperts) {
  EXPECT_EQ(parse_error("balance:\n  device_groups: 3\n"),
            "exp.yaml:2: balance.device_groups: moe.n_routed = 16 is not divisible by "
            "balance.device_groups = 3");
  EXPECT_EQ(parse_error("balance:\n  device_groups: 4\n"), "(no error)");
}

TEST(ConfigValidate, ExpertParallelDividesWorldAndExperts) {
  const std::string text = "train:\n  batch_size: 48\nparallel:\n  expert_parallel: 2\n";
  EXPECT_EQ(parse_error(text), "(no error)");  // the world size is not known yet
  EXPECT_EQ(validate_error(text, 1),
            "exp.yaml:4: parallel.expert_parallel: world size 1 is not divisible by "
            "parallel.expert_parallel = 2");
  EXPECT_EQ(validate_error(text, 2), "(no error)");
  EXPECT_EQ(validate_error(text, 3),
            "exp.yaml:4: parallel.expert_parallel: world size 3 is not divisible by "
            "parallel.expert_parallel = 2");
  EXPECT_EQ(validate_error(text, 4), "(no error)");
  EXPECT_EQ(parse_error("parallel:\n  expert_parallel: 3\n"),
            "exp.yaml:2: parallel.expert_parallel: moe.n_routed = 16 is not divisible by the "
            "expert-parallel size 3");
  // expert_parallel 0 means all ranks share one copy: the experts must split over the world.
  EXPECT_EQ(validate_error("moe:\n  n_routed: 12\ntrain:\n  batch_size: 48\n", 3), "(no error)");
  EXPECT_EQ(validate_error("train:\n  batch_size: 48\n", 3),
            "exp.yaml: parallel.expert_parallel (default): moe.n_routed = 16 is not divisible "
            "by the expert-parallel size 3 (world size 3)");
}

TEST(ConfigValidate, RouteDevicesReachEnoughGroupsAndExperts) {
  EXPECT_EQ(parse_error("moe:\n  route_devices: 2\nbalance:\n  device_groups: 4\n"), "(no error)");
  EXPECT_EQ(parse_error("moe:\n  n_routed: 128\n  route_devices: 2\nbalance:\n  device_groups: 128\n"),
            "exp.yaml:3: moe.route_devices: moe.route_devices works over at most 64 device groups, not 128");
  EXPECT_EQ(parse_error("moe:\n  route_devices: 5\nbalance:\n  device_groups: 4\n"),
            "exp.yaml:2: moe.route_devices: moe.route_devices = 5 exceeds the 4 device groups");
  EXPECT_EQ(parse_error("moe:\n  top_k: 3\n  route_devices: 1\nbalance:\n  device_groups: 8\n"),
            "exp.yaml:3: moe.route_devices: moe.route_devices = 1 device groups reach only 2 "
            "experts (2 per group), fewer than moe.top_k = 3");
  // Device groups default to the expert-parallel size, known once the world is.
  const std::string text = "moe:\n  route_devices: 2\n";
  EXPECT_EQ(parse_error(text), "(no error)");
  EXPECT_EQ(validate_error(text, 1),
            "exp.yaml:2: moe.route_devices: moe.route_devices = 2 exceeds the 1 device groups "
            "(world size 1)");
  EXPECT_EQ(validate_error(text, 2), "(no error)");
  EXPECT_EQ(validate_error(text, 4), "(no error)");
  EXPECT_EQ(validate_error("moe:\n  route_devices: 2\nparallel:\n  expert_parallel: 2\n", 4),
            "(no error)");
  EXPECT_EQ(parse_error("moe:\n  route_devices: 4\nparallel:\n  expert_parallel: 2\n"),
            "exp.yaml:2: moe.route_devices: moe.route_devices = 4 exceeds the 2 device groups");
}

TEST(ConfigValidate, MinLrAtMostLr) {
  EXPECT_EQ(parse_error("train:\n  lr: 1.0e-4\n  min_lr: 2.0e-4\n"),
            "exp.yaml:3: train.min_lr: train.min_lr = 0.0002 exceeds train.lr = 0.0001");
  EXPECT_EQ(parse_error("train:\n  lr: 1.0e-5\n"),
            "exp.yaml:2: train.lr: train.min_lr = 0.0001 exceeds train.lr = 1.0e-05");
  EXPECT_EQ(parse_error("train:\n  lr: 1.0e-4\n  min_lr: 1.0e-4\n"), "(no error)");
}

TEST(ConfigValidate, ChecksAValueSetInCode) {
  Config c = parse_config("", "exp.yaml");
  c.model.vocab_size = -1;
  EXPECT_EQ(error_of([&] { validate_config(c); }),
            "exp.yaml: model.vocab_size (default): must be >= 0, got -1");
}

}  // namespace
}  // namespace dsmoe
