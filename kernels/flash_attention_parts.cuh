// The pieces the flash-attention kernels of both precisions share (kernels/flash_attention.cu
// splits the work: flash_attention_bf16.cu, flash_attention_fp32.cu): the launch geometry, the
// launcher, and each precision's entry points, by head dimension padded to HD.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backend/ptr.h"
#include "kernels/cuda_check.cuh"

namespace dsmoe::cuda::flash {

using bf16_t = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
constexpr unsigned kFull = 0xffffffffu;

struct Geometry {
  int B, T, H, hd;
  float sl2, scale;
  dim3 grid(int rows_per_block) const {
    return dim3(static_cast<unsigned>(B * H), static_cast<unsigned>((T + rows_per_block - 1) / rows_per_block));
  }
};

// kernel<<<grid, threads, smem, s>>>(args...), allowing more than the default 48 KiB of dynamic shared memory.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, int threads, size_t smem, cudaStream_t s, A... args) {
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, threads, smem, s>>>(args...);
  CUDA_CHECK(cudaGetLastError());
}

constexpr int kElementThreads = 256;
inline unsigned element_blocks(int64_t n) {
  return static_cast<unsigned>((n + kElementThreads - 1) / kElementThreads);
}

// f(std::integral_constant<int, HD>{}) for the padded head dimension HD in {16, 32, 64, 128}.
template <typename F>
void with_head_dim(int hd, F&& f) {
  if (hd <= 16) return f(std::integral_constant<int, 16>{});
  if (hd <= 32) return f(std::integral_constant<int, 32>{});
  if (hd <= 64) return f(std::integral_constant<int, 64>{});
  f(std::integral_constant<int, 128>{});
}

// bf16 (flash_attention_bf16.cu): qkv, out and dqkv stored in fp32 or bf16 alike.
void forward_bf16(Ptr<float> out, float* lse, Ptr<const float> qkv, const Geometry& g, cudaStream_t s);
void backward_bf16(Ptr<float> dqkv, const float* dout, Ptr<const float> qkv, Ptr<const float> out, const float* lse,
                   const Geometry& g, cudaStream_t s);
// fp32 (flash_attention_fp32.cu); delta [B, H, T] is scratch.
void forward_fp32(float* out, float* lse, const float* qkv, const Geometry& g, cudaStream_t s);
void backward_fp32(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out, const float* lse,
                   const Geometry& g, cudaStream_t s);

}  // namespace dsmoe::cuda::flash
