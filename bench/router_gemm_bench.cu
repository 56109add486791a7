// The router's three exact fp32 products at gpu_small's shapes (16,384 tokens, 63 experts,
// d 1,024), each timed alone: the logits [R, N] = u router^T, the input gradient du += dlogits
// router, and the weight gradient router_grad += dlogits^T u, by kernels/fp32_gemm.cu split over
// k into 1 to 32 slices (and the slices summed), against cuBLAS's exact fp32 (no TF32). Median of
// 20 runs, TFLOP/s. Usage: bench_router_gemm [tokens experts d].
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace {

using dsmoe::cuda::fp32_gemm;
using dsmoe::cuda::sum_slices;

struct Product {
  const char* name;
  bool ta, tb;
  int m, n, k;
  const float *a, *b;
  int lda, ldb;
  float beta;
  float* c;
  int ldc;
};

double median_ms(const std::function<void()>& run) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  run();  // warm-up
  std::vector<float> ms(20);
  for (float& t : ms) {
    CUDA_CHECK(cudaEventRecord(start));
    run();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

// p by fp32_gemm in `slices` slices of k (the last one takes the remainder), as the backend's
// split products do.
void split_product(const Product& p, int slices, float* parts) {
  if (slices == 1) {
    fp32_gemm(p.ta, p.tb, p.m, p.n, p.k, 1.f, p.a, p.lda, 0, p.b, p.ldb, 0, p.beta, p.c, p.ldc, 0, 1, nullptr);
    return;
  }
  const int ks = p.k / slices, rest = p.k - ks * slices;
  const int64_t mn = (int64_t)p.m * p.n;
  const int64_t step_a = p.ta ? (int64_t)ks * p.lda : ks, step_b = p.tb ? ks : (int64_t)ks * p.ldb;
  fp32_gemm(p.ta, p.tb, p.m, p.n, ks, 1.f, p.a, p.lda, step_a, p.b, p.ldb, step_b, 0.f, parts, p.n, mn, slices,
            nullptr);
  if (rest > 0)
    fp32_gemm(p.ta, p.tb, p.m, p.n, rest, 1.f, p.a + slices * step_a, p.lda, 0, p.b + slices * step_b, p.ldb, 0, 0.f,
              parts + slices * mn, p.n, 0, 1, nullptr);
  sum_slices(p.c, p.ldc, parts, rest > 0 ? slices + 1 : slices, p.m, p.n, p.beta, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  const int R = argc > 3 ? std::atoi(argv[1]) : 16384, N = argc > 3 ? std::atoi(argv[2]) : 63,
            d = argc > 3 ? std::atoi(argv[3]) : 1024;
  std::vector<float> host((size_t)R * d);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.f - 0.5f;
  float *u, *router, *logits, *du, *grad, *parts;
  CUDA_CHECK(cudaMalloc(&u, sizeof(float) * R * d));
  CUDA_CHECK(cudaMalloc(&router, sizeof(float) * N * d));
  CUDA_CHECK(cudaMalloc(&logits, sizeof(float) * R * N));
  CUDA_CHECK(cudaMalloc(&du, sizeof(float) * R * d));
  CUDA_CHECK(cudaMalloc(&grad, sizeof(float) * N * d));
  CUDA_CHECK(cudaMalloc(&parts, sizeof(float) * 33 * std::max<size_t>((size_t)R * N, (size_t)N * d)));
  CUDA_CHECK(cudaMemcpy(u, host.data(), sizeof(float) * R * d, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(du, host.data(), sizeof(float) * R * d, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(router, host.data(), sizeof(float) * N * d, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(logits, host.data(), sizeof(float) * R * N, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(grad, 0, sizeof(float) * N * d));
  cublasHandle_t blas;
  CUBLAS_CHECK(cublasCreate(&blas));

  // Row-major C [m, n] = op(A) op(B); the logits are then read as dlogits.
  const Product products[] = {
      {"logits  u router^T", false, true, R, N, d, u, router, d, d, 0.f, logits, N},
      {"du += dlogits router", false, false, R, d, N, logits, router, N, d, 1.f, du, d},
      {"grad += dlogits^T u", true, false, N, d, R, logits, u, N, d, 1.f, grad, d},
  };
  std::printf("router products, %d tokens, %d experts, d %d: TFLOP/s (ms), median of 20\n", R, N, d);
  std::printf("%-22s %16s %16s %16s %16s %16s %16s\n", "product", "1 slice", "2", "4", "8", "32", "cuBLAS fp32");
  for (const Product& p : products) {
    const double flop = 2.0 * p.m * p.n * p.k;
    std::printf("%-22s", p.name);
    for (int slices : {1, 2, 4, 8, 32}) {
      if (slices > 1 && p.k < 256) {  // the input gradient's k is the 63 experts: not split
        std::printf(" %16s", "-");
        continue;
      }
      const double ms = median_ms([&] { split_product(p, slices, parts); });
      std::printf(" %8.1f (%.3f)", flop / ms / 1e9, ms);
    }
    // Column-major: C^T [n, m] = op(B)^T op(A)^T.
    const float one = 1.f;
    const double ms = median_ms([&] {
      CUBLAS_CHECK(cublasGemmEx(blas, p.tb ? CUBLAS_OP_T : CUBLAS_OP_N, p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, p.n, p.m,
                                p.k, &one, p.b, CUDA_R_32F, p.ldb, p.a, CUDA_R_32F, p.lda, &p.beta, p.c, CUDA_R_32F,
                                p.ldc, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
    });
    std::printf(" %8.1f (%.3f)\n", flop / ms / 1e9, ms);
  }
  cublasDestroy(blas);
  for (float* p : {u, router, logits, du, grad, parts}) cudaFree(p);
  return 0;
}
