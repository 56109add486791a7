// `dsmoe status`: where each run of an experiment folder stands, from its folder (the finished
// marker, the checkpoint's step, the `failed` and `slurm_job` files jobs/run.sbatch writes) and
// from Slurm (squeue, then sacct) where they answer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsmoe {

struct RunStatus {
  std::string name;
  std::string state;  // done, running, pending (not started, or waiting in Slurm), failed, stopped
  int64_t step = 0;   // of its checkpoint
  int64_t steps = 0;  // train.steps of its config
  std::string job;    // Slurm array task "<job>_<index>" that last ran it, "" if none
  std::string detail;  // why failed, or the Slurm state behind running/pending
};

// Every run folder (a subfolder with config.yaml) of `dir`, by name.
std::vector<RunStatus> read_run_status(const std::string& dir);

}  // namespace dsmoe
