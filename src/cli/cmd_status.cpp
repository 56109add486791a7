#include <cstdio>
#include <map>

#include "cli/args.h"
#include "cli/commands.h"
#include "sweep/run_status.h"

namespace dsmoe {

int cmd_status(int argc, char** argv) {
  Args args(argc, argv, 2, {}, {});
  static const char* kUsage =
      "usage: dsmoe status RUNS/EXPERIMENT\n"
      "Where each run of an experiment stands: done, running, pending (not started, or waiting\n"
      "in Slurm), failed, or stopped (checkpointed before the end; it resumes when submitted or\n"
      "swept again), with its checkpoint's step and the Slurm array task that last ran it. Reads\n"
      "the run folders, and squeue and sacct where they answer (docs/slurm.md).\n";
  int code = 0;
  if (args.show_usage(args.positional().size() == 1 && args.overrides().empty(), kUsage, &code)) return code;
  const std::string dir = args.positional()[0];
  const std::vector<RunStatus> runs = read_run_status(dir);
  std::map<std::string, int> count;
  for (const RunStatus& r : runs) count[r.state]++;
  std::printf("%s: %zu runs: %d done, %d running, %d pending, %d failed, %d stopped\n", dir.c_str(), runs.size(),
              count["done"], count["running"], count["pending"], count["failed"], count["stopped"]);
  for (const RunStatus& r : runs) {
    char step[48];
    std::snprintf(step, sizeof step, "step %ld/%ld", (long)r.step, (long)r.steps);
    std::printf("  %-24s %-8s %-16s %-12s %s\n", r.name.c_str(), r.state.c_str(), step, r.job.c_str(),
                r.detail.c_str());
  }
  return 0;
}

}  // namespace dsmoe
