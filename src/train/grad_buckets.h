// The gradient all-reduce in buckets, overlapped with the backward (as PyTorch DDP and
// Megatron do): the backward reports each stage of tensors whose gradients it has finished
// (Model::backward_stages), and the ranges that became final start their all-reduce at once,
// while the backward goes on with the layers before them.
//
// Non-expert gradients are summed over every rank, the routed experts' over the replicas of
// their shard (the expert-parallel group already brought every token to its expert).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "params/param_table.h"

namespace dsmoe {

struct GradBucket {
  int64_t begin = 0, size = 0;  // elements [begin, begin + size) of the gradient buffer
  bool sharded = false;         // routed experts' (reduced over replicas), else every rank's
  int stage = 0;                // starts once the backward has finished this stage
};

// Buckets of contiguous ranges, in the order they start. Each stage's tensors join the pending
// ranges of their kind (adjacent ranges merge); when those reach `bucket_elems` they start after
// that stage, the rest after the last. bucket_elems 0: everything after the last stage (one range
// of each kind: no overlap). Every tensor must be in exactly one stage: throws naming it otherwise.
std::vector<GradBucket> plan_grad_buckets(const ParamTable& table, const std::vector<std::vector<std::string>>& stages,
                                          int64_t bucket_elems);

// Starts a step's buckets as the stages finish and waits for all of them.
class GradSync {
 public:
  // grads: the gradient buffer the buckets index; world: every rank (non-expert gradients),
  // replicas: the ranks holding the same experts.
  GradSync(std::vector<GradBucket> buckets, float* grads, Comm& world, Comm& replicas);
  const std::vector<GradBucket>& buckets() const { return buckets_; }
  // The backward has finished `stage`: its buckets start (stages arrive in order).
  void stage_done(int stage);
  // Starts whatever has not started (a step that reported no stages: every bucket) and waits for
  // every bucket of the step; then the gradients hold the sums.
  void finish();

 private:
  void start(const GradBucket& b);
  std::vector<GradBucket> buckets_;
  float* grads_;
  Comm &world_, &replicas_;
  size_t next_ = 0;  // the first bucket not yet started this step
};

}  // namespace dsmoe
