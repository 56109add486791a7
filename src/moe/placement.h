// Which rank holds which routed experts: the one function dispatch, checkpoints and metrics
// use. The expert-parallel group of E ranks splits the N experts into E contiguous blocks.
#pragma once

namespace dsmoe {

struct ExpertPlacement {
  int n_experts = 0;
  int ep_size = 1;  // ranks sharing one copy of the experts
  int ep_rank = 0;  // this rank's position in its expert-parallel group
  int per_rank() const { return n_experts / ep_size; }
  int first() const { return ep_rank * per_rank(); }    // first expert held here
  int owner(int expert) const { return expert / per_rank(); }  // ep_rank holding `expert`
};

}  // namespace dsmoe
