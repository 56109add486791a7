// The run configuration: every key of docs/config.md with its default.
// Parsing lives in config.cpp, validation in config_checks.cpp, the resolved dump in
// config_dump.cpp; all three walk the one key table of config_keys.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsmoe {

struct ModelConfig {
  int vocab_size = 0;  // 0 = from the data: 256 for text, max token + 1 for a .bin file
  int d_model = 256;
  int n_layers = 4;
  int n_heads = 4;
  int seq_len = 256;
  int first_dense_layers = 1;
  int dense_hidden = 1024;
  double rope_theta = 10000.0;
  double norm_eps = 1.0e-6;
  bool tie_embeddings = false;
  double init_std = 0.02;
};

struct MoeConfig {
  int n_routed = 16;
  int n_shared = 1;
  int top_k = 2;
  int expert_hidden = 256;
  std::string score = "softmax";  // softmax | softmax_topk | sigmoid
  bool norm_topk = false;
  double router_noise = 0.0;
  double capacity_factor = 0.0;   // 0 = dropless
  int route_devices = 0;          // > 0: device-limited routing
  // An extension for benchmarks (dsmoe bench --force-balance): every expert gets the same rows,
  // token t's experts (t K + k) mod N whatever the router says; dsmoe train refuses it.
  bool force_balance = false;
};

struct BalanceConfig {
  double expert_alpha = 0.01;
  double device_alpha = 0.0;
  int device_groups = 0;  // 0 = expert-parallel size
  double seq_alpha = 0.0;
  double comm_alpha = 0.0;
  double bias_rate = 0.0;
};

// train.recompute's settings, from keeping everything to recomputing the most.
inline constexpr const char* kRecomputeSettings[] = {"none", "attention", "moe", "full"};

struct TrainConfig {
  int64_t steps = 1000;
  int batch_size = 32;
  int micro_batches = 1;
  double lr = 1.0e-3;
  double min_lr = 1.0e-4;
  int64_t warmup_steps = 100;
  std::string schedule = "cosine";  // cosine | constant
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1.0e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // 0 = no clipping
  int64_t log_every = 10;
  int64_t eval_every = 100;  // 0 = only at the end
  int eval_batches = 8;
  int64_t checkpoint_every = 0;  // 0 = only at the end
  // An extension (docs/config.md, Extensions): > 0 keeps each checkpoint also as
  // checkpoint-<step>.h5, the newest this many of them. 0 = only checkpoint.h5.
  int keep_checkpoints = 0;
  // An extension: "attention" keeps one layer's attention activations (qkv, the attention output
  // and its saved statistics) instead of every layer's, and the backward recomputes each layer's
  // from its input; "moe" does the same for the experts' gate and up products (and the shared
  // experts' activation); "full" both. The gradients are the same to the bit. "none" keeps them all.
  std::string recompute = "none";
  bool recomputes_attention() const { return recompute == "attention" || recompute == "full"; }
  bool recomputes_experts() const { return recompute == "moe" || recompute == "full"; }
};

struct DataConfig {
  std::string path = "default";
  double val_fraction = 0.005;
  bool shuffle = true;
};

struct ParallelConfig {
  int expert_parallel = 0;  // 0 = all ranks
  // Gradient all-reduce buckets (MiB), started during the backward; 0: one all-reduce after it
  // (an extension, docs/config.md, Extensions).
  double grad_bucket_mb = 25;
  // Each rank keeps the AdamW moments of its part of the parameters only (ZeRO-1,
  // params/optimizer_shard.h; an extension, docs/config.md, Extensions).
  bool shard_optimizer = false;
};

struct Config {
  std::string name = "quickstart";
  uint64_t seed = 1234;
  std::string backend = "auto";    // auto | cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16
  ModelConfig model;
  MoeConfig moe;
  BalanceConfig balance;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  std::string out = "runs/quickstart";

  std::string source;  // the file it was read from ("<string>" when parsed from text)
  // Where each key was set ("file:line" or "--set key=value"); keys left at their default
  // are absent. Lets validate_config point at the line responsible for an error.
  std::map<std::string, std::string> origin;

  int n_moe_layers() const { return model.n_layers - model.first_dense_layers; }
  bool is_moe_layer(int l) const { return l >= model.first_dense_layers; }
};

// Reads a YAML file, applies `--set key=value` overrides (in order), fills defaults and
// validates (validate_config with world_size 0). Throws dsmoe::Error naming
// "file:line: key: problem".
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from YAML text; `source` names it in errors.
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
// Range and cross-key checks; called again once the data (vocab) or the world (ranks) is
// known. world_size 0 means not known yet: the checks that need it are skipped.
// Throws naming the key and where it was set.
void validate_config(const Config& cfg, int world_size = 1);
// Every key with its resolved value, as YAML text in the order of docs/config.md; parse_config
// of the result gives back an equal Config. The keys dsmoe adds to the config format
// (docs/config.md, Extensions) appear only when not at their default, so a config that uses
// none dumps exactly the format's keys.
std::string to_yaml(const Config& cfg);

// Equal values for every key (source and origin are not compared).
bool operator==(const Config& a, const Config& b);
inline bool operator!=(const Config& a, const Config& b) { return !(a == b); }

}  // namespace dsmoe
