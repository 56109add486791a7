#include "model/layout.h"

namespace dsmoe {

std::string layer_prefix(int layer) { return "layers/" + std::to_string(layer) + "/"; }

ParamTable build_param_table(const Config& cfg, int expert_first, int n_local_experts) {
  const auto& m = cfg.model;
  const int64_t d = m.d_model, V = m.vocab_size;
  ParamTable t;
  t.add("tok_embedding", {V, d});
  if (!m.tie_embeddings) t.add("lm_head", {V, d});
  t.add("final_norm", {d});
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string p = layer_prefix(l);
    t.add(p + "attn_norm", {d});
    for (const char* w : {"wq", "wk", "wv", "wo"}) t.add(p + "attn/" + w, {d, d});
    t.add(p + "ffn_norm", {d});
    if (!cfg.is_moe_layer(l)) {
      const int64_t h = m.dense_hidden;
      t.add(p + "ffn/w_gate", {h, d});
      t.add(p + "ffn/w_up", {h, d});
      t.add(p + "ffn/w_down", {d, h});
      continue;
    }
    const auto& moe = cfg.moe;
    const int64_t N = moe.n_routed, n = moe.expert_hidden, sh = (int64_t)moe.n_shared * n;
    t.add(p + "moe/router", {N, d});
    if (moe.router_noise > 0) t.add(p + "moe/router_noise_w", {N, d});
    if (sh > 0) {
      t.add(p + "moe/shared/w_gate", {sh, d});
      t.add(p + "moe/shared/w_up", {sh, d});
      t.add(p + "moe/shared/w_down", {d, sh});
    }
  }
  // The routed experts last: one contiguous range, reduced over the shard's replicas only.
  for (int l = cfg.model.first_dense_layers; l < m.n_layers; ++l) {
    const std::string p = layer_prefix(l) + "moe/experts/";
    const int64_t N = cfg.moe.n_routed, n = cfg.moe.expert_hidden;
    t.add_pair(p + "w_gate", p + "w_up", {n_local_experts, n, d}, true, expert_first, N);
    t.add(p + "w_down", {n_local_experts, d, n}, true, expert_first, N);
  }
  return t;
}

}  // namespace dsmoe
