// fp32 -> bf16 (round to nearest even), the inputs of the bf16 matrix products.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;

// Four elements a thread where both ends are 16-byte aligned; the caller handles the rest.
__global__ void to_bf16_kernel(__nv_bfloat16* out, const float* in, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n4 = n / 4;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride) {
    const float4 v = reinterpret_cast<const float4*>(in)[i];
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    reinterpret_cast<__nv_bfloat162*>(out)[2 * i] = lo;
    reinterpret_cast<__nv_bfloat162*>(out)[2 * i + 1] = hi;
  }
  for (int64_t i = 4 * n4 + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void to_bf16_scalar_kernel(__nv_bfloat16* out, const float* in, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = __float2bfloat16_rn(in[i]);
}

}  // namespace

void to_bf16(void* out, const float* in, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n / 4 + kThreads - 1) / kThreads + 1, 1 << 16));
  auto* o = static_cast<__nv_bfloat16*>(out);
  if (reinterpret_cast<uintptr_t>(in) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0)
    to_bf16_kernel<<<blocks, kThreads, 0, s>>>(o, in, n);
  else
    to_bf16_scalar_kernel<<<blocks, kThreads, 0, s>>>(o, in, n);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
