#include "params/optimizer_shard.h"

#include <algorithm>

#include "util/check.h"

namespace dsmoe {
namespace {

// Blocks start on multiples of this many elements (256 bytes) from the range's start, so that
// the optimizer's vectorized loads stay aligned.
constexpr int64_t kAlign = 64;

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

}  // namespace

Blocks split_range(int64_t begin, int64_t end, int parts, int64_t align) {
  DSMOE_CHECK(parts >= 1 && align >= 1 && begin <= end, "split_range: bad arguments");
  const int64_t per = round_up((end - begin + parts - 1) / parts, align);
  Blocks b;
  for (int p = 0; p < parts; ++p) {
    const int64_t lo = std::min(end, begin + p * per), hi = std::min(end, lo + per);
    b.offsets.push_back(lo);
    b.counts.push_back(hi - lo);
  }
  return b;
}

OptimizerShard whole_buffer(int64_t size) {
  OptimizerShard s;
  s.ranges.push_back({0, size, 0});
  s.state_size = size;
  return s;
}

OptimizerShard shard_over_replicas(int64_t experts_begin, int64_t size, int world_rank, int world_size, int replica,
                                   int replicas) {
  OptimizerShard s;
  s.sharded = true;
  s.replicated = split_range(0, experts_begin, world_size, kAlign);
  s.experts = split_range(experts_begin, size, replicas, kAlign);
  const int64_t a = s.replicated.offsets[world_rank], na = s.replicated.counts[world_rank];
  const int64_t b = s.experts.offsets[replica], nb = s.experts.counts[replica];
  if (na > 0) s.ranges.push_back({a, a + na, 0});
  const int64_t b_state = round_up(na, kAlign);
  if (nb > 0) s.ranges.push_back({b, b + nb, b_state});
  s.state_size = nb > 0 ? b_state + nb : na;
  return s;
}

std::vector<float> shard_state(const OptimizerShard& shard, const std::vector<float>& whole) {
  std::vector<float> state(static_cast<size_t>(shard.state_size));
  for (const auto& r : shard.ranges) std::copy(whole.begin() + r.begin, whole.begin() + r.end, state.begin() + r.state);
  return state;
}

void place_shard_state(const OptimizerShard& shard, const std::vector<float>& state, std::vector<float>* whole) {
  for (const auto& r : shard.ranges)
    std::copy(state.begin() + r.state, state.begin() + r.state + (r.end - r.begin), whole->begin() + r.begin);
}

}  // namespace dsmoe
