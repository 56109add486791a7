// An experiment as a Slurm job array (`dsmoe submit`): jobs/run.sbatch filled in for the runs
// to go, after checking that every run fits the job's shape.
#pragma once
#include <string>
#include <vector>

#include "sweep/plan.h"

namespace dsmoe {

struct SlurmJob {
  std::string partition;
  int ranks_per_run = 1;
  int nodes = 1;
  int gpus_per_node = 0;   // 0: CPU only
  std::string time;        // time limit per run, "" for the partition's default
  int signal_seconds = 120;  // warning (USR1) before the time limit
  std::vector<std::string> extra;  // more sbatch options, each "--name[=value]"
  std::string dsmoe;       // absolute path of the dsmoe executable
};

// Throws naming what does not fit: the job's shape (ranks per node, one GPU per rank), a run's
// config on ranks_per_run ranks (validate_config: experts over ranks and the like), or a path
// or name the script cannot carry (whitespace, quotes).
void check_slurm_job(const SweepPlan& plan, const SlurmJob& job);

// jobs/run.sbatch with its variables filled in; `runs` (of plan) become array tasks 0, 1, ...
// plan.dir must be absolute.
std::string slurm_script(const SweepPlan& plan, const std::vector<const PlannedRun*>& runs, const SlurmJob& job);

// The template itself, built into the executable from jobs/run.sbatch.
const char* run_sbatch_template();

}  // namespace dsmoe
