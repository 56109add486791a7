// Where a sweep's runs go on a machine with GPUs: the least busy GPUs, as many as a run has ranks,
// shared once every GPU has a run, given back when a run ends; and the GPUs a process may use,
// read from CUDA_VISIBLE_DEVICES.
#include "sweep/gpu_slots.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "backend/select.h"

namespace dsmoe {
namespace {

using Gpus = std::vector<std::string>;

TEST(GpuSlots, LeastBusyFirstThenShared) {
  GpuSlots slots({"3", "5"});
  EXPECT_TRUE(slots.any());
  EXPECT_EQ(slots.take(1), Gpus{"3"});
  EXPECT_EQ(slots.take(1), Gpus{"5"});
  EXPECT_EQ(slots.take(1), Gpus{"3"});  // every GPU has a run: the first listed of the least busy
  EXPECT_EQ(slots.runs_on("3"), 2);
  EXPECT_EQ(slots.runs_on("5"), 1);
  slots.give_back({"3"});
  slots.give_back({"3"});
  EXPECT_EQ(slots.take(1), Gpus{"3"});
  EXPECT_EQ(slots.take(2), (Gpus{"3", "5"}));  // two ranks: two distinct GPUs, 3 and 5 both at 1 run
  EXPECT_EQ(slots.runs_on("5"), 2);
  EXPECT_EQ(slots.take(3), Gpus{}) << "more ranks than GPUs: left to the run";
  EXPECT_EQ(slots.runs_on("3"), 2);
}

TEST(GpuSlots, NoGpusNoSlots) {
  GpuSlots slots({});
  EXPECT_FALSE(slots.any());
  EXPECT_EQ(slots.take(1), Gpus{});
  slots.give_back({});
}

TEST(GpuSlots, VisibleGpusAreCudaVisibleDevicesEntries) {
  const char* before = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string saved = before ? before : "";
  setenv("CUDA_VISIBLE_DEVICES", "2, 7,GPU-1a2b", 1);
  EXPECT_EQ(visible_gpus(), (Gpus{"2", "7", "GPU-1a2b"}));
  setenv("CUDA_VISIBLE_DEVICES", "", 1);
  EXPECT_EQ(visible_gpus(), Gpus{});
  unsetenv("CUDA_VISIBLE_DEVICES");  // then every GPU the machine has: none without device nodes
  if (!std::filesystem::exists("/dev/nvidiactl") && !std::filesystem::exists("/dev/nvidia0")) {
    EXPECT_EQ(visible_gpus(), Gpus{});
  }
  if (before) setenv("CUDA_VISIBLE_DEVICES", saved.c_str(), 1);
}

}  // namespace
}  // namespace dsmoe
