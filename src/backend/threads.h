// Host threads per rank that fit the node: a rank runs as many OpenMP threads as the cores it may
// use (its affinity mask) divided by the ranks of its node whose masks share a core with its own,
// so that ranks x threads never exceed the cores they cover (BLAS shares OpenMP's threads:
// backend/blas_select.h). OMP_NUM_THREADS, where set, wins.
#pragma once
#include <string>
#include <vector>

#include "comm/comm.h"

namespace dsmoe {

using CoreSet = std::vector<int>;  // core ids, ascending

// The cores this process may run on (sched_getaffinity).
CoreSet affinity_cores();
// "0-3,8,10-11".
std::string cores_text(const CoreSet& cores);

// The rule: |mine| / (ranks of `node` whose cores meet mine, this one included), at least 1.
int threads_for(const CoreSet& mine, const std::vector<CoreSet>& node);

struct ThreadPlan {
  int threads = 1;         // this rank's OpenMP threads
  bool user_set = false;   // OMP_NUM_THREADS decided instead
  int node_ranks = 1;      // ranks on this node
  CoreSet node_cores;      // the cores the node's ranks may use, together
  int node_threads = 1;    // threads of all the node's ranks
  bool oversubscribed = false;  // node_threads > the node's cores
  bool any_node_oversubscribed = false;  // over every node of the job (make_backend fills it)
  std::string blas;  // backend/blas_select.h's blas_description() (make_backend fills it)
};

// The start-up lines: this node's ranks x threads and the cores they cover, and a warning where a
// node runs more threads than cores or a rank may use one core of many.
std::vector<std::string> thread_notes(const ThreadPlan& plan);

// Collective over the node's ranks (make_node_comm()): each rank's mask, the rule, the totals.
// Sets OpenMP's thread count unless OMP_NUM_THREADS is set.
ThreadPlan plan_threads(Comm& node);

}  // namespace dsmoe
