// The dispatcher's plan on the GPU (moe/sort_pairs.h): one thread per chunk of pairs counts and
// places them with its counters in shared memory, one block turns the counts into each chunk's
// starting rows, one thread per token lists its rows.
#include <algorithm>

#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"
#include "moe/sort_pairs.h"

namespace dsmoe::cuda {
namespace {

// Threads of the count and place kernels: up to 32 a block, fewer where their N counters each
// would not fit in 48 KB of shared memory.
int chunks_per_block(int n_experts) {
  return std::max(1, std::min(32, static_cast<int>(48 * 1024 / (n_experts * sizeof(int32_t)))));
}

__global__ void count_kernel(int32_t* hist, const int32_t* sel, int64_t pairs, int n_experts) {
  extern __shared__ int32_t counters[];
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= sort_chunks(pairs)) return;
  int32_t* mine = counters + threadIdx.x * n_experts;
  for (int e = 0; e < n_experts; ++e) mine[e] = 0;
  count_chunk(sel, nullptr, pairs, c, mine);
  for (int e = 0; e < n_experts; ++e) hist[(int64_t)c * n_experts + e] = mine[e];
}

// One block: each expert's total, their prefix (where its rows start), then its column's starts.
__global__ void starts_kernel(int32_t* counts, int32_t* hist, int chunks, int n_experts) {
  extern __shared__ int32_t base[];
  for (int e = threadIdx.x; e < n_experts; e += blockDim.x) {
    int32_t total = 0;
    for (int c = 0; c < chunks; ++c) total += hist[(int64_t)c * n_experts + e];
    base[e] = counts[e] = total;
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int e = 0, start = 0; e < n_experts; ++e) {
      const int32_t n = base[e];
      base[e] = start;
      start += n;
    }
  __syncthreads();
  for (int e = threadIdx.x; e < n_experts; e += blockDim.x) column_starts(hist, chunks, n_experts, e, base[e]);
}

__global__ void place_kernel(int32_t* pos, int32_t* row_token, const int32_t* hist, const int32_t* sel,
                             int64_t pairs, int k, int n_experts) {
  extern __shared__ int32_t next[];
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= sort_chunks(pairs)) return;
  int32_t* mine = next + threadIdx.x * n_experts;
  for (int e = 0; e < n_experts; ++e) mine[e] = hist[(int64_t)c * n_experts + e];
  place_chunk(sel, nullptr, pairs, c, k, mine, pos, row_token);
}

__global__ void token_rows_kernel(int32_t* rows, const int32_t* pos, int tokens, int k) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < tokens) token_rows(pos, t, k, rows + (int64_t)t * k);
}

}  // namespace

void sort_pairs(int32_t* counts, int32_t* pos, int32_t* row_token, int32_t* token_rows, int32_t* hist,
                const int32_t* sel, int tokens, int k, int n_experts, cudaStream_t s) {
  const int64_t pairs = (int64_t)tokens * k;
  if (pairs <= 0) return;
  const int per_block = chunks_per_block(n_experts), chunks = sort_chunks(pairs);
  const int blocks = (chunks + per_block - 1) / per_block;
  const size_t counters = (size_t)per_block * n_experts * sizeof(int32_t);
  DSMOE_CHECK(counters <= 48 * 1024, "sort_pairs: ", n_experts, " experts need more shared memory than a block has");
  count_kernel<<<blocks, per_block, counters, s>>>(hist, sel, pairs, n_experts);
  CUDA_CHECK(cudaGetLastError());
  starts_kernel<<<1, 1024, n_experts * sizeof(int32_t), s>>>(counts, hist, chunks, n_experts);
  CUDA_CHECK(cudaGetLastError());
  place_kernel<<<blocks, per_block, counters, s>>>(pos, row_token, hist, sel, pairs, k, n_experts);
  CUDA_CHECK(cudaGetLastError());
  token_rows_kernel<<<(tokens + 127) / 128, 128, 0, s>>>(token_rows, pos, tokens, k);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
