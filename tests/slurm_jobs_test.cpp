// `dsmoe submit` and `dsmoe status` under a real one-node Slurm on this machine, started for each
// test by tests/slurm/local_slurm.sh (which installs slurm-wlm and munge if missing) and stopped
// after it: a three-run sweep of 2-rank runs goes to the end; a run signalled and requeued in the
// middle ends with exactly the weights of one that was not; a failing run is reported failed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>

#include "io/h5.h"
#include "slurm_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;

const std::string kScript = std::string(DSMOE_SOURCE_DIR) + "/tests/slurm/local_slurm.sh";

// Slurm commands, bounded: a daemon that stopped answering fails the test instead of hanging it.
std::string slurm(const std::string& command) { return test::run_command("timeout 30 " + command + " 2>&1"); }

bool wait_for(const std::function<bool()>& done, int seconds) {
  for (int i = 0; i < seconds * 5; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return done();
}


// The job id in "submitted job <id>: ...".
std::string job_id(const std::string& submit_output) {
  const std::string prefix = "submitted job ";
  const size_t at = submit_output.find(prefix) + prefix.size();
  return submit_output.substr(at, submit_output.find(':', at) - at);
}

std::vector<double> one_to(int n) {
  std::vector<double> v;
  for (int i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

struct SlurmJobs : ::testing::Test, test::SlurmFixture {
  std::string slurm_dir = dir.file("slurm");
  void SetUp() override {
    const int rc = std::system(("timeout 400 " + kScript + " start " + slurm_dir).c_str());
    ASSERT_EQ(rc, 0) << "could not start Slurm (see above)";
    setenv("SLURM_CONF", (slurm_dir + "/slurm.conf").c_str(), 1);
    // sbatch passes the environment on to the job: a fast shared-memory MPI, one thread a rank.
    setenv("OMPI_MCA_pml", "ob1", 1);
    setenv("OMPI_MCA_btl", "self,vader", 1);
  }
  void TearDown() override {
    EXPECT_EQ(std::system(("timeout 60 " + kScript + " stop " + slurm_dir).c_str()), 0);
    unsetenv("SLURM_CONF");
  }
  // Submits with 2 ranks a run (more than this machine's cores allow without --overcommit).
  test::RunResult submit(const std::string& exp, const std::string& root, const std::string& extra = "") {
    return test::run_dsmoe("submit " + exp + " --partition debug --ranks-per-run 2 --runs-dir " + root +
                           " -- --overcommit " + extra);
  }
  // The task ended, its run's checkpoint at train.steps.
  bool finished(const std::string& run_dir, int64_t steps) {
    return log(run_dir).find("== done") != std::string::npos && test::checkpoint_step(run_dir) == steps;
  }
  std::string log(const std::string& run_dir) {
    return std::filesystem::exists(run_dir + "/slurm.log") ? test::read_file(run_dir + "/slurm.log") : "";
  }
};

TEST_F(SlurmJobs, AThreeRunSweepRunsToTheEnd) {
  const std::string exp = experiment("three", 20, "  - name: c\n    moe: {n_shared: 2}\n");
  const test::RunResult r = submit(exp, runs);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("3 run(s) of three as array tasks 0-2, 2 rank(s) each"));
  const std::string d = runs + "/three";
  ASSERT_TRUE(wait_for([&] { return finished(d + "/a-s1", 20) && finished(d + "/b-s1", 20) && finished(d + "/c-s1", 20); }, 240))
      << slurm("squeue") << log(d + "/a-s1") << log(d + "/b-s1") << log(d + "/c-s1");
  for (const char* run : {"a-s1", "b-s1", "c-s1"}) {
    EXPECT_THAT(log(d + "/" + run), HasSubstr("on 2 rank(s)")) << run;
    EXPECT_EQ(test::read_series(d + "/" + run + "/metrics.h5", "train/step"), one_to(20)) << run;
    EXPECT_EQ(test::read_series(d + "/" + run + "/metrics.h5", "eval/step"), std::vector<double>({20})) << run;
  }
  const test::RunResult s = test::run_dsmoe("status " + d);
  EXPECT_THAT(s.output, HasSubstr(": 3 runs: 3 done, 0 running, 0 pending, 0 failed, 0 stopped, 0 not started")) << s.output;
}

TEST_F(SlurmJobs, ARunSignalledAndRequeuedEndsWithTheWeightsOfAnUninterruptedOne) {
  const std::string exp = experiment("rq", 300);
  const std::string straight = dir.file("straight") + "/rq/a-s1", requeued = runs + "/rq/a-s1";
  ASSERT_EQ(submit(exp, dir.file("straight")).exit_code, 0);
  ASSERT_TRUE(wait_for([&] { return finished(straight, 300) && finished(straight + "/../b-s1", 300); }, 240))
      << log(straight);

  const test::RunResult r = submit(exp, runs);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string job = job_id(r.output);
  ASSERT_TRUE(wait_for([&] { return log(requeued).find("step 50/300") != std::string::npos; }, 120))
      << slurm("squeue") << log(requeued);
  // What Slurm does SIGNAL_SECONDS before the time limit: USR1 to the batch shell of task 0.
  slurm("scancel --signal=USR1 --batch " + job + "_0");
  ASSERT_TRUE(wait_for([&] { return log(requeued).find("== requeueing") != std::string::npos; }, 60))
      << log(requeued);
  // Slurm holds a requeued job back for a while (two minutes): once it is back in the queue and the
  // end of its last run is through (KillWait, 5 s), let it go at once.
  ASSERT_TRUE(wait_for([&] { return slurm("squeue -h -j " + job + "_0 -o %T") == "PENDING\n"; }, 60))
      << slurm("squeue");
  std::this_thread::sleep_for(std::chrono::seconds(8));
  EXPECT_EQ(slurm("scontrol update JobId=" + job + "_0 StartTime=now"), "");
  ASSERT_TRUE(wait_for([&] { return finished(requeued, 300) && finished(runs + "/rq/b-s1", 300); }, 240))
      << slurm("squeue") << log(requeued);
  EXPECT_THAT(log(requeued), HasSubstr("(restart 1)"));
  EXPECT_THAT(log(requeued), HasSubstr("resuming from " + requeued + "/checkpoint.h5 at step"));

  const CheckpointState a = test::read_run_checkpoint(load_config(straight + "/config.yaml"));
  const CheckpointState b = test::read_run_checkpoint(load_config(requeued + "/config.yaml"));
  EXPECT_EQ(b.meta.step, 300);
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.m, b.m);
  EXPECT_EQ(a.v, b.v);
  for (const char* series : {"train/step", "train/loss", "eval/loss"})
    EXPECT_EQ(test::read_series(straight + "/metrics.h5", series), test::read_series(requeued + "/metrics.h5", series)) << series;
}

TEST_F(SlurmJobs, AFailedRunIsReportedFailed) {
  const std::string exp = experiment("broken", 20);
  const test::RunResult r = submit(exp, runs, "--hold");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string job = job_id(r.output);
  std::filesystem::remove(corpus);  // the runs cannot read their data
  slurm("scontrol release " + job);
  const std::string d = runs + "/broken";
  const auto failed = [&](const std::string& run) { return std::filesystem::exists(d + "/" + run + "/failed"); };
  ASSERT_TRUE(wait_for([&] { return failed("a-s1") && failed("b-s1"); }, 120))
      << slurm("squeue") << log(d + "/a-s1");
  ASSERT_TRUE(wait_for([&] { return slurm("squeue -h -j " + job).empty(); }, 60)) << slurm("squeue");
  const test::RunResult s = test::run_dsmoe("status " + d);
  EXPECT_THAT(s.output, HasSubstr(": 2 runs: 0 done, 0 running, 0 pending, 2 failed, 0 stopped, 0 not started")) << s.output;
  EXPECT_THAT(s.output, HasSubstr("exit code 1 (job " + job + "_1)")) << s.output;
}

}  // namespace
}  // namespace dsmoe
