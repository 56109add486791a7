// RMSNorm: one block per row, V elements a thread at a time (kernels/elements.cuh); dw by a
// two-stage column reduction over fixed row chunks. The backward of rows whose 4-element vectors
// fit a block's registers is one pass: a block walks a chunk of rows, each thread keeping its
// columns of w and of the chunk's dw sum in registers, so dout and x are read once.
#include <algorithm>

#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/elements.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxChunks = 64;  // row chunks for dw; fixed per row count, so the sum order is fixed
constexpr int kFusedChunks = 512;  // the one-pass backward's chunks (a block each)

template <int V, typename O>
__global__ void rmsnorm_forward_kernel(O* out, float* rstd, const float* x, const float* w, int d, float eps) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * d;
  double ss = 0;
  for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
    float xv[V];
    load(xv, x + base + j);
    for (int v = 0; v < V; ++v) ss += static_cast<double>(xv[v]) * xv[v];
  }
  ss = block_sum(ss);
  const float s = static_cast<float>(1.0 / sqrt(ss / d + eps));
  if (threadIdx.x == 0) rstd[blockIdx.x] = s;
  for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
    float xv[V], wv[V];
    load(xv, x + base + j);
    load(wv, w + j);
    for (int v = 0; v < V; ++v) xv[v] = xv[v] * s * wv[v];
    store(out + base + j, xv);
  }
}

template <int V>
__global__ void rmsnorm_dx_kernel(float* dx, const float* dout, const float* x, const float* w, const float* rstd,
                                  int d) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * d;
  const float s = rstd[blockIdx.x];
  double dot = 0;  // sum over j of (g*w)_j * xhat_j
  for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
    float g[V], xv[V], wv[V];
    load(g, dout + base + j);
    load(xv, x + base + j);
    load(wv, w + j);
    for (int v = 0; v < V; ++v) dot += static_cast<double>(g[v]) * wv[v] * xv[v] * s;
  }
  dot = block_sum(dot);
  const float c = static_cast<float>(dot / d);
  for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
    float g[V], xv[V], wv[V], o[V];
    load(g, dout + base + j);
    load(xv, x + base + j);
    load(wv, w + j);
    load(o, dx + base + j);
    for (int v = 0; v < V; ++v) o[v] += s * (g[v] * wv[v] - xv[v] * s * c);
    store(dx + base + j, o);
  }
}

// dx += the row's input gradient, partial[c] = sum over the rows of chunk c (block c) of
// dout * x * rstd. Thread t holds the 4-element vectors t, t + blockDim, ... (NV of them).
template <int NV>
__global__ void rmsnorm_backward_one_pass(float* dx, float* partial, const float* dout, const float* x,
                                          const float* w, const float* rstd, int rows, int d) {
  const int c = blockIdx.x, nc = gridDim.x;
  const int lo = static_cast<int>(static_cast<int64_t>(rows) * c / nc);
  const int hi = static_cast<int>(static_cast<int64_t>(rows) * (c + 1) / nc);
  float wv[NV][4], dw[NV][4] = {};
  int col[NV];
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    col[k] = (threadIdx.x + k * blockDim.x) * 4;
    if (col[k] < d) load(wv[k], w + col[k]);
  }
  for (int r = lo; r < hi; ++r) {
    const int64_t base = static_cast<int64_t>(r) * d;
    const float s = rstd[r];
    float g[NV][4], xv[NV][4];
    double dot = 0;  // as rmsnorm_dx_kernel
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      if (col[k] >= d) continue;
      load(g[k], dout + base + col[k]);
      load(xv[k], x + base + col[k]);
#pragma unroll
      for (int v = 0; v < 4; ++v) dot += static_cast<double>(g[k][v]) * wv[k][v] * xv[k][v] * s;
    }
    dot = block_sum(dot);
    const float cr = static_cast<float>(dot / d);
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      if (col[k] >= d) continue;
      float o[4];
      load(o, dx + base + col[k]);
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        o[v] += s * (g[k][v] * wv[k][v] - xv[k][v] * s * cr);
        dw[k][v] += g[k][v] * xv[k][v] * s;
      }
      store(dx + base + col[k], o);
    }
  }
#pragma unroll
  for (int k = 0; k < NV; ++k)
    if (col[k] < d) store(partial + static_cast<int64_t>(c) * d + col[k], dw[k]);
}

// partial[c][j] = sum over rows of chunk c of dout*x*rstd; grid (column blocks, chunks).
__global__ void rmsnorm_dw_partial(float* partial, const float* dout, const float* x, const float* rstd, int rows,
                                   int d) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= d) return;
  const int c = blockIdx.y, nc = gridDim.y;
  const int lo = static_cast<int>(static_cast<int64_t>(rows) * c / nc);
  const int hi = static_cast<int>(static_cast<int64_t>(rows) * (c + 1) / nc);
  float acc = 0;
  for (int r = lo; r < hi; ++r) {
    const int64_t i = static_cast<int64_t>(r) * d + j;
    acc += dout[i] * x[i] * rstd[r];
  }
  partial[static_cast<int64_t>(c) * d + j] = acc;
}

__global__ void rmsnorm_dw_final(float* dw, const float* partial, int chunks, int d) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float acc = 0;
  for (int c = 0; c < chunks; ++c) acc += partial[static_cast<int64_t>(c) * d + j];
  dw[j] += acc;
}

}  // namespace

void rmsnorm_forward(Ptr<float> out, float* rstd, const float* x, const float* w, int rows, int d, float eps,
                     cudaStream_t s) {
  if (rows <= 0 || d <= 0) return;
  const bool vec = vectorizable(d, out, Ptr<const float>(x), Ptr<const float>(w));
  with_storage(out, [&](auto* o) {
    if (vec)
      rmsnorm_forward_kernel<4><<<rows, row_threads(d / 4), 0, s>>>(o, rstd, x, w, d, eps);
    else
      rmsnorm_forward_kernel<1><<<rows, row_threads(d), 0, s>>>(o, rstd, x, w, d, eps);
  });
  CUDA_CHECK(cudaGetLastError());
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int rows, int d, cudaStream_t s) {
  if (rows <= 0 || d <= 0) return;
  const bool vec = vectorizable(d, Ptr<float>(dx), Ptr<const float>(dout), Ptr<const float>(x), Ptr<const float>(w));
  const int nv = (d / 4 + kThreads - 1) / kThreads;  // vectors a thread at kThreads threads
  if (vec && nv <= 4) {
    const int chunks = std::min(rows, kFusedChunks);
    const unsigned threads = row_threads((d / 4 + nv - 1) / nv);
    float* partial = nullptr;  // stream-ordered scratch [chunks, d]
    CUDA_CHECK(cudaMallocAsync(&partial, static_cast<size_t>(chunks) * d * sizeof(float), s));
    auto one_pass = nv == 1 ? rmsnorm_backward_one_pass<1> : nv == 2 ? rmsnorm_backward_one_pass<2>
                                                                     : rmsnorm_backward_one_pass<4>;
    one_pass<<<chunks, threads, 0, s>>>(dx, partial, dout, x, w, rstd, rows, d);
    CUDA_CHECK(cudaGetLastError());
    rmsnorm_dw_final<<<(d + kThreads - 1) / kThreads, kThreads, 0, s>>>(dw, partial, chunks, d);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaFreeAsync(partial, s));
    return;
  }
  if (vec)
    rmsnorm_dx_kernel<4><<<rows, row_threads(d / 4), 0, s>>>(dx, dout, x, w, rstd, d);
  else
    rmsnorm_dx_kernel<1><<<rows, row_threads(d), 0, s>>>(dx, dout, x, w, rstd, d);
  CUDA_CHECK(cudaGetLastError());

  const int chunks = std::min(rows, kMaxChunks);
  const unsigned col_blocks = static_cast<unsigned>((d + kThreads - 1) / kThreads);
  float* partial = nullptr;  // stream-ordered scratch [chunks, d]
  CUDA_CHECK(cudaMallocAsync(&partial, static_cast<size_t>(chunks) * d * sizeof(float), s));
  rmsnorm_dw_partial<<<dim3(col_blocks, chunks), kThreads, 0, s>>>(partial, dout, x, rstd, rows, d);
  CUDA_CHECK(cudaGetLastError());
  rmsnorm_dw_final<<<col_blocks, kThreads, 0, s>>>(dw, partial, chunks, d);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaFreeAsync(partial, s));
}

}  // namespace dsmoe::cuda
