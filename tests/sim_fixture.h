// The tiny model of the simulator's tests: small enough to count every byte and FLOP by hand.
#pragma once
#include "config/config.h"

namespace dsmoe::sim {

inline Config tiny_sim_config() {
  Config c;
  c.model.vocab_size = 16;
  c.model.d_model = 8;
  c.model.n_heads = 2;
  c.model.n_layers = 2;
  c.model.seq_len = 4;
  c.model.first_dense_layers = 1;
  c.model.dense_hidden = 12;
  c.moe.n_routed = 4;
  c.moe.n_shared = 1;
  c.moe.top_k = 2;
  c.moe.expert_hidden = 6;
  c.train.batch_size = 2;
  return c;
}

}  // namespace dsmoe::sim
