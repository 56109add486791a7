// AdamW as torch.optim.AdamW, global gradient-norm clipping as clip_grad_norm_, and the
// warmup + cosine/constant learning-rate schedule (docs/model.md, Optimizer and schedule).
#pragma once
#include <cstdint>

#include "backend/backend.h"
#include "config/config.h"
#include "params/param_table.h"
#include "params/optimizer_shard.h"

namespace dsmoe {

// Learning rate of optimizer step s (0-based).
double learning_rate(const TrainConfig& t, int64_t step);

// clip_grad_norm_'s coefficient: max_norm / (norm + 1e-6) when below 1, else 1 (1 when max_norm = 0).
double clip_coefficient(double grad_norm, double max_norm);

// The moments of the elements `shard` covers (optimizer_shard.h), at the shard's state offsets.
template <typename T>
class AdamW {
 public:
  AdamW(Backend<T>& be, const ParamTable& table, const TrainConfig& t, OptimizerShard shard);
  // One update of the covered elements with this step's lr; step_count is the 1-based step
  // number used for bias correction. grad_scale multiplies the gradients first (clipping).
  void update(T* params, const T* grads, double lr, double grad_scale, int64_t step_count);
  const OptimizerShard& shard() const { return shard_; }
  T* m() { return m_; }
  T* v() { return v_; }

 private:
  Backend<T>& be_;
  const ParamTable& table_;
  TrainConfig cfg_;
  OptimizerShard shard_;
  Buf<T> m_, v_;
};

}  // namespace dsmoe
