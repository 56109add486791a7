// Row gathers and sums used by the MoE dispatch and combine. Rows are read and written V
// elements at a time (kernels/elements.cuh), in whatever storage each operand has.
#include <algorithm>

#include "kernels/cuda_check.cuh"
#include "kernels/elements.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;

// One warp per row; d counts elements.
template <int V, typename O, typename I>
__global__ void gather_rows_kernel(O* out, const I* in, const int32_t* idx, int d, int n) {
  const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= n) return;
  const int32_t src = idx[r];
  O* o = out + static_cast<int64_t>(r) * d;
  const I* s = in + static_cast<int64_t>(src) * d;
  for (int j = threadIdx.x % 32 * V; j < d; j += 32 * V) {
    float x[V] = {};
    if (src >= 0) load(x, s + j);
    store(o + j, x);
  }
}

// One block per output row; rows are added in CSR order.
template <int V, typename E>
__global__ void sum_rows_kernel(float* out, const E* in, const int32_t* offsets, const int32_t* idx, int d,
                                bool accumulate) {
  const int64_t o = blockIdx.x;
  const int32_t lo = offsets[o], hi = offsets[o + 1];
  float* dst = out + o * d;
  for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
    float acc[V] = {};
    if (accumulate) load(acc, dst + j);
    for (int32_t i = lo; i < hi; ++i) {
      float x[V];
      load(x, in + static_cast<int64_t>(idx[i]) * d + j);
      for (int v = 0; v < V; ++v) acc[v] += x[v];
    }
    store(dst + j, acc);
  }
}

// One block per token row r: out[r] += y[idx[p]] over its pairs p in slot order.
template <int V, typename Y>
__global__ void combine_rows_kernel(float* out, const Y* y, const int32_t* idx, int k, int d) {
  const int64_t r = blockIdx.x;
  float* o = out + r * d;
  for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
    float acc[V];
    load(acc, o + j);
    for (int s = 0; s < k; ++s) {
      const int64_t p = r * k + s;
      if (idx[p] < 0) continue;
      float x[V];
      load(x, y + static_cast<int64_t>(idx[p]) * d + j);
      for (int v = 0; v < V; ++v) acc[v] += x[v];
    }
    store(o + j, acc);
  }
}

// One warp per pair p = r*k + s: dy[idx[p]] = dout[r].
template <int V, typename DY>
__global__ void combine_rows_backward_kernel(DY* dy, const float* dout, const int32_t* idx, int k, int d,
                                             int64_t pairs) {
  const int64_t p = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  if (p >= pairs || idx[p] < 0) return;
  const float* g = dout + p / k * d;
  DY* dyp = dy + static_cast<int64_t>(idx[p]) * d;
  for (int j = threadIdx.x % 32 * V; j < d; j += 32 * V) {
    float x[V];
    load(x, g + j);
    store(dyp + j, x);
  }
}

}  // namespace

void gather_rows(Ptr<float> out, Ptr<const float> in, const int32_t* idx, int n, int d, cudaStream_t s) {
  if (n <= 0 || d <= 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads / 32 - 1) / (kThreads / 32));
  const bool vec = vectorizable(d, out, in);
  with_storage(out, [&](auto* o) {
    with_storage(in, [&](auto* i) {
      if (vec)
        gather_rows_kernel<4><<<blocks, kThreads, 0, s>>>(o, i, idx, d, n);
      else
        gather_rows_kernel<1><<<blocks, kThreads, 0, s>>>(o, i, idx, d, n);
    });
  });
  CUDA_CHECK(cudaGetLastError());
}

void sum_rows(float* out, Ptr<const float> in, const int32_t* offsets, const int32_t* idx, int n_out, int d,
              bool accumulate, cudaStream_t s) {
  if (n_out <= 0 || d <= 0) return;
  const bool vec = vectorizable(d, Ptr<float>(out), in);
  with_storage(in, [&](auto* x) {
    if (vec)
      sum_rows_kernel<4><<<n_out, row_threads(d / 4), 0, s>>>(out, x, offsets, idx, d, accumulate);
    else
      sum_rows_kernel<1><<<n_out, row_threads(d), 0, s>>>(out, x, offsets, idx, d, accumulate);
  });
  CUDA_CHECK(cudaGetLastError());
}

void combine_rows(float* out, Ptr<const float> y, const int32_t* idx, int rows, int k, int d, cudaStream_t s) {
  if (rows <= 0 || d <= 0 || k <= 0) return;
  const bool vec = vectorizable(d, Ptr<float>(out), y);
  with_storage(y, [&](auto* yv) {
    if (vec)
      combine_rows_kernel<4><<<rows, row_threads(d / 4), 0, s>>>(out, yv, idx, k, d);
    else
      combine_rows_kernel<1><<<rows, row_threads(d), 0, s>>>(out, yv, idx, k, d);
  });
  CUDA_CHECK(cudaGetLastError());
}

void combine_rows_backward(Ptr<float> dy, const float* dout, const int32_t* idx, int rows, int k, int d,
                           cudaStream_t s) {
  const int64_t pairs = static_cast<int64_t>(rows) * k;
  if (pairs <= 0 || d <= 0) return;
  const unsigned blocks = static_cast<unsigned>((pairs + kThreads / 32 - 1) / (kThreads / 32));
  const bool vec = vectorizable(d, dy, Ptr<const float>(dout));
  with_storage(dy, [&](auto* dyv) {
    if (vec)
      combine_rows_backward_kernel<4><<<blocks, kThreads, 0, s>>>(dyv, dout, idx, k, d, pairs);
    else
      combine_rows_backward_kernel<1><<<blocks, kThreads, 0, s>>>(dyv, dout, idx, k, d, pairs);
  });
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
