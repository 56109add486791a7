#include "backend/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <utility>

#include "backend/alloc_tracker.h"
#include "backend/blas_select.h"
#include "backend/cpu_blas.h"
#include "backend/rope_table.h"
#include "util/bf16.h"
#include "util/check.h"

namespace dsmoe {
namespace {

// Splits [0, n) into one fixed chunk per thread; the partition depends only on n and the
// thread count, which keeps reductions deterministic.
template <typename F>
void parallel_chunks(int64_t n, F&& f) {
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    if (lo < hi) f(lo, hi);
  }
}

// bf16 storage on the CPU (tests of what the storage changes: rows on the wire, rounding): an op
// whose operands are stored in bf16 runs on widened copies of them, and its outputs are rounded
// back to nearest even, as the CUDA kernels round what they store.
// widened: n elements of p as T: p itself, or their widened copy in `copy`.
template <typename T>
const T* widened(Ptr<const T> p, int64_t n, std::vector<T>& copy) {
  if (!p.is_bf16()) return p.get();
  const auto* b = static_cast<const uint16_t*>(p.raw());
  copy.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) copy[i] = static_cast<T>(bf16_value(b[i]));
  return copy.data();
}
template <typename T>
T* widened(Ptr<T> p, int64_t n, std::vector<T>& copy) {
  return const_cast<T*>(widened(Ptr<const T>(p), n, copy));
}
// Rounds widened(p)'s copy back into p, where p is stored in bf16.
template <typename T>
void narrow(Ptr<T> p, const std::vector<T>& copy) {
  if (!p.is_bf16()) return;
  auto* b = static_cast<uint16_t*>(p.raw());
  for (size_t i = 0; i < copy.size(); ++i) b[i] = bf16_bits(static_cast<float>(copy[i]));
}
// Rows an index list reaches: 1 + its largest entry.
int64_t rows_reached(const int32_t* idx, int64_t n) {
  int64_t top = -1;
  for (int64_t i = 0; i < n; ++i) top = std::max<int64_t>(top, idx[i]);
  return top + 1;
}

// Causal attention of one head, for the queries at positions first..first+n-1 of a sequence over
// its positions 0..first+n-1. qkv: the head's columns of the sequence's row 0 (rows [*, 3d], q|k|v);
// probs [n, first+n]: each query's softmax over the positions it sees, zeros after; out [n, d]:
// the head's columns of the queries' rows.
template <typename T>
void causal_attention_head(T* out, T* probs, const T* qkv, int first, int n, int n_heads, int head_dim) {
  const int d = n_heads * head_dim, ld = 3 * d, keys = first + n;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  cpu::gemm(GemmArgs<T>{false, true, n, keys, head_dim, scale, qkv + (int64_t)first * ld, ld, qkv + d, ld, T(0),
                        probs, keys});
  for (int i = 0; i < n; ++i) {
    T* row = probs + (int64_t)i * keys;
    const int seen = first + i + 1;
    T mx = row[0];
    for (int j = 1; j < seen; ++j) mx = std::max(mx, row[j]);
    double sum = 0;
    for (int j = 0; j < seen; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    T inv = static_cast<T>(1.0 / sum);
    for (int j = 0; j < seen; ++j) row[j] *= inv;
    for (int j = seen; j < keys; ++j) row[j] = 0;
  }
  cpu::gemm(GemmArgs<T>{false, false, n, head_dim, keys, T(1), probs, keys, qkv + 2 * d, ld, T(0), out, d});
}

template <typename T>
class CpuBackend final : public Backend<T> {
 public:
  explicit CpuBackend(bool bf16_storage) : bf16_storage_(bf16_storage) {}
  std::string name() const override { return "cpu"; }
  bool bf16_storage() const override { return bf16_storage_; }

  void* alloc_bytes(size_t bytes) override {
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, std::max<size_t>(rounded, 64));
    DSMOE_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes");
    std::memset(p, 0, rounded);
    allocs_.add(p, rounded);
    return p;
  }
  void free_bytes(void* p) override {
    allocs_.remove(p);
    std::free(p);
  }
  // memcpy of 0 bytes is still undefined with a null pointer (a rank that receives no rows).
  void copy_bytes_to_host(void* host, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(host, src, bytes);
  }
  void copy_bytes_to_device(void* dst, const void* host, size_t bytes) override {
    if (bytes) std::memcpy(dst, host, bytes);
  }
  size_t peak_bytes() const override { return allocs_.peak(); }

  void fill(T* x, T value, int64_t n) override {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) x[i] = value;
  }
  void copy(T* dst, const T* src, int64_t n) override {
    parallel_chunks(n, [&](int64_t lo, int64_t hi) { std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(T)); });
  }
  void add(T* y, const T* x, int64_t n) override {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }
  double sum_squares(const T* x, int64_t n) override {
    int nt = omp_get_max_threads();
    std::vector<double> part(nt, 0.0);
#pragma omp parallel num_threads(nt)
    {
      int t = omp_get_thread_num();
      int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      double s = 0;
      for (int64_t i = lo; i < hi; ++i) s += static_cast<double>(x[i]) * x[i];
      part[t] = s;
    }
    double s = 0;
    for (double p : part) s += p;
    return s;
  }

  void gemm(const GemmArgs<T>& g) override {
    if (g.m == 0 || g.n == 0) return;
    if (g.c_in) {  // copy it into C, which the product then adds to
      DSMOE_ASSERT(!g.c.is_bf16());
      if (g.c_in != g.c.get())
        for (int i = 0; i < g.m; ++i)
          std::memcpy(g.c.get() + (int64_t)i * g.ldc, g.c_in + (int64_t)i * g.ldc, g.n * sizeof(T));
      GemmArgs<T> w = g;
      w.c_in = nullptr;
      return gemm(w);
    }
    if (g.a.is_bf16() || g.b.is_bf16() || g.c.is_bf16()) {
      std::vector<T> a, b, c;
      GemmArgs<T> w = g;
      w.a = widened(g.a, g.extent_a(), a);
      w.b = widened(g.b, g.extent_b(), b);
      w.c = widened(g.c, g.extent_c(), c);
      gemm(w);
      return narrow(g.c, c);
    }
    if (g.k == 0) {  // BLAS leaves C alone when k = 0; the math says C = beta * C
      for (int i = 0; i < g.m; ++i)
        for (int j = 0; j < g.n; ++j) {
          T& c = g.c.get()[(int64_t)i * g.ldc + j];
          c = g.beta == T(0) ? T(0) : c * g.beta;  // as BLAS: beta = 0 overwrites, NaN included
        }
      return;
    }
    cpu::gemm(g);
  }
  void gemm_batch(const std::vector<GemmArgs<T>>& gs) override {
    for (const auto& g : gs) gemm(g);
  }

  void embedding_forward(T* out, const int32_t* tokens, const T* table, int rows, int d) override {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) std::memcpy(out + (int64_t)r * d, table + (int64_t)tokens[r] * d, d * sizeof(T));
  }
  void embedding_backward(T* dtable, const int32_t* tokens, const T* dout, int rows, int d, int /*vocab*/) override {
    // Threads own column ranges, so no two threads add to the same element.
    parallel_chunks(d, [&](int64_t lo, int64_t hi) {
      for (int r = 0; r < rows; ++r) {
        T* dst = dtable + (int64_t)tokens[r] * d;
        const T* src = dout + (int64_t)r * d;
        for (int64_t j = lo; j < hi; ++j) dst[j] += src[j];
      }
    });
  }

  void rmsnorm_forward(Ptr<T> out_ptr, T* rstd, const T* x, const T* w, int rows, int d, double eps) override {
    if (out_ptr.is_bf16()) {
      std::vector<T> o;
      rmsnorm_forward(widened(out_ptr, (int64_t)rows * d, o), rstd, x, w, rows, d, eps);
      return narrow(out_ptr, o);
    }
    T* out = out_ptr.get();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      const T* xr = x + (int64_t)r * d;
      T* o = out + (int64_t)r * d;
      double ss = 0;
      for (int j = 0; j < d; ++j) ss += static_cast<double>(xr[j]) * xr[j];
      T s = static_cast<T>(1.0 / std::sqrt(ss / d + eps));
      rstd[r] = s;
      for (int j = 0; j < d; ++j) o[j] = xr[j] * s * w[j];
    }
  }
  void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int rows,
                        int d) override {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      const T* xr = x + (int64_t)r * d;
      const T* g = dout + (int64_t)r * d;
      T* dxr = dx + (int64_t)r * d;
      T s = rstd[r];
      double dot = 0;  // mean over j of (g*w)_j * xhat_j
      for (int j = 0; j < d; ++j) dot += static_cast<double>(g[j]) * w[j] * xr[j] * s;
      T c = static_cast<T>(dot / d);
      for (int j = 0; j < d; ++j) dxr[j] += s * (g[j] * w[j] - xr[j] * s * c);
    }
    parallel_chunks(d, [&](int64_t lo, int64_t hi) {
      for (int r = 0; r < rows; ++r) {
        const T* xr = x + (int64_t)r * d;
        const T* g = dout + (int64_t)r * d;
        T s = rstd[r];
        for (int64_t j = lo; j < hi; ++j) dw[j] += g[j] * xr[j] * s;
      }
    });
  }

  void rope(Ptr<T> qkv_ptr, int batch, int seq, int n_heads, int head_dim, double theta, bool inverse,
            int first_pos) override {
    if (qkv_ptr.is_bf16()) {
      std::vector<T> q;
      rope(widened(qkv_ptr, (int64_t)batch * seq * 3 * n_heads * head_dim, q), batch, seq, n_heads, head_dim, theta,
           inverse, first_pos);
      return narrow(qkv_ptr, q);
    }
    T* qkv = qkv_ptr.get();
    const std::vector<T>& cs = rope_table(first_pos + seq, head_dim, theta);
    const int half = head_dim / 2, d = n_heads * head_dim;
    const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < (int64_t)batch * seq; ++r) {
      int pos = first_pos + static_cast<int>(r % seq);
      const T* c = cs.data() + (int64_t)pos * head_dim;  // cos[half] | sin[half]
      for (int part = 0; part < 2; ++part) {             // q, then k
        T* row = qkv + r * 3 * d + part * d;
        for (int h = 0; h < n_heads; ++h) {
          T* x = row + h * head_dim;
          for (int i = 0; i < half; ++i) {
            T a = x[i], b = x[i + half], co = c[i], si = sign * c[half + i];
            x[i] = a * co - b * si;
            x[i + half] = b * co + a * si;
          }
        }
      }
    }
  }

  int64_t attention_saved_size(int batch, int seq, int n_heads) const override {
    return (int64_t)batch * n_heads * seq * seq;
  }
  int64_t attention_scratch_size(int batch, int seq, int n_heads) const override {
    return (int64_t)batch * n_heads * seq * seq;
  }
  void attention_forward(Ptr<T> out_ptr, T* probs, Ptr<const T> qkv_ptr, int batch, int seq, int n_heads,
                         int head_dim) override {
    if (out_ptr.is_bf16() || qkv_ptr.is_bf16()) {
      std::vector<T> o, q;
      const int64_t rd = (int64_t)batch * seq * n_heads * head_dim;
      attention_forward(widened(out_ptr, rd, o), probs, widened(qkv_ptr, 3 * rd, q), batch, seq, n_heads, head_dim);
      return narrow(out_ptr, o);
    }
    const OneBlasThread serial;  // the products run inside the parallel loop
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < batch * n_heads; ++bh) {
      const int b = bh / n_heads, h = bh % n_heads;
      const int64_t d = (int64_t)n_heads * head_dim;
      causal_attention_head(out_ptr.get() + b * seq * d + h * head_dim, probs + (int64_t)bh * seq * seq,
                            qkv_ptr.get() + b * seq * 3 * d + h * head_dim, 0, seq, n_heads, head_dim);
    }
  }
  void attention_queries(Ptr<T> out_ptr, Ptr<const T> qkv_ptr, int first, int n, int n_heads,
                         int head_dim) override {
    if (out_ptr.is_bf16() || qkv_ptr.is_bf16()) {
      std::vector<T> o, q;
      const int64_t d = (int64_t)n_heads * head_dim;
      attention_queries(widened(out_ptr, n * d, o), widened(qkv_ptr, (first + n) * 3 * d, q), first, n, n_heads,
                        head_dim);
      return narrow(out_ptr, o);
    }
    const OneBlasThread serial;  // the products run inside the parallel loop
#pragma omp parallel for schedule(static)
    for (int h = 0; h < n_heads; ++h) {
      std::vector<T> probs((size_t)n * (first + n));
      causal_attention_head(out_ptr.get() + h * head_dim, probs.data(), qkv_ptr.get() + h * head_dim, first, n,
                            n_heads, head_dim);
    }
  }

  void attention_backward(Ptr<T> dqkv_ptr, T* scratch, const T* dout, Ptr<const T> qkv_ptr, Ptr<const T> /*out*/,
                          const T* probs, int batch, int seq, int n_heads, int head_dim) override {
    if (dqkv_ptr.is_bf16() || qkv_ptr.is_bf16()) {
      std::vector<T> dq, q;
      const int64_t rd3 = (int64_t)batch * seq * 3 * n_heads * head_dim;
      attention_backward(widened(dqkv_ptr, rd3, dq), scratch, dout, widened(qkv_ptr, rd3, q), nullptr, probs, batch,
                         seq, n_heads, head_dim);
      return narrow(dqkv_ptr, dq);
    }
    T* dqkv = dqkv_ptr.get();
    const T* qkv = qkv_ptr.get();
    const int d = n_heads * head_dim, ld = 3 * d;
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
    const OneBlasThread serial;  // the products run inside the parallel loop
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < batch * n_heads; ++bh) {
      int b = bh / n_heads, h = bh % n_heads;
      const T* q = qkv + (int64_t)b * seq * ld + h * head_dim;
      const T* k = q + d;
      const T* v = q + 2 * d;
      const T* go = dout + (int64_t)b * seq * d + h * head_dim;
      T* dq = dqkv + (int64_t)b * seq * ld + h * head_dim;
      const T* p = probs + (int64_t)bh * seq * seq;
      T* ds = scratch + (int64_t)bh * seq * seq;
      cpu::gemm(GemmArgs<T>{true, false, seq, head_dim, seq, T(1), p, seq, go, d, T(0), dq + 2 * d, ld});  // dV
      cpu::gemm(GemmArgs<T>{false, true, seq, seq, head_dim, T(1), go, d, v, ld, T(0), ds, seq});         // dP
      for (int i = 0; i < seq; ++i) {
        const T* pr = p + (int64_t)i * seq;
        T* row = ds + (int64_t)i * seq;
        double dot = 0;
        for (int j = 0; j <= i; ++j) dot += static_cast<double>(pr[j]) * row[j];
        T c = static_cast<T>(dot);
        for (int j = 0; j <= i; ++j) row[j] = pr[j] * (row[j] - c) * scale;
        for (int j = i + 1; j < seq; ++j) row[j] = 0;
      }
      cpu::gemm(GemmArgs<T>{false, false, seq, head_dim, seq, T(1), ds, seq, k, ld, T(0), dq, ld});      // dQ
      cpu::gemm(GemmArgs<T>{true, false, seq, head_dim, seq, T(1), ds, seq, q, ld, T(0), dq + d, ld});   // dK
    }
  }

  void swiglu_forward(Ptr<T> act_ptr, Ptr<const T> gu_ptr, const T* scale, int rows, int n) override {
    if (act_ptr.is_bf16() || gu_ptr.is_bf16()) {
      std::vector<T> a, g;
      swiglu_forward(widened(act_ptr, (int64_t)rows * n, a), widened(gu_ptr, (int64_t)rows * 2 * n, g), scale, rows,
                     n);
      return narrow(act_ptr, a);
    }
    T* act = act_ptr.get();
    const T* gu = gu_ptr.get();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      const T* g = gu + (int64_t)r * 2 * n;
      const T* u = g + n;
      T* a = act + (int64_t)r * n;
      const T s = scale ? scale[r] : T(1);
      for (int j = 0; j < n; ++j) a[j] = s * (g[j] / (T(1) + std::exp(-g[j])) * u[j]);
    }
  }
  void swiglu_backward(Ptr<T> dgu_ptr, T* dscale, Ptr<const T> dact_ptr, Ptr<const T> gu_ptr, const T* scale,
                       int rows, int n) override {
    if (dgu_ptr.is_bf16() || gu_ptr.is_bf16() || dact_ptr.is_bf16()) {
      std::vector<T> d, g, a;
      const int64_t both = (int64_t)rows * 2 * n;
      swiglu_backward(widened(dgu_ptr, both, d), dscale, widened(dact_ptr, (int64_t)rows * n, a),
                      widened(gu_ptr, both, g), scale, rows, n);
      return narrow(dgu_ptr, d);
    }
    const T* dact = dact_ptr.get();
    T* dgu = dgu_ptr.get();
    const T* gu = gu_ptr.get();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      const T* g = gu + (int64_t)r * 2 * n;
      const T* u = g + n;
      const T* da = dact + (int64_t)r * n;
      T* dg = dgu + (int64_t)r * 2 * n;
      T* du = dg + n;
      const T s = scale ? scale[r] : T(1);
      double ds = 0;
      for (int j = 0; j < n; ++j) {
        T sig = T(1) / (T(1) + std::exp(-g[j]));
        T silu = g[j] * sig;
        ds += static_cast<double>(da[j]) * (silu * u[j]);
        du[j] = s * da[j] * silu;
        dg[j] = s * da[j] * u[j] * sig * (T(1) + g[j] * (T(1) - sig));
      }
      if (scale) dscale[r] = static_cast<T>(ds);
    }
  }

  double cross_entropy(T* logits, T* losses, const int32_t* targets, int rows, int vocab, T scale) override {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      T* x = logits + (int64_t)r * vocab;
      T mx = x[0];
      for (int j = 1; j < vocab; ++j) mx = std::max(mx, x[j]);
      double sum = 0;
      for (int j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(x[j] - mx));
      double lse = std::log(sum) + mx;
      losses[r] = static_cast<T>(lse - x[targets[r]]);
      for (int j = 0; j < vocab; ++j) x[j] = static_cast<T>(std::exp(x[j] - lse)) * scale;
      x[targets[r]] -= scale;
    }
    double total = 0;
    for (int r = 0; r < rows; ++r) total += losses[r];
    return total;
  }

  void gather_rows(Ptr<T> out_ptr, Ptr<const T> in_ptr, const int32_t* idx, int n, int d) override {
    if (out_ptr.is_bf16() || in_ptr.is_bf16()) {
      std::vector<T> o, i;
      gather_rows(widened(out_ptr, (int64_t)n * d, o), widened(in_ptr, rows_reached(idx, n) * d, i), idx, n, d);
      return narrow(out_ptr, o);
    }
    T* out = out_ptr.get();
    const T* in = in_ptr.get();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; ++r) {
      T* o = out + (int64_t)r * d;
      if (idx[r] >= 0)
        std::memcpy(o, in + (int64_t)idx[r] * d, d * sizeof(T));
      else
        std::memset(o, 0, d * sizeof(T));
    }
  }
  void sum_rows(T* out, Ptr<const T> in_ptr, const int32_t* offsets, const int32_t* idx, int n_out, int d,
                bool accumulate) override {
    if (in_ptr.is_bf16()) {
      std::vector<T> in;
      return sum_rows(out, widened(in_ptr, rows_reached(idx, offsets[n_out]) * d, in), offsets, idx, n_out, d,
                      accumulate);
    }
    const T* in = in_ptr.get();
#pragma omp parallel for schedule(static)
    for (int o = 0; o < n_out; ++o) {
      T* dst = out + (int64_t)o * d;
      if (!accumulate) std::memset(dst, 0, d * sizeof(T));
      for (int32_t i = offsets[o]; i < offsets[o + 1]; ++i) {
        const T* src = in + (int64_t)idx[i] * d;
        for (int j = 0; j < d; ++j) dst[j] += src[j];
      }
    }
  }
  void combine_rows(T* out, Ptr<const T> y_ptr, const int32_t* idx, int rows, int k, int d) override {
    if (y_ptr.is_bf16()) {
      std::vector<T> y;
      return combine_rows(out, widened(y_ptr, rows_reached(idx, (int64_t)rows * k) * d, y), idx, rows, k, d);
    }
    const T* y = y_ptr.get();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      T* o = out + (int64_t)r * d;
      for (int s = 0; s < k; ++s) {
        const int64_t p = (int64_t)r * k + s;
        if (idx[p] < 0) continue;
        const T* yr = y + (int64_t)idx[p] * d;
        for (int j = 0; j < d; ++j) o[j] += yr[j];
      }
    }
  }
  void combine_rows_backward(Ptr<T> dy_ptr, const T* dout, const int32_t* idx, int rows, int k, int d) override {
    if (dy_ptr.is_bf16()) {
      std::vector<T> dyw;
      combine_rows_backward(widened(dy_ptr, rows_reached(idx, (int64_t)rows * k) * d, dyw), dout, idx, rows, k, d);
      return narrow(dy_ptr, dyw);
    }
    T* dy = dy_ptr.get();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r)
      for (int s = 0; s < k; ++s) {
        const int64_t p = (int64_t)r * k + s;
        if (idx[p] >= 0) std::memcpy(dy + (int64_t)idx[p] * d, dout + (int64_t)r * d, d * sizeof(T));
      }
  }
  void route_tokens(T* scores, int32_t* sel, T* gate, const T* logits, const float* bias, const RouteRowSpec& spec,
                    int rows) override {
    route_rows(spec, logits, bias, scores, sel, gate, rows);
  }
  void sort_pairs(int32_t* counts, int32_t* pos, int32_t* row_token, int32_t* token_rows, int32_t* hist,
                  const int32_t* sel, int tokens, int k, int n_experts) override {
    sort_pairs_on_host(sel, nullptr, (int64_t)tokens * k, k, n_experts, counts, pos, row_token, hist);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < tokens; ++t) dsmoe::token_rows(pos, t, k, token_rows + (int64_t)t * k);
  }
  void router_statistics(double* partial, double* totals, const T* scores, const int32_t* sel,
                         const RouteStatsSpec& spec, int rows) override {
    route_partials_on_host(spec, scores, sel, rows, partial, totals);
  }
  void router_balance(double* balance, const double* totals, const RouteStatsSpec& spec) override {
    balance_terms(spec, totals, balance);
  }
  void router_backward(T* dlogits, const T* dgate, const T* scores, const int32_t* sel, const T* logits,
                       const double* balance, const double* partial, const RouteStatsSpec& spec, double loss_scale,
                       int rows) override {
    route_backward_on_host(spec, scores, sel, logits, dgate, balance, partial, loss_scale, rows, dlogits);
  }
  void adamw(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
             double weight_decay, int64_t step, double grad_scale) override {
    const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    const T decay = static_cast<T>(1.0 - lr * weight_decay), b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
    const T step_size = static_cast<T>(lr / bc1), sqrt_bc2 = static_cast<T>(std::sqrt(bc2));
    const T e = static_cast<T>(eps), gs = static_cast<T>(grad_scale);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T g = grad[i] * gs;
      T p = param[i] * decay;
      m[i] = b1 * m[i] + (T(1) - b1) * g;
      v[i] = b2 * v[i] + (T(1) - b2) * g * g;
      param[i] = p - step_size * m[i] / (std::sqrt(v[i]) / sqrt_bc2 + e);
    }
  }

 private:
  // cos|sin of positions [0, positions) at least (backend/rope_table.h), cached per (head_dim, theta);
  // a longer need adds a longer table (the older stay: calls may still read them).
  const std::vector<T>& rope_table(int positions, int head_dim, double theta) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto key = std::make_pair(head_dim, theta);
    int cached = 0;
    for (auto it = rope_cache_.rbegin(); it != rope_cache_.rend(); ++it)  // the newest of a key is its longest
      if (it->first == key) {
        if (it->second.size() >= (size_t)positions * head_dim) return it->second;
        cached = static_cast<int>(it->second.size() / head_dim);
        break;
      }
    rope_cache_.emplace_back(key, rope_cos_sin<T>(rope_table_length(positions, cached), head_dim, theta));
    return rope_cache_.back().second;
  }

  std::mutex mu_;
  AllocTracker allocs_;
  const bool bf16_storage_;
  std::deque<std::pair<std::pair<int, double>, std::vector<T>>> rope_cache_;  // stable references
};

}  // namespace

template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend(bool bf16_storage) {
  return std::make_unique<CpuBackend<T>>(bf16_storage);
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>(bool);
template std::unique_ptr<Backend<double>> make_cpu_backend<double>(bool);

}  // namespace dsmoe
