// Flash attention on the tensor cores (kernels/flash_attention.cu has the algorithm).
//
// bf16: a pre-pass rounds q, k, v (and dO) to bf16 slabs [B*H, Tp, HD] (heads contiguous, rows
// zero-padded to the CTA's 128 rows and to HD columns) in stream-ordered scratch. The kernels then
// stage tiles with cp.async, double-buffering the operand they step over, and multiply with
// mma.sync m16n8k16 (bf16 inputs, fp32 accumulators); softmax statistics are fp32. Each warp owns
// 16*kMT rows so that one ldmatrix of a B fragment feeds kMT MMAs (shared-memory bandwidth, not the
// tensor cores, bounds mma.sync at one row tile per warp). The operand a warp keeps for the whole
// CTA (Q; Q and dO in the dQ kernel) stays in registers as A fragments; the products of scores with
// a tile (P V, dS K, P^T dO, dS^T Q) take P / dS straight from the score accumulators.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/elements.cuh"
#include "kernels/flash_attention_parts.cuh"

namespace dsmoe::cuda::flash {
namespace {

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
void forward_bf16_as(E* out, float* lse, const E* qkv, const Geometry& g, cudaStream_t s) {
  using C = Bf16Tiles<HD>;
  const int Tp = padded_seq(g.T, C::kRows);
  bf16_t* heads = qkv_slabs<HD>(qkv, Tp, 0, g, s);
  const size_t smem = (C::kRows + 2 * 2 * C::kFwdStep) * C::kLd * sizeof(bf16_t);
  launch(forward_bf16_kernel<HD, E>, g.grid(C::kRows), C::kThreads, smem, s, out, lse, heads, g.T, Tp, g.H, g.hd,
         g.sl2);
  CUDA_CHECK(cudaFreeAsync(heads, s));
}

template <int HD, typename E>
void backward_bf16_as(E* dqkv, const float* dout, const E* qkv, const E* out, const float* lse, const Geometry& g,
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

}  // namespace

void forward_bf16(Ptr<float> out, float* lse, Ptr<const float> qkv, const Geometry& g, cudaStream_t s) {
  with_head_dim(g.hd, [&](auto hd) {
    with_storage(out, [&](auto* o) {
      using CE = const std::remove_pointer_t<decltype(o)>*;
      forward_bf16_as<decltype(hd)::value>(o, lse, static_cast<CE>(qkv.raw()), g, s);
    });
  });
}

void backward_bf16(Ptr<float> dqkv, const float* dout, Ptr<const float> qkv, Ptr<const float> out, const float* lse,
                   const Geometry& g, cudaStream_t s) {
  with_head_dim(g.hd, [&](auto hd) {
    with_storage(dqkv, [&](auto* dq) {
      using CE = const std::remove_pointer_t<decltype(dq)>*;
      backward_bf16_as<decltype(hd)::value>(dq, dout, static_cast<CE>(qkv.raw()), static_cast<CE>(out.raw()), lse, g,
                                            s);
    });
  });
}

}  // namespace dsmoe::cuda::flash
