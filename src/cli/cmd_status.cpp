#include <cstdio>
#include <map>

#include "cli/args.h"
#include "cli/commands.h"
#include "sweep/experiment_dir.h"
#include "sweep/run_status.h"

namespace dsmoe {
namespace {

const char* kUsage =
    "usage: dsmoe status RUNS/EXPERIMENT\n"
    "Where each run of an experiment stands, one line each: every run its sweep.yaml names\n"
    "(written by dsmoe sweep and dsmoe submit), then any other run folder found. States:\n"
    "  done         its checkpoint reached train.steps\n"
    "  running      a dsmoe train is training it (locally: OUT/running and its pid; in Slurm:\n"
    "               squeue), with the last logged step and how long ago metrics.h5 was written\n"
    "  pending      Slurm holds it (waiting, requeued, suspended)\n"
    "  failed       its last attempt ended in an error (OUT/failed), with the log's last line\n"
    "  stopped      checkpointed before the end (a sweep or submit resumes it), or step 0 when\n"
    "               it wrote metrics but no checkpoint\n"
    "  not started  nothing trained in its folder yet\n"
    "Reads the run folders, and squeue and sacct where they answer (docs/slurm.md).\n";

int run(const Args& args) {
  const ExperimentStatus status = read_run_status(experiment_dir(args.positional()[0], "status"));
  std::map<std::string, int> count;
  for (const RunStatus& r : status.runs) count[r.state]++;
  std::printf("%s: %zu runs: %d done, %d running, %d pending, %d failed, %d stopped, %d not started\n",
              status.dir.c_str(), status.runs.size(), count["done"], count["running"], count["pending"],
              count["failed"], count["stopped"], count["not started"]);
  if (!status.has_manifest)
    std::printf("(no sweep.yaml: these are the run folders found; runs not started yet are not known)\n");
  for (const RunStatus& r : status.runs) {
    char step[48];
    std::snprintf(step, sizeof step, "step %ld/%ld", (long)r.step, (long)r.steps);
    std::printf("  %-24s %-11s %-16s %-12s %s%s\n", r.name.c_str(), r.state.c_str(), step, r.job.c_str(),
                r.detail.c_str(), r.in_experiment ? "" : " [not in the experiment's sweep.yaml]");
  }
  return 0;
}

}  // namespace

const Command kStatusCommand = {"status",
                                "RUNS/EXPERIMENT",
                                "where each run stands (done, running, stopped, ...)",
                                kUsage,
                                {},
                                {},
                                one_input_no_set,
                                run,
                                false};

}  // namespace dsmoe
