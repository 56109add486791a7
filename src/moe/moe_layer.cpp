#include "moe/moe_layer.h"

#include <algorithm>

#include "util/check.h"
#include "util/timer.h"

namespace dsmoe {

template <typename T>
MoeLayer<T>::MoeLayer(Backend<T>& be, Comm& world, Comm& ep, const ExpertPlacement& placement, const RouterSpec& spec,
                      int d, int expert_hidden, int n_shared, int max_tokens, MoeScratch<T>& scratch)
    : be_(be), world_(world), spec_(spec), d_(d), n_(expert_hidden), shared_hidden_(n_shared * expert_hidden),
      n_local_(placement.per_rank()), dispatcher_(be, ep, placement, d), scratch_(scratch) {
  const int64_t N = spec.n_experts, pairs = (int64_t)max_tokens * spec.top_k;
  const int64_t shared_rows = shared_hidden_ > 0 ? max_tokens : 0;
  logits_.reset(be, max_tokens * N);
  gate_.reset(be, pairs);
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
  scratch_.tmp.ensure(be, (int64_t)max_tokens * N);  // the router's logit gradients
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
void MoeLayer<T>::forward(T* out, const T* u, Ptr<const T> u_low, int tokens, const MoeParams<T>& p,
                          const RouteContext& ctx, const std::vector<float>& bias, const T* residual) {
  const int N = spec_.n_experts, K = spec_.top_k;
  tokens_ = tokens;
  u_ = u;
  u_low_ = u_low;
  be_.gemm({false, true, tokens, N, d_, T(1), u, d_, p.router, d_, T(0), logits_, N, true});
  Routing<T> r;
  r.tokens = tokens;
  if (ctx.training && spec_.noise > 0) {
    be_.gemm({false, true, tokens, N, d_, T(1), u, d_, p.noise_w, d_, T(0), scratch_.tmp, N, true});
    r.noise_pre = to_host(be_, scratch_.tmp.data(), (int64_t)tokens * N);
    r.logits = to_host(be_, logits_.data(), (int64_t)tokens * N);
    add_router_noise(spec_, ctx, r);
    to_device(be_, logits_.data(), r.logits);
  }
  // Scores, choices, gates and the statistics where the logits are.
  scratch_.bias.ensure(be_, N);
  to_device(be_, scratch_.bias.data(), bias);
  scores_.ensure(be_, (int64_t)tokens * N);
  sel_.ensure(be_, (int64_t)tokens * K);
  be_.route_tokens(scores_, sel_, gate_, logits_, scratch_.bias, spec_.row(), tokens);
  r.stats = stats_spec(spec_, ctx);
  // Training's sequence-wise loss needs whole sequences on each rank; generation routes the
  // positions of a sequence a few at a time, and takes no loss.
  DSMOE_ASSERT(!ctx.training || r.stats.seq_alpha <= 0 || tokens % r.stats.seq_len == 0);
  const int W = r.stats.columns();
  partial_.ensure(be_, (int64_t)r.stats.chunks(tokens) * W);
  totals_.ensure(be_, W + 1);
  balance_.ensure(be_, N + kBalanceLosses);
  be_.router_statistics(partial_, totals_, scores_, sel_, r.stats, tokens);
  double t0 = now_seconds();
  // Capacity dropping (in global token order) and the statistics of several ranks go through
  // the host; otherwise the totals stay where they are.
  const bool dropping = spec_.capacity_factor > 0;
  if (dropping || world_.size() > 1) {
    std::vector<double> totals = to_host(be_, totals_.data(), W + 1);
    if (dropping) {
      r.sel = to_host(be_, sel_.data(), (int64_t)tokens * K);
      r.gate = to_host(be_, gate_.data(), (int64_t)tokens * K);
    }
    add_up_statistics(spec_, ctx, totals, r, world_);
    if (dropping) to_device(be_, gate_.data(), r.gate);
    to_device(be_, totals_.data(), totals);
  }
  be_.router_balance(balance_, totals_, r.stats);
  routing_ = std::move(r);
  statistics_on_host_ = false;
  times_.route += now_seconds() - t0;

  // The plan where the choices are, unless tokens travel or capacity dropped some. It waits for
  // the device (the row counts size the products); the work queued before it counts as compute.
  be_.synchronize();
  t0 = now_seconds();
  if (dispatcher_.local() && !dropping) {
    dispatcher_.plan_local(sel_, tokens, K);
  } else {
    if (routing_.sel.empty()) routing_.sel = to_host(be_, sel_.data(), (int64_t)tokens * K);
    dispatcher_.plan(routing_.sel, routing_.kept, tokens, K);
  }
  const int64_t rows = dispatcher_.rows();
  scratch_.xe.ensure(be_, rows * d_);
  gu_.ensure(be_, rows * 2 * n_);
  scratch_.act.ensure(be_, rows * n_);
  const int64_t combine_rows = dispatcher_.combine_rows();
  scratch_.yc.ensure(be_, combine_rows * d_);
  row_gate_.ensure(be_, combine_rows);
  dispatcher_.dispatch_gates(row_gate_, gate_);
  MoeParams<T> none;
  auto experts_on = [&](const RowSpan& span) {
    const int64_t r = span.first_row;
    swiglu_experts_forward<T>(be_, expert_weights(p, none), span.blocks, scratch_.xe.ptr() + r * d_,
                              row_gate_.data() + r, gu_.ptr() + r * 2 * n_, scratch_.act.ptr() + r * n_,
                              scratch_.yc.ptr() + r * d_);
  };
  // While the other ranks' tokens travel, the shared experts and the own tokens' experts run
  // (as DeepSeek overlaps them); without overlap, everything waits for the exchange.
  dispatcher_.dispatch_start(scratch_.xe, u_low);
  if (!overlap_) dispatcher_.dispatch_finish(scratch_.xe);
  times_.dispatch += now_seconds() - t0;
  if (shared_hidden_ > 0)
    swiglu_experts_forward<T>(be_, shared_weights(p, none), {{0, tokens}}, u_low, nullptr, shared_gu_,
                              shared_act_, out, residual);
  else if (residual)
    be_.copy(out, residual, (int64_t)tokens * d_);
  else
    be_.fill(out, T(0), (int64_t)tokens * d_);
  experts_on(dispatcher_.own_span());
  t0 = now_seconds();
  if (overlap_) dispatcher_.dispatch_finish(scratch_.xe);
  times_.dispatch += now_seconds() - t0;
  for (const RowSpan& span : dispatcher_.received_spans()) experts_on(span);
  t0 = now_seconds();
  dispatcher_.combine(scratch_.yc);
  times_.combine += now_seconds() - t0;
  be_.combine_rows(out, scratch_.yc, dispatcher_.pair_row(), tokens, K, d_);
}

template <typename T>
void MoeLayer<T>::backward(T* du, const T* dout, const MoeParams<T>& p, const MoeParams<T>& g, double loss_scale,
                           T grad_beta) {
  const int N = spec_.n_experts, K = spec_.top_k, tokens = tokens_;
  const int64_t rows = dispatcher_.rows(), combine_rows = dispatcher_.combine_rows();
  // yc was sized for these rows by forward; it takes dyc, then the experts' input gradients dxe
  // [rows, d], which overwrite dyc after their first products have read it (experts.h).
  be_.combine_rows_backward(scratch_.yc, dout, dispatcher_.pair_row(), tokens, K, d_);
  double t0 = now_seconds();
  scratch_.dgu.ensure(be_, rows * 2 * n_);
  scratch_.dact.ensure(be_, rows * n_);
  scratch_.row_dgate.ensure(be_, combine_rows);
  dispatcher_.combine_backward(scratch_.yc);
  times_.combine += now_seconds() - t0;
  dispatcher_.redispatch(scratch_.xe, u_low_);  // xe and act were sized for these rows by forward
  be_.swiglu_forward(scratch_.act, gu_, row_gate_, static_cast<int>(rows), n_);
  const Ptr<T> dxe = scratch_.yc;
  SwiGluWeights<T> experts = expert_weights(p, g);
  experts.g_beta = grad_beta;
  swiglu_experts_backward<T>(be_, experts, dispatcher_.blocks(), scratch_.xe, row_gate_, gu_,
                             scratch_.act, scratch_.yc, scratch_.row_dgate, scratch_.dgu, scratch_.dact, dxe);
  t0 = now_seconds();
  dispatcher_.dispatch_backward(du, dxe);
  times_.dispatch += now_seconds() - t0;
  t0 = now_seconds();
  dispatcher_.combine_gate_grads(scratch_.dgate, scratch_.row_dgate);
  times_.combine += now_seconds() - t0;

  if (shared_hidden_ > 0) {  // adds its input gradient to du
    SwiGluWeights<T> shared = shared_weights(p, g);
    shared.g_beta = grad_beta;
    swiglu_experts_backward<T>(be_, shared, {{0, tokens}}, u_low_, nullptr, shared_gu_, shared_act_, dout, nullptr,
                               scratch_.dgu, scratch_.dact, du, T(1));
  }

  be_.router_backward(scratch_.tmp, scratch_.dgate, scores_, sel_, logits_, balance_, partial_, routing_.stats,
                      loss_scale, tokens);
  be_.gemm({false, false, tokens, d_, N, T(1), scratch_.tmp, N, p.router, d_, T(1), du, d_, true});
  be_.gemm({true, false, N, d_, tokens, T(1), scratch_.tmp, N, u_, d_, grad_beta, g.router, d_, true});
  if (!routing_.noise_pre.empty()) {
    to_device(be_, scratch_.tmp.data(),
              noise_backward(routing_, to_host(be_, scratch_.tmp.data(), (int64_t)tokens * N)));
    be_.gemm({false, false, tokens, d_, N, T(1), scratch_.tmp, N, p.noise_w, d_, T(1), du, d_, true});
    be_.gemm({true, false, N, d_, tokens, T(1), scratch_.tmp, N, u_, d_, grad_beta, g.noise_w, d_, true});
  }
}

template <typename T>
const Routing<T>& MoeLayer<T>::routing() const {
  if (!statistics_on_host_) {
    const int N = spec_.n_experts, W = routing_.stats.columns();
    set_statistics(spec_, to_host(be_, totals_.data(), W + 1), to_host(be_, balance_.data(), N + kBalanceLosses),
                   routing_);
    statistics_on_host_ = true;
  }
  return routing_;
}

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace dsmoe
