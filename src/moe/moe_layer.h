// The DeepSeekMoE FFN of one layer (orchestration only): router -> dispatcher -> routed
// experts -> dispatcher -> gate-weighted sum, plus the fused shared experts.
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
  T* shared_gate = nullptr;     // [Ks*n, d] or null when Ks = 0
  T* shared_up = nullptr;
  T* shared_down = nullptr;     // [d, Ks*n]
  T* experts_gate = nullptr;    // [N, n, d]
  T* experts_up = nullptr;
  T* experts_down = nullptr;    // [N, d, n]
};

struct MoeTimes {
  double dispatch = 0, combine = 0;
  double route = 0;  // the router's host work (capacity dropping, the statistics of several ranks)
};

// Scratch of the MoE layers (and of the dense FFN's backward: dgu, dact). Layers run one after
// another, so one set, grown to the largest need, serves them all. xe and act (the expert rows' inputs and SwiGLU activations, rows x
// (d + hidden)) are not kept from forward to backward: the backward rebuilds them, with a gather
// and an elementwise pass, which saves that much memory per layer. The ActBufs hold what only
// products read or what products write and elementwise ops read (bf16 under bf16 storage).
template <typename T>
struct MoeScratch {
  Buf<float> bias;
  ActBuf<T> xe, act;
  ActBuf<T> dyc, dgu, dact;  // dyc: the gradient of the combine buffer, then the experts' dxe
  Buf<T> dgate, tmp;
};

template <typename T>
class MoeLayer {
 public:
  // world: every rank (routing statistics are global); ep: the expert-parallel group that
  // exchanges tokens; placement: the routed experts held here.
  MoeLayer(Backend<T>& be, Comm& world, Comm& ep, const ExpertPlacement& placement, const RouterSpec& spec, int d,
           int expert_hidden, int n_shared, int max_tokens, MoeScratch<T>& scratch);
  // out [tokens, d] = MoE(u); u [tokens, d] must hold the same values at backward (the model
  // recomputes it there).
  void forward(T* out, const T* u, int tokens, const MoeParams<T>& p, const RouteContext& ctx,
               const std::vector<float>& bias);
  // du [tokens, d] += dL/du; parameter gradients accumulated into g.
  void backward(T* du, const T* dout, const MoeParams<T>& p, const MoeParams<T>& g, double loss_scale);
  // The last forward's routing, its global statistics brought to the host on first call.
  const Routing<T>& routing() const;
  MoeTimes& times() { return times_; }
  // Whether forward computes while tokens travel (on by default; off for measurements).
  void set_overlap(bool on) { overlap_ = on; }
  DispatchStats& dispatch_stats() { return dispatcher_.stats(); }

 private:
  SwiGluWeights<T> shared_weights(const MoeParams<T>& p, const MoeParams<T>& g) const;
  SwiGluWeights<T> expert_weights(const MoeParams<T>& p, const MoeParams<T>& g) const;

  Backend<T>& be_;
  Comm& world_;
  RouterSpec spec_;
  int d_, n_, shared_hidden_, tokens_ = 0;
  bool overlap_ = true;
  const T* u_ = nullptr;
  mutable Routing<T> routing_;
  mutable bool statistics_on_host_ = true;
  Dispatcher<T> dispatcher_;
  MoeTimes times_;
  // Saved activations; the expert buffers (rows this rank computes) grow as needed. yc: the
  // dispatcher's combine buffer, the experts' outputs and then the results other ranks return.
  Buf<T> logits_, scores_, gate_;
  ActBuf<T> gu_, yc_, shared_gu_, shared_act_;
  Buf<int32_t> sel_;
  Buf<double> partial_, totals_, balance_;  // the router's statistics (moe/route_stats.h)
  MoeScratch<T>& scratch_;
};

}  // namespace dsmoe
