#include <cstdio>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "sweep/run_state.h"
#include "sweep/summary_output.h"

namespace dsmoe {

int cmd_analyze(int argc, char** argv) {
  Args args(argc, argv, 2, {}, {});
  static const char* kUsage =
      "usage: dsmoe analyze RUNS/EXPERIMENT\n"
      "Reads the metrics.h5 of every run of a sweep (runs still going too) and prints the variants\n"
      "ranked by mean final validation loss over seeds, with spread, tokens, tokens/s and expert\n"
      "balance. Writes the table to EXPERIMENT/summary.csv and EXPERIMENT/summary.h5 (with one row\n"
      "per run); experiments/analysis/plot.py draws it.\n";
  int code = 0;
  if (args.show_usage(args.positional().size() == 1 && args.overrides().empty(), kUsage, &code)) return code;
  const std::string dir = std::filesystem::path(args.positional()[0]).lexically_normal().string();
  const ExperimentRuns found = read_experiment_runs(dir);
  const std::vector<VariantSummary> variants = summarize(found.runs);
  const std::string experiment = std::filesystem::path(dir).filename().string();
  std::printf("%s: %zu runs of %zu variants\n%s", experiment.c_str(), found.runs.size(), variants.size(),
              summary_text(variants).c_str());
  for (const std::string& s : found.skipped) std::printf("skipped %s\n", s.c_str());
  write_file_atomically(dir + "/summary.csv", summary_csv(variants));
  write_summary_h5(dir + "/summary.h5", experiment, variants, found.runs);
  std::printf("wrote %s/summary.csv and %s/summary.h5\n", dir.c_str(), dir.c_str());
  return 0;
}

}  // namespace dsmoe
