// Matrix products of precision: bf16, through cuBLASLt: inputs rounded to bf16, fp32 accumulation
// and output (bf16 output where C is stored in bf16), on the bf16 tensor cores. Operands stored in
// bf16 are read where they lie; the others are rounded once per call, not per tile:
// - the weights into a bf16 copy of the whole parameter buffer, redone lazily after anything
//   writes to the parameters (the optimizer step, a checkpoint load);
// - activations into a workspace: the spans a batch of products reads are merged, so that all
//   the expert blocks of one buffer convert in one pass.
// The problems of a batch (one per expert, each too small to fill the GPU) run on kStreams
// streams side by side, through cuBLASLt with algorithms cached per shape class (the expert row
// counts change every step, and cuBLAS's own choice costs ~35 us of host time per new shape).
// Problems whose outputs meet (a later product adds to what an earlier one wrote) run in batch
// order, on one stream. (A grouped GEMM, one launch per batch with wgmma on sm_90a, trained
// slower than these side-by-side streams and lives in bench/grouped_gemm/.)
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "backend/backend.h"

namespace dsmoe::cuda {

class Bf16Gemm {
 public:
  // be: allocates the copies (so that they count in the peak memory).
  explicit Bf16Gemm(Backend<float>& be);
  ~Bf16Gemm();
  // The parameter buffer (docs/model.md, Implementation notes): products reading it use a bf16 copy.
  void set_weights(const float* w, int64_t n);
  // Called for every write through the backend: one that touches the parameters outdates the copy.
  void written(const void* p, int64_t bytes);
  // Where the copy of parameters [p, p + n) lies, for a writer that updates it along with them;
  // null when they are not all parameters or the copy is outdated anyway.
  void* current_copy_of(const float* p, int64_t n);
  // C = alpha op(A) op(B) + beta C for each (independent) problem, all with m, n, k > 0 (the
  // backend handles the empty ones), on stream s, the problems side by side; their inputs must
  // not be outputs of the batch.
  void run(const std::vector<GemmArgs<float>>& gs, cudaStream_t s);

 private:
  struct Span {
    const float* p;
    int64_t n;
  };
  const void* operand(Ptr<const float> p);  // after stage(): p's bf16 counterpart (itself if stored in bf16)
  void stage(const std::vector<Span>& spans, cudaStream_t s);
  void matmul(const GemmArgs<float>& g, cudaStream_t s, void* workspace);
  // Through cuBLASLt, problem p on stream[p] % kStreams.
  void on_streams(const std::vector<const GemmArgs<float>*>& gs, cudaStream_t s, const std::vector<int>& stream = {});
  static constexpr int kStreams = 4;

  Backend<float>& be_;
  cublasLtHandle_t lt_ = nullptr;
  cublasLtMatmulDesc_t desc_[2][2] = {};  // by (trans_a, trans_b) of the column-major problem
  // (transa, transb, M, N class, K class, lda, ldb, ldc, alignments, C in bf16): the algorithm chosen for it.
  using ShapeClass = std::tuple<int, int, int, int, int, int, int, int, int, int>;
  std::map<ShapeClass, cublasLtMatmulAlgo_t> algos_;
  Buf<uint8_t> lt_work_;  // kStreams slices, allocated with the first product
  cudaStream_t streams_[kStreams] = {};
  cudaEvent_t fork_ = nullptr, joins_[kStreams] = {};
  const float* weights_ = nullptr;
  int64_t n_weights_ = 0;
  bool stale_ = true;
  Buf<uint16_t> mirror_, work_;
  // The merged spans of the current call and where each starts in work_.
  std::vector<Span> segments_;
  std::vector<int64_t> seg_at_;
};

}  // namespace dsmoe::cuda
