// `dsmoe bench`: trains without writing anything and ends with one JSON object that holds the
// fields the benchmark harnesses read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

double number_after(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\": ");
  EXPECT_NE(at, std::string::npos) << key;
  return at == std::string::npos ? -1 : std::atof(json.c_str() + at + key.size() + 4);
}

// The tiny model on a small text corpus.
struct CliBench : ::testing::Test {
  test::TempDir dir;
  std::string cfg = dir.file("run.yaml");
  void SetUp() override {
    test::write_file(dir.file("corpus.txt"), test::make_corpus(1000, 4));
    test::write_file(cfg, test::tiny_yaml(dir.file("corpus.txt"), dir.file("out")));
  }
};

TEST_F(CliBench, LastLineIsOneJsonObjectWithTheThroughput) {
  test::RunResult r = test::run_dsmoe("bench " + cfg + " --steps 2 --warmup 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string last = r.output.substr(r.output.rfind('{'));
  EXPECT_EQ(last.back(), '\n');
  EXPECT_EQ(last[last.size() - 2], '}');
  EXPECT_GT(number_after(last, "tokens_per_s"), 0);
  EXPECT_GT(number_after(last, "ms_per_step"), 0);
  // 6 * (active matmul parameters) + 6 * n_layers * d_model * seq_len for the tiny model:
  // attention 2*4*32*32, dense FFN 3*32*64, shared + 2 routed experts 3*3*32*16, router 4*32,
  // head 256*32 (a text file is byte-level: V = 256).
  const double active = 2 * 4 * 32 * 32 + 3 * 32 * 64 + 3 * 3 * 32 * 16 + 4 * 32 + 256 * 32;
  EXPECT_DOUBLE_EQ(number_after(last, "flops_per_token"), 6 * active + 6 * 2 * 32 * 32);
  EXPECT_GT(number_after(last, "params_total"), number_after(last, "params_active"));
  EXPECT_GT(number_after(last, "peak_mem_bytes"), 0);
  EXPECT_EQ(number_after(last, "world_size"), 1);
  EXPECT_THAT(last, ::testing::HasSubstr("\"backend\": \"cpu\""));
  EXPECT_THAT(r.output, ::testing::HasSubstr("host threads: 1 rank(s) x "));
  EXPECT_THAT(r.output, ::testing::HasSubstr("host BLAS: OpenBLAS ("));  // its kernels, build and threads
  EXPECT_FALSE(std::filesystem::exists(dir.file("out"))) << "bench must not write run outputs";
}

// --force-balance is said on the report and in the JSON; training refuses the setting.
TEST_F(CliBench, ForcedBalanceIsReportedAndOnlyForBenchmarks) {
  test::RunResult r = test::run_dsmoe("bench " + cfg + " --steps 1 --warmup 0 --force-balance");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("(routing forced to balance): "));
  EXPECT_THAT(r.output, ::testing::HasSubstr("\"force_balance\": true,"));
  r = test::run_dsmoe("bench " + cfg + " --steps 1 --warmup 0");
  EXPECT_THAT(r.output, ::testing::HasSubstr("\"force_balance\": false,"));
  r = test::run_dsmoe("bench " + cfg + " --steps 1 --warmup 0 --force-balance --set model.first_dense_layers=2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, ::testing::HasSubstr("--force-balance: the model has no MoE layer to balance"));
  r = test::run_dsmoe("train " + cfg + " --set moe.force_balance=true");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, ::testing::HasSubstr(cfg + ": moe.force_balance ignores the router's choices"));
}

// The balance bench reports is that of the steps it timed: the same steps trained by `dsmoe
// train` (same seed, same batches) log the same loads in metrics.h5. Forced balance: 8 x 32
// tokens x top-2 over 4 experts is 128 rows each, so MaxVio 0 and no expert without rows.
TEST_F(CliBench, ReportsTheTimedStepsExpertBalance) {
  test::RunResult r = test::run_dsmoe("bench " + cfg + " --steps 3 --warmup 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string json = r.output.substr(r.output.rfind('{'));
  ASSERT_EQ(test::run_dsmoe("train " + cfg + " --stop-after 3").exit_code, 0);  // the same lr schedule
  const std::vector<double> load = test::read_series(dir.file("out") + "/metrics.h5", "experts/load");
  ASSERT_EQ(load.size(), 3u * 4);  // 3 steps, one MoE layer of 4 experts
  double violation = 0, empty = 0;
  for (int step = 0; step < 3; ++step) {
    const double* l = &load[step * 4];
    const double mean = (l[0] + l[1] + l[2] + l[3]) / 4;
    violation += (*std::max_element(l, l + 4) / mean - 1) / 3;
    empty += std::count(l, l + 4, 0.0) / 3.0;
  }
  EXPECT_GT(violation, 0);
  EXPECT_NEAR(number_after(json, "max_violation"), violation, 1e-5 * (1 + violation));
  EXPECT_NEAR(number_after(json, "experts_without_rows"), empty, 1e-5);
  EXPECT_THAT(r.output, ::testing::HasSubstr("of 4 routed experts without rows (learned routing of the first steps"));

  r = test::run_dsmoe("bench " + cfg + " --steps 2 --warmup 0 --force-balance");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("MaxVio 0.000, 0.0 of 4 routed experts without rows (forced)"));
  EXPECT_EQ(number_after(r.output.substr(r.output.rfind('{')), "max_violation"), 0);
}

TEST_F(CliBench, ProfileIsRefusedWhereTheBackendKeepsNone) {
  const test::RunResult r = test::run_dsmoe("bench " + cfg + " --steps 1 --warmup 0 --profile");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, ::testing::HasSubstr("--profile: the cpu backend keeps no op profile (a GPU run does)"));
}

TEST_F(CliBench, RunsWhereTheValidationSplitIsTooShortToEvaluate) {
  // A bench never evaluates, so a small corpus (a quick measurement) is no reason to refuse it;
  // training the same config is refused (cli_errors_test).
  test::RunResult r = test::run_dsmoe("bench " + cfg + " --steps 1 --warmup 0 --set train.eval_batches=1000");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = test::run_dsmoe("train " + cfg + " --set train.eval_batches=1000");
  EXPECT_EQ(r.exit_code, 1) << r.output;
}

// bench/compare_builds.sh: two builds in turn, one ratio; a failing run, a missing binary or a
// bad round count stops it with a message and a non-zero exit.
TEST_F(CliBench, CompareBuildsScriptTakesTurnsAndGivesTheRatio) {
  auto compare = [](const std::string& args) {
    return test::run_command_result("bash " DSMOE_SOURCE_DIR "/bench/compare_builds.sh " + args + " 2>&1");
  };
  const std::string bin = DSMOE_BIN;
  test::RunResult r = compare(bin + " " + bin + " 2 " + cfg + " --steps 1 --warmup 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  size_t at = 0;
  for (const char* turn : {"round 1 A: ", "round 1 B: ", "round 2 A: ", "round 2 B: "}) {
    at = r.output.find(turn, at);
    ASSERT_NE(at, std::string::npos) << turn << " in turn\n" << r.output;
  }
  EXPECT_THAT(r.output, ::testing::ContainsRegex("\nA +2 +[0-9,.]+ "));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("\nB/A: [0-9]\\.[0-9]{3} \\(per round "));

  r = compare(bin + " " + bin + " 1 " + dir.file("missing.yaml"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("round 1, build A"));
  EXPECT_THAT(r.output, ::testing::HasSubstr("missing.yaml"));
  r = compare(bin + " " + dir.file("no-dsmoe") + " 1 " + cfg);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("no-dsmoe is not an executable"));
  r = compare(bin + " " + bin + " two " + cfg);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("ROUNDS must be a positive integer"));
}

}  // namespace
}  // namespace dsmoe
