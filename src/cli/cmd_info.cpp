#include <cstdio>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/tokens.h"
#include "data/vocab.h"
#include "model/flops.h"
#include "sim/memory.h"

namespace dsmoe {
namespace {

std::string format_mib(double mib) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", mib);
  return buf;
}

const char* kUsage =
    "usage: dsmoe info CONFIG [--set key=value ...]\n"
    "Parameters (total and activated per token) by component, training FLOPs per token and\n"
    "the memory one rank needs at each train.recompute setting (the model of dsmoe simulate).\n"
    "vocab_size 0 is resolved from the data.\n";

// The memory model of `dsmoe simulate` (docs/simulation.md) for one rank at each train.recompute
// setting, on the config's backend (both where it is auto). Sharding the optimizer needs
// replicas: simulate --gpus N --gpu-memory B tables every setting on N ranks.
void print_memory(const Config& cfg) {
  const int seqs = cfg.train.batch_size / cfg.train.micro_batches;
  std::printf("memory of one rank (micro-batch of %d sequences; dsmoe simulate --gpus N --gpu-memory B for N ranks):\n",
              seqs);
  const double MiB = 1048576.0;
  for (const std::string backend : {"cpu", "cuda"}) {
    if (cfg.backend != "auto" && cfg.backend != backend) continue;
    const std::string label = backend == "cuda" ? "cuda " + cfg.precision : backend;
    for (const char* recompute : kRecomputeSettings) {
      Config c = cfg;
      c.train.recompute = recompute;
      const sim::MemoryBreakdown m = sim::rank_memory(c, 1, 0, 1, seqs, backend, {});
      std::string bf16 = m.bf16 > 0 ? " + bf16 copies " + format_mib(m.bf16 / MiB) : "";
      std::printf("  %-10s recompute %-9s %12s MiB = weights %s + grads %s + AdamW %s + activations %s + scratch %s"
                  " + dispatch %s%s%s\n",
                  label.c_str(), recompute, format_mib(m.total() / MiB).c_str(), format_mib(m.weights / MiB).c_str(),
                  format_mib(m.grads / MiB).c_str(), format_mib(m.optimizer / MiB).c_str(),
                  format_mib(m.activations / MiB).c_str(), format_mib(m.scratch / MiB).c_str(),
                  format_mib(m.dispatch / MiB).c_str(), bf16.c_str(),
                  cfg.train.recompute == recompute ? "  (this config)" : "");
    }
  }
}

int run(const Args& args) {
  Config cfg = load_config(args.positional()[0], args.overrides());
  if (cfg.model.vocab_size == 0) resolve_vocab(cfg, load_tokens(cfg.data.path));
  const ModelCount c = count_model(cfg);
  std::printf("%s: %d layers (%d dense, %d MoE), d_model %d, %d heads, seq_len %d, vocab %d\n", cfg.name.c_str(),
              cfg.model.n_layers, cfg.model.first_dense_layers, cfg.n_moe_layers(), cfg.model.d_model,
              cfg.model.n_heads, cfg.model.seq_len, cfg.model.vocab_size);
  if (cfg.n_moe_layers() > 0)
    std::printf("MoE: %d shared + %d routed experts of width %d, top-%d, score %s\n", cfg.moe.n_shared,
                cfg.moe.n_routed, cfg.moe.expert_hidden, cfg.moe.top_k, cfg.moe.score.c_str());
  for (const std::string& line : parameter_table(c)) std::printf("%s\n", line.c_str());
  std::printf("training FLOPs per token (forward + backward): %.4g\n", c.flops_per_token);
  std::printf("training FLOPs per step: %.4g (%d tokens)\n",
              c.flops_per_token * cfg.train.batch_size * cfg.model.seq_len, cfg.train.batch_size * cfg.model.seq_len);
  print_memory(cfg);
  return 0;
}

}  // namespace

const Command kInfoCommand = {
    "info", "CONFIG [--set ...]", "parameters, FLOPs per token, memory estimate", kUsage, {}, {}, one_input, run,
    false};

}  // namespace dsmoe
