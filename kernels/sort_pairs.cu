// The dispatcher's plan on the GPU (routing/sort_pairs.h's chunks and result): one warp per chunk of
// pairs counts and places them, 32 pairs a step, with its counters in shared memory (lanes of a
// step that share an expert take consecutive rows in lane order: the sort stays stable); one
// block turns the counts into each chunk's starting rows, a warp per expert; one thread per token
// lists its rows. (One thread per chunk, the host's loop, took 0.2 ms a layer: latency-bound.)
#include <algorithm>

#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"
#include "routing/sort_pairs.h"

namespace dsmoe::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// Warps of the count and place kernels: up to 8 a block, fewer where their N counters each would
// not fit in 48 KB of shared memory.
int warps_per_block(int n_experts) {
  return std::max(1, std::min(8, static_cast<int>(48 * 1024 / (n_experts * sizeof(int32_t)))));
}

// Lane l's expert among this step's 32 pairs from p0 (-1 past the chunk's end), the lanes before
// it with the same expert, and how many lanes have it.
struct StepPair {
  int32_t expert;
  int before, same;
};
__device__ StepPair step_pair(const int32_t* sel, int64_t p, int64_t end) {
  const int lane = threadIdx.x % 32;
  StepPair s;
  s.expert = p < end ? sel[p] : -1;
  const unsigned same = __match_any_sync(kFull, s.expert);
  s.before = __popc(same & ((1u << lane) - 1));
  s.same = __popc(same);
  return s;
}

// The warp's counters [N] in shared memory, and its chunk (-1: none).
__device__ int warp_chunk(int64_t pairs) {
  const int c = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  return c < sort_chunks(pairs) ? c : -1;
}

__global__ void count_kernel(int32_t* hist, const int32_t* sel, int64_t pairs, int n_experts) {
  extern __shared__ int32_t counters[];
  const int c = warp_chunk(pairs), lane = threadIdx.x % 32;
  if (c < 0) return;
  int32_t* mine = counters + (threadIdx.x / 32) * n_experts;
  for (int e = lane; e < n_experts; e += 32) mine[e] = 0;
  __syncwarp();
  const int64_t end = chunk_end(c, pairs);
  for (int64_t p0 = chunk_begin(c); p0 < end; p0 += 32) {
    const StepPair s = step_pair(sel, p0 + lane, end);
    if (s.expert >= 0 && s.before == 0) mine[s.expert] += s.same;  // one lane per expert
    __syncwarp();
  }
  for (int e = lane; e < n_experts; e += 32) hist[(int64_t)c * n_experts + e] = mine[e];
}

// One block, a warp per expert: each expert's total, their prefix (where its rows start), then
// its column's starts (column_starts' result: chunk c's row = the start + the chunks before it).
__global__ void starts_kernel(int32_t* counts, int32_t* hist, int chunks, int n_experts) {
  extern __shared__ int32_t base[];
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int e = threadIdx.x / 32; e < n_experts; e += warps) {
    int32_t total = 0;
    for (int c = lane; c < chunks; c += 32) total += hist[(int64_t)c * n_experts + e];
    for (int o = 16; o > 0; o /= 2) total += __shfl_xor_sync(kFull, total, o);
    if (lane == 0) base[e] = counts[e] = total;
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int e = 0, start = 0; e < n_experts; ++e) {
      const int32_t n = base[e];
      base[e] = start;
      start += n;
    }
  __syncthreads();
  for (int e = threadIdx.x / 32; e < n_experts; e += warps) {
    int32_t start = base[e];
    for (int c0 = 0; c0 < chunks; c0 += 32) {  // 32 chunks a step: an exclusive scan over lanes
      const int c = c0 + lane;
      const int32_t n = c < chunks ? hist[(int64_t)c * n_experts + e] : 0;
      int32_t incl = n;
      for (int o = 1; o < 32; o *= 2) {
        const int32_t v = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += v;
      }
      if (c < chunks) hist[(int64_t)c * n_experts + e] = start + incl - n;
      start += __shfl_sync(kFull, incl, 31);
    }
  }
}

__global__ void place_kernel(int32_t* pos, int32_t* row_token, const int32_t* hist, const int32_t* sel,
                             int64_t pairs, int k, int n_experts) {
  extern __shared__ int32_t next[];
  const int c = warp_chunk(pairs), lane = threadIdx.x % 32;
  if (c < 0) return;
  int32_t* mine = next + (threadIdx.x / 32) * n_experts;
  for (int e = lane; e < n_experts; e += 32) mine[e] = hist[(int64_t)c * n_experts + e];
  __syncwarp();
  const int64_t end = chunk_end(c, pairs);
  for (int64_t p0 = chunk_begin(c); p0 < end; p0 += 32) {
    const int64_t p = p0 + lane;
    const StepPair s = step_pair(sel, p, end);
    const int32_t r = s.expert >= 0 ? mine[s.expert] + s.before : 0;
    __syncwarp();
    if (s.expert >= 0) {
      if (s.before == 0) mine[s.expert] += s.same;
      pos[p] = r;
      row_token[r] = static_cast<int32_t>(p / k);
    }
    __syncwarp();
  }
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
  const int warps = warps_per_block(n_experts), chunks = sort_chunks(pairs);
  const int blocks = (chunks + warps - 1) / warps;
  const size_t counters = (size_t)warps * n_experts * sizeof(int32_t);
  DSMOE_CHECK(counters <= 48 * 1024, "sort_pairs: ", n_experts, " experts need more shared memory than a block has");
  count_kernel<<<blocks, warps * 32, counters, s>>>(hist, sel, pairs, n_experts);
  CUDA_CHECK(cudaGetLastError());
  starts_kernel<<<1, 1024, n_experts * sizeof(int32_t), s>>>(counts, hist, chunks, n_experts);
  CUDA_CHECK(cudaGetLastError());
  place_kernel<<<blocks, warps * 32, counters, s>>>(pos, row_token, hist, sel, pairs, k, n_experts);
  CUDA_CHECK(cudaGetLastError());
  token_rows_kernel<<<(tokens + 127) / 128, 128, 0, s>>>(token_rows, pos, tokens, k);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
