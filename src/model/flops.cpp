#include "model/flops.h"

#include <algorithm>
#include <cstdio>

#include "util/format.h"

namespace dsmoe {

ModelCount count_model(const Config& cfg) {
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  const int64_t d = m.d_model, V = m.vocab_size, L = m.n_layers, Lm = cfg.n_moe_layers(), Ld = L - Lm;
  const int64_t expert = 3 * d * moe.expert_hidden;
  const int64_t router = (moe.router_noise > 0 ? 2 : 1) * moe.n_routed * d;
  ModelCount c;
  c.components = {
      {"embedding", V * d, V * d},
      {"attention", L * 4 * d * d, L * 4 * d * d},
      {"dense_ffn", Ld * 3 * d * m.dense_hidden, Ld * 3 * d * m.dense_hidden},
      {"shared_experts", Lm * moe.n_shared * expert, Lm * moe.n_shared * expert},
      {"routed_experts", Lm * moe.n_routed * expert, Lm * moe.top_k * expert},
      {"router", Lm * router, Lm * router},
      {"norms", (2 * L + 1) * d, (2 * L + 1) * d},
      {"lm_head", m.tie_embeddings ? 0 : V * d, m.tie_embeddings ? 0 : V * d},
  };
  int64_t matmul_active = 0;
  for (const auto& comp : c.components) {
    c.params_total += comp.total;
    c.params_active += comp.active;
    if (comp.name != "embedding" && comp.name != "norms") matmul_active += comp.active;
  }
  if (m.tie_embeddings) matmul_active += V * d;  // the tied head is still a matmul
  c.flops_per_token = 6.0 * matmul_active + 6.0 * L * d * m.seq_len;
  return c;
}

std::vector<std::string> parameter_table(const ModelCount& count) {
  std::vector<std::string> lines;
  auto row = [&](const std::string& name, const std::string& total, const std::string& active) {
    char line[96];
    std::snprintf(line, sizeof line, "%-16s%16s%16s", name.c_str(), total.c_str(), active.c_str());
    lines.push_back(line);
  };
  row("component", "total", "active");
  for (const auto& c : count.components)
    if (c.total > 0) row(c.name, fmt_count(c.total), fmt_count(c.active));
  row("all", fmt_count(count.params_total), fmt_count(count.params_active));
  return lines;
}

}  // namespace dsmoe
