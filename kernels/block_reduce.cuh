// Block-wide reductions in a fixed order (deterministic); every thread gets the result.
// blockDim.x must be a multiple of 32.
#pragma once

namespace dsmoe::cuda {

__device__ inline double block_sum(double v) {
  __shared__ double sh[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // sh may still be read by a previous call
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0;
  for (unsigned w = 0; w < blockDim.x / 32; ++w) total += sh[w];
  return total;
}

__device__ inline float block_max(float v) {
  __shared__ float sh[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = sh[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) m = fmaxf(m, sh[w]);
  return m;
}

}  // namespace dsmoe::cuda
