// Fault injection for the tests, one environment variable each; without them nothing changes.
// They are test hooks, not options: a run's results never depend on them, and docs/config.md
// (Environment) lists them. A malformed value is an error naming the variable.
//   DSMOE_FAIL_AT=RANK:STEP    that rank throws at that step (a rank failing mid-job)
//   DSMOE_STALL_AT=RANK:STEP   that rank stops making progress at that step (the watchdog's case)
//   DSMOE_NAN_AT=STEP[,STEP]   NaN gradients at those steps (skipped updates)
//   DSMOE_DISK_FULL=FILE:STEP  writes of FILE (checkpoint.h5 or metrics.h5) fail with ENOSPC from
//                              the one after step STEP on (io/disk_full.h)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dsmoe::test_hooks {

struct RankStep {  // where a hook fires; the default matches nothing
  int64_t rank = -1, step = -1;
  bool is(int64_t r, int64_t s) const { return r == rank && s == step; }
};

RankStep fail_at();
RankStep stall_at();
std::vector<int64_t> nan_at();

struct DiskFull {
  std::string file;  // the last component of the path
  int64_t step = 0;
};
std::optional<DiskFull> disk_full();

}  // namespace dsmoe::test_hooks
