// A simulation file (`dsmoe simulate FILE.yaml`, docs/simulation.md "Simulation files"): one
// config, a list of clusters, a list of routing sources and optionally named variants (config
// overrides); every combination is simulated.
//
//   simulate: NAME
//   config: PATH                   # a run config
//   set: [key=value, ...]          # overrides for every variant (optional)
//   compute_rate: 3.96e14 | FILE   # FLOP/s per rank, or a `dsmoe bench --json` record (optional)
//   rate_scale: 1.0                # multiplies the compute rate (optional)
//   clusters:
//     - {gpus: 64, gpus_per_node: 8, intra_bw: 370e9, inter_bw: 50e9, latency: 20e-6, set: [...]}
//   routing: [uniform, zipf:1.2, runs/x/metrics.h5, {name: LABEL, source: SPEC, set: [...]}]
//   variants: [{name: base}, {name: rd3, set: [moe.route_devices=3], dispatcher: node}]
//   out: PATH.h5
#pragma once
#include <string>
#include <vector>

#include "sim/cluster.h"

namespace dsmoe::sim {

struct ScenarioCluster {
  Cluster cluster;
  bool intra_given = false;
  std::vector<std::string> set;
};
struct ScenarioRouting {
  std::string name, source;
  std::vector<std::string> set;
};
struct ScenarioVariant {
  std::string name;
  std::vector<std::string> set;
  bool node_dedup = false;  // dispatcher: node
};
struct Scenario {
  std::string name, config, out, compute_rate;
  double rate_scale = 1;
  std::vector<std::string> set;
  std::vector<ScenarioCluster> clusters;
  std::vector<ScenarioRouting> routing;
  std::vector<ScenarioVariant> variants;
};

// Paths in the file are relative to the working directory. Throws "file:line: key: problem".
Scenario load_scenario(const std::string& path);

// A short label for a routing spec: uniform, zipf:S, or the run folder of a metrics.h5.
std::string routing_label(const std::string& spec);

// Rates from --compute-rate: a number (FLOP/s per rank) or a bench record; the record also gives
// the dispatcher efficiency, the backend and (cuda) overlap. `measured_bw` receives the record's
// bare all-to-all bandwidth (0 if none).
Rates rates_from(const std::string& spec, double scale, double* measured_bw);

}  // namespace dsmoe::sim
