// The data order (docs/model.md, Data): train/val split, which window each sequence of
// each step reads, and evaluation windows. Pure functions of (config, step), independent of
// the number of ranks.
//
// Sample i = s*B + j (step s, sequence j) starts at, with T = seq_len and N = n_train:
//   shuffle: false  ((s*B + j) * T) mod (N - T - 1)
//   shuffle: true   the windows are the starts k*T for k in [0, W), W = ceil((N - T - 1) / T);
//                   epoch e = i / W visits them in the order perm_e, start = perm_e[i mod W] * T.
//                   perm_e is the Fisher-Yates shuffle of the identity [0, W) drawn from
//                   Rng r(hash_key(seed, 0x5348554646 ("SHUFF"), e)):
//                   for m = W-1 down to 1: swap(perm[m], perm[r.below(m + 1)]).
// Every window lies inside the training split (start + T + 1 <= N).
#pragma once
#include <cstdint>
#include <vector>

namespace dsmoe {

struct Split {
  int64_t n_train = 0;  // tokens [0, n_train) are training data
  int64_t n_val = 0;    // tokens [n_train, n_train + n_val) are validation data
};

// floor(n * val_fraction) validation tokens at the end. Throws if either split is too
// short for one window of seq_len + 1 tokens.
Split split_tokens(int64_t n_tokens, double val_fraction, int seq_len);

class TrainOrder {
 public:
  TrainOrder(int64_t n_train, int seq_len, int batch_size, bool shuffle, uint64_t seed);
  // First token of sequence j (0..B-1) of optimizer step s; the window holds seq_len + 1 tokens.
  // Caches the current epoch's permutation, so one object must not be shared between threads.
  int64_t start(int64_t step, int64_t j) const;

 private:
  int64_t n_train_, seq_len_, batch_size_;
  bool shuffle_;
  uint64_t seed_;
  int64_t n_windows_;  // W: windows of the shuffled order
  mutable int64_t perm_epoch_ = -1;
  mutable std::vector<int64_t> perm_;
};

// Fills inputs[i*T + t] = tokens[starts[i] + t], targets[...] = tokens[starts[i] + t + 1].
void gather_windows(const int32_t* tokens, const std::vector<int64_t>& starts, int seq_len,
                    int32_t* inputs, int32_t* targets);

// Start (absolute token index) of evaluation sequence k: n_train + k * seq_len; throws if
// the window would run past the validation split, naming train.eval_batches.
int64_t eval_start(const Split& split, int seq_len, int64_t k);

// How many evaluation windows the validation split holds (the k for which eval_start succeeds).
int64_t eval_windows(const Split& split, int seq_len);

}  // namespace dsmoe
