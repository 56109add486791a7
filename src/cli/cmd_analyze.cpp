#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "sweep/experiment_dir.h"
#include "sweep/run_state.h"
#include "sweep/summary_output.h"
#include "util/check.h"

namespace dsmoe {
namespace {

const char* kUsage =
    "usage: dsmoe analyze RUNS/EXPERIMENT [--metric M] [--baseline VARIANT] [--device-groups D]\n"
    "Compares the variants of a sweep over their finished seeds (docs/experiments.md, Analysis):\n"
    "per variant n, mean, sample std, the 95 % t interval of the mean and the per-seed values;\n"
    "against the baseline the difference over the seeds both have (paired; Welch's interval\n"
    "where seeds do not pair), its 95 % interval, p, and a verdict: better, worse, or\n"
    "unresolved (the interval holds 0). Unfinished runs are listed apart and in no statistic.\n"
    "Expert balance over the last 10 % of each run's steps: global and device-group MaxVio,\n"
    "dead experts. The learning curves: each variant's validation loss minus the baseline's at\n"
    "every evaluation, paired by seed. Reads runs still going too. Writes EXPERIMENT/summary.csv\n"
    "(variants), EXPERIMENT/runs.csv (runs), EXPERIMENT/curves.csv (the curves) and\n"
    "EXPERIMENT/summary.h5 (all three; experiments/analysis/plot.py draws it).\n"
    "  --metric M           final_val_loss (default), best_val_loss, tokens_per_s, max_violation,\n"
    "                       device_max_violation, dead_experts or load_cv\n"
    "  --baseline VARIANT   default: the iso-FLOPs reference, else the experiment's first variant\n"
    "  --device-groups D    the device groups of the device-level balance, for every run\n"
    "                       (default: each run's balance.device_groups, else its expert-parallel size)\n";

int run(const Args& args) {
  AnalysisOptions options;
  options.metric = args.get("metric", options.metric);
  options.baseline = args.get("baseline", "");
  options.device_groups = static_cast<int>(args.get_int("device-groups", 0));
  DSMOE_CHECK(options.device_groups >= 0, "--device-groups must be >= 1");
  const std::string dir = experiment_dir(args.positional()[0], "analyze");
  const Analysis a = analyze_experiment(dir, options);
  std::fputs(analysis_text(a).c_str(), stdout);
  write_file_atomically(dir + "/summary.csv", variants_csv(a));
  write_file_atomically(dir + "/runs.csv", runs_csv(a));
  write_file_atomically(dir + "/curves.csv", curves_csv(a));
  write_summary_h5(dir + "/summary.h5", a);
  std::printf("wrote %s/summary.csv, %s/runs.csv, %s/curves.csv and %s/summary.h5\n", dir.c_str(), dir.c_str(),
              dir.c_str(), dir.c_str());
  return 0;
}

}  // namespace

const Command kAnalyzeCommand = {"analyze",
                                 "RUNS/EXPERIMENT",
                                 "compare variants over seeds (t intervals, verdicts)",
                                 kUsage,
                                 {"baseline", "metric", "device-groups"},
                                 {},
                                 one_input_no_set,
                                 run,
                                 false};

}  // namespace dsmoe
