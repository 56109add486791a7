// validate_config: each key's range, then the combinations of keys that cannot run.
#include <functional>

#include "config/config.h"
#include "config/config_keys.h"
#include "config/scalar.h"
#include "util/check.h"

namespace dsmoe {
namespace {

// The start of an error about `key`: where its value came from, then the key.
std::string where(const Config& c, const std::string& key) {
  auto it = c.origin.find(key);
  if (it == c.origin.end()) return cat(c.source, c.source.empty() ? "" : ": ", key, " (default)");
  if (it->second.rfind("--set ", 0) == 0) return it->second;  // already names the key
  return cat(it->second, ": ", key);
}

// Ranks sharing one copy of the experts; 0 while the world size is not known.
int expert_parallel_size(const Config& c, int world) {
  return c.parallel.expert_parallel > 0 ? c.parallel.expert_parallel : world;
}

// The device groups D (docs/model.md, Balance losses); 0 while the world size is not known.
int device_groups(const Config& c, int world) {
  return c.balance.device_groups > 0 ? c.balance.device_groups : expert_parallel_size(c, world);
}

// Says where a count came from when it is the world size.
std::string world_note(bool from_world, int world) {
  return from_world ? cat(" (world size ", world, ")") : "";
}

// A combination of keys that cannot run. The keys involved come most responsible first;
// the error names the first of them set by the user, as that is the one to look at.
struct CrossCheck {
  std::vector<const char*> keys;
  std::function<std::string(const Config&, int world)> problem;  // "" when fine
};

const std::vector<CrossCheck>& cross_checks() {
  static const std::vector<CrossCheck> checks = {
      {{"model.first_dense_layers", "model.n_layers"},
       [](const Config& c, int) {
         return c.model.first_dense_layers <= c.model.n_layers
                    ? ""
                    : cat("model.first_dense_layers = ", c.model.first_dense_layers,
                          " exceeds model.n_layers = ", c.model.n_layers);
       }},
      {{"model.n_heads", "model.d_model"},
       [](const Config& c, int) {
         return c.model.d_model % c.model.n_heads == 0
                    ? ""
                    : cat("model.d_model = ", c.model.d_model,
                          " is not divisible by model.n_heads = ", c.model.n_heads);
       }},
      {{"model.n_heads", "model.d_model"},
       [](const Config& c, int) {
         int head_dim = c.model.d_model / c.model.n_heads;
         return head_dim % 2 == 0 ? ""
                                  : cat("head dim model.d_model / model.n_heads = ", head_dim,
                                        " must be even (RoPE rotates halves)");
       }},
      {{"moe.top_k", "moe.n_routed"},
       [](const Config& c, int) {
         return c.moe.top_k <= c.moe.n_routed
                    ? ""
                    : cat("moe.top_k = ", c.moe.top_k, " exceeds moe.n_routed = ", c.moe.n_routed);
       }},
      {{"train.micro_batches", "train.batch_size"},
       [](const Config& c, int) {
         return c.train.batch_size % c.train.micro_batches == 0
                    ? ""
                    : cat("train.batch_size = ", c.train.batch_size,
                          " is not divisible by train.micro_batches = ", c.train.micro_batches);
       }},
      {{"train.batch_size", "train.micro_batches"},
       [](const Config& c, int world) {
         return world <= 1 || c.train.batch_size % (int64_t{c.train.micro_batches} * world) == 0
                    ? ""
                    : cat("train.batch_size = ", c.train.batch_size,
                          " is not divisible by train.micro_batches x world size = ",
                          c.train.micro_batches, " x ", world, " (world size ", world, ")");
       }},
      {{"precision", "backend"},
       [](const Config& c, int) {
         return c.precision == "bf16" && c.backend == "cpu"
                    ? "precision bf16 needs the CUDA backend, but backend is cpu"
                    : "";
       }},
      {{"balance.device_groups", "moe.n_routed"},
       [](const Config& c, int) {
         int d = c.balance.device_groups;
         return d == 0 || c.moe.n_routed % d == 0
                    ? ""
                    : cat("moe.n_routed = ", c.moe.n_routed,
                          " is not divisible by balance.device_groups = ", d);
       }},
      {{"parallel.expert_parallel"},
       [](const Config& c, int world) {
         int ep = c.parallel.expert_parallel;
         return world == 0 || ep == 0 || world % ep == 0
                    ? ""
                    : cat("world size ", world,
                          " is not divisible by parallel.expert_parallel = ", ep);
       }},
      {{"parallel.expert_parallel", "moe.n_routed"},
       [](const Config& c, int world) {
         int ep = expert_parallel_size(c, world);
         return ep == 0 || c.moe.n_routed % ep == 0
                    ? ""
                    : cat("moe.n_routed = ", c.moe.n_routed,
                          " is not divisible by the expert-parallel size ", ep,
                          world_note(c.parallel.expert_parallel == 0, world));
       }},
      {{"moe.route_devices", "balance.device_groups", "parallel.expert_parallel"},
       [](const Config& c, int world) {
         int d = device_groups(c, world);
         if (d == 0 || c.moe.route_devices <= d) return std::string();
         bool from_world = c.balance.device_groups == 0 && c.parallel.expert_parallel == 0;
         return cat("moe.route_devices = ", c.moe.route_devices, " exceeds the ", d,
                    " device groups", world_note(from_world, world));
       }},
      {{"moe.route_devices", "balance.device_groups", "parallel.expert_parallel"},
       [](const Config& c, int world) {  // the chosen groups are a 64-bit mask (routing/route_row.h)
         int d = device_groups(c, world);
         return c.moe.route_devices == 0 || d <= 64
                    ? std::string()
                    : cat("moe.route_devices works over at most 64 device groups, not ", d);
       }},
      {{"moe.route_devices", "moe.top_k", "balance.device_groups", "parallel.expert_parallel"},
       [](const Config& c, int world) {
         int d = device_groups(c, world), m = c.moe.route_devices;
         if (d == 0 || m == 0 || m * (c.moe.n_routed / d) >= c.moe.top_k) return std::string();
         return cat("moe.route_devices = ", m, " device groups reach only ",
                    m * (c.moe.n_routed / d), " experts (", c.moe.n_routed / d,
                    " per group), fewer than moe.top_k = ", c.moe.top_k);
       }},
      {{"train.min_lr", "train.lr"},
       [](const Config& c, int) {
         using config_internal::show_scalar;
         return c.train.min_lr <= c.train.lr ? ""
                                             : cat("train.min_lr = ", show_scalar(c.train.min_lr),
                                                   " exceeds train.lr = ", show_scalar(c.train.lr));
       }},
  };
  return checks;
}

}  // namespace

void validate_config(const Config& cfg, int world_size) {
  DSMOE_ASSERT(world_size >= 0);
  for (const auto& key : config_internal::config_keys()) {
    std::string problem = key.check(cfg);
    DSMOE_CHECK(problem.empty(), where(cfg, key.path), ": ", problem);
  }
  for (const auto& check : cross_checks()) {
    std::string problem = check.problem(cfg, world_size);
    if (problem.empty()) continue;
    const char* named = check.keys.front();
    for (const char* k : check.keys)
      if (cfg.origin.count(k)) {
        named = k;
        break;
      }
    throw Error(cat(where(cfg, named), ": ", problem));
  }
}

}  // namespace dsmoe
