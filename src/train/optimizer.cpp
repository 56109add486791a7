#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace dsmoe {

double learning_rate(const TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  if (t.schedule == "constant") return t.lr;
  double span = static_cast<double>(t.steps - t.warmup_steps);
  double p = span > 0 ? static_cast<double>(step - t.warmup_steps) / span : 1.0;
  p = std::clamp(p, 0.0, 1.0);
  return t.min_lr + (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * p)) / 2.0;
}

double clip_coefficient(double grad_norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (grad_norm + 1e-6));
}

template <typename T>
AdamW<T>::AdamW(Backend<T>& be, const ParamTable& table, const TrainConfig& t, OptimizerShard shard)
    : be_(be),
      table_(table),
      cfg_(t),
      shard_(std::move(shard)),
      m_(be, shard_.state_size),
      v_(be, shard_.state_size) {}

template <typename T>
void AdamW<T>::update(T* params, const T* grads, double lr, double grad_scale, int64_t step_count) {
  // Adjacent tensors with the same weight decay in one call: fewer, longer launches on a GPU. (A
  // pair's two tensors interleave: together they cover their range.)
  const std::vector<TensorInfo>& ts = table_.tensors();
  for (size_t i = 0; i < ts.size();) {
    size_t j = i + 1;
    int64_t end = ts[i].end();
    while (j < ts.size() && ts[j].decay == ts[i].decay && ts[j].offset <= end) end = std::max(end, ts[j++].end());
    for (const OptimizerShard::Range& r : shard_.ranges) {
      const int64_t lo = std::max(ts[i].offset, r.begin), hi = std::min(end, r.end);
      if (lo >= hi) continue;
      const int64_t s = r.state + (lo - r.begin);
      be_.adamw(params + lo, grads + lo, m_.data() + s, v_.data() + s, hi - lo, lr, cfg_.beta1, cfg_.beta2, cfg_.eps,
                ts[i].decay ? cfg_.weight_decay : 0.0, step_count, grad_scale);
    }
    i = j;
  }
}

template class AdamW<float>;
template class AdamW<double>;

}  // namespace dsmoe
