// The watchdog stays quiet while progress is reported (were it to fire, it would end this test
// process); that it ends a stalled job is tested in cli_rank_failure_test.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "train/watchdog.h"

namespace dsmoe {
namespace {

TEST(Watchdog, RegularProgressKeepsItQuiet) {
  Watchdog watchdog(0.5);
  for (int i = 0; i < 15; ++i) {
    watchdog.beat("step " + std::to_string(i));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  SUCCEED();
}

TEST(Watchdog, OffAtZero) {
  Watchdog watchdog(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  SUCCEED();
}

}  // namespace
}  // namespace dsmoe
