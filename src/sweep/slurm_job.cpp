#include "sweep/slurm_job.h"

#include <map>

#include "util/check.h"

namespace dsmoe {
namespace {

// Paths and names go into #SBATCH lines and single-quoted shell words unquoted.
void check_plain(const std::string& what, const std::string& text) {
  DSMOE_CHECK(text.find_first_of(" \t\n'\"\\$`") == std::string::npos, what, " '", text,
              "' has whitespace, quotes, $ or backslashes, which the Slurm script cannot carry");
}

// Replaces every {{NAME}} of `text` by values.at(NAME).
std::string fill(const std::string& text, const std::map<std::string, std::string>& values) {
  std::string out;
  size_t at = 0;
  for (size_t open; (open = text.find("{{", at)) != std::string::npos;) {
    const size_t close = text.find("}}", open);
    DSMOE_ASSERT(close != std::string::npos);
    out += text.substr(at, open - at) + values.at(text.substr(open + 2, close - open - 2));
    at = close + 2;
  }
  return out + text.substr(at);
}

}  // namespace

void check_slurm_job(const SweepPlan& plan, const SlurmJob& job) {
  DSMOE_CHECK(!job.partition.empty(), "--partition is required");
  check_plain("--partition", job.partition);
  DSMOE_CHECK(job.ranks_per_run >= 1, "--ranks-per-run must be >= 1, got ", job.ranks_per_run);
  DSMOE_CHECK(job.nodes >= 1, "--nodes must be >= 1, got ", job.nodes);
  DSMOE_CHECK(job.ranks_per_run % job.nodes == 0, "--ranks-per-run ", job.ranks_per_run,
              " does not divide evenly over --nodes ", job.nodes);
  DSMOE_CHECK(job.gpus_per_node >= 0, "--gpus-per-node must be >= 0, got ", job.gpus_per_node);
  const int per_node = job.ranks_per_run / job.nodes;
  DSMOE_CHECK(job.gpus_per_node == 0 || per_node <= job.gpus_per_node, per_node,
              " ranks per node need one GPU each but --gpus-per-node is ", job.gpus_per_node);
  DSMOE_CHECK(job.signal_seconds >= 1, "--signal-seconds must be >= 1, got ", job.signal_seconds);
  check_plain("--time", job.time);
  for (const std::string& option : job.extra) {
    DSMOE_CHECK(option.rfind("-", 0) == 0, "extra sbatch option '", option,
                "' does not start with -: write options with values as --name=value");
    check_plain("extra sbatch option", option);
  }
  check_plain("the experiment folder", plan.dir);
  check_plain("the dsmoe executable", job.dsmoe);
  for (const PlannedRun& run : plan.runs) {
    check_plain("run name", run.name);
    try {
      validate_config(run.cfg, job.ranks_per_run);
    } catch (const Error& e) {
      throw Error(cat("run ", run.name, " cannot run on ", job.ranks_per_run, " ranks: ", e.what()));
    }
  }
}

std::string slurm_script(const SweepPlan& plan, const std::vector<const PlannedRun*>& runs, const SlurmJob& job) {
  DSMOE_ASSERT(!runs.empty());
  std::string more, names;
  if (!job.time.empty()) more += "#SBATCH --time=" + job.time + "\n";
  if (job.gpus_per_node > 0) more += cat("#SBATCH --gpus-per-node=", job.gpus_per_node, "\n");
  for (const std::string& option : job.extra) more += "#SBATCH " + option + "\n";
  if (!more.empty()) more.pop_back();  // the template's line ends it
  for (const PlannedRun* run : runs) names += (names.empty() ? "'" : " '") + run->name + "'";
  return fill(run_sbatch_template(), {{"JOB_NAME", "dsmoe-" + plan.experiment},
                                      {"PARTITION", job.partition},
                                      {"ARRAY", cat("0-", runs.size() - 1)},
                                      {"NODES", cat(job.nodes)},
                                      {"RANKS_PER_NODE", cat(job.ranks_per_run / job.nodes)},
                                      {"SIGNAL_SECONDS", cat(job.signal_seconds)},
                                      {"EXPERIMENT_DIR", plan.dir},
                                      {"MORE_SBATCH", more},
                                      {"RUNS", names},
                                      {"DSMOE", job.dsmoe}});
}

}  // namespace dsmoe
