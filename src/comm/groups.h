// The process groups of a job: the world, expert-parallel groups of E consecutive ranks
// (tokens are exchanged inside one), and data-parallel groups of the R/E ranks that hold the
// same expert shard (their expert gradients are summed).
#pragma once
#include <memory>

#include "comm/comm.h"

namespace dsmoe {

struct ProcessGroups {
  // expert_parallel = 0 means all ranks. Throws if it does not divide the world size.
  ProcessGroups(Comm& world, int expert_parallel);
  Comm& world;
  std::unique_ptr<Comm> ep;  // rank r is in group r / E, at position r % E
  std::unique_ptr<Comm> dp;  // ranks with the same r % E
};

}  // namespace dsmoe
