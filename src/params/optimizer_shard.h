// Which part of the parameter buffer this rank's AdamW state covers (ZeRO-1, as Megatron's
// distributed optimizer and llm.c's sharded optimizer). Unsharded, every rank keeps both moments
// of every element. Sharded (parallel.shard_optimizer), the tensors every rank holds, [0, experts),
// are cut into one block per rank of the world, and this rank's expert tensors, [experts, size),
// into one block per rank of its replica group (the ranks holding the same experts). A rank keeps
// the moments of its blocks only and updates those parameters; an all-gather then brings every
// rank every block. AdamW works element by element on gradients that the all-reduce made
// identical everywhere, so each element is updated as it is unsharded, to the bit.
#pragma once
#include <cstdint>
#include <vector>

namespace dsmoe {

// One block per rank, in rank order, back to back: rank r's is [offsets[r], offsets[r] + counts[r]).
struct Blocks {
  std::vector<int64_t> counts, offsets;
};

// [begin, end) cut into `parts` blocks of equal length rounded up to a multiple of `align`
// elements, the last one shorter (or empty).
Blocks split_range(int64_t begin, int64_t end, int parts, int64_t align);

struct OptimizerShard {
  // Parameters [begin, end) have their moments at [state, state + end - begin) of the state buffer.
  struct Range {
    int64_t begin = 0, end = 0, state = 0;
  };
  bool sharded = false;
  std::vector<Range> ranges;  // this rank's, in buffer order
  int64_t state_size = 0;     // elements of each moment this rank keeps
  Blocks replicated;          // sharded: every world rank's block of [0, experts)
  Blocks experts;             // sharded: every replica's block of [experts, size)
};

// Every element, one range (no sharding).
OptimizerShard whole_buffer(int64_t size);
// This rank's blocks: `world_rank` of `world_size` over [0, experts_begin), `replica` of `replicas`
// over [experts_begin, size).
OptimizerShard shard_over_replicas(int64_t experts_begin, int64_t size, int world_rank, int world_size, int replica,
                                   int replicas);

// The shard's moments (state_size elements) out of a vector in the buffer's layout, and back into one.
std::vector<float> shard_state(const OptimizerShard& shard, const std::vector<float>& whole);
void place_shard_state(const OptimizerShard& shard, const std::vector<float>& state, std::vector<float>* whole);

}  // namespace dsmoe
