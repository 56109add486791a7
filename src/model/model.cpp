#include "model/model.h"

#include <algorithm>
#include <functional>
#include <type_traits>

#include "backend/linear.h"
#include "model/layout.h"
#include "moe/experts.h"
#include "util/check.h"
#include "util/rng.h"

namespace dsmoe {

RouterSpec router_spec(const Config& cfg, int expert_parallel_size) {
  RouterSpec s;
  s.n_experts = cfg.moe.n_routed;
  s.top_k = cfg.moe.top_k;
  s.score = parse_score_kind(cfg.moe.score);
  s.norm_topk = cfg.moe.norm_topk;
  s.noise = cfg.moe.router_noise;
  s.capacity_factor = cfg.moe.capacity_factor;
  s.device_groups = cfg.balance.device_groups > 0 ? cfg.balance.device_groups : expert_parallel_size;
  s.route_devices = cfg.moe.route_devices;
  s.expert_alpha = cfg.balance.expert_alpha;
  s.device_alpha = cfg.balance.device_alpha;
  s.seq_alpha = cfg.balance.seq_alpha;
  s.comm_alpha = cfg.balance.comm_alpha;
  s.seq_len = cfg.model.seq_len;
  s.force_balance = cfg.moe.force_balance;
  return s;
}

template <typename T>
Model<T>::Model(const Config& cfg, Backend<T>& be, Comm& world, int max_seqs, Comm* ep)
    : cfg_(cfg), be_(be), max_seqs_(max_seqs) {
  const auto& m = cfg.model;
  DSMOE_CHECK(m.vocab_size > 0, "model.vocab_size is not resolved");
  if (!ep) {
    own_ep_ = make_single_comm();
    ep = own_ep_.get();
  }
  placement_ = ExpertPlacement{cfg.moe.n_routed, ep->size(), ep->rank()};
  table_ = build_param_table(cfg, placement_.first(), placement_.per_rank());
  params_.reset(be, table_.size());
  grads_.reset(be, table_.size());
  be.set_weights(params_.data(), table_.size());
  zero_grads();

  const int64_t R = (int64_t)max_seqs * m.seq_len, d = m.d_model;
  const int64_t saved = be.attention_saved_size(max_seqs, m.seq_len, m.n_heads);
  const RouterSpec spec = router_spec(cfg, ep->size());
  if (cfg.n_moe_layers() < m.n_layers) {  // the dense FFN's backward scratch is the MoE layers'
    moe_scratch_.dgu.ensure(be, R * 2 * m.dense_hidden);
    moe_scratch_.dact.ensure(be, R * m.dense_hidden);
  }
  acts_.resize(m.n_layers);
  recompute_attention_ = cfg.train.recomputes_attention();
  auto allocate = [&](AttentionActs& at) {
    at.qkv.ensure(be, R * 3 * d);
    at.att.ensure(be, R * d);
    at.saved.reset(be, saved);
  };
  if (recompute_attention_) allocate(shared_attention_);
  for (int l = 0; l < m.n_layers; ++l) {
    LayerActs& a = acts_[l];
    a.x.reset(be, R * d);
    a.rstd1.reset(be, R);
    if (!recompute_attention_) allocate(a.attention);
    a.h.reset(be, R * d);
    a.rstd2.reset(be, R);
    if (cfg.is_moe_layer(l)) {
      moe_layer_ids_.push_back(l);
      moe_.push_back(std::make_unique<MoeLayer<T>>(be, world, *ep, placement_, spec, m.d_model,
                                                   cfg.moe.expert_hidden, cfg.moe.n_shared, static_cast<int>(R),
                                                   moe_scratch_, cfg.train.recomputes_experts()));
    } else {
      a.ffn_gu.ensure(be, R * 2 * m.dense_hidden);
      a.ffn_act.ensure(be, R * m.dense_hidden);
    }
  }
  ln1_.ensure(be, R * d);
  ln2_.reset(be, R * d);
  if (be.bf16_storage()) ln2_low_.ensure(be, R * d);
  tokens_.reset(be, R);
  targets_.reset(be, R);
  xs_final_.reset(be, R * d);
  ln_f_.ensure(be, R * d);
  rstd_f_.reset(be, R);
  logits_.reset(be, R * m.vocab_size);
  losses_.reset(be, R);
  dx_.reset(be, R * d);
  dtmp_.reset(be, R * d);
  dqkv_.ensure(be, R * 3 * d);
  att_scratch_.reset(be, be.attention_scratch_size(max_seqs, m.seq_len, m.n_heads));
}

template <typename T>
void Model<T>::init_params(uint64_t seed) {
  std::vector<T> host(table_.size(), T(0));
  for (const auto& t : table_.tensors()) {
    const uint64_t tensor_id = fnv1a(t.name);  // independent of the buffer layout
    if (t.shape.size() == 1) {  // norm weights
      std::fill(host.data() + t.offset, host.data() + t.offset + t.numel, T(1));
      continue;
    }
    const int64_t first = t.expert_first * t.slice();
#pragma omp parallel for schedule(static)  // each element is a function of its key alone
    for (int64_t i = 0; i < t.numel; ++i)
      host[t.at(i)] = static_cast<T>(cfg_.model.init_std * normal_from_key(hash_key(seed, tensor_id, first + i)));
  }
  to_device(be_, params_.data(), host);
}

// In float, no converted copy: the buffers are gigabytes for the models of a GPU.
template <typename T>
std::vector<float> Model<T>::params_to_host() {
  if constexpr (std::is_same_v<T, float>) {
    return to_host(be_, params_.data(), table_.size());
  } else {
    std::vector<T> h = to_host(be_, params_.data(), table_.size());
    return std::vector<float>(h.begin(), h.end());
  }
}

template <typename T>
void Model<T>::params_from_host(const std::vector<float>& p) {
  DSMOE_ASSERT((int64_t)p.size() == table_.size());
  if constexpr (std::is_same_v<T, float>)
    to_device(be_, params_.data(), p);
  else
    to_device(be_, params_.data(), std::vector<T>(p.begin(), p.end()));
}

// Zeroed: what the backward only adds to, the norms' weights (RMSNorm's backward) and an untied
// embedding (a scatter); a tied one is first written by the output head's product.
template <typename T>
void Model<T>::zero_grads() {
  for (const TensorInfo& t : table_.tensors())
    if (t.shape.size() == 1 || (t.name == "tok_embedding" && !cfg_.model.tie_embeddings))
      be_.fill(grads_.data() + t.offset, T(0), t.numel);
  grad_beta_ = 0;
}

// The gate and up weights under `prefix` (w_gate, w_up), which lie side by side (experts.h); null
// where absent.
template <typename T>
T* Model<T>::gate_up(const std::string& prefix, bool grads) {
  const TensorInfo *gate = table_.find(prefix + "w_gate"), *up = table_.find(prefix + "w_up");
  if (!gate) return nullptr;
  const int64_t group = gate->shape.size() == 3 ? gate->slice() : gate->numel;  // [experts, n, d] or [n, d]
  DSMOE_ASSERT(up && up->offset == gate->offset + group);
  return (grads ? grads_.data() : params_.data()) + gate->offset;
}

template <typename T>
MoeParams<T> Model<T>::moe_params(int layer, bool grads) {
  auto at = [&](const std::string& name) -> T* {
    const TensorInfo* t = table_.find(layer_prefix(layer) + name);
    if (!t) return nullptr;
    return (grads ? grads_.data() : params_.data()) + t->offset;
  };
  return {at("moe/router"),      at("moe/router_noise_w"), gate_up(layer_prefix(layer) + "moe/shared/", grads),
          at("moe/shared/w_down"), gate_up(layer_prefix(layer) + "moe/experts/", grads), at("moe/experts/w_down")};
}

template <typename T>
ForwardResult Model<T>::forward(const int32_t* tokens, const int32_t* targets, int n_seqs, const ForwardOpts& opts) {
  const auto& m = cfg_.model;
  DSMOE_ASSERT(n_seqs > 0 && n_seqs <= max_seqs_);
  const int S = m.seq_len, V = m.vocab_size;
  const int R = n_seqs * S;
  n_seqs_ = n_seqs;
  cached_positions_ = 0;  // the rows below are rewritten
  loss_scale_ = opts.loss_scale;
  const int64_t tokens_global = opts.tokens_global > 0 ? opts.tokens_global : R;
  be_.copy_bytes_to_device(tokens_.data(), tokens, (size_t)R * sizeof(int32_t));

  embed(0, R);
  for (int l = 0; l < m.n_layers; ++l) {
    attend(l);
    attention_output(l, 0, R);
    ffn(l, 0, R, RouteContext{tokens_global, opts.token_offset, opts.training, hash_key(opts.noise_key, l), {}});
  }
  head(0, R);
  ForwardResult res;
  if (targets) {
    be_.copy_bytes_to_device(targets_.data(), targets, (size_t)R * sizeof(int32_t));
    ce_scale_ = opts.loss_scale / static_cast<double>(tokens_global);
    res.ce_sum = be_.cross_entropy(logits_, losses_, targets_, R, V, static_cast<T>(ce_scale_));
  }
  // The balance losses last: a layer's statistics may still be on the device, and bringing them
  // over waits for its work (the loss above has waited for all of it already).
  for (const auto& moe : moe_) res.aux_loss += moe->router().statistics().aux_loss;
  return res;
}

template <typename T>
std::vector<std::vector<float>> Model<T>::bias() const {
  std::vector<std::vector<float>> out;
  for (const auto& moe : moe_) out.push_back(moe->router().bias());
  return out;
}

template <typename T>
void Model<T>::set_bias(const std::vector<std::vector<float>>& bias) {
  DSMOE_ASSERT(bias.size() == moe_.size());
  for (size_t i = 0; i < moe_.size(); ++i) moe_[i]->router().set_bias(bias[i]);
}

template <typename T>
void Model<T>::update_bias(const std::vector<double>& load, double rate) {
  const size_t N = static_cast<size_t>(cfg_.moe.n_routed);
  for (size_t i = 0; i < moe_.size(); ++i) moe_[i]->router().update_bias(load.data() + i * N, rate);
}

// A new token (n = 1) is one row of every activation: [1, d] through the norms and products, its
// q, k, v [1, 3d] appended to the cached rows [first, 3d] of qkv, its attention [1, d] over all
// of them, one token through the router and its experts, and its logits [1, V].
template <typename T>
void Model<T>::forward_positions(const int32_t* tokens, int first, int n) {
  const auto& m = cfg_.model;
  const int S = m.seq_len, d = m.d_model, H = m.n_heads, hd = d / H;
  DSMOE_ASSERT(n > 0 && first + n <= S && (first == 0 || first == cached_positions_));
  DSMOE_CHECK(!recompute_attention_, "generation caches every layer's keys and values: build the model with "
              "train.recompute: none");
  if (first == 0) position_selections_.assign(moe_.size(), std::vector<int64_t>(cfg_.moe.n_routed, 0));
  n_seqs_ = 1;
  be_.copy_bytes_to_device(tokens_.data() + first, tokens, (size_t)n * sizeof(int32_t));

  embed(first, n);
  for (int l = 0; l < m.n_layers; ++l) {
    AttentionActs& a = attention(l);
    attention_input(l, first, n);
    be_.rope(a.qkv.ptr() + (int64_t)first * 3 * d, 1, n, H, hd, m.rope_theta, false, first);
    be_.attention_queries(a.att.ptr() + (int64_t)first * d, a.qkv, first, n, H, hd);
    attention_output(l, first, n);
    // Capacity as in a forward of the whole sequence (seq_len tokens), after the cached positions.
    RouteContext ctx{S, first, false, 0, {}};
    const int moe_index = cfg_.is_moe_layer(l) ? moe_index_of(l) : -1;
    if (moe_index >= 0) ctx.earlier_selections = position_selections_[moe_index];
    ffn(l, first, n, ctx);
    if (moe_index >= 0 && cfg_.moe.capacity_factor > 0) {  // (the counts come to the host only for capacity)
      const std::vector<double>& load = routing(moe_index).load;  // this call's selections
      for (size_t i = 0; i < load.size(); ++i) position_selections_[moe_index][i] += static_cast<int64_t>(load[i]);
    }
  }
  head(first, n);
  cached_positions_ = first + n;
}

// The parts of the forward that act on each position alone, on rows [first, first + rows).

template <typename T>
void Model<T>::embed(int first, int rows) {
  const int d = cfg_.model.d_model;
  be_.embedding_forward(acts_[0].x.data() + (int64_t)first * d, tokens_.data() + first, p("tok_embedding"), rows, d);
}

// Layer l's attention over the whole batch: qkv, RoPE, the attention's output and saved statistics.
template <typename T>
void Model<T>::attend(int l) {
  const auto& m = cfg_.model;
  const int hd = m.d_model / m.n_heads;
  AttentionActs& a = attention(l);
  attention_input(l, 0, n_seqs_ * m.seq_len);
  be_.rope(a.qkv, n_seqs_, m.seq_len, m.n_heads, hd, m.rope_theta, false, 0);
  be_.attention_forward(a.att, a.saved, a.qkv, n_seqs_, m.seq_len, m.n_heads, hd);
}

// qkv = RMSNorm(x) Wqkv^T, before RoPE.
template <typename T>
void Model<T>::attention_input(int l, int first, int rows) {
  const auto& m = cfg_.model;
  const int d = m.d_model;
  const int64_t at = (int64_t)first * d;
  LayerActs& a = acts_[l];
  const std::string pre = layer_prefix(l);
  be_.rmsnorm_forward(ln1_.ptr() + at, a.rstd1.data() + first, a.x.data() + at, p(pre + "attn_norm"), rows, d,
                      m.norm_eps);
  linear_forward<T>(be_, attention(l).qkv.ptr() + 3 * at, ln1_.ptr() + at, p(pre + "attn/wq"), rows, d, 3 * d);
}

// h = x + att Wo^T
template <typename T>
void Model<T>::attention_output(int l, int first, int rows) {
  const int d = cfg_.model.d_model;
  const int64_t at = (int64_t)first * d;
  LayerActs& a = acts_[l];
  linear_forward<T>(be_, a.h.data() + at, attention(l).att.ptr() + at, p(layer_prefix(l) + "attn/wo"), rows, d, d,
                    /*residual=*/a.x.data() + at);
}

// The layer's output (the next layer's x, or the final norm's input) = h + FFN(RMSNorm(h)).
template <typename T>
void Model<T>::ffn(int l, int first, int rows, const RouteContext& ctx) {
  const auto& m = cfg_.model;
  const int d = m.d_model;
  const int64_t at = (int64_t)first * d;
  LayerActs& a = acts_[l];
  T* out = (l + 1 < m.n_layers ? acts_[l + 1].x.data() : xs_final_.data()) + at;
  ffn_norm(l, first, rows);
  if (cfg_.is_moe_layer(l)) {
    moe_[moe_index_of(l)]->forward(out, ln2_.data() + at, ffn_input() + at, rows, moe_params(l, false), ctx,
                                   a.h.data() + at);
  } else {
    const int h = m.dense_hidden;
    const std::string pre = layer_prefix(l);
    SwiGluWeights<T> w{gate_up(pre + "ffn/", false), p(pre + "ffn/w_down"), nullptr, nullptr, d, h};
    swiglu_experts_forward<T>(be_, w, {{0, rows}}, ffn_input() + at, nullptr,
                              a.ffn_gu.ptr() + (int64_t)first * 2 * h, a.ffn_act.ptr() + (int64_t)first * h, out,
                              a.h.data() + at);
  }
}

// logits = RMSNorm(x; final_norm) head^T
template <typename T>
void Model<T>::head(int first, int rows) {
  const auto& m = cfg_.model;
  const int d = m.d_model, V = m.vocab_size;
  const int64_t at = (int64_t)first * d;
  be_.rmsnorm_forward(ln_f_.ptr() + at, rstd_f_.data() + first, xs_final_.data() + at, p("final_norm"), rows, d,
                      m.norm_eps);
  T* w = m.tie_embeddings ? p("tok_embedding") : p("lm_head");
  linear_forward<T>(be_, logits_.data() + (int64_t)first * V, ln_f_.ptr() + at, w, rows, d, V);
}

template <typename T>
int Model<T>::moe_index_of(int layer) const {
  return static_cast<int>(std::lower_bound(moe_layer_ids_.begin(), moe_layer_ids_.end(), layer) -
                          moe_layer_ids_.begin());
}

// A MoE layer's router reads the FFN norm's output in fp32, the products a bf16 copy (where
// activations are stored so); a dense layer needs only the latter.
template <typename T>
void Model<T>::ffn_norm(int l, int first, int rows) {
  const int d = cfg_.model.d_model;
  const double eps = cfg_.model.norm_eps;
  const int64_t at = (int64_t)first * d;
  const T *h = acts_[l].h.data() + at, *w = p(layer_prefix(l) + "ffn_norm");
  T* rstd = acts_[l].rstd2.data() + first;
  if (cfg_.is_moe_layer(l)) be_.rmsnorm_forward(ln2_.data() + at, rstd, h, w, rows, d, eps);
  if (!cfg_.is_moe_layer(l) || be_.bf16_storage()) be_.rmsnorm_forward(ffn_input() + at, rstd, h, w, rows, d, eps);
}

template <typename T>
std::vector<std::vector<std::string>> Model<T>::backward_stages() const {
  const int L = cfg_.model.n_layers;
  std::vector<std::vector<std::string>> stages(L + 2);
  for (const TensorInfo& t : table_.tensors()) {
    if (t.name == "tok_embedding") {
      stages[L + 1].push_back(t.name);  // tied: the head writes it too, the embedding last
    } else if (const std::string layers = "layers/"; t.name.rfind(layers, 0) == 0) {  // layer_prefix(l)
      stages[L - std::stoi(t.name.substr(layers.size()))].push_back(t.name);
    } else {
      stages[0].push_back(t.name);  // final_norm, lm_head
    }
  }
  return stages;
}

template <typename T>
void Model<T>::backward(const std::function<void(int stage)>& stage_done) {
  auto done = [&](int stage) {
    if (stage_done) stage_done(stage);
  };
  const auto& m = cfg_.model;
  const int S = m.seq_len, d = m.d_model, H = m.n_heads, hd = d / H, V = m.vocab_size;
  const int R = n_seqs_ * S;
  // logits_ holds dL/dlogits (cross_entropy replaced them).
  T* head = m.tie_embeddings ? p("tok_embedding") : p("lm_head");
  T* dhead = m.tie_embeddings ? g("tok_embedding") : g("lm_head");
  linear_backward_input<T>(be_, dtmp_, logits_, head, R, d, V, T(0));
  const T wb = grad_beta_;
  linear_backward_weight<T>(be_, dhead, logits_, ln_f_, R, d, V, wb);
  be_.fill(dx_, T(0), (int64_t)R * d);
  be_.rmsnorm_backward(dx_, g("final_norm"), dtmp_, xs_final_, p("final_norm"), rstd_f_, R, d);
  done(0);

  int moe_index = static_cast<int>(moe_.size());
  for (int l = m.n_layers - 1; l >= 0; --l) {
    LayerActs& a = acts_[l];
    const std::string pre = layer_prefix(l);
    // dx_ = dL/d(layer output): the FFN's output gradient, and dL/dh's part through the residual,
    // to which the FFN path's is added in place (and then the same for dL/dx): no copies.
    ffn_norm(l, 0, R);  // the forward's values again (rstd rewritten)
    if (cfg_.is_moe_layer(l)) {
      --moe_index;
      moe_[moe_index]->backward(dtmp_, dx_, moe_params(l, false), moe_params(l, true), loss_scale_, wb);
    } else {
      SwiGluWeights<T> w{gate_up(pre + "ffn/", false), p(pre + "ffn/w_down"), gate_up(pre + "ffn/", true),
                         g(pre + "ffn/w_down"), d, m.dense_hidden, wb};
      swiglu_experts_backward<T>(be_, w, {{0, R}}, ffn_input(), nullptr, a.ffn_gu, a.ffn_act, dx_, nullptr,
                                 moe_scratch_.dgu, moe_scratch_.dact, dtmp_);
    }
    be_.rmsnorm_backward(dx_, g(pre + "ffn_norm"), dtmp_, a.h, p(pre + "ffn_norm"), a.rstd2, R, d);

    // Attention: h = x + att Wo^T; dx_ holds dL/dh. Recomputed, it is the forward's to the bit:
    // the same kernels on the same inputs.
    if (recompute_attention_) attend(l);
    AttentionActs& at = attention(l);
    linear_backward_input<T>(be_, dtmp_, dx_, p(pre + "attn/wo"), R, d, d, T(0));
    linear_backward_weight<T>(be_, g(pre + "attn/wo"), dx_, at.att, R, d, d, wb);
    be_.attention_backward(dqkv_, att_scratch_, dtmp_, at.qkv, at.att, at.saved, n_seqs_, S, H, hd);
    be_.rope(dqkv_, n_seqs_, S, H, hd, m.rope_theta, true, 0);
    linear_backward_input<T>(be_, dtmp_, dqkv_, p(pre + "attn/wq"), R, d, 3 * d, T(0));
    be_.rmsnorm_forward(ln1_, a.rstd1, a.x, p(pre + "attn_norm"), R, d, m.norm_eps);
    linear_backward_weight<T>(be_, g(pre + "attn/wq"), dqkv_, ln1_, R, d, 3 * d, wb);
    be_.rmsnorm_backward(dx_, g(pre + "attn_norm"), dtmp_, a.x, p(pre + "attn_norm"), a.rstd1, R, d);
    done(m.n_layers - l);
  }
  be_.embedding_backward(g("tok_embedding"), tokens_, dx_, R, d, cfg_.model.vocab_size);
  done(m.n_layers + 1);
  grad_beta_ = 1;
}

template <typename T>
std::vector<T> Model<T>::logits_row_to_host(int row) {
  const int V = cfg_.model.vocab_size;
  return to_host(be_, logits_.data() + (int64_t)row * V, V);
}

template class Model<float>;
template class Model<double>;

}  // namespace dsmoe
