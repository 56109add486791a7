#include "train/run_presence.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "util/check.h"
#include "util/host_info.h"

namespace dsmoe {
namespace {

std::string running_path(const std::string& out) { return out + "/running"; }

// Whether pid is a dsmoe process of this host (a reused pid of another program is not).
bool is_live_dsmoe(int64_t pid) {
  if (pid <= 0 || (kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM)) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmdline;
  std::getline(f, cmdline, '\0');  // argv[0]
  return cmdline.find("dsmoe") != std::string::npos;
}

}  // namespace

std::optional<Presence> read_presence(const std::string& out) {
  std::ifstream f(running_path(out));
  Presence p;
  if (!(f >> p.host >> p.pid >> p.since)) return std::nullopt;
  return p;
}

Liveness liveness(const Presence& p) {
  if (p.host != host_name()) return Liveness::elsewhere;
  return is_live_dsmoe(p.pid) ? Liveness::alive : Liveness::gone;
}

void clear_stale_presence(const std::string& out) {
  const std::optional<Presence> p = read_presence(out);
  std::error_code ec;
  if (p && liveness(*p) == Liveness::gone) std::filesystem::remove(running_path(out), ec);
}

RunPresence::RunPresence(const std::string& out, bool owner) : out_(out), owner_(owner) {
  if (!owner_) return;
  if (const std::optional<Presence> other = read_presence(out))
    DSMOE_CHECK(other->pid == getpid() || liveness(*other) != Liveness::alive, out,
                ": another dsmoe train (pid ", other->pid, " on ", other->host,
                ") is training this run; stop it first (kill -TERM ", other->pid, " checkpoints and exits)");
  std::filesystem::create_directories(out);
  const std::string path = running_path(out), tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << host_name() << " " << getpid() << " " << static_cast<int64_t>(std::time(nullptr)) << "\n";
    f.flush();
    DSMOE_CHECK(f.good(), tmp, ": cannot write");
  }
  std::filesystem::rename(tmp, path);
  std::error_code ec;
  std::filesystem::remove(out + "/failed", ec);
}

RunPresence::~RunPresence() {
  if (!owner_) return;
  std::error_code ec;
  std::filesystem::remove(running_path(out_), ec);
}

void RunPresence::failed(const std::string& why) const {
  if (!owner_) return;
  std::ofstream f(out_ + "/failed", std::ios::trunc);
  f << why.substr(0, why.find('\n')) << "\n";
}

}  // namespace dsmoe
