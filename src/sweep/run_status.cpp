#include "sweep/run_status.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "sweep/run_state.h"
#include "util/check.h"
#include "util/command.h"

namespace dsmoe {
namespace {

namespace fs = std::filesystem;

// Slurm array task "<job>_<index>" -> its state word (RUNNING, PENDING, FAILED, ...).
using SlurmStates = std::map<std::string, std::string>;

std::string first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// Lines "<task><separator><state>[ more]" -> task -> state, for the tasks asked about.
void read_states(const std::string& text, char separator, const std::set<std::string>& asked, SlurmStates& states) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const size_t sep = line.find(separator);
    if (sep == std::string::npos) continue;
    const std::string task = line.substr(0, sep);
    std::string state = line.substr(sep + 1);
    state = state.substr(0, state.find(' '));  // "CANCELLED by 0"
    if (asked.count(task) && !states.count(task)) states[task] = state;
  }
}

std::string state_of(const std::string& slurm_state) {
  static const std::set<std::string> running = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT"};
  static const std::set<std::string> failed = {"FAILED",   "CANCELLED", "TIMEOUT",  "NODE_FAIL",
                                               "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"};
  if (running.count(slurm_state)) return "running";
  if (failed.count(slurm_state)) return "failed";
  if (slurm_state == "COMPLETED") return "";  // it ran and stopped (or finished, seen before)
  return "pending";  // PENDING, REQUEUED, SUSPENDED, ...
}

RunStatus folder_status(const fs::path& dir) {
  RunStatus r;
  r.name = dir.filename().string();
  const YAML::Node cfg = YAML::LoadFile((dir / "config.yaml").string());
  r.steps = cfg["train"] && cfg["train"]["steps"] ? cfg["train"]["steps"].as<int64_t>() : 0;
  r.step = checkpoint_step(dir.string());
  r.job = first_line((dir / "slurm_job").string());
  if (fs::exists(dir / "finished") || (r.steps > 0 && r.step >= r.steps)) {
    r.state = "done";
  } else if (fs::exists(dir / "failed")) {
    r.state = "failed";
    r.detail = first_line((dir / "failed").string());
  } else {
    r.state = r.step > 0 || fs::exists(dir / "metrics.h5") ? "stopped" : "pending";
  }
  return r;
}

// The states squeue, then sacct, report for `tasks`; none where neither answers.
SlurmStates query_slurm(const std::vector<std::string>& tasks) {
  SlurmStates states;
  const auto unanswered = [&] {
    std::set<std::string> left;
    for (const std::string& t : tasks)
      if (!states.count(t)) left.insert(t);
    return left;
  };
  const auto list = [](const std::set<std::string>& left) {
    std::string text;
    for (const std::string& t : left) text += (text.empty() ? "" : ",") + t;
    return text;
  };
  std::set<std::string> left = unanswered();
  if (left.empty()) return states;
  const CommandResult q = run_command("squeue -h -r -j '" + list(left) + "' -o '%i %T' 2>/dev/null");
  if (q.exit_code == 0) read_states(q.output, ' ', left, states);
  left = unanswered();
  if (left.empty()) return states;
  const CommandResult a = run_command("sacct -n -X -P -j '" + list(left) + "' -o JobID,State 2>/dev/null");
  if (a.exit_code == 0) read_states(a.output, '|', left, states);
  return states;
}

}  // namespace

std::vector<RunStatus> read_run_status(const std::string& dir) {
  DSMOE_CHECK(fs::is_directory(dir), dir, ": no such folder (give runs/<experiment>)");
  std::vector<RunStatus> runs;
  for (const fs::directory_entry& e : fs::directory_iterator(dir))
    if (e.is_directory() && fs::exists(e.path() / "config.yaml")) runs.push_back(folder_status(e.path()));
  std::sort(runs.begin(), runs.end(), [](const RunStatus& a, const RunStatus& b) { return a.name < b.name; });

  std::vector<std::string> tasks;
  for (const RunStatus& r : runs)
    if (!r.job.empty() && r.state != "done") tasks.push_back(r.job);
  const SlurmStates slurm = query_slurm(tasks);
  for (RunStatus& r : runs) {
    auto it = slurm.find(r.job);
    if (r.state == "done" || it == slurm.end()) continue;
    const std::string state = state_of(it->second);
    if (state.empty()) continue;
    r.state = state;
    r.detail = "Slurm: " + it->second;
  }
  return runs;
}

}  // namespace dsmoe
