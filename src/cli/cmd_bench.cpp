#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/flops.h"
#include "sim/bench_record.h"
#include "train/dispatch_bench.h"
#include "train/engine.h"
#include "util/check.h"
#include "util/host_info.h"
#include "util/log.h"

namespace dsmoe {
namespace {

const char* kUsage =
    "usage: dsmoe bench CONFIG [--steps 5] [--warmup 1] [--json FILE] [--profile] [--force-balance]\n"
    "                   [--set key=value ...]\n"
    "Trains WARMUP + STEPS optimizer steps of CONFIG without writing anything and reports\n"
    "throughput; the last line is one JSON object. --json FILE also writes the measured rates\n"
    "for `dsmoe simulate --compute-rate FILE` (docs/simulation.md). --profile (CUDA) prints, at\n"
    "exit, the GPU and host time per backend op over the steps after the warm-up, and the GPU's\n"
    "idle time before each op (docs/cuda.md). --force-balance (moe.force_balance) gives every\n"
    "expert the same rows whatever the router says, as the forced-balance figures other\n"
    "frameworks publish; compare it with the same config's learned routing.\n";

// The balance of the timed steps' routing, per MoE layer and step: MaxVio as metrics.h5 records
// it, and the routed experts given no rows. A model early in training routes unevenly; the
// figures say which routing the tokens/s is for.
struct LoadBalance {
  double violation = 0, empty = 0;
  int64_t layers = 0;  // layer-steps counted
  void add(const StepStats& s, int n_routed) {
    for (double v : layer_max_violations(s, n_routed)) violation += v;
    empty += static_cast<double>(std::count(s.load.begin(), s.load.end(), 0.0));
    layers += static_cast<int64_t>(s.load.size()) / n_routed;
  }
  double max_violation() const { return layers ? violation / layers : 0; }
  double empty_experts() const { return layers ? empty / layers : 0; }
};

int run(const Args& args) {
  const int64_t steps = args.get_int("steps", 5), warmup = args.get_int("warmup", 1);
  DSMOE_CHECK(steps > 0 && warmup >= 0, "--steps must be positive and --warmup non-negative");
  Config cfg = load_config(args.positional()[0], args.overrides());
  if (args.has("force-balance")) cfg.moe.force_balance = true;
  DSMOE_CHECK(!cfg.moe.force_balance || cfg.n_moe_layers() > 0, args.positional()[0],
              ": --force-balance: the model has no MoE layer to balance");
  cfg.train.steps = std::max(cfg.train.steps, steps + warmup);
  auto comm = make_world_comm();
  Engine engine(cfg, *comm);
  for (const std::string& line : thread_notes(engine.threads())) log_info(line);
  const ModelCount counts = count_model(engine.config());
  const bool profile = args.has("profile");
  DSMOE_CHECK(!profile || engine.backend().start_profile(), "--profile: the ", engine.backend().name(),
              " backend keeps no op profile (a GPU run does)");
  for (int64_t i = 0; i < warmup; ++i) engine.train_step();
  if (profile) engine.backend().start_profile();  // over: the steps after the warm-up
  StepStats sum;
  LoadBalance balance;
  for (int64_t i = 0; i < steps; ++i) {
    StepStats s = engine.train_step();
    balance.add(s, engine.config().moe.n_routed);
    sum.t_step += s.t_step;
    sum.t_compute += s.t_compute;
    sum.t_dispatch += s.t_dispatch;
    sum.t_combine += s.t_combine;
    sum.t_allreduce += s.t_allreduce;
    sum.t_route += s.t_route;
    sum.bytes_sent += s.bytes_sent;
    char line[96];
    std::snprintf(line, sizeof line, "step %ld: %.1f ms, loss %.4f", (long)(warmup + i + 1), 1e3 * s.t_step, s.loss);
    log_info(line);
  }
  const double ms = 1e3 * sum.t_step / steps;
  const double tok_s = engine.tokens_per_step() / (ms / 1e3);
  const double flops = tok_s * counts.flops_per_token;
  const size_t peak_training = engine.backend().peak_bytes();  // before the replay's buffers
  const AllToAllFigures a2a = bench_all_to_all(engine, 50);
  // The same steps with the exchange not overlapped: what the overlap hides, side by side (MPI's
  // exchange on the CPU completes before compute goes on, so there is nothing to hide).
  const bool overlapped = a2a.ranks > 1 && engine.backend().name() == "cuda";
  const OverlapFigures ov = overlapped ? bench_overlap(engine, steps) : OverlapFigures{};
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  if (comm->rank() != 0) return 0;
  // MFU as llm.c reports it: against the GPUs' dense bf16 peak (H100 and H200: 989 TFLOP/s each).
  const double mfu = engine.backend().name() == "cuda" ? flops / (989e12 * comm->size()) : 0.0;
  std::printf("%s%s: %.0f tokens/s, %.1f ms/step, %.1f GFLOP/s achieved", cfg.name.c_str(),
              cfg.moe.force_balance ? " (routing forced to balance)" : "", tok_s, ms, flops / 1e9);
  if (mfu > 0) std::printf(", MFU %.1f%%", 100 * mfu);
  std::printf("\n");
  std::printf(
      "time split per step: compute %.1f ms (of which the routers' host work %.1f ms), dispatch %.1f ms, "
      "combine %.1f ms, allreduce %.1f ms\n",
      1e3 * sum.t_compute / steps, 1e3 * sum.t_route / steps, 1e3 * sum.t_dispatch / steps,
      1e3 * sum.t_combine / steps, 1e3 * sum.t_allreduce / steps);
  if (balance.layers > 0)
    std::printf(
        "expert load over the timed steps, mean over MoE layers and steps: MaxVio %.3f, %.1f of %d routed experts "
        "without rows (%s)\n",
        balance.max_violation(), balance.empty_experts(), cfg.moe.n_routed,
        cfg.moe.force_balance ? "forced" : "learned routing of the first steps from a random initialization");
  if (a2a.ranks > 1)
    std::printf(
        "all-to-all (%d ranks, %.0f KiB per rank per dispatch+combine): dispatcher %.3f ms, algBw %.2f GB/s, "
        "busBw %.2f GB/s; bare alltoallv %.3f ms, algBw %.2f GB/s, busBw %.2f GB/s; overhead %.1f%%\n",
        a2a.ranks, a2a.bytes_per_rank / 1024, 1e3 * a2a.dispatcher_s, a2a.alg_bw(a2a.dispatcher_s) / 1e9,
        a2a.bus_bw(a2a.dispatcher_s) / 1e9, 1e3 * a2a.bare_s, a2a.alg_bw(a2a.bare_s) / 1e9,
        a2a.bus_bw(a2a.bare_s) / 1e9, 100 * (a2a.dispatcher_s / a2a.bare_s - 1));
  if (overlapped) {
    const double exchanges_ms = 1e3 * a2a.dispatch_s * static_cast<double>(engine.model().moe_layers().size());
    std::printf(
        "overlap (steps alternating): %.1f ms/step with, %.1f ms/step without: %.1f ms hidden of about %.1f ms "
        "of forward dispatch exchanges\n",
        1e3 * ov.with_s, 1e3 * ov.without_s, 1e3 * (ov.without_s - ov.with_s), exchanges_ms);
  }
  std::printf(
      "{\"name\": \"%s\", \"tokens_per_s\": %.1f, \"ms_per_step\": %.3f, \"flops_per_token\": %.6g, "
      "\"achieved_flops\": %.6g, \"mfu\": %.4f, \"params_total\": %ld, \"params_active\": %ld, \"peak_mem_bytes\": %zu, "
      "\"max_rss_bytes\": %ld, \"backend\": \"%s\", \"world_size\": %d, \"steps\": %ld, \"warmup\": %ld, "
      "\"ms_compute\": %.3f, \"ms_dispatch\": %.3f, \"ms_combine\": %.3f, \"ms_allreduce\": %.3f, "
      "\"bytes_sent_per_step\": %.0f, \"a2a_bytes_per_rank\": %.0f, \"a2a_dispatcher_ms\": %.4f, "
      "\"a2a_bare_ms\": %.4f, \"ms_per_step_without_overlap\": %.3f, \"force_balance\": %s, "
      "\"max_violation\": %.6g, \"experts_without_rows\": %.6g}\n",
      cfg.name.c_str(), tok_s, ms, counts.flops_per_token, flops, mfu, (long)counts.params_total,
      (long)counts.params_active, engine.backend().peak_bytes(), (long)ru.ru_maxrss * 1024,
      engine.backend().name().c_str(), comm->size(), (long)steps, (long)warmup, 1e3 * sum.t_compute / steps,
      1e3 * sum.t_dispatch / steps, 1e3 * sum.t_combine / steps, 1e3 * sum.t_allreduce / steps,
      sum.bytes_sent / steps, a2a.bytes_per_rank,
      1e3 * a2a.dispatcher_s, 1e3 * a2a.bare_s, 1e3 * ov.without_s, cfg.moe.force_balance ? "true" : "false",
      balance.max_violation(), balance.empty_experts());
  if (args.has("json")) {
    const double per = 1e3 / steps;
    sim::write_bench_record(args.get("json"), {cfg.name, engine.backend().name(), device_description(engine.backend().name()),
        comm->size(), engine.groups().ep->size(), omp_get_max_threads(), (double)steps, (double)warmup,
        (double)engine.tokens_per_step(), tok_s, ms, per * sum.t_compute, per * sum.t_route, per * sum.t_dispatch,
        per * sum.t_combine, per * sum.t_allreduce, counts.flops_per_token, flops, 0, (double)peak_training,
        (double)ru.ru_maxrss * 1024, sum.bytes_sent / steps, a2a.bytes_per_rank, 1e3 * a2a.dispatcher_s, 1e3 * a2a.bare_s,
        0, 0, 1e3 * ov.without_s});
  }
  return 0;
}

}  // namespace

const Command kBenchCommand = {"bench",
                               "CONFIG [--steps N --warmup W]",
                               "measure training throughput",
                               kUsage,
                               {"steps", "warmup", "json"},
                               {"profile", "force-balance"},
                               one_input,
                               run,
                               false};

}  // namespace dsmoe
