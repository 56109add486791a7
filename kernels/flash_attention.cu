// Fused causal attention, FlashAttention-2 style (no [T, T] matrix in global memory).
//
// Forward: one CTA per (sequence, head, query block); online softmax over the key blocks up to the
// diagonal; saves one log-sum-exp per query. Backward: delta = rowsum(dO * O); one CTA per key
// block accumulates dK, dV over the query blocks from the diagonal on, and one CTA per query block
// accumulates dQ over the key blocks up to the diagonal (scores recomputed: no atomics, so the
// result is deterministic). Grids are (B*H, blocks), the heaviest blocks first.
//
// bf16: a pre-pass rounds q, k, v (and dO) to bf16 slabs [B*H, Tp, HD] (heads contiguous, rows
// zero-padded to the CTA's 128 rows and to HD columns) in stream-ordered scratch. The kernels then
// stage tiles with cp.async, double-buffering the operand they step over, and multiply with
// mma.sync m16n8k16 (bf16 inputs, fp32 accumulators); softmax statistics are fp32. Each warp owns
// 16*kMT rows so that one ldmatrix of a B fragment feeds kMT MMAs (shared-memory bandwidth, not the
// tensor cores, bounds mma.sync at one row tile per warp). The operand a warp keeps for the whole
// CTA (Q; Q and dO in the dQ kernel) stays in registers as A fragments; the products of scores with
// a tile (P V, dS K, P^T dO, dS^T Q) take P / dS straight from the score accumulators.
// fp32: CUDA-core FMAs, a group of R adjacent threads per row, each owning a slice of it.
// Head dims are zero-padded to HD in {16, 32, 64, 128}. Softmax runs in base 2 (sl2 = scale*log2 e).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda_check.cuh"
#include "kernels/elements.cuh"
#include "kernels/flash_attention.cuh"

namespace dsmoe::cuda {
namespace {

using bf16_t = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
constexpr unsigned kFull = 0xffffffffu;

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
// c [16 x 8] += a [16 x 16] b [16 x 8]; no side effects, so the compiler may interleave it with the loads.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// af = A fragments of a row-major tile [16*MT, K] (row stride LD) starting at a.
template <int MT, int K, int LD>
__device__ __forceinline__ void load_a(uint32_t (&af)[MT][K / 16][4], const bf16_t* a) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk) ldmatrix_x4(af[mt][kk], a + (mt * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
}

// acc [16*MT, N] += A B^T: A as fragments af [16*MT, K], B [N, K] a row-major tile. Accumulator
// acc[mt][n] holds rows 16mt.., columns 8n..8n+7: c0, c1 at (lane/4, 8n + 2*(lane%4) + {0, 1}), c2, c3 8 rows down.
template <int MT, int N, int K, int LD>
__device__ __forceinline__ void mma_abt(float (&acc)[MT][N / 8][4], const uint32_t (&af)[MT][K / 16][4],
                                        const bf16_t* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk)
#pragma unroll
    for (int nn = 0; nn < N / 16; ++nn) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b + (nn * 16 + (lane & 7) + ((lane >> 4) << 3)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(acc[mt][2 * nn], af[mt][kk], bf[0], bf[1]);
        mma(acc[mt][2 * nn + 1], af[mt][kk], bf[2], bf[3]);
      }
    }
}

// acc [16*MT, N] += P B: P [16*MT, K] in registers (an accumulator of mma_abt, rounded to bf16), B [K, N] a row-major tile.
template <int MT, int N, int K, int LD>
__device__ __forceinline__ void mma_pb(float (&acc)[MT][N / 8][4], const float (&p)[MT][K / 8][4], const bf16_t* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t pa[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      pa[mt][0] = pack_bf16(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      pa[mt][1] = pack_bf16(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      pa[mt][2] = pack_bf16(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      pa[mt][3] = pack_bf16(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int nn = 0; nn < N / 16; ++nn) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, b + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + nn * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(acc[mt][2 * nn], pa[mt], bf[0], bf[1]);
        mma(acc[mt][2 * nn + 1], pa[mt], bf[2], bf[3]);
      }
    }
  }
}

// dst rows row0 + 16mt + lane/4 (+8) of a [rows, hd] matrix (row stride ld) = acc [16*MT, HD] * mul.
template <int MT, int HD, typename E>
__device__ void store_acc(E* dst, int64_t ld, int row0, int rows, int hd, const float (&acc)[MT][HD / 8][4],
                          float mul) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int i = row0 + mt * 16 + lane / 4 + r * 8;
      if (i >= rows) continue;
      E* row = dst + i * ld;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) {
        const int c = n * 8 + 2 * (lane % 4);
        const float x = acc[mt][n][2 * r] * mul, y = acc[mt][n][2 * r + 1] * mul;
        if (hd % 2 == 0) {  // then ld, the head offset and c are even: aligned pairs
          if (c >= hd) continue;
          if constexpr (std::is_same_v<E, float>)
            *reinterpret_cast<float2*>(row + c) = make_float2(x, y);
          else
            *reinterpret_cast<uint32_t*>(row + c) = pack_bf16(x, y);
        } else {
          const float xs[1] = {x}, ys[1] = {y};
          if (c < hd) store<1>(row + c, xs);
          if (c + 1 < hd) store<1>(row + c + 1, ys);
        }
      }
    }
}

// 2^x on the special-function unit (flushes subnormal results to 0; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFull, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFull, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(kFull, x, 1);
  return x + __shfl_xor_sync(kFull, x, 2);
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// tile [ROWS, COLS] (row stride LD elements) = src [ROWS, COLS] contiguous, asynchronously in 16-byte chunks.
template <int ROWS, int COLS, int LD, typename E>
__device__ __forceinline__ void copy_tile_async(E* tile, const E* src) {
  constexpr int kPerChunk = 16 / sizeof(E), kChunksPerRow = COLS / kPerChunk;
  for (int i = threadIdx.x; i < ROWS * kChunksPerRow; i += blockDim.x) {
    const int r = i / kChunksPerRow, c = i % kChunksPerRow * kPerChunk;
    cp_async16(tile + r * LD + c, src + r * COLS + c);
  }
}

// Tile sizes of the bf16 kernels: kRows rows per CTA (kWarps warps of kMT 16-row tiles), steps of
// kFwdStep / kBwdStep rows of the other side. kMT = 2 where the accumulators fit in registers.
template <int HD>
struct Bf16Tiles {
  static constexpr int kMT = HD <= 64 ? 2 : 1, kWarps = 8 / kMT, kThreads = kWarps * 32;
  static constexpr int kLd = HD + 8;  // 16-byte row pad: conflict-free ldmatrix
  static constexpr int kRows = 128, kFwdStep = 64, kBwdStep = 32;
  static_assert(kWarps * 16 * kMT == kRows, "a CTA's rows are its warps' row tiles");
};

// Slabs of the bf16 kernels: [B*H, Tp, HD] bf16 per operand, Tp = T rounded up to kRows, zero past T
// and past hd. Padding keys are causally masked for every real query and padding queries get
// lse2 = +inf (p = 0), so the kernels load whole tiles without bounds checks.

// v = row[c .. c + 7], zero past hd, from fp32 or bf16 storage.
__device__ __forceinline__ void load8(float (&v)[8], const bf16_t* row, int c, int hd) {
  if (hd % 8 == 0) {  // 16-byte aligned: the row strides, head offsets and c are multiples of 8
    const uint4 a = __ldg(reinterpret_cast<const uint4*>(row));
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[j]));
      v[2 * j] = f.x, v[2 * j + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (c + j < hd) v[j] = __bfloat162float(row[j]);
  }
}
__device__ __forceinline__ void load8(float (&v)[8], const float* row, int c, int hd) {
  if (hd % 4 == 0) {  // 16-byte aligned: the row strides, head offsets and c are multiples of 4
    const float4 a = __ldg(reinterpret_cast<const float4*>(row));
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    if (c + 4 < hd) {
      const float4 b = __ldg(reinterpret_cast<const float4*>(row + 4));
      v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (c + j < hd) v[j] = row[j];
  }
}

// dst [P, B*H, Tp, HD] from part p of src (row b*T + t at src + (b*T + t)*ld + p*H*hd, head h at
// column h*hd). One thread per 8 output elements (one 16-byte store); n = P*B*H*Tp*HD/8.
template <int HD, typename E>
__global__ void heads_bf16_kernel(bf16_t* dst, const E* src, int64_t ld, int T, int Tp, int H, int hd, int BH,
                                  int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int c = static_cast<int>(idx % (HD / 8)) * 8;
  int64_t rest = idx / (HD / 8);
  const int t = static_cast<int>(rest % Tp);
  rest /= Tp;
  const int bh = static_cast<int>(rest % BH), p = static_cast<int>(rest / BH);
  float v[8] = {};
  if (t < T && c < hd)
    load8(v, src + (static_cast<int64_t>(bh / H) * T + t) * ld + static_cast<int64_t>(p) * H * hd + bh % H * hd + c,
          c, hd);
  *reinterpret_cast<uint4*>(dst + idx * 8) =
      make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
}

// The dO slab dst [B*H, Tp, HD] from dout [B*T, d] as heads_bf16_kernel, and the row statistics
// lse2 [B*H, Tp] = lse * log2 e, dl [B*H, Tp] = rowsum(dout * out) (fp32), past T +inf and 0.
// The HD/8 threads of a row are adjacent lanes (n = B*H*Tp*HD/8 is a multiple of the warp).
template <int HD, typename E>
__global__ void dout_heads_bf16_kernel(bf16_t* dst, float* lse2, float* dl, const float* dout, const E* out,
                                       const float* lse, int T, int Tp, int H, int hd, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int c = static_cast<int>(idx % (HD / 8)) * 8;
  const int64_t row = idx / (HD / 8), bh = row / Tp;
  const int t = static_cast<int>(row % Tp);
  float g[8] = {}, o[8] = {};
  if (t < T && c < hd) {
    const int64_t off = (bh / H * T + t) * H * hd + bh % H * hd + c;
    load8(g, dout + off, c, hd);
    load8(o, out + off, c, hd);
  }
  float dot = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) dot = fmaf(g[j], o[j], dot);
#pragma unroll
  for (int off = 1; off < HD / 8; off *= 2) dot += __shfl_xor_sync(kFull, dot, off);
  *reinterpret_cast<uint4*>(dst + idx * 8) =
      make_uint4(pack_bf16(g[0], g[1]), pack_bf16(g[2], g[3]), pack_bf16(g[4], g[5]), pack_bf16(g[6], g[7]));
  if (c == 0) {
    lse2[row] = t < T ? lse[bh * T + t] * kLog2e : INFINITY;
    dl[row] = dot;  // 0 past T
  }
}

// out [B*T, d], lse [B, H, T] from slabs q, k, v (qkvh [3, B*H, Tp, HD]). Grid (B*H, Tp / kRows), last blocks first.
// Q stays in registers; K, V tiles [kFwdStep, HD] are double-buffered.
template <int HD, typename E>
__global__ void __launch_bounds__(Bf16Tiles<HD>::kThreads)
    forward_bf16_kernel(E* out, float* lse, const bf16_t* qkvh, int T, int Tp, int H, int hd, float sl2) {
  using C = Bf16Tiles<HD>;
  constexpr int MT = C::kMT, BM = C::kRows, BN = C::kFwdStep, LD = C::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sq = reinterpret_cast<bf16_t*>(smem);  // [BM, LD]
  bf16_t* skv = sq + BM * LD;                    // 2 stages of K [BN, LD] then V [BN, LD]
  const int bh = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t slab = static_cast<int64_t>(gridDim.x) * Tp * HD;
  const bf16_t* qh = qkvh + static_cast<int64_t>(bh) * Tp * HD;
  const bf16_t *kh = qh + slab, *vh = kh + slab;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BM, w0 = q0 + warp * 16 * MT;  // w0: this warp's first query
  auto load_kv = [&](int kb) {
    bf16_t* st = skv + (kb & 1) * 2 * BN * LD;
    copy_tile_async<BN, HD, LD>(st, kh + kb * BN * HD);
    copy_tile_async<BN, HD, LD>(st + BN * LD, vh + kb * BN * HD);
    cp_async_commit();
  };
  copy_tile_async<BM, HD, LD>(sq, qh + q0 * HD);
  load_kv(0);
  cp_async_wait_all();
  __syncthreads();
  uint32_t qf[MT][HD / 16][4];
  load_a<MT, HD, LD>(qf, sq + warp * 16 * MT * LD);

  float o[MT][HD / 8][4] = {}, m[MT][2], l[MT][2] = {};
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY;
  const int n_kb = (q0 + BM) / BN;
  for (int kb = 0; kb < n_kb; ++kb) {
    if (kb > 0) {  // tile kb landed, and every warp is done with tile kb - 1, whose stage is loaded next
      cp_async_wait_all();
      __syncthreads();
    }
    if (kb + 1 < n_kb) load_kv(kb + 1);
    const int k0 = kb * BN;
    if (k0 > w0 + 16 * MT - 1) continue;  // all keys after this warp's queries
    const bf16_t* sk = skv + (kb & 1) * 2 * BN * LD;
    float s[MT][BN / 8][4] = {};
    mma_abt<MT, BN, HD, LD>(s, qf, sk);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int r0 = w0 + mt * 16 + lane / 4;  // rows r0 and r0 + 8
      const bool diag = k0 + BN - 1 > w0 + mt * 16;
      float mx[2] = {m[mt][0], m[mt][1]};  // m: running maxima of the raw scores (sl2 > 0)
#pragma unroll
      for (int n = 0; n < BN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool masked = diag && k0 + n * 8 + 2 * (lane % 4) + (e & 1) > r0 + (e >> 1) * 8;
          if (masked) s[mt][n][e] = -INFINITY;
          mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][n][e]);
        }
      float alpha[2], ms[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {  // key 0 is visible to every row: m is finite from the first block on
        mx[r] = quad_max(mx[r]);
        alpha[r] = fast_exp2((m[mt][r] - mx[r]) * sl2);
        m[mt][r] = mx[r];
        ms[r] = mx[r] * sl2;
        l[mt][r] *= alpha[r];  // l stays a per-thread partial sum until the end
      }
#pragma unroll
      for (int n = 0; n < BN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[mt][n][e] = fast_exp2(fmaf(s[mt][n][e], sl2, -ms[e >> 1]));
          l[mt][e >> 1] += s[mt][n][e];
        }
#pragma unroll
      for (int n = 0; n < HD / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mt][n][e] *= alpha[e >> 1];
    }
    mma_pb<MT, HD, BN, LD>(o, s, sk + BN * LD);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float sum = quad_sum(l[mt][r]);
      const int i = w0 + mt * 16 + lane / 4 + r * 8;
      if (lane % 4 == 0 && i < T) lse[static_cast<int64_t>(bh) * T + i] = (m[mt][r] * sl2 + log2f(sum)) * kLn2;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) {
        o[mt][n][2 * r] /= sum;
        o[mt][n][2 * r + 1] /= sum;
      }
    }
  const int b = bh / H, d = H * hd;
  store_acc<MT, HD>(out + static_cast<int64_t>(b) * T * d + bh % H * hd, d, w0, T, hd, o, 1.f);
}

// dK, dV of one key block: dqkv parts 1 and 2, from slabs q, k, v, dO (heads [4, B*H, Tp, HD]) and
// row statistics lse2, dl [B*H, Tp]. Grid (B*H, Tp / kRows), first blocks first. K and V stay in
// shared memory; Q, dO tiles [kBwdStep, HD] and their statistics are double-buffered.
template <int HD, typename E>
__global__ void __launch_bounds__(Bf16Tiles<HD>::kThreads)
    dkdv_bf16_kernel(E* dqkv, const bf16_t* heads, const float* lse2, const float* dl, int T, int Tp, int H,
                     int hd, float sl2, float scale) {
  using C = Bf16Tiles<HD>;
  constexpr int MT = C::kMT, BN = C::kRows, BM = C::kBwdStep, LD = C::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sk = reinterpret_cast<bf16_t*>(smem);                   // [BN, LD]
  bf16_t* sv = sk + BN * LD;                                      // [BN, LD]
  bf16_t* sqd = sv + BN * LD;                                     // 2 stages of Q [BM, LD] then dO [BM, LD]
  float* sstat = reinterpret_cast<float*>(sqd + 2 * 2 * BM * LD);  // 2 stages of lse2 [BM] then dl [BM]
  const int bh = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t slab = static_cast<int64_t>(gridDim.x) * Tp * HD, row0 = static_cast<int64_t>(bh) * Tp;
  const bf16_t* qh = heads + row0 * HD;
  const bf16_t *kh = qh + slab, *vh = kh + slab, *doh = vh + slab;
  const int k0 = blockIdx.y * BN, w0 = k0 + warp * 16 * MT;  // w0: this warp's first key
  auto load_step = [&](int it) {
    const int q0 = k0 + it * BM;
    bf16_t* st = sqd + (it & 1) * 2 * BM * LD;
    copy_tile_async<BM, HD, LD>(st, qh + q0 * HD);
    copy_tile_async<BM, HD, LD>(st + BM * LD, doh + q0 * HD);
    float* ss = sstat + (it & 1) * 2 * BM;
    copy_tile_async<1, BM, BM>(ss, lse2 + row0 + q0);
    copy_tile_async<1, BM, BM>(ss + BM, dl + row0 + q0);
    cp_async_commit();
  };
  copy_tile_async<BN, HD, LD>(sk, kh + k0 * HD);
  copy_tile_async<BN, HD, LD>(sv, vh + k0 * HD);
  load_step(0);

  float dk[MT][HD / 8][4] = {}, dv[MT][HD / 8][4] = {};
  const int n_steps = (Tp - k0) / BM;
  for (int it = 0; it < n_steps; ++it) {
    cp_async_wait_all();  // step it landed, and every warp is done with step it - 1, whose stage is loaded next
    __syncthreads();
    if (it + 1 < n_steps) load_step(it + 1);
    const int q0 = k0 + it * BM;
    if (q0 + BM - 1 < w0) continue;  // all queries before this warp's keys
    const bf16_t *sq = sqd + (it & 1) * 2 * BM * LD, *sdo = sq + BM * LD;
    const float *slse = sstat + (it & 1) * 2 * BM, *sdl = slse + BM;
    float st[MT][BM / 8][4] = {}, dpt[MT][BM / 8][4] = {};  // S^T, dP^T [16*MT keys, BM queries]
    {
      uint32_t af[MT][HD / 16][4];
      load_a<MT, HD, LD>(af, sk + warp * 16 * MT * LD);
      mma_abt<MT, BM, HD, LD>(st, af, sq);
      load_a<MT, HD, LD>(af, sv + warp * 16 * MT * LD);
      mma_abt<MT, BM, HD, LD>(dpt, af, sdo);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int r0 = w0 + mt * 16 + lane / 4;  // keys r0 and r0 + 8
      const bool diag = r0 - lane / 4 + 15 > q0;
#pragma unroll
      for (int n = 0; n < BM / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n * 8 + 2 * (lane % 4) + (e & 1);
          const bool masked = diag && r0 + (e >> 1) * 8 > q0 + col;
          const float p = masked ? 0.f : fast_exp2(fmaf(st[mt][n][e], sl2, -slse[col]));
          st[mt][n][e] = p;
          dpt[mt][n][e] = p * (dpt[mt][n][e] - sdl[col]);  // dS^T
        }
    }
    mma_pb<MT, HD, BM, LD>(dv, st, sdo);
    mma_pb<MT, HD, BM, LD>(dk, dpt, sq);
  }
  const int b = bh / H, d = H * hd;
  const int64_t ld = 3 * d;
  E* dst = dqkv + b * T * ld + bh % H * hd;
  store_acc<MT, HD>(dst + d, ld, w0, T, hd, dk, scale);
  store_acc<MT, HD>(dst + 2 * d, ld, w0, T, hd, dv, 1.f);
}

// dQ of one query block: dqkv part 0, from the slabs and statistics of dkdv_bf16_kernel. Grid
// (B*H, Tp / kRows), last blocks first. Q and dO stay in registers; K, V tiles [kBwdStep, HD] are
// double-buffered.
template <int HD, typename E>
__global__ void __launch_bounds__(Bf16Tiles<HD>::kThreads)
    dq_bf16_kernel(E* dqkv, const bf16_t* heads, const float* lse2, const float* dl, int T, int Tp, int H, int hd,
                   float sl2, float scale) {
  using C = Bf16Tiles<HD>;
  constexpr int MT = C::kMT, BM = C::kRows, BN = C::kBwdStep, LD = C::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sq = reinterpret_cast<bf16_t*>(smem);  // [BM, LD]
  bf16_t* sdo = sq + BM * LD;                    // [BM, LD]
  bf16_t* skv = sdo + BM * LD;                   // 2 stages of K [BN, LD] then V [BN, LD]
  const int bh = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t slab = static_cast<int64_t>(gridDim.x) * Tp * HD, row0 = static_cast<int64_t>(bh) * Tp;
  const bf16_t* qh = heads + row0 * HD;
  const bf16_t *kh = qh + slab, *vh = kh + slab, *doh = vh + slab;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BM, w0 = q0 + warp * 16 * MT;  // w0: this warp's first query
  auto load_kv = [&](int kb) {
    bf16_t* st = skv + (kb & 1) * 2 * BN * LD;
    copy_tile_async<BN, HD, LD>(st, kh + kb * BN * HD);
    copy_tile_async<BN, HD, LD>(st + BN * LD, vh + kb * BN * HD);
    cp_async_commit();
  };
  copy_tile_async<BM, HD, LD>(sq, qh + q0 * HD);
  copy_tile_async<BM, HD, LD>(sdo, doh + q0 * HD);
  load_kv(0);
  float rl[MT][2], rd[MT][2];  // lse2, dl of rows w0 + 16mt + lane/4 (+8)
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = row0 + w0 + mt * 16 + lane / 4 + r * 8;
      rl[mt][r] = lse2[i];
      rd[mt][r] = dl[i];
    }
  cp_async_wait_all();
  __syncthreads();
  uint32_t qf[MT][HD / 16][4], dof[MT][HD / 16][4];
  load_a<MT, HD, LD>(qf, sq + warp * 16 * MT * LD);
  load_a<MT, HD, LD>(dof, sdo + warp * 16 * MT * LD);

  float dq[MT][HD / 8][4] = {};
  const int n_kb = (q0 + BM) / BN;
  for (int kb = 0; kb < n_kb; ++kb) {
    if (kb > 0) {  // tile kb landed, and every warp is done with tile kb - 1, whose stage is loaded next
      cp_async_wait_all();
      __syncthreads();
    }
    if (kb + 1 < n_kb) load_kv(kb + 1);
    const int k0 = kb * BN;
    if (k0 > w0 + 16 * MT - 1) continue;  // all keys after this warp's queries
    const bf16_t* sk = skv + (kb & 1) * 2 * BN * LD;
    float s[MT][BN / 8][4] = {}, dp[MT][BN / 8][4] = {};
    mma_abt<MT, BN, HD, LD>(s, qf, sk);
    mma_abt<MT, BN, HD, LD>(dp, dof, sk + BN * LD);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int r0 = w0 + mt * 16 + lane / 4;  // rows r0 and r0 + 8
      const bool diag = k0 + BN - 1 > w0 + mt * 16;
#pragma unroll
      for (int n = 0; n < BN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1;
          const bool masked = diag && k0 + n * 8 + 2 * (lane % 4) + (e & 1) > r0 + r * 8;
          const float p = masked ? 0.f : fast_exp2(fmaf(s[mt][n][e], sl2, -rl[mt][r]));
          s[mt][n][e] = p * (dp[mt][n][e] - rd[mt][r]);  // dS
        }
    }
    mma_pb<MT, HD, BN, LD>(dq, s, sk);
  }
  const int b = bh / H, d = H * hd;
  const int64_t ld = 3 * d;
  store_acc<MT, HD>(dqkv + b * T * ld + bh % H * hd, ld, w0, T, hd, dq, scale);
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

constexpr int kElementThreads = 256;
unsigned element_blocks(int64_t n) { return static_cast<unsigned>((n + kElementThreads - 1) / kElementThreads); }

// Stream-ordered scratch of the bf16 path: slabs q, k, v [3, B*H, Tp, HD] from qkv, followed by
// `extra` bytes. Freed by the caller with cudaFreeAsync on s.
template <int HD, typename E>
bf16_t* qkv_slabs(const E* qkv, int Tp, size_t extra, const Geometry& g, cudaStream_t s) {
  const int BH = g.B * g.H;
  const int64_t n = 3LL * BH * Tp * HD / 8;
  void* p = nullptr;
  CUDA_CHECK(cudaMallocAsync(&p, n * 8 * sizeof(bf16_t) + extra, s));
  bf16_t* heads = static_cast<bf16_t*>(p);
  heads_bf16_kernel<HD, E><<<element_blocks(n), kElementThreads, 0, s>>>(heads, qkv, 3LL * g.H * g.hd, g.T, Tp, g.H,
                                                                        g.hd, BH, n);
  CUDA_CHECK(cudaGetLastError());
  return heads;
}

int padded_seq(int T, int rows) { return (T + rows - 1) / rows * rows; }

// The bf16 path, with qkv, out (and dqkv) stored as E.
template <int HD, typename E>
void forward_bf16(E* out, float* lse, const E* qkv, const Geometry& g, cudaStream_t s) {
  using C = Bf16Tiles<HD>;
  const int Tp = padded_seq(g.T, C::kRows);
  bf16_t* heads = qkv_slabs<HD>(qkv, Tp, 0, g, s);
  const size_t smem = (C::kRows + 2 * 2 * C::kFwdStep) * C::kLd * sizeof(bf16_t);
  launch(forward_bf16_kernel<HD, E>, g.grid(C::kRows), C::kThreads, smem, s, out, lse, heads, g.T, Tp, g.H, g.hd,
         g.sl2);
  CUDA_CHECK(cudaFreeAsync(heads, s));
}

template <int HD>
void forward(Ptr<float> out, float* lse, Ptr<const float> qkv, const Geometry& g, bool bf16, cudaStream_t s) {
  if (!bf16)
    return launch(forward_f32_kernel<HD>, g.grid(Slice<HD>::kRows), 128, 0, s, out.get(), lse, qkv.get(), g.T, g.H,
                  g.hd, g.sl2);
  with_storage(out, [&](auto* o) {
    using CE = const std::remove_pointer_t<decltype(o)>*;
    forward_bf16<HD>(o, lse, static_cast<CE>(qkv.raw()), g, s);
  });
}

template <int HD, typename E>
void backward_bf16(E* dqkv, const float* dout, const E* qkv, const E* out, const float* lse, const Geometry& g,
                   cudaStream_t s) {
  using C = Bf16Tiles<HD>;
  const int Tp = padded_seq(g.T, C::kRows);
  const int64_t rows = static_cast<int64_t>(g.B) * g.H * Tp;  // slabs [4, rows, HD], then lse2, dl [rows]
  bf16_t* heads = qkv_slabs<HD>(qkv, Tp, rows * (HD * sizeof(bf16_t) + 2 * sizeof(float)), g, s);
  float* lse2 = reinterpret_cast<float*>(heads + 4 * rows * HD);
  float* dl = lse2 + rows;
  dout_heads_bf16_kernel<HD, E><<<element_blocks(rows * HD / 8), kElementThreads, 0, s>>>(
      heads + 3 * rows * HD, lse2, dl, dout, out, lse, g.T, Tp, g.H, g.hd, rows * HD / 8);
  CUDA_CHECK(cudaGetLastError());
  const size_t dkdv_smem = (2 * C::kRows + 2 * 2 * C::kBwdStep) * C::kLd * sizeof(bf16_t) +
                           2 * 2 * C::kBwdStep * sizeof(float);
  launch(dkdv_bf16_kernel<HD, E>, g.grid(C::kRows), C::kThreads, dkdv_smem, s, dqkv, heads, lse2, dl, g.T, Tp, g.H,
         g.hd, g.sl2, g.scale);
  const size_t dq_smem = (2 * C::kRows + 2 * 2 * C::kBwdStep) * C::kLd * sizeof(bf16_t);
  launch(dq_bf16_kernel<HD, E>, g.grid(C::kRows), C::kThreads, dq_smem, s, dqkv, heads, lse2, dl, g.T, Tp, g.H, g.hd,
         g.sl2, g.scale);
  CUDA_CHECK(cudaFreeAsync(heads, s));
}

template <int HD>
void backward(Ptr<float> dqkv_ptr, float* delta, const float* dout, Ptr<const float> qkv_ptr, Ptr<const float> out_ptr,
              const float* lse, const Geometry& g, bool bf16, cudaStream_t s) {
  if (bf16) {
    with_storage(dqkv_ptr, [&](auto* dqkv) {
      using CE = const std::remove_pointer_t<decltype(dqkv)>*;
      backward_bf16<HD>(dqkv, dout, static_cast<CE>(qkv_ptr.raw()), static_cast<CE>(out_ptr.raw()), lse, g, s);
    });
  } else {
    float* dqkv = dqkv_ptr.get();
    const float *qkv = qkv_ptr.get(), *out = out_ptr.get();
    const int64_t rows = static_cast<int64_t>(g.B) * g.T * g.H;
    delta_kernel<<<element_blocks(rows * 32), kElementThreads, 0, s>>>(delta, dout, out, g.T, g.H, g.hd, rows);
    CUDA_CHECK(cudaGetLastError());
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

void flash_attention_forward(Ptr<float> out, float* lse, Ptr<const float> qkv, int batch, int seq, int n_heads,
                             int head_dim, bool bf16, cudaStream_t s) {
  if ((int64_t)batch * seq * n_heads == 0) return;
  DSMOE_CHECK(out.is_bf16() == qkv.is_bf16(), "flash attention: qkv and out stored differently");
  const Geometry g = geometry(batch, seq, n_heads, head_dim);
  if (head_dim <= 16) return forward<16>(out, lse, qkv, g, bf16, s);
  if (head_dim <= 32) return forward<32>(out, lse, qkv, g, bf16, s);
  if (head_dim <= 64) return forward<64>(out, lse, qkv, g, bf16, s);
  forward<128>(out, lse, qkv, g, bf16, s);
}

void flash_attention_backward(Ptr<float> dqkv, float* delta, const float* dout, Ptr<const float> qkv,
                              Ptr<const float> out, const float* lse, int batch, int seq, int n_heads, int head_dim,
                              bool bf16, cudaStream_t s) {
  if ((int64_t)batch * seq * n_heads == 0) return;
  DSMOE_CHECK(dqkv.is_bf16() == qkv.is_bf16() && out.is_bf16() == qkv.is_bf16(),
              "flash attention: qkv, out and dqkv stored differently");
  const Geometry g = geometry(batch, seq, n_heads, head_dim);
  if (head_dim <= 16) return backward<16>(dqkv, delta, dout, qkv, out, lse, g, bf16, s);
  if (head_dim <= 32) return backward<32>(dqkv, delta, dout, qkv, out, lse, g, bf16, s);
  if (head_dim <= 64) return backward<64>(dqkv, delta, dout, qkv, out, lse, g, bf16, s);
  backward<128>(dqkv, delta, dout, qkv, out, lse, g, bf16, s);
}

}  // namespace dsmoe::cuda
