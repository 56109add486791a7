// Embedding lookup and its backward. The backward adds repeated tokens into dtable in row order
// with no atomics: a block per (token id, 1024 columns) lists, a shared-memory chunk at a time,
// the rows holding its token (one warp ballot per 32 rows) and sums them in that order.
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

constexpr int kBackThreads = 256, kBackCols = 4 * kBackThreads, kListRows = 2048;

__global__ void embedding_backward_kernel(float* dtable, const int32_t* tokens, const float* dout, int rows, int d) {
  __shared__ int32_t list[kListRows];
  __shared__ int listed, scanned;
  const int v = blockIdx.x, lane = threadIdx.x % 32;
  const int col0 = blockIdx.y * kBackCols + threadIdx.x * 4;
  float* out = dtable + static_cast<int64_t>(v) * d;
  float acc[4];
  for (int c = 0; c < 4; ++c) acc[c] = col0 + c < d ? out[col0 + c] : 0.f;
  if (threadIdx.x == 0) scanned = 0;
  for (;;) {
    __syncthreads();  // scanned is written only here, by warp 0, and read only after the next barrier
    if (threadIdx.x < 32) {  // warp 0 lists the next rows of token v, up to the list's size
      int n = 0, r = scanned;
      for (; r < rows; r += 32) {
        const bool hit = r + lane < rows && tokens[r + lane] == v;
        const unsigned mask = __ballot_sync(0xffffffffu, hit);
        if (n + __popc(mask) > kListRows) break;
        if (hit) list[n + __popc(mask & ((1u << lane) - 1))] = r + lane;
        n += __popc(mask);
      }
      if (lane == 0) {
        listed = n;
        scanned = r;
      }
    }
    __syncthreads();
    for (int i = 0; i < listed; ++i) {
      const float* row = dout + static_cast<int64_t>(list[i]) * d;
      for (int c = 0; c < 4; ++c)
        if (col0 + c < d) acc[c] += row[col0 + c];
    }
    if (scanned >= rows) break;
  }
  for (int c = 0; c < 4; ++c)
    if (col0 + c < d) out[col0 + c] = acc[c];
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int rows, int d, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(rows) * d;
  if (total <= 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20));
  embedding_forward_kernel<<<blocks, kThreads, 0, s>>>(out, tokens, table, d, total);
  CUDA_CHECK(cudaGetLastError());
}

void embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int rows, int d, int vocab,
                        cudaStream_t s) {
  if (rows <= 0 || d <= 0 || vocab <= 0) return;
  const dim3 grid(static_cast<unsigned>(vocab), static_cast<unsigned>((d + kBackCols - 1) / kBackCols));
  embedding_backward_kernel<<<grid, kBackThreads, 0, s>>>(dtable, tokens, dout, rows, d);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
