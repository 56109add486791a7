// `dsmoe sweep` end to end on tiny runs: the dry-run table, the tolerance check, resuming
// stopped, interrupted (Ctrl-C, once and twice) and failed sweeps to the results of an
// uninterrupted one, run folders that keep their run's identity, and the rank budget.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include "io/checkpoint.h"
#include "io/h5.h"
#include "sweep_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::run_dsmoe;

using SweepCli = test::SweepFixture;
using test::kShort;

TEST_F(SweepCli, DryRunPrintsTheRunTable) {
  const std::string exp = experiment("dry", kShort);
  test::RunResult r = sweep(exp, runs, "--dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Hand count (V 256, d 32, one dense layer of 64, one MoE layer of 1 shared + 4 routed of 16):
  // embedding 8192 + attention 8192 + dense 6144 + shared 1536 + experts 6144 (top-2: 3072,
  // top-1: 1536) + router 128 + norms 160 + head 8192.
  EXPECT_THAT(r.output, HasSubstr("experiment dry: 4 runs under " + runs + "/dry"));
  EXPECT_THAT(r.output, HasSubstr("FLOPs per token target 1.759e+05 (the first variant, a)"));
  EXPECT_THAT(r.output, HasSubstr("a-s1                                  38,688          35,616    1.759e+05    +0.00 %"));
  // b: 6 * (27264 - 1536) + 6 * 2 * 32 * 32 = 166656, 5.24 % below a's 175872.
  EXPECT_THAT(r.output, HasSubstr("b-s2                                  38,688          34,080    1.667e+05    -5.24 %"));
  EXPECT_THAT(r.output, HasSubstr("2,048"));  // 8 steps x 8 sequences x 32 tokens
  EXPECT_FALSE(std::filesystem::exists(runs));

  r = sweep(exp, runs, "--dry-run --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.front(), '[');
  EXPECT_THAT(r.output, HasSubstr("{\"name\": \"a-s1\", \"variant\": \"a\", \"seed\": 1, \"out\": \"" + runs +
                                  "/dry/a-s1\", \"params_total\": 38688, \"params_active\": 35616, "
                                  "\"flops_per_token\": 175872, \"flops_deviation\": 0, \"tokens\": 2048, "
                                  "\"solved\": null, \"config\": {\"name\": \"a\", \"seed\": 1, \"backend\": \"cpu\""));
  EXPECT_THAT(r.output, HasSubstr("\"moe\": {\"n_routed\": 4, \"n_shared\": 1, \"top_k\": 1, \"expert_hidden\": 16, "
                                  "\"score\": \"softmax\", \"norm_topk\": false, \"router_noise\": 0.0, "
                                  "\"capacity_factor\": 1.0, \"route_devices\": 0, \"force_balance\": false}"));
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 4);  // one object per line
}

TEST_F(SweepCli, ToleranceRefusesASweepUnlessTold) {
  const std::string exp = experiment("tol", kShort, "iso_flops: {reference: a, tolerance: 0.01}\n");
  test::RunResult r = sweep(exp, runs);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("tol: FLOPs per token differ from the target by more than the tolerance 1.00 %:\n  b: -5.24 %"));
  EXPECT_FALSE(std::filesystem::exists(runs + "/tol"));
  r = sweep(exp, runs, "--dry-run");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("b-s1"));  // the table comes first
  EXPECT_EQ(sweep(exp, runs, "--dry-run --ignore-tolerance").exit_code, 0);
}

TEST_F(SweepCli, OnlyRunsTheNamedVariants) {
  const std::string exp = experiment("only", kShort, "iso_flops: {reference: a, tolerance: 0.01}\n", "[1]");
  test::RunResult r = sweep(exp, runs, "--only b --dry-run");
  EXPECT_EQ(r.exit_code, 1);  // b is 5.24 % off the target, which a still sets
  EXPECT_THAT(r.output, HasSubstr("experiment only: 1 runs under"));
  EXPECT_THAT(r.output, HasSubstr("the reference variant, a"));
  EXPECT_THAT(r.output, HasSubstr("\nb-s1 "));
  EXPECT_THAT(r.output, Not(HasSubstr("\na-s1 ")));
  r = sweep(exp, runs, "--only a");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(runs + "/only/a-s1/finished"));
  EXPECT_FALSE(std::filesystem::exists(runs + "/only/b-s1"));
  // sweep.yaml names the whole experiment's runs, for status and analyze.
  EXPECT_THAT(test::read_file(runs + "/only/sweep.yaml"), HasSubstr("{name: b-s1, variant: b, seed: 1, steps: 8}"));
  r = sweep(exp, runs, "--only a,c");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("--only: only has no variant 'c' (its variants: a, b)"));
}

void expect_same_results(const std::string& a, const std::string& b, const std::vector<double>& steps) {
  EXPECT_EQ(test::read_series(b + "/metrics.h5", "train/step"), steps) << b;
  for (const char* series : {"train/loss", "train/aux_loss", "eval/step", "eval/loss", "experts/load", "experts/dropped"})
    EXPECT_EQ(test::read_series(a + "/metrics.h5", series), test::read_series(b + "/metrics.h5", series)) << b << " " << series;
}

TEST_F(SweepCli, StoppedSweepResumesToTheResultsOfAnUninterruptedOne) {
  const std::string exp = experiment("resume", kShort);
  const std::string straight = dir.file("straight"), split = dir.file("split");
  test::RunResult r = sweep(exp, straight);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("sweep resume: 4 finished now, 0 already finished, 0 stopped early, 0 failed"));

  r = sweep(exp, split, "--stop-after 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[stopped] a-s1 at step 3 of 8"));
  EXPECT_THAT(r.output, HasSubstr("0 finished now, 0 already finished, 4 stopped early"));
  r = sweep(exp, split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[start] b-s2 (resuming at step 3)"));
  EXPECT_THAT(r.output, HasSubstr("4 finished now, 0 already finished"));
  r = sweep(exp, split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("4 runs, 4 already finished, 0 to run"));
  EXPECT_THAT(r.output, Not(HasSubstr("[start]")));

  for (const char* run : {"a-s1", "a-s2", "b-s1", "b-s2"})
    expect_same_results(straight + "/resume/" + run, split + "/resume/" + run, {1, 2, 3, 4, 5, 6, 7, 8});
  // More steps make the runs unfinished: they resume at step 8, and the schedule change is said.
  r = sweep(experiment("resume", "steps: 10, log_every: 1, eval_every: 4"), split);
  EXPECT_THAT(r.output, HasSubstr("a-s1: train.steps 8 -> 10: resumes at step 8 with the cosine schedule "
                                  "recomputed for 10 steps (lr at step 8: 0.0003 before, "));
  EXPECT_THAT(r.output, HasSubstr("[start] a-s1 (resuming at step 8)"));
  EXPECT_THAT(r.output, HasSubstr("4 finished now"));
}

// `dsmoe sweep ARGS` as the leader of a process group of its own (as a terminal runs a command),
// its output in `log`.
pid_t start_sweep_group(const std::string& args, const std::string& log) {
  std::string sh = "sh", c = "-c", cmd = "exec " + std::string(DSMOE_BIN) + " sweep " + args;
  char* argv[] = {sh.data(), c.data(), cmd.data(), nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int err = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) throw Error("cannot start sh");
  return pid;
}

int exit_code_of(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, 0) == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The last step a run logged, 0 before it logged one.
double logged_step(const std::string& run_dir) {
  try {
    const std::vector<double> steps = test::read_series(run_dir + "/metrics.h5", "train/step");
    return steps.empty() ? 0 : steps.back();
  } catch (const std::exception&) {
    return 0;
  }
}

// The pid of the `dsmoe train` training into `run_dir` (its OUT/running: host, pid, start).
pid_t train_pid(const std::string& run_dir) {
  std::istringstream in(test::read_file(run_dir + "/running"));
  std::string host;
  pid_t pid = 0;
  in >> host >> pid;
  return pid;
}

struct InterruptCase {
  int interrupts;  // Ctrl-C pressed once, or twice in a row
  const char* train;
};

class SweepInterrupt : public test::SweepFixture, public ::testing::WithParamInterface<InterruptCase> {};

// Ctrl-C in a terminal: SIGINT to the sweep's whole process group. Once: every run stops after
// its step with a checkpoint (here the only one it writes before the end), the sweep says where,
// and the next sweep resumes them to exactly the results of an uninterrupted sweep. Twice: the
// runs are killed at once, the sweep says their progress since the last checkpoint is lost, and
// the next sweep resumes from those checkpoints, to the same results.
TEST_P(SweepInterrupt, ResumesToTheResultsOfAnUninterruptedSweep) {
  const InterruptCase c = GetParam();
  const std::string exp = experiment("int", c.train, "", "[1]");
  const std::string straight = dir.file("straight"), cut = dir.file("cut"), log = dir.file("cut.log");
  ASSERT_EQ(sweep(exp, straight, "--ranks 2").exit_code, 0);

  const pid_t pid = start_sweep_group(exp + " --runs-dir " + cut + " --ranks 2", log);
  const std::string a = cut + "/int/a-s1", b = cut + "/int/b-s1";
  for (int i = 0; i < 6000 && (logged_step(a) < 30 || logged_step(b) < 30); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GE(logged_step(a), 30) << test::read_file(log);
  // Analysis and status read the runs while they go.
  EXPECT_EQ(run_dsmoe("analyze " + cut + "/int").exit_code, 0);
  EXPECT_THAT(run_dsmoe("status " + cut + "/int").output, HasSubstr(": 2 runs: 0 done, 2 running"));
  if (c.interrupts == 1) {
    kill(-pid, SIGINT);
  } else {
    // The runs, frozen, cannot act on the first interrupt before the second comes.
    for (const std::string& run : {a, b}) kill(train_pid(run), SIGSTOP);
    kill(-pid, SIGINT);
    for (int i = 0; i < 3000 && test::read_file(log).find("[interrupt]") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    kill(-pid, SIGINT);
  }
  EXPECT_EQ(exit_code_of(pid), 128 + SIGINT);
  const std::string said = test::read_file(log);
  EXPECT_THAT(said, HasSubstr("[interrupt] signal 2: asking 2 run(s) to stop after their current step"));
  if (c.interrupts == 1) {
    for (const std::string& run : {a, b}) {
      const int64_t step = read_checkpoint_meta(run + "/checkpoint.h5").step;
      EXPECT_GE(step, 30);  // past the last checkpoint the run would have written itself (none)
      const std::string name = run.substr(run.rfind('/') + 1);
      EXPECT_THAT(said, HasSubstr("[stopped] " + name + " at step " + std::to_string(step) + " of 300 (checkpoint)"));
      EXPECT_THAT(said, HasSubstr("  " + name + " at step " + std::to_string(step) + " of 300\n"));
    }
    EXPECT_THAT(said, HasSubstr("interrupted by signal 2: 2 run(s) stopped with a checkpoint, 0 not started"));
  } else {
    EXPECT_THAT(said, HasSubstr("[interrupt] second interrupt: killing 2 run(s) at once; their steps since their "
                                "last checkpoints are lost"));
    EXPECT_THAT(said, HasSubstr("then at once by a second: 2 run(s) killed"));
    for (const std::string& run : {a, b}) {
      const std::string name = run.substr(run.rfind('/') + 1);
      EXPECT_THAT(said, HasSubstr("  " + name + " killed; resumes from its checkpoint at step " +
                                  std::to_string(read_checkpoint_meta(run + "/checkpoint.h5").step) + "\n"));
    }
  }
  EXPECT_THAT(said, HasSubstr("`dsmoe sweep " + exp + "` resumes them from their checkpoints"));
  EXPECT_FALSE(std::filesystem::exists(a + "/finished"));
  EXPECT_FALSE(std::filesystem::exists(a + "/running"));

  const test::RunResult r = sweep(exp, cut, "--ranks 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[start] a-s1 (resuming at step "));
  std::vector<double> steps;
  for (int s = 10; s <= 300; s += 10) steps.push_back(s);
  for (const char* run : {"a-s1", "b-s1"}) expect_same_results(straight + "/int/" + run, cut + "/int/" + run, steps);
}

INSTANTIATE_TEST_SUITE_P(
    OnceAndTwice, SweepInterrupt,
    ::testing::Values(InterruptCase{1, "steps: 300, log_every: 10, eval_every: 100"},
                      InterruptCase{2, "steps: 300, log_every: 10, eval_every: 100, checkpoint_every: 10"}),
    [](const ::testing::TestParamInfo<InterruptCase>& info) { return info.param.interrupts == 1 ? "Once" : "Twice"; });

// A job's wall-clock limit: --time-limit stops the sweep as a first Ctrl-C does (the run going
// checkpoints, no more start) and exits 75; the next sweep goes on from the checkpoint.
TEST_F(SweepCli, TimeLimitStopsWithACheckpointAndTheNextSweepGoesOn) {
  // A run takes several seconds here (about 1.5 ms a step), so the limit comes during the first.
  const std::string exp = experiment("limit", "steps: 4000, log_every: 100, eval_every: 4000", "", "[1]");
  const std::string runs = dir.file("runs");
  test::RunResult r = sweep(exp, runs, "--time-limit 2");
  ASSERT_EQ(r.exit_code, 75) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[time limit] 2 s: asking 1 run(s) to stop after their current step"));
  const int64_t step = read_checkpoint_meta(runs + "/limit/a-s1/checkpoint.h5").step;
  EXPECT_GT(step, 0);
  EXPECT_LT(step, 4000);
  EXPECT_THAT(r.output, HasSubstr("[stopped] a-s1 at step " + std::to_string(step) + " of 4000 (checkpoint)"));
  EXPECT_THAT(r.output, HasSubstr("stopped by the time limit: 1 run(s) stopped with a checkpoint, 1 not started"));
  EXPECT_THAT(r.output, HasSubstr("`dsmoe sweep " + exp + "` resumes them from their checkpoints"));
  r = sweep(exp, runs);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[start] a-s1 (resuming at step " + std::to_string(step) + ")"));
  EXPECT_THAT(r.output, HasSubstr("2 finished now"));
  EXPECT_THAT(sweep(exp, runs, "--time-limit 0").output, HasSubstr("--time-limit must be > 0 seconds"));
}

// Adding seeds renames nothing and trains nothing twice; a run folder whose run had another
// config is refused, naming the run and the keys, and nothing starts.
TEST_F(SweepCli, RunFoldersKeepTheirRunsIdentity) {
  const std::string exp = experiment("id", kShort, "", "[1]");
  ASSERT_EQ(sweep(exp, runs).exit_code, 0);
  test::write_file(exp, std::regex_replace(test::read_file(exp), std::regex("seeds: \\[1\\]"), "seeds: [1, 2]"));
  test::RunResult r = sweep(exp, runs);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("4 runs, 2 already finished, 2 to run"));
  EXPECT_THAT(r.output, Not(HasSubstr("[start] a-s1")));
  const std::vector<std::string> folders = {"a-s1", "a-s2", "b-s1", "b-s2"};
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::directory_iterator(runs + "/id"))
    if (e.is_directory()) found.push_back(e.path().filename().string());
  std::sort(found.begin(), found.end());
  EXPECT_EQ(found, folders);

  // b's runs now train another model: their folders hold runs of the old one.
  test::write_file(exp, std::regex_replace(test::read_file(exp), std::regex("top_k: 1, capacity_factor: 1.0"),
                                           "top_k: 2, capacity_factor: 1.0"));
  for (const char* flags : {"", "--dry-run"}) {
    r = sweep(exp, runs, flags);
    EXPECT_EQ(r.exit_code, 1) << flags;
    EXPECT_THAT(r.output, HasSubstr("id: 2 run folder(s) hold a run of another config than the experiment now gives "
                                    "them (resuming would continue that run under the new settings):\n  " +
                                    runs + "/id/b-s1 (" + runs + "/id/b-s1/checkpoint.h5):\n    moe.top_k: 1 -> 2\n"));
    EXPECT_THAT(r.output, HasSubstr("To keep them, give the experiment another name"));
    EXPECT_THAT(r.output, Not(HasSubstr("[start]")));
  }
}

TEST_F(SweepCli, ARunWithoutACheckpointSaysItStartsOver) {
  const std::string exp = experiment("over", kShort, "", "[1]");
  ASSERT_EQ(sweep(exp, runs, "--stop-after 3 --only a").exit_code, 0);
  std::filesystem::remove(runs + "/over/a-s1/checkpoint.h5");  // metrics of 3 steps, no checkpoint
  const test::RunResult r = sweep(exp, runs, "--only a");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[start] a-s1 (no checkpoint: starting from step 0; its earlier metrics are replaced)"));
  EXPECT_THAT(test::read_file(runs + "/over/a-s1/train.log"),
              HasSubstr("no checkpoint in " + runs + "/over/a-s1: starting from step 0"));
  std::vector<double> steps = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(test::read_series(runs + "/over/a-s1/metrics.h5", "train/step"), steps);
}

TEST_F(SweepCli, FailedRunDoesNotStopTheOthers) {
  const std::string exp = experiment("fail", kShort, "", "[1]");
  test::write_file(exp, test::read_file(exp) + "  - name: broken\n    data: {path: '" + dir.file("missing.txt") + "'}\n");
  test::RunResult r = sweep(exp, runs);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("[FAILED] broken-s1"));
  EXPECT_THAT(r.output, HasSubstr("missing.txt: cannot open data file"));  // the end of its log
  EXPECT_THAT(r.output, HasSubstr("2 finished now, 0 already finished, 0 stopped early, 1 failed"));
  EXPECT_THAT(r.output, HasSubstr("failed: broken-s1: exit code 1 (see " + runs + "/fail/broken-s1/train.log)"));
  EXPECT_THAT(run_dsmoe("status " + runs + "/fail").output, HasSubstr(": 3 runs: 2 done, 0 running, 0 pending, 1 failed"));
  r = sweep(exp, runs);  // only the failed run is tried again
  EXPECT_THAT(r.output, HasSubstr("3 runs, 2 already finished, 1 to run"));
}

TEST_F(SweepCli, RankBudget) {
  const std::string exp = experiment("ranks", kShort, "ranks: 2\n", "[1]");
  test::RunResult r = sweep(exp, runs);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("ranks: each run takes 2 ranks (ranks: in the experiment file), more than the budget --ranks 1"));
  for (const char* v : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMPI_MCA_rmaps_base_oversubscribe=1",
                        "OMPI_MCA_btl=self,vader", "OMPI_MCA_pml=ob1"})
    putenv(const_cast<char*>(v));
  // A run that cannot start fails alone.
  const std::string out = test::run_command("PATH=/nonexistent " + std::string(DSMOE_BIN) + " sweep " + exp +
                                            " --runs-dir " + runs + " --ranks 4 2>&1; echo exit $?");
  EXPECT_THAT(out, HasSubstr("[FAILED] a-s1: cannot start mpiexec: No such file or directory"));
  EXPECT_THAT(out, HasSubstr("0 finished now, 0 already finished, 0 stopped early, 2 failed"));
  EXPECT_THAT(out, HasSubstr("exit 1\n"));
  r = sweep(exp, runs, "--ranks 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("2 to run, 2 at a time (2 rank(s) each)"));
  h5::Handle f = h5::open_file(runs + "/ranks/a-s1/metrics.h5", H5F_ACC_RDONLY);
  ASSERT_TRUE(f.valid());
  EXPECT_EQ(h5::read_attr_int64(f, "world_size"), 2);
}

// Runs that use GPUs go to the least busy of the GPUs the sweep may use, through
// CUDA_VISIBLE_DEVICES; a third run at once shares one. Here (no GPU) each run of backend cuda
// then fails, and its error names the GPU it was given.
TEST_F(SweepCli, RunsGoToTheLeastBusyGpus) {
  if (std::filesystem::exists("/dev/nvidia0")) GTEST_SKIP() << "this machine has a GPU";
  const std::string exp = experiment("gpus", kShort, "", "[1, 2, 3]");
  test::write_file(exp, std::regex_replace(test::read_file(exp), std::regex("backend: cpu"), "backend: cuda"));
  const std::string out = test::run_command("CUDA_VISIBLE_DEVICES=3,5 " + std::string(DSMOE_BIN) + " sweep " + exp +
                                            " --runs-dir " + runs + " --only a --ranks 3 2>&1");
  EXPECT_THAT(out, HasSubstr("[start] a-s1 on GPU 3, log "));
  EXPECT_THAT(out, HasSubstr("[start] a-s2 on GPU 5, log "));
  EXPECT_THAT(out, HasSubstr("[start] a-s3 on GPU 3 (shared with 1 other run), log "));
  for (const auto& [run, gpu] : std::vector<std::pair<std::string, std::string>>{{"a-s1", "3"}, {"a-s2", "5"}, {"a-s3", "3"}})
    EXPECT_THAT(test::read_file(runs + "/gpus/" + run + "/failed"), HasSubstr("(CUDA_VISIBLE_DEVICES=" + gpu + ")"))
        << run;
  // Runs on the CPU keep the sweep's environment and say nothing of GPUs.
  const std::string cpu = experiment("cpus", kShort, "", "[1]");
  EXPECT_THAT(test::run_command("CUDA_VISIBLE_DEVICES=3,5 " + std::string(DSMOE_BIN) + " sweep " + cpu +
                                " --runs-dir " + runs + " --only a 2>&1"),
              HasSubstr("[start] a-s1, log "));
}

TEST_F(SweepCli, HelpAndBadOptions) {
  for (const char* cmd : {"sweep --help", "analyze --help"}) {
    test::RunResult r = run_dsmoe(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_THAT(r.output, HasSubstr("usage: dsmoe")) << cmd;
  }
  EXPECT_EQ(run_dsmoe("sweep").exit_code, 2);
  EXPECT_EQ(run_dsmoe("analyze").exit_code, 2);
  const std::string exp = experiment("opts", kShort);
  EXPECT_THAT(sweep(exp, runs, "--json").output, HasSubstr("--json goes with --dry-run"));
  EXPECT_THAT(sweep(exp, runs, "--ranks 0").output, HasSubstr("--ranks must be >= 1"));
  EXPECT_THAT(sweep(exp, runs, "--stop-after -1").output, HasSubstr("--stop-after must be >= 0"));
  EXPECT_THAT(run_dsmoe("sweep " + dir.file("none.yaml")).output, HasSubstr("none.yaml: cannot open experiment file"));
}

}  // namespace
}  // namespace dsmoe
