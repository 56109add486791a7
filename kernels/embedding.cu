// Embedding lookup and its backward. The backward adds repeated tokens into dtable with no
// atomics, in a fixed order: a block per (token id, 1024 columns, slice of the rows) lists, a
// shared-memory chunk at a time, the rows holding its token (one warp ballot per 32 rows) and sums
// them in row order; a small table (a byte vocabulary) takes several slices, summed in order
// after.
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
// Partial sums of the slices take at most this much scratch, and at most kMaxSlices slices.
constexpr int64_t kPartialBytes = 64 << 20;
constexpr int kMaxSlices = 8;
constexpr int kScanAhead = 8;

// Block (v, column tile, slice z) sums, in row order, the rows of token v among the stripes of 32
// rows z, z + Z, z + 2Z, ... (Z = gridDim.z) into dst's row v: one slice adds to dtable itself
// (the CPU's order exactly); several write partials [Z, vocab, d] for slices_sum_kernel, so that
// a frequent token's rows (the bytes of a text: a few of them take most rows) spread over Z
// multiprocessors instead of one.
__global__ void embedding_backward_kernel(float* dst, const int32_t* tokens, const float* dout, int rows, int d,
                                          int vocab) {
  __shared__ int32_t list[kListRows];
  __shared__ int listed, scanned;
  const int v = blockIdx.x, z = blockIdx.z, Z = gridDim.z, lane = threadIdx.x % 32;
  const int col0 = blockIdx.y * kBackCols + threadIdx.x;  // columns col0 + c * kBackThreads
  float* out = dst + (static_cast<int64_t>(z) * vocab + v) * d;
  float acc[4];
  for (int c = 0; c < 4; ++c) acc[c] = Z == 1 && col0 + c * kBackThreads < d ? out[col0 + c * kBackThreads] : 0.f;
  if (threadIdx.x == 0) scanned = z * 32;
  for (;;) {
    __syncthreads();  // scanned is written only here, by warp 0, and read only after the next barrier
    if (threadIdx.x < 32) {  // warp 0 lists the slice's next rows of token v, up to the list's size
      int n = 0, r = scanned;
      // kScanAhead stripes a round, their tokens loaded before any is tested (the loads' latency
      // once a round, not once a stripe).
      for (; r < rows && n + kScanAhead * 32 <= kListRows; r += kScanAhead * 32 * Z) {
        int32_t token[kScanAhead];
        for (int u = 0; u < kScanAhead; ++u) {
          const int row = r + u * 32 * Z + lane;
          token[u] = row < rows ? tokens[row] : -1;
        }
        for (int u = 0; u < kScanAhead; ++u) {
          const bool hit = token[u] == v;
          const unsigned mask = __ballot_sync(0xffffffffu, hit);
          if (hit) list[n + __popc(mask & ((1u << lane) - 1))] = r + u * 32 * Z + lane;
          n += __popc(mask);
        }
      }
      if (lane == 0) {
        listed = n;
        scanned = r;
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int i = 0; i < listed; ++i) {
      const float* row = dout + static_cast<int64_t>(list[i]) * d;
      for (int c = 0; c < 4; ++c)
        if (col0 + c * kBackThreads < d) acc[c] += row[col0 + c * kBackThreads];
    }
    if (scanned >= rows) break;
  }
  for (int c = 0; c < 4; ++c)
    if (col0 + c * kBackThreads < d) out[col0 + c * kBackThreads] = acc[c];
}

// dtable[i] += the slices' partials[z][i] in slice order.
__global__ void slices_sum_kernel(float* dtable, const float* partials, int slices, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int z = 0; z < slices; ++z) sum += partials[z * n + i];
    dtable[i] += sum;
  }
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
  const int64_t table = static_cast<int64_t>(vocab) * d;
  const int slices = static_cast<int>(
      std::clamp<int64_t>(kPartialBytes / (table * static_cast<int64_t>(sizeof(float))), 1, kMaxSlices));
  float* partials = dtable;
  if (slices > 1) CUDA_CHECK(cudaMallocAsync(&partials, slices * table * sizeof(float), s));
  const dim3 grid(static_cast<unsigned>(vocab), static_cast<unsigned>((d + kBackCols - 1) / kBackCols),
                  static_cast<unsigned>(slices));
  embedding_backward_kernel<<<grid, kBackThreads, 0, s>>>(partials, tokens, dout, rows, d, vocab);
  CUDA_CHECK(cudaGetLastError());
  if (slices == 1) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((table + kThreads - 1) / kThreads, 1 << 16));
  slices_sum_kernel<<<blocks, kThreads, 0, s>>>(dtable, partials, slices, table);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaFreeAsync(partials, s));
}

}  // namespace dsmoe::cuda
