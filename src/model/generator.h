// Next-token logits for generation (`dsmoe generate`) with a KV cache (docs/model.md,
// Generation). The model sees the window of the context's last seq_len tokens, as a forward of
// that window would. While the context fits in the window, a call runs only the positions not
// cached yet (the prompt at once, then one position per new token: Model::forward_positions).
// Once the context is longer, the window slides with every token, which moves every token to
// another position (another RoPE rotation, so other keys, values and hidden states): each call
// then runs the whole window again from position 0 (a re-prefill), as fast as without a cache.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace dsmoe {

class Generator {
 public:
  explicit Generator(Model<float>& model) : model_(model) {}
  // The logits [V] of the token after `context` (all tokens so far, at least one). The cache
  // serves a call whose window starts with the previous call's: the context grew and still fits.
  std::vector<float> next_logits(const std::vector<int32_t>& context);

 private:
  Model<float>& model_;
  std::vector<int32_t> cached_;  // the tokens at the cached positions
};

}  // namespace dsmoe
