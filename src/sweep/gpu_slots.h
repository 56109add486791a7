// Which GPUs the runs of a sweep go to when several run at once on a machine with GPUs: each run
// takes as many GPUs as it has ranks, the least busy ones (ties to the first listed), and gives
// them back when it ends. More runs at once than GPUs share them, one more run a GPU at a time
// (which can raise the total throughput of small models). The runner hands a run its GPUs through
// CUDA_VISIBLE_DEVICES, so its ranks' node-local numbers pick them in order.
#pragma once
#include <string>
#include <vector>

namespace dsmoe {

class GpuSlots {
 public:
  // gpus: as CUDA_VISIBLE_DEVICES names them (backend/select.h, visible_gpus()).
  explicit GpuSlots(std::vector<std::string> gpus);
  bool any() const { return !gpus_.empty(); }
  // The `ranks` least busy GPUs for a run of that many ranks, in the order listed by busyness;
  // empty where there are fewer GPUs than ranks (the run then finds that out itself: backend cuda
  // refuses, auto runs on the CPU).
  std::vector<std::string> take(int ranks);
  void give_back(const std::vector<std::string>& gpus);
  // Runs on that GPU now.
  int runs_on(const std::string& gpu) const;

 private:
  std::vector<std::string> gpus_;
  std::vector<int> runs_;  // per GPU
};

}  // namespace dsmoe
