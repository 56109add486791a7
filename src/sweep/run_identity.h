// A run folder belongs to the run whose resolved config it holds. Before a sweep or a
// submission starts anything, every planned run's folder is compared with the config it was
// trained under (its checkpoint's, else its config.yaml's when it has metrics): any difference
// but those that cannot change results refuses the whole sweep, naming each run and key.
// Extending (or shortening) train.steps is allowed and announced with the schedule change it
// causes: the schedule is recomputed for the new length from the step the run resumes at.
#pragma once
#include <string>
#include <vector>

#include "sweep/plan.h"

namespace dsmoe {

// "key: a -> b" for every config key that differs, in key order.
std::vector<std::string> config_differences(const Config& a, const Config& b);

// Keys a resumed run may change without changing its results: its name and folder path, the
// logging and checkpoint cadence.
bool result_neutral_key(const std::string& key);

// Throws naming every run whose folder holds a run of another config, and how to proceed.
// Returns one note per run whose train.steps changed since its checkpoint.
std::vector<std::string> check_run_folders(const SweepPlan& plan);

}  // namespace dsmoe
