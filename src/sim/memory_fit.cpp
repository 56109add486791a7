#include "sim/memory_fit.h"

#include "util/check.h"

namespace dsmoe::sim {

std::string MemorySetting::sets() const {
  return "--set train.recompute=" + recompute + " --set parallel.shard_optimizer=" +
         (shard_optimizer ? "true" : "false") + " --set train.micro_batches=" + std::to_string(micro_batches);
}

std::vector<MemorySetting> memory_settings(const Config& cfg, const Cluster& cluster, const Rates& rates,
                                           const RoutingProfile& routing, double gpu_memory_bytes) {
  DSMOE_CHECK(gpu_memory_bytes > 0, "--gpu-memory must be > 0 bytes, got ", gpu_memory_bytes);
  const int seqs_per_rank = cfg.train.batch_size / cluster.gpus;
  std::vector<MemorySetting> out;
  for (int mb = 1; mb <= seqs_per_rank; ++mb) {
    if (seqs_per_rank % mb) continue;  // every micro-batch gives each rank the same sequences
    for (const char* recompute : kRecomputeSettings) {
      for (const bool shard : {false, true}) {
        Config c = cfg;
        c.train.micro_batches = mb;
        c.train.recompute = recompute;
        c.parallel.shard_optimizer = shard;
        const SimResult r = simulate(c, cluster, rates, routing);
        MemorySetting s;
        s.recompute = recompute;
        s.shard_optimizer = shard;
        s.micro_batches = mb;
        s.peak_bytes = r.memory.total();
        s.step_s = r.step_s();
        s.tokens_per_s = r.tokens_per_s();
        s.fits = s.peak_bytes <= gpu_memory_bytes;
        out.push_back(s);
      }
    }
  }
  return out;
}

const MemorySetting* fastest_fit(const std::vector<MemorySetting>& settings) {
  const MemorySetting* best = nullptr;
  for (const MemorySetting& s : settings)
    if (s.fits && (!best || s.step_s < best->step_s)) best = &s;
  return best;
}

}  // namespace dsmoe::sim
