#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/tokens.h"
#include "data/vocab.h"
#include "model/flops.h"
#include "sim/memory.h"

namespace dsmoe {
namespace {

const char* kUsage =
    "usage: dsmoe info CONFIG [--set key=value ...]\n"
    "Parameters (total and activated per token) by component, training FLOPs per token and\n"
    "the memory a CPU run needs. vocab_size 0 is resolved from the data.\n";

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
  const int seqs = cfg.train.batch_size / cfg.train.micro_batches;
  // The memory model of `dsmoe simulate` (docs/simulation.md), for the CPU backend on one rank.
  std::printf("memory estimate (CPU, one rank): %.1f MiB (weights, grads, AdamW: %.1f MiB)\n",
              sim::rank_memory(cfg, 1, 0, 1, seqs, "cpu", {}).total() / 1048576.0, 16.0 * c.params_total / 1048576.0);
  return 0;
}

}  // namespace

const Command kInfoCommand = {
    "info", "CONFIG [--set ...]", "parameters, FLOPs per token, memory estimate", kUsage, {}, {}, one_input, run,
    false};

}  // namespace dsmoe
