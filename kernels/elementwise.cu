// fill, add, sum_squares, swiglu, adamw: grid-stride loops over the elements.
#include <algorithm>
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/cuda_check.cuh"
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

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) y[i] += x[i];
}

__global__ void sum_slices_kernel(float* c, int ldc, const float* parts, int slices, int m, int n, float beta) {
  const int64_t mn = static_cast<int64_t>(m) * n;
  for (int64_t i = first_index(); i < mn; i += grid_stride()) {
    float acc = 0;
    for (int s = 0; s < slices; ++s) acc += parts[s * mn + i];  // in slice order: deterministic
    float& out = c[(i / n) * ldc + i % n];
    out = beta == 0.f ? acc : beta * out + acc;
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

__global__ void swiglu_forward_kernel(float* act, const float* gu, int n, int64_t total) {
  for (int64_t i = first_index(); i < total; i += grid_stride()) {
    int64_t r = i / n, j = i % n;
    float g = gu[r * 2 * n + j], u = gu[r * 2 * n + n + j];
    act[i] = g / (1.0f + expf(-g)) * u;
  }
}

__global__ void swiglu_backward_kernel(float* dgu, const float* dact, const float* gu, int n, int64_t total) {
  for (int64_t i = first_index(); i < total; i += grid_stride()) {
    int64_t r = i / n, j = i % n;
    float g = gu[r * 2 * n + j], u = gu[r * 2 * n + n + j], da = dact[i];
    float sig = 1.0f / (1.0f + expf(-g));
    dgu[r * 2 * n + n + j] = da * (g * sig);
    dgu[r * 2 * n + j] = da * u * sig * (1.0f + g * (1.0f - sig));
  }
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, float decay, float b1,
                             float b2, float eps, float step_size, float sqrt_bc2, float gs) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    float g = grad[i] * gs;
    float p = param[i] * decay;
    float mi = b1 * m[i] + (1.0f - b1) * g;
    float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - step_size * mi / (sqrtf(vi) / sqrt_bc2 + eps);
  }
}

}  // namespace

void fill(float* x, float value, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n), kThreads, 0, s>>>(x, value, n);
  CUDA_CHECK(cudaGetLastError());
}

void add(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  add_kernel<<<grid_for(n), kThreads, 0, s>>>(y, x, n);
  CUDA_CHECK(cudaGetLastError());
}

void sum_slices(float* c, int ldc, const float* parts, int slices, int m, int n, float beta, cudaStream_t s) {
  const int64_t mn = static_cast<int64_t>(m) * n;
  if (mn <= 0) return;
  sum_slices_kernel<<<grid_for(mn), kThreads, 0, s>>>(c, ldc, parts, slices, m, n, beta);
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

void swiglu_forward(float* act, const float* gu, int rows, int n, cudaStream_t s) {
  int64_t total = static_cast<int64_t>(rows) * n;
  if (total <= 0) return;
  swiglu_forward_kernel<<<grid_for(total), kThreads, 0, s>>>(act, gu, n, total);
  CUDA_CHECK(cudaGetLastError());
}

void swiglu_backward(float* dgu, const float* dact, const float* gu, int rows, int n, cudaStream_t s) {
  int64_t total = static_cast<int64_t>(rows) * n;
  if (total <= 0) return;
  swiglu_backward_kernel<<<grid_for(total), kThreads, 0, s>>>(dgu, dact, gu, n, total);
  CUDA_CHECK(cudaGetLastError());
}

void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
           float eps, float weight_decay, float bias_correction1, float bias_correction2, float grad_scale,
           cudaStream_t s) {
  if (n <= 0) return;
  // Scalars formed in double and rounded once, as the CPU backend does.
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const float step_size = static_cast<float>(static_cast<double>(lr) / bias_correction1);
  const float sqrt_bc2 = static_cast<float>(std::sqrt(static_cast<double>(bias_correction2)));
  adamw_kernel<<<grid_for(n), kThreads, 0, s>>>(param, grad, m, v, n, decay, beta1, beta2, eps, step_size,
                                                 sqrt_bc2, grad_scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
