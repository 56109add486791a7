// Ends this process when training makes no progress for `timeout_s` seconds: a rank waiting in
// a collective for a partner that stalled, or a rank stalled itself. It prints the rank and what
// it was doing and exits non-zero; the MPI launcher then ends the other ranks. 0 = off.
#pragma once
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace dsmoe {

class Watchdog {
 public:
  explicit Watchdog(double timeout_s);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  // Progress: what the rank starts doing now.
  void beat(const std::string& doing);

 private:
  void watch();

  const double timeout_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  double last_beat_ = 0;
  std::string doing_ = "starting";
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dsmoe
