// OUT/running while `dsmoe train` trains into OUT (written by rank 0): "<host> <pid> <start,
// seconds since the epoch>". `dsmoe status` reads it to tell a run going from one stopped, and a
// second `dsmoe train` into the same folder on the same host is refused while the first lives.
// A killed run leaves the file behind; its pid, no longer a dsmoe process, says nothing runs.
// OUT/failed holds the error that ended the last attempt (also written by jobs/run.sbatch and
// `dsmoe sweep`); a new attempt removes it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace dsmoe {

struct Presence {
  std::string host;
  int64_t pid = 0;
  int64_t since = 0;  // seconds since the epoch
};

enum class Liveness { alive, gone, elsewhere };  // elsewhere: on another host, not checkable here

// OUT/running as written, or nothing when there is none (or it is unreadable).
std::optional<Presence> read_presence(const std::string& out);
Liveness liveness(const Presence& p);

// Removes OUT/running when the process it names on this host has ended (killed, it could not).
void clear_stale_presence(const std::string& out);

// Holds OUT/running for its lifetime (when `owner`, i.e. rank 0; other ranks hold nothing).
// Throws, naming the pid and host, while another live `dsmoe train` holds the folder.
class RunPresence {
 public:
  RunPresence(const std::string& out, bool owner);
  ~RunPresence();
  RunPresence(const RunPresence&) = delete;
  RunPresence& operator=(const RunPresence&) = delete;

  // Records in OUT/failed why this attempt ended (the error's first line).
  void failed(const std::string& why) const;

 private:
  std::string out_;
  bool owner_;
};

}  // namespace dsmoe
