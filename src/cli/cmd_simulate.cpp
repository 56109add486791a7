#include <yaml-cpp/yaml.h>

#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "config/config.h"
#include "sim/report.h"
#include "sim/scenario.h"
#include "sim/simulate.h"
#include "util/check.h"

namespace dsmoe {
namespace {

bool is_simulation_file(const std::string& path) {
  try {
    const YAML::Node root = YAML::LoadFile(path);
    return root.IsMap() && root["simulate"];
  } catch (const YAML::Exception&) {
    return false;
  }
}

Config sim_config(const std::string& path, const std::vector<std::string>& overrides, int gpus) {
  Config cfg = load_config(path, overrides);
  DSMOE_CHECK(cfg.model.vocab_size > 0, path, ": model.vocab_size is 0 (taken from the data when training); "
              "the simulator needs it: --set model.vocab_size=V");
  DSMOE_CHECK(cfg.n_moe_layers() > 0, path, ": the model has no MoE layer (model.first_dense_layers = n_layers)");
  validate_config(cfg, gpus);  // names the key: batch not divisible by the ranks, experts by the EP size, ...
  return cfg;
}

sim::SimResult run_one(const Config& cfg, const sim::Cluster& cluster, const sim::Rates& rates, const std::string& routing) {
  const sim::RoutingProfile profile = sim::load_routing(routing, cfg.n_moe_layers(), cfg.moe.n_routed);
  return sim::simulate(cfg, cluster, rates, profile);
}

int run_scenario(const std::string& path, const Args& args) {
  const sim::Scenario s = sim::load_scenario(path);
  double measured_bw = 0;
  const std::string rate_spec = args.has("compute-rate") ? args.get("compute-rate") : s.compute_rate;
  const sim::Rates rates = sim::rates_from(rate_spec, args.get_double("rate-scale", s.rate_scale), &measured_bw);
  const std::string out = args.get("out", s.out);
  std::vector<std::pair<std::string, sim::SimResult>> results;
  std::printf("%s: %s, %zu cluster(s) x %zu routing source(s) x %zu variant(s)\n", s.name.c_str(), s.config.c_str(),
              s.clusters.size(), s.routing.size(), s.variants.size());
  for (const auto& sc : s.clusters) {
    sim::Cluster cluster = sc.cluster;
    if (!sc.intra_given && measured_bw > 0) cluster.intra_bw = measured_bw;
    std::printf("\n%d GPUs, %d per node, intra %.3g B/s, inter %.3g B/s:\n%s\n", cluster.gpus, cluster.gpus_per_node,
                cluster.intra_bw, cluster.inter_bw, sim::table_header().c_str());
    for (const auto& v : s.variants)
      for (const auto& r : s.routing) {
        std::vector<std::string> set = s.set;
        for (const auto* extra : {&sc.set, &r.set, &v.set}) set.insert(set.end(), extra->begin(), extra->end());
        const Config cfg = sim_config(s.config, set, cluster.gpus);
        sim::Rates vr = rates;
        vr.node_dedup = v.node_dedup;
        const sim::SimResult res = run_one(cfg, cluster, vr, r.source);
        const std::string label = v.name + "/" + r.name;
        std::printf("%s\n", sim::table_row(label, res).c_str());
        results.emplace_back("g" + std::to_string(cluster.gpus) + "/" + label, res);
      }
  }
  sim::write_results(out, results);
  std::printf("\nwrote %s\n", out.c_str());
  return 0;
}

}  // namespace

namespace {

const char* kUsage =
    "usage: dsmoe simulate CONFIG --gpus G [--gpus-per-node 8] [--intra-bw 370e9] [--inter-bw 50e9]\n"
    "                      [--latency 20e-6] [--routing uniform|zipf:S[:SEED]|RUN/metrics.h5[@all]]\n"
    "                      [--compute-rate FLOPS|BENCH.json] [--rate-scale X] [--overlap on|off]\n"
    "                      [--memory-backend cpu|cuda] [--dispatcher gpu|node] [--out FILE.h5]\n"
    "                      [--gpu-memory BYTES]\n"
    "                      [--set key=value ...]\n"
    "       dsmoe simulate [--sweep] SIMULATION.yaml [--compute-rate ...] [--out FILE.h5]\n"
    "Predicts one training step of CONFIG on G GPUs: compute per rank (FLOPs model and an achieved\n"
    "FLOP/s; `dsmoe bench --json` measures it), the dispatcher's bytes and time per link class,\n"
    "the straggler cost of uneven expert loads, exposed vs overlapped communication, the gradient\n"
    "allreduce and peak memory per rank. A simulation file compares clusters, routing sources and\n"
    "config variants in one table. Bandwidths are bytes/s one GPU sends; see docs/simulation.md.\n"
    "--gpu-memory BYTES (e.g. 80e9) also simulates every memory setting (parallel.shard_optimizer,\n"
    "train.micro_batches) and names the fastest whose peak fits.\n";

int run(const Args& args) {
  const std::string path = args.positional()[0];
  if (args.has("sweep") || is_simulation_file(path)) {
    DSMOE_CHECK(is_simulation_file(path), path, ": --sweep needs a simulation file (top-level 'simulate' key)");
    for (const char* o :
         {"gpus", "gpus-per-node", "intra-bw", "inter-bw", "latency", "routing", "overlap", "dispatcher", "gpu-memory"})
      DSMOE_CHECK(!args.has(o), "--", o, " does not apply to a simulation file (set it in ", path, ")");
    return run_scenario(path, args);
  }
  DSMOE_CHECK(args.has("gpus"), "--gpus is required (the number of GPUs to simulate)");
  sim::Cluster cluster;
  cluster.gpus = static_cast<int>(args.get_int("gpus", 1));
  cluster.gpus_per_node = static_cast<int>(args.get_int("gpus-per-node", 8));
  cluster.intra_bw = args.get_double("intra-bw", cluster.intra_bw);
  cluster.inter_bw = args.get_double("inter-bw", cluster.inter_bw);
  cluster.latency = args.get_double("latency", cluster.latency);
  sim::check_cluster(cluster);
  double measured_bw = 0;
  sim::Rates rates = sim::rates_from(args.get("compute-rate"), args.get_double("rate-scale", 1.0), &measured_bw);
  if (!args.has("intra-bw") && measured_bw > 0) cluster.intra_bw = measured_bw;
  if (args.has("overlap")) {
    const std::string o = args.get("overlap");
    DSMOE_CHECK(o == "on" || o == "off", "--overlap: expected on or off, got '", o, "'");
    rates.overlap = o == "on";
  }
  const std::string dispatcher = args.get("dispatcher", "gpu");
  DSMOE_CHECK(dispatcher == "gpu" || dispatcher == "node", "--dispatcher: expected gpu (dsmoe's) or node, got '",
              dispatcher, "'");
  rates.node_dedup = dispatcher == "node";
  const Config cfg = sim_config(path, args.overrides(), cluster.gpus);
  if (args.has("memory-backend")) rates.backend = args.get("memory-backend");
  else if (args.get("compute-rate").empty() || rates.compute_from == "given") rates.backend = cfg.backend == "cpu" ? "cpu" : "cuda";
  DSMOE_CHECK(rates.backend == "cpu" || rates.backend == "cuda", "--memory-backend: expected cpu or cuda, got '",
              rates.backend, "'");
  const std::string routing = args.get("routing", "uniform");
  const sim::SimResult r = run_one(cfg, cluster, rates, routing);
  for (const std::string& line : sim::report_lines(r)) std::printf("%s\n", line.c_str());
  if (args.has("gpu-memory")) {
    const double gpu_memory = args.get_double("gpu-memory", 0);
    const sim::RoutingProfile profile = sim::load_routing(routing, cfg.n_moe_layers(), cfg.moe.n_routed);
    for (const std::string& line :
         sim::memory_fit_lines(sim::memory_settings(cfg, cluster, rates, profile, gpu_memory), gpu_memory))
      std::printf("%s\n", line.c_str());
  }
  const std::string out = args.get("out", cfg.out + "/simulate.h5");
  sim::write_results(out, {{"g" + std::to_string(cluster.gpus), r}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace

const Command kSimulateCommand = {"simulate",
                                  "CONFIG --gpus G ...",
                                  "predict step time, traffic and memory at scale",
                                  kUsage,
                                  {"gpus", "gpus-per-node", "intra-bw", "inter-bw", "latency", "routing",
                                   "compute-rate", "rate-scale", "overlap", "memory-backend", "dispatcher", "out",
                                   "gpu-memory"},
                                  {"sweep"},
                                  one_input,
                                  run,
                                  false};

}  // namespace dsmoe
