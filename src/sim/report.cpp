#include "sim/report.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <filesystem>

#include "io/h5.h"
#include "util/check.h"

namespace dsmoe::sim {
namespace {

std::string line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string line(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

const double kMs = 1e3, kMB = 1.0 / (1 << 20), kGiB = 1.0 / (1 << 30);

}  // namespace

std::vector<std::string> report_lines(const SimResult& r) {
  std::vector<std::string> out;
  const int nodes = (r.gpus + r.gpus_per_node - 1) / r.gpus_per_node;
  out.push_back(line("%s on %d GPUs (%d per node, %d node%s), expert-parallel %d, device groups %d, route_devices %d, "
                     "routing %s", r.config.c_str(), r.gpus, r.gpus_per_node, nodes, nodes > 1 ? "s" : "", r.ep,
                     r.device_groups, r.route_devices, r.routing.c_str()));
  out.push_back(line("rates: compute %.4g FLOP/s per rank (%s); intra %.4g B/s, inter %.4g B/s, latency %.3g s; "
                     "dispatcher %s, efficiency %.3f; overlap %s; memory as the %s backend allocates",
                     r.rates.compute, r.rates.compute_from.c_str(), r.cluster.intra_bw, r.cluster.inter_bw,
                     r.cluster.latency, r.rates.node_dedup ? "node (hierarchical)" : "gpu (dsmoe's)",
                     r.rates.dispatch_efficiency, r.rates.overlap ? "on" : "off", r.rates.backend.c_str()));
  out.push_back(line("step: %.2f ms predicted, %.0f tokens/s (%.0f tokens per rank, %d micro-batch%s)", kMs * r.step_s(),
                     r.tokens_per_s(), r.tokens_per_rank, r.micro_batches, r.micro_batches > 1 ? "es" : ""));
  out.push_back(line("  compute             %10.2f ms  (non-expert %.2f ms + routed experts %.2f ms on the slowest rank "
                     "per layer)", kMs * r.compute_s(), kMs * r.dense_s, kMs * r.experts.max_s));
  out.push_back(line("  straggler cost      %10.2f ms  (routed experts: mean rank %.2f ms, per-layer max %.2f ms; "
                     "%+.1f%% of the step)", kMs * r.experts.cost_s(), kMs * r.experts.mean_s, kMs * r.experts.max_s,
                     100 * r.experts.cost_s() / r.step_s()));
  out.push_back(line("  all-to-all          %10.2f ms  (exposed %.2f ms, overlapped %.2f ms)", kMs * r.comm_total(),
                     kMs * r.exposed_s(), kMs * r.overlapped_s));
  for (int x = 0; x < kExchanges; ++x)
    out.push_back(line("    %-16s  %10.2f ms  %9.2f MiB intra-node + %9.2f MiB inter-node sent per rank",
                       exchange_name(x), kMs * r.comm_s[x], kMB * r.bytes_intra[x], kMB * r.bytes_inter[x]));
  out.push_back(line("  gradient allreduce  %10.2f ms", kMs * r.allreduce_s));
  out.push_back(line("bytes sent per rank per step: %.2f MiB mean, %.2f MiB max", kMB * r.bytes_sent_mean(),
                     kMB * r.bytes_sent_max));
  double worst = 1;
  for (double x : r.layer_imbalance) worst = std::max(worst, x);
  out.push_back(line("expert rows per rank: max/mean %.3f (worst layer), %.3f (step)", worst,
                     r.experts.mean_s > 0 ? r.experts.max_s / r.experts.mean_s : 1.0));
  const MemoryBreakdown& m = r.memory;
  out.push_back(line("peak memory (rank %d, the largest): %.3f GiB = weights %.3f + grads %.3f + AdamW %.3f + "
                     "activations %.3f + scratch %.3f + dispatch buffers %.3f%s", r.memory_rank, kGiB * m.total(),
                     kGiB * m.weights, kGiB * m.grads, kGiB * m.optimizer, kGiB * m.activations, kGiB * m.scratch,
                     kGiB * m.dispatch, m.bf16 > 0 ? line(" + bf16 copies %.3f", kGiB * m.bf16).c_str() : ""));
  if (r.gpus > 1) out.push_back(line("peak memory of rank 0: %.3f GiB", kGiB * r.rank_memory[0]));
  return out;
}

std::string table_header() {
  return line("%-34s %5s %9s %8s %9s %9s %9s %9s %8s %9s", "variant", "gpus", "step_ms", "tok/s/gpu", "compute",
              "straggle", "a2a_exp", "allreduce", "MiB/rank", "mem_GiB");
}

std::string table_row(const std::string& label, const SimResult& r) {
  return line("%-34s %5d %9.1f %8.0f %9.1f %9.1f %9.1f %9.1f %8.1f %9.2f", label.c_str(), r.gpus, kMs * r.step_s(),
              r.tokens_per_s() / r.gpus, kMs * r.compute_s(), kMs * r.experts.cost_s(), kMs * r.exposed_s(),
              kMs * r.allreduce_s, kMB * r.bytes_sent_mean(), kGiB * r.memory.total());
}

void write_results(const std::string& path, const std::vector<std::pair<std::string, SimResult>>& results) {
  h5::silence_errors();
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  h5::Handle f = h5::create_file(path);
  DSMOE_CHECK(f.valid(), path, ": cannot create");
  h5::write_attr(f, "format", "dsmoe-simulate");
  auto scalar = [&](hid_t g, const std::string& name, double v) { h5::write_attr_double(g, name, v); };
  auto vec = [&](hid_t g, const std::string& name, const std::vector<double>& v) {
    h5::Handle d = h5::create_dataset(g, name, H5T_IEEE_F64LE, {static_cast<int64_t>(v.size())});
    if (!v.empty()) h5::write_rows(d, H5T_NATIVE_DOUBLE, 0, {static_cast<int64_t>(v.size())}, v.data());
  };
  for (const auto& [label, r] : results) {
    h5::Handle g = h5::create_group(f, label);
    h5::write_attr(g, "config", r.config);
    h5::write_attr(g, "routing", r.routing);
    h5::write_attr(g, "compute_from", r.rates.compute_from);
    h5::write_attr(g, "memory_backend", r.rates.backend);
    h5::write_attr_int(g, "gpus", r.gpus);
    h5::write_attr_int(g, "gpus_per_node", r.gpus_per_node);
    h5::write_attr_int(g, "expert_parallel", r.ep);
    h5::write_attr_int(g, "device_groups", r.device_groups);
    h5::write_attr_int(g, "route_devices", r.route_devices);
    h5::write_attr_int(g, "micro_batches", r.micro_batches);
    scalar(g, "intra_bw", r.cluster.intra_bw);
    scalar(g, "inter_bw", r.cluster.inter_bw);
    scalar(g, "latency_s", r.cluster.latency);
    scalar(g, "compute_flops_per_rank", r.rates.compute);
    scalar(g, "dispatch_efficiency", r.rates.dispatch_efficiency);
    scalar(g, "overlap", r.rates.overlap ? 1 : 0);
    h5::write_attr(g, "dispatcher", r.rates.node_dedup ? "node" : "gpu");
    scalar(g, "tokens_per_rank", r.tokens_per_rank);
    scalar(g, "flops_per_token", r.flops_per_token);
    scalar(g, "step_s", r.step_s());
    scalar(g, "tokens_per_s", r.tokens_per_s());
    scalar(g, "compute_s", r.compute_s());
    scalar(g, "dense_compute_s", r.dense_s);
    scalar(g, "expert_compute_mean_s", r.experts.mean_s);
    scalar(g, "expert_compute_max_s", r.experts.max_s);
    scalar(g, "straggler_s", r.experts.cost_s());
    scalar(g, "comm_s", r.comm_total());
    scalar(g, "comm_exposed_s", r.exposed_s());
    scalar(g, "comm_overlapped_s", r.overlapped_s);
    scalar(g, "allreduce_s", r.allreduce_s);
    scalar(g, "bytes_sent_mean", r.bytes_sent_mean());
    scalar(g, "bytes_sent_max", r.bytes_sent_max);
    for (int x = 0; x < kExchanges; ++x) {
      const std::string e = std::string("exchange/") + exchange_name(x);
      h5::Handle eg = h5::create_group(g, e);
      scalar(eg, "seconds", r.comm_s[x]);
      scalar(eg, "bytes_intra", r.bytes_intra[x]);
      scalar(eg, "bytes_inter", r.bytes_inter[x]);
    }
    h5::Handle mg = h5::create_group(g, "memory");
    scalar(mg, "rank", r.memory_rank);
    scalar(mg, "total", r.memory.total());
    scalar(mg, "weights", r.memory.weights);
    scalar(mg, "grads", r.memory.grads);
    scalar(mg, "optimizer", r.memory.optimizer);
    scalar(mg, "activations", r.memory.activations);
    scalar(mg, "scratch", r.memory.scratch);
    scalar(mg, "dispatch", r.memory.dispatch);
    scalar(mg, "bf16", r.memory.bf16);
    vec(g, "rank/memory_bytes", r.rank_memory);
    vec(g, "rank/bytes_sent", r.rank_bytes_sent);
    vec(g, "rank/expert_rows", r.rank_expert_rows);
    vec(g, "layer/imbalance", r.layer_imbalance);
    vec(g, "layer/straggler_ratio", r.experts.ratio);
  }
  DSMOE_CHECK(f.close() >= 0, path, ": cannot write");
}

std::vector<std::string> memory_fit_lines(const std::vector<MemorySetting>& settings, double gpu_memory_bytes) {
  constexpr double GiB = 1024.0 * 1024 * 1024;
  std::vector<std::string> out;
  char line[256];
  std::snprintf(line, sizeof line, "memory settings against %.3f GiB per GPU (peak of the largest rank):",
                gpu_memory_bytes / GiB);
  out.push_back(line);
  out.push_back("  recompute  shard_optimizer  micro_batches   peak GiB    step ms   tokens/s  fits");
  const MemorySetting* smallest = nullptr;
  for (const MemorySetting& m : settings) {
    std::snprintf(line, sizeof line, "  %-9s  %-15s  %13d  %9.3f  %9.2f  %9.0f  %s", m.recompute.c_str(),
                  m.shard_optimizer ? "true" : "false",
                  m.micro_batches, m.peak_bytes / GiB, m.step_s * 1e3, m.tokens_per_s, m.fits ? "yes" : "no");
    out.push_back(line);
    if (!smallest || m.peak_bytes < smallest->peak_bytes) smallest = &m;
  }
  if (const MemorySetting* best = fastest_fit(settings)) {
    std::snprintf(line, sizeof line, "fastest that fits: %s (%.3f GiB, %.2f ms per step)", best->sets().c_str(),
                  best->peak_bytes / GiB, best->step_s * 1e3);
  } else if (smallest) {
    std::snprintf(line, sizeof line, "none fits: the smallest peak is %.3f GiB (%s); more GPUs, a smaller batch or "
                  "shorter sequences would take less", smallest->peak_bytes / GiB, smallest->sets().c_str());
  }
  out.push_back(line);
  return out;
}

}  // namespace dsmoe::sim
