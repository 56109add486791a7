// jobs/run.sbatch as `dsmoe submit` fills it in, run by bash as a Slurm array task would be, with
// stand-ins for srun (runs the command) and scontrol (records its arguments): a run goes to the
// end; USR1 makes it checkpoint and requeue itself; a failure is recorded.
// The same script under a real Slurm: tests/slurm_*_test.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "slurm_fixture.h"

extern char** environ;

namespace dsmoe {
namespace {

using ::testing::HasSubstr;

using test::checkpoint_step;

struct RunSbatch : ::testing::Test, test::SlurmFixture {
  std::string exp_dir;
  void SetUp() override {
    stand_in("sbatch", "echo 7\n");
    stand_in("srun", "while [ \"${1#-}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n");
    stand_in("scontrol", "echo \"$@\" >> '" + dir.file("scontrol.args") + "'\n");
    const test::RunResult r =
        run_dsmoe_submit(experiment("job", 200) + " --partition debug --ranks-per-run 1 --runs-dir " + runs);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    exp_dir = runs + "/job";
    setenv("SLURM_ARRAY_JOB_ID", "7", 1);
  }
  void TearDown() override {
    unsetenv("SLURM_ARRAY_JOB_ID");
    unsetenv("SLURM_ARRAY_TASK_ID");
  }
  static test::RunResult run_dsmoe_submit(const std::string& args) { return test::run_dsmoe("submit " + args); }

  // bash submit.sbatch as array task `index`; returns its pid.
  pid_t start_task(int index) {
    setenv("SLURM_ARRAY_TASK_ID", std::to_string(index).c_str(), 1);
    std::string bash = "bash", script = exp_dir + "/submit.sbatch";
    char* argv[] = {bash.data(), script.data(), nullptr};
    pid_t pid = -1;
    if (posix_spawnp(&pid, "bash", nullptr, nullptr, argv, environ) != 0) throw Error("cannot start bash");
    return pid;
  }
  static int exit_code(pid_t pid) {
    int status = 0;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string log(const std::string& run) {
    const std::string path = exp_dir + "/" + run + "/slurm.log";
    return std::filesystem::exists(path) ? test::read_file(path) : "";
  }
};

TEST_F(RunSbatch, RunsToTheEnd) {
  ASSERT_EQ(exit_code(start_task(0)), 0) << log("a-s1");
  EXPECT_THAT(log("a-s1"), HasSubstr("job 7_0 (restart 0)"));
  EXPECT_THAT(log("a-s1"), HasSubstr("done: 200 steps"));
  EXPECT_THAT(log("a-s1"), HasSubstr("== done"));
  EXPECT_EQ(checkpoint_step(exp_dir + "/a-s1"), 200);
  EXPECT_EQ(test::read_file(exp_dir + "/a-s1/slurm_job"), "7_0\n");
  EXPECT_FALSE(std::filesystem::exists(dir.file("scontrol.args")));
  // Submitted again, the run is left out: its checkpoint is at train.steps.
  const test::RunResult r = test::run_dsmoe("submit " + dir.file("job.yaml") + " --partition debug --ranks-per-run 1 "
                                            "--runs-dir " + runs + " --dry-run");
  EXPECT_THAT(r.output, HasSubstr("RUNS=('b-s1')\n"));
}

TEST_F(RunSbatch, Usr1CheckpointsAndRequeuesThenTheRunResumes) {
  const pid_t pid = start_task(1);
  for (int i = 0; i < 6000 && log("b-s1").find("step 20/200") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  kill(pid, SIGUSR1);  // what Slurm sends the batch shell SIGNAL_SECONDS before the time limit
  ASSERT_EQ(exit_code(pid), 0) << log("b-s1");
  EXPECT_THAT(log("b-s1"), HasSubstr("== USR1: checkpointing"));
  EXPECT_THAT(log("b-s1"), HasSubstr("stopping after signal 10"));
  EXPECT_THAT(log("b-s1"), HasSubstr("== requeueing 7_1"));
  EXPECT_EQ(test::read_file(dir.file("scontrol.args")), "requeue 7_1\n");
  const int64_t step = checkpoint_step(exp_dir + "/b-s1");
  EXPECT_GE(step, 20);
  EXPECT_LT(step, 200);

  ASSERT_EQ(exit_code(start_task(1)), 0) << log("b-s1");  // the requeued task
  EXPECT_THAT(log("b-s1"), HasSubstr("resuming from " + exp_dir + "/b-s1/checkpoint.h5 at step " + std::to_string(step)));
  EXPECT_EQ(checkpoint_step(exp_dir + "/b-s1"), 200);
}

TEST_F(RunSbatch, ExitCodeZeroWithoutAFinishedRunRequeues) {
  stand_in("srun", "exit 0\n");  // a step that never started its ranks
  ASSERT_EQ(exit_code(start_task(0)), 0) << log("a-s1");
  EXPECT_THAT(log("a-s1"), HasSubstr("== exit code 0 but the run is not done"));
  EXPECT_EQ(test::read_file(dir.file("scontrol.args")), "requeue 7_0\n");
}

TEST_F(RunSbatch, AFailedRunIsRecordedAndClearedWhenItRunsAgain) {
  std::filesystem::rename(corpus, corpus + ".away");
  EXPECT_EQ(exit_code(start_task(0)), 1) << log("a-s1");
  EXPECT_EQ(test::read_file(exp_dir + "/a-s1/failed"), "exit code 1 (job 7_0)\n");
  EXPECT_THAT(log("a-s1"), HasSubstr("== failed: exit code 1"));

  std::filesystem::rename(corpus + ".away", corpus);
  ASSERT_EQ(exit_code(start_task(0)), 0) << log("a-s1");
  EXPECT_FALSE(std::filesystem::exists(exp_dir + "/a-s1/failed"));
  EXPECT_EQ(checkpoint_step(exp_dir + "/a-s1"), 200);
}

}  // namespace
}  // namespace dsmoe
