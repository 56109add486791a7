#include "kernels/grouped_gemm.cuh"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_check.cuh"

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
  int lo = 0, hi = n_problems - 1;  // the last problem starting at or before this tile
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_tile[mid] <= tile)
      lo = mid;
    else
      hi = mid - 1;
  }
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
  const int n = static_cast<int>(ps.size());
  const size_t bytes = n * (sizeof(GroupedProblem) + sizeof(int));
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
  auto* problems = reinterpret_cast<GroupedProblem*>(slot.host);
  int* first_tile = reinterpret_cast<int*>(slot.host + n * sizeof(GroupedProblem));
  int64_t tiles = 0;
  for (int i = 0; i < n; ++i) {
    problems[i] = ps[i];
    first_tile[i] = static_cast<int>(tiles);
    tiles += (int64_t)((ps[i].m + Block::BM - 1) / Block::BM) * ((ps[i].n + Block::BN - 1) / Block::BN);
    DSMOE_CHECK(tiles < INT_MAX, "grouped GEMM: too many tiles");
  }
  CUDA_CHECK(cudaMemcpyAsync(slot.dev, slot.host, bytes, cudaMemcpyHostToDevice, s));
  const auto* dev_problems = reinterpret_cast<const GroupedProblem*>(slot.dev);
  const auto* dev_first = reinterpret_cast<const int*>(slot.dev + n * sizeof(GroupedProblem));
  auto go = trans_a ? (trans_b ? launch<Block, true, true> : launch<Block, true, false>)
                    : (trans_b ? launch<Block, false, true> : launch<Block, false, false>);
  go(dev_problems, dev_first, n, static_cast<int>(tiles), s);
  CUDA_CHECK(cudaEventRecord(slot.done, s));
}

}  // namespace dsmoe::cuda
