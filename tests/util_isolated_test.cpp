#include "util/isolated.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include "test_util.h"
#include "util/check.h"
#include "util/timer.h"

namespace dsmoe {
namespace {

using test::error_of;

// The children of these tests: this test program started again by run_isolated for "test".
void test_task(const std::vector<std::string>& args) {
  const std::string& what = args.at(0);
  if (what == "throw") throw Error("no tensor " + args.at(1));
  if (what == "crash") std::raise(SIGSEGV);
  if (what == "abort") std::abort();
  if (what == "exit") ::_exit(3);
  if (what == "hang") for (;;) ::pause();
}

[[maybe_unused]] const bool kChild = serve_isolated("test", test_task);

std::string run(const std::vector<std::string>& args, double timeout_s = 30) {
  return error_of([&] { run_isolated("work", timeout_s, "test", args); });
}

TEST(Isolated, ReturnsWhenTheTaskReturned) { EXPECT_EQ(run({"return"}), "(no error)"); }

TEST(Isolated, AnErrorThereIsThrownHereWithItsMessage) {
  EXPECT_EQ(run({"throw", "a b\nc"}), "no tensor a b\nc");  // arguments arrive as they were
}

TEST(Isolated, ACrashThereIsAnErrorHere) {
  EXPECT_EQ(run({"crash"}), "work crashed (Segmentation fault)");
  EXPECT_EQ(run({"abort"}), "work crashed (Aborted)");
  EXPECT_EQ(run({"exit"}), "work failed (exit status 3)");
}

TEST(Isolated, AHangThereIsKilledAtTheTimeout) {
  const double start = now_seconds();
  EXPECT_EQ(run({"hang"}, 0.5), "work did not finish within 0.5 s");
  EXPECT_LT(now_seconds() - start, 5.0);
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);  // killed and reaped: no child left behind
}

}  // namespace
}  // namespace dsmoe
