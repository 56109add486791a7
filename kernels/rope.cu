// Rotary embedding (rotate-half) on the q and k parts of qkv, one thread per rotated pair.
#include <algorithm>

#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;

// total = batch*seq * 2 (q, k) * n_heads * half; the pair index i varies fastest, so accesses coalesce.
__global__ void rope_kernel(float* qkv, const float* cos_sin, int seq, int n_heads, int head_dim, float sign,
                            int64_t total) {
  const int half = head_dim / 2;
  const int64_t d = static_cast<int64_t>(n_heads) * head_dim;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(t % half);
    int64_t rest = t / half;
    const int h = static_cast<int>(rest % n_heads);
    rest /= n_heads;
    const int part = static_cast<int>(rest % 2);
    const int64_t r = rest / 2;
    const int pos = static_cast<int>(r % seq);
    const float co = cos_sin[static_cast<int64_t>(pos) * head_dim + i];
    const float si = sign * cos_sin[static_cast<int64_t>(pos) * head_dim + half + i];
    float* x = qkv + r * 3 * d + part * d + static_cast<int64_t>(h) * head_dim;
    const float a = x[i], b = x[i + half];
    x[i] = a * co - b * si;
    x[i + half] = b * co + a * si;
  }
}

}  // namespace

void rope(float* qkv, const float* cos_sin, int batch, int seq, int n_heads, int head_dim, bool inverse,
          cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(batch) * seq * 2 * n_heads * (head_dim / 2);
  if (total <= 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20));
  rope_kernel<<<blocks, kThreads, 0, s>>>(qkv, cos_sin, seq, n_heads, head_dim, inverse ? -1.0f : 1.0f, total);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
