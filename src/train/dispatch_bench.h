// The dispatcher's all-to-all measured against a bare alltoallv of the same bytes, in the
// same run (the harness `dsmoe bench` reports; bandwidths as nccl-tests define them).
#pragma once
#include "train/engine.h"

namespace dsmoe {

struct AllToAllFigures {
  int ranks = 1;               // expert-parallel group size
  double bytes_per_rank = 0;   // sent by one rank per dispatch + combine (mean over ranks)
  double dispatcher_s = 0;     // dispatch + combine through the dispatcher (max over ranks)
  double dispatch_s = 0;       // dispatch alone (the exchange the MoE layer overlaps)
  double bare_s = 0;           // the same two exchanges as bare alltoallv calls
  // algBw = bytes / time; busBw = algBw * (n - 1) / n for all-to-all.
  double alg_bw(double s) const { return s > 0 ? bytes_per_rank / s : 0; }
  double bus_bw(double s) const { return alg_bw(s) * (ranks - 1) / ranks; }
};

// Replays the last routing of the first MoE layer `iters` times (after a trained step).
AllToAllFigures bench_all_to_all(Engine& engine, int iters);

struct OverlapFigures {
  double with_s = 0, without_s = 0;  // mean step time with the MoE layers' overlap on and off
};
// `steps` steps of each, alternating, so that drift over the run falls on both alike.
OverlapFigures bench_overlap(Engine& engine, int64_t steps);

}  // namespace dsmoe
