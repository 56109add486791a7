// Fused causal attention, FlashAttention-2 style (no [T, T] matrix in global memory).
//
// Forward: one CTA per (sequence, head, query block); online softmax over the key blocks up to the
// diagonal; saves one log-sum-exp per query. Backward: delta = rowsum(dO * O); one CTA per key
// block accumulates dK, dV over the query blocks from the diagonal on, and one CTA per query block
// accumulates dQ over the key blocks up to the diagonal (scores recomputed: no atomics, so the
// result is deterministic). Grids are (B*H, blocks), the heaviest blocks first.
// The work goes to one file per precision: flash_attention_bf16.cu (tensor cores),
// flash_attention_fp32.cu (CUDA cores), sharing flash_attention_parts.cuh.
// Head dims are zero-padded to HD in {16, 32, 64, 128}. Softmax runs in base 2 (sl2 = scale*log2 e).
#include "kernels/flash_attention.cuh"

#include <cmath>

#include "kernels/flash_attention_parts.cuh"
#include "util/check.h"

namespace dsmoe::cuda {
namespace {

flash::Geometry geometry(int batch, int seq, int n_heads, int head_dim) {
  DSMOE_CHECK(head_dim >= 1 && head_dim <= kFlashMaxHeadDim, "flash attention: head_dim ", head_dim, " outside 1..",
              kFlashMaxHeadDim);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  return {batch, seq, n_heads, head_dim, static_cast<float>(scale / std::log(2.0)), static_cast<float>(scale)};
}

}  // namespace

void flash_attention_forward(Ptr<float> out, float* lse, Ptr<const float> qkv, int batch, int seq, int n_heads,
                             int head_dim, bool bf16, cudaStream_t s) {
  if ((int64_t)batch * seq * n_heads == 0) return;
  DSMOE_CHECK(out.is_bf16() == qkv.is_bf16(), "flash attention: qkv and out stored differently");
  const flash::Geometry g = geometry(batch, seq, n_heads, head_dim);
  if (bf16)
    flash::forward_bf16(out, lse, qkv, g, s);
  else
    flash::forward_fp32(out.get(), lse, qkv.get(), g, s);
}

void flash_attention_backward(Ptr<float> dqkv, float* delta, const float* dout, Ptr<const float> qkv,
                              Ptr<const float> out, const float* lse, int batch, int seq, int n_heads, int head_dim,
                              bool bf16, cudaStream_t s) {
  if ((int64_t)batch * seq * n_heads == 0) return;
  DSMOE_CHECK(dqkv.is_bf16() == qkv.is_bf16() && out.is_bf16() == qkv.is_bf16(),
              "flash attention: qkv, out and dqkv stored differently");
  const flash::Geometry g = geometry(batch, seq, n_heads, head_dim);
  if (bf16)
    flash::backward_bf16(dqkv, dout, qkv, out, lse, g, s);
  else
    flash::backward_fp32(dqkv.get(), delta, dout, qkv.get(), out.get(), lse, g, s);
}

}  // namespace dsmoe::cuda
