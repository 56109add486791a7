// Causal softmax over score rows and its backward, one block per row (in place).
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;

// Block b handles row i = b % seq of matrix b / seq; each thread rereads only the entries it wrote.
__global__ void causal_softmax_kernel(float* scores, int seq) {
  float* row = scores + static_cast<int64_t>(blockIdx.x) * seq;
  const int i = static_cast<int>(blockIdx.x % seq);
  float mx = -INFINITY;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_max(mx);
  double sum = 0;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  sum = block_sum(sum);
  const float inv = static_cast<float>(1.0 / sum);
  for (int j = threadIdx.x; j < seq; j += blockDim.x) row[j] = j <= i ? row[j] * inv : 0.0f;
}

__global__ void causal_softmax_backward_kernel(float* dp, const float* p, int seq, float scale) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * seq;
  const int i = static_cast<int>(blockIdx.x % seq);
  double dot = 0;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) dot += static_cast<double>(p[base + j]) * dp[base + j];
  dot = block_sum(dot);
  const float c = static_cast<float>(dot);
  for (int j = threadIdx.x; j < seq; j += blockDim.x)
    dp[base + j] = j <= i ? p[base + j] * (dp[base + j] - c) * scale : 0.0f;
}

}  // namespace

void causal_softmax(float* scores, int bh, int seq, cudaStream_t s) {
  const int64_t rows = static_cast<int64_t>(bh) * seq;
  if (rows <= 0) return;
  causal_softmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(scores, seq);
  CUDA_CHECK(cudaGetLastError());
}

void causal_softmax_backward(float* dp, const float* p, int bh, int seq, float scale, cudaStream_t s) {
  const int64_t rows = static_cast<int64_t>(bh) * seq;
  if (rows <= 0) return;
  causal_softmax_backward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(dp, p, seq, scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
