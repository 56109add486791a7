// `kill -9` at any moment of a run that writes a checkpoint every step: the checkpoint left
// behind always loads, metrics.h5 always opens with consecutive steps, and the run resumes to
// the end.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

TEST(Crash, KillNineNeverLeavesABrokenCheckpointOrMetrics) {
  test::TempDir dir;
  test::write_file(dir.file("corpus.txt"), test::make_corpus(3000, 8));
  const std::string cfg = dir.file("run.yaml"), out = dir.file("out");
  test::write_file(cfg, test::tiny_yaml(dir.file("corpus.txt"), out));
  const std::string args = cfg + " --set train.steps=1000 --set train.checkpoint_every=1 --set train.eval_every=0";

  int killed = 0;
  for (int delay_ms : {40, 170, 430}) {  // after the first checkpoint: inside writes or between them
    SCOPED_TRACE("kill after " + std::to_string(delay_ms) + " ms");
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      const std::string cmd = std::string("exec ") + DSMOE_BIN + " train " + args + " >/dev/null 2>&1";
      execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
      _exit(127);
    }
    for (int i = 0; i < 300 && access((out + "/checkpoint.h5").c_str(), F_OK) != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed";
    killed++;

    test::RunResult eval = test::run_dsmoe("eval --checkpoint " + out + "/checkpoint.h5");
    EXPECT_EQ(eval.exit_code, 0) << eval.output;
    const std::vector<double> steps = test::read_series(out + "/metrics.h5", "train/step");
    ASSERT_FALSE(steps.empty());
    for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], static_cast<double>(i + 1));
  }
  test::RunResult resumed = test::run_dsmoe("train " + args);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, ::testing::HasSubstr("resuming from"));
  const std::vector<double> steps = test::read_series(out + "/metrics.h5", "train/step");
  ASSERT_EQ(steps.size(), 1000u);
  EXPECT_EQ(steps.back(), 1000.0);
  EXPECT_EQ(killed, 3);
}

}  // namespace
}  // namespace dsmoe
