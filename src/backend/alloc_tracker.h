// Live and peak bytes of a backend's allocations (what `bench` reports as peak memory).
#pragma once
#include <algorithm>
#include <cstddef>
#include <mutex>
#include <unordered_map>

namespace dsmoe {

class AllocTracker {
 public:
  void add(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = bytes;
    live_ += bytes;
    peak_ = std::max(peak_, live_);
  }
  void remove(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    live_ -= it->second;
    sizes_.erase(it);
  }
  size_t peak() const { return peak_; }

 private:
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  size_t live_ = 0, peak_ = 0;
};

}  // namespace dsmoe
