// `dsmoe train` stopped by SIGUSR1, SIGTERM or SIGINT (Slurm's time-limit warning, preemption,
// Ctrl-C): it finishes the step, checkpoints, exits with the requeue code, and a rerun ends
// bit-identical to a run that never stopped. A second Ctrl-C soon after the first ends the
// process at once. And the SLURM_NTASKS check on the MPI world.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "io/h5.h"
#include "test_util.h"
#include "train/stop_signal.h"
#include "train_fixture.h"

extern char** environ;

namespace dsmoe {
namespace {

using ::testing::HasSubstr;


const std::vector<std::string> kLong = {"train.steps=200", "train.eval_every=50"};

// `dsmoe train CONFIG` of 200 steps as a child process, its output in `log`.
pid_t start_train(const std::string& config, const std::string& log) {
  std::vector<std::string> args = {DSMOE_BIN, "train", config};
  for (const std::string& o : kLong) args.insert(args.end(), {"--set", o});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int err = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) throw Error("cannot start " + args[0]);
  return pid;
}

bool wait_for_text(const std::string& file, const std::string& text) {
  for (int i = 0; i < 6000; ++i) {
    if (std::filesystem::exists(file) && test::read_file(file).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int exit_code(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

struct StopSignal : ::testing::TestWithParam<int> {
  test::TempDir dir;
  std::string corpus = dir.file("corpus.txt");
  void SetUp() override {
    setenv("OMP_NUM_THREADS", "1", 1);
    test::write_file(corpus, test::make_corpus(400, 3));
  }
  // A tiny run logged at every step, checkpointed only when it ends or stops.
  Config config(const std::string& out) {
    const std::string path = config_path(out);
    test::write_file(path, test::tiny_yaml(corpus, dir.file(out)));
    return load_config(path, kLong);
  }
  std::string config_path(const std::string& out) { return dir.file(out + ".yaml"); }
};

TEST_P(StopSignal, CheckpointsExitsToBeRequeuedAndResumesBitIdentically) {
  const Config straight = config("straight"), stopped = config("stopped");
  ASSERT_EQ(exit_code(start_train(config_path("straight"), dir.file("straight.log"))), 0)
      << test::read_file(dir.file("straight.log"));

  const std::string log = dir.file("stopped.log");
  const pid_t pid = start_train(config_path("stopped"), log);
  ASSERT_TRUE(wait_for_text(log, "step 20/200")) << test::read_file(log);
  kill(pid, GetParam());
  EXPECT_EQ(exit_code(pid), kRequeueExitCode) << test::read_file(log);
  EXPECT_THAT(test::read_file(log), HasSubstr("stopping after signal " + std::to_string(GetParam())));
  const int64_t step = test::read_run_checkpoint(stopped).meta.step;
  EXPECT_GE(step, 20);
  EXPECT_LT(step, 200) << "the signal came too late to test anything";
  EXPECT_FALSE(std::filesystem::exists(stopped.out + "/checkpoint.h5.tmp"));
  std::vector<double> steps;  // the metrics hold every step up to the checkpoint's, nothing after
  for (int64_t s = 1; s <= step; ++s) steps.push_back(static_cast<double>(s));
  EXPECT_EQ(test::read_series(stopped.out + "/metrics.h5", "train/step"), steps);

  ASSERT_EQ(exit_code(start_train(config_path("stopped"), log)), 0) << test::read_file(log);
  EXPECT_THAT(test::read_file(log), HasSubstr("resuming from " + stopped.out + "/checkpoint.h5 at step " +
                                              std::to_string(step)));
  const CheckpointState a = test::read_run_checkpoint(straight), b = test::read_run_checkpoint(stopped);
  EXPECT_EQ(b.meta.step, 200);
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.m, b.m);
  EXPECT_EQ(a.v, b.v);
  for (const char* series : {"train/step", "train/loss", "eval/step", "eval/loss"})
    EXPECT_EQ(test::read_series(straight.out + "/metrics.h5", series), test::read_series(stopped.out + "/metrics.h5", series))
        << series;
}

INSTANTIATE_TEST_SUITE_P(UsrTermAndInt, StopSignal, ::testing::Values(SIGUSR1, SIGTERM, SIGINT));

// In a child process (the second interrupt ends it): the first SIGINT only asks to stop, the
// second, within kSecondInterruptSeconds, ends the process with 130 and says what is lost.
TEST(StopSignals, ASecondInterruptStopsAtOnce) {
  int err[2];
  ASSERT_EQ(pipe(err), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(err[1], STDERR_FILENO);
    StopSignals signals;
    raise(SIGINT);  // handled before raise returns
    if (stop_signal() != SIGINT) _exit(1);
    raise(SIGINT);
    _exit(2);  // not reached
  }
  close(err[1]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  std::string said;
  char buf[512];
  for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) said.append(buf, static_cast<size_t>(n));
  close(err[0]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_THAT(said, HasSubstr("interrupt: stopping after this step with a checkpoint (Ctrl-C again within 5 s: stop "
                              "at once, losing the steps since the last checkpoint)"));
  EXPECT_THAT(said, HasSubstr("second interrupt: stopping at once; the steps since the last checkpoint are lost"));
}

struct SlurmTasks : ::testing::Test {
  test::TempDir dir;
  std::string config = dir.file("tiny.yaml");
  void SetUp() override {
    test::write_file(dir.file("corpus.txt"), test::make_corpus(400, 3));
    test::write_file(config, test::tiny_yaml(dir.file("corpus.txt"), dir.file("out")));
  }
  void TearDown() override { unsetenv("SLURM_NTASKS"); }
};

TEST_F(SlurmTasks, AWorldSmallerThanTheSlurmTasksFailsBeforeTraining) {
  setenv("SLURM_NTASKS", "2", 1);
  const test::RunResult r = test::run_dsmoe("train " + config);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("Slurm started 2 tasks (SLURM_NTASKS) but this process's MPI world has 1 rank(s): "
                                  "launch the ranks as one MPI job (`srun --mpi=pmix`, see jobs/run.sbatch)"));
  EXPECT_FALSE(std::filesystem::exists(dir.file("out/checkpoint.h5")));
}

TEST_F(SlurmTasks, AWorldOfTheSlurmTasksTrains) {
  setenv("SLURM_NTASKS", "1", 1);
  const test::RunResult r = test::run_dsmoe("train " + config + " --set train.steps=2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace dsmoe
