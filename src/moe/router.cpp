#include "moe/router.h"

#include "backend/linear.h"
#include "util/check.h"
#include "util/timer.h"

namespace dsmoe {

template <typename T>
Router<T>::Router(Backend<T>& be, Comm& world, const RouterSpec& spec, int d, int max_tokens, Buf<T>& logit_grads)
    : be_(be), world_(world), spec_(spec), d_(d), bias_(spec.n_experts, 0.0f), logit_grads_(logit_grads) {
  const int64_t N = spec.n_experts;
  logits_.reset(be, max_tokens * N);
  gate_.reset(be, (int64_t)max_tokens * spec.top_k);
  logit_grads_.ensure(be, max_tokens * N);
  bias_dev_.ensure(be, N);
  to_device(be_, bias_dev_.data(), bias_);
}

template <typename T>
void Router<T>::set_bias(const std::vector<float>& bias) {
  DSMOE_ASSERT(static_cast<int>(bias.size()) == spec_.n_experts);
  bias_ = bias;
  to_device(be_, bias_dev_.data(), bias_);
}

template <typename T>
void Router<T>::update_bias(const double* load, double rate) {
  const int N = spec_.n_experts;
  double mean = 0;
  for (int i = 0; i < N; ++i) mean += load[i] / N;
  for (int i = 0; i < N; ++i) {
    const double diff = mean - load[i];
    bias_[i] += static_cast<float>(rate * ((diff > 0) - (diff < 0)));
  }
  to_device(be_, bias_dev_.data(), bias_);
}

// logits += r * eps * softplus(u . noise_i) (training with router noise; docs/model.md), on the
// host: the noise is keyed by global token and expert.
template <typename T>
void Router<T>::add_noise(const T* u, const RouterWeights<T>& w, const RouteContext& ctx, int tokens) {
  const int N = spec_.n_experts;
  linear_forward<T>(be_, logit_grads_, u, w.noise_w, tokens, d_, N, nullptr, Exactness::fp32);
  routing_.noise_pre = to_host(be_, logit_grads_.data(), (int64_t)tokens * N);
  routing_.logits = to_host(be_, logits_.data(), (int64_t)tokens * N);
  add_router_noise(spec_, ctx, routing_);
  to_device(be_, logits_.data(), routing_.logits);
}

// Capacity dropping (in global token order) and the statistics of several ranks go through the
// host; otherwise the totals stay where they are.
template <typename T>
void Router<T>::drop_and_add_up(const RouteContext& ctx, int tokens) {
  const int K = spec_.top_k, W = routing_.stats.columns();
  if (!drops() && world_.size() == 1) return;
  std::vector<double> totals = to_host(be_, totals_.data(), W + 1);
  if (drops()) {
    routing_.sel = to_host(be_, sel_.data(), (int64_t)tokens * K);
    routing_.gate = to_host(be_, gate_.data(), (int64_t)tokens * K);
  }
  add_up_statistics(spec_, ctx, totals, routing_, world_);
  if (drops()) to_device(be_, gate_.data(), routing_.gate);
  to_device(be_, totals_.data(), totals);
}

template <typename T>
void Router<T>::forward(const T* u, int tokens, const RouterWeights<T>& w, const RouteContext& ctx) {
  const int N = spec_.n_experts, K = spec_.top_k;
  tokens_ = tokens;
  u_ = u;
  routing_ = Routing<T>{};
  routing_.tokens = tokens;
  linear_forward<T>(be_, logits_, u, w.router, tokens, d_, N, nullptr, Exactness::fp32);
  if (ctx.training && spec_.noise > 0) add_noise(u, w, ctx, tokens);
  // Scores, choices, gates and the statistics where the logits are.
  scores_.ensure(be_, (int64_t)tokens * N);
  sel_.ensure(be_, (int64_t)tokens * K);
  be_.route_tokens(scores_, sel_, gate_, logits_, bias_dev_, spec_.row(), tokens);
  routing_.stats = stats_spec(spec_, ctx);
  // Training's sequence-wise loss needs whole sequences on each rank; generation routes the
  // positions of a sequence a few at a time, and takes no loss.
  DSMOE_ASSERT(!ctx.training || routing_.stats.seq_alpha <= 0 || tokens % routing_.stats.seq_len == 0);
  const int W = routing_.stats.columns();
  partial_.ensure(be_, (int64_t)routing_.stats.chunks(tokens) * W);
  totals_.ensure(be_, W + 1);
  balance_.ensure(be_, N + kBalanceLosses);
  be_.router_statistics(partial_, totals_, scores_, sel_, routing_.stats, tokens);
  {
    ScopedTimer host(host_seconds_);
    drop_and_add_up(ctx, tokens);
    be_.router_balance(balance_, totals_, routing_.stats);
  }
  statistics_on_host_ = false;
}

template <typename T>
const std::vector<int32_t>& Router<T>::host_choices() {
  if (routing_.sel.empty()) routing_.sel = to_host(be_, sel_.data(), (int64_t)tokens_ * spec_.top_k);
  return routing_.sel;
}

template <typename T>
void Router<T>::backward(T* du, const T* dgate, const RouterWeights<T>& w, const RouterWeights<T>& g,
                         double loss_scale, T grad_beta) {
  const int N = spec_.n_experts, tokens = tokens_;
  Buf<T>& dlogits = logit_grads_;  // [tokens, N]
  be_.router_backward(dlogits, dgate, scores_, sel_, logits_, balance_, partial_, routing_.stats, loss_scale, tokens);
  linear_backward_input<T>(be_, du, dlogits, w.router, tokens, d_, N, T(1), Exactness::fp32);
  linear_backward_weight<T>(be_, g.router, dlogits, u_, tokens, d_, N, grad_beta, Exactness::fp32);
  if (routing_.noise_pre.empty()) return;
  to_device(be_, dlogits.data(), noise_backward(routing_, to_host(be_, dlogits.data(), (int64_t)tokens * N)));
  linear_backward_input<T>(be_, du, dlogits, w.noise_w, tokens, d_, N, T(1), Exactness::fp32);
  linear_backward_weight<T>(be_, g.noise_w, dlogits, u_, tokens, d_, N, grad_beta, Exactness::fp32);
}

template <typename T>
const Routing<T>& Router<T>::statistics() const {
  if (!statistics_on_host_) {
    const int N = spec_.n_experts, W = routing_.stats.columns();
    set_statistics(spec_, to_host(be_, totals_.data(), W + 1), to_host(be_, balance_.data(), N + kBalanceLosses),
                   routing_);
    statistics_on_host_ = true;
  }
  return routing_;
}

template class Router<float>;
template class Router<double>;

}  // namespace dsmoe
