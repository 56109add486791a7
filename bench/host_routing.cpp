// The MoE layer's host work on one rank: the router (scores, top-k, statistics), its backward
// and the dispatcher's plan, for one layer of a given shape (default: gpu_small's, 16,384 tokens,
// 63 experts, top-7). GPU runs do this work on the host with several expert-parallel ranks or
// with capacity dropping; on one GPU without dropping, routing and the plan run on the device.
//   cmake --build build --target bench_host_routing
//   OMP_NUM_THREADS=1 ./build/bench_host_routing [TOKENS EXPERTS TOP_K ITERS] [--glibc-default]
// --glibc-default leaves glibc's handling of freed memory as it is (what keep_freed_host_memory,
// which dsmoe's main calls, changes), for the comparison.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/cpu_backend.h"
#include "comm/comm.h"
#include "moe/dispatcher.h"
#include "moe/router_math.h"
#include "util/host_memory.h"
#include "util/rng.h"
#include "util/timer.h"

using namespace dsmoe;

int main(int argc, char** argv) {
  std::vector<int> v = {16384, 63, 7, 10};
  bool glibc_default = false;
  for (int i = 1, n = 0; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--glibc-default")) glibc_default = true;
    else if (n < 4) v[n++] = std::atoi(argv[i]);
  }
  if (!glibc_default) keep_freed_host_memory();
  const int T = v[0], N = v[1], K = v[2], iters = v[3], d = 1024;
  RouterSpec spec;
  spec.n_experts = N;
  spec.top_k = K;
  spec.expert_alpha = 0.001;
  spec.seq_len = T;
  RouteContext ctx;
  ctx.tokens_global = T;
  ctx.training = true;
  auto comm = make_single_comm();
  auto be = make_cpu_backend<float>();
  Dispatcher<float> disp(*be, *comm, ExpertPlacement{N, 1, 0}, d);
  Rng rng(1);
  std::vector<float> logits((size_t)T * N), bias(N, 0.f), dgate((size_t)T * K, 0.01f);
  for (float& x : logits) x = static_cast<float>(rng.normal());
  double t_route = 0, t_back = 0, t_plan = 0;
  for (int i = -2; i < iters; ++i) {  // two untimed warm-up iterations
    const double t0 = now_seconds();
    Routing<float> r = route(spec, ctx, logits, {}, bias, *comm);
    const double t1 = now_seconds();
    std::vector<float> dl = route_backward<float>(spec, r, dgate, 1.0, nullptr);
    const double t2 = now_seconds();
    disp.plan(r.sel, r.kept, T, K);
    const double t3 = now_seconds();
    if (i >= 0) t_route += t1 - t0, t_back += t2 - t1, t_plan += t3 - t2;
  }
  std::printf("%d tokens, %d experts, top-%d, %d threads%s: route %.2f ms, route backward %.2f ms, plan %.2f ms\n", T,
              N, K, omp_get_max_threads(), glibc_default ? ", glibc's default for freed memory" : "",
              1e3 * t_route / iters, 1e3 * t_back / iters, 1e3 * t_plan / iters);
}
