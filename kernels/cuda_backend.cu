// The CUDA backend: device memory, cuBLAS for matrix products, the kernels of ops.cuh for the
// rest. Built as its own shared library, loaded only by runs that use a GPU.
//
// Precision: tensors are fp32 in memory. Under fp32 the products are exact fp32 (no TF32);
// under bf16 their inputs are rounded to bf16 and they accumulate in fp32 on the bf16 tensor
// cores (kernels/bf16_gemm.cuh), except products marked fp32 (the router).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "backend/alloc_tracker.h"
#include "backend/backend.h"
#include "backend/rope_table.h"
#include "kernels/bf16_gemm.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/op_profiler.cuh"
#include "kernels/ops.cuh"
#include "kernels/staged_upload.cuh"

namespace dsmoe {
namespace {

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

class CudaBackend final : public Backend<float> {
 public:
  CudaBackend(int device, bool bf16) : bf16_(bf16) {
    int devices = 0;
    CUDA_CHECK(cudaGetDeviceCount(&devices));
    DSMOE_CHECK(device < devices, "this rank is number ", device, " on its node but the node has ", devices,
                " GPU(s): run one rank per GPU");
    CUDA_CHECK(cudaSetDevice(device));
    // Kernels take stream-ordered scratch (cudaMallocAsync): the pool keeps what it grew to
    // instead of handing it back to the driver at every synchronization.
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device));
    uint64_t keep = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep));
    CUBLAS_CHECK(cublasCreate(&blas_));
    CUDA_CHECK(cudaMalloc(&scalar_, sizeof(double)));
    if (bf16_) bf16_gemm_ = std::make_unique<cuda::Bf16Gemm>(*this);
  }
  ~CudaBackend() override {
    bf16_gemm_.reset();
    for (auto& e : rope_cache_) cudaFree(e.table);
    cudaFree(scalar_);
    cublasDestroy(blas_);
  }
  std::string name() const override { return "cuda"; }

  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    const size_t n = std::max<size_t>(bytes, 16);
    CUDA_CHECK(cudaMalloc(&p, n));
    CUDA_CHECK(cudaMemset(p, 0, n));
    allocs_.add(p, n);
    return p;
  }
  void free_bytes(void* p) override {
    allocs_.remove(p);
    cudaFree(p);
  }
  void copy_bytes_to_host(void* host, const void* src, size_t bytes) override {
    cuda::OpProfiler::Scope scope(prof_, "to_host", stream_);
    if (bytes) CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
  }
  void copy_bytes_to_device(void* dst, const void* host, size_t bytes) override {
    written(dst, bytes);
    cuda::OpProfiler::Scope scope(prof_, "to_device", stream_);
    uploads_.copy(dst, host, bytes, stream_);
  }
  // The buffers' peak plus the scratch pool's (an upper bound: the two need not peak together).
  size_t peak_bytes() const override {
    uint64_t pool_high = 0;
    CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &pool_high));
    return allocs_.peak() + pool_high;
  }
  void set_weights(const float* w, int64_t n) override {
    if (bf16_gemm_) bf16_gemm_->set_weights(w, n);
  }
  bool bf16_storage() const override { return bf16_; }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  bool start_profile() override {
    prof_.start();
    return true;
  }

  void fill(float* x, float value, int64_t n) override {
    cuda::OpProfiler::Scope scope(prof_, "fill", stream_, {0, 4.0 * n});
    written(x, n * sizeof(float)); cuda::fill(x, value, n, stream_); }
  void copy(float* dst, const float* src, int64_t n) override {
    cuda::OpProfiler::Scope scope(prof_, "copy", stream_, {0, 8.0 * n});
    written(dst, n * sizeof(float));
    if (n) CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  }
  void add(float* y, const float* x, int64_t n) override {
    cuda::OpProfiler::Scope scope(prof_, "add", stream_, {0, 12.0 * n});
    written(y, n * sizeof(float)); cuda::add(y, x, n, stream_); }
  double sum_squares(const float* x, int64_t n) override {
    cuda::OpProfiler::Scope scope(prof_, "sum_squares", stream_, {0, 4.0 * n});
    cuda::sum_squares(scalar_, x, n, stream_);
    double h = 0;
    CUDA_CHECK(cudaMemcpy(&h, scalar_, sizeof h, cudaMemcpyDeviceToHost));
    return h;
  }

  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  void gemm(const GemmArgs<float>& g) override { gemm_batch_named({g}, g.fp32 ? "gemm.fp32" : "gemm"); }
  void gemm_batch(const std::vector<GemmArgs<float>>& gs) override { gemm_batch_named(gs, "gemm.experts"); }

  void embedding_forward(float* out, const int32_t* tokens, const float* table, int rows, int d) override {
    cuda::OpProfiler::Scope scope(prof_, "embedding_fwd", stream_, {0, 8.0 * rows * d});
    cuda::embedding_forward(out, tokens, table, rows, d, stream_);
  }
  void embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int rows, int d, int vocab) override {
    cuda::OpProfiler::Scope scope(prof_, "embedding_bwd", stream_, {0, 4.0 * rows * d + 8.0 * vocab * d});
    cuda::embedding_backward(dtable, tokens, dout, rows, d, vocab, stream_);
  }
  void rmsnorm_forward(Ptr<float> out, float* rstd, const float* x, const float* w, int rows, int d,
                       double eps) override {
    cuda::OpProfiler::Scope scope(prof_, "rmsnorm_fwd", stream_, {0, (4.0 + out.element_bytes()) * rows * d});
    cuda::rmsnorm_forward(out, rstd, x, w, rows, d, static_cast<float>(eps), stream_);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                        int rows, int d) override {
    cuda::OpProfiler::Scope scope(prof_, "rmsnorm_bwd", stream_, {0, 16.0 * rows * d});  // dout, x; dx updated
    cuda::rmsnorm_backward(dx, dw, dout, x, w, rstd, rows, d, stream_);
  }
  void rope(Ptr<float> qkv, int batch, int seq, int n_heads, int head_dim, double theta, bool inverse,
            int first_pos) override {
    cuda::OpProfiler::Scope scope(prof_, "rope", stream_,
                                  {0, 2.0 * qkv.element_bytes() * batch * seq * 2 * n_heads * head_dim});  // q, k
    cuda::rope(qkv, rope_table(first_pos + seq, head_dim, theta), batch, seq, first_pos, n_heads, head_dim, inverse,
               stream_);
  }

  // Fused causal attention (kernels/flash_attention.cu): saved holds one log-sum-exp per
  // (sequence, head, query), scratch the backward's rowsum(dout * out); bf16 on the tensor cores.
  int64_t attention_saved_size(int batch, int seq, int n_heads) const override {
    return (int64_t)batch * n_heads * seq;
  }
  int64_t attention_scratch_size(int batch, int seq, int n_heads) const override {
    return (int64_t)batch * n_heads * seq;
  }
  void attention_forward(Ptr<float> out, float* lse, Ptr<const float> qkv, int batch, int seq, int n_heads,
                         int head_dim) override {
    const double tokens = (double)batch * seq, width = (double)n_heads * head_dim;
    cuda::OpProfiler::Scope scope(prof_, "attention_fwd", stream_,
                                  {attention_flops(batch, seq, n_heads, head_dim),
                                   tokens * width * (3.0 * qkv.element_bytes() + out.element_bytes()), !bf16_});
    cuda::flash_attention_forward(out, lse, qkv, batch, seq, n_heads, head_dim, bf16_, stream_);
  }
  void attention_queries(Ptr<float> out, Ptr<const float> qkv, int first, int n, int n_heads,
                         int head_dim) override {
    cuda::OpProfiler::Scope scope(prof_, "attention_queries", stream_);
    cuda::attention_queries(out, qkv, first, n, n_heads, head_dim, stream_);
  }
  void attention_backward(Ptr<float> dqkv, float* scratch, const float* dout, Ptr<const float> qkv,
                          Ptr<const float> out, const float* lse, int batch, int seq, int n_heads,
                          int head_dim) override {
    const double tokens = (double)batch * seq, width = (double)n_heads * head_dim;
    cuda::OpProfiler::Scope scope(
        prof_, "attention_bwd", stream_,
        {2.5 * attention_flops(batch, seq, n_heads, head_dim),  // 5 products to the forward's 2
         tokens * width * (3.0 * qkv.element_bytes() + out.element_bytes() + 4.0 + 3.0 * dqkv.element_bytes()), !bf16_});
    cuda::flash_attention_backward(dqkv, scratch, dout, qkv, out, lse, batch, seq, n_heads, head_dim, bf16_, stream_);
  }

  void swiglu_forward(Ptr<float> act, Ptr<const float> gu, const float* scale, int rows, int n) override {
    cuda::OpProfiler::Scope scope(prof_, "swiglu_fwd", stream_,
                                  {0, (double)rows * n * (2.0 * gu.element_bytes() + act.element_bytes())});
    cuda::swiglu_forward(act, gu, scale, rows, n, stream_);
  }
  void swiglu_backward(Ptr<float> dgu, float* dscale, Ptr<const float> dact, Ptr<const float> gu, const float* scale,
                       int rows, int n) override {
    cuda::OpProfiler::Scope scope(
        prof_, "swiglu_bwd", stream_,
        {0, (double)rows * n * (dact.element_bytes() + 2.0 * gu.element_bytes() + 2.0 * dgu.element_bytes())});
    cuda::swiglu_backward(dgu, dscale, dact, gu, scale, rows, n, stream_);
  }
  double cross_entropy(float* logits, float* losses, const int32_t* targets, int rows, int vocab,
                       float scale) override {
    cuda::OpProfiler::Scope scope(prof_, "cross_entropy", stream_, {0, 8.0 * rows * vocab});  // in place
    cuda::cross_entropy(logits, losses, targets, rows, vocab, scale, stream_);
    std::vector<float> h(rows);
    copy_bytes_to_host(h.data(), losses, rows * sizeof(float));
    double total = 0;
    for (float l : h) total += l;
    return total;
  }
  void gather_rows(Ptr<float> out, Ptr<const float> in, const int32_t* idx, int n, int d) override {
    cuda::OpProfiler::Scope scope(prof_, "gather_rows", stream_,
                                  {0, (double)n * d * (out.element_bytes() + in.element_bytes())});
    cuda::gather_rows(out, in, idx, n, d, stream_);
  }
  void sum_rows(float* out, Ptr<const float> in, const int32_t* offsets, const int32_t* idx, int n_out, int d,
                bool accumulate) override {
    cuda::OpProfiler::Scope scope(prof_, "sum_rows", stream_);
    cuda::sum_rows(out, in, offsets, idx, n_out, d, accumulate, stream_);
  }
  void combine_rows(float* out, Ptr<const float> y, const int32_t* idx, int rows, int k, int d) override {
    // Every pair counted present: with dropped pairs the floor is a little high.
    cuda::OpProfiler::Scope scope(prof_, "combine_rows", stream_,
                                  {0, (double)rows * d * (8.0 + k * y.element_bytes())});
    cuda::combine_rows(out, y, idx, rows, k, d, stream_);
  }
  void combine_rows_backward(Ptr<float> dy, const float* dout, const int32_t* idx, int rows, int k, int d) override {
    cuda::OpProfiler::Scope scope(prof_, "combine_rows_bwd", stream_,
                                  {0, (double)rows * d * (4.0 + k * dy.element_bytes())});
    cuda::combine_rows_backward(dy, dout, idx, rows, k, d, stream_);
  }
  void route_tokens(float* scores, int32_t* sel, float* gate, const float* logits, const float* bias,
                    const RouteRowSpec& spec, int rows) override {
    cuda::OpProfiler::Scope scope(prof_, "route_tokens", stream_,
                                  {0, (double)rows * (8.0 * spec.n_experts + 8.0 * spec.top_k)});
    cuda::route_tokens(scores, sel, gate, logits, bias, spec, rows, stream_);
  }
  void sort_pairs(int32_t* counts, int32_t* pos, int32_t* row_token, int32_t* token_rows, int32_t* hist,
                  const int32_t* sel, int tokens, int k, int n_experts) override {
    cuda::OpProfiler::Scope scope(prof_, "sort_pairs", stream_);
    cuda::sort_pairs(counts, pos, row_token, token_rows, hist, sel, tokens, k, n_experts, stream_);
  }
  void router_statistics(double* partial, double* totals, const float* scores, const int32_t* sel,
                         const RouteStatsSpec& spec, int rows) override {
    cuda::OpProfiler::Scope scope(prof_, "router_statistics", stream_);
    cuda::router_statistics(partial, totals, scores, sel, spec, rows, stream_);
  }
  void router_balance(double* balance, const double* totals, const RouteStatsSpec& spec) override {
    cuda::OpProfiler::Scope scope(prof_, "router_balance", stream_);
    cuda::router_balance(balance, totals, spec, stream_);
  }
  void router_backward(float* dlogits, const float* dgate, const float* scores, const int32_t* sel,
                       const float* logits, const double* balance, const double* partial, const RouteStatsSpec& spec,
                       double loss_scale, int rows) override {
    cuda::OpProfiler::Scope scope(prof_, "router_backward", stream_);
    cuda::router_backward(dlogits, dgate, scores, sel, logits, balance, partial, spec, loss_scale, rows, stream_);
  }
  void written_by_collective(float* x, int64_t n) override { written(x, n * sizeof(float)); }
  void adamw(float* param, const float* grad, float* m, float* v, int64_t n, double lr, double beta1, double beta2,
             double eps, double weight_decay, int64_t step, double grad_scale) override {
    // The step writes the products' bf16 copy of the parameters as well, where that copy is
    // current: no separate pass rounds them again before the next product.
    void* copy = bf16_gemm_ ? bf16_gemm_->current_copy_of(param, n) : nullptr;
    cuda::OpProfiler::Scope scope(prof_, "adamw", stream_, {0, (copy ? 30.0 : 28.0) * n});
    if (!copy) written(param, n * sizeof(float));
    const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    cuda::adamw(param, copy, grad, m, v, n, (float)lr, (float)beta1, (float)beta2, (float)eps, (float)weight_decay,
                (float)bc1, (float)bc2, (float)grad_scale, stream_);
  }

 private:
  // Problems with k = 0 set C = beta * C; bf16 ones (precision bf16, not marked fp32) go to
  // Bf16Gemm in one batch, the others are exact fp32 cuBLAS products.
  void gemm_batch_named(const std::vector<GemmArgs<float>>& gs, const char* name) {
    cuda::OpWork work;
    work.fp32 = !bf16_gemm_;
    for (const auto& g : gs) {
      work.flops += 2.0 * g.m * g.n * g.k;
      work.fp32 = work.fp32 || g.fp32;
    }
    cuda::OpProfiler::Scope scope(prof_, name, stream_, work);
    std::vector<GemmArgs<float>> low;
    for (const auto& g : gs) {
      if (g.m == 0 || g.n == 0) continue;
      if (g.k == 0) {
        DSMOE_CHECK(g.beta == 0.f || g.beta == 1.f, "gemm with k = 0 needs beta = 0 or 1 on CUDA");
        if (g.beta == 0.f)
          CUDA_CHECK(cudaMemset2DAsync(g.c.raw(), (size_t)g.ldc * g.c.element_bytes(), 0,
                                       (size_t)g.n * g.c.element_bytes(), g.m, stream_));
        else if (g.c_in)
          copy_c_in(g);
      } else {
        if (bf16_gemm_ && !g.fp32)
          low.push_back(g);
        else
          gemm_fp32(g);
      }
    }
    if (!low.empty()) bf16_gemm_->run(low, stream_);
  }

  // An exact fp32 product (no TF32, no reduced precision) by cuBLAS. (An own kernel for the
  // router's shapes, a side of 63, was faster than cuBLAS 12's; cuBLAS 13's is faster than it:
  // docs/cuda.md.)
  void gemm_fp32(const GemmArgs<float>& g) {
    if (g.c_in) copy_c_in(g);
    CUBLAS_CHECK(cublasGemmEx(blas_, op(g.trans_b), op(g.trans_a), g.n, g.m, g.k, &g.alpha, g.b.get(), CUDA_R_32F,
                              g.ldb, g.a.get(), CUDA_R_32F, g.lda, &g.beta, g.c.get(), CUDA_R_32F, g.ldc,
                              CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
  }

  void copy_c_in(const GemmArgs<float>& g) {
    DSMOE_CHECK(!g.c.is_bf16(), "a product with c_in writes fp32");
    if (g.c_in == g.c.get()) return;
    const size_t pitch = (size_t)g.ldc * sizeof(float);
    CUDA_CHECK(cudaMemcpy2DAsync(g.c.get(), pitch, g.c_in, pitch, (size_t)g.n * sizeof(float), g.m,
                                 cudaMemcpyDeviceToDevice, stream_));
  }

  // A causal attention's forward: two products of seq x seq x head_dim per sequence and head, half
  // of each under the mask.
  static double attention_flops(int batch, int seq, int n_heads, int head_dim) {
    return 2.0 * batch * n_heads * (double)seq * seq * head_dim;
  }

  void written(const void* p, size_t bytes) {
    if (bf16_gemm_) bf16_gemm_->written(p, (int64_t)bytes);
  }

  // cos | sin of positions [0, positions) at least (backend/rope_table.h), cached on the device per
  // (head_dim, theta); a longer need adds a longer table (the older stay: queued kernels may read them).
  const float* rope_table(int positions, int head_dim, double theta) {
    const auto key = std::make_pair(head_dim, theta);
    int cached = 0;
    for (auto it = rope_cache_.rbegin(); it != rope_cache_.rend(); ++it)  // the newest of a key is its longest
      if (it->key == key) {
        if (it->positions >= positions) return it->table;
        cached = it->positions;
        break;
      }
    const int length = rope_table_length(positions, cached);
    const std::vector<float> cs = rope_cos_sin<float>(length, head_dim, theta);
    float* dev = nullptr;
    CUDA_CHECK(cudaMalloc(&dev, cs.size() * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(dev, cs.data(), cs.size() * sizeof(float), cudaMemcpyHostToDevice));
    rope_cache_.push_back({key, length, dev});
    return dev;
  }

  const bool bf16_;  // bf16 products (see the top of this file)
  cublasHandle_t blas_ = nullptr;
  cudaMemPool_t pool_ = nullptr;  // the device's default pool: cudaMallocAsync's scratch
  cudaStream_t stream_ = nullptr;  // the default stream: ops run in order
  double* scalar_ = nullptr;
  AllocTracker allocs_;
  struct RopeTable {
    std::pair<int, double> key;  // head_dim, theta
    int positions;
    float* table;
  };
  std::vector<RopeTable> rope_cache_;
  cuda::OpProfiler prof_;  // on with start_profile() (dsmoe bench --profile)
  std::unique_ptr<cuda::Bf16Gemm> bf16_gemm_;  // precision: bf16
  cuda::StagedUpload uploads_;                 // copy_bytes_to_device's
};

}  // namespace
}  // namespace dsmoe

// The library's entry points, looked up by name (src/backend/cuda_loader.cpp).
extern "C" int dsmoe_cuda_device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

extern "C" dsmoe::Backend<float>* dsmoe_make_cuda_backend(int device, int bf16, char* error, int error_len) {
  try {
    return new dsmoe::CudaBackend(device, bf16 != 0);
  } catch (const std::exception& e) {
    std::strncpy(error, e.what(), error_len - 1);
    error[error_len - 1] = '\0';
    return nullptr;
  }
}
