#include <cstdio>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "sweep/run_table.h"
#include "sweep/runner.h"
#include "util/check.h"

namespace dsmoe {

int cmd_sweep(int argc, char** argv) {
  Args args(argc, argv, 2, {"runs-dir", "ranks", "stop-after", "only"}, {"dry-run", "json", "ignore-tolerance"});
  static const char* kUsage =
      "usage: dsmoe sweep EXPERIMENT [--dry-run [--json]] [--runs-dir DIR] [--ranks N]\n"
      "                   [--stop-after N] [--only VARIANT[,VARIANT...]] [--ignore-tolerance]\n"
      "Runs every variant x seed of an experiment file (docs/experiments.md), each as\n"
      "`dsmoe train` with out = DIR/<experiment>/<run> (DIR defaults to runs), skipping\n"
      "finished runs and resuming interrupted ones from their checkpoints.\n"
      "  --dry-run           print the run table (parameters, FLOPs/token and deviation from\n"
      "                      the iso-FLOPs target, tokens) and run nothing; --json: as JSON\n"
      "  --ranks N           rank budget: runs go at once while their ranks fit in N (default 1)\n"
      "  --stop-after N      each run started stops after N steps (resumable), as train's\n"
      "  --only V1,V2        only these variants' runs (the iso-FLOPs target stays the experiment's)\n"
      "  --ignore-tolerance  run even if variants differ in FLOPs by more than the tolerance\n";
  int code = 0;
  if (args.show_usage(args.positional().size() == 1 && args.overrides().empty(), kUsage, &code)) return code;
  SweepPlan plan = plan_sweep(load_experiment(args.positional()[0]), args.get("runs-dir", "runs"));
  if (args.has("only")) keep_variants(plan, args.get("only"));
  if (args.has("dry-run")) {
    std::fputs((args.has("json") ? run_table_json(plan) : run_table_text(plan)).c_str(), stdout);
    std::fflush(stdout);
    if (!args.has("ignore-tolerance")) check_tolerance(plan);
    return 0;
  }
  DSMOE_CHECK(!args.has("json"), "--json goes with --dry-run");
  std::fputs(run_table_text(plan).c_str(), stdout);
  if (!args.has("ignore-tolerance")) check_tolerance(plan);
  RunnerOptions options;
  options.exe = std::filesystem::read_symlink("/proc/self/exe").string();
  options.rank_budget = static_cast<int>(args.get_int("ranks", 1));
  options.stop_after = args.get_int("stop-after", 0);
  DSMOE_CHECK(options.rank_budget >= 1, "--ranks must be >= 1");
  DSMOE_CHECK(options.stop_after >= 0, "--stop-after must be >= 0");
  const SweepOutcome out = run_sweep(plan, options);
  std::printf("sweep %s: %d finished now, %d already finished, %d stopped early, %zu failed\n",
              plan.experiment.c_str(), out.finished, out.already_finished, out.stopped, out.failed.size());
  for (const std::string& f : out.failed) std::printf("  failed: %s\n", f.c_str());
  std::printf("analyze: dsmoe analyze %s\n", plan.dir.c_str());
  return out.failed.empty() ? 0 : 1;
}

}  // namespace dsmoe
