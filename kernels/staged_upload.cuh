// Uploads that do not make the host wait for the GPU. A copy from pageable host memory waits for
// everything queued before it, which stalls the host at every small upload (the balance bias,
// the dispatcher's index arrays: several a layer); staged through pinned memory and queued, it
// does not. Each upload takes the next of kSlots pinned slots, reused kSlots uploads later once
// its copy has run; an upload larger than a slot is a plain synchronous copy.
#pragma once
#include <cuda_runtime.h>

#include <cstring>

#include "kernels/cuda_check.cuh"

namespace dsmoe::cuda {

class StagedUpload {
 public:
  StagedUpload() = default;
  ~StagedUpload() {
    for (Slot& s : slots_) {
      if (s.host) cudaFreeHost(s.host);
      if (s.done) cudaEventDestroy(s.done);
    }
  }
  StagedUpload(const StagedUpload&) = delete;
  StagedUpload& operator=(const StagedUpload&) = delete;

  // dst (device) = host[0, bytes), in stream order on s; host may change as soon as this returns.
  void copy(void* dst, const void* host, size_t bytes, cudaStream_t s) {
    if (bytes == 0) return;
    if (bytes > kSlotBytes) {
      CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice));
      return;
    }
    Slot& slot = slots_[next_];
    next_ = (next_ + 1) % kSlots;
    if (slot.host == nullptr) {
      CUDA_CHECK(cudaMallocHost(&slot.host, kSlotBytes));
      CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
    } else {
      CUDA_CHECK(cudaEventSynchronize(slot.done));
    }
    std::memcpy(slot.host, host, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, slot.host, bytes, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(slot.done, s));
  }

 private:
  static constexpr int kSlots = 32;
  static constexpr size_t kSlotBytes = size_t(1) << 20;
  struct Slot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  Slot slots_[kSlots];
  int next_ = 0;
};

}  // namespace dsmoe::cuda
