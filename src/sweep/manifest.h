// RUNS/<experiment>/sweep.yaml: the runs an experiment defines, written by `dsmoe sweep` and
// `dsmoe submit` (all of the experiment's runs, also with --only). `dsmoe status` lists every
// run it names, started or not, and `dsmoe analyze` takes from it the variants' order, the
// baseline, and which run folders belong to the experiment.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sweep/plan.h"

namespace dsmoe {

struct ManifestRun {
  std::string name;  // folder under the experiment's directory
  std::string variant;
  uint64_t seed = 0;
  int64_t steps = 0;
};

struct Manifest {
  std::string experiment;
  std::string source;  // the experiment file
  std::string baseline, baseline_from;
  std::vector<std::string> variants;  // in the file's order
  std::vector<ManifestRun> runs;      // in the file's order: variants, then seeds
};

Manifest manifest_of(const SweepPlan& plan, const std::string& source);

std::string manifest_path(const std::string& experiment_dir);

// Written to a temporary name and renamed.
void write_manifest(const std::string& experiment_dir, const Manifest& m);

// Nothing when the folder has no sweep.yaml; throws naming the file when it is damaged.
std::optional<Manifest> read_manifest(const std::string& experiment_dir);

}  // namespace dsmoe
