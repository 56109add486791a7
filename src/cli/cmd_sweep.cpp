#include <cstdio>
#include <filesystem>

#include "backend/select.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "sweep/manifest.h"
#include "sweep/run_identity.h"
#include "sweep/run_table.h"
#include "sweep/runner.h"
#include "util/check.h"

namespace dsmoe {
namespace {

void print_outcome(const SweepPlan& plan, const std::string& experiment_file, const SweepOutcome& out) {
  std::printf("sweep %s: %d finished now, %d already finished, %d stopped early, %zu failed\n",
              plan.experiment.c_str(), out.finished, out.already_finished, out.stopped, out.failed.size());
  for (const std::string& f : out.failed) std::printf("  failed: %s\n", f.c_str());
  if (out.interrupted_by || out.time_limit) {
    const std::string by = out.interrupted_by ? "interrupted by signal " + std::to_string(out.interrupted_by)
                                              : std::string("stopped by the time limit");
    std::printf("%s%s: %zu run(s) %s, %d not started:\n", by.c_str(),
                !out.stopped_at_once ? "" : out.time_limit ? ", then at once by an interrupt" : ", then at once by a second",
                out.interrupted.size(),
                out.stopped_at_once ? "killed" : "stopped with a checkpoint", out.not_started);
    for (const std::string& r : out.interrupted) std::printf("  %s\n", r.c_str());
    std::printf("`dsmoe sweep %s` resumes them from their checkpoints\n", experiment_file.c_str());
  }
  std::printf("status: dsmoe status %s\nanalyze: dsmoe analyze %s\n", plan.dir.c_str(), plan.dir.c_str());
  std::fflush(stdout);
}

}  // namespace

namespace {

const char* kUsage =
    "usage: dsmoe sweep EXPERIMENT [--dry-run [--json]] [--runs-dir DIR] [--ranks N]\n"
    "                   [--stop-after N] [--time-limit S] [--only VARIANT[,VARIANT...]]\n"
    "                   [--ignore-tolerance]\n"
    "Runs every variant x seed of an experiment file (docs/experiments.md), each as\n"
    "`dsmoe train` with out = DIR/<experiment>/<variant>-s<seed> (DIR defaults to runs),\n"
    "skipping finished runs and resuming interrupted ones from their checkpoints. A run folder\n"
    "that holds a run of another config (another seed, another setting) is refused, never\n"
    "resumed. Ctrl-C stops every run after its step with a checkpoint (a second Ctrl-C within\n"
    "5 s: at once); the next sweep resumes them. Writes DIR/<experiment>/sweep.yaml (the\n"
    "experiment's runs, for dsmoe status and dsmoe analyze).\n"
    "  --dry-run           print the run table (parameters, FLOPs/token and deviation from\n"
    "                      the iso-FLOPs target, tokens) and run nothing; --json: as JSON\n"
    "  --ranks N           rank budget: runs go at once while their ranks fit in N (default 1)\n"
    "  --stop-after N      each run started stops after N steps (resumable), as train's\n"
    "  --time-limit S      after S seconds stop as on a first Ctrl-C and exit 75 (run it again\n"
    "                      to go on); leave time for the runs' checkpoints within a job's limit\n"
    "  --only V1,V2        only these variants' runs (the iso-FLOPs target stays the experiment's)\n"
    "  --ignore-tolerance  run even if variants differ in FLOPs by more than the tolerance\n";

int run(const Args& args) {
  const std::string experiment_file = args.positional()[0];
  SweepPlan plan = plan_sweep(load_experiment(experiment_file), args.get("runs-dir", "runs"));
  const Manifest manifest = manifest_of(plan, experiment_file);
  if (args.has("only")) keep_variants(plan, args.get("only"));
  if (args.has("dry-run")) {
    std::fputs((args.has("json") ? run_table_json(plan) : run_table_text(plan)).c_str(), stdout);
    std::fflush(stdout);
    if (!args.has("ignore-tolerance")) check_tolerance(plan);
    for (const std::string& note : check_run_folders(plan))
      std::fprintf(args.has("json") ? stderr : stdout, "%s\n", note.c_str());
    return 0;
  }
  DSMOE_CHECK(!args.has("json"), "--json goes with --dry-run");
  std::fputs(run_table_text(plan).c_str(), stdout);
  if (!args.has("ignore-tolerance")) check_tolerance(plan);
  RunnerOptions options;
  options.exe = std::filesystem::read_symlink("/proc/self/exe").string();
  options.rank_budget = static_cast<int>(args.get_int("ranks", 1));
  options.stop_after = args.get_int("stop-after", 0);
  options.time_limit_s = args.get_double("time-limit", 0);
  options.gpus = visible_gpus();
  DSMOE_CHECK(options.rank_budget >= 1, "--ranks must be >= 1");
  DSMOE_CHECK(!args.has("time-limit") || options.time_limit_s > 0, "--time-limit must be > 0 seconds");
  DSMOE_CHECK(options.stop_after >= 0, "--stop-after must be >= 0");
  for (const std::string& note : check_run_folders(plan)) std::printf("%s\n", note.c_str());
  write_manifest(plan.dir, manifest);
  const SweepOutcome out = run_sweep(plan, options);
  print_outcome(plan, experiment_file, out);
  if (out.interrupted_by) return 128 + out.interrupted_by;
  if (!out.failed.empty()) return 1;
  return out.time_limit ? 75 : 0;  // 75: stopped to be run again (train's code for a resumable stop)
}

}  // namespace

const Command kSweepCommand = {"sweep",
                               "EXPERIMENT [--dry-run]",
                               "run (or list) the runs of an experiment file",
                               kUsage,
                               {"runs-dir", "ranks", "stop-after", "only", "time-limit"},
                               {"dry-run", "json", "ignore-tolerance"},
                               one_input_no_set,
                               run,
                               false};

}  // namespace dsmoe
