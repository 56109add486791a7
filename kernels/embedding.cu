// Embedding lookup and its backward; the backward gives each thread one column, so repeated
// tokens add into dtable in row order with no atomics.
#include <algorithm>

#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* table, int d,
                                         int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / d, j = i % d;
    out[i] = table[static_cast<int64_t>(tokens[r]) * d + j];
  }
}

__global__ void embedding_backward_kernel(float* dtable, const int32_t* tokens, const float* dout, int rows, int d) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= d) return;
  for (int r = 0; r < rows; ++r)
    dtable[static_cast<int64_t>(tokens[r]) * d + j] += dout[static_cast<int64_t>(r) * d + j];
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int rows, int d, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(rows) * d;
  if (total <= 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20));
  embedding_forward_kernel<<<blocks, kThreads, 0, s>>>(out, tokens, table, d, total);
  CUDA_CHECK(cudaGetLastError());
}

void embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int rows, int d, cudaStream_t s) {
  if (rows <= 0 || d <= 0) return;
  constexpr int kColThreads = 64;  // small blocks spread the few columns over more multiprocessors
  embedding_backward_kernel<<<(d + kColThreads - 1) / kColThreads, kColThreads, 0, s>>>(dtable, tokens, dout,
                                                                                        rows, d);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
