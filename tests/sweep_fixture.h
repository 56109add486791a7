// Shared by the tests of `dsmoe sweep` and `dsmoe analyze`: a tiny two-variant experiment on a
// small corpus, and reading the CSV files analyze writes.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe::test {

// CSV text -> one map of column -> field per line after the header (no quoted fields).
inline std::vector<std::map<std::string, std::string>> read_csv(const std::string& text) {
  std::vector<std::vector<std::string>> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> fields;
    std::istringstream ls(line);
    for (std::string f; std::getline(ls, f, ',');) fields.push_back(f);
    if (!line.empty() && line.back() == ',') fields.push_back("");
    lines.push_back(fields);
  }
  std::vector<std::map<std::string, std::string>> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::map<std::string, std::string> row;
    for (size_t j = 0; j < lines[0].size(); ++j) row[lines[0][j]] = j < lines[i].size() ? lines[i][j] : "";
    rows.push_back(row);
  }
  return rows;
}

// 8 steps, every one logged, evaluations at 4 and 8.
inline const char* kShort = "steps: 8, log_every: 1, eval_every: 4";

struct SweepFixture : ::testing::Test {
  TempDir dir;
  std::string corpus = dir.file("corpus.txt");
  std::string runs = dir.file("runs");

  void SetUp() override {
    setenv("OMP_NUM_THREADS", "1", 1);  // bit-identical runs whatever runs beside them
    write_file(corpus, make_corpus(400, 3));
  }

  // Two variants (a: top-2 dropless; b: top-1 with capacity, so some pairs drop) x `seeds`.
  std::string experiment(const std::string& name, const std::string& train, const std::string& extra = "",
                         const std::string& seeds = "[1, 2]") {
    const std::string path = dir.file(name + ".yaml");
    write_file(path, "experiment: " + name + "\nseeds: " + seeds + "\n" + extra +
                         "base:\n"
                         "  backend: cpu\n"
                         "  model: {vocab_size: 256, d_model: 32, n_layers: 2, n_heads: 2, seq_len: 32, "
                         "first_dense_layers: 1, dense_hidden: 64}\n"
                         "  moe: {n_routed: 4, n_shared: 1, top_k: 2, expert_hidden: 16}\n"
                         "  train: {batch_size: 8, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 2, eval_batches: 2, " +
                         train +
                         "}\n"
                         "  data: {path: '" + corpus + "', val_fraction: 0.1}\n"
                         "sweep:\n"
                         "  - name: a\n"
                         "  - name: b\n"
                         "    moe: {top_k: 1, capacity_factor: 1.0}\n");
    return path;
  }
  RunResult sweep(const std::string& exp, const std::string& root, const std::string& flags = "") {
    return run_dsmoe("sweep " + exp + " --runs-dir " + root + " " + flags);
  }
};

}  // namespace dsmoe::test
