#include "sweep/runner.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "sweep/gpu_slots.h"
#include "sweep/run_state.h"
#include "train/run_presence.h"
#include "train/stop_signal.h"
#include "util/check.h"
#include "util/format.h"
#include "util/timer.h"

extern char** environ;

namespace dsmoe {
namespace {

volatile std::sig_atomic_t g_signal = 0;      // the last interrupt
volatile std::sig_atomic_t g_interrupts = 0;  // how many arrived

void on_signal(int sig) {
  g_signal = sig;
  g_interrupts = g_interrupts + 1;
}

// Catches SIGINT, SIGTERM and SIGHUP (a closed terminal) while alive.
class SignalCatcher {
 public:
  SignalCatcher() {
    g_signal = 0;
    g_interrupts = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~SignalCatcher() {
    for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &old_[i], nullptr);
  }

 private:
  static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction old_[3] {};
};

std::string log_path(const PlannedRun& run) { return run.cfg.out + "/train.log"; }

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// This process's environment with CUDA_VISIBLE_DEVICES set to `gpus` (unchanged where empty).
std::vector<std::string> environment_for(const std::vector<std::string>& gpus) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (gpus.empty() || std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) env.push_back(*e);
  if (!gpus.empty()) env.push_back("CUDA_VISIBLE_DEVICES=" + join(gpus, ","));
  return env;
}

// Starts `dsmoe train OUT/config.yaml` as a process group of its own, its output appended to
// OUT/train.log, on `gpus` (CUDA_VISIBLE_DEVICES; none: as the sweep's). Returns the pid, or -1
// with `problem` set.
pid_t start_run(const PlannedRun& run, const RunnerOptions& opt, int ranks, const std::vector<std::string>& gpus,
                std::string& problem) {
  std::vector<std::string> args;
  if (ranks > 1) args = {opt.mpiexec, "-n", std::to_string(ranks)};
  for (const std::string& a : {opt.exe, std::string("train"), run_config_path(run.cfg)}) args.push_back(a);
  if (opt.stop_after > 0) args.insert(args.end(), {"--stop-after", std::to_string(opt.stop_after)});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = environment_for(gpus);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path(run).c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // pgroup 0: its own, led by the child
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int err = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
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

// OUT/failed, unless the run recorded its own error there.
void record_failure(const PlannedRun& run, const std::string& why) {
  const std::string path = run.cfg.out + "/failed";
  if (std::filesystem::exists(path)) return;
  std::ofstream f(path);
  f << why << "\n";
}

// Several runs at once share the cores, unless the user said how many threads to use.
void share_cores(int runs_at_once, int ranks) {
  if (runs_at_once <= 1 || std::getenv("OMP_NUM_THREADS")) return;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  setenv("OMP_NUM_THREADS", std::to_string(std::max(1, cores / (runs_at_once * ranks))).c_str(), 1);
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

struct Going {
  const PlannedRun* run;
  double started;
  std::vector<std::string> gpus;  // its GPUs, given back when it ends
};

// Whether a run uses GPUs where the machine has them.
bool uses_gpus(const PlannedRun& run, const GpuSlots& slots) {
  return run.cfg.backend == "cuda" || (run.cfg.backend == "auto" && slots.any());
}

// " on GPU 3" / " on GPUs 0,1", and how many other runs share them; "" without.
std::string gpu_text(const std::vector<std::string>& gpus, const GpuSlots& slots) {
  if (gpus.empty()) return "";
  int others = 0;
  for (const std::string& g : gpus) others = std::max(others, slots.runs_on(g) - 1);
  return cat(" on GPU", gpus.size() > 1 ? "s " : " ", join(gpus, ","),
             others > 0 ? cat(" (shared with ", others, " other run", others > 1 ? "s" : "", ")") : std::string());
}

// The sweep's answer to interrupts: the first asks the runs to checkpoint and stop, a second
// soon after kills them; one later than that is taken as a first again. The time limit acts as a
// first interrupt.
class Interrupts {
 public:
  bool any() const { return g_interrupts > 0 || time_limit_; }
  bool at_once() const { return at_once_; }
  bool time_limit() const { return time_limit_; }

  void reach_time_limit(const std::map<pid_t, Going>& going, double seconds) {
    time_limit_ = true;
    ask_to_stop(going, cat("[time limit] ", seconds, " s: asking ", going.size(),
                           " run(s) to stop after their current step with a checkpoint; starting no more"));
  }

  // Acts on interrupts that arrived since the last call.
  void handle(const std::map<pid_t, Going>& going) {
    while (handled_ < g_interrupts) {
      ++handled_;
      const double now = now_seconds();
      if (asked_at_ >= 0 && now - asked_at_ <= kSecondInterruptSeconds) {
        at_once_ = true;
        say(cat("[interrupt] second interrupt: killing ", going.size(),
                " run(s) at once; their steps since their last checkpoints are lost"));
        for (const auto& [pid, g] : going) kill(-pid, SIGKILL);  // the group: mpiexec and its ranks
        continue;
      }
      ask_to_stop(going, cat("[interrupt] signal ", g_signal, ": asking ", going.size(),
                             " run(s) to stop after their current step with a checkpoint; starting no more (interrupt "
                             "again within ",
                             kSecondInterruptSeconds, " s to stop at once, losing the steps since the last checkpoints)"));
    }
  }

 private:
  // Every run checkpoints after its step and exits; a second interrupt soon after kills them.
  void ask_to_stop(const std::map<pid_t, Going>& going, const std::string& message) {
    asked_at_ = now_seconds();
    say(message);
    for (const auto& [pid, g] : going) kill(pid, SIGTERM);  // mpiexec passes it on to the ranks
  }

  int handled_ = 0;
  double asked_at_ = -1;
  bool at_once_ = false, time_limit_ = false;
};

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
  Interrupts interrupts;
  GpuSlots slots(opt.gpus);
  std::map<pid_t, Going> going;
  const double began = now_seconds();
  while ((!queue.empty() && !interrupts.any()) || !going.empty()) {
    if (opt.time_limit_s > 0 && !interrupts.any() && now_seconds() - began >= opt.time_limit_s)
      interrupts.reach_time_limit(going, opt.time_limit_s);
    while (!queue.empty() && static_cast<int>(going.size()) < at_once && !interrupts.any()) {
      const PlannedRun& run = *queue.front();
      queue.pop_front();
      write_run_config(run.cfg);
      const int64_t from = checkpoint_step(run.cfg);
      const bool restarts = from == 0 && std::filesystem::exists(run.cfg.out + "/metrics.h5");
      std::string problem;
      const std::vector<std::string> gpus = uses_gpus(run, slots) ? slots.take(plan.ranks) : std::vector<std::string>{};
      const pid_t pid = start_run(run, opt, plan.ranks, gpus, problem);
      if (pid < 0) {
        slots.give_back(gpus);
        outcome.failed.push_back(cat(run.name, ": ", problem));
        record_failure(run, problem);
        say(cat("[FAILED] ", run.name, ": ", problem));
        continue;
      }
      going[pid] = {&run, now_seconds(), gpus};
      say(cat("[start] ", run.name, gpu_text(gpus, slots),
              from > 0   ? cat(" (resuming at step ", from, ")")
              : restarts ? " (no checkpoint: starting from step 0; its earlier metrics are replaced)"
                         : "",
              ", log ", log_path(run)));
    }
    interrupts.handle(going);
    if (going.empty()) continue;
    // Polled, so that an interrupt arriving just before the wait is acted on within 50 ms.
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      DSMOE_CHECK(pid == 0 || errno == EINTR, "waitpid: ", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    auto it = going.find(pid);
    if (it == going.end()) continue;  // not one of ours
    const PlannedRun& run = *it->second.run;
    const std::string took = seconds_text(now_seconds() - it->second.started);
    slots.give_back(it->second.gpus);
    going.erase(it);
    clear_stale_presence(run.cfg.out);
    const int64_t step = checkpoint_step(run.cfg);
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (step >= run.cfg.train.steps && (ok || interrupts.any())) {
      mark_finished(run.cfg);
      outcome.finished++;
      say(cat("[done] ", run.name, " in ", took));
    } else if (interrupts.at_once()) {
      outcome.interrupted.push_back(cat(run.name, " killed; resumes from its checkpoint at step ", step));
      say(cat("[killed] ", run.name, " after ", took, "; its last checkpoint is at step ", step));
    } else if (interrupts.any()) {  // mpiexec reports the ranks' requeue code 75 as a failure
      outcome.stopped++;
      outcome.interrupted.push_back(cat(run.name, " at step ", step, " of ", run.cfg.train.steps));
      say(cat("[stopped] ", run.name, " at step ", step, " of ", run.cfg.train.steps, " (checkpoint) after ", took));
    } else if (!ok) {
      outcome.failed.push_back(cat(run.name, ": ", exit_description(status), " (see ", log_path(run), ")"));
      record_failure(run, cat(exit_description(status), " (see ", log_path(run), ")"));
      say(cat("[FAILED] ", run.name, " after ", took, ": ", exit_description(status), "; the end of ", log_path(run),
              ":\n", log_tail(run, 5)));
    } else {
      outcome.stopped++;
      say(cat("[stopped] ", run.name, " at step ", step, " of ", run.cfg.train.steps, " after ", took));
    }
  }
  if (interrupts.any()) {
    outcome.interrupted_by = g_signal;
    outcome.time_limit = interrupts.time_limit();
    outcome.stopped_at_once = interrupts.at_once();
    outcome.not_started = static_cast<int>(queue.size());
  }
  return outcome;
}

}  // namespace dsmoe
