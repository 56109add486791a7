// Row gathers and sums used by the MoE dispatch and combine.
#include <algorithm>

#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 20));
}

// One warp per row, 16-byte accesses when rows allow it (V = float4, d counted in V).
template <typename V>
__global__ void gather_rows_kernel(V* out, const V* in, const int32_t* idx, int d, int n) {
  const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= n) return;
  const int32_t src = idx[r];
  V* o = out + static_cast<int64_t>(r) * d;
  const V* s = in + static_cast<int64_t>(src) * d;
  for (int j = threadIdx.x % 32; j < d; j += 32) o[j] = src >= 0 ? s[j] : V{};
}

// One block per output row; rows are added in CSR order.
__global__ void sum_rows_kernel(float* out, const float* in, const int32_t* offsets, const int32_t* idx, int d,
                                bool accumulate) {
  const int64_t o = blockIdx.x;
  const int32_t lo = offsets[o], hi = offsets[o + 1];
  float* dst = out + o * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = accumulate ? dst[j] : 0.0f;
    for (int32_t i = lo; i < hi; ++i) acc += in[static_cast<int64_t>(idx[i]) * d + j];
    dst[j] = acc;
  }
}

__global__ void weighted_sum_rows_kernel(float* out, const float* y, const int32_t* idx, const float* w, int k, int d,
                                         int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / d, j = i % d;
    float acc = out[i];
    for (int s = 0; s < k; ++s) {
      const int64_t p = r * k + s;
      const float ws = w[p];
      if (idx[p] < 0 || ws == 0.0f) continue;  // as the CPU backend: a zero weight ignores its row, NaN included
      acc += ws * y[static_cast<int64_t>(idx[p]) * d + j];
    }
    out[i] = acc;
  }
}

// One block per (row, slot) pair p: dy[idx[p]] = w[p] * dout[r], dw[p] = dot(dout[r], y[idx[p]]).
__global__ void weighted_sum_rows_backward_kernel(float* dy, float* dw, const float* dout, const float* y,
                                                  const int32_t* idx, const float* w, int k, int d) {
  const int64_t p = blockIdx.x, r = p / k;
  if (idx[p] < 0) {
    if (threadIdx.x == 0) dw[p] = 0.0f;
    return;
  }
  const float* g = dout + r * d;
  const float* yp = y + static_cast<int64_t>(idx[p]) * d;
  float* dyp = dy + static_cast<int64_t>(idx[p]) * d;
  const float wp = w[p];
  double dot = 0;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    dot += static_cast<double>(g[j]) * yp[j];
    dyp[j] = wp * g[j];
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) dw[p] = static_cast<float>(dot);
}

}  // namespace

void gather_rows(float* out, const float* in, const int32_t* idx, int n, int d, cudaStream_t s) {
  if (n <= 0 || d <= 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads / 32 - 1) / (kThreads / 32));
  const bool vec = d % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0;
  if (vec)
    gather_rows_kernel<<<blocks, kThreads, 0, s>>>(reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(in),
                                                   idx, d / 4, n);
  else
    gather_rows_kernel<<<blocks, kThreads, 0, s>>>(out, in, idx, d, n);
  CUDA_CHECK(cudaGetLastError());
}

void sum_rows(float* out, const float* in, const int32_t* offsets, const int32_t* idx, int n_out, int d,
              bool accumulate, cudaStream_t s) {
  if (n_out <= 0 || d <= 0) return;
  sum_rows_kernel<<<n_out, kThreads, 0, s>>>(out, in, offsets, idx, d, accumulate);
  CUDA_CHECK(cudaGetLastError());
}

void weighted_sum_rows(float* out, const float* y, const int32_t* idx, const float* w, int rows, int k, int d,
                       cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(rows) * d;
  if (total <= 0 || k <= 0) return;
  weighted_sum_rows_kernel<<<grid_for(total), kThreads, 0, s>>>(out, y, idx, w, k, d, total);
  CUDA_CHECK(cudaGetLastError());
}

void weighted_sum_rows_backward(float* dy, float* dw, const float* dout, const float* y, const int32_t* idx,
                                const float* w, int rows, int k, int d, cudaStream_t s) {
  const int64_t pairs = static_cast<int64_t>(rows) * k;
  if (pairs <= 0) return;
  weighted_sum_rows_backward_kernel<<<static_cast<unsigned>(pairs), kThreads, 0, s>>>(dy, dw, dout, y, idx, w, k, d);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
