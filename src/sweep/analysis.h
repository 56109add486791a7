// `dsmoe analyze`: every run of an experiment folder, grouped by variant (the run config's
// name), ranked by mean final validation loss; written as a table, CSV and summary.h5.
#pragma once
#include <string>
#include <vector>

#include "sweep/run_metrics.h"

namespace dsmoe {

struct VariantSummary {
  std::string variant;
  double runs = 0;
  // Validation loss over the variant's seeds: mean and spread (sample standard deviation, 0 for
  // one seed) of each run's final and best eval.
  double final_val_loss_mean = RunMetrics::kNone, final_val_loss_spread = RunMetrics::kNone;
  double best_val_loss_mean = RunMetrics::kNone, best_val_loss_spread = RunMetrics::kNone;
  double tokens = 0, tokens_per_s = 0;  // means over seeds
  double max_violation_mean = RunMetrics::kNone;  // mean over seeds of the runs' means
  double max_violation_max = RunMetrics::kNone;   // largest of any run
  double load_cv = RunMetrics::kNone, dropped_fraction = RunMetrics::kNone;  // means over seeds
  double params_active = 0, flops_per_token = 0;
  double progress = 0;  // mean of step / train.steps
};

struct ExperimentRuns {
  std::vector<RunMetrics> runs;      // in folder-name order
  std::vector<std::string> skipped;  // "folder: why" for folders without readable metrics
};

// Every sub-folder of `dir` holding a metrics.h5.
ExperimentRuns read_experiment_runs(const std::string& dir);

// Ranked: lowest mean final validation loss first; variants without an eval yet last.
std::vector<VariantSummary> summarize(const std::vector<RunMetrics>& runs);

}  // namespace dsmoe
