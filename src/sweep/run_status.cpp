#include "sweep/run_status.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "sweep/experiment_dir.h"
#include "sweep/manifest.h"
#include "sweep/run_metrics.h"
#include "sweep/run_state.h"
#include "train/run_presence.h"
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

// The last line of a log with something on it.
std::string last_line(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string line, last;
  while (std::getline(f, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last;
}

// "12 s", "5 min", "3.2 h": how long ago `path` was last written.
std::string age_of(const fs::path& path) {
  std::error_code ec;
  const auto written = fs::last_write_time(path, ec);
  if (ec) return "?";
  const double s = std::chrono::duration<double>(fs::file_time_type::clock::now() - written).count();
  char buf[32];
  if (s < 120) std::snprintf(buf, sizeof buf, "%.0f s", std::max(0.0, s));
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%.0f min", s / 60);
  else std::snprintf(buf, sizeof buf, "%.1f h", s / 3600);
  return buf;
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
  if (slurm_state == "COMPLETED") return "";  // it ran and stopped (or finished): the folder says which
  return "pending";  // PENDING, REQUEUED, SUSPENDED, ...
}

int64_t config_steps(const fs::path& dir) {
  try {
    const YAML::Node cfg = YAML::LoadFile((dir / "config.yaml").string());
    return cfg["train"] && cfg["train"]["steps"] ? cfg["train"]["steps"].as<int64_t>() : 0;
  } catch (const YAML::Exception&) {
    return 0;
  }
}

// The run's state from its folder alone (Slurm's answer comes later).
RunStatus folder_status(const fs::path& dir, const std::string& name, int64_t steps) {
  RunStatus r;
  r.name = name;
  r.state = "not started";
  r.steps = steps > 0 ? steps : config_steps(dir);
  if (!fs::is_directory(dir)) return r;
  r.step = checkpoint_step(dir.string());
  r.job = first_line((dir / "slurm_job").string());
  const std::string log = fs::exists(dir / "slurm.log") ? (dir / "slurm.log").string() : (dir / "train.log").string();
  const bool has_metrics = fs::exists(dir / "metrics.h5");
  const std::optional<Presence> presence = read_presence(dir.string());
  const Liveness live = presence ? liveness(*presence) : Liveness::gone;
  if (fs::exists(dir / "finished") || (r.steps > 0 && r.step >= r.steps)) {
    r.state = "done";
  } else if (presence && live != Liveness::gone) {
    r.state = "running";
    const int64_t logged = has_metrics ? read_logged_step((dir / "metrics.h5").string()) : 0;
    r.step = std::max<int64_t>(logged, 0);
    r.detail = cat(live == Liveness::alive ? "pid " : "on " + presence->host + " (not checkable from here), pid ",
                   presence->pid, has_metrics ? cat(", metrics written ", age_of(dir / "metrics.h5"), " ago") : "");
  } else if (fs::exists(dir / "failed")) {
    r.state = "failed";
    r.detail = first_line((dir / "failed").string());
    // A failure recorded by its exit code alone (by the sweep or jobs/run.sbatch): the log says why.
    const std::string last = last_line(log);
    const bool code_only = r.detail.rfind("exit code", 0) == 0 || r.detail.rfind("killed by", 0) == 0;
    if (code_only && !last.empty()) r.detail += " | " + log + ": " + last;
  } else if (r.step > 0) {
    r.state = "stopped";
    r.detail = cat("resumes at step ", r.step);
  } else if (has_metrics) {
    r.state = "stopped";
    r.detail = "no checkpoint: restarts from step 0";
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

ExperimentStatus read_run_status(const std::string& dir) {
  ExperimentStatus out;
  out.dir = dir;
  std::set<std::string> listed;
  if (const std::optional<Manifest> m = read_manifest(dir)) {
    out.has_manifest = true;
    for (const ManifestRun& run : m->runs) {
      out.runs.push_back(folder_status(fs::path(dir) / run.name, run.name, run.steps));
      listed.insert(run.name);
    }
  }
  for (const std::string& name : run_folders(dir))
    if (!listed.count(name)) {
      out.runs.push_back(folder_status(fs::path(dir) / name, name, 0));
      out.runs.back().in_experiment = !out.has_manifest;
    }

  std::vector<std::string> tasks;
  for (const RunStatus& r : out.runs)
    if (!r.job.empty() && r.state != "done") tasks.push_back(r.job);
  const SlurmStates slurm = query_slurm(tasks);
  for (RunStatus& r : out.runs) {
    auto it = slurm.find(r.job);
    if (r.state == "done" || it == slurm.end()) continue;
    const std::string state = state_of(it->second);
    if (state.empty()) continue;
    r.state = state;
    r.detail = "Slurm: " + it->second + (r.detail.empty() ? "" : "; " + r.detail);
  }
  return out;
}

}  // namespace dsmoe
