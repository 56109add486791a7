// The simulated machine and the rates the step-time model uses (docs/simulation.md).
#pragma once
#include <string>

namespace dsmoe::sim {

struct Cluster {
  int gpus = 1;
  int gpus_per_node = 8;
  double intra_bw = 370e9;   // bytes/s one GPU sends (and receives) inside its node (NVLink)
  double inter_bw = 50e9;    // bytes/s one GPU sends (and receives) to other nodes (its NIC)
  double latency = 20e-6;    // seconds per exchange (all-to-all or allreduce) on top of the bytes
  int node_of(int rank) const { return rank / gpus_per_node; }
};

struct Rates {
  double compute = 0.4 * 989e12;   // achieved FLOP/s of one rank (default: 40 % of an H100's bf16 peak)
  std::string compute_from = "assumed 40% of 989 TFLOP/s";
  double dispatch_efficiency = 1;  // dispatcher bandwidth / bare all-to-all bandwidth (measured by bench)
  bool overlap = true;             // forward dispatch overlapped with shared + own-token experts (CUDA engine)
  bool node_dedup = false;         // a hierarchical dispatcher (once per node over the network); traffic.h
  std::string backend = "cuda";    // whose allocations the memory model counts (attention buffers differ)
};

// Throws naming the option when a value is impossible.
void check_cluster(const Cluster& c);

}  // namespace dsmoe::sim
