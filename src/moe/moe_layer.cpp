#include "moe/moe_layer.h"

#include <algorithm>

#include "util/check.h"
#include "util/timer.h"

namespace dsmoe {

template <typename T>
MoeLayer<T>::MoeLayer(Backend<T>& be, Comm& world, Comm& ep, const ExpertPlacement& placement, const RouterSpec& spec,
                      int d, int expert_hidden, int n_shared, int max_tokens, MoeScratch<T>& scratch,
                      bool recompute_experts)
    : be_(be), d_(d), n_(expert_hidden), shared_hidden_(n_shared * expert_hidden), n_local_(placement.per_rank()),
      top_k_(spec.top_k), recompute_experts_(recompute_experts),
      router_(be, world, spec, d, max_tokens, scratch.logit_grads), dispatcher_(be, ep, placement, d),
      scratch_(scratch), gu_(recompute_experts ? scratch.gu : own_gu_),
      shared_gu_(recompute_experts ? scratch.shared_gu : own_shared_gu_),
      shared_act_(recompute_experts ? scratch.shared_act : own_shared_act_) {
  const int64_t pairs = (int64_t)max_tokens * spec.top_k;
  const int64_t shared_rows = shared_hidden_ > 0 ? max_tokens : 0;
  shared_gu_.ensure(be, shared_rows * 2 * shared_hidden_);
  shared_act_.ensure(be, shared_rows * shared_hidden_);
  // Expert rows: sized for one row per pair, which is every case on one rank; with expert
  // parallelism a rank may receive more, and the buffers grow (backend.h: Buf::ensure).
  gu_.ensure(be, pairs * 2 * n_);
  row_gate_.ensure(be, pairs);
  scratch_.xe.ensure(be, pairs * d);
  scratch_.act.ensure(be, pairs * n_);
  scratch_.dgate.ensure(be, pairs);
  scratch_.row_dgate.ensure(be, pairs);
  scratch_.yc.ensure(be, pairs * d);
  scratch_.dgu.ensure(be, std::max(shared_rows * shared_hidden_, pairs * n_) * 2);
  scratch_.dact.ensure(be, std::max(shared_rows * shared_hidden_, pairs * n_));
}

template <typename T>
SwiGluWeights<T> MoeLayer<T>::shared_weights(const MoeParams<T>& p, const MoeParams<T>& g) const {
  return {p.shared_gate_up, p.shared_down, g.shared_gate_up, g.shared_down, d_, shared_hidden_};
}

template <typename T>
SwiGluWeights<T> MoeLayer<T>::expert_weights(const MoeParams<T>& p, const MoeParams<T>& g) const {
  return {p.experts_gate_up, p.experts_down, g.experts_gate_up, g.experts_down, d_, n_, T(1), n_local_};
}

template <typename T>
void MoeLayer<T>::reset_times() {
  times_ = MoeTimes{};
  router_.reset_host_seconds();
}

template <typename T>
void MoeLayer<T>::forward(T* out, const T* u, Ptr<const T> u_low, int tokens, const MoeParams<T>& p,
                          const RouteContext& ctx, const T* residual) {
  tokens_ = tokens;
  u_low_ = u_low;
  router_.forward(u, tokens, router_weights(p), ctx);
  plan(tokens);
  // While the other ranks' tokens travel, the shared experts and the own tokens' experts run
  // (as DeepSeek overlaps them); without overlap, everything waits for the exchange.
  dispatch_start();
  if (!overlap_) dispatch_finish();
  shared_experts(out, p, residual, tokens);
  routed_experts(p, dispatcher_.own_span());
  if (overlap_) dispatch_finish();
  for (const RowSpan& span : dispatcher_.received_spans()) routed_experts(p, span);
  combine(out, tokens);
}

// The layout of the expert rows: where the choices are, unless tokens travel or capacity dropped
// some. It waits for the device (the row counts size the products); the work queued before it
// counts as compute. The expert buffers grow to the rows this rank computes.
template <typename T>
void MoeLayer<T>::plan(int tokens) {
  be_.synchronize();
  ScopedTimer timer(times_.dispatch);
  if (dispatcher_.local() && !router_.drops())
    dispatcher_.plan_local(router_.choices(), tokens, top_k_);
  else
    dispatcher_.plan(router_.host_choices(), router_.kept(), tokens, top_k_);
  const int64_t rows = dispatcher_.rows(), combine_rows = dispatcher_.combine_rows();
  scratch_.xe.ensure(be_, rows * d_);
  gu_.ensure(be_, rows * 2 * n_);
  scratch_.act.ensure(be_, rows * n_);
  scratch_.yc.ensure(be_, combine_rows * d_);
  row_gate_.ensure(be_, combine_rows);
}

// The gates to the rows' ranks, and the token rows out.
template <typename T>
void MoeLayer<T>::dispatch_start() {
  ScopedTimer timer(times_.dispatch);
  dispatcher_.dispatch_gates(row_gate_, router_.gates());
  dispatcher_.dispatch_start(scratch_.xe, u_low_);
}

template <typename T>
void MoeLayer<T>::dispatch_finish() {
  ScopedTimer timer(times_.dispatch);
  dispatcher_.dispatch_finish(scratch_.xe);
}

// out = residual + the shared experts of every token (or the residual, or zeros, without them).
template <typename T>
void MoeLayer<T>::shared_experts(T* out, const MoeParams<T>& p, const T* residual, int tokens) {
  if (shared_hidden_ > 0)
    swiglu_experts_forward<T>(be_, shared_weights(p, MoeParams<T>{}), {{0, tokens}}, u_low_, nullptr, shared_gu_,
                              shared_act_, out, residual);
  else if (residual)
    be_.copy(out, residual, (int64_t)tokens * d_);
  else
    be_.fill(out, T(0), (int64_t)tokens * d_);
}

// The gate and up products of one span of rows again, as routed_experts computed them.
template <typename T>
void MoeLayer<T>::routed_gate_up(const MoeParams<T>& p, const RowSpan& span) {
  const int64_t r = span.first_row;
  swiglu_experts_gate_up<T>(be_, expert_weights(p, MoeParams<T>{}), span.blocks, scratch_.xe.ptr() + r * d_,
                            gu_.ptr() + r * 2 * n_);
}

// The routed experts on one span of rows: gated outputs into the combine buffer.
template <typename T>
void MoeLayer<T>::routed_experts(const MoeParams<T>& p, const RowSpan& span) {
  const int64_t r = span.first_row;
  swiglu_experts_forward<T>(be_, expert_weights(p, MoeParams<T>{}), span.blocks, scratch_.xe.ptr() + r * d_,
                            row_gate_.data() + r, gu_.ptr() + r * 2 * n_, scratch_.act.ptr() + r * n_,
                            scratch_.yc.ptr() + r * d_);
}

// The rows back to their tokens' ranks, then out += the sum over each token's experts.
template <typename T>
void MoeLayer<T>::combine(T* out, int tokens) {
  {
    ScopedTimer timer(times_.combine);
    dispatcher_.combine(scratch_.yc);
  }
  be_.combine_rows(out, scratch_.yc, dispatcher_.pair_row(), tokens, top_k_, d_);
}

template <typename T>
void MoeLayer<T>::backward(T* du, const T* dout, const MoeParams<T>& p, const MoeParams<T>& g, double loss_scale,
                           T grad_beta) {
  combine_backward(dout);
  routed_experts_backward(p, g, grad_beta);
  dispatch_backward(du);
  shared_experts_backward(du, dout, p, g, grad_beta);
  router_.backward(du, scratch_.dgate, router_weights(p), router_weights(g), loss_scale, grad_beta);
}

// dyc, the combine buffer's gradient, to the rows' ranks. yc was sized for these rows by forward;
// it takes dyc, then the experts' input gradients dxe [rows, d], which overwrite dyc after their
// first products have read it (experts.h).
template <typename T>
void MoeLayer<T>::combine_backward(const T* dout) {
  be_.combine_rows_backward(scratch_.yc, dout, dispatcher_.pair_row(), tokens_, top_k_, d_);
  ScopedTimer timer(times_.combine);
  scratch_.dgu.ensure(be_, dispatcher_.rows() * 2 * n_);
  scratch_.dact.ensure(be_, dispatcher_.rows() * n_);
  scratch_.row_dgate.ensure(be_, dispatcher_.combine_rows());
  dispatcher_.combine_backward(scratch_.yc);
}

// The expert rows' inputs and activations rebuilt (not kept from forward: a gather and an
// elementwise pass; with recompute_experts also gu, by the forward's products span by span), then
// the experts' backward: dxe into yc, the gates' gradients by row.
template <typename T>
void MoeLayer<T>::routed_experts_backward(const MoeParams<T>& p, const MoeParams<T>& g, T grad_beta) {
  dispatcher_.redispatch(scratch_.xe, u_low_);  // xe and act were sized for these rows by forward
  if (recompute_experts_) {
    gu_.ensure(be_, dispatcher_.rows() * 2 * n_);
    routed_gate_up(p, dispatcher_.own_span());
    for (const RowSpan& span : dispatcher_.received_spans()) routed_gate_up(p, span);
  }
  be_.swiglu_forward(scratch_.act, gu_, row_gate_, static_cast<int>(dispatcher_.rows()), n_);
  SwiGluWeights<T> experts = expert_weights(p, g);
  experts.g_beta = grad_beta;
  swiglu_experts_backward<T>(be_, experts, dispatcher_.blocks(), scratch_.xe, row_gate_, gu_, scratch_.act,
                             scratch_.yc, scratch_.row_dgate, scratch_.dgu, scratch_.dact, scratch_.yc);
}

// du = the rows' input gradients summed back to their tokens; the gates' gradients by pair.
template <typename T>
void MoeLayer<T>::dispatch_backward(T* du) {
  {
    ScopedTimer timer(times_.dispatch);
    dispatcher_.dispatch_backward(du, scratch_.yc);
  }
  ScopedTimer timer(times_.combine);
  dispatcher_.combine_gate_grads(scratch_.dgate, scratch_.row_dgate);
}

// du += the shared experts' input gradient.
template <typename T>
void MoeLayer<T>::shared_experts_backward(T* du, const T* dout, const MoeParams<T>& p, const MoeParams<T>& g,
                                          T grad_beta) {
  if (shared_hidden_ == 0) return;
  if (recompute_experts_) {
    swiglu_experts_gate_up<T>(be_, shared_weights(p, MoeParams<T>{}), {{0, tokens_}}, u_low_, shared_gu_);
    be_.swiglu_forward(shared_act_, shared_gu_, nullptr, tokens_, shared_hidden_);
  }
  SwiGluWeights<T> shared = shared_weights(p, g);
  shared.g_beta = grad_beta;
  swiglu_experts_backward<T>(be_, shared, {{0, tokens_}}, u_low_, nullptr, shared_gu_, shared_act_, dout, nullptr,
                             scratch_.dgu, scratch_.dact, du, T(1));
}

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace dsmoe
