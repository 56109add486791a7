// The DeepSeekMoE FFN of one layer, as its stages: route (moe/router.h) -> plan (the
// dispatcher's layout of the expert rows) -> dispatch -> experts (shared and routed, which apply
// the gates) -> combine (the sum over a token's experts); the backward runs them in reverse.
#pragma once
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "moe/dispatcher.h"
#include "moe/experts.h"
#include "moe/router.h"

namespace dsmoe {

template <typename T>
struct MoeParams {  // pointers into the parameter (or gradient) buffer
  T* router = nullptr;          // [N, d]
  T* noise_w = nullptr;         // [N, d] or null
  T* shared_gate_up = nullptr;  // [2 Ks*n, d] (w_gate, then w_up) or null when Ks = 0
  T* shared_down = nullptr;     // [d, Ks*n]
  T* experts_gate_up = nullptr; // [N, 2 n, d] (each expert's w_gate, then its w_up)
  T* experts_down = nullptr;    // [N, d, n]
};

struct MoeTimes {
  double dispatch = 0, combine = 0;
  double route = 0;  // the router's host work (capacity dropping, the statistics of several ranks)
};

// Scratch of the MoE layers (and of the dense FFN's backward: dgu, dact). Layers run one after
// another, so one set, grown to the largest need, serves them all. xe and act (the expert rows'
// inputs and SwiGLU activations, rows x (d + hidden)) are not kept from forward to backward: the
// backward rebuilds them, with a gather and an elementwise pass, which saves that much memory
// per layer. Nor is the combine buffer yc: the experts apply the gates, so the gates' gradients
// come from the SwiGLU backward, not from the experts' outputs. The ActBufs hold what only
// products read or what products write and elementwise ops read (bf16 under bf16 storage).
template <typename T>
struct MoeScratch {
  ActBuf<T> xe, act;
  // yc: the combine buffer forward; backward its gradient dyc, then the experts' dxe.
  ActBuf<T> yc, dgu, dact;
  Buf<T> dgate, row_dgate;  // the gates' gradients by pair and by combine row
  Buf<T> logit_grads;       // the router's (Router::backward)
  // With train.recompute: moe, the expert activations every layer would keep (the routed and
  // shared experts' gate and up products gu, the shared experts' act): one set, which each
  // layer's backward refills from the layer's inputs with the forward's products.
  ActBuf<T> gu, shared_gu, shared_act;
};

template <typename T>
class MoeLayer {
 public:
  // world: every rank (routing statistics are global); ep: the expert-parallel group that
  // exchanges tokens; placement: the routed experts held here.
  MoeLayer(Backend<T>& be, Comm& world, Comm& ep, const ExpertPlacement& placement, const RouterSpec& spec, int d,
           int expert_hidden, int n_shared, int max_tokens, MoeScratch<T>& scratch, bool recompute_experts = false);
  // out [tokens, d] = residual + MoE(u) (residual [tokens, d], null: none; it may be out itself);
  // u [tokens, d] must hold the same values at backward (the model recomputes it there). u_low:
  // u as the experts' products read it (a bf16 copy under bf16 storage, which the dispatcher
  // gathers and the shared experts read, also when the backward recomputes them; else u
  // itself); the router reads u in exact fp32.
  void forward(T* out, const T* u, Ptr<const T> u_low, int tokens, const MoeParams<T>& p, const RouteContext& ctx,
               const T* residual = nullptr);
  // du [tokens, d] = dL/du (written); the parameter gradients written into g (grad_beta 0: the
  // first backward of a step) or added to it (1).
  void backward(T* du, const T* dout, const MoeParams<T>& p, const MoeParams<T>& g, double loss_scale,
                T grad_beta = 1);
  Router<T>& router() { return router_; }
  const Router<T>& router() const { return router_; }
  MoeTimes times() const { return {times_.dispatch, times_.combine, router_.host_seconds()}; }
  void reset_times();
  // Whether forward computes while tokens travel (on by default; off for measurements).
  void set_overlap(bool on) { overlap_ = on; }
  DispatchStats& dispatch_stats() { return dispatcher_.stats(); }

 private:
  // The forward's stages.
  void plan(int tokens);
  void dispatch_start();
  void shared_experts(T* out, const MoeParams<T>& p, const T* residual, int tokens);
  void routed_experts(const MoeParams<T>& p, const RowSpan& span);
  void routed_gate_up(const MoeParams<T>& p, const RowSpan& span);
  void dispatch_finish();
  void combine(T* out, int tokens);
  // The backward's, in reverse.
  void combine_backward(const T* dout);
  void routed_experts_backward(const MoeParams<T>& p, const MoeParams<T>& g, T grad_beta);
  void dispatch_backward(T* du);
  void shared_experts_backward(T* du, const T* dout, const MoeParams<T>& p, const MoeParams<T>& g, T grad_beta);

  SwiGluWeights<T> shared_weights(const MoeParams<T>& p, const MoeParams<T>& g) const;
  SwiGluWeights<T> expert_weights(const MoeParams<T>& p, const MoeParams<T>& g) const;
  static RouterWeights<T> router_weights(const MoeParams<T>& p) { return {p.router, p.noise_w}; }

  Backend<T>& be_;
  int d_, n_, shared_hidden_, n_local_, top_k_, tokens_ = 0;
  bool overlap_ = true;
  bool recompute_experts_ = false;
  Ptr<const T> u_low_;
  Router<T> router_;
  Dispatcher<T> dispatcher_;
  MoeTimes times_;  // dispatch and combine; the router keeps its own
  // Saved activations; the expert buffers (rows this rank computes) grow as needed. row_gate:
  // the gates by combine row (Dispatcher::dispatch_gates). gu_, shared_gu_ and shared_act_ are
  // this layer's own, or with recompute_experts the scratch's (own_* then stay empty).
  Buf<T> row_gate_;
  ActBuf<T> own_gu_, own_shared_gu_, own_shared_act_;
  MoeScratch<T>& scratch_;
  ActBuf<T>& gu_;
  ActBuf<T>& shared_gu_;
  ActBuf<T>& shared_act_;
};

}  // namespace dsmoe
