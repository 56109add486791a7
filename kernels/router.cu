// The router on the GPU, by the code the CPU backend runs too (routing/route_row.h, routing/route_stats.h):
// the per-token part and the backward one thread per token (N scores and the K best in registers
// and L1: a few hundred operations per token, far below the products around it); the statistics
// one block per chunk (chunk_statistic's columns, computed its own way), their totals one thread
// per column, the balance terms one thread.
#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"
#include "routing/route_stats.h"

namespace dsmoe::cuda {
namespace {

constexpr int kThreads = 128;
int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

__global__ void route_tokens_kernel(float* scores, int32_t* sel, float* gate, const float* logits, const float* bias,
                                    RouteRowSpec spec, int rows) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= rows) return;
  const int64_t N = spec.n_experts, K = spec.top_k;
  route_row(spec, logits + t * N, bias, scores + t * N, sel + t * K, gate + t * K, t);
}

// One block per chunk (chunk_statistic's columns): the counts of selections and of tokens per
// device group in shared memory (integers: any order is exact), then each expert's score sum, a
// thread per expert over the chunk's tokens in order (the host's sum, bit for bit). (A thread per
// column, the host's loop, took 0.16 ms a layer.)
__global__ void partials_kernel(double* partial, const float* scores, const int32_t* sel, RouteStatsSpec spec,
                                int rows) {
  extern __shared__ int32_t count[];  // [N + D]
  const int N = spec.row.n_experts, K = spec.row.top_k, D = spec.row.device_groups, per_group = N / D;
  const int c = blockIdx.x, t0 = c * spec.chunk, t1 = min(t0 + spec.chunk, rows);
  for (int j = threadIdx.x; j < N + D; j += blockDim.x) count[j] = 0;
  __syncthreads();
  for (int t = t0 + threadIdx.x; t < t1; t += blockDim.x)
    for (int k = 0; k < K; ++k) {
      const int32_t e = sel[(int64_t)t * K + k];
      atomicAdd(&count[e], 1);
      bool first_of_group = true;  // the token counts once per group it reaches
      for (int q = 0; q < k; ++q) first_of_group &= sel[(int64_t)t * K + q] / per_group != e / per_group;
      if (first_of_group) atomicAdd(&count[N + e / per_group], 1);
    }
  __syncthreads();
  double* out = partial + (int64_t)c * spec.columns();
  for (int j = threadIdx.x; j < N + D; j += blockDim.x) out[j] = count[j];
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    double acc = 0;
    for (int t = t0; t < t1; ++t) acc += scores[(int64_t)t * N + i];
    out[N + D + i] = acc;
  }
}

__global__ void totals_kernel(double* totals, const double* partial, RouteStatsSpec spec, int chunks) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j <= spec.columns()) totals[j] = chunk_total(spec, partial, chunks, j);
}

__global__ void balance_kernel(double* balance, const double* totals, RouteStatsSpec spec) {
  balance_terms(spec, totals, balance);
}

__global__ void route_backward_kernel(float* dlogits, const float* dgate, const float* scores, const int32_t* sel,
                                      const float* logits, const double* balance, const double* partial,
                                      RouteStatsSpec spec, double loss_scale, int rows) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= rows) return;
  const int64_t N = spec.row.n_experts, K = spec.row.top_k;
  route_row_backward(spec, scores + t * N, sel + t * K, logits + t * N, dgate + t * K, balance,
                     sequence_counts(spec, partial, t), loss_scale, dlogits + t * N);
}

}  // namespace

void route_tokens(float* scores, int32_t* sel, float* gate, const float* logits, const float* bias,
                  const RouteRowSpec& spec, int rows, cudaStream_t s) {
  if (rows <= 0) return;
  route_tokens_kernel<<<blocks_for(rows), kThreads, 0, s>>>(scores, sel, gate, logits, bias, spec, rows);
  CUDA_CHECK(cudaGetLastError());
}

void router_statistics(double* partial, double* totals, const float* scores, const int32_t* sel,
                       const RouteStatsSpec& spec, int rows, cudaStream_t s) {
  const int chunks = spec.chunks(rows);
  if (chunks > 0) {
    const size_t counters = (spec.row.n_experts + spec.row.device_groups) * sizeof(int32_t);
    partials_kernel<<<chunks, 256, counters, s>>>(partial, scores, sel, spec, rows);
    CUDA_CHECK(cudaGetLastError());
  }
  totals_kernel<<<blocks_for(spec.columns() + 1), kThreads, 0, s>>>(totals, partial, spec, chunks);
  CUDA_CHECK(cudaGetLastError());
}

void router_balance(double* balance, const double* totals, const RouteStatsSpec& spec, cudaStream_t s) {
  balance_kernel<<<1, 1, 0, s>>>(balance, totals, spec);
  CUDA_CHECK(cudaGetLastError());
}

void router_backward(float* dlogits, const float* dgate, const float* scores, const int32_t* sel,
                     const float* logits, const double* balance, const double* partial, const RouteStatsSpec& spec,
                     double loss_scale, int rows, cudaStream_t s) {
  if (rows <= 0) return;
  route_backward_kernel<<<blocks_for(rows), kThreads, 0, s>>>(dlogits, dgate, scores, sel, logits, balance, partial,
                                                               spec, loss_scale, rows);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
