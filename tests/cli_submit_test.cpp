// `dsmoe submit`: the filled-in jobs/run.sbatch (--dry-run), the refusals, and submitting through
// a stand-in sbatch that records what it was given (the real Slurm: tests/slurm_*_test.cpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "slurm_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::run_dsmoe;

struct SubmitCli : ::testing::Test, test::SlurmFixture {
  test::RunResult submit(const std::string& exp, const std::string& flags) {
    return run_dsmoe("submit " + exp + " --runs-dir " + runs + " " + flags);
  }
};

TEST_F(SubmitCli, DryRunPrintsTheFilledScriptAndWritesNothing) {
  const std::string exp = experiment("dry", 8);
  const test::RunResult r =
      submit(exp, "--partition debug --ranks-per-run 2 --time 00:10:00 --dry-run -- --overcommit --account=ml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string& line : std::vector<std::string>{
           "#SBATCH --job-name=dsmoe-dry\n", "#SBATCH --partition=debug\n", "#SBATCH --array=0-1\n",
        "#SBATCH --nodes=1\n", "#SBATCH --ntasks-per-node=2\n", "#SBATCH --requeue\n",
        "#SBATCH --signal=B:USR1@120\n", "#SBATCH --output=" + runs + "/dry/slurm-%A_%a.out\n",
        "#SBATCH --time=00:10:00\n#SBATCH --overcommit\n#SBATCH --account=ml\nset -u\n",
        "EXPERIMENT_DIR='" + runs + "/dry'\n", "RUNS=('a-s1' 'b-s1')\n", "DSMOE='" + std::string(DSMOE_BIN) + "'\n",
        "srun --mpi=pmix"})
    EXPECT_THAT(r.output, HasSubstr(line));
  EXPECT_THAT(r.output, Not(HasSubstr("{{")));
  EXPECT_THAT(r.output, Not(HasSubstr("#SBATCH --gpus-per-node")));
  test::write_file(dir.file("script"), r.output);
  EXPECT_EQ(std::system(("bash -n " + dir.file("script")).c_str()), 0);
  EXPECT_FALSE(std::filesystem::exists(runs));

  const test::RunResult gpu = submit(exp, "--partition gpu --ranks-per-run 4 --nodes 2 --gpus-per-node 2 "
                                          "--signal-seconds 300 --dry-run");
  ASSERT_EQ(gpu.exit_code, 0) << gpu.output;
  EXPECT_THAT(gpu.output, HasSubstr("#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=2\n"));
  EXPECT_THAT(gpu.output, HasSubstr("#SBATCH --signal=B:USR1@300\n"));
  EXPECT_THAT(gpu.output, HasSubstr("#SBATCH --gpus-per-node=2\nset -u\n"));

  // Every form sbatch takes: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, UNLIMITED.
  for (const char* time : {"90", "10:30", "2:00:00", "1-12", "1-2:30", "1-02:30:00", "UNLIMITED"}) {
    const test::RunResult t = submit(exp, std::string("--partition debug --ranks-per-run 2 --dry-run --time ") + time);
    EXPECT_EQ(t.exit_code, 0) << time << "\n" << t.output;
    EXPECT_THAT(t.output, HasSubstr(std::string("#SBATCH --time=") + time + "\n"));
  }

  const test::RunResult only = submit(exp, "--partition debug --ranks-per-run 2 --only b --dry-run");
  ASSERT_EQ(only.exit_code, 0) << only.output;
  EXPECT_THAT(only.output, HasSubstr("#SBATCH --array=0-0\n"));
  EXPECT_THAT(only.output, HasSubstr("RUNS=('b-s1')\n"));
}

TEST_F(SubmitCli, RefusesWhatDoesNotFit) {
  const std::string exp = experiment("refuse", 8);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--partition debug --ranks-per-run 3",
       "run a-s1 cannot run on 3 ranks: " + exp + ":6: moe.n_routed: moe.n_routed = 4 is not divisible by the "
       "expert-parallel size 3 (world size 3)"},
      {"--partition debug --ranks-per-run 2 --nodes 4", "--ranks-per-run 2 does not divide evenly over --nodes 4"},
      {"--partition gpu --ranks-per-run 4 --gpus-per-node 2", "4 ranks per node need one GPU each but "
                                                             "--gpus-per-node is 2"},
      {"--ranks-per-run 2", "--partition is required"},
      {"--partition debug", "--ranks-per-run is required"},
      {"--partition debug --ranks-per-run 0", "--ranks-per-run must be >= 1, got 0"},
      {"--partition debug --ranks-per-run 2 --signal-seconds 0", "--signal-seconds must be >= 1, got 0"},
      {"--partition 'a b' --ranks-per-run 2", "--partition 'a b' has whitespace"},
      {"--partition debug --ranks-per-run 2 --only c", "--only: refuse has no variant 'c' (its variants: a, b)"},
      {"--partition debug --ranks-per-run 2 --time 1h",
       "--time 1h: not a time sbatch takes (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED)"},
      {"--partition debug --ranks-per-run 2 --time 1:2:3:4", "--time 1:2:3:4: not a time sbatch takes"},
      {"--partition debug --ranks-per-run 2 --time 2:00",
       "--time 2:00 (120 s) must be longer than --signal-seconds 120"},
      {"--partition debug --ranks-per-run 2 -- account=ml",
       "extra sbatch option 'account=ml' does not start with -: write options with values as --name=value"},
  };
  for (const auto& [flags, message] : cases) {
    const test::RunResult r = submit(exp, flags);
    EXPECT_EQ(r.exit_code, 1) << flags << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(message)) << flags;
  }
  EXPECT_FALSE(std::filesystem::exists(runs));
}

TEST_F(SubmitCli, SubmitsTheUnfinishedRunsAndWritesWhatRan) {
  const std::string exp = experiment("go", 8);
  stand_in("sbatch", "echo \"$@\" > '" + dir.file("sbatch.args") + "'\necho '4242;cluster'\n");
  const std::string flags = "--partition debug --ranks-per-run 2 -- --overcommit";
  const test::RunResult dry = submit(exp, "--dry-run " + flags);
  test::RunResult r = submit(exp, flags);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("submitted job 4242: 2 run(s) of go as array tasks 0-1, 2 rank(s) each; script " +
                                  runs + "/go/submit.sbatch"));
  EXPECT_THAT(r.output, HasSubstr("  4242_1  " + runs + "/go/b-s1/slurm.log\n"));
  EXPECT_EQ(test::read_file(dir.file("sbatch.args")), "--parsable " + runs + "/go/submit.sbatch\n");
  EXPECT_EQ(test::read_file(runs + "/go/submit.sbatch"), dry.output);
  EXPECT_THAT(test::read_file(runs + "/go/b-s1/config.yaml"), HasSubstr("out: " + runs + "/go/b-s1"));
  EXPECT_THAT(test::read_file(runs + "/go/sweep.yaml"), HasSubstr("{name: b-s1, variant: b, seed: 1, steps: 8}"));

  // A finished run is left out; with every run finished there is nothing to submit.
  std::filesystem::copy_file(runs + "/go/a-s1/config.yaml", runs + "/go/a-s1/finished");
  r = submit(exp, "--dry-run " + flags);
  EXPECT_THAT(r.output, HasSubstr("#SBATCH --array=0-0\n"));
  EXPECT_THAT(r.output, HasSubstr("RUNS=('b-s1')\n"));
  std::filesystem::copy_file(runs + "/go/b-s1/config.yaml", runs + "/go/b-s1/finished");
  r = submit(exp, flags);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("go: all 2 runs are finished; nothing to submit"));
}

TEST_F(SubmitCli, ReportsAFailingOrMissingSbatch) {
  const std::string exp = experiment("fail", 8);
  stand_in("sbatch", "echo 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n");
  test::RunResult r = submit(exp, "--partition nope --ranks-per-run 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("sbatch: error: invalid partition specified: nope"));
  EXPECT_THAT(r.output, HasSubstr("sbatch " + runs + "/fail/submit.sbatch failed (exit code 1)"));
  // Nothing was submitted: its runs are not started, not pending.
  const test::RunResult status = run_dsmoe("status " + runs + "/fail");
  EXPECT_THAT(status.output, HasSubstr(": 2 runs: 0 done, 0 running, 0 pending, 0 failed, 0 stopped, 2 not started"));

  setenv("PATH", bin.c_str(), 1);
  std::filesystem::remove(bin + "/sbatch");
  r = submit(exp, "--partition debug --ranks-per-run 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("sbatch not found: is this a Slurm login node? (--dry-run prints the script)"));
}

}  // namespace
}  // namespace dsmoe
