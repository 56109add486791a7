// The test hooks' values (util/test_hooks.h): unset changes nothing, a well-formed value is read,
// a malformed one is an error naming the variable.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "test_util.h"
#include "util/test_hooks.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;

struct Env {
  const char* name;
  Env(const char* n, const char* value) : name(n) { setenv(n, value, 1); }
  ~Env() { unsetenv(name); }
};

TEST(TestHooks, UnsetMatchesNothing) {
  for (const char* v : {"DSMOE_FAIL_AT", "DSMOE_STALL_AT", "DSMOE_NAN_AT", "DSMOE_DISK_FULL"}) unsetenv(v);
  EXPECT_FALSE(test_hooks::fail_at().is(0, 0));
  EXPECT_TRUE(test_hooks::nan_at().empty());
  EXPECT_FALSE(test_hooks::disk_full());
}

TEST(TestHooks, WellFormedValuesAreRead) {
  {
    Env e("DSMOE_FAIL_AT", "1:7");
    EXPECT_TRUE(test_hooks::fail_at().is(1, 7));
    EXPECT_FALSE(test_hooks::fail_at().is(0, 7));
  }
  {
    Env e("DSMOE_STALL_AT", "0:3");
    EXPECT_TRUE(test_hooks::stall_at().is(0, 3));
  }
  {
    Env e("DSMOE_NAN_AT", "2,5,11");
    EXPECT_EQ(test_hooks::nan_at(), (std::vector<int64_t>{2, 5, 11}));
  }
  {
    Env e("DSMOE_DISK_FULL", "metrics.h5:4");
    ASSERT_TRUE(test_hooks::disk_full());
    EXPECT_EQ(test_hooks::disk_full()->file, "metrics.h5");
    EXPECT_EQ(test_hooks::disk_full()->step, 4);
  }
}

TEST(TestHooks, MalformedValuesNameTheVariable) {
  const std::pair<const char*, const char*> bad[] = {{"DSMOE_FAIL_AT", "1"}, {"DSMOE_FAIL_AT", "a:3"},
                                                     {"DSMOE_STALL_AT", "1:"}, {"DSMOE_DISK_FULL", ":3"},
                                                     {"DSMOE_DISK_FULL", "checkpoint.h5:x"}};
  for (const auto& [name, value] : bad) {
    Env e(name, value);
    const std::string err = test::error_of([&] {
      test_hooks::fail_at();
      test_hooks::stall_at();
      test_hooks::disk_full();
    });
    EXPECT_THAT(err, HasSubstr(name)) << value;
  }
  Env e("DSMOE_NAN_AT", "3,,4");
  EXPECT_THAT(test::error_of([] { test_hooks::nan_at(); }), HasSubstr("DSMOE_NAN_AT: expected STEP[,STEP...]"));
}

}  // namespace
}  // namespace dsmoe
