#include "util/isolated.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "util/check.h"
#include "util/timer.h"

extern char** environ;

namespace dsmoe {
namespace {

constexpr const char* kSelf = "/proc/self/exe";
constexpr const char* kTaskFlag = "--dsmoe-isolated-task=";  // argv[1] of a child; argv[2]: its parent
constexpr int kThrew = 1;  // the child's exit status when the task threw; the message came first

// This process's arguments, argv[0] included (/proc/self/cmdline: each ends with a NUL).
std::vector<std::string> own_arguments() {
  std::string all;
  const int fd = ::open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) all.append(buf, static_cast<size_t>(n));
  ::close(fd);
  std::vector<std::string> args;
  for (size_t at = 0; at < all.size();) {
    const size_t end = std::min(all.find('\0', at), all.size());
    args.push_back(all.substr(at, end - at));
    at = end + 1;
  }
  return args;
}

void write_all(int fd, const std::string& s) {
  for (size_t done = 0; done < s.size();) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

[[noreturn]] void run_child(pid_t parent, const std::vector<std::string>& args,
                            const std::function<void(const std::vector<std::string>&)>& do_task) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);          // a child that hangs must not outlive its parent,
  if (::getppid() != parent) ::_exit(kThrew);  // which may have died before the line above
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  // A sanitizer's crash handlers would report a crash of the task as a bug of the program; it
  // is the parent's to report.
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, SIG_DFL);
  std::string message;
  try {
    do_task(args);
    ::_exit(0);
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    message = "an exception that is not a std::exception";
  }
  write_all(STDOUT_FILENO, message);
  ::_exit(kThrew);
}

// Appends what arrives on fd to `out` until the writer closes it (the child exited); false when
// `deadline` (now_seconds) passed first or reading failed.
bool read_until_closed(int fd, double deadline, std::string& out) {
  char buf[4096];
  for (;;) {
    const double left = deadline - now_seconds();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::ceil(std::min(left, 3600.0) * 1000)));
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0 && errno != EINTR) return false;
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
}

// Starts the child: this program, with fd 1 on `out` and no standard input, in a process group
// of its own (a Ctrl-C meant for us is not its to die of). Its pid, or an errno.
pid_t spawn_self(const std::vector<std::string>& args, int out, int& error) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&files, out, STDOUT_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  error = posix_spawn(&pid, kSelf, &files, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&files);
  return error == 0 ? pid : -1;
}

int reap(pid_t pid) {
  int status = 0;
  pid_t got;
  while ((got = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  DSMOE_CHECK(got == pid, "cannot wait for a child process: ", std::strerror(errno));
  return status;
}

}  // namespace

void run_isolated(const std::string& what, double timeout_s, const std::string& task,
                  const std::vector<std::string>& args) {
  std::vector<std::string> argv{kSelf, kTaskFlag + task, std::to_string(::getpid())};
  argv.insert(argv.end(), args.begin(), args.end());
  int out[2];
  DSMOE_CHECK(::pipe2(out, O_CLOEXEC) == 0, "cannot create a pipe: ", std::strerror(errno));
  int error = 0;
  const pid_t pid = spawn_self(argv, out[1], error);
  ::close(out[1]);
  std::string message;
  const bool finished = pid > 0 && read_until_closed(out[0], now_seconds() + timeout_s, message);
  ::close(out[0]);
  DSMOE_CHECK(pid > 0, "cannot start a child process (", kSelf, "): ", std::strerror(error));
  if (!finished) ::kill(pid, SIGKILL);
  const int status = reap(pid);
  if (!finished) throw Error(cat(what, " did not finish within ", timeout_s, " s"));
  if (WIFSIGNALED(status)) throw Error(cat(what, " crashed (", strsignal(WTERMSIG(status)), ")"));
  const int code = WEXITSTATUS(status);
  if (code == kThrew && !message.empty()) throw Error(message);
  DSMOE_CHECK(code == 0, what, " failed (exit status ", code, ")");
}

bool serve_isolated(const std::string& task,
                    const std::function<void(const std::vector<std::string>&)>& do_task) {
  const std::vector<std::string> argv = own_arguments();
  if (argv.size() < 3 || argv[1] != kTaskFlag + task) return false;
  run_child(static_cast<pid_t>(std::atol(argv[2].c_str())), {argv.begin() + 3, argv.end()}, do_task);
}

}  // namespace dsmoe
