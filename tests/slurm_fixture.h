// Shared by the tests of `dsmoe submit`, jobs/run.sbatch and `dsmoe status`: a tiny two-run
// experiment, and stand-in commands (sbatch, srun, squeue, ...) put first on PATH.
#pragma once
#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "io/h5.h"
#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe::test {

// The step of RUN_DIR/checkpoint.h5, 0 if there is none yet.
inline int64_t checkpoint_step(const std::string& run_dir) {
  h5::silence_errors();
  h5::Handle f = h5::open_file(run_dir + "/checkpoint.h5", H5F_ACC_RDONLY);
  return f.valid() ? h5::read_attr_int64(f, "step") : 0;
}

struct SlurmFixture {
  TempDir dir;
  std::string corpus = dir.file("corpus.txt");
  std::string runs = dir.file("runs");
  std::string bin = dir.file("bin");  // stand-in commands
  std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";

  SlurmFixture() {
    setenv("OMP_NUM_THREADS", "1", 1);
    write_file(corpus, make_corpus(400, 3));
    run_command("mkdir -p '" + bin + "'");
    setenv("PATH", (bin + ":" + old_path).c_str(), 1);
  }
  ~SlurmFixture() { setenv("PATH", old_path.c_str(), 1); }

  // Runs a-s1 and b-s1 (variants a and b, seed 1), and `more_variants` (sweep list entries), of
  // `steps` steps logged every step.
  // 4 routed experts and 12 sequences a step: 1, 2 or 4 ranks fit, 3 do not.
  std::string experiment(const std::string& name, int steps, const std::string& more_variants = "") const {
    const std::string path = dir.file(name + ".yaml");
    write_file(path, "experiment: " + name + "\nseeds: [1]\n" +
                         "base:\n"
                         "  backend: cpu\n"
                         "  model: {vocab_size: 256, d_model: 32, n_layers: 2, n_heads: 2, seq_len: 32, "
                         "first_dense_layers: 1, dense_hidden: 64}\n"
                         "  moe: {n_routed: 4, n_shared: 1, top_k: 2, expert_hidden: 16}\n"
                         "  train: {batch_size: 12, lr: 3.0e-3, warmup_steps: 2, eval_batches: 2, log_every: 1, "
                         "eval_every: 50, steps: " + std::to_string(steps) + "}\n"
                         "  data: {path: '" + corpus + "', val_fraction: 0.1}\n"
                         "sweep:\n"
                         "  - name: a\n"
                         "  - name: b\n"
                         "    moe: {top_k: 1}\n" + more_variants);
    return path;
  }

  // An executable shell script `name` in bin/.
  void stand_in(const std::string& name, const std::string& body) const {
    write_file(bin + "/" + name, "#!/bin/sh\n" + body);
    chmod((bin + "/" + name).c_str(), 0755);
  }
};

}  // namespace dsmoe::test
