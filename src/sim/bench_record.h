// What `dsmoe bench --json FILE` writes and `dsmoe simulate --compute-rate FILE` reads: one flat
// JSON object of the measured rates of a run (docs/simulation.md "Calibration").
#pragma once
#include <map>
#include <string>

namespace dsmoe::sim {

struct BenchRecord {
  std::string name, backend, device;
  int world_size = 1, ep_size = 1, threads = 1;
  double steps = 0, warmup = 0, tokens_per_step = 0, tokens_per_s = 0, ms_per_step = 0;
  double ms_compute = 0, ms_route = 0, ms_dispatch = 0, ms_combine = 0, ms_allreduce = 0;
  double flops_per_token = 0, achieved_flops = 0;
  // FLOPs of one rank's share of a step / its compute time: the whole step on one rank, the
  // step less dispatch, combine and allreduce on several (compute_rate).
  double compute_flops_per_rank = 0;
  // peak_mem_bytes: the backend's allocations after the timed steps, before the all-to-all replay
  // allocates its own buffers (what a training run needs).
  double peak_mem_bytes = 0, max_rss_bytes = 0, bytes_sent_per_step = 0;
  double a2a_bytes_per_rank = 0, a2a_dispatcher_ms = 0, a2a_bare_ms = 0;
  double a2a_dispatcher_bw = 0, a2a_bare_bw = 0;  // algBw, bytes/s
  double ms_per_step_without_overlap = 0;
};

// The compute rate a record gives (see compute_flops_per_rank).
double compute_rate(const BenchRecord& r);

// Fills the derived fields (compute rate, bandwidths) and writes the file; throws naming it.
void write_bench_record(const std::string& path, BenchRecord rec);
// Throws naming the file and the key that is missing or malformed.
BenchRecord read_bench_record(const std::string& path);

// The flat JSON object's keys and values (strings unquoted); throws naming `source`.
std::map<std::string, std::string> parse_flat_json(const std::string& text, const std::string& source);

}  // namespace dsmoe::sim
