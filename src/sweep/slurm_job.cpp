#include "sweep/slurm_job.h"

#include <algorithm>
#include <map>
#include <vector>

#include "util/check.h"

namespace dsmoe {
namespace {

// Paths and names go into #SBATCH lines and single-quoted shell words unquoted.
void check_plain(const std::string& what, const std::string& text) {
  DSMOE_CHECK(text.find_first_of(" \t\n'\"\\$`") == std::string::npos, what, " '", text,
              "' has whitespace, quotes, $ or backslashes, which the Slurm script cannot carry");
}

// Seconds of a time limit in one of the forms sbatch --time takes (MM, MM:SS, HH:MM:SS, D-HH,
// D-HH:MM, D-HH:MM:SS, or UNLIMITED / INFINITE: -1); -2 when it is none of them.
int64_t slurm_time_seconds(const std::string& t) {
  if (t == "UNLIMITED" || t == "INFINITE") return -1;
  std::vector<int64_t> parts;
  int64_t days = 0;
  std::string rest = t;
  const size_t dash = t.find('-');
  const auto number = [](const std::string& x, int64_t& out) {
    if (x.empty() || x.size() > 9 || x.find_first_not_of("0123456789") != std::string::npos) return false;
    out = std::stoll(x);
    return true;
  };
  if (dash != std::string::npos) {
    if (!number(t.substr(0, dash), days)) return -2;
    rest = t.substr(dash + 1);
  }
  for (size_t at = 0; at <= rest.size();) {
    const size_t colon = std::min(rest.find(':', at), rest.size());
    int64_t v = 0;
    if (!number(rest.substr(at, colon - at), v)) return -2;
    parts.push_back(v);
    at = colon + 1;
  }
  if (parts.size() > 3) return -2;
  if (dash != std::string::npos) {  // D-HH[:MM[:SS]]
    while (parts.size() < 3) parts.push_back(0);
    return ((days * 24 + parts[0]) * 60 + parts[1]) * 60 + parts[2];
  }
  if (parts.size() == 1) return parts[0] * 60;             // MM
  if (parts.size() == 2) return parts[0] * 60 + parts[1];  // MM:SS
  return (parts[0] * 60 + parts[1]) * 60 + parts[2];       // HH:MM:SS
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
  if (!job.time.empty()) {
    const int64_t limit = slurm_time_seconds(job.time);
    DSMOE_CHECK(limit != -2, "--time ", job.time, ": not a time sbatch takes (minutes, MM:SS, HH:MM:SS, D-HH, ",
                "D-HH:MM, D-HH:MM:SS or UNLIMITED)");
    DSMOE_CHECK(limit == -1 || limit > job.signal_seconds, "--time ", job.time, " (", limit,
                " s) must be longer than --signal-seconds ", job.signal_seconds,
                " (the run is told to checkpoint that long before the limit)");
  }
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
