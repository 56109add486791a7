// Launchers of the CUDA kernels, one per backend op (shapes as in src/backend/backend.h).
// Every launcher takes the stream it runs on; all pointers are device memory. fp32, except
// operands passed as Ptr, which may be stored in bf16 (src/backend/ptr.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/ptr.h"

namespace dsmoe {
struct RouteRowSpec;
struct RouteStatsSpec;
}

namespace dsmoe::cuda {

// router.cu: routing/route_row.h for `rows` tokens (backend.h's route_tokens).
void route_tokens(float* scores, int32_t* sel, float* gate, const float* logits, const float* bias,
                  const RouteRowSpec& spec, int rows, cudaStream_t s);
// The statistics, balance terms and backward (routing/route_stats.h; backend.h's router_* ops).
void router_statistics(double* partial, double* totals, const float* scores, const int32_t* sel,
                       const RouteStatsSpec& spec, int rows, cudaStream_t s);
void router_balance(double* balance, const double* totals, const RouteStatsSpec& spec, cudaStream_t s);
void router_backward(float* dlogits, const float* dgate, const float* scores, const int32_t* sel,
                     const float* logits, const double* balance, const double* partial, const RouteStatsSpec& spec,
                     double loss_scale, int rows, cudaStream_t s);

// sort_pairs.cu: routing/sort_pairs.h (backend.h's sort_pairs).
void sort_pairs(int32_t* counts, int32_t* pos, int32_t* row_token, int32_t* token_rows, int32_t* hist,
                const int32_t* sel, int tokens, int k, int n_experts, cudaStream_t s);

// elementwise.cu
void fill(float* x, float value, int64_t n, cudaStream_t s);
void add(float* y, const float* x, int64_t n, cudaStream_t s);
// Sum of squares into *out_device (one double), deterministic (fixed reduction tree).
void sum_squares(double* out_device, const float* x, int64_t n, cudaStream_t s);
// As Backend::swiglu_forward / swiglu_backward (scale and dscale: null or [rows]).
void swiglu_forward(Ptr<float> act, Ptr<const float> gu, const float* scale, int rows, int n, cudaStream_t s);
void swiglu_backward(Ptr<float> dgu, float* dscale, Ptr<const float> dact, Ptr<const float> gu, const float* scale,
                     int rows, int n, cudaStream_t s);
// copy (null, or n bf16 values): also receives the new parameters rounded to bf16.
void adamw(float* param, void* copy, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2, float grad_scale,
           cudaStream_t s);

// bf16.cu: out[i] = bf16(in[i]) (round to nearest even); out holds n bf16 values.
void to_bf16(void* out, const float* in, int64_t n, cudaStream_t s);

// norm.cu
void rmsnorm_forward(Ptr<float> out, float* rstd, const float* x, const float* w, int rows, int d, float eps,
                     cudaStream_t s);
// dx += ..., dw += ... (dw deterministic: no atomics)
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int rows, int d, cudaStream_t s);

// rope.cu: cos_sin [first_pos + seq, head_dim] = cos[half] | sin[half] per position (computed on the host in
// double).
void rope(Ptr<float> qkv, const float* cos_sin, int batch, int seq, int first_pos, int n_heads, int head_dim,
          bool inverse, cudaStream_t s);

// attention_queries.cu: as Backend::attention_queries (qkv and out stored alike); head_dim up to
// kFlashMaxHeadDim.
void attention_queries(Ptr<float> out, Ptr<const float> qkv, int first, int n, int n_heads, int head_dim,
                       cudaStream_t s);

// embedding.cu
void embedding_forward(float* out, const int32_t* tokens, const float* table, int rows, int d, cudaStream_t s);
// dtable[tokens[r]] += dout[r], deterministic (no atomics).
void embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int rows, int d, int vocab,
                        cudaStream_t s);

// cross_entropy.cu: logits [R, V] replaced by scale * dloss/dlogits; losses [R].
void cross_entropy(float* logits, float* losses, const int32_t* targets, int rows, int vocab, float scale,
                   cudaStream_t s);

// rows.cu
void gather_rows(Ptr<float> out, Ptr<const float> in, const int32_t* idx, int n, int d, cudaStream_t s);
void sum_rows(float* out, Ptr<const float> in, const int32_t* offsets, const int32_t* idx, int n_out, int d,
              bool accumulate, cudaStream_t s);
void combine_rows(float* out, Ptr<const float> y, const int32_t* idx, int rows, int k, int d, cudaStream_t s);
void combine_rows_backward(Ptr<float> dy, const float* dout, const int32_t* idx, int rows, int k, int d,
                           cudaStream_t s);

}  // namespace dsmoe::cuda
