// What `dsmoe train` leaves on disk when a write fails for lack of space (the DSMOE_DISK_FULL
// hook, and a real ENOSPC from /dev/full), and train.keep_checkpoints' rotation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct TinyRun {
  test::TempDir dir;
  std::string cfg, out;
  TinyRun() {
    test::write_file(dir.file("corpus.txt"), test::make_corpus(400, 3));
    cfg = dir.file("run.yaml");
    out = dir.file("out");
    test::write_file(cfg, test::tiny_yaml(dir.file("corpus.txt"), out));
  }
  // `dsmoe train` of the tiny config for 4 steps, a checkpoint every 2.
  test::RunResult train(const std::string& env = "", const std::string& more = "") const {
    return test::run_command_result(env + " " + DSMOE_BIN + " train " + cfg +
                                    " --set train.steps=4 --set train.checkpoint_every=2 --set train.eval_every=0 " +
                                    more + " 2>&1");
  }
  std::string ckpt() const { return out + "/checkpoint.h5"; }
  int64_t ckpt_step() const { return read_checkpoint_meta(ckpt()).step; }
};

TEST(CheckpointFiles, FullDiskAtACheckpointNamesItAndKeepsThePreviousOne) {
  TinyRun run;
  test::RunResult r = run.train("DSMOE_DISK_FULL=checkpoint.h5:4");
  EXPECT_EQ(r.exit_code, 1) << r.output;  // an error, not a crash
  EXPECT_THAT(r.output, HasSubstr(run.ckpt() + ": cannot write checkpoint: "));
  EXPECT_THAT(r.output, HasSubstr("No space left on device"));
  EXPECT_EQ(run.ckpt_step(), 2);  // the previous checkpoint, whole
  EXPECT_FALSE(std::filesystem::exists(run.ckpt() + ".tmp"));
  test::RunResult eval = test::run_dsmoe("eval --checkpoint " + run.ckpt());
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  test::RunResult again = run.train();
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr("resuming from " + run.ckpt() + " at step 2"));
  EXPECT_EQ(run.ckpt_step(), 4);
}

// A real ENOSPC from the kernel: checkpoint.h5.tmp is a link to /dev/full.
TEST(CheckpointFiles, RealEnospcKeepsThePreviousCheckpoint) {
  std::error_code ec;
  if (!std::filesystem::is_character_file("/dev/full", ec)) GTEST_SKIP() << "no /dev/full";
  TinyRun run;
  test::RunResult first = run.train("", "--stop-after 2");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  ASSERT_EQ(run.ckpt_step(), 2);
  std::filesystem::create_symlink("/dev/full", run.ckpt() + ".tmp");
  test::RunResult r = run.train();
  EXPECT_EQ(r.exit_code, 1) << r.output;  // an error, not a crash
  EXPECT_THAT(r.output, HasSubstr(run.ckpt() + ": cannot write checkpoint: "));
  EXPECT_THAT(r.output, HasSubstr("No space left on device"));
  EXPECT_EQ(run.ckpt_step(), 2);
  test::RunResult again = run.train();
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(run.ckpt_step(), 4);
}

TEST(CheckpointFiles, FullDiskAtAMetricsFlushKeepsTheFlushedRows) {
  TinyRun run;
  test::RunResult r = run.train("DSMOE_DISK_FULL=metrics.h5:3");
  EXPECT_EQ(r.exit_code, 1) << r.output;  // an error, not a crash
  EXPECT_THAT(r.output, HasSubstr(run.out + "/metrics.h5: cannot write metrics (flush failed: "
                                            "No space left on device)"));
  EXPECT_EQ(run.ckpt_step(), 2);
  EXPECT_EQ(test::read_series(run.out + "/metrics.h5", "train/step"), (std::vector<double>{1, 2}));
  test::RunResult again = run.train();
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(test::read_series(run.out + "/metrics.h5", "train/step"), (std::vector<double>{1, 2, 3, 4}));
}

std::vector<std::string> kept_files(const std::string& out) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(out)) {
    const std::string n = e.path().filename();
    if (n.rfind("checkpoint", 0) == 0) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(CheckpointFiles, KeepCheckpointsRotatesAndEachKeptOneLoads) {
  TinyRun run;
  test::RunResult r = run.train("", "--set train.steps=7 --set train.checkpoint_every=1 --set train.keep_checkpoints=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(kept_files(run.out), (std::vector<std::string>{"checkpoint-5.h5", "checkpoint-6.h5", "checkpoint-7.h5",
                                                           "checkpoint.h5"}));
  for (int step : {5, 6, 7}) {
    const std::string kept = run.out + "/checkpoint-" + std::to_string(step) + ".h5";
    EXPECT_EQ(read_checkpoint_meta(kept).step, step);
    test::RunResult eval = test::run_dsmoe("eval --checkpoint " + kept);
    EXPECT_EQ(eval.exit_code, 0) << eval.output;
  }
  EXPECT_THAT(test::read_file(run.out + "/config.yaml"), HasSubstr("  keep_checkpoints: 3\n"));

  TinyRun plain;  // the default: checkpoint.h5 only, and config.yaml has no extension key (docs/config.md)
  r = plain.train();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(kept_files(plain.out), std::vector<std::string>{"checkpoint.h5"});
  EXPECT_THAT(test::read_file(plain.out + "/config.yaml"), Not(HasSubstr("keep_checkpoints")));
}

}  // namespace
}  // namespace dsmoe
