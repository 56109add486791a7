// Flash attention on the CUDA cores in fp32 (kernels/flash_attention.cu has the algorithm).
// fp32: CUDA-core FMAs, a group of R adjacent threads per row, each owning a slice of it.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/flash_attention_parts.cuh"

namespace dsmoe::cuda::flash {
namespace {

// ---- fp32 staging: rows from global memory into shared tiles ----

// tile [ROWS, HD] (row stride lds) = src [rows, hd] (row stride ld), zero where r >= rows or c >= hd.
template <int ROWS, int HD>
__device__ void load_tile(float* tile, int lds, const float* src, int64_t ld, int rows, int hd) {
  constexpr int kChunks = HD / 4;
  for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, c = idx % kChunks * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < rows && c < hd) {
      const float* p = src + r * ld + c;
      if (hd % 4 == 0) {
        v = __ldg(reinterpret_cast<const float4*>(p));
      } else {
        v.x = p[0];
        if (c + 1 < hd) v.y = p[1];
        if (c + 2 < hd) v.z = p[2];
        if (c + 3 < hd) v.w = p[3];
      }
    }
    *reinterpret_cast<float4*>(tile + r * lds + c) = v;
  }
}

// lse2 [n] = lse * log2 e and dl [n] = delta for the first `valid` rows; past them (queries >= T)
// +inf and 0, so that p = 0 there.
__device__ void load_row_stats(float* lse2, float* dl, const float* lse, const float* delta, int n, int valid) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    lse2[i] = i < valid ? lse[i] * kLog2e : INFINITY;
    dl[i] = i < valid ? delta[i] : 0.f;
  }
}

// ---- fp32 CUDA-core kernels ----

// A padded head row of HD floats is shared by R adjacent threads; thread `sub` owns the float4
// chunks sub, sub + R, ... (S floats), so the R threads of a row read R adjacent chunks of smem.
template <int HD>
struct Slice {
  static constexpr int S = HD < 32 ? HD : 32, R = HD / S, kRows = 128 / R;  // kRows rows per 128-thread CTA
  static __device__ int col(int j, int sub) { return (j / 4 * R + sub) * 4 + j % 4; }
};

// x = row[owned columns] * mul (zero past hd or when !valid).
template <int HD>
__device__ void load_slice(float (&x)[Slice<HD>::S], const float* row, bool valid, int hd, int sub, float mul) {
#pragma unroll
  for (int j = 0; j < Slice<HD>::S; ++j) {
    const int c = Slice<HD>::col(j, sub);
    x[j] = valid && c < hd ? row[c] * mul : 0.f;
  }
}
template <int HD>
__device__ void store_slice(float* row, const float (&x)[Slice<HD>::S], int hd, int sub, float mul) {
#pragma unroll
  for (int j = 0; j < Slice<HD>::S; ++j) {
    const int c = Slice<HD>::col(j, sub);
    if (c < hd) row[c] = x[j] * mul;
  }
}
// This thread's part of dot(x, srow) for a row of a shared tile, summed over the row's R threads.
template <int HD>
__device__ __forceinline__ float dot_slice(const float (&x)[Slice<HD>::S], const float* srow, int sub) {
  using Sl = Slice<HD>;
  float acc = 0.f;
#pragma unroll
  for (int j = 0; j < Sl::S / 4; ++j) {
    const float4 v = reinterpret_cast<const float4*>(srow)[j * Sl::R + sub];
    acc = fmaf(x[4 * j], v.x, fmaf(x[4 * j + 1], v.y, fmaf(x[4 * j + 2], v.z, fmaf(x[4 * j + 3], v.w, acc))));
  }
#pragma unroll
  for (int off = 1; off < Sl::R; off *= 2) acc += __shfl_xor_sync(kFull, acc, off);
  return acc;
}
// y += a * srow (this thread's slice)
template <int HD>
__device__ __forceinline__ void axpy_slice(float (&y)[Slice<HD>::S], float a, const float* srow, int sub) {
  using Sl = Slice<HD>;
#pragma unroll
  for (int j = 0; j < Sl::S / 4; ++j) {
    const float4 v = reinterpret_cast<const float4*>(srow)[j * Sl::R + sub];
    y[4 * j] = fmaf(a, v.x, y[4 * j]);
    y[4 * j + 1] = fmaf(a, v.y, y[4 * j + 1]);
    y[4 * j + 2] = fmaf(a, v.z, y[4 * j + 2]);
    y[4 * j + 3] = fmaf(a, v.w, y[4 * j + 3]);
  }
}

constexpr int kF32Step = 32;  // key (or query) rows per shared tile in the fp32 kernels

// out [B*T, d], lse [B, H, T]. Grid (B*H, query blocks of kRows), last blocks first.
template <int HD>
__global__ void __launch_bounds__(128)
    forward_f32_kernel(float* out, float* lse, const float* qkv, int T, int H, int hd, float sl2) {
  using Sl = Slice<HD>;
  constexpr int BM = Sl::kRows, BN = kF32Step;
  __shared__ __align__(16) float sk[BN * HD], sv[BN * HD];
  const int bh = blockIdx.x, b = bh / H, d = H * hd, sub = threadIdx.x % Sl::R;
  const int64_t ld = 3 * d;
  const float* q = qkv + b * T * ld + bh % H * hd;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BM, i = q0 + threadIdx.x / Sl::R;
  float qs[Sl::S], o[Sl::S] = {}, m = -INFINITY, l = 0.f;
  load_slice<HD>(qs, q + i * ld, i < T, hd, sub, sl2);

  const int n_kb = min((q0 + BM - 1) / BN + 1, (T + BN - 1) / BN);
  for (int kb = 0; kb < n_kb; ++kb) {
    const int k0 = kb * BN;
    __syncthreads();
    load_tile<BN, HD>(sk, HD, q + d + k0 * ld, ld, T - k0, hd);
    load_tile<BN, HD>(sv, HD, q + 2 * d + k0 * ld, ld, T - k0, hd);
    __syncthreads();
    float s[BN], mx = m;
#pragma unroll
    for (int j = 0; j < BN; ++j) {
      s[j] = dot_slice<HD>(qs, sk + j * HD, sub);  // every thread: the sum shuffles across the row
      if (k0 + j > i) s[j] = -INFINITY;
      mx = fmaxf(mx, s[j]);
    }
    const float alpha = exp2f(m - mx);
    m = mx;
    l *= alpha;
#pragma unroll
    for (int j = 0; j < Sl::S; ++j) o[j] *= alpha;
#pragma unroll
    for (int j = 0; j < BN; ++j) {
      const float p = exp2f(s[j] - m);
      l += p;
      axpy_slice<HD>(o, p, sv + j * HD, sub);
    }
  }
  if (i >= T) return;
  store_slice<HD>(out + (b * T + i) * (int64_t)d + bh % H * hd, o, hd, sub, 1.f / l);
  if (sub == 0) lse[(int64_t)bh * T + i] = (m + log2f(l)) * kLn2;
}

// dK, dV of one key block: dqkv parts 1 and 2. Grid (B*H, key blocks of kRows).
template <int HD>
__global__ void __launch_bounds__(128)
    dkdv_f32_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta, int T,
                    int H, int hd, float sl2, float scale) {
  using Sl = Slice<HD>;
  constexpr int BN = Sl::kRows, BM = kF32Step;
  __shared__ __align__(16) float sq[BM * HD], sdo[BM * HD], slse[BM], sdelta[BM];
  const int bh = blockIdx.x, b = bh / H, d = H * hd, sub = threadIdx.x % Sl::R;
  const int64_t ld = 3 * d;
  const float* q = qkv + b * T * ld + bh % H * hd;
  const float* go = dout + (int64_t)b * T * d + bh % H * hd;
  const int k0 = blockIdx.y * BN, j = k0 + threadIdx.x / Sl::R;
  float ks[Sl::S], vs[Sl::S], dk[Sl::S] = {}, dv[Sl::S] = {};
  load_slice<HD>(ks, q + d + j * ld, j < T, hd, sub, sl2);
  load_slice<HD>(vs, q + 2 * d + j * ld, j < T, hd, sub, 1.f);

  for (int q0 = k0 / BM * BM; q0 < T; q0 += BM) {
    __syncthreads();
    load_tile<BM, HD>(sq, HD, q + q0 * ld, ld, T - q0, hd);
    load_tile<BM, HD>(sdo, HD, go + q0 * d, d, T - q0, hd);
    load_row_stats(slse, sdelta, lse + (int64_t)bh * T + q0, delta + (int64_t)bh * T + q0, BM, T - q0);
    __syncthreads();
    for (int r = 0; r < BM; ++r) {
      const float s = dot_slice<HD>(ks, sq + r * HD, sub), dp = dot_slice<HD>(vs, sdo + r * HD, sub);
      const float p = j > q0 + r ? 0.f : exp2f(s - slse[r]);
      axpy_slice<HD>(dv, p, sdo + r * HD, sub);
      axpy_slice<HD>(dk, p * (dp - sdelta[r]), sq + r * HD, sub);
    }
  }
  if (j >= T) return;
  float* dst = dqkv + j * ld + b * T * ld + bh % H * hd;
  store_slice<HD>(dst + d, dk, hd, sub, scale);
  store_slice<HD>(dst + 2 * d, dv, hd, sub, 1.f);
}

// dQ of one query block: dqkv part 0. Grid (B*H, query blocks of kRows), last blocks first.
template <int HD>
__global__ void __launch_bounds__(128) dq_f32_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                                     const float* delta, int T, int H, int hd, float sl2, float scale) {
  using Sl = Slice<HD>;
  constexpr int BM = Sl::kRows, BN = kF32Step;
  __shared__ __align__(16) float sk[BN * HD], sv[BN * HD];
  const int bh = blockIdx.x, b = bh / H, d = H * hd, sub = threadIdx.x % Sl::R;
  const int64_t ld = 3 * d;
  const float* q = qkv + b * T * ld + bh % H * hd;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BM, i = q0 + threadIdx.x / Sl::R;
  const bool valid = i < T;
  float qs[Sl::S], dos[Sl::S], dq[Sl::S] = {};
  load_slice<HD>(qs, q + i * ld, valid, hd, sub, sl2);
  load_slice<HD>(dos, dout + (b * T + i) * (int64_t)d + bh % H * hd, valid, hd, sub, 1.f);
  const float lse2 = valid ? lse[(int64_t)bh * T + i] * kLog2e : INFINITY;
  const float dl = valid ? delta[(int64_t)bh * T + i] : 0.f;

  const int n_kb = min((q0 + BM - 1) / BN + 1, (T + BN - 1) / BN);
  for (int kb = 0; kb < n_kb; ++kb) {
    const int k0 = kb * BN;
    __syncthreads();
    load_tile<BN, HD>(sk, HD, q + d + k0 * ld, ld, T - k0, hd);
    load_tile<BN, HD>(sv, HD, q + 2 * d + k0 * ld, ld, T - k0, hd);
    __syncthreads();
    for (int r = 0; r < BN; ++r) {
      const float s = dot_slice<HD>(qs, sk + r * HD, sub), dp = dot_slice<HD>(dos, sv + r * HD, sub);
      const float p = k0 + r > i ? 0.f : exp2f(s - lse2);
      axpy_slice<HD>(dq, p * (dp - dl), sk + r * HD, sub);
    }
  }
  if (valid) store_slice<HD>(dqkv + (b * T + i) * ld + bh % H * hd, dq, hd, sub, scale);
}

// delta [B, H, T] = rowsum(dout * out) per head; one warp per (token, head), n = B*T*H.
__global__ void delta_kernel(float* delta, const float* dout, const float* out, int T, int H, int hd, int64_t n) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= n) return;
  const int64_t row = w / H, h = w % H, off = row * H * hd + h * hd;
  float acc = 0.f;
  for (int c = lane; c < hd; c += 32) acc = fmaf(dout[off + c], out[off + c], acc);
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(kFull, acc, o);
  if (lane == 0) delta[(row / T * H + h) * T + row % T] = acc;
}

template <int HD>
void backward_fp32_hd(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out,
                      const float* lse, const Geometry& g, cudaStream_t s) {
  const int64_t rows = static_cast<int64_t>(g.B) * g.T * g.H;
  delta_kernel<<<element_blocks(rows * 32), kElementThreads, 0, s>>>(delta, dout, out, g.T, g.H, g.hd, rows);
  CUDA_CHECK(cudaGetLastError());
  const dim3 grid = g.grid(Slice<HD>::kRows);
  launch(dkdv_f32_kernel<HD>, grid, 128, 0, s, dqkv, dout, qkv, lse, delta, g.T, g.H, g.hd, g.sl2, g.scale);
  launch(dq_f32_kernel<HD>, grid, 128, 0, s, dqkv, dout, qkv, lse, delta, g.T, g.H, g.hd, g.sl2, g.scale);
}

}  // namespace

void forward_fp32(float* out, float* lse, const float* qkv, const Geometry& g, cudaStream_t s) {
  with_head_dim(g.hd, [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    launch(forward_f32_kernel<HD>, g.grid(Slice<HD>::kRows), 128, 0, s, out, lse, qkv, g.T, g.H, g.hd, g.sl2);
  });
}

void backward_fp32(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out, const float* lse,
                   const Geometry& g, cudaStream_t s) {
  with_head_dim(g.hd, [&](auto hd) { backward_fp32_hd<decltype(hd)::value>(dqkv, delta, dout, qkv, out, lse, g, s); });
}

}  // namespace dsmoe::cuda::flash
