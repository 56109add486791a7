#include "sweep/runner.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <deque>
#include <map>
#include <thread>

#include "sweep/run_state.h"
#include "util/check.h"
#include "util/timer.h"

extern char** environ;

namespace dsmoe {
namespace {

volatile std::sig_atomic_t g_signal = 0;

void on_signal(int sig) { g_signal = sig; }

// Catches SIGINT and SIGTERM while alive, without SA_RESTART, so that waitpid returns EINTR.
class SignalCatcher {
 public:
  SignalCatcher() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalCatcher() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

std::string log_path(const PlannedRun& run) { return run.cfg.out + "/train.log"; }

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// Starts `dsmoe train OUT/config.yaml`, its output appended to OUT/train.log. Returns the pid, or
// -1 with `problem` set.
pid_t start_run(const PlannedRun& run, const RunnerOptions& opt, int ranks, std::string& problem) {
  std::vector<std::string> args;
  if (ranks > 1) args = {opt.mpiexec, "-n", std::to_string(ranks)};
  for (const std::string& a : {opt.exe, std::string("train"), run_config_path(run.cfg)}) args.push_back(a);
  if (opt.stop_after > 0) args.insert(args.end(), {"--stop-after", std::to_string(opt.stop_after)});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path(run).c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int err = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) problem = cat("cannot start ", args[0], ": ", std::strerror(err));
  return err == 0 ? pid : -1;
}

// The last lines of a run's log, indented, for a failure report.
std::string log_tail(const PlannedRun& run, size_t lines) {
  std::ifstream f(log_path(run), std::ios::binary);
  std::vector<std::string> all;
  for (std::string line; std::getline(f, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += "    " + all[i] + "\n";
  return out;
}

std::string exit_description(int status) {
  if (WIFEXITED(status)) return cat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return cat("killed by signal ", WTERMSIG(status));
  return "ended abnormally";
}

// Several runs at once share the cores, unless the user said how many threads to use.
void share_cores(int runs_at_once, int ranks) {
  if (runs_at_once <= 1 || std::getenv("OMP_NUM_THREADS")) return;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  setenv("OMP_NUM_THREADS", std::to_string(std::max(1, cores / (runs_at_once * ranks))).c_str(), 1);
}

}  // namespace

SweepOutcome run_sweep(const SweepPlan& plan, const RunnerOptions& opt) {
  DSMOE_CHECK(plan.ranks <= opt.rank_budget, plan.experiment, ": each run takes ", plan.ranks,
              " ranks (ranks: in the experiment file), more than the budget --ranks ", opt.rank_budget);
  SweepOutcome outcome;
  std::deque<const PlannedRun*> queue;
  for (const PlannedRun& run : plan.runs) {
    if (run_finished(run.cfg)) {
      outcome.already_finished++;
      continue;
    }
    queue.push_back(&run);
  }
  const int at_once = std::max(1, std::min<int>(opt.rank_budget / plan.ranks, static_cast<int>(queue.size())));
  say(cat("sweep ", plan.experiment, ": ", plan.runs.size(), " runs, ", outcome.already_finished,
          " already finished, ", queue.size(), " to run, ", at_once, " at a time (", plan.ranks, " rank(s) each)"));
  share_cores(at_once, plan.ranks);

  SignalCatcher signals;
  std::map<pid_t, std::pair<const PlannedRun*, double>> going;  // pid -> run, start time
  while (!queue.empty() || !going.empty()) {
    while (!queue.empty() && static_cast<int>(going.size()) < at_once && !g_signal) {
      const PlannedRun& run = *queue.front();
      queue.pop_front();
      write_run_config(run.cfg);
      const int64_t from = checkpoint_step(run.cfg);
      std::string problem;
      const pid_t pid = start_run(run, opt, plan.ranks, problem);
      if (pid < 0) {
        outcome.failed.push_back(cat(run.name, ": ", problem));
        say(cat("[FAILED] ", run.name, ": ", problem));
        continue;
      }
      going[pid] = {&run, now_seconds()};
      say(cat("[start] ", run.name, from > 0 ? cat(" (resuming at step ", from, ")") : "", ", log ", log_path(run)));
    }
    int status = 0;
    const pid_t pid = g_signal || going.empty() ? -1 : waitpid(-1, &status, 0);
    if (g_signal) {
      for (const auto& [child, run] : going) kill(child, SIGTERM);
      for (const auto& [child, run] : going) waitpid(child, nullptr, 0);
      throw Error(cat("interrupted (signal ", g_signal, "); ", going.size(),
                      " run(s) stopped: `dsmoe sweep` again resumes them from their checkpoints"));
    }
    if (going.empty() || (pid < 0 && errno == EINTR)) continue;
    DSMOE_ASSERT(pid > 0);
    auto it = going.find(pid);
    if (it == going.end()) continue;  // not one of ours
    const PlannedRun& run = *it->second.first;
    const double seconds = now_seconds() - it->second.second;
    going.erase(it);
    const int64_t step = checkpoint_step(run.cfg);
    char took[32];
    std::snprintf(took, sizeof took, "%.1f s", seconds);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      outcome.failed.push_back(cat(run.name, ": ", exit_description(status), " (see ", log_path(run), ")"));
      say(cat("[FAILED] ", run.name, " after ", took, ": ", exit_description(status), "; the end of ", log_path(run),
              ":\n", log_tail(run, 5)));
    } else if (step >= run.cfg.train.steps) {
      mark_finished(run.cfg);
      outcome.finished++;
      say(cat("[done] ", run.name, " in ", took));
    } else {
      outcome.stopped++;
      say(cat("[stopped] ", run.name, " at step ", step, " of ", run.cfg.train.steps, " after ", took));
    }
  }
  return outcome;
}

}  // namespace dsmoe
