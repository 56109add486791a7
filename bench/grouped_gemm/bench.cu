// The grouped GEMM (kernels/grouped_gemm.cu) on gpu_small's expert batches, each kernel
// (DSMOE_GROUPED_GEMM_WGMMA 0-3: mma.sync, wgmma fed by cp.async, by TMA, by TMA in block pairs;
// then unset: the choice per batch) against cuBLAS: one cublasGemmEx per problem on one stream,
// and one product of the batch's total shape (same beta). Random bf16 inputs, two input sets in
// turn, fp32 C; prints the median over the repetitions of each in TFLOP/s, each kernel's largest
// difference from the mma.sync one relative to the largest |C| (NaN-poisoned output: unwritten
// elements show as inf), and the host time of one run() (the TMA kernels encode two tensor maps a
// problem). Built on request, on an H100:
//   cmake --build build --target bench_grouped_gemm && ./build/bench_grouped_gemm [reps]
// (20 reps for the figures in bench/HISTORY.md).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda_check.cuh"
#include "bench/grouped_gemm/grouped_gemm.cuh"

using dsmoe::cuda::GroupedGemm;
using dsmoe::cuda::GroupedProblem;

namespace {

__global__ void fill_random(__nv_bfloat16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t x = (uint32_t)i * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    p[i] = __float2bfloat16(((x & 0xffff) / 65536.f - 0.5f) * 3.46f);  // variance about 1
  }
}

struct Batch {
  const char* name = "";
  bool ta = false, tb = false;
  std::vector<GroupedProblem> ps[2];  // two input sets
  int M = 0, N = 0, K = 0;            // the total shape for the single cuBLAS product
  bool ta1 = false, tb1 = false;      // its layout
  const void *a1 = nullptr, *b1 = nullptr;
  float* c1 = nullptr;
  int lda1 = 0, ldb1 = 0, ldc1 = 0;
  double flops = 0;  // of the whole batch
};

void cublas_rowmajor(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, float alpha, const void* a, int lda,
                     const void* b, int ldb, float beta, float* c, int ldc) {
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  CUBLAS_CHECK(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b,
                            CUDA_R_16BF, ldb, a, CUDA_R_16BF, lda, &beta, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

template <class F>
double median_ms(F&& f, int reps, cudaStream_t s) {
  for (int i = 0; i < 3; ++i) f(i);
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<cudaEvent_t> ev(reps + 1);
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  CUDA_CHECK(cudaEventRecord(ev[0], s));
  for (int i = 0; i < reps; ++i) {
    f(i);
    CUDA_CHECK(cudaEventRecord(ev[i + 1], s));
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<float> t(reps);
  for (int i = 0; i < reps; ++i) CUDA_CHECK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
  for (auto& e : ev) CUDA_CHECK(cudaEventDestroy(e));
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 30;
  constexpr int kExperts = 63, kD = 1024, kH = 512;
  std::vector<int> rows(kExperts);
  int total = 0;
  for (int e = 0; e < kExperts; ++e) total += rows[e] = 1820 + (e * 37) % 201 - 100;
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetStream(h, s));
  void* ws;
  CUDA_CHECK(cudaMalloc(&ws, 64 << 20));
  CUBLAS_CHECK(cublasSetWorkspace(h, ws, 64 << 20));

  auto alloc_bf16 = [&](size_t n, uint32_t seed) {
    __nv_bfloat16* p;
    CUDA_CHECK(cudaMalloc(&p, n * 2));
    fill_random<<<1024, 256>>>(p, n, seed);
    CUDA_CHECK(cudaGetLastError());
    return p;
  };
  auto alloc_f32 = [&](size_t n) {
    float* p;
    CUDA_CHECK(cudaMalloc(&p, n * 4));
    CUDA_CHECK(cudaMemset(p, 0, n * 4));
    return p;
  };
  // Per input set: x [total, d], hidden activations [total, h], gradients [total, d], weights.
  __nv_bfloat16 *x[2], *hid[2], *gy[2], *w_gate[2], *w_up[2], *w_down[2];
  for (int i = 0; i < 2; ++i) {
    x[i] = alloc_bf16((size_t)total * kD, 11 + i);
    hid[i] = alloc_bf16((size_t)total * kH, 21 + i);
    gy[i] = alloc_bf16((size_t)total * kD, 31 + i);
    w_gate[i] = alloc_bf16((size_t)kExperts * kH * kD, 41 + i);
    w_up[i] = alloc_bf16((size_t)kExperts * kH * kD, 51 + i);
    w_down[i] = alloc_bf16((size_t)kExperts * kD * kH, 61 + i);
  }
  float* c_big = alloc_f32((size_t)2 * total * kD);  // room for any batch's outputs
  float* c_ref = alloc_f32((size_t)2 * total * kD);

  std::vector<Batch> batches(5);
  {  // gate/up: C [rows, h] = X [rows, d] W^T, W [h, d]
    Batch& b = batches[0];
    b.name = "gate/up  (126 x rows x 512 x 1024, B^T)", b.ta = false, b.tb = true;
    for (int i = 0; i < 2; ++i) {
      int64_t r = 0;
      for (int e = 0; e < kExperts; ++e) {
        for (int g = 0; g < 2; ++g) {
          const __nv_bfloat16* w = (g ? w_up[i] : w_gate[i]) + (size_t)e * kH * kD;
          b.ps[i].push_back({x[i] + r * kD, w, c_big + (size_t)g * total * kH + r * kH, rows[e], kH, kD, kD, kD, kH,
                             1.f, 0.f});
        }
        r += rows[e];
      }
    }
    b.M = total, b.N = kH, b.K = kD, b.ta1 = false, b.tb1 = true, b.a1 = x[0], b.b1 = w_gate[0], b.c1 = c_big;
    b.lda1 = kD, b.ldb1 = kD, b.ldc1 = kH;
  }
  // A batch of one product per expert: C [rows, n] (+)= A [rows, k] op(W_e), A's and C's rows
  // advancing with the experts' rows, W_e [k, n] (or [n, k] where tb) the expert's weight.
  auto per_expert = [&](Batch& b, const char* name, bool tb, __nv_bfloat16* const* a, int lda,
                        __nv_bfloat16* const* w, int ldb, int n, int k, float beta) {
    b.name = name, b.ta = false, b.tb = tb;
    for (int i = 0; i < 2; ++i) {
      int64_t r = 0;
      for (int e = 0; e < kExperts; ++e) {
        b.ps[i].push_back({a[i] + r * lda, w[i] + (size_t)e * n * k, c_big + r * n, rows[e], n, k, lda, ldb, n, 1.f,
                           beta});
        r += rows[e];
      }
    }
    b.M = total, b.N = n, b.K = k, b.ta1 = false, b.tb1 = tb, b.a1 = a[0], b.b1 = w[0], b.c1 = c_big;
    b.lda1 = lda, b.ldb1 = ldb, b.ldc1 = n;
  };
  // down forward: C [rows, d] = H [rows, h] W^T, W [d, h]
  per_expert(batches[1], "down     (63 x rows x 1024 x 512, B^T)", true, hid, kH, w_down, kH, kD, kH, 0.f);
  // dx: C [rows, d] (+)= dH [rows, h] W, W [h, d]; beta 1 as the second of gate/up's
  per_expert(batches[2], "dx       (63 x rows x 1024 x 512, beta 1)", false, hid, kH, w_up, kD, kD, kH, 1.f);
  {  // weight gradients of gate/up: C [h, d] = dH^T [h, rows] X [rows, d]
    Batch& b = batches[3];
    b.name = "wgrad    (126 x 512 x 1024 x rows, A^T)", b.ta = true, b.tb = false;
    for (int i = 0; i < 2; ++i) {
      int64_t r = 0;
      for (int e = 0; e < kExperts; ++e) {
        for (int g = 0; g < 2; ++g) {
          const __nv_bfloat16* a = (g ? gy[i] : hid[i]) + r * (g ? kD : kH);  // [rows, h] with ld h or d
          b.ps[i].push_back({a, x[i] + r * kD, c_big + ((size_t)(2 * e + g)) * kH * kD, kH, kD, rows[e],
                             g ? kD : kH, kD, kD, 1.f, 0.f});
        }
        r += rows[e];
      }
    }
    b.M = kH, b.N = kD, b.K = total, b.ta1 = true, b.tb1 = false, b.a1 = hid[0], b.b1 = x[0], b.c1 = c_big;
    b.lda1 = kH, b.ldb1 = kD, b.ldc1 = kD;
  }
  // the down projection's input gradient: C [rows, h] = dY [rows, d] W, W [d, h]
  per_expert(batches[4], "dh       (63 x rows x 512 x 1024)", false, gy, kD, w_down, kH, kH, kD, 0.f);
  for (Batch& b : batches)
    for (const GroupedProblem& p : b.ps[0]) b.flops += 2.0 * p.m * p.n * p.k;

  constexpr int kVariants = 5;  // DSMOE_GROUPED_GEMM_WGMMA 0-3, then unset (the choice per batch)
  const int kEnv[kVariants] = {0, 1, 2, 3, -1};
  GroupedGemm gg[kVariants];
  for (int v = 0; v < kVariants; ++v) {  // the variant is read at the first run
    if (kEnv[v] >= 0)
      setenv("DSMOE_GROUPED_GEMM_WGMMA", std::to_string(kEnv[v]).c_str(), 1);
    else
      unsetenv("DSMOE_GROUPED_GEMM_WGMMA");
    gg[v].run(batches[0].ps[0], false, true, s);
  }
  CUDA_CHECK(cudaStreamSynchronize(s));

  std::printf("%-42s", "batch, TFLOP/s (median); variant");
  for (int v = 0; v < kVariants; ++v) kEnv[v] >= 0 ? std::printf(" %8d", kEnv[v]) : std::printf(" %8s", "auto");
  std::printf(" %8s %8s\n", "cuBLAS/p", "cuBLAS1");
  for (Batch& b : batches) {
    // Correctness against variant 0 (beta = 0 copies so that accumulation does not compound).
    const size_t n_c = b.ta ? (size_t)b.ps[0].size() * kH * kD : (size_t)b.ps[0].size() / kExperts * total * b.N;
    std::vector<GroupedProblem> once = b.ps[0];
    for (auto& p : once) p.beta = 0.f;
    CUDA_CHECK(cudaMemsetAsync(c_big, 0, n_c * 4, s));
    gg[0].run(once, b.ta, b.tb, s);
    CUDA_CHECK(cudaMemcpyAsync(c_ref, c_big, n_c * 4, cudaMemcpyDeviceToDevice, s));
    std::vector<float> ref(n_c), got(n_c);
    CUDA_CHECK(cudaMemcpyAsync(ref.data(), c_ref, n_c * 4, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    double big = 0;
    for (float v : ref) big = std::max(big, (double)std::fabs(v));
    double diff[kVariants] = {};
    for (int v = 1; v < kVariants; ++v) {
      CUDA_CHECK(cudaMemsetAsync(c_big, 0xff, n_c * 4, s));  // NaN: unwritten elements show
      gg[v].run(once, b.ta, b.tb, s);
      CUDA_CHECK(cudaMemcpyAsync(got.data(), c_big, n_c * 4, cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      double d = 0;
      for (size_t i = 0; i < n_c; ++i) {
        const double e = std::fabs((double)got[i] - ref[i]);
        d = std::isnan(e) ? INFINITY : std::max(d, e);
      }
      diff[v] = d / big;
    }
    double tf[kVariants + 2], host_us[kVariants];
    for (int v = 0; v < kVariants; ++v) {
      tf[v] = b.flops / median_ms([&](int i) { gg[v].run(b.ps[i % 2], b.ta, b.tb, s); }, reps, s) / 1e9;
      for (int i = 0; i < 64; ++i) gg[v].run(b.ps[i % 2], b.ta, b.tb, s);  // every descriptor slot allocated
      CUDA_CHECK(cudaStreamSynchronize(s));
      const auto h0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 10; ++i) gg[v].run(b.ps[i % 2], b.ta, b.tb, s);  // the GPU runs behind: host time alone
      host_us[v] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - h0).count() / 10;
    }
    tf[kVariants] = b.flops / median_ms(
                                  [&](int i) {
                                    for (const GroupedProblem& p : b.ps[i % 2])
                                      cublas_rowmajor(h, b.ta, b.tb, p.m, p.n, p.k, p.alpha, p.a, p.lda, p.b, p.ldb,
                                                      p.beta, p.c, p.ldc);
                                  },
                                  reps, s) /
                    1e9;
    const double flops1 = 2.0 * b.M * b.N * b.K;
    tf[kVariants + 1] = flops1 / median_ms(
                                     [&](int) {
                                       cublas_rowmajor(h, b.ta1, b.tb1, b.M, b.N, b.K, 1.f, b.a1, b.lda1, b.b1, b.ldb1,
                                                       b.ps[0][0].beta, b.c1, b.ldc1);
                                     },
                                     reps, s) /
                        1e9;
    std::printf("%-42s", b.name);
    for (int v = 0; v < kVariants + 2; ++v) std::printf(" %8.1f", tf[v]);
    std::printf("\n");
    std::printf("%-42s", "  max|diff from mma.sync|/max|C|");
    for (int v = 1; v < kVariants; ++v) std::printf(" %8.1e", diff[v]);
    std::printf("\n%-42s", "  host us per run()");
    for (int v = 0; v < kVariants; ++v) std::printf(" %8.1f", host_us[v]);
    std::printf("\n");
  }
  return 0;
}
