// Many independent bf16 products in one launch (the routed experts' batches): each problem is
// C [m, n] = alpha op(A) op(B) + beta C, row-major as GemmArgs, A and B bf16, C fp32, fp32
// accumulation on the tensor cores: Hopper's wgmma where the library has sm_90a code (fed by
// cp.async, or by TMA in a persistent warp-specialized kernel, chosen per batch), mma.sync m16n8k16
// elsewhere. The tiles are a flat list over every problem's output; a block finds its problem by
// binary search over the tiles' prefix sum. The descriptors (and the TMA kernels' tensor maps)
// travel in one asynchronous copy from pinned host memory. docs/cuda.md "Grouped GEMM".
#pragma once
#include <cuda_runtime.h>

#include <vector>

namespace dsmoe::cuda {

struct GroupedProblem {
  const void* a;  // bf16, op(A) [m, k]: stored [m, lda] (or [k, lda] when transposed)
  const void* b;  // bf16, op(B) [k, n]: stored [k, ldb] (or [n, ldb] when transposed)
  float* c;       // fp32 [m, ldc]
  int m, n, k, lda, ldb, ldc;
  float alpha, beta;
};

// Whether the kernel takes p: it loads 16 bytes (8 elements) at a time, so A and B must be 16-byte
// aligned with leading dimensions a multiple of 8; m, n, k > 0.
bool grouped_gemm_fits(const GroupedProblem& p);

class GroupedGemm {
 public:
  GroupedGemm() = default;
  ~GroupedGemm();
  GroupedGemm(const GroupedGemm&) = delete;
  GroupedGemm& operator=(const GroupedGemm&) = delete;
  // All of ps (each fitting, their outputs disjoint) in one launch on s, op(A) = A^T where
  // trans_a, op(B) = B^T where trans_b.
  void run(const std::vector<GroupedProblem>& ps, bool trans_a, bool trans_b, cudaStream_t s);

 private:
  // A launch's descriptors: problems then the tiles' prefix sum, staged in pinned memory. A slot
  // is reused kSlots launches later, once the event after its launch has passed (the host runs
  // ahead of the GPU, so one slot would make every launch wait for the last).
  struct Slot {
    char* host = nullptr;
    char* dev = nullptr;
    size_t bytes = 0;
    cudaEvent_t done = nullptr;
  };
  static constexpr int kSlots = 64;
  Slot slots_[kSlots];
  int next_ = 0;
  // The kernel, chosen at the first run (-1 before): 0 mma.sync (any GPU), 1-3 a wgmma one (sm_90a
  // code; DSMOE_GROUPED_GEMM_WGMMA), or one chosen per batch (grouped_gemm.cu's kAutoVariant).
  int variant_ = -1;
  int sms_ = 0;  // the device's multiprocessors (the persistent kernels' grid)
};

}  // namespace dsmoe::cuda
