// `dsmoe status`: where each run of an experiment stands. The runs are those its sweep.yaml
// names (started or not), then any other run folder; each from its folder (the finished
// marker, the checkpoint's step, OUT/running of a `dsmoe train` going, OUT/failed, the
// `slurm_job` file jobs/run.sbatch writes, metrics.h5's last logged step and age) and from
// Slurm (squeue, then sacct) where they answer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsmoe {

struct RunStatus {
  std::string name;
  // done | running | pending (held by Slurm) | failed | stopped (checkpointed before the end,
  // or step 0 without a checkpoint) | not started
  std::string state;
  int64_t step = 0;   // running: the last logged step; otherwise its checkpoint's
  int64_t steps = 0;  // train.steps of its config
  std::string job;    // Slurm array task "<job>_<index>" that last ran it, "" if none
  std::string detail;  // where it runs, why it failed, what Slurm says
  bool in_experiment = true;  // named by sweep.yaml (always true without one)
};

struct ExperimentStatus {
  std::string dir;
  bool has_manifest = false;
  std::vector<RunStatus> runs;
};

// `dir`: an experiment folder (see experiment_dir()).
ExperimentStatus read_run_status(const std::string& dir);

}  // namespace dsmoe
