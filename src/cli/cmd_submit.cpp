#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "sweep/manifest.h"
#include "sweep/run_identity.h"
#include "sweep/run_state.h"
#include "sweep/slurm_job.h"
#include "util/check.h"
#include "util/command.h"

namespace dsmoe {
namespace {

// Submits `script` with sbatch; returns the job id.
std::string sbatch(const std::string& script) {
  const CommandResult r = run_command("sbatch --parsable '" + script + "'");
  DSMOE_CHECK(r.exit_code != 127, "sbatch not found: is this a Slurm login node? (--dry-run prints the script)");
  DSMOE_CHECK(r.exit_code == 0, "sbatch ", script, " failed (exit code ", r.exit_code, ")");
  const std::string id = r.output.substr(0, r.output.find_first_of(";\n"));  // "id[;cluster]"
  DSMOE_CHECK(!id.empty(), "sbatch ", script, " printed no job id");
  return id;
}

}  // namespace

namespace {

const char* kUsage =
    "usage: dsmoe submit EXPERIMENT --partition P --ranks-per-run R [--nodes N] [--gpus-per-node G]\n"
    "                    [--time HH:MM:SS] [--signal-seconds S] [--runs-dir DIR] [--dry-run]\n"
    "                    [--only VARIANT[,VARIANT...]] [--ignore-tolerance] [-- SBATCH_OPTION ...]\n"
    "Submits the unfinished runs of an experiment file as one Slurm job array (jobs/run.sbatch,\n"
    "one array task per run, R ranks each over N nodes, one GPU per rank when G > 0). The script\n"
    "is written to DIR/<experiment>/submit.sbatch (DIR defaults to runs). S seconds (default 120)\n"
    "before the time limit, or when preempted, a run checkpoints and is requeued (docs/slurm.md).\n"
    "  --dry-run  print the script; write and submit nothing\n"
    "  --only     only these variants' runs, as for dsmoe sweep\n"
    "  -- ...     more sbatch options, each as --name=value (e.g. -- --overcommit --account=a)\n";

int run(const Args& args) {

  SlurmJob job;
  job.partition = args.get("partition");
  job.ranks_per_run = static_cast<int>(args.get_int("ranks-per-run", 0));
  job.nodes = static_cast<int>(args.get_int("nodes", 1));
  job.gpus_per_node = static_cast<int>(args.get_int("gpus-per-node", 0));
  job.time = args.get("time");
  job.signal_seconds = static_cast<int>(args.get_int("signal-seconds", job.signal_seconds));
  job.extra = args.rest();
  job.dsmoe = std::filesystem::read_symlink("/proc/self/exe").string();
  DSMOE_CHECK(args.has("ranks-per-run"), "--ranks-per-run is required");
  const std::string root = std::filesystem::absolute(args.get("runs-dir", "runs")).lexically_normal().string();
  SweepPlan plan = plan_sweep(load_experiment(args.positional()[0]), root);
  const Manifest manifest = manifest_of(plan, args.positional()[0]);
  if (args.has("only")) keep_variants(plan, args.get("only"));
  if (!args.has("ignore-tolerance")) check_tolerance(plan);
  check_slurm_job(plan, job);
  for (const std::string& note : check_run_folders(plan)) std::fprintf(stderr, "%s\n", note.c_str());

  std::vector<const PlannedRun*> runs;
  for (const PlannedRun& run : plan.runs)
    if (!run_finished(run.cfg) && checkpoint_step(run.cfg) < run.cfg.train.steps) runs.push_back(&run);
  if (runs.empty()) {
    std::printf("%s: all %zu runs are finished; nothing to submit\n", plan.experiment.c_str(), plan.runs.size());
    return 0;
  }
  const std::string script = slurm_script(plan, runs, job);
  if (args.has("dry-run")) {
    std::fputs(script.c_str(), stdout);
    return 0;
  }
  write_manifest(plan.dir, manifest);
  for (const PlannedRun* run : runs) write_run_config(run->cfg);
  const std::string path = plan.dir + "/submit.sbatch";
  write_file_atomically(path, script);
  const std::string id = sbatch(path);
  std::printf("submitted job %s: %zu run(s) of %s as array tasks 0-%zu, %d rank(s) each; script %s\n", id.c_str(),
              runs.size(), plan.experiment.c_str(), runs.size() - 1, job.ranks_per_run, path.c_str());
  for (size_t i = 0; i < runs.size(); ++i)
    std::printf("  %s_%zu  %s/slurm.log\n", id.c_str(), i, runs[i]->cfg.out.c_str());
  std::printf("status: dsmoe status %s\n", plan.dir.c_str());
  return 0;
}

}  // namespace

const Command kSubmitCommand = {
    "submit",
    "EXPERIMENT --partition P ...",
    "the runs as a Slurm job array (sbatch)",
    kUsage,
    {"partition", "ranks-per-run", "nodes", "gpus-per-node", "time", "signal-seconds", "runs-dir", "only"},
    {"dry-run", "ignore-tolerance"},
    one_input_no_set,
    run,
    true};

}  // namespace dsmoe
