#include "train/grad_buckets.h"

#include <algorithm>
#include <map>

#include "util/check.h"

namespace dsmoe {
namespace {

struct Run {
  int64_t begin, end;
};

// Sorted, with touching or overlapping runs merged (a pair's two tensors overlap: interleaved).
void merge(std::vector<Run>& runs) {
  std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.begin < b.begin; });
  std::vector<Run> out;
  for (const Run& r : runs) {
    if (!out.empty() && r.begin <= out.back().end)
      out.back().end = std::max(out.back().end, r.end);
    else
      out.push_back(r);
  }
  runs = std::move(out);
}

int64_t elements(const std::vector<Run>& runs) {
  int64_t n = 0;
  for (const Run& r : runs) n += r.end - r.begin;
  return n;
}

}  // namespace

std::vector<GradBucket> plan_grad_buckets(const ParamTable& table, const std::vector<std::vector<std::string>>& stages,
                                          int64_t bucket_elems) {
  DSMOE_CHECK(!stages.empty(), "gradient buckets: the backward reports no stages");
  std::map<std::string, int> stage_of;
  for (size_t s = 0; s < stages.size(); ++s)
    for (const std::string& name : stages[s]) {
      table.get(name);  // throws naming an unknown tensor
      DSMOE_CHECK(stage_of.emplace(name, (int)s).second, "gradient buckets: tensor ", name, " is in two stages");
    }
  for (const TensorInfo& t : table.tensors())
    DSMOE_CHECK(stage_of.count(t.name), "gradient buckets: tensor ", t.name,
                " is in no stage of the backward, so its gradient would never be reduced");

  std::vector<GradBucket> out;
  std::vector<Run> pending[2];  // [sharded]
  const int last = static_cast<int>(stages.size()) - 1;
  for (int s = 0; s <= last; ++s) {
    for (const std::string& name : stages[s]) {
      const TensorInfo& t = table.get(name);
      pending[t.expert_sharded].push_back({t.offset, t.end()});
    }
    for (int sharded = 0; sharded < 2; ++sharded) {
      std::vector<Run>& runs = pending[sharded];
      merge(runs);
      const int64_t n = elements(runs);
      if (n == 0 || (s < last && (bucket_elems == 0 || n < bucket_elems))) continue;
      // Highest first: the backward finishes the layers from the last, so that is their order.
      for (auto r = runs.rbegin(); r != runs.rend(); ++r) out.push_back({r->begin, r->end - r->begin, sharded != 0, s});
      runs.clear();
    }
  }
  return out;
}

GradSync::GradSync(std::vector<GradBucket> buckets, float* grads, Comm& world, Comm& replicas)
    : buckets_(std::move(buckets)), grads_(grads), world_(world), replicas_(replicas) {}

void GradSync::start(const GradBucket& b) {
  Comm& c = b.sharded ? replicas_ : world_;
  if (c.size() > 1) c.start_allreduce_sum(grads_ + b.begin, b.size);
}

void GradSync::stage_done(int stage) {
  for (; next_ < buckets_.size() && buckets_[next_].stage <= stage; ++next_) start(buckets_[next_]);
}

void GradSync::finish() {
  for (; next_ < buckets_.size(); ++next_) start(buckets_[next_]);
  world_.wait_allreduces();
  replicas_.wait_allreduces();
  next_ = 0;
}

}  // namespace dsmoe
