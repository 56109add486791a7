// `dsmoe status` on run folders made up to be in every state, with and without stand-ins for
// squeue and sacct answering for the Slurm array tasks the folders name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "slurm_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

struct StatusCli : ::testing::Test, test::SlurmFixture {
  std::string exp_dir = runs + "/st";
  void SetUp() override {
    stand_in("sbatch", "echo 7\n");
    const test::RunResult r = test::run_dsmoe("submit " + experiment("st", 8) +
                                              " --partition debug --ranks-per-run 1 --runs-dir " + runs);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::filesystem::remove(bin + "/sbatch");
    // a: trained to the end by `dsmoe train`; b: stopped at step 3 (a checkpoint, not finished).
    ASSERT_EQ(test::run_dsmoe("train " + exp_dir + "/a/config.yaml").exit_code, 0);
    ASSERT_EQ(test::run_dsmoe("train " + exp_dir + "/b/config.yaml --stop-after 3").exit_code, 0);
    test::write_file(exp_dir + "/b/slurm_job", "7_1\n");
    run("c", "7_2", "failed", "exit code 1 (job 7_2)\n");
    run("d", "7_3");
    run("e", "7_4");
    run("f", "");  // never started
    run("g", "7_6", "finished", test::read_file(exp_dir + "/a/config.yaml"));
  }
  // A run folder with a config, the Slurm task that last ran it ("" none) and one more file.
  void run(const std::string& name, const std::string& job, const std::string& file = "",
           const std::string& text = "") {
    std::filesystem::create_directories(exp_dir + "/" + name);
    std::filesystem::copy_file(exp_dir + "/a/config.yaml", exp_dir + "/" + name + "/config.yaml");
    if (!job.empty()) test::write_file(exp_dir + "/" + name + "/slurm_job", job + "\n");
    if (!file.empty()) test::write_file(exp_dir + "/" + name + "/" + file, text);
  }
  std::string line(const std::string& output, const std::string& run) {
    const size_t at = output.find("\n  " + run + " ");
    return at == std::string::npos ? "(no line)" : output.substr(at + 1, output.find('\n', at + 1) - at - 1);
  }
};

TEST_F(StatusCli, FromTheRunFoldersAlone) {
  const test::RunResult r = test::run_dsmoe("status " + exp_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(exp_dir + ": 7 runs: 2 done, 0 running, 3 pending, 1 failed, 1 stopped\n"));
  EXPECT_THAT(line(r.output, "a"), MatchesRegex(" *a +done +step 8/8 *"));
  EXPECT_THAT(line(r.output, "b"), MatchesRegex(" *b +stopped +step 3/8 +7_1 *"));
  EXPECT_THAT(line(r.output, "c"), MatchesRegex(" *c +failed +step 0/8 +7_2 +exit code 1 \\(job 7_2\\)"));
  EXPECT_THAT(line(r.output, "d"), MatchesRegex(" *d +pending +step 0/8 +7_3 *"));
  EXPECT_THAT(line(r.output, "f"), MatchesRegex(" *f +pending +step 0/8 *"));
  EXPECT_THAT(line(r.output, "g"), MatchesRegex(" *g +done +step 0/8 +7_6 *"));
}

TEST_F(StatusCli, SlurmSaysWhatIsRunningPendingOrFailed) {
  // squeue knows the tasks still queued; sacct, asked about the others, the ones that ended.
  stand_in("squeue", "printf '%s\\n' \"$*\" > '" + dir.file("squeue.args") + "'\n"
                     "echo '7_1 PENDING'\necho '7_3 RUNNING'\necho '7_9 RUNNING'\n");
  stand_in("sacct", "printf '%s\\n' \"$*\" > '" + dir.file("sacct.args") + "'\necho '7_2|COMPLETED'\n"
                    "echo '7_4|CANCELLED by 0'\n");
  const test::RunResult r = test::run_dsmoe("status " + exp_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(": 7 runs: 2 done, 1 running, 2 pending, 2 failed, 0 stopped\n"));
  EXPECT_THAT(line(r.output, "b"), MatchesRegex(" *b +pending +step 3/8 +7_1 +Slurm: PENDING"));  // requeued
  EXPECT_THAT(line(r.output, "c"), MatchesRegex(" *c +failed +step 0/8 +7_2 +exit code 1 \\(job 7_2\\)"));
  EXPECT_THAT(line(r.output, "d"), MatchesRegex(" *d +running +step 0/8 +7_3 +Slurm: RUNNING"));
  EXPECT_THAT(line(r.output, "e"), MatchesRegex(" *e +failed +step 0/8 +7_4 +Slurm: CANCELLED"));
  EXPECT_EQ(test::read_file(dir.file("squeue.args")), "-h -r -j 7_1,7_2,7_3,7_4 -o %i %T\n");  // not a: done
  EXPECT_EQ(test::read_file(dir.file("sacct.args")), "-n -X -P -j 7_2,7_4 -o JobID,State\n");
}

TEST_F(StatusCli, NamesAMissingFolder) {
  const test::RunResult r = test::run_dsmoe("status " + runs + "/nope");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(runs + "/nope: no such folder (give runs/<experiment>)"));
}

}  // namespace
}  // namespace dsmoe
