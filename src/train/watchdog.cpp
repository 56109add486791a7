#include "train/watchdog.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "util/log.h"
#include "util/timer.h"

namespace dsmoe {

Watchdog::Watchdog(double timeout_s) : timeout_s_(timeout_s), last_beat_(now_seconds()) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::beat(const std::string& doing) {
  std::lock_guard<std::mutex> lock(mu_);
  last_beat_ = now_seconds();
  doing_ = doing;
}

void Watchdog::watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const double idle = now_seconds() - last_beat_;
    if (idle >= timeout_s_) {
      log_error(cat("no progress for ", static_cast<long>(idle), " s (watchdog ", timeout_s_, " s) while ", doing_,
                    ": a rank stalled or died; ending the job"));
      std::_Exit(1);  // from this thread MPI cannot be called; the launcher ends the other ranks
    }
    cv_.wait_for(lock, std::chrono::duration<double>(std::min(1.0, timeout_s_ - idle)));
  }
}

}  // namespace dsmoe
