// fill, add, sum_squares, swiglu, adamw: grid-stride loops over the elements (4 at a time where
// the pointers allow), swiglu a block per row in the storage of its operands.
#include <algorithm>
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/elements.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 256;
// sum_squares uses a fixed number of partial sums so that the reduction tree depends only on n.
constexpr int kSumBlocks = 1024;

unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 20));
}

__device__ int64_t first_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__global__ void fill_kernel(float* x, float value, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] = value;
}

// Elements [0, n) with V at a time: n % V == 0.
template <int V>
__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = first_index() * V; i < n; i += grid_stride() * V) {
    float a[V], b[V];
    load(a, y + i);
    load(b, x + i);
    for (int v = 0; v < V; ++v) a[v] += b[v];
    store(y + i, a);
  }
}

__global__ void sum_squares_partial(double* partials, const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = first_index(); i < n; i += grid_stride()) s += static_cast<double>(x[i]) * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sum_partials(double* out, const double* partials, int n) {
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

// Blocks take rows in turn, threads V columns at a time: gu [rows, 2n] = [g | u], act [rows, n],
// scale [rows] or null.
template <int V, typename A, typename G>
__global__ void swiglu_forward_kernel(A* act, const G* gu, const float* scale, int rows, int n) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float sr = scale ? scale[r] : 1.0f;
    for (int j = threadIdx.x * V; j < n; j += blockDim.x * V) {
      float g[V], u[V], a[V];
      load(g, gu + r * 2 * n + j);
      load(u, gu + r * 2 * n + n + j);
      for (int v = 0; v < V; ++v) a[v] = sr * (g[v] / (1.0f + expf(-g[v])) * u[v]);
      store(act + r * n + j, a);
    }
  }
}

// With a scale, a first pass over the row sums dscale[r] = dot(dact[r], silu(g) * u) (every
// thread of the block takes part in the row's reduction: the row loop is the same for all).
template <int V, typename D, typename A, typename G>
__global__ void swiglu_backward_kernel(D* dgu, float* dscale, const A* dact, const G* gu, const float* scale, int rows,
                                       int n) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float sr = 1.0f;
    if (scale) {
      double dot = 0;
      for (int j = threadIdx.x * V; j < n; j += blockDim.x * V) {
        float g[V], u[V], da[V];
        load(g, gu + r * 2 * n + j);
        load(u, gu + r * 2 * n + n + j);
        load(da, dact + r * n + j);
        for (int v = 0; v < V; ++v) dot += static_cast<double>(da[v]) * (g[v] / (1.0f + expf(-g[v])) * u[v]);
      }
      dot = block_sum(dot);
      if (threadIdx.x == 0) dscale[r] = static_cast<float>(dot);
      sr = scale[r];
    }
    for (int j = threadIdx.x * V; j < n; j += blockDim.x * V) {
      float g[V], u[V], da[V], dg[V], du[V];
      load(g, gu + r * 2 * n + j);
      load(u, gu + r * 2 * n + n + j);
      load(da, dact + r * n + j);
      for (int v = 0; v < V; ++v) {
        const float sig = 1.0f / (1.0f + expf(-g[v])), dav = sr * da[v];
        du[v] = dav * (g[v] * sig);
        dg[v] = dav * u[v] * sig * (1.0f + g[v] * (1.0f - sig));
      }
      store(dgu + r * 2 * n + j, dg);
      store(dgu + r * 2 * n + n + j, du);
    }
  }
}

template <int V>
__global__ void adamw_kernel(float* param, bf16_t* copy, const float* grad, float* m, float* v, int64_t n,
                             float decay, float b1, float b2, float eps, float step_size, float sqrt_bc2, float gs) {
  for (int64_t i = first_index() * V; i < n; i += grid_stride() * V) {
    float g[V], p[V], mi[V], vi[V];
    load(g, grad + i);
    load(p, param + i);
    load(mi, m + i);
    load(vi, v + i);
    for (int e = 0; e < V; ++e) {
      const float ge = g[e] * gs;
      mi[e] = b1 * mi[e] + (1.0f - b1) * ge;
      vi[e] = b2 * vi[e] + (1.0f - b2) * ge * ge;
      p[e] = p[e] * decay - step_size * mi[e] / (sqrtf(vi[e]) / sqrt_bc2 + eps);
    }
    store(m + i, mi);
    store(v + i, vi);
    store(param + i, p);
    if (copy) store(copy + i, p);
  }
}

// Blocks for rows of `vecs` vectors each: rows in turn, threads over a row.
struct RowLaunch {
  unsigned blocks, threads;
};
RowLaunch row_launch(int rows, int vecs) {
  return {static_cast<unsigned>(std::min(rows, 1 << 16)), row_threads(vecs)};
}

}  // namespace

void fill(float* x, float value, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  if (value == 0.0f && !std::signbit(value)) {
    CUDA_CHECK(cudaMemsetAsync(x, 0, static_cast<size_t>(n) * sizeof(float), s));
    return;
  }
  fill_kernel<<<grid_for(n), kThreads, 0, s>>>(x, value, n);
  CUDA_CHECK(cudaGetLastError());
}

void add(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  if (vectorizable(n, Ptr<float>(y), Ptr<const float>(x)))
    add_kernel<4><<<grid_for(n / 4), kThreads, 0, s>>>(y, x, n);
  else
    add_kernel<1><<<grid_for(n), kThreads, 0, s>>>(y, x, n);
  CUDA_CHECK(cudaGetLastError());
}

void sum_squares(double* out_device, const float* x, int64_t n, cudaStream_t s) {
  // Stream-ordered scratch: safe when several streams reduce at once.
  double* partials = nullptr;
  CUDA_CHECK(cudaMallocAsync(&partials, kSumBlocks * sizeof(double), s));
  sum_squares_partial<<<kSumBlocks, kThreads, 0, s>>>(partials, x, n);
  CUDA_CHECK(cudaGetLastError());
  sum_partials<<<1, kThreads, 0, s>>>(out_device, partials, kSumBlocks);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaFreeAsync(partials, s));
}

void swiglu_forward(Ptr<float> act, Ptr<const float> gu, const float* scale, int rows, int n, cudaStream_t s) {
  if (rows <= 0 || n <= 0) return;
  const bool vec = vectorizable(n, act, gu);
  const RowLaunch l = row_launch(rows, vec ? n / 4 : n);
  with_storage(act, [&](auto* a) {
    with_storage(gu, [&](auto* g) {
      if (vec)
        swiglu_forward_kernel<4><<<l.blocks, l.threads, 0, s>>>(a, g, scale, rows, n);
      else
        swiglu_forward_kernel<1><<<l.blocks, l.threads, 0, s>>>(a, g, scale, rows, n);
    });
  });
  CUDA_CHECK(cudaGetLastError());
}

void swiglu_backward(Ptr<float> dgu, float* dscale, Ptr<const float> dact, Ptr<const float> gu, const float* scale,
                     int rows, int n, cudaStream_t s) {
  if (rows <= 0 || n <= 0) return;
  const bool vec = vectorizable(n, dgu, gu, dact);
  const RowLaunch l = row_launch(rows, vec ? n / 4 : n);
  with_storage(dgu, [&](auto* d) {
    with_storage(gu, [&](auto* g) {
      with_storage(dact, [&](auto* a) {
        if (vec)
          swiglu_backward_kernel<4><<<l.blocks, l.threads, 0, s>>>(d, dscale, a, g, scale, rows, n);
        else
          swiglu_backward_kernel<1><<<l.blocks, l.threads, 0, s>>>(d, dscale, a, g, scale, rows, n);
      });
    });
  });
  CUDA_CHECK(cudaGetLastError());
}

void adamw(float* param, void* copy, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2, float grad_scale,
           cudaStream_t s) {
  if (n <= 0) return;
  // Scalars formed in double and rounded once, as the CPU backend does.
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const float step_size = static_cast<float>(static_cast<double>(lr) / bias_correction1);
  const float sqrt_bc2 = static_cast<float>(std::sqrt(static_cast<double>(bias_correction2)));
  bf16_t* c = static_cast<bf16_t*>(copy);
  if (vectorizable(n, Ptr<float>(param), Ptr<const float>(grad), Ptr<float>(m), Ptr<float>(v),
                   Ptr<float>::bf16(copy)))
    adamw_kernel<4><<<grid_for(n / 4), kThreads, 0, s>>>(param, c, grad, m, v, n, decay, beta1, beta2, eps,
                                                          step_size, sqrt_bc2, grad_scale);
  else
    adamw_kernel<1><<<grid_for(n), kThreads, 0, s>>>(param, c, grad, m, v, n, decay, beta1, beta2, eps, step_size,
                                                      sqrt_bc2, grad_scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
