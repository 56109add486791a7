// `dsmoe analyze`: the runs of an experiment folder grouped by variant, each variant's metric
// over its finished seeds (n, mean, sample std, the t interval of the mean), its difference
// from a baseline variant (paired by seed where seeds pair, else Welch's) with a verdict, and
// the unfinished, missing and foreign runs reported apart, never in a statistic.
#pragma once
#include <string>
#include <vector>

#include "sweep/run_metrics.h"
#include "sweep/stats.h"

namespace dsmoe {

// A metric runs are compared by.
struct Metric {
  const char* name;   // as --metric takes it
  const char* label;  // for tables and plots
  bool lower_is_better;
  double RunMetrics::*field;
};

const std::vector<Metric>& analysis_metrics();
// Throws listing the metrics when `name` is none of them.
const Metric& find_metric(const std::string& name);

struct AnalysisOptions {
  std::string metric = "final_val_loss";
  std::string baseline;   // "" = the sweep's (the iso-FLOPs reference, else the first variant)
  int device_groups = 0;  // > 0: replaces each run's own for the device-level balance
  double confidence = 0.95;
};

// The validation loss of a variant against the baseline's at one evaluation step.
struct CurvePoint {
  int64_t step = 0;
  Estimate delta;       // paired by seed over the finished runs both evaluated at this step
  std::string verdict;  // better | worse | unresolved
};

inline constexpr double kPlanningPower = 0.8;  // of VariantStats::seeds_for_power

struct VariantStats {
  std::string variant;
  std::vector<const RunMetrics*> runs;  // its finished runs, by seed
  Estimate value;                       // the metric over them
  // Against the baseline: "paired" (over the seeds both have), "welch", "baseline" (this is
  // it), or "" (no comparison: fewer than two seeds on a side, or no finished baseline).
  std::string method;
  Estimate delta;       // variant - baseline
  std::string verdict;  // better | worse | unresolved (the interval holds 0) | baseline | ""
  // An unresolved paired comparison: the seeds that would resolve it with probability
  // kPlanningPower if the difference and its spread were as observed (pairs_for_power); else 0.
  int seeds_for_power = 0;
  // The learning curves compared: at each evaluation step where two or more seeds pair, in step
  // order, whatever the metric (empty for the baseline and where seeds do not pair).
  std::vector<CurvePoint> curve;
};

struct Analysis {
  std::string experiment, dir;
  const Metric* metric = nullptr;
  double confidence = 0.95;
  std::string baseline, baseline_from;
  std::vector<std::string> order;   // the variants in the experiment file's order
  std::vector<RunMetrics> runs;     // every readable run of the experiment, in that order
  std::vector<VariantStats> ranked;  // variants with a finished run, best mean first
  std::vector<std::string> not_started;  // runs the experiment defines without metrics yet
  std::vector<std::string> foreign;      // run folders the experiment does not define
  std::vector<std::string> skipped;      // "folder: why" for unreadable metrics
  std::vector<std::string> notes;        // what the reader must know (no sweep.yaml, ...)

  std::vector<const RunMetrics*> unfinished() const;
};

// `dir`: an experiment folder (see experiment_dir()).
Analysis analyze_experiment(const std::string& dir, const AnalysisOptions& options);

}  // namespace dsmoe
