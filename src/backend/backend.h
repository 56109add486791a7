// The one interface every layer's math goes through. A backend owns memory and the ops below;
// the model, MoE layer and optimizer never touch buffer contents except through these ops or
// explicit to_host/to_device copies, so a CUDA backend plugs in without touching model code.
// T is the compute type: float for training, double for finite-difference tests on CPU.
// Shapes are in comments as [rows, cols], row-major. Operands passed as Ptr may be stored in bf16
// where the backend stores activations so (bf16_storage()); T* ones are always in T.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/ptr.h"
#include "routing/route_stats.h"
#include "routing/sort_pairs.h"

namespace dsmoe {

template <typename T>
struct GemmArgs {  // C = alpha * op(A) op(B) + beta * C (or beta * c_in), row-major, as cblas_?gemm
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;
  T alpha = 1;
  Ptr<const T> a;
  int lda = 0;
  Ptr<const T> b;
  int ldb = 0;
  T beta = 0;
  Ptr<T> c;
  int ldc = 0;
  bool fp32 = false;  // full fp32 products even under bf16 precision (the router, as large frameworks do)
  // Where set, the term that beta multiplies, [m, n] with ldc, instead of C, which is then only
  // written: a residual added by the product itself. C and c_in are stored in T.
  const T* c_in = nullptr;

  // Elements each operand spans, row-major with its leading dimension.
  static int64_t extent(int rows, int cols, int ld) {
    return rows == 0 || cols == 0 ? 0 : (int64_t)(rows - 1) * ld + cols;
  }
  int64_t extent_a() const { return trans_a ? extent(k, m, lda) : extent(m, k, lda); }
  int64_t extent_b() const { return trans_b ? extent(n, k, ldb) : extent(k, n, ldb); }
  int64_t extent_c() const { return extent(m, n, ldc); }
};

template <typename T>
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Memory (zero-initialized) and copies between host and backend memory.
  virtual void* alloc_bytes(size_t bytes) = 0;
  virtual void free_bytes(void* p) = 0;
  virtual void copy_bytes_to_host(void* host, const void* src, size_t bytes) = 0;
  virtual void copy_bytes_to_device(void* dst, const void* host, size_t bytes) = 0;
  virtual size_t peak_bytes() const = 0;
  // Waits until the queued work is done (a GPU runs asynchronously; the CPU is always done).
  virtual void synchronize() {}
  // Starts (or starts over) the backend's op profile, where it can keep one: `dsmoe bench
  // --profile` calls it after the warm-up steps, so that the profile shows the steady steps;
  // it goes to stderr when the backend is destroyed. False: this backend keeps none.
  virtual bool start_profile() { return false; }
  // The parameter buffer, which changes only through this backend's ops or, announced with
  // written_by_collective, a collective: a backend may keep a low-precision copy of it for its
  // matrix products (bf16 on CUDA).
  virtual void set_weights(const T* /*w*/, int64_t /*n*/) {}
  // A collective (all-gather of updated parameters) has written [x, x + n): copies of it are outdated.
  virtual void written_by_collective(T* /*x*/, int64_t /*n*/) {}
  // Whether activations that the model marks so (ActBuf) are stored in bf16: the CUDA backend
  // under precision: bf16, whose products round their inputs to bf16 anyway.
  virtual bool bf16_storage() const { return false; }

  // Elementwise.
  virtual void fill(T* x, T value, int64_t n) = 0;
  virtual void copy(T* dst, const T* src, int64_t n) = 0;
  virtual void add(T* y, const T* x, int64_t n) = 0;  // y += x
  virtual double sum_squares(const T* x, int64_t n) = 0;

  // Matrix products: one, or a list of independent problems (the routed experts).
  virtual void gemm(const GemmArgs<T>& g) = 0;
  virtual void gemm_batch(const std::vector<GemmArgs<T>>& gs) = 0;

  // out[r] = table[tokens[r]]                                   out [R, d], table [V, d]
  virtual void embedding_forward(T* out, const int32_t* tokens, const T* table, int rows, int d) = 0;
  // dtable[tokens[r]] += dout[r], in row order.                   dtable [vocab, d]
  virtual void embedding_backward(T* dtable, const int32_t* tokens, const T* dout, int rows, int d, int vocab) = 0;

  // out = x / sqrt(mean(x^2) + eps) * w; rstd [R] saved for backward.     x, out [R, d]
  virtual void rmsnorm_forward(Ptr<T> out, T* rstd, const T* x, const T* w, int rows, int d, double eps) = 0;
  // dx += ..., dw += ...
  virtual void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd,
                                int rows, int d) = 0;

  // Rotary embedding (rotate-half) on the q and k parts of qkv [B*T, 3*d] in place, row t of a
  // sequence at position first_pos + t; inverse=true rotates back (the backward of the forward
  // rotation).
  virtual void rope(Ptr<T> qkv, int batch, int seq, int n_heads, int head_dim, double theta, bool inverse,
                    int first_pos) = 0;

  // Causal attention. qkv [B*T, 3d] (q|k|v), out [B*T, d]; `saved` keeps what backward needs
  // (attention_saved_size elements: the [B, H, T, T] probabilities on the CPU, one log-sum-exp
  // per (sequence, head, query) with a fused kernel). qkv, out and dqkv share one storage.
  virtual int64_t attention_saved_size(int batch, int seq, int n_heads) const = 0;
  virtual void attention_forward(Ptr<T> out, T* saved, Ptr<const T> qkv, int batch, int seq, int n_heads,
                                 int head_dim) = 0;
  // The same for the queries at positions first..first+n-1 of one sequence only, over its
  // positions 0..first+n-1 (generation with a KV cache: the earlier ones are cached): qkv
  // [first+n, 3d] by position, out [n, d] the rows attention_forward writes for those queries.
  // Nothing is saved: there is no backward.
  virtual void attention_queries(Ptr<T> out, Ptr<const T> qkv, int first, int n, int n_heads, int head_dim) = 0;
  // dqkv [B*T, 3d] is written; out is attention_forward's; scratch holds attention_scratch_size.
  virtual int64_t attention_scratch_size(int batch, int seq, int n_heads) const = 0;
  virtual void attention_backward(Ptr<T> dqkv, T* scratch, const T* dout, Ptr<const T> qkv, Ptr<const T> out,
                                  const T* saved, int batch, int seq, int n_heads, int head_dim) = 0;

  // act[r] = scale[r] * silu(g) * u with gu [R, 2n] = [g | u], act [R, n], scale [R] (null: 1;
  // the routed experts' gates, applied on the experts' side).
  virtual void swiglu_forward(Ptr<T> act, Ptr<const T> gu, const T* scale, int rows, int n) = 0;
  // dgu [R, 2n] from dact [R, n]; with a scale also dscale[r] = dot(dact[r], silu(g) * u).
  virtual void swiglu_backward(Ptr<T> dgu, T* dscale, Ptr<const T> dact, Ptr<const T> gu, const T* scale, int rows,
                               int n) = 0;

  // Softmax cross-entropy: logits [R, V] are replaced by scale * dloss/dlogits,
  // losses [R] get -log p(target). Returns the sum of losses.
  virtual double cross_entropy(T* logits, T* losses, const int32_t* targets, int rows, int vocab,
                               T scale) = 0;

  // out[r] = idx[r] >= 0 ? in[idx[r]] : 0.                    out [n, d]
  virtual void gather_rows(Ptr<T> out, Ptr<const T> in, const int32_t* idx, int n, int d) = 0;
  // out[o] (= or +=) sum of in[idx[i]] for i in [offsets[o], offsets[o+1]).   out [n_out, d]
  virtual void sum_rows(T* out, Ptr<const T> in, const int32_t* offsets, const int32_t* idx, int n_out, int d,
                        bool accumulate) = 0;
  // The sum over a token's experts' results (gates already applied by the experts), reading
  // each pair's row where it lies (the dispatcher's unpermute fused in): out[r] += sum_k
  // y[idx[p]], p = r*K+k, over pairs with idx[p] >= 0.              out [R, d], idx [R*K]
  virtual void combine_rows(T* out, Ptr<const T> y, const int32_t* idx, int rows, int k, int d) = 0;
  // Its backward, scattered back to the rows: dy[idx[p]] = dout[r] where idx[p] >= 0 (other
  // rows of dy are left as they are).
  virtual void combine_rows_backward(Ptr<T> dy, const T* dout, const int32_t* idx, int rows, int k, int d) = 0;

  // The router's per-token part (routing/route_row.h) for `rows` tokens: logits [rows, N] and bias
  // [N] -> scores [rows, N], sel [rows, K], gate [rows, K].
  virtual void route_tokens(T* scores, int32_t* sel, T* gate, const T* logits, const float* bias,
                            const RouteRowSpec& spec, int rows) = 0;
  // Its balance statistics (routing/route_stats.h): scores [rows, N] and sel [rows, K] -> partial
  // [chunks, W] and this rank's totals [W + 1]; then, from the global totals, balance
  // [N + kBalanceLosses]; and its backward, dgate [rows, K] -> dlogits [rows, N] (logits read by
  // softmax_topk only, partial with the sequence-wise loss only).
  virtual void router_statistics(double* partial, double* totals, const T* scores, const int32_t* sel,
                                 const RouteStatsSpec& spec, int rows) = 0;
  virtual void router_balance(double* balance, const double* totals, const RouteStatsSpec& spec) = 0;
  virtual void router_backward(T* dlogits, const T* dgate, const T* scores, const int32_t* sel, const T* logits,
                               const double* balance, const double* partial, const RouteStatsSpec& spec,
                               double loss_scale, int rows) = 0;

  // The dispatcher's plan on one rank, every pair kept (routing/sort_pairs.h): sel [tokens, k] ->
  // counts [N] pairs per expert, pos [tokens*k] each pair's row in expert order, row_token
  // [tokens*k] each row's token, token_rows [tokens, k] each token's rows ascending; hist is
  // scratch [sort_chunks(tokens*k), N].
  virtual void sort_pairs(int32_t* counts, int32_t* pos, int32_t* row_token, int32_t* token_rows, int32_t* hist,
                          const int32_t* sel, int tokens, int k, int n_experts) = 0;

  // AdamW (torch.optim.AdamW) on n elements; step is 1-based.
  virtual void adamw(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1,
                     double beta2, double eps, double weight_decay, int64_t step, double grad_scale) = 0;
};

// Owning buffer of n elements of U in a backend's memory.
template <typename U>
class Buf {
 public:
  Buf() = default;
  template <typename T>
  Buf(Backend<T>& be, int64_t n) { reset(be, n); }
  ~Buf() { release(); }
  Buf(Buf&& o) noexcept { *this = std::move(o); }
  Buf& operator=(Buf&& o) noexcept {
    if (this != &o) {
      release();
      p_ = o.p_; n_ = o.n_; free_ = o.free_; owner_ = o.owner_;
      o.p_ = nullptr; o.n_ = 0;
    }
    return *this;
  }
  template <typename T>
  void reset(Backend<T>& be, int64_t n) {
    release();
    n_ = n;
    owner_ = &be;
    free_ = [](void* owner, void* p) { static_cast<Backend<T>*>(owner)->free_bytes(p); };
    p_ = static_cast<U*>(be.alloc_bytes(static_cast<size_t>(n) * sizeof(U)));
  }
  // Grows to at least n elements (contents are not kept). A buffer that has to grow again takes
  // a quarter more than asked, so sizes that drift upwards (expert rows) reallocate rarely.
  template <typename T>
  void ensure(Backend<T>& be, int64_t n) {
    if (p_ == nullptr)
      reset(be, n);
    else if (n > n_)
      reset(be, std::max(n, n_ + n_ / 4));
  }
  U* data() { return p_; }
  const U* data() const { return p_; }
  int64_t size() const { return n_; }
  operator U*() { return p_; }
  operator const U*() const { return p_; }
  operator Ptr<U>() { return p_; }
  operator Ptr<const U>() const { return p_; }

 private:
  void release() {
    if (p_) free_(owner_, p_);
    p_ = nullptr;
  }
  U* p_ = nullptr;
  int64_t n_ = 0;
  void (*free_)(void*, void*) = nullptr;
  void* owner_ = nullptr;
};

// n activations stored as the backend stores them (Backend::bf16_storage): in T, or in bf16.
template <typename T>
class ActBuf {
 public:
  // Grows to at least n elements, as Buf::ensure.
  void ensure(Backend<T>& be, int64_t n) {
    bf16_ = be.bf16_storage();
    bytes_.ensure(be, n * static_cast<int64_t>(bf16_ ? 2 : sizeof(T)));
  }
  Ptr<T> ptr() { return bf16_ ? Ptr<T>::bf16(bytes_.data()) : Ptr<T>(reinterpret_cast<T*>(bytes_.data())); }
  Ptr<const T> ptr() const { return const_cast<ActBuf*>(this)->ptr(); }
  operator Ptr<T>() { return ptr(); }
  operator Ptr<const T>() const { return ptr(); }

 private:
  Buf<uint8_t> bytes_;
  bool bf16_ = false;
};

// p as the backend stores activations: the view of a buffer of T that serves either storage.
template <typename T>
Ptr<T> stored(const Backend<T>& be, T* p) {
  return be.bf16_storage() ? Ptr<T>::bf16(p) : Ptr<T>(p);
}

template <typename T, typename U>
std::vector<U> to_host(Backend<T>& be, const U* src, int64_t n) {
  std::vector<U> out(static_cast<size_t>(n));
  be.copy_bytes_to_host(out.data(), src, static_cast<size_t>(n) * sizeof(U));
  return out;
}

template <typename T, typename U>
void to_device(Backend<T>& be, U* dst, const std::vector<U>& src) {
  be.copy_bytes_to_device(dst, src.data(), src.size() * sizeof(U));
}

}  // namespace dsmoe
