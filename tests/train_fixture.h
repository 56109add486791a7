// A tiny model on a small generated corpus, shared by the training tests.
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "io/checkpoint.h"
#include "io/h5.h"
#include "model/layout.h"
#include "test_util.h"
#include "train/engine.h"
#include "util/rng.h"

namespace dsmoe::test {

// A metrics.h5 series, flattened (read as SWMR: also while a run writes it, or after it was killed).
inline std::vector<double> read_series(const std::string& path, const std::string& name) {
  h5::Handle f = h5::open_file(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ);
  if (!f.valid()) throw Error("cannot open " + path);
  h5::Handle d = h5::open_dataset(f, name);
  std::vector<int64_t> dims = h5::shape(d);
  int64_t n = 1;
  for (int64_t x : dims) n *= x;
  std::vector<double> v(static_cast<size_t>(n));
  if (n > 0) h5::read_rows(d, H5T_NATIVE_DOUBLE, 0, dims, v.data());
  return v;
}

// Sentences from a small word list with a seeded first-order structure: enough regularity
// that context helps, so a model that learns beats the corpus's unigram entropy.
inline std::string make_corpus(int n_sentences, uint64_t seed) {
  const std::vector<std::string> subj = {"the cat", "a dog", "my friend", "the old man", "every bird"};
  const std::vector<std::string> verb = {"sees", "likes", "follows", "finds", "hears"};
  const std::vector<std::string> obj = {"the river.", "a red ball.", "the green hill.", "some bread.", "the moon."};
  Rng rng(seed);
  std::string text;
  for (int i = 0; i < n_sentences; ++i) {
    size_t s = rng.below(subj.size());
    text += subj[s] + " " + verb[(s + rng.below(2)) % verb.size()] + " " + obj[rng.below(obj.size())] + "\n";
  }
  return text;
}

// Entropy (nats) of the byte distribution: the best loss of any model that ignores context.
inline double unigram_entropy(const std::string& text) {
  std::map<unsigned char, double> count;
  for (unsigned char c : text) count[c] += 1;
  double h = 0;
  for (auto& [c, n] : count) h -= n / text.size() * std::log(n / text.size());
  return h;
}

// A tiny run on the CPU backend (a test for the GPU sets backend: cuda).
inline std::string tiny_yaml(const std::string& data, const std::string& out) {
  return "name: tiny\nseed: 5\nbackend: cpu\n"
         "model: {vocab_size: 0, d_model: 32, n_layers: 2, n_heads: 2, seq_len: 32, first_dense_layers: 1, "
         "dense_hidden: 64}\n"
         "moe: {n_routed: 4, n_shared: 1, top_k: 2, expert_hidden: 16}\n"
         "train: {steps: 8, batch_size: 8, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 2, log_every: 1, "
         "eval_every: 4, eval_batches: 2}\n"
         "data: {path: '" + data + "', val_fraction: 0.1}\n"
         "out: '" + out + "'\n";
}

// Everything in OUT/checkpoint.h5 of a run of `cfg` (its vocab_size taken from the checkpoint).
inline CheckpointState read_run_checkpoint(Config cfg) {
  const std::string path = cfg.out + "/checkpoint.h5";
  cfg.model.vocab_size = config_from_checkpoint(path).model.vocab_size;
  std::vector<int> moe_layers;
  for (int l = 0; l < cfg.model.n_layers; ++l)
    if (cfg.is_moe_layer(l)) moe_layers.push_back(l);
  return read_checkpoint(path, build_param_table(cfg, 0, cfg.moe.n_routed), moe_layers, cfg.moe.n_routed);
}

}  // namespace dsmoe::test
