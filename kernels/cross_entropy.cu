// Softmax cross-entropy, one block per row: losses[r] = lse - x[target], logits <- scale * (softmax - onehot).
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 512;

__global__ void cross_entropy_kernel(float* logits, float* losses, const int32_t* targets, int vocab, float scale) {
  float* x = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, x[j]);
  mx = block_max(mx);
  double sum = 0;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += exp(static_cast<double>(x[j] - mx));
  sum = block_sum(sum);
  const double lse = log(sum) + mx;
  const int t = targets[blockIdx.x];
  if (threadIdx.x == 0) losses[blockIdx.x] = static_cast<float>(lse - x[t]);
  __syncthreads();  // x[t] is read above before it is overwritten below
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    float g = static_cast<float>(exp(x[j] - lse)) * scale;
    if (j == t) g -= scale;
    x[j] = g;
  }
}

}  // namespace

void cross_entropy(float* logits, float* losses, const int32_t* targets, int rows, int vocab, float scale,
                   cudaStream_t s) {
  if (rows <= 0 || vocab <= 0) return;
  cross_entropy_kernel<<<rows, kThreads, 0, s>>>(logits, losses, targets, vocab, scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
