// `dsmoe status` on run folders made up to be in every state, with and without stand-ins for
// squeue and sacct answering for the Slurm array tasks the folders name; and on runs that a
// real `dsmoe train` is training, stops, or fails, with no Slurm at all.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <thread>

#include "slurm_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::string host_name() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

// The line of `run` in status output, "(no line)" if none.
std::string line(const std::string& output, const std::string& run) {
  const size_t at = output.find("\n  " + run + " ");
  return at == std::string::npos ? "(no line)" : output.substr(at + 1, output.find('\n', at + 1) - at - 1);
}

struct StatusCli : ::testing::Test, test::SlurmFixture {
  std::string exp_dir = runs + "/st";
  void SetUp() override {
    stand_in("sbatch", "echo 7\n");
    const test::RunResult r = test::run_dsmoe(
        "submit " + experiment("st", 8, "  - name: c\n  - name: d\n  - name: e\n  - name: f\n  - name: g\n") +
        " --partition debug --ranks-per-run 1 --runs-dir " + runs);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::filesystem::remove(bin + "/sbatch");
    // a: trained to the end by `dsmoe train`; b: stopped at step 3 (a checkpoint, not finished),
    // with the OUT/running a killed train would leave behind (its pid no longer alive).
    ASSERT_EQ(test::run_dsmoe("train " + exp_dir + "/a-s1/config.yaml").exit_code, 0);
    ASSERT_EQ(test::run_dsmoe("train " + exp_dir + "/b-s1/config.yaml --stop-after 3").exit_code, 0);
    test::write_file(exp_dir + "/b-s1/slurm_job", "7_1\n");
    test::write_file(exp_dir + "/b-s1/running", host_name() + " " + std::to_string(dead_pid()) + " 0\n");
    files("c-s1", "7_2", "failed", "exit code 1 (job 7_2)\n");
    test::write_file(exp_dir + "/c-s1/slurm.log", "loading\ndsmoe: data.txt: cannot open data file\n\n");
    files("d-s1", "7_3", "running", "othernode 42 0\n");  // trained on another host
    files("e-s1", "7_4");  // submitted, never started
    std::filesystem::remove_all(exp_dir + "/f-s1");  // not even a folder
    files("g-s1", "7_6", "finished", test::read_file(exp_dir + "/g-s1/config.yaml"));
    std::filesystem::create_directories(exp_dir + "/old");  // a folder the experiment does not define
    std::filesystem::copy_file(exp_dir + "/a-s1/config.yaml", exp_dir + "/old/config.yaml");
  }
  // The pid of a process that has ended.
  static pid_t dead_pid() {
    const pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, nullptr, 0);
    return pid;
  }
  // In run folder `name`: the Slurm task that last ran it ("" none) and one more file.
  void files(const std::string& name, const std::string& job, const std::string& file = "",
             const std::string& text = "") {
    if (!job.empty()) test::write_file(exp_dir + "/" + name + "/slurm_job", job + "\n");
    if (!file.empty()) test::write_file(exp_dir + "/" + name + "/" + file, text);
  }
};

TEST_F(StatusCli, FromTheRunFoldersAlone) {
  const test::RunResult r = test::run_dsmoe("status " + exp_dir + "/");  // a trailing slash does nothing
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(exp_dir + ": 8 runs: 2 done, 1 running, 0 pending, 1 failed, 1 stopped, "
                                            "3 not started\n"));
  EXPECT_THAT(line(r.output, "a-s1"), MatchesRegex(" *a-s1 +done +step 8/8 *"));
  EXPECT_THAT(line(r.output, "b-s1"), MatchesRegex(" *b-s1 +stopped +step 3/8 +7_1 +resumes at step 3"));
  EXPECT_THAT(line(r.output, "c-s1"),
              MatchesRegex(" *c-s1 +failed +step 0/8 +7_2 +exit code 1 \\(job 7_2\\) \\| .*/c-s1/slurm.log: "
                           "dsmoe: data.txt: cannot open data file"));
  EXPECT_THAT(line(r.output, "d-s1"),
              MatchesRegex(" *d-s1 +running +step 0/8 +7_3 +on othernode \\(not checkable from here\\), pid 42"));
  EXPECT_THAT(line(r.output, "e-s1"), MatchesRegex(" *e-s1 +not started +step 0/8 +7_4 *"));
  EXPECT_THAT(line(r.output, "f-s1"), MatchesRegex(" *f-s1 +not started +step 0/8 *"));
  EXPECT_THAT(line(r.output, "g-s1"), MatchesRegex(" *g-s1 +done +step 0/8 +7_6 *"));
  EXPECT_THAT(line(r.output, "old"), HasSubstr("[not in the experiment's sweep.yaml]"));
  // In the experiment's order, then the folders it does not define.
  EXPECT_LT(r.output.find("  a-s1 "), r.output.find("  g-s1 "));
  EXPECT_LT(r.output.find("  g-s1 "), r.output.find("  old "));

  // Without sweep.yaml, the run folders found; the ones never started cannot be known.
  std::filesystem::remove(exp_dir + "/sweep.yaml");
  const test::RunResult bare = test::run_dsmoe("status " + exp_dir);
  EXPECT_THAT(bare.output, HasSubstr(": 7 runs:"));
  EXPECT_THAT(bare.output, HasSubstr("(no sweep.yaml: these are the run folders found"));
  EXPECT_EQ(line(bare.output, "f-s1"), "(no line)");
}

TEST_F(StatusCli, SlurmSaysWhatIsRunningPendingOrFailed) {
  // squeue knows the tasks still queued; sacct, asked about the others, the ones that ended.
  stand_in("squeue", "printf '%s\\n' \"$*\" > '" + dir.file("squeue.args") + "'\n"
                     "echo '7_1 PENDING'\necho '7_3 RUNNING'\necho '7_9 RUNNING'\n");
  stand_in("sacct", "printf '%s\\n' \"$*\" > '" + dir.file("sacct.args") + "'\necho '7_2|COMPLETED'\n"
                    "echo '7_4|CANCELLED by 0'\n");
  const test::RunResult r = test::run_dsmoe("status " + exp_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(": 8 runs: 2 done, 1 running, 1 pending, 2 failed, 0 stopped, 2 not started\n"));
  EXPECT_THAT(line(r.output, "b-s1"), MatchesRegex(" *b-s1 +pending +step 3/8 +7_1 +Slurm: PENDING.*"));  // requeued
  EXPECT_THAT(line(r.output, "c-s1"), MatchesRegex(" *c-s1 +failed +step 0/8 +7_2 +exit code 1 \\(job 7_2\\).*"));
  EXPECT_THAT(line(r.output, "d-s1"), MatchesRegex(" *d-s1 +running +step 0/8 +7_3 +Slurm: RUNNING.*"));
  EXPECT_THAT(line(r.output, "e-s1"), MatchesRegex(" *e-s1 +failed +step 0/8 +7_4 +Slurm: CANCELLED"));
  EXPECT_EQ(test::read_file(dir.file("squeue.args")), "-h -r -j 7_1,7_2,7_3,7_4 -o %i %T\n");  // not a, g: done
  EXPECT_EQ(test::read_file(dir.file("sacct.args")), "-n -X -P -j 7_2,7_4 -o JobID,State\n");
}

TEST_F(StatusCli, NamesWhatToPassInstead) {
  test::RunResult r = test::run_dsmoe("status " + runs + "/nope");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(runs + "/nope: no such folder (give runs/<experiment>"));
  r = test::run_dsmoe("status " + exp_dir + "/a-s1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("is the folder of one run; pass its experiment's folder: dsmoe status " + exp_dir));
  r = test::run_dsmoe("status " + runs);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(runs + " holds the folders of 1 experiment(s) (st); pass one: dsmoe status " +
                                  runs + "/st"));
}

// A real `dsmoe train` with no Slurm anywhere: running (its pid, the step it logged), then stopped
// where its checkpoint is; another one that fails says why.
TEST(StatusLocal, RunningStoppedAndFailedWithoutSlurm) {
  test::SlurmFixture f;
  const std::string exp = f.experiment("loc", 100000);
  ASSERT_EQ(test::run_dsmoe("sweep " + exp + " --runs-dir " + f.runs + " --stop-after 1").exit_code, 0);
  const std::string d = f.runs + "/loc", log = f.dir.file("a.log");
  const pid_t pid = std::stoi(test::run_command(std::string(DSMOE_BIN) + " train " + d + "/a-s1/config.yaml > " + log +
                                                " 2>&1 & echo $!"));
  // Until it has logged a step past the one it resumed at.
  const std::regex running(" *a-s1 +running +step ([2-9]|[1-9][0-9]+)/100000 +pid " + std::to_string(pid) +
                           ", metrics written [0-9]+ s ago");
  test::RunResult r;
  for (int i = 0; i < 3000 && !std::regex_match(line(r.output, "a-s1"), running); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    r = test::run_dsmoe("status " + d);
  }
  EXPECT_TRUE(std::regex_match(line(r.output, "a-s1"), running)) << r.output;
  // A second train into the same folder is refused while the first lives.
  const test::RunResult second = test::run_dsmoe("train " + d + "/a-s1/config.yaml");
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_THAT(second.output, HasSubstr("another dsmoe train (pid " + std::to_string(pid)));

  kill(pid, SIGTERM);
  for (int i = 0; i < 3000 && kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  r = test::run_dsmoe("status " + d);
  const int64_t step = test::checkpoint_step(d + "/a-s1");
  EXPECT_GT(step, 1);
  EXPECT_THAT(line(r.output, "a-s1"), MatchesRegex(" *a-s1 +stopped +step " + std::to_string(step) +
                                                   "/100000 +resumes at step " + std::to_string(step)));
  EXPECT_FALSE(std::filesystem::exists(d + "/a-s1/running"));

  std::filesystem::remove(f.corpus);  // b cannot read its data
  EXPECT_EQ(test::run_dsmoe("train " + d + "/b-s1/config.yaml").exit_code, 1);
  r = test::run_dsmoe("status " + d);
  EXPECT_THAT(line(r.output, "b-s1"), MatchesRegex(" *b-s1 +failed +step 1/100000 +.*corpus.txt: cannot open data file"));
}

}  // namespace
}  // namespace dsmoe
