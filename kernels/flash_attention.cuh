// Fused causal attention (FlashAttention-2): the [T, T] scores never reach global memory.
// qkv [B*T, 3d] rows q | k | v, head h in columns h*hd .. h*hd + hd - 1 of each part (d = H*hd);
// out, dout [B*T, d]; lse, delta [B, H, T]. Scale 1/sqrt(hd); query i sees keys j <= i.
// bf16: products on the tensor cores (bf16 inputs, fp32 accumulation and softmax), the operands first
// rounded to bf16 copies in stream-ordered scratch (cudaMallocAsync on s); otherwise fp32.
// head_dim up to kFlashMaxHeadDim. All pointers are device memory. qkv, out and dqkv are stored
// alike, in fp32 or (bf16 path only) in bf16; lse, delta and dout are fp32.
#pragma once
#include <cuda_runtime.h>

#include "backend/ptr.h"

namespace dsmoe::cuda {

constexpr int kFlashMaxHeadDim = 128;

// out = softmax(q k^T * scale) v per (sequence, head); lse = log-sum-exp of each query's scaled scores.
void flash_attention_forward(Ptr<float> out, float* lse, Ptr<const float> qkv, int batch, int seq, int n_heads,
                             int head_dim, bool bf16, cudaStream_t s);
// dqkv [B*T, 3d] is written (all three parts); delta [B, H, T] is scratch (rowsum(dout * out); the bf16
// path keeps its own padded copy and leaves it untouched).
void flash_attention_backward(Ptr<float> dqkv, float* delta, const float* dout, Ptr<const float> qkv,
                              Ptr<const float> out, const float* lse, int batch, int seq, int n_heads, int head_dim,
                              bool bf16, cudaStream_t s);

}  // namespace dsmoe::cuda
