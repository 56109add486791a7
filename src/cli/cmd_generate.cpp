#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "backend/select.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "io/checkpoint.h"
#include "model/generator.h"
#include "train/engine.h"
#include "util/check.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

// Samples from logits with temperature and top-k (temperature 0 = greedy).
int sample(const float* logits, int vocab, double temperature, int top_k, Rng& rng) {
  std::vector<int> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  if (temperature <= 0) return idx[0];
  const int k = top_k > 0 ? std::min(top_k, vocab) : vocab;
  std::vector<double> p(k);
  for (int i = 0; i < k; ++i) p[i] = std::exp((logits[idx[i]] - logits[idx[0]]) / temperature);
  double u = rng.uniform() * std::accumulate(p.begin(), p.end(), 0.0);
  for (int i = 0; i < k; ++i) {
    if ((u -= p[i]) <= 0) return idx[i];
  }
  return idx[k - 1];
}

}  // namespace

namespace {

const char* kUsage =
    "usage: dsmoe generate --checkpoint CK --prompt TEXT [--max-new-tokens 200]\n"
    "                      [--temperature 0.8] [--top-k 40] [--seed 1] [--backend auto|cpu|cuda]\n"
    "Continues TEXT (byte-level tokens) with samples from the model; temperature 0 is greedy.\n"
    "The model sees the last seq_len tokens (docs/model.md, Generation). A KV cache runs the prompt\n"
    "at once, then each new token's position alone while the text fits in seq_len. Past it the\n"
    "window slides by a token each time, which moves every token to another position (another\n"
    "RoPE rotation), so each new token runs the whole window again, as fast as without a cache.\n";

int run(const Args& args) {
  const std::string ck = args.get("checkpoint");
  const std::string prompt = args.get("prompt", "\n");
  const int64_t max_new = args.get_int("max-new-tokens", 200);
  const double temperature = args.get_double("temperature", 0.8);
  const int top_k = static_cast<int>(args.get_int("top-k", 40));
  DSMOE_CHECK(max_new >= 0, "--max-new-tokens must be >= 0");
  DSMOE_CHECK(temperature >= 0, "--temperature must be >= 0");
  DSMOE_CHECK(!prompt.empty(), "--prompt must not be empty");
  Rng rng(static_cast<uint64_t>(args.get_int("seed", 1)));

  Config cfg = config_from_checkpoint(ck);
  cfg.backend = args.get("backend", "auto");  // checkpoints move between backends
  cfg.train.recompute = "none";  // the cache keeps every layer's keys and values
  auto comm = make_single_comm();
  auto be = make_backend(cfg.backend, *comm, cfg.precision);
  Model<float> model(cfg, *be, *comm, 1);
  CheckpointState st = read_checkpoint(ck, model.table(), model.moe_layers(), cfg.moe.n_routed);
  model.params_from_host(st.params);
  model.set_bias(st.bias);

  const int V = cfg.model.vocab_size;
  std::vector<int32_t> context(prompt.begin(), prompt.end());
  for (auto& t : context) t = static_cast<uint8_t>(t);
  std::fputs(prompt.c_str(), stdout);
  Generator generator(model);
  for (int64_t i = 0; i < max_new; ++i) {
    const std::vector<float> logits = generator.next_logits(context);
    const int next = sample(logits.data(), V, temperature, top_k, rng);
    context.push_back(next);
    std::fputc(next < 256 ? next : '?', stdout);
    std::fflush(stdout);
  }
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace

const Command kGenerateCommand = {"generate",
                                  "--checkpoint CK --prompt TEXT",
                                  "sample text from a checkpoint",
                                  kUsage,
                                  {"checkpoint", "prompt", "max-new-tokens", "temperature", "top-k", "seed", "backend"},
                                  {},
                                  has_checkpoint,
                                  run,
                                  false};

}  // namespace dsmoe
