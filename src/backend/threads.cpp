#include "backend/threads.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <thread>

namespace dsmoe {
namespace {

constexpr int kMaxCores = 1024;  // CPU_SETSIZE

bool meet(const CoreSet& a, const CoreSet& b) {
  CoreSet both;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
  return !both.empty();
}

}  // namespace

CoreSet affinity_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  CoreSet cores;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return {0};
  for (int c = 0; c < kMaxCores; ++c)
    if (CPU_ISSET(c, &set)) cores.push_back(c);
  return cores;
}

std::string cores_text(const CoreSet& cores) {
  std::string out;
  for (size_t i = 0; i < cores.size();) {
    size_t j = i;
    while (j + 1 < cores.size() && cores[j + 1] == cores[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(cores[i]) + (j > i ? "-" + std::to_string(cores[j]) : "");
    i = j + 1;
  }
  return out;
}

int threads_for(const CoreSet& mine, const std::vector<CoreSet>& node) {
  const auto sharers = std::count_if(node.begin(), node.end(), [&](const CoreSet& o) { return meet(mine, o); });
  return std::max<int>(1, static_cast<int>(mine.size() / std::max<int64_t>(1, sharers)));
}

ThreadPlan plan_threads(Comm& node) {
  ThreadPlan plan;
  const int R = node.size();
  // Every rank's mask as a row of 0/1 per core, summed over the node: each rank fills its own row.
  std::vector<int64_t> masks(static_cast<size_t>(R) * kMaxCores, 0);
  const CoreSet mine = affinity_cores();
  for (int c : mine) masks[static_cast<size_t>(node.rank()) * kMaxCores + c] = 1;
  node.allreduce_sum(masks.data(), static_cast<int64_t>(masks.size()));
  std::vector<CoreSet> all(R);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < kMaxCores; ++c)
      if (masks[static_cast<size_t>(r) * kMaxCores + c]) all[r].push_back(c);
  plan.node_ranks = R;
  for (const CoreSet& s : all) plan.node_cores.insert(plan.node_cores.end(), s.begin(), s.end());
  std::sort(plan.node_cores.begin(), plan.node_cores.end());
  plan.node_cores.erase(std::unique(plan.node_cores.begin(), plan.node_cores.end()), plan.node_cores.end());

  plan.user_set = std::getenv("OMP_NUM_THREADS") != nullptr;
  plan.threads = plan.user_set ? omp_get_max_threads() : threads_for(mine, all);
  if (!plan.user_set) omp_set_num_threads(plan.threads);
  int64_t total = plan.threads;
  node.allreduce_sum(&total, 1);
  plan.node_threads = static_cast<int>(total);
  plan.oversubscribed = plan.node_threads > static_cast<int>(plan.node_cores.size());
  return plan;
}

std::vector<std::string> thread_notes(const ThreadPlan& t) {
  std::vector<std::string> out = {"host threads: " + std::to_string(t.node_ranks) + " rank(s) x " +
                                  std::to_string(t.threads) + " thread(s) on cores " + cores_text(t.node_cores) +
                                  " of this node" + (t.user_set ? " (OMP_NUM_THREADS)" : "")};
  if (!t.blas.empty()) out.push_back("host BLAS: " + t.blas);
  if (t.any_node_oversubscribed)
    out.push_back("warning: ranks x threads exceed the cores on " + std::string(t.oversubscribed ? "this" : "a") +
                  " node (" + std::to_string(t.node_threads) + " threads on " + std::to_string(t.node_cores.size()) +
                  " cores here): " + (t.threads > 1 ? "set OMP_NUM_THREADS lower" : "run fewer ranks per node"));
  const unsigned all = std::thread::hardware_concurrency();
  if (affinity_cores().size() == 1 && all > static_cast<unsigned>(t.node_ranks))
    out.push_back("this rank may use 1 CPU core of " + std::to_string(all) +
                  ": give it more (mpirun --bind-to none or --map-by slot:PE=N, srun --cpus-per-task=N)");
  return out;
}

}  // namespace dsmoe
