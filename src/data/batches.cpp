#include "data/batches.h"

#include <cmath>
#include <numeric>
#include <utility>

#include "util/check.h"
#include "util/rng.h"

namespace dsmoe {

Split split_tokens(int64_t n_tokens, double val_fraction, int seq_len) {
  DSMOE_CHECK(val_fraction >= 0 && val_fraction < 1, "data.val_fraction must be in [0, 1), got ",
              val_fraction);
  Split s;
  s.n_val = static_cast<int64_t>(std::floor(static_cast<double>(n_tokens) * val_fraction));
  s.n_train = n_tokens - s.n_val;
  // shuffle:false takes starts mod (n_train - T - 1), which needs at least T + 2 tokens.
  DSMOE_CHECK(s.n_train >= seq_len + 2, "data: the training split has ", s.n_train,
              " tokens, fewer than seq_len + 2 = ", seq_len + 2,
              " (lower data.val_fraction or model.seq_len, or use more data)");
  DSMOE_CHECK(s.n_val >= seq_len + 1, "data: the validation split has ", s.n_val,
              " tokens, fewer than seq_len + 1 = ", seq_len + 1,
              " (raise data.val_fraction or lower model.seq_len, or use more data)");
  return s;
}

TrainOrder::TrainOrder(int64_t n_train, int seq_len, int batch_size, bool shuffle, uint64_t seed)
    : n_train_(n_train), seq_len_(seq_len), batch_size_(batch_size), shuffle_(shuffle), seed_(seed) {
  DSMOE_ASSERT(seq_len > 0 && batch_size > 0 && n_train >= seq_len + 2);
  n_windows_ = (n_train_ - seq_len_ - 1 + seq_len_ - 1) / seq_len_;
}

int64_t TrainOrder::start(int64_t step, int64_t j) const {
  DSMOE_ASSERT(step >= 0 && j >= 0 && j < batch_size_);
  const int64_t i = step * batch_size_ + j;
  if (!shuffle_) return (i * seq_len_) % (n_train_ - seq_len_ - 1);

  const int64_t epoch = i / n_windows_;
  if (epoch != perm_epoch_) {
    perm_.resize(n_windows_);
    std::iota(perm_.begin(), perm_.end(), int64_t{0});
    Rng rng(hash_key(seed_, 0x5348554646ull, static_cast<uint64_t>(epoch)));
    for (int64_t m = n_windows_ - 1; m > 0; --m)
      std::swap(perm_[m], perm_[rng.below(static_cast<uint64_t>(m + 1))]);
    perm_epoch_ = epoch;
  }
  return perm_[i % n_windows_] * seq_len_;
}

void gather_windows(const int32_t* tokens, const std::vector<int64_t>& starts, int seq_len,
                    int32_t* inputs, int32_t* targets) {
  for (size_t i = 0; i < starts.size(); ++i) {
    const int32_t* w = tokens + starts[i];
    int32_t* in = inputs + i * seq_len;
    int32_t* tg = targets + i * seq_len;
    for (int t = 0; t < seq_len; ++t) {
      in[t] = w[t];
      tg[t] = w[t + 1];
    }
  }
}

int64_t eval_start(const Split& split, int seq_len, int64_t k) {
  const int64_t start = split.n_train + k * seq_len;
  const int64_t end = split.n_train + split.n_val;
  DSMOE_CHECK(k >= 0 && start + seq_len + 1 <= end, "data: evaluation sequence ", k, " needs tokens [",
              start, ", ", start + seq_len + 1, ") but the validation split is [", split.n_train, ", ", end,
              "); lower train.eval_batches or raise data.val_fraction");
  return start;
}

int64_t eval_windows(const Split& split, int seq_len) {
  return split.n_val < seq_len + 1 ? 0 : (split.n_val - 1) / seq_len;
}

}  // namespace dsmoe
