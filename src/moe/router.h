// The router of one MoE layer (docs/model.md, MoE FFN and Balance losses). It owns the router
// (and noise) products, the buffers of one micro-batch's routing (logits, scores, choices,
// gates, statistics), the noise, capacity dropping, the balance losses and the balance bias with
// its update. forward() routes the tokens where the backend runs (routing/: route_row.h for the
// choices, route_stats.h for the statistics; the host takes part only for capacity dropping, the
// statistics of several ranks and the noise); backward() gives the input gradient.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "moe/router_math.h"

namespace dsmoe {

template <typename T>
struct RouterWeights {  // pointers into the parameter (or gradient) buffer
  T* router = nullptr;   // [N, d]
  T* noise_w = nullptr;  // [N, d], or null without router noise
};

template <typename T>
class Router {
 public:
  // world: every rank (the statistics are global); logit_grads: scratch of max_tokens x N that
  // the backward may use (shared with the other layers').
  Router(Backend<T>& be, Comm& world, const RouterSpec& spec, int d, int max_tokens, Buf<T>& logit_grads);

  // Routes u [tokens, d] (exact fp32; kept by the caller until backward): choices() [tokens, K],
  // best first, and gates() [tokens, K] (0 where capacity dropped the pair) on the device; the
  // statistics are the global micro-batch's. The balance bias steers the choice only.
  void forward(const T* u, int tokens, const RouterWeights<T>& w, const RouteContext& ctx);
  // du [tokens, d] += dL/du through the router, from dgate [tokens, K] = dL/dgate; the weights'
  // gradients written into g (grad_beta 0) or added to it (1). The loss scale multiplies the
  // balance terms.
  void backward(T* du, const T* dgate, const RouterWeights<T>& w, const RouterWeights<T>& g, double loss_scale,
                T grad_beta);

  Buf<int32_t>& choices() { return sel_; }
  Buf<T>& gates() { return gate_; }
  // Capacity dropping: which pairs were kept, and the choices, on the host (the dispatcher's plan
  // needs them there); empty otherwise.
  bool drops() const { return spec_.capacity_factor > 0; }
  const std::vector<int32_t>& host_choices();
  const std::vector<uint8_t>& kept() const { return routing_.kept; }

  // The last forward's global statistics (load, dropped pairs, losses), brought to the host on
  // first call.
  const Routing<T>& statistics() const;

  const std::vector<float>& bias() const { return bias_; }
  void set_bias(const std::vector<float>& bias);
  // Auxiliary-loss-free balancing: each expert's bias moves by `rate` toward the mean of `load`
  // (a step's selections per expert): up when below it, down when above.
  void update_bias(const double* load, double rate);

  double host_seconds() const { return host_seconds_; }  // the host's part of forward so far
  void reset_host_seconds() { host_seconds_ = 0; }

 private:
  void add_noise(const T* u, const RouterWeights<T>& w, const RouteContext& ctx, int tokens);
  void drop_and_add_up(const RouteContext& ctx, int tokens);

  Backend<T>& be_;
  Comm& world_;
  RouterSpec spec_;
  int d_;
  int tokens_ = 0;
  const T* u_ = nullptr;
  std::vector<float> bias_;  // [N]
  mutable Routing<T> routing_;
  mutable bool statistics_on_host_ = true;
  double host_seconds_ = 0;
  Buf<T> logits_, scores_, gate_;
  Buf<int32_t> sel_;
  Buf<float> bias_dev_;
  Buf<double> partial_, totals_, balance_;  // the statistics (routing/route_stats.h)
  Buf<T>& logit_grads_;
};

}  // namespace dsmoe
