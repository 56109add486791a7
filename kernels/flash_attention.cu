// Fused causal attention, FlashAttention-2 style (no [T, T] matrix in global memory).
//
// Forward: one CTA per (sequence, head, query block); online softmax over the key blocks up to the
// diagonal; saves one log-sum-exp per query. Backward: delta = rowsum(dO * O); one CTA per key
// block accumulates dK, dV over the query blocks from the diagonal on, and one CTA per query block
// accumulates dQ over the key blocks up to the diagonal (scores recomputed: no atomics, so the
// result is deterministic). Grids are (B*H, blocks), the heaviest blocks first.
//
// bf16: each warp owns 16 rows and multiplies with mma.sync m16n8k16 (bf16 inputs, fp32
// accumulators); tiles are rounded to bf16 when staged in shared memory, softmax statistics are
// fp32. fp32: CUDA-core FMAs, a group of R adjacent threads per row, each owning a slice of it.
// Head dims are zero-padded to HD in {16, 32, 64, 128}. Softmax runs in base 2 (sl2 = scale*log2 e).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda_check.cuh"
#include "kernels/flash_attention.cuh"

namespace dsmoe::cuda {
namespace {

using bf16_t = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
constexpr unsigned kFull = 0xffffffffu;

// ---- staging: fp32 rows from global memory into shared tiles ----

__device__ __forceinline__ void store4(float* dst, float4 v) { *reinterpret_cast<float4*>(dst) = v; }
__device__ __forceinline__ void store4(bf16_t* dst, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  *reinterpret_cast<uint2*>(dst) =
      make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
}

// tile [ROWS, HD] (row stride lds) = src [rows, hd] (row stride ld), zero where r >= rows or c >= hd.
template <int ROWS, int HD, typename E>
__device__ void load_tile(E* tile, int lds, const float* src, int64_t ld, int rows, int hd) {
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
    store4(tile + r * lds + c, v);
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

// ---- bf16 tensor-core pieces (one warp; fragments as in the PTX ISA for m16n8k16) ----

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16_t* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16_t* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
// c [16 x 8] += a [16 x 16] b [16 x 8]
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// acc [16, N] += A [16, K] B^T: A = rows a_row0.. of a row-major tile, B [N, K] a row-major tile.
// Accumulator tile n holds columns 8n..8n+7: c0, c1 at (lane/4, 8n + 2*(lane%4) + {0, 1}), c2, c3 8 rows down.
template <int N, int K>
__device__ __forceinline__ void mma_abt(float (&acc)[N / 8][4], const bf16_t* a, int a_row0, const bf16_t* b, int ld) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t af[4];
    ldmatrix_x4(af, a + (a_row0 + (lane & 15)) * ld + kk * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int nn = 0; nn < N / 16; ++nn) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b + (nn * 16 + (lane & 7) + ((lane >> 4) << 3)) * ld + kk * 16 + ((lane >> 3) & 1) * 8);
      mma(acc[2 * nn], af, bf[0], bf[1]);
      mma(acc[2 * nn + 1], af, bf[2], bf[3]);
    }
  }
}

// acc [16, N] += P [16, K] B: P in registers (an accumulator of mma_abt, rounded to bf16), B [K, N] a row-major tile.
template <int N, int K>
__device__ __forceinline__ void mma_pb(float (&acc)[N / 8][4], const float (&p)[K / 8][4], const bf16_t* b, int ld) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    const uint32_t pa[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                            pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int nn = 0; nn < N / 16; ++nn) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, b + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + nn * 16 + (lane >> 4) * 8);
      mma(acc[2 * nn], pa, bf[0], bf[1]);
      mma(acc[2 * nn + 1], pa, bf[2], bf[3]);
    }
  }
}

// dst rows row0 + lane/4 (+8) of a [rows, hd] matrix (row stride ld) = acc [16, HD] * mul.
template <int HD>
__device__ void store_acc(float* dst, int64_t ld, int row0, int rows, int hd, const float (&acc)[HD / 8][4],
                          float mul) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = row0 + lane / 4 + r * 8;
    if (i >= rows) continue;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = n * 8 + 2 * (lane % 4) + e;
        if (c < hd) dst[i * ld + c] = acc[n][2 * r + e] * mul;
      }
  }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFull, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFull, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(kFull, x, 1);
  return x + __shfl_xor_sync(kFull, x, 2);
}

// Tile sizes of the bf16 kernels: WARPS * 16 rows per CTA, steps of STEP rows of the other side.
template <int HD>
struct Bf16Tiles {
  static constexpr int kWarps = 8, kLd = HD + 8;  // 16-byte row pad: conflict-free ldmatrix
  static constexpr int kRows = kWarps * 16, kFwdStep = 64, kBwdStep = 32;
};

// out [B*T, d], lse [B, H, T]. Grid (B*H, query blocks of kRows).
template <int HD>
__global__ void __launch_bounds__(Bf16Tiles<HD>::kWarps * 32)
    forward_bf16_kernel(float* out, float* lse, const float* qkv, int T, int H, int hd, float sl2) {
  using C = Bf16Tiles<HD>;
  constexpr int BM = C::kRows, BN = C::kFwdStep, LD = C::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sq = reinterpret_cast<bf16_t*>(smem);  // [BM, LD]
  bf16_t* sk = sq + BM * LD;                     // [BN, LD]
  bf16_t* sv = sk + BN * LD;                     // [BN, LD]
  const int bh = blockIdx.x, b = bh / H, d = H * hd, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t ld = 3 * d;
  const float* q = qkv + b * T * ld + bh % H * hd;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BM, w0 = q0 + warp * 16;  // w0: this warp's first query
  load_tile<BM, HD>(sq, LD, q + q0 * ld, ld, T - q0, hd);

  float o[HD / 8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int n_kb = min((q0 + BM - 1) / BN + 1, (T + BN - 1) / BN);
  for (int kb = 0; kb < n_kb; ++kb) {
    const int k0 = kb * BN;
    __syncthreads();
    load_tile<BN, HD>(sk, LD, q + d + k0 * ld, ld, T - k0, hd);
    load_tile<BN, HD>(sv, LD, q + 2 * d + k0 * ld, ld, T - k0, hd);
    __syncthreads();
    if (k0 > w0 + 15) continue;  // all keys after this warp's queries
    float s[BN / 8][4] = {};
    mma_abt<BN, HD>(s, sq, warp * 16, sk, LD);
    const bool diag = k0 + BN - 1 > w0;
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < BN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool masked = diag && k0 + n * 8 + 2 * (lane % 4) + (e & 1) > w0 + lane / 4 + (e >> 1) * 8;
        s[n][e] = masked ? -INFINITY : s[n][e] * sl2;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);
      alpha[r] = exp2f(m[r] - mx[r]);
      m[r] = mx[r];
      l[r] *= alpha[r];  // l stays a per-thread partial sum until the end
    }
#pragma unroll
    for (int n = 0; n < BN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - m[e >> 1]);
        l[e >> 1] += s[n][e];
      }
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] *= alpha[e >> 1];
    mma_pb<HD, BN>(o, s, sv, LD);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    const int i = w0 + lane / 4 + r * 8;
    if (lane % 4 == 0 && i < T) lse[(int64_t)bh * T + i] = (m[r] + log2f(l[r])) * kLn2;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      o[n][2 * r] /= l[r];
      o[n][2 * r + 1] /= l[r];
    }
  }
  store_acc<HD>(out + (int64_t)b * T * d + bh % H * hd, d, w0, T, hd, o, 1.f);
}

// dK, dV of one key block: dqkv parts 1 and 2. Grid (B*H, key blocks of kRows), first blocks first.
template <int HD>
__global__ void __launch_bounds__(Bf16Tiles<HD>::kWarps * 32)
    dkdv_bf16_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta, int T,
                     int H, int hd, float sl2, float scale) {
  using C = Bf16Tiles<HD>;
  constexpr int BN = C::kRows, BM = C::kBwdStep, LD = C::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sk = reinterpret_cast<bf16_t*>(smem);           // [BN, LD]
  bf16_t* sv = sk + BN * LD;                              // [BN, LD]
  bf16_t* sq = sv + BN * LD;                              // [BM, LD]
  bf16_t* sdo = sq + BM * LD;                             // [BM, LD]
  float* slse = reinterpret_cast<float*>(sdo + BM * LD);  // [BM]
  float* sdelta = slse + BM;                              // [BM]
  const int bh = blockIdx.x, b = bh / H, d = H * hd, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t ld = 3 * d;
  const float* q = qkv + b * T * ld + bh % H * hd;
  const float* go = dout + (int64_t)b * T * d + bh % H * hd;
  const int k0 = blockIdx.y * BN, w0 = k0 + warp * 16;  // w0: this warp's first key
  load_tile<BN, HD>(sk, LD, q + d + k0 * ld, ld, T - k0, hd);
  load_tile<BN, HD>(sv, LD, q + 2 * d + k0 * ld, ld, T - k0, hd);

  float dk[HD / 8][4] = {}, dv[HD / 8][4] = {};
  for (int q0 = k0 / BM * BM; q0 < T; q0 += BM) {
    __syncthreads();
    load_tile<BM, HD>(sq, LD, q + q0 * ld, ld, T - q0, hd);
    load_tile<BM, HD>(sdo, LD, go + q0 * d, d, T - q0, hd);
    load_row_stats(slse, sdelta, lse + (int64_t)bh * T + q0, delta + (int64_t)bh * T + q0, BM, T - q0);
    __syncthreads();
    if (q0 + BM - 1 < w0) continue;                 // all queries before this warp's keys
    float st[BM / 8][4] = {}, dpt[BM / 8][4] = {};  // S^T, dP^T [16 keys, BM queries]
    mma_abt<BM, HD>(st, sk, warp * 16, sq, LD);
    mma_abt<BM, HD>(dpt, sv, warp * 16, sdo, LD);
    const bool diag = w0 + 15 > q0;
#pragma unroll
    for (int n = 0; n < BM / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + 2 * (lane % 4) + (e & 1);
        const bool masked = diag && w0 + lane / 4 + (e >> 1) * 8 > q0 + col;
        const float p = masked ? 0.f : exp2f(st[n][e] * sl2 - slse[col]);
        st[n][e] = p;
        dpt[n][e] = p * (dpt[n][e] - sdelta[col]);  // dS^T
      }
    mma_pb<HD, BM>(dv, st, sdo, LD);
    mma_pb<HD, BM>(dk, dpt, sq, LD);
  }
  float* dst = dqkv + b * T * ld + bh % H * hd;
  store_acc<HD>(dst + d, ld, w0, T, hd, dk, scale);
  store_acc<HD>(dst + 2 * d, ld, w0, T, hd, dv, 1.f);
}

// dQ of one query block: dqkv part 0. Grid (B*H, query blocks of kRows), last blocks first.
template <int HD>
__global__ void __launch_bounds__(Bf16Tiles<HD>::kWarps * 32)
    dq_bf16_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta, int T, int H,
                   int hd, float sl2, float scale) {
  using C = Bf16Tiles<HD>;
  constexpr int BM = C::kRows, BN = C::kBwdStep, LD = C::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sq = reinterpret_cast<bf16_t*>(smem);  // [BM, LD]
  bf16_t* sdo = sq + BM * LD;                    // [BM, LD]
  bf16_t* sk = sdo + BM * LD;                    // [BN, LD]
  bf16_t* sv = sk + BN * LD;                     // [BN, LD]
  const int bh = blockIdx.x, b = bh / H, d = H * hd, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t ld = 3 * d;
  const float* q = qkv + b * T * ld + bh % H * hd;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BM, w0 = q0 + warp * 16;  // w0: this warp's first query
  load_tile<BM, HD>(sq, LD, q + q0 * ld, ld, T - q0, hd);
  load_tile<BM, HD>(sdo, LD, dout + (int64_t)b * T * d + bh % H * hd + q0 * d, d, T - q0, hd);
  float lse2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = w0 + lane / 4 + r * 8;
    lse2[r] = i < T ? lse[(int64_t)bh * T + i] * kLog2e : INFINITY;
    dl[r] = i < T ? delta[(int64_t)bh * T + i] : 0.f;
  }

  float dq[HD / 8][4] = {};
  const int n_kb = min((q0 + BM - 1) / BN + 1, (T + BN - 1) / BN);
  for (int kb = 0; kb < n_kb; ++kb) {
    const int k0 = kb * BN;
    __syncthreads();
    load_tile<BN, HD>(sk, LD, q + d + k0 * ld, ld, T - k0, hd);
    load_tile<BN, HD>(sv, LD, q + 2 * d + k0 * ld, ld, T - k0, hd);
    __syncthreads();
    if (k0 > w0 + 15) continue;  // all keys after this warp's queries
    float s[BN / 8][4] = {}, dp[BN / 8][4] = {};
    mma_abt<BN, HD>(s, sq, warp * 16, sk, LD);
    mma_abt<BN, HD>(dp, sdo, warp * 16, sv, LD);
    const bool diag = k0 + BN - 1 > w0;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const bool masked = diag && k0 + n * 8 + 2 * (lane % 4) + (e & 1) > w0 + lane / 4 + r * 8;
        const float p = masked ? 0.f : exp2f(s[n][e] * sl2 - lse2[r]);
        s[n][e] = p * (dp[n][e] - dl[r]);  // dS
      }
    mma_pb<HD, BN>(dq, s, sk, LD);
  }
  store_acc<HD>(dqkv + b * T * ld + bh % H * hd, ld, w0, T, hd, dq, scale);
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

// ---- launchers ----

struct Geometry {
  int B, T, H, hd;
  float sl2, scale;
  dim3 grid(int rows_per_block) const {
    return dim3(static_cast<unsigned>(B * H), static_cast<unsigned>((T + rows_per_block - 1) / rows_per_block));
  }
};

// kernel<<<grid, threads, smem, s>>>(args...), allowing more than the default 48 KiB of dynamic shared memory.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, int threads, size_t smem, cudaStream_t s, A... args) {
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, threads, smem, s>>>(args...);
  CUDA_CHECK(cudaGetLastError());
}

template <int HD>
void forward(float* out, float* lse, const float* qkv, const Geometry& g, bool bf16, cudaStream_t s) {
  if (bf16) {
    using C = Bf16Tiles<HD>;
    const size_t smem = (C::kRows + 2 * C::kFwdStep) * C::kLd * sizeof(bf16_t);
    launch(forward_bf16_kernel<HD>, g.grid(C::kRows), C::kWarps * 32, smem, s, out, lse, qkv, g.T, g.H, g.hd, g.sl2);
  } else {
    launch(forward_f32_kernel<HD>, g.grid(Slice<HD>::kRows), 128, 0, s, out, lse, qkv, g.T, g.H, g.hd, g.sl2);
  }
}

template <int HD>
void backward(float* dqkv, const float* delta, const float* dout, const float* qkv, const float* lse, const Geometry& g,
              bool bf16, cudaStream_t s) {
  if (bf16) {
    using C = Bf16Tiles<HD>;
    const size_t tiles = (2 * C::kRows + 2 * C::kBwdStep) * C::kLd * sizeof(bf16_t);
    launch(dkdv_bf16_kernel<HD>, g.grid(C::kRows), C::kWarps * 32, tiles + 2 * C::kBwdStep * sizeof(float), s, dqkv,
           dout, qkv, lse, delta, g.T, g.H, g.hd, g.sl2, g.scale);
    launch(dq_bf16_kernel<HD>, g.grid(C::kRows), C::kWarps * 32, tiles, s, dqkv, dout, qkv, lse, delta, g.T, g.H, g.hd,
           g.sl2, g.scale);
  } else {
    const dim3 grid = g.grid(Slice<HD>::kRows);
    launch(dkdv_f32_kernel<HD>, grid, 128, 0, s, dqkv, dout, qkv, lse, delta, g.T, g.H, g.hd, g.sl2, g.scale);
    launch(dq_f32_kernel<HD>, grid, 128, 0, s, dqkv, dout, qkv, lse, delta, g.T, g.H, g.hd, g.sl2, g.scale);
  }
}

Geometry geometry(int batch, int seq, int n_heads, int head_dim) {
  DSMOE_CHECK(head_dim >= 1 && head_dim <= kFlashMaxHeadDim, "flash attention: head_dim ", head_dim, " outside 1..",
              kFlashMaxHeadDim);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  return {batch, seq, n_heads, head_dim, static_cast<float>(scale / std::log(2.0)), static_cast<float>(scale)};
}

}  // namespace

void flash_attention_forward(float* out, float* lse, const float* qkv, int batch, int seq, int n_heads, int head_dim,
                             bool bf16, cudaStream_t s) {
  if ((int64_t)batch * seq * n_heads == 0) return;
  const Geometry g = geometry(batch, seq, n_heads, head_dim);
  if (head_dim <= 16) return forward<16>(out, lse, qkv, g, bf16, s);
  if (head_dim <= 32) return forward<32>(out, lse, qkv, g, bf16, s);
  if (head_dim <= 64) return forward<64>(out, lse, qkv, g, bf16, s);
  forward<128>(out, lse, qkv, g, bf16, s);
}

void flash_attention_backward(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out,
                              const float* lse, int batch, int seq, int n_heads, int head_dim, bool bf16,
                              cudaStream_t s) {
  const int64_t rows = (int64_t)batch * seq * n_heads;
  if (rows == 0) return;
  const Geometry g = geometry(batch, seq, n_heads, head_dim);
  constexpr int kThreads = 256;
  delta_kernel<<<static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      delta, dout, out, seq, n_heads, head_dim, rows);
  CUDA_CHECK(cudaGetLastError());
  if (head_dim <= 16) return backward<16>(dqkv, delta, dout, qkv, lse, g, bf16, s);
  if (head_dim <= 32) return backward<32>(dqkv, delta, dout, qkv, lse, g, bf16, s);
  if (head_dim <= 64) return backward<64>(dqkv, delta, dout, qkv, lse, g, bf16, s);
  backward<128>(dqkv, delta, dout, qkv, lse, g, bf16, s);
}

}  // namespace dsmoe::cuda
