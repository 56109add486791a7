// Where the simulator's expert loads come from (docs/simulation.md "Routing sources"):
//   uniform          every expert the same share
//   zipf:S[:SEED]    shares proportional to 1/rank^S, ranks a seeded permutation per layer
//   PATH.h5          a run's metrics.h5: /experts/load [rows, moe_layers, N], mean of the last
//                    half of the rows (PATH.h5@all: of every row), mapped onto the target's
//                    layers and experts
#pragma once
#include <string>
#include <vector>

namespace dsmoe::sim {

struct RoutingProfile {
  std::string source;                    // the spec as given
  std::vector<std::vector<double>> share;  // [moe_layers][N] share of the selections; each sums to 1
  // Recorded sources only: every recorded row's shares, [moe_layers][rows][N] (mapped like
  // `share`). Buffers grow to the busiest step, so the memory model takes the max over these.
  std::vector<std::vector<std::vector<double>>> row_share;
};

// Target shape: `layers` MoE layers of `n_experts` routed experts. Throws naming the spec,
// the file or the dataset.
RoutingProfile load_routing(const std::string& spec, int layers, int n_experts);

// The shares of a recorded run's `src` experts on `n` experts: the source's shares as a step
// function over [0, 1) in expert order, integrated over n equal bins (keeps contiguous groups
// of experts together, so device groups map onto device groups).
std::vector<double> resample_shares(const std::vector<double>& src, int n);

// Recorded load [rows, layers, N] (row-major) -> per-layer loads summed over rows [first_row,
// rows); first_row -1 means the last half.
std::vector<std::vector<double>> mean_shares(const std::vector<double>& load, int rows, int layers, int n,
                                             int first_row = -1);

}  // namespace dsmoe::sim
