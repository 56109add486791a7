// Exact fp32 products for the shapes cuBLAS serves badly: a side of at most 64, like the router's
// 63 experts (logits [tokens, 63], its input gradient with k = 63, and the slices of its weight
// gradient), where cuBLAS ran at 4 TFLOP/s. 64 x 64 output tiles, k steps of 16 through shared
// memory with the next step's loads in registers; each thread sums its 4 x 8 outputs over k in
// order, so results are deterministic. A thread's rows and columns are adjacent, so that each k
// step reads them from shared memory as 16-byte vectors: 3 loads for 32 FMAs (shared-memory
// bandwidth, not the FMA units, limited the 4 x 4 version with scalar loads).
#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

constexpr int kTile = 64, kStep = 16, kThreads = 128, kPerThread = kTile * kStep / kThreads;
constexpr int kRows = 4, kCols = 8;  // a thread's outputs: kTile / kRows x kTile / kCols = kThreads threads

// One k step's tile of op(X) held as [kStep][kTile] (k-major): element (r, kk) of op(X) [rows, k]
// stored [rows, ld] (rows_major) or [k, ld]. Threads take consecutive addresses along whichever
// of r and kk is contiguous in memory.
struct TileLoader {
  const float* x;
  int64_t ld;
  int rows, k;
  bool k_contiguous;
  __device__ void load(float (&v)[kPerThread], int r0, int k0) const {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int e = threadIdx.x + i * kThreads;
      const int r = k_contiguous ? e / kStep : e % kTile, kk = k_contiguous ? e % kStep : e / kTile;
      const int gr = r0 + r, gk = k0 + kk;
      v[i] = gr < rows && gk < k ? x[k_contiguous ? gr * ld + gk : gk * ld + gr] : 0.f;
    }
  }
  __device__ void store(float (*s)[kTile + 4], const float (&v)[kPerThread]) const {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int e = threadIdx.x + i * kThreads;
      const int r = k_contiguous ? e / kStep : e % kTile, kk = k_contiguous ? e % kStep : e / kTile;
      s[kk][r] = v[i];
    }
  }
};

__global__ void __launch_bounds__(kThreads) fp32_gemm_kernel(bool ta, bool tb, int m, int n, int k, float alpha,
                                                             const float* a, int lda, int64_t sa, const float* b,
                                                             int ldb, int64_t sb, float beta, float* c, int ldc,
                                                             int64_t sc) {
  __shared__ __align__(16) float as[kStep][kTile + 4], bs[kStep][kTile + 4];
  const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  // op(A) [m, k] is k-contiguous unless transposed; op(B)^T [n, k] is k-contiguous when transposed.
  const TileLoader la{a + blockIdx.z * sa, lda, m, k, !ta}, lb{b + blockIdx.z * sb, ldb, n, k, tb};
  c += blockIdx.z * sc;
  const int tx = threadIdx.x % (kTile / kCols), ty = threadIdx.x / (kTile / kCols);
  float acc[kRows][kCols] = {};
  float va[kPerThread], vb[kPerThread];
  la.load(va, m0, 0);
  lb.load(vb, n0, 0);
  for (int k0 = 0; k0 < k; k0 += kStep) {
    __syncthreads();
    la.store(as, va);
    lb.store(bs, vb);
    __syncthreads();
    if (k0 + kStep < k) {
      la.load(va, m0, k0 + kStep);
      lb.load(vb, n0, k0 + kStep);
    }
#pragma unroll
    for (int kk = 0; kk < kStep; ++kk) {
      const float4 x = *reinterpret_cast<const float4*>(&as[kk][ty * kRows]);
      const float4 y0 = *reinterpret_cast<const float4*>(&bs[kk][tx * kCols]);
      const float4 y1 = *reinterpret_cast<const float4*>(&bs[kk][tx * kCols + 4]);
      const float xs[kRows] = {x.x, x.y, x.z, x.w}, ys[kCols] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
#pragma unroll
      for (int i = 0; i < kRows; ++i)
#pragma unroll
        for (int j = 0; j < kCols; ++j) acc[i][j] = fmaf(xs[i], ys[j], acc[i][j]);
    }
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i)
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int r = m0 + ty * kRows + i, col = n0 + tx * kCols + j;
      if (r >= m || col >= n) continue;
      float& out = c[(int64_t)r * ldc + col];
      out = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * out;
    }
}

}  // namespace

void fp32_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, int64_t sa,
               const float* b, int ldb, int64_t sb, float beta, float* c, int ldc, int64_t sc, int batch,
               cudaStream_t s) {
  if (m <= 0 || n <= 0 || batch <= 0) return;
  const dim3 grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile, batch);
  fp32_gemm_kernel<<<grid, kThreads, 0, s>>>(ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
