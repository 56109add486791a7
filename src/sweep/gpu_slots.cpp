#include "sweep/gpu_slots.h"

#include <algorithm>

#include "util/check.h"

namespace dsmoe {

GpuSlots::GpuSlots(std::vector<std::string> gpus) : gpus_(std::move(gpus)), runs_(gpus_.size(), 0) {}

std::vector<std::string> GpuSlots::take(int ranks) {
  std::vector<std::string> out;
  if (ranks > static_cast<int>(gpus_.size())) return out;
  std::vector<char> taken(gpus_.size(), 0);
  for (int r = 0; r < ranks; ++r) {
    size_t best = gpus_.size();
    for (size_t g = 0; g < gpus_.size(); ++g)
      if (!taken[g] && (best == gpus_.size() || runs_[g] < runs_[best])) best = g;
    taken[best] = 1;
    ++runs_[best];
    out.push_back(gpus_[best]);
  }
  return out;
}

void GpuSlots::give_back(const std::vector<std::string>& gpus) {
  for (const std::string& gpu : gpus) {
    const auto it = std::find(gpus_.begin(), gpus_.end(), gpu);
    DSMOE_ASSERT(it != gpus_.end() && runs_[it - gpus_.begin()] > 0);
    --runs_[it - gpus_.begin()];
  }
}

int GpuSlots::runs_on(const std::string& gpu) const {
  const auto it = std::find(gpus_.begin(), gpus_.end(), gpu);
  return it == gpus_.end() ? 0 : runs_[it - gpus_.begin()];
}

}  // namespace dsmoe
