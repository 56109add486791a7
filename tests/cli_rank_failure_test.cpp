// A rank that fails ends the whole MPI job with a non-zero exit in bounded time, and the
// message names the rank; a rank that is killed ends the job too.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;

struct RankFailure : ::testing::Test {
  test::TempDir dir;
  std::string config;
  void SetUp() override {
    for (const char* kv : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMPI_MCA_pml=ob1",
                           "OMPI_MCA_btl=self,vader", "OMPI_MCA_rmaps_base_oversubscribe=1"})
      putenv(const_cast<char*>(kv));
    test::write_file(dir.file("corpus.txt"), test::make_corpus(2000, 3));
    config = dir.file("run.yaml");
    test::write_file(config, test::tiny_yaml(dir.file("corpus.txt"), dir.file("out")));
  }
  std::string mpi(int ranks) { return std::string(DSMOE_MPIEXEC) + " -n " + std::to_string(ranks) + " " + DSMOE_BIN; }
};

TEST_F(RankFailure, AnErrorOnOneRankEndsTheJobNamingTheRank) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string out = test::run_command("DSMOE_FAIL_AT=2:3 timeout 120 " + mpi(4) + " train " + config +
                                            " --set train.steps=1000 2>&1; echo exit=$?");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_THAT(out, ::testing::Not(HasSubstr("exit=0")));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("exit=124"))) << "timed out";
  EXPECT_THAT(out, HasSubstr("rank 2: injected failure at step 3"));
  EXPECT_LT(secs, 60);
}

// Two ranks asking for a GPU each on a node that sees fewer (none on a CPU machine, one on a
// one-GPU machine): every rank says so, and the job ends at once instead of hanging.
TEST_F(RankFailure, BackendCudaWithMoreRanksThanGpusStopsEveryRank) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string out = test::run_command("timeout 120 " + mpi(2) + " train " + config +
                                            " --set backend=cuda 2>&1; echo exit=$?");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_THAT(out, ::testing::Not(HasSubstr("exit=0")));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("exit=124"))) << "timed out";
  for (const char* rank : {"rank 0: ", "rank 1: "})
    EXPECT_THAT(out, ::testing::ContainsRegex(std::string(rank) + "backend: cuda needs a GPU per rank, but node .* "
                                              "runs 2 rank\\(s\\) and sees [01] GPU\\(s\\)"));
  EXPECT_LT(secs, 60);
}

TEST_F(RankFailure, AStalledRankEndsTheJobThroughTheWatchdog) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string out = test::run_command("DSMOE_STALL_AT=1:2 timeout 120 " + mpi(2) + " train " + config +
                                            " --set train.steps=1000 --watchdog 3 2>&1; echo exit=$?");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_THAT(out, ::testing::Not(HasSubstr("exit=0")));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("exit=124"))) << "timed out";
  // The stalled rank names itself; the other, waiting in a collective, fires too.
  EXPECT_THAT(out, ::testing::ContainsRegex("rank 1: no progress for [0-9]+ s \\(watchdog 3 s\\) while step 3"));
  EXPECT_LT(secs, 60);
}

TEST_F(RankFailure, AKilledRankEndsTheJob) {
  // mpiexec in its own process group; its children are the ranks.
  pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    setpgid(0, 0);
    std::string cmd = "exec " + mpi(4) + " train " + config + " --set train.steps=100000 >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  // Wait until training runs (the metrics file appears), then kill one rank.
  for (int i = 0; i < 600 && access(dir.file("out/metrics.h5").c_str(), F_OK) != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string pids = test::run_command("pgrep -P " + std::to_string(launcher) + " dsmoe");
  ASSERT_FALSE(pids.empty()) << "no rank processes found";
  const pid_t victim = std::atoi(pids.c_str());
  ASSERT_EQ(kill(victim, SIGKILL), 0);

  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(launcher, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (done == 0) {  // clean up before failing
    kill(-launcher, SIGKILL);
    waitpid(launcher, &status, 0);
    FAIL() << "the job was still running 60 s after a rank was killed";
  }
  EXPECT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
}

}  // namespace
}  // namespace dsmoe
