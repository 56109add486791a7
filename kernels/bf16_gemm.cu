#include "kernels/bf16_gemm.cuh"

#include <algorithm>
#include <numeric>

#include "kernels/cuda_check.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

// An output's first byte and the bytes it spans (outputs may be stored in fp32 or bf16).
const char* out_begin(const GemmArgs<float>& g) { return static_cast<const char*>(g.c.raw()); }
int64_t out_bytes(const GemmArgs<float>& g) { return g.extent_c() * static_cast<int64_t>(g.c.element_bytes()); }

// Whether the outputs of g and h share an element. Blocks of one leading dimension and storage
// compare by rows and columns (the gate and up halves of one buffer interleave without meeting),
// others by the address ranges they span.
bool outputs_meet(const GemmArgs<float>& g, const GemmArgs<float>& h) {
  const char *gc = out_begin(g), *hc = out_begin(h);
  if (gc + out_bytes(g) <= hc || hc + out_bytes(h) <= gc) return false;
  const int64_t ld = g.ldc, size = static_cast<int64_t>(g.c.element_bytes());
  if (h.ldc != ld || h.c.element_bytes() != g.c.element_bytes() || (hc - gc) % size != 0 || g.n > ld || h.n > ld)
    return true;
  // h's first element lies at row r, column col of g's block (col in [0, ld)).
  const int64_t d = (hc - gc) / size;
  int64_t r = d / ld, col = d % ld;
  if (col < 0) col += ld, --r;
  if (col + h.n > ld) return true;  // h's rows wrap around g's: taken as meeting
  return col < g.n && r < g.m && r + h.m > 0;
}

// The pairs (later, earlier) of problems whose outputs meet, in batch order. Outputs are compared
// in address order, each only with those starting less than the longest output before it.
std::vector<std::pair<int, int>> meeting(const std::vector<GemmArgs<float>>& gs) {
  const int n = static_cast<int>(gs.size());
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int x, int y) { return out_begin(gs[x]) < out_begin(gs[y]); });
  int64_t longest = 0;
  for (const auto& g : gs) longest = std::max(longest, out_bytes(g));
  std::vector<std::pair<int, int>> meet;
  for (int i = 0; i < n; ++i)
    for (int j = i - 1; j >= 0 && out_begin(gs[order[j]]) + longest > out_begin(gs[order[i]]); --j)
      if (outputs_meet(gs[order[j]], gs[order[i]]))
        meet.emplace_back(std::max(order[i], order[j]), std::min(order[i], order[j]));
  std::sort(meet.begin(), meet.end());
  return meet;
}

// The stream of each problem for one launch per problem: problems whose outputs meet (directly or
// through others) share a stream, where they run in batch order; the groups take turns.
std::vector<int> streams(int n, const std::vector<std::pair<int, int>>& meet, int n_streams) {
  std::vector<int> root(n);
  std::iota(root.begin(), root.end(), 0);
  auto find = [&](int x) {
    while (root[x] != x) x = root[x] = root[root[x]];
    return x;
  };
  for (const auto& [later, earlier] : meet) {  // a group's root is its earliest problem
    const int a = find(later), b = find(earlier);
    root[std::max(a, b)] = std::min(a, b);
  }
  std::vector<int> stream(n);
  int next = 0;
  for (int p = 0; p < n; ++p) stream[p] = find(p) == p ? next++ % n_streams : stream[find(p)];
  return stream;
}

}  // namespace

void Bf16Gemm::set_weights(const float* w, int64_t n) {
  weights_ = w;
  n_weights_ = n;
  mirror_.reset(be_, n);
  stale_ = true;
}

void* Bf16Gemm::current_copy_of(const float* p, int64_t n) {
  if (!weights_ || stale_ || p < weights_ || p + n > weights_ + n_weights_) return nullptr;
  return mirror_.data() + (p - weights_);
}

void Bf16Gemm::written(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  const char* w = reinterpret_cast<const char*>(weights_);
  if (weights_ && c < w + n_weights_ * sizeof(float) && w < c + bytes) stale_ = true;
}

const void* Bf16Gemm::operand(Ptr<const float> stored) {
  if (stored.is_bf16()) return stored.raw();
  const float* p = stored.get();
  if (weights_ && p >= weights_ && p < weights_ + n_weights_) return mirror_.data() + (p - weights_);
  // The segment holding p: the last one starting at or before it.
  size_t i = std::upper_bound(segments_.begin(), segments_.end(), p,
                              [](const float* q, const Span& s) { return q < s.p; }) -
             segments_.begin() - 1;
  return work_.data() + seg_at_[i] + (p - segments_[i].p);
}

// Merges overlapping, touching or nearly touching spans (a gap under an eighth of the segment is
// converted too: one pass beats several) and converts each segment into the workspace, placed so
// that an element keeps its fp32 address's alignment modulo 16 bytes of bf16.
void Bf16Gemm::stage(const std::vector<Span>& spans, cudaStream_t s) {
  std::vector<Span> sorted;
  for (const Span& sp : spans)
    if (sp.n > 0 && !(weights_ && sp.p >= weights_ && sp.p < weights_ + n_weights_)) sorted.push_back(sp);
  std::sort(sorted.begin(), sorted.end(), [](const Span& a, const Span& b) { return a.p < b.p; });
  segments_.clear();
  for (const Span& sp : sorted) {
    if (!segments_.empty()) {
      Span& last = segments_.back();
      const float* end = last.p + last.n;
      if (sp.p <= end + last.n / 8) {
        last.n = std::max(last.n, (int64_t)(sp.p + sp.n - last.p));
        continue;
      }
    }
    segments_.push_back(sp);
  }
  seg_at_.clear();
  int64_t total = 0;
  for (const Span& sp : segments_) {
    const int64_t shift = (reinterpret_cast<uintptr_t>(sp.p) / sizeof(float)) % 8;
    total = (total + 7) / 8 * 8 + shift;
    seg_at_.push_back(total);
    total += sp.n;
  }
  work_.ensure(be_, std::max<int64_t>(total, 1));
  for (size_t i = 0; i < segments_.size(); ++i) to_bf16(work_.data() + seg_at_[i], segments_[i].p, segments_[i].n, s);
}

namespace {

constexpr size_t kLtWorkspace = size_t{8} << 20;  // per stream

int alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int bytes = 16;
  while (bytes > 1 && a % bytes != 0) bytes /= 2;
  return bytes;
}

// The size class of a dimension that changes from step to step (rows per expert): the next power
// of two, so that one algorithm serves all sizes of the class.
int size_class(int n) {
  int c = 16;
  while (c < n) c *= 2;
  return c;
}

struct Layouts {
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  Layouts(bool ta, bool tb, int M, int N, int K, int lda, int ldb, int ldc, bool c_bf16) {
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, ta ? K : M, ta ? M : K, std::max(lda, ta ? K : M)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, tb ? N : K, tb ? K : N, std::max(ldb, tb ? N : K)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c, c_bf16 ? CUDA_R_16BF : CUDA_R_32F, M, N, std::max(ldc, M)));
  }
  ~Layouts() {
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(c);
  }
};

}  // namespace

Bf16Gemm::Bf16Gemm(Backend<float>& be) : be_(be) {
  CUBLAS_CHECK(cublasLtCreate(&lt_));
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      cublasLtMatmulDesc_t& d = desc_[ta][tb];
      CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t oa = op(ta), ob = op(tb);
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob));
    }
  CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
  for (int i = 0; i < kStreams; ++i) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&streams_[i], cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&joins_[i], cudaEventDisableTiming));
  }
}

Bf16Gemm::~Bf16Gemm() {
  for (int i = 0; i < kStreams; ++i) {
    cudaStreamDestroy(streams_[i]);
    cudaEventDestroy(joins_[i]);
  }
  cudaEventDestroy(fork_);
  for (auto& row : desc_)
    for (auto& d : row) cublasLtMatmulDescDestroy(d);
  cublasLtDestroy(lt_);
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: M = n, N = m, K = k. N (rows
// per expert) and K (the weight gradients' reduction over rows) vary; M and the strides do not.
void Bf16Gemm::matmul(const GemmArgs<float>& g, cudaStream_t s, void* workspace) {
  const bool ta = g.trans_b, tb = g.trans_a;
  const int M = g.n, N = g.m, K = g.k;
  const void *A = operand(g.b), *B = operand(g.a);
  void* C = g.c.raw();
  const bool c_bf16 = g.c.is_bf16();
  const int al_a = alignment(A), al_b = alignment(B);
  const int al_c = g.c_in ? std::min(alignment(C), alignment(g.c_in)) : alignment(C);
  const ShapeClass key{ta, tb, M, size_class(N), size_class(K), g.ldb, g.lda, g.ldc,
                       al_a * 256 + al_b * 16 + al_c, c_bf16};
  const cublasLtMatmulDesc_t desc = desc_[ta][tb];
  auto choose = [&](int n, int k, cublasLtMatmulAlgo_t* algo) {
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kLtWorkspace;
    const uint32_t aa = al_a, ab = al_b, ac = al_c;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac));
    Layouts l(ta, tb, M, n, k, g.ldb, g.lda, g.ldc, c_bf16);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_, desc, l.a, l.b, l.c, l.c, pref, 1, &result, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    DSMOE_CHECK(found > 0, "cuBLASLt has no algorithm for a ", M, " x ", n, " x ", k, " product");
    *algo = result.algo;
  };
  auto it = algos_.find(key);
  if (it == algos_.end()) {
    cublasLtMatmulAlgo_t algo;
    choose(std::get<3>(key), std::get<4>(key), &algo);
    it = algos_.emplace(key, algo).first;
  }
  Layouts l(ta, tb, M, N, K, g.ldb, g.lda, g.ldc, c_bf16);
  DSMOE_CHECK(!g.c_in || !c_bf16, "a product with c_in writes fp32");
  const void* C_in = g.c_in ? g.c_in : C;  // the term beta multiplies; C is written
  cublasStatus_t st = cublasLtMatmul(lt_, desc, &g.alpha, A, l.a, B, l.b, &g.beta, C_in, l.c, C, l.c, &it->second,
                                     workspace, kLtWorkspace, s);
  if (st != CUBLAS_STATUS_SUCCESS) {  // the class's algorithm does not fit this size: choose for it
    cublasLtMatmulAlgo_t algo;
    choose(N, K, &algo);
    st = cublasLtMatmul(lt_, desc, &g.alpha, A, l.a, B, l.b, &g.beta, C_in, l.c, C, l.c, &algo, workspace,
                        kLtWorkspace, s);
  }
  CUBLAS_CHECK(st);
}

void Bf16Gemm::run(const std::vector<GemmArgs<float>>& gs, cudaStream_t s) {
  if (weights_ && stale_) {
    to_bf16(mirror_.data(), weights_, n_weights_, s);
    stale_ = false;
  }
  std::vector<Span> spans;
  for (const GemmArgs<float>& g : gs) {  // the operands stored in fp32
    if (!g.a.is_bf16()) spans.push_back({g.a.get(), g.extent_a()});
    if (!g.b.is_bf16()) spans.push_back({g.b.get(), g.extent_b()});
  }
  stage(spans, s);
  if (gs.empty()) return;
  if (gs.size() == 1) return on_streams({&gs[0]}, s);
  std::vector<const GemmArgs<float>*> all;
  for (const GemmArgs<float>& g : gs) all.push_back(&g);
  on_streams(all, s, streams(static_cast<int>(gs.size()), meeting(gs), kStreams));
}

// Problem p on streams_[stream[p] % kStreams] (one problem: on s).
void Bf16Gemm::on_streams(const std::vector<const GemmArgs<float>*>& gs, cudaStream_t s,
                          const std::vector<int>& stream) {
  if (gs.empty()) return;
  if (lt_work_.size() == 0) lt_work_.reset(be_, (int64_t)kLtWorkspace * kStreams);
  if (gs.size() == 1) return matmul(*gs[0], s, lt_work_.data());
  // Fork: the streams start after what s has queued (the staging); s continues after all of them.
  CUDA_CHECK(cudaEventRecord(fork_, s));
  for (int i = 0; i < kStreams; ++i) CUDA_CHECK(cudaStreamWaitEvent(streams_[i], fork_, 0));
  for (size_t p = 0; p < gs.size(); ++p) {
    const int i = stream[p] % kStreams;
    matmul(*gs[p], streams_[i], lt_work_.data() + i * kLtWorkspace);
  }
  for (int i = 0; i < kStreams; ++i) {
    CUDA_CHECK(cudaEventRecord(joins_[i], streams_[i]));
    CUDA_CHECK(cudaStreamWaitEvent(s, joins_[i], 0));
  }
}

}  // namespace dsmoe::cuda
