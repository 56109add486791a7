// The run table of an experiment: every (variant, seed) run with its resolved config, parameter
// and FLOP counts, and how far its FLOPs per token are from the sweep's target.
#pragma once
#include <string>
#include <vector>

#include "model/flops.h"
#include "sweep/experiment.h"

namespace dsmoe {

struct PlannedRun {
  std::string name;     // folder under the experiment's directory
  std::string variant;  // also the run config's `name`, which is how analysis groups seeds
  Config cfg;           // resolved: seed, out, vocab_size (from the data when it was 0), solved key
  ModelCount count;
  double deviation = 0;  // flops_per_token / target - 1
  int64_t tokens = 0;    // tokens to train: steps * batch_size * seq_len
  std::string solved_key;  // the iso-FLOPs key solved for this run, "" if none
  int64_t solved_value = 0;
};

struct SweepPlan {
  std::string experiment;
  std::string dir;  // <runs root>/<experiment>
  int ranks = 1;    // per run
  double target = 0;        // FLOPs per token the deviations are relative to
  std::string target_from;  // what set it, for the table's header
  bool iso = false;         // iso_flops given: the tolerance applies
  double tolerance = 0;
  std::vector<std::string> variants;  // every variant of the experiment, in file order
  std::string baseline;       // what analysis compares against: the iso-FLOPs reference, else the first
  std::string baseline_from;  // why it is the baseline, for messages
  std::vector<PlannedRun> runs;
};

SweepPlan plan_sweep(const Experiment& exp, const std::string& runs_root);

// Keeps the runs of the variants named in `list` (comma-separated, as --only takes them) and
// drops the others; the target, `variants` and the baseline stay what the whole experiment
// sets. Throws naming a variant the experiment does not have, and the ones it has.
void keep_variants(SweepPlan& plan, const std::string& list);

// "variant: +3.10 %" for each variant of the plan beyond the tolerance, in plan order.
std::vector<std::string> out_of_tolerance(const SweepPlan& plan);

// Throws naming every variant beyond the tolerance (and how to go ahead anyway).
void check_tolerance(const SweepPlan& plan);

}  // namespace dsmoe
