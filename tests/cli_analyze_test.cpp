// `dsmoe analyze` end to end on tiny sweeps: every statistic against values computed here from
// the runs' metrics files with closed forms and t-table constants; seeds added later counted
// once; unfinished, unstarted and foreign runs kept out of the statistics; the folder a user may
// pass by mistake; and plot.py drawing what analyze wrote.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>

#include "io/h5.h"
#include "sweep_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::run_dsmoe;

using AnalyzeCli = test::SweepFixture;
using test::kShort;

constexpr double kT975Df2 = 4.302652730;  // two-sided 95 % t critical value, 2 degrees of freedom

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / v.size();
}

double sample_std(const std::vector<double>& v) {
  const double m = mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / (v.size() - 1));
}

// What one run's metrics say, computed here: the last eval, and the expert balance at its last
// logged step (the last 10 % of 8 steps logged every step is step 8 alone) of its one MoE layer
// of 4 experts, in 2 device groups of 2.
struct RunTruth {
  double final_val_loss, max_violation, device_max_violation, dead, cv, dropped;
};

RunTruth truth_of(const std::string& run_dir) {
  const std::string m = run_dir + "/metrics.h5";
  const std::vector<double> eval = test::read_series(m, "eval/loss"), load = test::read_series(m, "experts/load");
  const std::vector<double> drop = test::read_series(m, "experts/dropped");
  const double* l = &load[load.size() - 4];
  const double mu = (l[0] + l[1] + l[2] + l[3]) / 4;
  double var = 0, dead = 0;
  for (int i = 0; i < 4; ++i) var += (l[i] - mu) * (l[i] - mu) / 4, dead += l[i] < 0.01 * mu;
  const double g0 = l[0] + l[1], g1 = l[2] + l[3];
  double dropped = 0, selected = 0;
  for (double x : drop) dropped += x;
  for (double x : load) selected += x;
  return {eval.back(), *std::max_element(l, l + 4) / mu - 1, std::max(g0, g1) / ((g0 + g1) / 2) - 1, dead,
          std::sqrt(var) / mu, dropped / selected};
}

std::map<std::string, std::string> row_of(const std::vector<std::map<std::string, std::string>>& rows,
                                          const std::string& key, const std::string& value) {
  for (const auto& r : rows)
    if (r.at(key) == value) return r;
  throw Error("no row with " + key + " " + value);
}

TEST_F(AnalyzeCli, StatisticsMatchTheMetricsByHand) {
  ASSERT_EQ(sweep(experiment("an", kShort, "", "[1, 2, 3]"), runs).exit_code, 0);
  const std::string folder = runs + "/an";
  const test::RunResult r = run_dsmoe("analyze " + folder + " --device-groups 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("an: 6 runs in " + folder + " (6 finished, 0 unfinished, 0 not started)"));
  EXPECT_THAT(r.output, HasSubstr("baseline: a (the first variant)"));

  std::map<std::string, std::vector<RunTruth>> truth;
  for (const char* v : {"a", "b"})
    for (int seed = 1; seed <= 3; ++seed) truth[v].push_back(truth_of(folder + "/" + v + "-s" + std::to_string(seed)));
  const auto finals = [&](const std::string& v) {
    std::vector<double> out;
    for (const RunTruth& t : truth[v]) out.push_back(t.final_val_loss);
    return out;
  };
  const auto variants = test::read_csv(test::read_file(folder + "/summary.csv"));
  ASSERT_EQ(variants.size(), 2u);
  const std::string best = mean(finals("a")) < mean(finals("b")) ? "a" : "b";
  EXPECT_EQ(variants[0].at("variant"), best);
  for (const char* v : {"a", "b"}) {
    const auto row = row_of(variants, "variant", v);
    const auto num = [&](const char* col) { return std::stod(row.at(col)); };
    const std::vector<double> x = finals(v);
    const double half = kT975Df2 * sample_std(x) / std::sqrt(3.0);
    EXPECT_EQ(num("n"), 3);
    EXPECT_NEAR(num("mean"), mean(x), 1e-12);
    EXPECT_NEAR(num("std"), sample_std(x), 1e-12);
    EXPECT_NEAR(num("ci_low"), mean(x) - half, 1e-8);
    EXPECT_NEAR(num("ci_high"), mean(x) + half, 1e-8);
    EXPECT_EQ(row.at("seeds"), "1;2;3");
    double mv = 0, dmv = 0, dead = 0, cv = 0, dropped = 0;
    for (const RunTruth& t : truth[v])
      mv += t.max_violation / 3, dmv += t.device_max_violation / 3, dead += t.dead / 3, cv += t.cv / 3,
          dropped += t.dropped / 3;
    EXPECT_NEAR(num("max_violation"), mv, 1e-12);
    EXPECT_NEAR(num("device_max_violation"), dmv, 1e-12);
    EXPECT_NEAR(num("dead_experts"), dead, 1e-12);
    EXPECT_NEAR(num("load_cv"), cv, 1e-12);
    EXPECT_NEAR(num("dropped_fraction"), dropped, 1e-12);
  }
  EXPECT_GT(std::stod(row_of(variants, "variant", "b").at("dropped_fraction")), 0);  // capacity 1.0, top-1

  // b against a, paired by seed: t on 2 df, whose two-sided p is 1 - |t| / sqrt(2 + t^2).
  std::vector<double> d;
  for (int i = 0; i < 3; ++i) d.push_back(finals("b")[i] - finals("a")[i]);
  const double se = sample_std(d) / std::sqrt(3.0), t = mean(d) / se;
  const auto b = row_of(variants, "variant", "b");
  EXPECT_EQ(b.at("delta_method"), "paired");
  EXPECT_EQ(std::stod(b.at("delta_n")), 3);
  EXPECT_NEAR(std::stod(b.at("delta_mean")), mean(d), 1e-12);
  EXPECT_NEAR(std::stod(b.at("delta_ci_low")), mean(d) - kT975Df2 * se, 1e-8);
  EXPECT_NEAR(std::stod(b.at("delta_ci_high")), mean(d) + kT975Df2 * se, 1e-8);
  EXPECT_NEAR(std::stod(b.at("p_value")), 1 - std::fabs(t) / std::sqrt(2 + t * t), 1e-8);
  const bool holds_zero = mean(d) - kT975Df2 * se < 0 && mean(d) + kT975Df2 * se > 0;
  EXPECT_EQ(b.at("verdict"), holds_zero ? "unresolved" : mean(d) < 0 ? "better" : "worse");
  // Unresolved: the seeds for 80 % power, were the difference and spread those observed.
  const double za = 1.959963985, zb = 0.841621234, ratio = sample_std(d) / mean(d);
  const int power_seeds = std::max(2, (int)std::ceil((za + zb) * (za + zb) * ratio * ratio + za * za / 2));
  EXPECT_EQ(b.at("seeds_for_power"), holds_zero ? std::to_string(power_seeds) : "") << "mean " << mean(d);
  EXPECT_EQ(r.output.find("seeds a side to resolve") != std::string::npos, holds_zero);
  EXPECT_EQ(row_of(variants, "variant", "a").at("verdict"), "baseline");

  // curves.csv: b's validation loss minus a's at each evaluation (steps 4 and 8), paired by seed.
  const auto curves = test::read_csv(test::read_file(folder + "/curves.csv"));
  ASSERT_EQ(curves.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto& row = curves[i];
    EXPECT_EQ(row.at("variant"), "b");
    EXPECT_EQ(row.at("step"), i == 0 ? "4" : "8");
    std::vector<double> dc;
    for (int seed = 1; seed <= 3; ++seed) {
      const std::string s = std::to_string(seed);
      dc.push_back(test::read_series(folder + "/b-s" + s + "/metrics.h5", "eval/loss")[i] -
                   test::read_series(folder + "/a-s" + s + "/metrics.h5", "eval/loss")[i]);
    }
    const double half = kT975Df2 * sample_std(dc) / std::sqrt(3.0);
    EXPECT_EQ(row.at("n"), "3");
    EXPECT_NEAR(std::stod(row.at("delta_mean")), mean(dc), 1e-12);
    EXPECT_NEAR(std::stod(row.at("delta_ci_low")), mean(dc) - half, 1e-8);
    EXPECT_NEAR(std::stod(row.at("delta_ci_high")), mean(dc) + half, 1e-8);
    const bool resolved = mean(dc) - half > 0 || mean(dc) + half < 0;
    EXPECT_EQ(row.at("verdict"), !resolved ? "unresolved" : mean(dc) < 0 ? "better" : "worse");
  }
  EXPECT_EQ(curves[1].at("delta_mean"), b.at("delta_mean"));  // the last evaluation is the final loss
  EXPECT_THAT(r.output, HasSubstr("validation loss minus the baseline's at each evaluation"));
  EXPECT_EQ(test::read_series(folder + "/summary.h5", "curves/step"), std::vector<double>({4, 8}));

  // runs.csv and summary.h5: a row per run, in the experiment's order.
  const auto runs_rows = test::read_csv(test::read_file(folder + "/runs.csv"));
  ASSERT_EQ(runs_rows.size(), 6u);
  EXPECT_EQ(runs_rows[3].at("run"), "b-s1");
  EXPECT_NEAR(std::stod(runs_rows[3].at("value")), finals("b")[0], 1e-12);
  EXPECT_EQ(runs_rows[3].at("finished"), "1");
  EXPECT_EQ(runs_rows[3].at("device_groups"), "2");
  EXPECT_EQ(test::read_series(folder + "/summary.h5", "runs/seed"), std::vector<double>({1, 2, 3, 1, 2, 3}));
  h5::Handle f = h5::open_file(folder + "/summary.h5", H5F_ACC_RDONLY);
  ASSERT_TRUE(f.valid());
  EXPECT_EQ(h5::read_attr_string(f, "experiment"), "an");
  EXPECT_EQ(h5::read_attr_string(f, "metric"), "final_val_loss");
  EXPECT_EQ(h5::read_attr_string(f, "baseline"), "a");
  EXPECT_EQ(h5::read_attr_int64(f, "lower_is_better"), 1);
}

TEST_F(AnalyzeCli, MetricBaselineAndDeviceGroupOptions) {
  ASSERT_EQ(sweep(experiment("opt", kShort, "", "[1, 2]"), runs).exit_code, 0);
  const std::string folder = runs + "/opt";
  test::RunResult r = run_dsmoe("analyze " + folder + " --metric tokens_per_s --baseline b");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("metric: training throughput (tokens/s), higher is better"));
  EXPECT_THAT(r.output, HasSubstr("baseline: b (--baseline)"));
  const auto rows = test::read_csv(test::read_file(folder + "/summary.csv"));
  EXPECT_GE(std::stod(rows[0].at("mean")), std::stod(rows[1].at("mean")));  // higher first
  // Without --device-groups: the run's own (one rank, no balance.device_groups): one group.
  r = run_dsmoe("analyze " + folder);
  EXPECT_EQ(test::read_csv(test::read_file(folder + "/runs.csv"))[0].at("device_groups"), "1");
  EXPECT_EQ(test::read_csv(test::read_file(folder + "/runs.csv"))[0].at("device_max_violation"), "0");

  EXPECT_THAT(run_dsmoe("analyze " + folder + " --metric speed").output,
              HasSubstr("--metric: no metric 'speed' (one of final_val_loss, best_val_loss, tokens_per_s"));
  EXPECT_THAT(run_dsmoe("analyze " + folder + " --baseline z").output,
              HasSubstr("--baseline: opt has no variant 'z' (its variants: a, b)"));
  EXPECT_THAT(run_dsmoe("analyze " + folder + " --device-groups 3").output,
              HasSubstr("3 device groups do not divide its 4 routed experts"));
}

// Runs made by another dsmoe build or on another device than the rest are named in a note, and
// runs.csv has each run's build and device.
TEST_F(AnalyzeCli, MixedBuildsAndDevicesAreNoted) {
  ASSERT_EQ(sweep(experiment("prov", kShort, "", "[1, 2]"), runs).exit_code, 0);
  const std::string folder = runs + "/prov";
  test::RunResult r = run_dsmoe("analyze " + folder);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("dsmoe builds")));
  const std::string version = test::read_csv(test::read_file(folder + "/runs.csv"))[0].at("dsmoe_version");
  EXPECT_FALSE(version.empty());
  {
    h5::Handle f = h5::open_file(folder + "/b-s2/metrics.h5", H5F_ACC_RDWR);
    ASSERT_TRUE(f.valid());
    h5::write_attr(f, "dsmoe_version", "0123abc");
    h5::write_attr(f, "device", "Another GPU");
  }
  r = run_dsmoe("analyze " + folder);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("note: the runs compared were made by 2 dsmoe builds: 0123abc (b-s2); " + version +
                                  " (a-s1, a-s2, b-s1)"));
  EXPECT_THAT(r.output, HasSubstr("note: the runs compared were made by 2 devices: "));
  EXPECT_THAT(r.output, HasSubstr("Another GPU (b-s2)"));
  EXPECT_EQ(row_of(test::read_csv(test::read_file(folder + "/runs.csv")), "run", "b-s2").at("device"), "Another GPU");
}

TEST_F(AnalyzeCli, SeedsAddedLaterAreCountedOnce) {
  const std::string exp = experiment("more", kShort, "", "[1]");
  ASSERT_EQ(sweep(exp, runs).exit_code, 0);
  test::write_file(exp, std::regex_replace(test::read_file(exp), std::regex("seeds: \\[1\\]"), "seeds: [1, 2]"));
  ASSERT_EQ(sweep(exp, runs).exit_code, 0);
  const test::RunResult r = run_dsmoe("analyze " + runs + "/more");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("more: 4 runs in"));
  for (const auto& row : test::read_csv(test::read_file(runs + "/more/summary.csv"))) {
    EXPECT_EQ(row.at("n"), "2") << row.at("variant");
    EXPECT_EQ(row.at("seeds"), "1;2");
  }
}

TEST_F(AnalyzeCli, UnfinishedUnstartedAndForeignRunsStayApart) {
  const std::string exp = experiment("part", kShort, "", "[1, 2, 3]");
  ASSERT_EQ(sweep(exp, runs, "--stop-after 3").exit_code, 0);  // every run at step 3 of 8
  ASSERT_EQ(sweep(exp, runs, "--only a").exit_code, 0);        // a's runs finish
  const std::string folder = runs + "/part";
  std::filesystem::remove_all(folder + "/b-s3");  // as if it had not started
  std::filesystem::copy(folder + "/a-s1", folder + "/old");  // a folder the experiment does not define
  std::filesystem::create_directories(folder + "/junk");
  test::write_file(folder + "/junk/metrics.h5", "not hdf5");

  test::RunResult r = run_dsmoe("analyze " + folder + "/");  // a trailing slash changes nothing
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("part: 5 runs in " + folder + " (3 finished, 2 unfinished, 1 not started)"));
  EXPECT_THAT(r.output, HasSubstr("unfinished runs (in no statistic above):\n  b-s1  step 3/8  38 %  final_val_loss -"));
  EXPECT_THAT(r.output, HasSubstr("not started: b-s3"));
  EXPECT_THAT(r.output, HasSubstr("not ranked (no finished run with a final_val_loss): b"));
  EXPECT_THAT(r.output, HasSubstr("run folders the experiment does not define (not analysed): junk, old"));
  const auto variants = test::read_csv(test::read_file(folder + "/summary.csv"));
  ASSERT_EQ(variants.size(), 1u);  // b has no finished run: not ranked
  EXPECT_EQ(variants[0].at("variant"), "a");
  EXPECT_EQ(variants[0].at("n"), "3");
  const auto runs_rows = test::read_csv(test::read_file(folder + "/runs.csv"));
  ASSERT_EQ(runs_rows.size(), 5u);
  EXPECT_EQ(row_of(runs_rows, "run", "b-s2").at("finished"), "0");
  EXPECT_EQ(row_of(runs_rows, "run", "b-s2").at("step"), "3");

  // Without sweep.yaml: every run folder, the copy of a-s1 counted once, junk skipped.
  std::filesystem::remove(folder + "/sweep.yaml");
  r = run_dsmoe("analyze " + folder);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("skipped junk: " + folder + "/junk/metrics.h5: cannot open it as HDF5"));
  EXPECT_THAT(r.output, HasSubstr("skipped old: the same variant (a) and seed (1) as a-s1, which is counted instead"));
  EXPECT_THAT(r.output, HasSubstr("note: no sweep.yaml in " + folder));
  EXPECT_EQ(test::read_csv(test::read_file(folder + "/summary.csv"))[0].at("n"), "3");
}

TEST_F(AnalyzeCli, SaysWhatToPassInstead) {
  ASSERT_EQ(sweep(experiment("w", kShort, "", "[1]"), runs, "--only a").exit_code, 0);
  test::RunResult r = run_dsmoe("analyze " + runs + "/w/a-s1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("is the folder of one run; pass its experiment's folder: dsmoe analyze " + runs + "/w"));
  r = run_dsmoe("analyze " + runs + "/");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("holds the folders of 1 experiment(s) (w); pass one: dsmoe analyze " + runs + "/w"));
  r = run_dsmoe("analyze " + dir.file("nowhere"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("nowhere: no such folder (give runs/<experiment>"));
  std::filesystem::create_directories(dir.file("empty"));
  r = run_dsmoe("analyze " + dir.file("empty"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("empty: no runs here"));
  EXPECT_EQ(run_dsmoe("analyze").exit_code, 2);
  EXPECT_THAT(run_dsmoe("analyze --help").output, HasSubstr("usage: dsmoe analyze"));
}

// A Python with h5py and matplotlib (Debian's python3 first: another python3 may come first on PATH).
std::string plotting_python() {
  for (const char* py : {"/usr/bin/python3", "python3"})
    if (test::run_command(std::string(py) + " -c 'import h5py, matplotlib' >/dev/null 2>&1 && echo ok") == "ok\n")
      return py;
  return "";
}

TEST_F(AnalyzeCli, PlotDrawsWhatAnalyzeWrote) {
  const std::string python = plotting_python();
  if (python.empty()) GTEST_SKIP() << "no python3 with h5py and matplotlib";
  const std::string exp = experiment("plot", kShort, "", "[1, 2]");
  ASSERT_EQ(sweep(exp, runs).exit_code, 0);
  const std::string plot = python + " " + DSMOE_SOURCE_DIR "/experiments/analysis/plot.py " + runs + "/plot";
  EXPECT_THAT(test::run_command(plot + " 2>&1"), HasSubstr("summary.h5: missing; run `dsmoe analyze"));
  ASSERT_EQ(run_dsmoe("analyze " + runs + "/plot").exit_code, 0);
  const std::string out = test::run_command(plot + " --out " + dir.file("png") + " 2>&1");
  for (const char* png : {"final_val_loss.png", "delta.png", "delta_curves.png", "loss_curves.png", "expert_load.png"}) {
    const std::string path = dir.file("png") + "/" + png;
    ASSERT_TRUE(std::filesystem::exists(path)) << out;
    EXPECT_THAT(out, HasSubstr(path));
    const std::string bytes = test::read_file(path);
    EXPECT_GT(bytes.size(), 5000u) << png;
    EXPECT_EQ(bytes.substr(1, 3), "PNG") << png;
  }
}

}  // namespace
}  // namespace dsmoe
