#include "bench/grouped_gemm/grouped_gemm.cuh"

#include <cuda.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "kernels/cuda_check.cuh"
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#include "bench/grouped_gemm/grouped_gemm_wgmma.cuh"
#endif

namespace dsmoe::cuda {
namespace {

// A block's shape: a BM x BN output tile, k steps of BK, Stages of them in flight (cp.async),
// WarpsM x WarpsN warps each computing a (BM / WarpsM) x (BN / WarpsN) piece.
template <int BM_, int BN_, int BK_, int Stages_, int WarpsM_, int WarpsN_, int MinBlocks_>
struct Config {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, Stages = Stages_, WarpsM = WarpsM_, WarpsN = WarpsN_;
  static constexpr int MinBlocks = MinBlocks_;  // per multiprocessor (__launch_bounds__)
  static constexpr int Threads = 32 * WarpsM * WarpsN;
  static constexpr int WM = BM / WarpsM, WN = BN / WarpsN;  // a warp's piece
};
// Measured on an H100 (gpu_small's expert batches) against 128 x 128 x 32 in 4 stages, 256 x 128,
// 128 x 256, and 4 warps of 64 x 64: this one was the fastest or within 3 % of it on each layout.
// Two blocks fit a multiprocessor (110 KB of shared memory and 128 registers a thread each).
using Block = Config<128, 128, 64, 3, 2, 4, 2>;
constexpr int kPad = 8;  // bf16 per shared row beyond the tile: the 8 rows of an ldmatrix hit distinct banks

// One operand's tile of one k step in shared memory, laid out as it lies in global memory:
// [Rows][Cols] with Cols contiguous (k-major: Rows of m or n, Cols = BK; else Rows = BK).
template <int Rows, int Cols>
struct Tile {
  static constexpr int kRows = Rows, kCols = Cols;
  static constexpr int kLd = Cols + kPad;
  static constexpr int kElems = Rows * kLd;
};

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared address dst, of which the first `bytes` are read and the rest zero-filled.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8 x 8 bf16 matrices; lane l gives the shared address of row l % 8 of matrix l / 8.
template <bool Trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t p) {
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(p));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(p));
}

// d [16, 8] += a [16, 16] b [16, 8], bf16 inputs, fp32 accumulation.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The cp.async copies of one operand's tiles, step after step along k. The tile covers rows
// [r0, r0 + T::kRows) x columns [c0, c0 + T::kCols) of a row-major bf16 matrix (rows x cols
// valid, leading dimension ld), k running along the columns (KMajor) or the rows; what lies outside
// the matrix becomes zeros. A thread copies the chunks (8 elements) of rows rb + j * kRowStep at
// column cb: one pointer, advanced a tile per step.
template <class T, int Threads, bool KMajor>
struct TileLoader {
  static constexpr int kChunksPerRow = T::kCols / 8, kRowStep = Threads / kChunksPerRow;
  static constexpr int kChunks = T::kRows / kRowStep;
  static_assert(Threads % kChunksPerRow == 0 && T::kRows % kRowStep == 0, "whole chunks per thread");
  const uint16_t* g;    // the matrix (where chunks outside it point)
  const uint16_t* src;  // the thread's first chunk at the current step
  int64_t ld;
  uint32_t dst;              // its shared address in stage 0 (bytes)
  int rows_left, cols_left;  // of the matrix from the thread's first chunk, at the current step

  __device__ TileLoader(const uint16_t* g_, int ld_, int r0, int c0, int rows, int cols, uint32_t tile)
      : g(g_), ld(ld_) {
    const int rb = threadIdx.x / kChunksPerRow, cb = threadIdx.x % kChunksPerRow * 8;
    src = g + (int64_t)(r0 + rb) * ld + c0 + cb;
    dst = tile + 2 * (rb * T::kLd + cb);
    rows_left = rows - r0 - rb;
    cols_left = cols - c0 - cb;
  }
  __device__ __forceinline__ void load(uint32_t stage_offset) const {
    const int valid_cols = min(max(cols_left, 0), 8);
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int bytes = j * kRowStep < rows_left ? 2 * valid_cols : 0;
      cp_async16(dst + stage_offset + 2 * j * kRowStep * T::kLd, bytes ? src + j * kRowStep * ld : g, bytes);
    }
  }
  __device__ __forceinline__ void next() {  // the next k step
    if constexpr (KMajor) {
      src += T::kCols;
      cols_left -= T::kCols;
    } else {
      src += T::kRows * ld;
      rows_left -= T::kRows;
    }
  }
};

// The problem of a tile: the last one starting at or before it (binary search over the prefix sum).
__device__ __forceinline__ int find_problem(const int* first_tile, int n_problems, int tile) {
  int lo = 0, hi = n_problems - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_tile[mid] <= tile)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// One block per C::BM x C::BN output tile of some problem; first_tile [n_problems] is the prefix
// sum of the problems' tile counts.
template <class C, bool TA, bool TB>
__global__ void __launch_bounds__(C::Threads, C::MinBlocks)
    grouped_gemm_kernel(const GroupedProblem* ps, const int* first_tile, int n_problems) {
  using TileA = std::conditional_t<TA, Tile<C::BK, C::BM>, Tile<C::BM, C::BK>>;  // A stored [k, m] or [m, k]
  using TileB = std::conditional_t<TB, Tile<C::BN, C::BK>, Tile<C::BK, C::BN>>;  // B stored [n, k] or [k, n]
  constexpr int FM = C::WM / 16, FN = C::WN / 8;  // a warp's mma tiles (16 x 8) along m and n
  constexpr uint32_t kStageA = 2 * TileA::kElems, kStageB = 2 * TileB::kElems;  // bytes
  extern __shared__ __align__(16) uint16_t smem[];
  const uint32_t sa = shared_address(smem);      // [Stages][TileA]
  const uint32_t sb = sa + C::Stages * kStageA;  // [Stages][TileB]

  const int tile = blockIdx.x;
  const int lo = find_problem(first_tile, n_problems, tile);
  const GroupedProblem p = ps[lo];
  const int tiles_n = (p.n + C::BN - 1) / C::BN, local = tile - first_tile[lo];
  const int m0 = local / tiles_n * C::BM, n0 = local % tiles_n * C::BN;  // along n first: neighbours share A
  const auto* A = static_cast<const uint16_t*>(p.a);
  const auto* B = static_cast<const uint16_t*>(p.b);
  // A stored [k, m] (TA) or [m, k]; B stored [n, k] (TB) or [k, n].
  TileLoader<TileA, C::Threads, !TA> load_a =
      TA ? TileLoader<TileA, C::Threads, !TA>(A, p.lda, 0, m0, p.k, p.m, sa)
         : TileLoader<TileA, C::Threads, !TA>(A, p.lda, m0, 0, p.m, p.k, sa);
  TileLoader<TileB, C::Threads, TB> load_b = TB ? TileLoader<TileB, C::Threads, TB>(B, p.ldb, n0, 0, p.n, p.k, sb)
                                                : TileLoader<TileB, C::Threads, TB>(B, p.ldb, 0, n0, p.k, p.n, sb);

  // The shared addresses (bytes, in stage 0, at k 0) of the lane's ldmatrix rows: for A piece i
  // (16 rows) a_at + i * a_step_i, for B pieces j, j + 1 (8 columns each) b_at + j * b_step_j.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / C::WarpsN * C::WM, wn = warp % C::WarpsN * C::WN;
  // A [k][m]: matrix q = lane / 8 at k + q / 2 * 8, m + q % 2 * 8, transposed; [m][k]: m + q % 2 * 8, k + q / 2 * 8.
  const uint32_t a_at = sa + 2 * (TA ? (lane / 16 * 8 + lane % 8) * TileA::kLd + wm + lane / 8 % 2 * 8
                                     : (wm + lane % 16) * TileA::kLd + lane / 16 * 8);
  constexpr uint32_t a_step_i = 2 * (TA ? 16 : 16 * TileA::kLd), a_step_k = 2 * (TA ? 16 * TileA::kLd : 16);
  // B [n][k]: matrix q at n + q / 2 * 8, k + q % 2 * 8; [k][n]: at k + q % 2 * 8, n + q / 2 * 8, transposed.
  const uint32_t b_at = sb + 2 * (TB ? (wn + lane / 16 * 8 + lane % 8) * TileB::kLd + lane / 8 % 2 * 8
                                     : (lane / 8 % 2 * 8 + lane % 8) * TileB::kLd + wn + lane / 16 * 8);
  constexpr uint32_t b_step_j = 2 * (TB ? 8 * TileB::kLd : 8), b_step_k = 2 * (TB ? 16 : 16 * TileB::kLd);

  float acc[FM][FN][4] = {};  // [16-row piece][8-column piece][mma accumulator]
  const int steps = (p.k + C::BK - 1) / C::BK;
  for (int s = 0; s < C::Stages - 1; ++s) {
    if (s < steps) {
      load_a.load(s * kStageA);
      load_b.load(s * kStageB);
      load_a.next();
      load_b.next();
    }
    cp_async_commit();  // empty groups too: the wait below counts groups
  }
  int stage = 0, fill = C::Stages - 1;  // the stage computed on and the one loaded next
  for (int step = 0; step < steps; ++step) {
    cp_async_wait<C::Stages - 2>();  // this step's tiles have landed
    __syncthreads();                 // and every warp is done with the stage refilled next
    if (step + C::Stages - 1 < steps) {
      load_a.load(fill * kStageA);
      load_b.load(fill * kStageB);
      load_a.next();
      load_b.next();
    }
    cp_async_commit();
    fill = fill == C::Stages - 1 ? 0 : fill + 1;
#pragma unroll
    for (int kk = 0; kk < C::BK / 16; ++kk) {
      // Fragments of mma's A (16 x 16: rows 0-7 / 8-15 x k 0-7 / 8-15) and B (k 0-7 / 8-15 x 8 columns).
      uint32_t af[FM][4], bf[FN][2];
#pragma unroll
      for (int i = 0; i < FM; ++i) ldmatrix_x4<TA>(af[i], a_at + stage * kStageA + kk * a_step_k + i * a_step_i);
#pragma unroll
      for (int j = 0; j < FN; j += 2) {
        uint32_t r[4];
        ldmatrix_x4<!TB>(r, b_at + stage * kStageB + kk * b_step_k + j * b_step_j);
        bf[j][0] = r[0];
        bf[j][1] = r[1];
        bf[j + 1][0] = r[2];
        bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) mma_bf16(acc[i][j], af[i], bf[j][0], bf[j][1]);
    }
    stage = stage == C::Stages - 1 ? 0 : stage + 1;
  }

  // Accumulators 2h, 2h + 1 of piece (i, j) are row lane / 4 + 8 h, columns lane % 4 * 2 + {0, 1}.
  const int r0 = m0 + wm + lane / 4, c0 = n0 + wn + lane % 4 * 2;
  // Pairs as one 8-byte access where the whole tile lies in C and pairs are 8-byte aligned.
  const bool pairs = m0 + C::BM <= p.m && n0 + C::BN <= p.n && p.ldc % 2 == 0 &&
                     reinterpret_cast<uintptr_t>(p.c) % 8 == 0;
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r0 + i * 16 + h * 8;
      float* out = p.c + (int64_t)row * p.ldc + c0;
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        float2 v = make_float2(p.alpha * acc[i][j][2 * h], p.alpha * acc[i][j][2 * h + 1]);
        if (pairs) {
          float2* o = reinterpret_cast<float2*>(out + j * 8);
          if (p.beta != 0.f) {  // beta = 0 reads nothing (C may be garbage)
            const float2 old = *o;
            v.x += p.beta * old.x;
            v.y += p.beta * old.y;
          }
          *o = v;
        } else if (row < p.m) {
          const int col = c0 + j * 8;
          if (col < p.n) out[j * 8] = p.beta == 0.f ? v.x : v.x + p.beta * out[j * 8];
          if (col + 1 < p.n) out[j * 8 + 1] = p.beta == 0.f ? v.y : v.y + p.beta * out[j * 8 + 1];
        }
      }
    }
}

template <class C, bool TA, bool TB>
void launch(const GroupedProblem* ps, const int* first_tile, int n_problems, int tiles, cudaStream_t s) {
  using TileA = std::conditional_t<TA, Tile<C::BK, C::BM>, Tile<C::BM, C::BK>>;
  using TileB = std::conditional_t<TB, Tile<C::BN, C::BK>, Tile<C::BK, C::BN>>;
  constexpr size_t bytes = C::Stages * (TileA::kElems + TileB::kElems) * sizeof(uint16_t);
  static const bool raised = [] {  // over 48 KB of shared memory needs the limit raised, once
    CUDA_CHECK(cudaFuncSetAttribute(grouped_gemm_kernel<C, TA, TB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
    return true;
  }();
  (void)raised;
  grouped_gemm_kernel<C, TA, TB><<<tiles, C::Threads, bytes, s>>>(ps, first_tile, n_problems);
  CUDA_CHECK(cudaGetLastError());
}

// C rows r0 and r0 + 8 (columns c0 + 8 j + {0, 1}, j < N / 8) = alpha * acc + beta * C, from a
// warpgroup's m64nN accumulators (acc[4 j + 2 h + {0, 1}]: row r0 + 8 h). pairs: the whole tile lies
// in C and pairs are 8-byte aligned (one 8-byte access each); beta = 0 reads nothing (C may be
// garbage); beta != 0 loads 8 pairs before storing any, so that their latencies overlap.
template <int N>
__device__ __forceinline__ void store_c(const GroupedProblem& p, float (&acc)[N / 2], int r0, int c0, bool pairs) {
  constexpr int NJ = N / 8, G = 8;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = r0 + h * 8;
    float* out = p.c + (int64_t)row * p.ldc + c0;
    if (pairs) {
      float2* o = reinterpret_cast<float2*>(out);  // pair j at o + 4 j
      if (p.beta != 0.f) {
#pragma unroll
        for (int jg = 0; jg < NJ; jg += G) {
          float2 old[G];
#pragma unroll
          for (int g = 0; g < G; ++g) old[g] = o[4 * (jg + g)];
#pragma unroll
          for (int g = 0; g < G; ++g) {
            const int j = jg + g;
            o[4 * j] = make_float2(p.alpha * acc[4 * j + 2 * h] + p.beta * old[g].x,
                                   p.alpha * acc[4 * j + 2 * h + 1] + p.beta * old[g].y);
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < NJ; ++j)
          o[4 * j] = make_float2(p.alpha * acc[4 * j + 2 * h], p.alpha * acc[4 * j + 2 * h + 1]);
      }
    } else if (row < p.m) {
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const float vx = p.alpha * acc[4 * j + 2 * h], vy = p.alpha * acc[4 * j + 2 * h + 1];
        const int col = c0 + j * 8;
        if (col < p.n) out[j * 8] = p.beta == 0.f ? vx : vx + p.beta * out[j * 8];
        if (col + 1 < p.n) out[j * 8 + 1] = p.beta == 0.f ? vy : vy + p.beta * out[j * 8 + 1];
      }
    }
  }
}

// ---- Hopper (sm_90a): the same tiles through wgmma ----
// Two warpgroups, each BM / 2 rows of a BM x BN tile (BM / 128 m64nBNk16 products per k16), fp32
// accumulators in registers; the operands' tiles go into shared memory by cp.async (zero-filled
// past each edge, as above) in the 128-byte swizzle the wgmma descriptors read, Stages k steps of
// 64 deep. Lag: the wgmma groups a warpgroup leaves running at the end of a step (0 or 1); a stage
// is refilled once every warpgroup's products on it have finished.
template <int BM_, int BN_, int Stages_, int Lag_, int MinBlocks_>
struct WgConfig {
  static constexpr int BM = BM_, BN = BN_, BK = 64, Stages = Stages_, Lag = Lag_, MinBlocks = MinBlocks_;
  static constexpr int Threads = 256;
  static constexpr int WM = BM / 2, MPieces = WM / 64;  // a warpgroup's rows, its m64 products
  static constexpr uint32_t kTileA = BM * BK * 2, kTileB = BN * BK * 2, kStage = kTileA + kTileB;  // bytes
  static constexpr size_t kSmem = Stages * kStage + 1024;  // + alignment of the base to 1,024
  static_assert(WM % 64 == 0 && (BN == 128 || BN == 256) && Stages - 2 - Lag >= 0, "shape");
};

// The cp.async copies of one operand's tiles into the 128-byte swizzle, step after step along k.
// K-major (stored [MN][k]): the tile is MN rows of 64 k (128 bytes); MN-major (stored [k][MN]):
// MN / 64 blocks of 64 rows of k, each row 64 MN (128 bytes). Either way the 16-byte chunk c of
// row r lies at chunk c ^ (r % 8) of its 128 bytes. Rows and columns are those of the stored
// matrix (rows x cols valid, leading dimension ld); the tile starts at (r0, c0).
template <int MN, int Threads, bool KMajor>
struct SwizzledLoader {
  static constexpr int kChunksPerRow = KMajor ? 8 : MN / 8, kRows = KMajor ? MN : 64;
  static constexpr int kRowStep = Threads / kChunksPerRow, kChunks = kRows / kRowStep;
  static_assert(Threads % kChunksPerRow == 0 && kRows % kRowStep == 0 && kRowStep % 8 == 0, "whole chunks");
  const uint16_t* g;
  const uint16_t* src;
  int64_t ld;
  uint32_t dst;
  int rows_left, cols_left;

  __device__ SwizzledLoader(const uint16_t* g_, int ld_, int r0, int c0, int rows, int cols, uint32_t tile)
      : g(g_), ld(ld_) {
    const int rb = threadIdx.x / kChunksPerRow, cb = threadIdx.x % kChunksPerRow;
    src = g + (int64_t)(r0 + rb) * ld + c0 + cb * 8;
    dst = tile + cb / 8 * (64 * 128) + rb * 128 + (((cb % 8) ^ (rb % 8)) << 4);  // rb + j kRowStep: same r % 8
    rows_left = rows - r0 - rb;
    cols_left = cols - c0 - cb * 8;
  }
  __device__ __forceinline__ void load(uint32_t stage_offset) const {
    const int valid_cols = min(max(cols_left, 0), 8);
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const int bytes = j * kRowStep < rows_left ? 2 * valid_cols : 0;
      cp_async16(dst + stage_offset + j * kRowStep * 128, bytes ? src + j * kRowStep * ld : g, bytes);
    }
  }
  __device__ __forceinline__ void next() {
    if constexpr (KMajor) {
      src += 64;
      cols_left -= 64;
    } else {
      src += 64 * ld;
      rows_left -= 64;
    }
  }
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ int grouped_wgmma_compiled = 1;  // read by the host: this device's code has the kernel below
#else
__device__ int grouped_wgmma_compiled = 0;
#endif

template <class C, bool TA, bool TB>
__global__ void __launch_bounds__(C::Threads, C::MinBlocks)
    grouped_gemm_wgmma_kernel(const GroupedProblem* ps, const int* first_tile, int n_problems) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) uint8_t wg_smem[];
  const uint32_t base = (shared_address(wg_smem) + 1023) & ~1023u;  // stage s: A at base + s kStage, then B

  const int tile = blockIdx.x;
  const int lo = find_problem(first_tile, n_problems, tile);
  const GroupedProblem p = ps[lo];
  const int tiles_n = (p.n + C::BN - 1) / C::BN, local = tile - first_tile[lo];
  const int m0 = local / tiles_n * C::BM, n0 = local % tiles_n * C::BN;
  const auto* A = static_cast<const uint16_t*>(p.a);
  const auto* B = static_cast<const uint16_t*>(p.b);
  const uint32_t sa = base, sb = base + C::kTileA;
  using LoadA = SwizzledLoader<C::BM, C::Threads, !TA>;
  using LoadB = SwizzledLoader<C::BN, C::Threads, TB>;
  LoadA load_a = TA ? LoadA(A, p.lda, 0, m0, p.k, p.m, sa) : LoadA(A, p.lda, m0, 0, p.m, p.k, sa);
  LoadB load_b = TB ? LoadB(B, p.ldb, n0, 0, p.n, p.k, sb) : LoadB(B, p.ldb, 0, n0, p.k, p.n, sb);

  // wgmma's operands are K-major unless transposed (its B is [n][k] untransposed): A is MN-major
  // where TA, B where !TB. Descriptors at stage 0, k 0; a k16 step moves 32 bytes along a K-major
  // row or 16 rows (2,048 bytes) down an MN-major block: 2 or 128 in the descriptor's address field.
  const int wg = threadIdx.x / 128;
  uint64_t desc_a[C::MPieces];
#pragma unroll
  for (int i = 0; i < C::MPieces; ++i) {
    const int row = wg * C::WM + i * 64;
    desc_a[i] = TA ? wgmma::descriptor(sa + row / 64 * 8192, 8192, 1024) : wgmma::descriptor(sa + row * 128, 16, 1024);
  }
  const uint64_t desc_b = TB ? wgmma::descriptor(sb, 16, 1024) : wgmma::descriptor(sb, 8192, 1024);
  constexpr uint64_t a_k16 = TA ? 128 : 2, b_k16 = TB ? 2 : 128, stage_step = C::kStage >> 4;

  constexpr int S = C::Stages, L = C::Lag, Ahead = S - 1 - L;  // k steps loaded ahead of the one computed
  float acc[C::MPieces][C::BN / 2];
#pragma unroll
  for (int i = 0; i < C::MPieces; ++i)
#pragma unroll
    for (int j = 0; j < C::BN / 2; ++j) acc[i][j] = 0.f;
  const int steps = (p.k + C::BK - 1) / C::BK;
  for (int s = 0; s < Ahead; ++s) {
    if (s < steps) {
      load_a.load(s * C::kStage);
      load_b.load(s * C::kStage);
      load_a.next();
      load_b.next();
    }
    cp_async_commit();
  }
  int stage = 0, fill = Ahead;
  for (int step = 0; step < steps; ++step) {
    cp_async_wait<Ahead - 1>();                                       // this step's tiles have landed
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // visible to wgmma's reads
    __syncthreads();  // every thread's copies landed; every warpgroup is done with the stage refilled next
#pragma unroll
    for (int i = 0; i < C::MPieces; ++i) wgmma::fence_operands(acc[i]);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < C::BK / 16; ++kk)
#pragma unroll
      for (int i = 0; i < C::MPieces; ++i)
        wgmma::mma<C::BN, TA, !TB>(acc[i], desc_a[i] + stage * stage_step + kk * a_k16,
                                  desc_b + stage * stage_step + kk * b_k16, 1);
    wgmma::commit();
    if (step + Ahead < steps) {
      load_a.load(fill * C::kStage);
      load_b.load(fill * C::kStage);
      load_a.next();
      load_b.next();
    }
    cp_async_commit();
    fill = fill == S - 1 ? 0 : fill + 1;
    stage = stage == S - 1 ? 0 : stage + 1;
    wgmma::wait<L>();
#pragma unroll
    for (int i = 0; i < C::MPieces; ++i) wgmma::fence_operands(acc[i]);
  }
  wgmma::wait<0>();
#pragma unroll
  for (int i = 0; i < C::MPieces; ++i) wgmma::fence_operands(acc[i]);

  // Accumulators 4 j + 2 h + {0, 1} of piece i: row 16 warp + lane / 4 + 8 h, columns
  // 8 j + lane % 4 * 2 + {0, 1}.
  const int lane = threadIdx.x % 32, warp = threadIdx.x % 128 / 32;
  const bool pairs = m0 + C::BM <= p.m && n0 + C::BN <= p.n && p.ldc % 2 == 0 &&
                     reinterpret_cast<uintptr_t>(p.c) % 8 == 0;
#pragma unroll
  for (int i = 0; i < C::MPieces; ++i)
    store_c<C::BN>(p, acc[i], m0 + wg * C::WM + i * 64 + warp * 16 + lane / 4, n0 + lane % 4 * 2, pairs);
#else
  (void)ps;
  (void)first_tile;
  (void)n_problems;
#endif
}

template <class C, bool TA, bool TB>
void launch_wgmma(const GroupedProblem* ps, const int* first_tile, int n_problems, int tiles, cudaStream_t s) {
  static_assert(C::MPieces * 64 * 2 == C::BM, "two warpgroups of m64 pieces");
  static const bool raised = [] {
    CUDA_CHECK(cudaFuncSetAttribute(grouped_gemm_wgmma_kernel<C, TA, TB>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)C::kSmem));
    return true;
  }();
  (void)raised;
  grouped_gemm_wgmma_kernel<C, TA, TB><<<tiles, C::Threads, C::kSmem, s>>>(ps, first_tile, n_problems);
  CUDA_CHECK(cudaGetLastError());
}

// ---- Hopper (sm_90a), persistent and warp-specialized: TMA producer, two wgmma warpgroups ----
// One block of 3 warpgroups a multiprocessor, looping over the tiles (cluster c of the grid's
// clusters takes tiles c, c + clusters, ...). Warpgroup 0's first thread loads each k step's operand tiles with the
// bulk tensor copy engine (per-problem tensor maps, encoded on the host, 128-byte swizzle, zeros
// past every edge) into a ring of Stages stages, completing on the stage's full barrier; warpgroups
// 1 and 2 each compute 64 rows x BN of the 128 x BN tile with wgmma and free a stage (its empty
// barrier, one arrival per consumer warp) once their products on it are done. The producer runs
// ahead into the next tile while the consumers store this one's C.
template <int BN_, int Stages_, int Cluster_>
struct TmaConfig {
  static constexpr int BM = 128, BN = BN_, BK = 64, Stages = Stages_;
  // Cluster 2: pairs of blocks on tiles m0 and m0 + 128 of the same columns; each loads half of
  // their B tile, multicast to both (BN = 256: two thirds of the bytes from L2 a block). The host
  // counts tiles of 256 x BN then, one per cluster.
  static constexpr int Cluster = Cluster_;
  // One block a multiprocessor (two would cap every thread at 80 registers, too few for wgmma's
  // accumulators): the producer's registers drop to 40, the consumers' rise to 232.
  static constexpr int ProducerRegs = 40, ConsumerRegs = 232;
  static constexpr int Threads = 384;
  static constexpr uint32_t kTileA = BM * BK * 2, kTileB = BN * BK * 2, kStage = kTileA + kTileB;
  static constexpr size_t kSmem = Stages * kStage + 1024 + 2 * Stages * 8;  // stages, alignment, barriers
  static_assert((BN == 128 || BN == 256) && (Cluster == 1 || Cluster == 2), "shape");
};

// A problem's tensor maps in the descriptors: A then B, 128 bytes each.
constexpr int kMapBytes = 256;

template <class C, bool TA, bool TB>
__global__ void __launch_bounds__(C::Threads, 1)
    grouped_gemm_tma_kernel(const GroupedProblem* ps, const int* first_tile, const char* maps, int n_problems,
                            int tiles) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) uint8_t tma_smem[];
  const uint32_t base = (shared_address(tma_smem) + 1023) & ~1023u;  // stage s: A at base + s kStage, then B
  const uint32_t full = base + C::Stages * C::kStage, empty = full + C::Stages * 8;  // barrier s at + 8 s
  constexpr int S = C::Stages, Cl = C::Cluster, Unit = C::BM * Cl;  // a cluster's rows
  const uint32_t rank = Cl > 1 ? wgmma::cluster_rank() : 0;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      wgmma::mbar_init(full + 8 * s, 1);
      wgmma::mbar_init(empty + 8 * s, 8 * Cl);  // the consumers' 8 warps in each block of the cluster
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if constexpr (Cl > 1)
    wgmma::cluster_sync();
  else
    __syncthreads();
  const int wg = threadIdx.x / 128;
  const int first = blockIdx.x / Cl, stride = gridDim.x / Cl;  // the cluster's tiles
  if (wg == 0) {  // the producer
    wgmma::setmaxnreg_dec<C::ProducerRegs>();
    if (threadIdx.x == 0) {
      int stage = 0;
      uint32_t phase = 0;
      for (int tile = first; tile < tiles; tile += stride) {
        const int lo = find_problem(first_tile, n_problems, tile);
        const GroupedProblem& p = ps[lo];
        const int tiles_n = (p.n + C::BN - 1) / C::BN, local = tile - first_tile[lo];
        const int m0 = local / tiles_n * Unit + rank * C::BM, n0 = local % tiles_n * C::BN;
        const char* map_a = maps + kMapBytes * (size_t)lo;
        const char* map_b = map_a + 128;
        wgmma::tensormap_acquire(map_a);
        wgmma::tensormap_acquire(map_b);
        const int steps = (p.k + C::BK - 1) / C::BK;
        for (int step = 0; step < steps; ++step) {
          wgmma::mbar_wait(empty + 8 * stage, phase ^ 1);  // a fresh barrier passes parity 1 at once
          const uint32_t bar = full + 8 * stage, sa = base + stage * C::kStage, sb = sa + C::kTileA;
          wgmma::mbar_expect_tx(bar, C::kStage);
          const int k0 = step * C::BK;
          if constexpr (TA) {  // [k][m]: blocks of 64 m
#pragma unroll
            for (int b = 0; b < C::BM / 64; ++b) wgmma::tma_load_2d(sa + b * 8192, map_a, m0 + 64 * b, k0, bar);
          } else {
            wgmma::tma_load_2d(sa, map_a, k0, m0, bar);
          }
          // B: this block's share (all of it, or half to each block of the pair).
          if constexpr (TB) {  // [n][k]: BN / Cl rows
            constexpr int rows = C::BN / Cl;
            if constexpr (Cl > 1)
              wgmma::tma_load_2d_multicast(sb + rank * rows * 128, map_b, k0, n0 + rank * rows, bar, 3);
            else
              wgmma::tma_load_2d(sb, map_b, k0, n0, bar);
          } else {  // [k][n]: blocks of 64 n
            constexpr int blocks = C::BN / 64 / Cl;
#pragma unroll
            for (int b = rank * blocks; b < (rank + 1) * blocks; ++b) {
              if constexpr (Cl > 1)
                wgmma::tma_load_2d_multicast(sb + b * 8192, map_b, n0 + 64 * b, k0, bar, 3);
              else
                wgmma::tma_load_2d(sb + b * 8192, map_b, n0 + 64 * b, k0, bar);
            }
          }
          if (++stage == S) stage = 0, phase ^= 1;
        }
      }
    }
  } else {
    wgmma::setmaxnreg_inc<C::ConsumerRegs>();
    const int cw = wg - 1;  // the consumer's rows: 64 cw + [0, 64) of the tile
    const int lane = threadIdx.x % 32, warp = threadIdx.x % 128 / 32;
    int stage = 0;
    uint32_t phase = 0;
    // wgmma's operands are K-major unless transposed: A is MN-major where TA, B where !TB.
    const uint64_t desc_a0 =
        TA ? wgmma::descriptor(base + cw * 8192, 8192, 1024) : wgmma::descriptor(base + cw * 64 * 128, 16, 1024);
    const uint64_t desc_b0 =
        TB ? wgmma::descriptor(base + C::kTileA, 16, 1024) : wgmma::descriptor(base + C::kTileA, 8192, 1024);
    constexpr uint64_t a_k16 = TA ? 128 : 2, b_k16 = TB ? 2 : 128, stage_step = C::kStage >> 4;
    // Frees a stage: in every block whose producer writes it.
    auto release = [&](int st) {
      if (lane != 0) return;
      if constexpr (Cl > 1) {
#pragma unroll
        for (int r = 0; r < Cl; ++r) wgmma::mbar_arrive_cluster(empty + 8 * st, r);
      } else {
        wgmma::mbar_arrive(empty + 8 * st);
      }
    };
    float acc[C::BN / 2];
    for (int tile = first; tile < tiles; tile += stride) {
      const int lo = find_problem(first_tile, n_problems, tile);
      const GroupedProblem p = ps[lo];
      const int tiles_n = (p.n + C::BN - 1) / C::BN, local = tile - first_tile[lo];
      const int m0 = local / tiles_n * Unit + rank * C::BM, n0 = local % tiles_n * C::BN;
      const int steps = (p.k + C::BK - 1) / C::BK;
#pragma unroll
      for (int j = 0; j < C::BN / 2; ++j) acc[j] = 0.f;
      int prev = -1;  // the stage of the previous step, freed once its products are done
      for (int step = 0; step < steps; ++step) {
        wgmma::mbar_wait(full + 8 * stage, phase);
        wgmma::fence_operands(acc);
        wgmma::fence();
#pragma unroll
        for (int kk = 0; kk < C::BK / 16; ++kk)
          wgmma::mma<C::BN, TA, !TB>(acc, desc_a0 + stage * stage_step + kk * a_k16,
                                     desc_b0 + stage * stage_step + kk * b_k16, 1);
        wgmma::commit();
        wgmma::wait<1>();
        wgmma::fence_operands(acc);
        if (prev >= 0) release(prev);
        prev = stage;
        if (++stage == S) stage = 0, phase ^= 1;
      }
      wgmma::wait<0>();
      wgmma::fence_operands(acc);
      release(prev);

      // Accumulators 4 j + 2 h + {0, 1}: row 16 warp + lane / 4 + 8 h, columns 8 j + lane % 4 * 2 + {0, 1}.
      const bool pairs = m0 + C::BM <= p.m && n0 + C::BN <= p.n && p.ldc % 2 == 0 &&
                         reinterpret_cast<uintptr_t>(p.c) % 8 == 0;
      store_c<C::BN>(p, acc, m0 + cw * 64 + warp * 16 + lane / 4, n0 + lane % 4 * 2, pairs);
    }
  }
  // No block leaves while the other of its pair may still arrive on its barriers.
  if constexpr (Cl > 1) wgmma::cluster_sync();
#else
  (void)ps;
  (void)first_tile;
  (void)maps;
  (void)n_problems;
  (void)tiles;
#endif
}

template <class C, bool TA, bool TB>
void launch_tma(const GroupedProblem* ps, const int* first_tile, const char* maps, int n_problems, int tiles,
                int sms, cudaStream_t s) {
  static_assert(C::ProducerRegs + 2 * C::ConsumerRegs <= 65536 / 128, "registers of one block a multiprocessor");
  auto* kernel = grouped_gemm_tma_kernel<C, TA, TB>;
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute cluster[1];
  cluster[0].id = cudaLaunchAttributeClusterDimension;
  cluster[0].val.clusterDim.x = C::Cluster;
  cluster[0].val.clusterDim.y = 1;
  cluster[0].val.clusterDim.z = 1;
  cfg.blockDim = dim3(C::Threads);
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = s;
  cfg.attrs = cluster;
  cfg.numAttrs = 1;
  static const int clusters = [&] {  // as many as fit at once
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)C::kSmem));
    cudaLaunchConfig_t probe = cfg;
    probe.gridDim = dim3(C::Cluster * (sms / C::Cluster));
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveClusters(&n, kernel, &probe));
    return std::max(1, n);
  }();
  cfg.gridDim = dim3(C::Cluster * std::min(tiles, clusters));
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, ps, first_tile, maps, n_problems, tiles));
}
using LaunchTma = void (*)(const GroupedProblem*, const int*, const char*, int, int, int, cudaStream_t);
template <class C>
LaunchTma pick_tma(bool ta, bool tb) {
  return ta ? (tb ? launch_tma<C, true, true> : launch_tma<C, true, false>)
            : (tb ? launch_tma<C, false, true> : launch_tma<C, false, false>);
}
using TmaBlock2 = TmaConfig<256, 4, 1>;
using TmaBlock3 = TmaConfig<256, 4, 2>;

// The tensor maps of a problem's operands (bf16, 128-byte swizzle, boxes of 64 along the contiguous
// dimension): K-major ones (A [m][k], B [n][k]) one box of 64 k x 128 rows of A or a block's share
// of B's BN rows a step, MN-major ones ([k][m], [k][n]) boxes of 64 x 64.
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiled encode_tiled() {
  static EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    DSMOE_CHECK(f && q == cudaDriverEntryPointSuccess, "grouped GEMM: no cuTensorMapEncodeTiled in the driver");
    return reinterpret_cast<EncodeTiled>(f);
  }();
  return fn;
}
void encode_map(CUtensorMap* map, const void* p, int contiguous, int rows, int ld, int box_rows) {
  const cuuint64_t dims[2] = {(cuuint64_t)contiguous, (cuuint64_t)rows}, strides[1] = {(cuuint64_t)ld * 2};
  const cuuint32_t box[2] = {64, (cuuint32_t)box_rows}, one[2] = {1, 1};
  const CUresult r = encode_tiled()(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(p), dims, strides, box,
                                    one, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  DSMOE_CHECK(r == CUDA_SUCCESS, "grouped GEMM: cuTensorMapEncodeTiled failed (", (int)r, ")");
}

// The kernels: DSMOE_GROUPED_GEMM_WGMMA=0 the mma.sync one (any GPU), 1 the cp.async wgmma one, 2 and
// 3 the TMA ones (TmaBlock2, 3); unset, a batch whose mean k exceeds kLongK takes 3, another 1 (where
// the GPU's code has wgmma; else 0).
constexpr int kAutoVariant = 100;
constexpr double kLongK = 640;
using WgBlock1 = WgConfig<128, 128, 3, 0, 2>;

using Launch = void (*)(const GroupedProblem*, const int*, int, int, cudaStream_t);
template <class C, bool Wgmma>
Launch pick(bool ta, bool tb) {
  if constexpr (Wgmma)
    return ta ? (tb ? launch_wgmma<C, true, true> : launch_wgmma<C, true, false>)
              : (tb ? launch_wgmma<C, false, true> : launch_wgmma<C, false, false>);
  else
    return ta ? (tb ? launch<C, true, true> : launch<C, true, false>)
              : (tb ? launch<C, false, true> : launch<C, false, false>);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool grouped_gemm_fits(const GroupedProblem& p) {
  return p.m > 0 && p.n > 0 && p.k > 0 && aligned16(p.a) && aligned16(p.b) && p.lda % 8 == 0 && p.ldb % 8 == 0;
}

GroupedGemm::~GroupedGemm() {
  for (Slot& s : slots_) {
    if (s.done) cudaEventDestroy(s.done);
    cudaFreeHost(s.host);
    cudaFree(s.dev);
  }
}

void GroupedGemm::run(const std::vector<GroupedProblem>& ps, bool trans_a, bool trans_b, cudaStream_t s) {
  if (ps.empty()) return;
  if (variant_ < 0) {  // once: wgmma where this device's code has it, unless DSMOE_GROUPED_GEMM_WGMMA says otherwise
    int compiled = 0, device = 0;
    CUDA_CHECK(cudaMemcpyFromSymbolAsync(&compiled, grouped_wgmma_compiled, sizeof compiled, 0,
                                         cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
    const char* env = std::getenv("DSMOE_GROUPED_GEMM_WGMMA");
    const int forced = env && env[0] >= '0' && env[0] <= '3' && !env[1] ? env[0] - '0' : -1;
    variant_ = !compiled ? 0 : forced >= 0 ? forced : kAutoVariant;
  }
  int variant = variant_;
  if (variant == kAutoVariant) {  // by the batch's mean k (weighted by m n): C's bytes per product
    double mnk = 0, mn = 0;
    for (const GroupedProblem& p : ps) {
      mnk += (double)p.m * p.n * p.k;
      mn += (double)p.m * p.n;
    }
    variant = mnk > kLongK * mn ? 3 : 1;
  }
  const bool tma = variant >= 2;
  const int n = static_cast<int>(ps.size());
  const size_t maps_at = (n * (sizeof(GroupedProblem) + sizeof(int)) + 127) / 128 * 128;
  const size_t bytes = tma ? maps_at + kMapBytes * (size_t)n : n * (sizeof(GroupedProblem) + sizeof(int));
  Slot& slot = slots_[next_];
  next_ = (next_ + 1) % kSlots;
  if (slot.done)
    CUDA_CHECK(cudaEventSynchronize(slot.done));  // its last launch has read the descriptors
  else
    CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
  if (slot.bytes < bytes) {
    CUDA_CHECK(cudaFreeHost(slot.host));
    CUDA_CHECK(cudaFree(slot.dev));
    slot.bytes = std::max<size_t>(2 * bytes, 64 << 10);
    CUDA_CHECK(cudaMallocHost(&slot.host, slot.bytes));
    CUDA_CHECK(cudaMalloc(&slot.dev, slot.bytes));
  }
  int bm = Block::BM, bn = Block::BN, cluster = 1;
  Launch go = pick<Block, false>(trans_a, trans_b);
  LaunchTma go_tma = nullptr;
  auto use_tma = [&](auto config) {
    using C = decltype(config);
    bm = C::BM * C::Cluster, bn = C::BN, cluster = C::Cluster, go_tma = pick_tma<C>(trans_a, trans_b);
  };
  if (variant == 1)
    bm = WgBlock1::BM, bn = WgBlock1::BN, go = pick<WgBlock1, true>(trans_a, trans_b);
  else if (variant == 2)
    use_tma(TmaBlock2{});
  else if (variant == 3)
    use_tma(TmaBlock3{});
  const int box_m = 128;  // a block's rows of A
  auto* problems = reinterpret_cast<GroupedProblem*>(slot.host);
  int* first_tile = reinterpret_cast<int*>(slot.host + n * sizeof(GroupedProblem));
  auto* maps = reinterpret_cast<CUtensorMap*>(slot.host + maps_at);
  int64_t tiles = 0;
  for (int i = 0; i < n; ++i) {
    const GroupedProblem& p = ps[i];
    problems[i] = p;
    first_tile[i] = static_cast<int>(tiles);
    tiles += (int64_t)((p.m + bm - 1) / bm) * ((p.n + bn - 1) / bn);
    DSMOE_CHECK(tiles < INT_MAX, "grouped GEMM: too many tiles");
    if (tma) {  // A stored [k][m] or [m][k], B stored [n][k] or [k][n]
      CUtensorMap* m = maps + 2 * i;
      if (trans_a)
        encode_map(&m[0], p.a, p.m, p.k, p.lda, 64);
      else
        encode_map(&m[0], p.a, p.k, p.m, p.lda, box_m);
      if (trans_b)
        encode_map(&m[1], p.b, p.k, p.n, p.ldb, bn / cluster);  // a block's share of B
      else
        encode_map(&m[1], p.b, p.n, p.k, p.ldb, 64);
    }
  }
  CUDA_CHECK(cudaMemcpyAsync(slot.dev, slot.host, bytes, cudaMemcpyHostToDevice, s));
  const auto* dev_problems = reinterpret_cast<const GroupedProblem*>(slot.dev);
  const auto* dev_first = reinterpret_cast<const int*>(slot.dev + n * sizeof(GroupedProblem));
  if (tma)
    go_tma(dev_problems, dev_first, slot.dev + maps_at, n, static_cast<int>(tiles), sms_, s);
  else
    go(dev_problems, dev_first, n, static_cast<int>(tiles), s);
  CUDA_CHECK(cudaEventRecord(slot.done, s));
}

}  // namespace dsmoe::cuda
