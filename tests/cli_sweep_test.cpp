// `dsmoe sweep` and `dsmoe analyze` end to end on tiny runs: the dry-run table, the tolerance
// check, resuming stopped, killed and failed sweeps to the results of an uninterrupted one, the
// rank budget, and the analysis table against values computed here from the metrics files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include "io/h5.h"
#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::run_dsmoe;


// CSV text -> one map of column -> field per line after the header.
std::vector<std::map<std::string, std::string>> read_csv(const std::string& text) {
  std::vector<std::vector<std::string>> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> fields;
    std::istringstream ls(line);
    for (std::string f; std::getline(ls, f, ',');) fields.push_back(f);
    if (!line.empty() && line.back() == ',') fields.push_back("");
    lines.push_back(fields);
  }
  std::vector<std::map<std::string, std::string>> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::map<std::string, std::string> row;
    for (size_t j = 0; j < lines[0].size(); ++j) row[lines[0][j]] = j < lines[i].size() ? lines[i][j] : "";
    rows.push_back(row);
  }
  return rows;
}

struct SweepCli : ::testing::Test {
  test::TempDir dir;
  std::string corpus = dir.file("corpus.txt");
  std::string runs = dir.file("runs");

  void SetUp() override {
    setenv("OMP_NUM_THREADS", "1", 1);  // bit-identical runs whatever runs beside them
    test::write_file(corpus, test::make_corpus(400, 3));
  }

  // Two variants (a: top-2 dropless; b: top-1 with capacity, so some pairs drop) x `seeds`.
  std::string experiment(const std::string& name, const std::string& train, const std::string& extra = "",
                         const std::string& seeds = "[1, 2]") {
    const std::string path = dir.file(name + ".yaml");
    test::write_file(path,
                     "experiment: " + name + "\nseeds: " + seeds + "\n" + extra +
                         "base:\n"
                         "  model: {vocab_size: 256, d_model: 32, n_layers: 2, n_heads: 2, seq_len: 32, "
                         "first_dense_layers: 1, dense_hidden: 64}\n"
                         "  moe: {n_routed: 4, n_shared: 1, top_k: 2, expert_hidden: 16}\n"
                         "  train: {batch_size: 8, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 2, eval_batches: 2, " +
                         train +
                         "}\n"
                         "  data: {path: '" + corpus + "', val_fraction: 0.1}\n"
                         "sweep:\n"
                         "  - name: a\n"
                         "  - name: b\n"
                         "    moe: {top_k: 1, capacity_factor: 1.0}\n");
    return path;
  }
  test::RunResult sweep(const std::string& exp, const std::string& root, const std::string& flags = "") {
    return run_dsmoe("sweep " + exp + " --runs-dir " + root + " " + flags);
  }
};

const char* kShort = "steps: 8, log_every: 1, eval_every: 4";

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
                                  "\"solved\": null, \"config\": {\"name\": \"a\", \"seed\": 1, \"backend\": \"auto\""));
  EXPECT_THAT(r.output, HasSubstr("\"moe\": {\"n_routed\": 4, \"n_shared\": 1, \"top_k\": 1, \"expert_hidden\": 16, "
                                  "\"score\": \"softmax\", \"norm_topk\": false, \"router_noise\": 0.0, "
                                  "\"capacity_factor\": 1.0, \"route_devices\": 0}"));
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
  EXPECT_THAT(r.output, HasSubstr("\nb      "));  // one seed: runs are named as their variants
  EXPECT_THAT(r.output, Not(HasSubstr("\na      ")));
  r = sweep(exp, runs, "--only a");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(runs + "/only/a/finished"));
  EXPECT_FALSE(std::filesystem::exists(runs + "/only/b"));
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
  // A changed config is not finished: it runs again (here resuming its checkpoint at step 8).
  r = sweep(experiment("resume", "steps: 10, log_every: 1, eval_every: 4"), split);
  EXPECT_THAT(r.output, HasSubstr("[start] a-s1 (resuming at step 8)"));
  EXPECT_THAT(r.output, HasSubstr("4 finished now"));
}

// Running, not a zombie (whoever adopted the process may not reap it at once).
bool alive(pid_t pid) {
  std::string stat;
  try {
    stat = test::read_file("/proc/" + std::to_string(pid) + "/stat");
  } catch (const std::exception&) {
    return false;  // gone
  }
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || stat.substr(paren + 2, 1) != "Z";
}

TEST_F(SweepCli, KilledSweepResumesToTheResultsOfAnUninterruptedOne) {
  const std::string exp = experiment("kill", "steps: 300, log_every: 10, eval_every: 100, checkpoint_every: 10", "",
                                     "[1]");
  const std::string straight = dir.file("straight"), killed = dir.file("killed");
  ASSERT_EQ(sweep(exp, straight, "--ranks 2").exit_code, 0);

  const std::string log = dir.file("killed.log");
  const pid_t pid = std::stoi(test::run_command(std::string(DSMOE_BIN) + " sweep " + exp + " --runs-dir " + killed +
                                                " --ranks 2 > " + log + " 2>&1 & echo $!"));
  const std::string ckpt = killed + "/kill/a/checkpoint.h5";
  for (int i = 0; i < 3000 && !std::filesystem::exists(ckpt); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(std::filesystem::exists(ckpt));
  // Analysis reads the runs while they go.
  test::RunResult a = run_dsmoe("analyze " + killed + "/kill");
  EXPECT_EQ(a.exit_code, 0) << a.output;
  kill(pid, SIGTERM);
  for (int i = 0; i < 3000 && alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_FALSE(alive(pid));
  EXPECT_THAT(test::read_file(log), HasSubstr("interrupted (signal 15); 2 run(s) stopped"));
  EXPECT_FALSE(std::filesystem::exists(killed + "/kill/a/finished"));

  test::RunResult r = sweep(exp, killed, "--ranks 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("(resuming at step "));
  std::vector<double> steps;
  for (int s = 10; s <= 300; s += 10) steps.push_back(s);
  for (const char* run : {"a", "b"}) expect_same_results(straight + "/kill/" + run, killed + "/kill/" + run, steps);
}

TEST_F(SweepCli, FailedRunDoesNotStopTheOthers) {
  const std::string exp = experiment("fail", kShort, "", "[1]");
  test::write_file(exp, test::read_file(exp) + "  - name: broken\n    data: {path: '" + dir.file("missing.txt") + "'}\n");
  test::RunResult r = sweep(exp, runs);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("[FAILED] broken"));
  EXPECT_THAT(r.output, HasSubstr("missing.txt: cannot open data file"));  // the end of its log
  EXPECT_THAT(r.output, HasSubstr("2 finished now, 0 already finished, 0 stopped early, 1 failed"));
  EXPECT_THAT(r.output, HasSubstr("failed: broken: exit code 1 (see " + runs + "/fail/broken/train.log)"));
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
  EXPECT_THAT(out, HasSubstr("[FAILED] a: cannot start mpiexec: No such file or directory"));
  EXPECT_THAT(out, HasSubstr("0 finished now, 0 already finished, 0 stopped early, 2 failed"));
  EXPECT_THAT(out, HasSubstr("exit 1\n"));
  r = sweep(exp, runs, "--ranks 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("2 to run, 2 at a time (2 rank(s) each)"));
  h5::Handle f = h5::open_file(runs + "/ranks/a/metrics.h5", H5F_ACC_RDONLY);
  ASSERT_TRUE(f.valid());
  EXPECT_EQ(h5::read_attr_int64(f, "world_size"), 2);
}

// What analyze must print, computed here from the metrics files.
struct Expected {
  double final_mean, final_spread, best_mean, mv_mean, mv_max, cv, dropped, tokens_per_s;
};

Expected expected_for(const std::vector<std::string>& runs) {
  std::vector<double> finals, bests, mv_means, mv_maxes, cvs, dropped, tps;
  for (const std::string& run : runs) {
    const std::string m = run + "/metrics.h5";
    std::vector<double> eval = test::read_series(m, "eval/loss"), mv = test::read_series(m, "experts/max_violation");
    std::vector<double> load = test::read_series(m, "experts/load"), drop = test::read_series(m, "experts/dropped");
    std::vector<double> speed = test::read_series(m, "train/tokens_per_s");
    finals.push_back(eval.back());
    bests.push_back(*std::min_element(eval.begin(), eval.end()));
    double s = 0;
    for (double x : mv) s += x;
    mv_means.push_back(s / mv.size());
    mv_maxes.push_back(*std::max_element(mv.begin(), mv.end()));
    double cv = 0, total = 0;
    for (size_t row = 0; row < load.size() / 4; ++row) {  // one MoE layer of 4 experts
      const double* l = &load[row * 4];
      const double mean = (l[0] + l[1] + l[2] + l[3]) / 4;
      double var = 0;
      for (int i = 0; i < 4; ++i) var += (l[i] - mean) * (l[i] - mean) / 4;
      cv += std::sqrt(var) / mean;
      total += 4 * mean;
    }
    cvs.push_back(cv / (load.size() / 4));
    double d = 0;
    for (double x : drop) d += x;
    dropped.push_back(d / total);
    std::sort(speed.begin(), speed.end());
    tps.push_back(speed.size() % 2 ? speed[speed.size() / 2] : (speed[speed.size() / 2 - 1] + speed[speed.size() / 2]) / 2);
  }
  auto mean = [](const std::vector<double>& v) { return (v[0] + v[1]) / 2; };
  return {mean(finals), std::fabs(finals[0] - finals[1]) / std::sqrt(2.0), mean(bests), mean(mv_means),
          std::max(mv_maxes[0], mv_maxes[1]), mean(cvs), mean(dropped), mean(tps)};
}

TEST_F(SweepCli, AnalyzeGivesTheExpectedTable) {
  const std::string exp = experiment("an", kShort);
  ASSERT_EQ(sweep(exp, runs).exit_code, 0);
  const std::string folder = runs + "/an";
  test::RunResult r = run_dsmoe("analyze " + folder);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("an: 4 runs of 2 variants"));
  std::map<std::string, Expected> expected = {{"a", expected_for({folder + "/a-s1", folder + "/a-s2"})},
                                              {"b", expected_for({folder + "/b-s1", folder + "/b-s2"})}};
  EXPECT_GT(expected["b"].dropped, 0);  // capacity 1.0 with top-1 drops some pairs
  EXPECT_EQ(expected["a"].dropped, 0);

  const auto rows = read_csv(test::read_file(folder + "/summary.csv"));
  ASSERT_EQ(rows.size(), 2u);
  // Ranked by mean final validation loss.
  const std::string first = expected["a"].final_mean < expected["b"].final_mean ? "a" : "b";
  EXPECT_EQ(rows[0].at("variant"), first);
  EXPECT_THAT(r.output, HasSubstr("   1  " + first));
  for (const auto& row : rows) {
    const Expected& x = expected.at(row.at("variant"));
    auto num = [&](const char* col) { return std::stod(row.at(col)); };
    EXPECT_EQ(num("runs"), 2);
    EXPECT_DOUBLE_EQ(num("final_val_loss_mean"), x.final_mean);
    EXPECT_DOUBLE_EQ(num("final_val_loss_spread"), x.final_spread);
    EXPECT_DOUBLE_EQ(num("best_val_loss_mean"), x.best_mean);
    EXPECT_DOUBLE_EQ(num("max_violation_mean"), x.mv_mean);
    EXPECT_DOUBLE_EQ(num("max_violation_max"), x.mv_max);
    EXPECT_DOUBLE_EQ(num("load_cv"), x.cv);
    EXPECT_DOUBLE_EQ(num("dropped_fraction"), x.dropped);
    EXPECT_DOUBLE_EQ(num("tokens_per_s"), x.tokens_per_s);
    EXPECT_EQ(num("tokens"), 2048);
    EXPECT_EQ(num("progress"), 1);
  }
  // summary.h5 holds the same table and one row per run.
  {
    h5::Handle f = h5::open_file(folder + "/summary.h5", H5F_ACC_RDONLY);
    ASSERT_TRUE(f.valid());
    EXPECT_EQ(h5::read_attr_string(f, "experiment"), "an");
  }
  EXPECT_EQ(test::read_series(folder + "/summary.h5", "variants/final_val_loss_mean")[0], expected[first].final_mean);
  EXPECT_EQ(test::read_series(folder + "/summary.h5", "runs/seed"), std::vector<double>({1, 2, 1, 2}));
  EXPECT_EQ(test::read_series(folder + "/summary.h5", "runs/step"), std::vector<double>({8, 8, 8, 8}));
}

TEST_F(SweepCli, AnalyzeOfRunsWithoutEvalsAndErrors) {
  const std::string exp = experiment("part", kShort, "", "[1]");
  ASSERT_EQ(sweep(exp, runs, "--stop-after 3").exit_code, 0);  // no eval before step 4
  std::filesystem::create_directories(runs + "/part/junk");
  test::write_file(runs + "/part/junk/metrics.h5", "not hdf5");
  test::RunResult r = run_dsmoe("analyze " + runs + "/part");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("skipped junk: " + runs + "/part/junk/metrics.h5: cannot open it as HDF5"));
  const auto rows = read_csv(test::read_file(runs + "/part/summary.csv"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].at("final_val_loss_mean"), "");
  EXPECT_EQ(rows[0].at("progress"), "0.375");

  r = run_dsmoe("analyze " + dir.file("nowhere"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("nowhere: not a folder (expected runs/<experiment>)"));
  std::filesystem::create_directories(dir.file("empty"));
  r = run_dsmoe("analyze " + dir.file("empty"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("empty: no run with a readable metrics.h5"));
}

// A Python with h5py and matplotlib (Debian's python3 first: another python3 may come first on PATH).
std::string plotting_python() {
  for (const char* py : {"/usr/bin/python3", "python3"})
    if (test::run_command(std::string(py) + " -c 'import h5py, matplotlib' >/dev/null 2>&1 && echo ok") == "ok\n")
      return py;
  return "";
}

TEST_F(SweepCli, PlotWritesPngs) {
  const std::string python = plotting_python();
  if (python.empty()) GTEST_SKIP() << "no python3 with h5py and matplotlib";
  ASSERT_EQ(sweep(experiment("plot", kShort, "", "[1]"), runs).exit_code, 0);
  const std::string plot = python + " " + DSMOE_SOURCE_DIR "/experiments/analysis/plot.py " + runs + "/plot";
  EXPECT_THAT(test::run_command(plot + " 2>&1"), HasSubstr("summary.h5: missing; run `dsmoe analyze"));
  ASSERT_EQ(run_dsmoe("analyze " + runs + "/plot").exit_code, 0);
  const std::string out = test::run_command(plot + " --out " + dir.file("png") + " 2>&1");
  for (const char* png : {"loss_curves.png", "val_loss.png", "expert_load_a.png", "expert_load_b.png"}) {
    const std::string path = dir.file("png") + "/" + png;
    ASSERT_TRUE(std::filesystem::exists(path)) << out;
    const std::string bytes = test::read_file(path);
    EXPECT_GT(bytes.size(), 5000u) << png;
    EXPECT_EQ(bytes.substr(1, 3), "PNG") << png;
  }
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
