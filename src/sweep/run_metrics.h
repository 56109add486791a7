// What analysis needs from one run's metrics.h5, read as an SWMR reader so that runs still
// going can be read (every row up to their last flush).
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace dsmoe {

// The share of the last logged steps that the balance columns are taken over.
constexpr double kBalanceWindow = 0.1;
// An expert below this share of its layer's mean load over the window counts as dead.
constexpr double kDeadExpertShare = 0.01;

struct RunMetrics {
  static constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
  std::string run;      // the run's folder name
  std::string variant;  // the run config's name
  std::string version, device;  // the dsmoe build and device of its latest attempt ("" in older files)
  uint64_t seed = 0;
  int64_t steps = 0;  // train.steps of the run's config
  int64_t step = 0;   // last step logged
  int64_t tokens = 0;  // tokens seen by then
  int64_t params_total = 0, params_active = 0;
  double flops_per_token = 0;
  double tokens_per_s = kNone;    // median over logged steps
  double final_val_loss = kNone;  // the last eval
  int64_t final_eval_step = 0;    // its step
  double best_val_loss = kNone;   // the lowest eval
  std::vector<double> eval_steps, eval_losses;  // every eval, in step order
  // Expert balance over the logged steps in the last kBalanceWindow of the run so far (kNone
  // without MoE layers): loads summed over those steps per layer, then
  double max_violation = kNone;         // max load / mean load - 1 (global MaxVio), mean over layers
  double device_max_violation = kNone;  // the same over device groups' loads
  double dead_experts = kNone;          // experts under kDeadExpertShare of their layer's mean, all layers
  double load_cv = kNone;               // std / mean of the experts' loads (population std), mean over layers
  double dropped_fraction = kNone;      // over the whole run: dropped pairs / selected pairs
  int device_groups = 1;    // equal contiguous groups of the routed experts (balance.device_groups)
  int first_moe_layer = 0;  // model layer index of MoE layer 0
  int n_routed = 0;         // 0 for a dense model

  bool finished() const { return steps > 0 && step >= steps; }
};

// Throws naming the file when it cannot be read. `device_groups` > 0 replaces the run's own
// (balance.device_groups, else its expert-parallel size); it must divide n_routed.
RunMetrics read_run_metrics(const std::string& metrics_path, const std::string& run, int device_groups = 0);

// The last logged step of a metrics.h5 (0 when it has no rows); -1 when it cannot be read.
int64_t read_logged_step(const std::string& metrics_path);

}  // namespace dsmoe
