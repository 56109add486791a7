// Many independent bf16 products in one launch (the routed experts' batches): each problem is
// C [m, n] = alpha op(A) op(B) + beta C, row-major as GemmArgs, A and B bf16, C fp32, fp32
// accumulation on the tensor cores (mma.sync m16n8k16). The grid is a flat list of every problem's
// 128 x 128 output tiles; a block finds its problem by binary search over the tiles' prefix sum.
// The descriptors travel in one asynchronous copy from pinned host memory.
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
};

}  // namespace dsmoe::cuda
