// Running a sweep: every unfinished run as a child process `dsmoe train OUT/config.yaml`
// (under mpiexec when a run has several ranks), as many at once as the rank budget allows.
// Interrupted runs resume from their checkpoints; a failed run does not stop the others.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "sweep/plan.h"

namespace dsmoe {

struct RunnerOptions {
  std::string exe;          // the dsmoe executable
  int rank_budget = 1;      // ranks in use at once, over all runs going
  int64_t stop_after = 0;   // > 0: each run started stops after that many steps, resumable
  std::string mpiexec = "mpiexec";
};

struct SweepOutcome {
  int already_finished = 0;  // skipped
  int finished = 0;          // reached train.steps in this sweep
  int stopped = 0;           // stopped early by stop_after
  std::vector<std::string> failed;  // "run: exit code 1 (see OUT/train.log)"
};

// Progress goes to stdout, each run's output to OUT/train.log. SIGINT or SIGTERM stops the
// runs going (they resume next time) and throws.
SweepOutcome run_sweep(const SweepPlan& plan, const RunnerOptions& options);

}  // namespace dsmoe
