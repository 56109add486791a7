// Running a sweep: every unfinished run as a child process `dsmoe train OUT/config.yaml`
// (under mpiexec when a run has several ranks), as many at once as the rank budget allows, each
// on the least busy GPUs where it uses GPUs.
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
  double time_limit_s = 0;  // > 0: after this many seconds the sweep stops as on a first interrupt
  std::string mpiexec = "mpiexec";
  // The GPUs the runs may use (backend/select.h, visible_gpus()): a run of backend cuda, or auto
  // where there are GPUs, gets its own through CUDA_VISIBLE_DEVICES (sweep/gpu_slots.h).
  std::vector<std::string> gpus;
};

struct SweepOutcome {
  int already_finished = 0;  // skipped
  int finished = 0;          // reached train.steps in this sweep
  int stopped = 0;           // stopped early (stop_after, or an interrupt) with a checkpoint
  std::vector<std::string> failed;  // "run: exit code 1 (see OUT/train.log)"
  int interrupted_by = 0;           // the signal that stopped the sweep, 0 if none
  bool stopped_at_once = false;     // a second interrupt: runs were killed without a checkpoint
  std::vector<std::string> interrupted;  // "run at step k of n" for each run the interrupt stopped
  int not_started = 0;               // runs left in the queue by an interrupt or the time limit
  bool time_limit = false;           // the time limit stopped it (interrupted_by stays 0)
};

// Progress goes to stdout, each run's output to OUT/train.log. The runs are process groups of
// their own, so a terminal's Ctrl-C reaches only the sweep: on SIGINT or SIGTERM the sweep asks
// every run going to stop after its step with a checkpoint (SIGTERM to it; mpiexec passes it
// to the ranks), starts no more, and reports where each stopped; a second SIGINT or SIGTERM
// within kSecondInterruptSeconds kills them at once (their steps since the last checkpoint are
// lost, and the report says so).
SweepOutcome run_sweep(const SweepPlan& plan, const RunnerOptions& options);

}  // namespace dsmoe
