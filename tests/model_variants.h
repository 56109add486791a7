// The tiny model of the model tests and its variants: every routing kind, capacity, router noise,
// the balance terms, a tied head without shared experts, no MoE layer. Each variant is a named
// edit of tiny_config(), for value-parameterized tests.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.h"

namespace dsmoe::test {

inline Config tiny_config() {
  Config c;
  c.model.vocab_size = 13;
  c.model.d_model = 8;
  c.model.n_heads = 2;
  c.model.n_layers = 3;
  c.model.seq_len = 6;
  c.model.first_dense_layers = 1;
  c.model.dense_hidden = 12;
  c.model.init_std = 0.3;  // large enough that routing scores are far from uniform
  c.moe.n_routed = 6;
  c.moe.n_shared = 1;
  c.moe.top_k = 2;
  c.moe.expert_hidden = 4;
  c.balance.expert_alpha = 0.1;
  return c;
}

struct Case {
  const char* name;
  std::function<void(Config&)> edit;
};

inline void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

inline std::vector<Case> model_variants() {
  return {
      Case{"softmax", [](Config&) {}},
      Case{"softmax_norm_topk", [](Config& c) { c.moe.norm_topk = true; }},
      Case{"softmax_topk", [](Config& c) { c.moe.score = "softmax_topk"; }},
      Case{"sigmoid", [](Config& c) { c.moe.score = "sigmoid"; }},
      Case{"capacity", [](Config& c) { c.moe.capacity_factor = 0.6; }},
      Case{"router_noise", [](Config& c) { c.moe.router_noise = 0.5; }},
      Case{"device_seq_comm_losses",
           [](Config& c) {
             c.balance.device_groups = 3;
             c.balance.device_alpha = 0.2;
             c.balance.seq_alpha = 0.3;
             c.balance.comm_alpha = 0.15;
             c.moe.route_devices = 2;
           }},
      Case{"tied_no_shared_bias",
           [](Config& c) {
             c.model.tie_embeddings = true;
             c.moe.n_shared = 0;
             c.balance.bias_rate = 0.01;
           }},
      Case{"all_dense", [](Config& c) { c.model.first_dense_layers = 3; }},
  };
}

inline std::string variant_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

}  // namespace dsmoe::test
