// What analysis needs from one run's metrics.h5, read as an SWMR reader so that runs still
// going can be read (every row up to their last flush).
#pragma once
#include <cstdint>
#include <limits>
#include <string>

namespace dsmoe {

struct RunMetrics {
  static constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
  std::string run;      // the run's folder name
  std::string variant;  // the run config's name
  uint64_t seed = 0;
  int64_t steps = 0;  // train.steps of the run's config
  int64_t step = 0;   // last step logged
  int64_t tokens = 0;  // tokens seen by then
  int64_t params_total = 0, params_active = 0;
  double flops_per_token = 0;
  double tokens_per_s = kNone;    // median over logged steps
  double final_val_loss = kNone;  // the last eval
  double best_val_loss = kNone;   // the lowest eval
  // Over every logged step and MoE layer (kNone without MoE layers or rows):
  double max_violation_mean = kNone, max_violation_max = kNone;
  double load_cv = kNone;           // mean of std/mean of the experts' loads (population std)
  double dropped_fraction = kNone;  // dropped pairs / selected pairs
};

// Throws naming the file when it cannot be read.
RunMetrics read_run_metrics(const std::string& metrics_path, const std::string& run);

}  // namespace dsmoe
