// Causal attention for a few queries of one sequence over its earlier positions (generation with
// a KV cache; Backend::attention_queries). A block per (query, head): its warps take the keys in
// turn, each keeping a running maximum, sum and output row (online softmax, fp32), which the block
// then merges; a lane holds head dims lane, lane + 32, ... So the sequence's length needs no
// shared memory, and nothing is kept for a backward.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_check.cuh"
#include "kernels/elements.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kDimsPerLane = kFlashMaxHeadDim / 32;

// qkv [first + gridDim.x, 3d] by position, out [gridDim.x, d]; query blockIdx.x is at position
// first + blockIdx.x, head blockIdx.y.
template <typename E>
__global__ void attention_queries_kernel(E* out, const E* qkv, int first, int n_heads, int head_dim, float scale) {
  const int pos = first + blockIdx.x, h = blockIdx.y, d = n_heads * head_dim, ld = 3 * d;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const E* head = qkv + h * head_dim;  // position 0's q columns of head h; k and v follow at +d, +2d
  float q[kDimsPerLane], acc[kDimsPerLane];
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int c = lane + 32 * i;
    float x[1] = {0.0f};
    if (c < head_dim) load<1>(x, head + static_cast<int64_t>(pos) * ld + c);
    q[i] = x[0];
    acc[i] = 0.0f;
  }
  float mx = -INFINITY, sum = 0.0f;
  for (int j = warp; j <= pos; j += kWarps) {
    const E* k = head + static_cast<int64_t>(j) * ld + d;
    float s = 0.0f;
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int c = lane + 32 * i;
      float x[1] = {0.0f};
      if (c < head_dim) load<1>(x, k + c);
      s += q[i] * x[0];
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    s *= scale;
    const float m = fmaxf(mx, s), correction = expf(mx - m), p = expf(s - m);
    sum = sum * correction + p;
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int c = lane + 32 * i;
      float x[1] = {0.0f};
      if (c < head_dim) load<1>(x, k + d + c);
      acc[i] = acc[i] * correction + p * x[0];
    }
    mx = m;
  }

  // A warp without keys (pos + 1 < kWarps) has max -inf: its weight below is 0.
  __shared__ float warp_max[kWarps], warp_sum[kWarps], warp_acc[kWarps][kFlashMaxHeadDim];
  if (lane == 0) {
    warp_max[warp] = mx;
    warp_sum[warp] = sum;
  }
  for (int i = 0; i < kDimsPerLane; ++i)
    if (lane + 32 * i < head_dim) warp_acc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  if (threadIdx.x >= head_dim) return;
  float m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, warp_max[w]);
  float total = 0.0f, o = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    const float f = expf(warp_max[w] - m);
    total += warp_sum[w] * f;
    o += warp_acc[w][threadIdx.x] * f;
  }
  const float y[1] = {o / total};
  store<1>(out + static_cast<int64_t>(blockIdx.x) * d + h * head_dim + threadIdx.x, y);
}

}  // namespace

void attention_queries(Ptr<float> out, Ptr<const float> qkv, int first, int n, int n_heads, int head_dim,
                       cudaStream_t s) {
  DSMOE_CHECK(head_dim >= 1 && head_dim <= kFlashMaxHeadDim, "attention_queries: head_dim ", head_dim,
              " outside 1..", kFlashMaxHeadDim);
  DSMOE_CHECK(out.is_bf16() == qkv.is_bf16(), "attention_queries: qkv and out stored differently");
  if (n <= 0) return;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  with_storage(out, [&](auto* o) {  // qkv is stored as out is
    using E = std::remove_pointer_t<decltype(o)>;
    attention_queries_kernel<<<dim3(n, n_heads), 32 * kWarps, 0, s>>>(o, static_cast<const E*>(qkv.raw()), first,
                                                                       n_heads, head_dim, scale);
  });
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
