// The router's per-token part on the GPU: moe/route_row.h, one thread per token (N scores and
// the K best in registers and L1: a few hundred operations per token, far below the products
// around it), so that GPU and CPU choose by the same code.
#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"
#include "moe/route_row.h"

namespace dsmoe::cuda {
namespace {

__global__ void route_tokens_kernel(float* scores, int32_t* sel, float* gate, const float* logits, const float* bias,
                                    RouteRowSpec spec, int rows) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= rows) return;
  const int64_t N = spec.n_experts, K = spec.top_k;
  route_row(spec, logits + t * N, bias, scores + t * N, sel + t * K, gate + t * K);
}

}  // namespace

void route_tokens(float* scores, int32_t* sel, float* gate, const float* logits, const float* bias,
                  const RouteRowSpec& spec, int rows, cudaStream_t s) {
  if (rows <= 0) return;
  constexpr int kThreads = 128;
  route_tokens_kernel<<<(rows + kThreads - 1) / kThreads, kThreads, 0, s>>>(scores, sel, gate, logits, bias, spec,
                                                                             rows);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
