// Expert parallelism computes the same model: a tiny config trained at every valid
// (ranks, expert_parallel) gives the single-rank losses at every step and the same weights,
// and a checkpoint written by 4 ranks resumes on 2 ranks and on 1; the sharded optimizer and
// recomputed activations train as the plain run does. metrics.h5 records every rank's times and
// expert rows.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "backend/cuda_loader.h"
#include "io/checkpoint.h"
#include "model/layout.h"
#include "mpi_test_env.h"
#include "train/engine.h"
#include "train/trainer.h"
#include "sim/memory.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

// A folder every rank of this job agrees on (they share the launcher as parent).
struct SharedDir {
  std::string path = "/tmp/dsmoe_mpitest_" + std::to_string(getppid());
  SharedDir() {
    if (test::world().rank() == 0) {
      std::filesystem::create_directories(path);
      test::write_file(path + "/corpus.txt", test::make_corpus(2000, 11));
    }
    test::world().barrier();
  }
  ~SharedDir() {
    test::world().barrier();
    if (test::world().rank() == 0) std::filesystem::remove_all(path);
  }
};

// bucket_mb: the gradient all-reduce's buckets; 0.0001 MiB (26 values) puts each stage of the
// backward in buckets of its own, started while the backward goes on.
Config tiny(const SharedDir& dir, int expert_parallel, const std::string& bucket_mb = "0", bool shard = false) {
  return parse_config(test::tiny_yaml(dir.path + "/corpus.txt", dir.path + "/out"), "tiny.yaml",
                      {"parallel.expert_parallel=" + std::to_string(expert_parallel),
                       "parallel.grad_bucket_mb=" + bucket_mb, std::string("parallel.shard_optimizer=") + (shard ? "true" : "false"),
                       "balance.device_groups=2",
                       "balance.device_alpha=0.05", "balance.comm_alpha=0.02", "moe.capacity_factor=1.2",
                       "moe.router_noise=0.2", "train.micro_batches=2"});
}

std::vector<float> whole_model(const Config& cfg, const std::string& path) {
  Config c = cfg;
  c.model.vocab_size = config_from_checkpoint(path).model.vocab_size;
  return read_checkpoint(path, build_param_table(c, 0, c.moe.n_routed), {1}, c.moe.n_routed).params;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (double)std::fabs(a[i] - b[i]));
  return m;
}

// fp32 results differ between layouts only by reassociation (other GEMM blockings and sums
// in another order), ~1e-7 relative per operation; measured: losses within 5e-9 and weights
// within 2e-7 after 4 steps on 4 ranks. Routing decisions (expert loads) must be identical.
constexpr double kLossTol = 1e-6;
constexpr double kWeightTol = 2e-5;

// A single-rank run's steps and final weights, and the same checks of a run on the world.
struct Reference {
  static constexpr int kSteps = 4;
  std::vector<StepStats> stats;
  std::vector<float> params;
  explicit Reference(const Config& cfg) {
    auto single = make_single_comm();
    Engine ref(cfg, *single);
    for (int s = 0; s < kSteps; ++s) stats.push_back(ref.train_step());
    params = ref.model().params_to_host();
  }
  // Trains `engine` as many steps; the same losses, norms and loads each step, and the same
  // weights in the checkpoint it writes at `ck`.
  void expect_matched_by(Engine& engine, const std::string& ck) const {
    for (int s = 0; s < kSteps; ++s) {
      StepStats st = engine.train_step();
      EXPECT_NEAR(st.loss, stats[s].loss, kLossTol) << "step " << s;
      EXPECT_NEAR(st.aux_loss, stats[s].aux_loss, kLossTol) << "step " << s;
      EXPECT_NEAR(st.grad_norm, stats[s].grad_norm, 1e-4 * stats[s].grad_norm) << "step " << s;
      EXPECT_EQ(st.load, stats[s].load) << "step " << s;
    }
    engine.save_checkpoint(ck, StepStats{});
    if (test::world().rank() == 0) {
      EXPECT_LT(max_abs_diff(whole_model(engine.config(), ck), params), kWeightTol);
    }
    test::world().barrier();
  }
};

// Trains both engines `steps` steps side by side: the same losses, norms and loads every step and
// the same weights after, to the bit.
void expect_bit_identical_training(Engine& a, Engine& b, int steps) {
  for (int s = 0; s < steps; ++s) {
    const StepStats x = a.train_step(), y = b.train_step();
    EXPECT_EQ(x.loss, y.loss) << "step " << s;
    EXPECT_EQ(x.grad_norm, y.grad_norm) << "step " << s;
    EXPECT_EQ(x.load, y.load) << "step " << s;
  }
  EXPECT_EQ(a.model().params_to_host(), b.model().params_to_host());
}

TEST(TrainParallel, EveryLayoutMatchesOneRank) {
  SharedDir dir;
  Comm& world = test::world();
  const Reference ref(tiny(dir, 0));
  for (int E = 1; E <= world.size(); E *= 2) {
    if (world.size() % E) continue;
    for (const std::string bucket_mb : {"0", "0.0001"}) {
      SCOPED_TRACE("ranks " + std::to_string(world.size()) + ", expert_parallel " + std::to_string(E) +
                   ", grad_bucket_mb " + bucket_mb);
      Engine engine(tiny(dir, E, bucket_mb), world);
      ref.expect_matched_by(engine, dir.path + "/layout.h5");
    }
  }
}

// One GPU per rank, tokens through NCCL: the same losses, loads and weights as one GPU.
TEST(TrainParallel, GpusMatchOneGpu) {
  Comm& world = test::world();
  if (cuda_device_count() < world.size())
    GTEST_SKIP() << "needs a GPU per rank: " << cuda_device_count() << " GPU(s) for " << world.size() << " ranks";
  SharedDir dir;
  Config cfg = tiny(dir, 0, "0.0001");
  cfg.backend = "cuda";
  const Reference ref(cfg);
  Engine engine(cfg, world);
  ref.expect_matched_by(engine, dir.path + "/gpus.h5");
}

// The weights of 6 single-rank steps.
std::vector<float> six_steps_on_one_rank(const SharedDir& dir) {
  auto single = make_single_comm();
  Engine ref(tiny(dir, 0), *single);
  for (int s = 0; s < 6; ++s) ref.train_step();
  return ref.model().params_to_host();
}

// 3 steps of `writer` on the 4 ranks and a checkpoint, resumed by ranks 0-1 as (2, 2) and by ranks
// 2 and 3 each alone as (1, 1), with the optimizer sharded or not: 3 more steps give `reference`.
void expect_resumed_on_two_and_one(const SharedDir& dir, const Config& writer, bool resume_sharded,
                                   const std::vector<float>& reference) {
  Comm& world = test::world();
  const std::string ck = dir.path + "/at3.h5";
  {
    Engine four(writer, world);
    for (int s = 0; s < 3; ++s) four.train_step();
    four.save_checkpoint(ck, StepStats{});
  }
  const bool pair = world.rank() < 2;
  std::unique_ptr<Comm> sub = world.split(pair ? 0 : 1 + world.rank(), world.rank());
  Engine resumed(tiny(dir, 0, "0", resume_sharded), *sub);
  resumed.load_checkpoint(ck);
  EXPECT_EQ(resumed.step(), 3);
  for (int s = 0; s < 3; ++s) resumed.train_step();
  if (pair) {
    const std::string out = dir.path + "/pair.h5";
    resumed.save_checkpoint(out, StepStats{});
    if (sub->rank() == 0) {
      EXPECT_LT(max_abs_diff(whole_model(resumed.config(), out), reference), kWeightTol);
    }
  } else {
    EXPECT_LT(max_abs_diff(resumed.model().params_to_host(), reference), kWeightTol);
  }
  world.barrier();
}

TEST(TrainParallel, CheckpointOfFourRanksResumesOnTwoAndOne) {
  if (test::world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  SharedDir dir;
  expect_resumed_on_two_and_one(dir, tiny(dir, 4), false, six_steps_on_one_rank(dir));
}

// The optimizer sharded over the replicas (params/optimizer_shard.h) computes the unsharded run
// to the bit, in every layout, and each rank's peak memory falls by the moments it no longer
// keeps: on rank 0, by what the memory model predicts.
TEST(TrainParallel, ShardedOptimizerMatchesUnshardedToTheBit) {
  SharedDir dir;
  Comm& world = test::world();
  for (int E = 1; E <= world.size(); E *= 2) {
    if (world.size() % E) continue;
    for (const std::string bucket_mb : {"0", "0.0001"}) {
      SCOPED_TRACE("ranks " + std::to_string(world.size()) + ", expert_parallel " + std::to_string(E) +
                   ", grad_bucket_mb " + bucket_mb);
      Engine whole(tiny(dir, E, bucket_mb), world), sharded(tiny(dir, E, bucket_mb, true), world);
      expect_bit_identical_training(whole, sharded, 4);
      const std::string ck_whole = dir.path + "/whole.h5", ck_sharded = dir.path + "/sharded.h5";
      whole.save_checkpoint(ck_whole, StepStats{});
      sharded.save_checkpoint(ck_sharded, StepStats{});
      if (world.rank() == 0) {
        Config c = whole.config();
        const ParamTable global = build_param_table(c, 0, c.moe.n_routed);
        const CheckpointState a = read_checkpoint(ck_whole, global, {1}, c.moe.n_routed);
        const CheckpointState b = read_checkpoint(ck_sharded, global, {1}, c.moe.n_routed);
        EXPECT_EQ(a.params, b.params);
        EXPECT_EQ(a.m, b.m);
        EXPECT_EQ(a.v, b.v);
      }

      const int64_t size = whole.model().table().size(), kept = sharded.optimizer_shard().state_size;
      EXPECT_EQ(whole.optimizer_shard().state_size, size);
      if (world.size() > 1) {
        EXPECT_LT(kept, size);
      }
      const double drop = static_cast<double>(whole.backend().peak_bytes()) - sharded.backend().peak_bytes();
      EXPECT_EQ(drop, 2.0 * sizeof(float) * (size - kept));
      if (world.rank() == 0) {
        const int seqs = whole.config().train.batch_size / whole.config().train.micro_batches / world.size();
        const sim::RankRows none;
        const double predicted = sim::rank_memory(whole.config(), E, 0, world.size() / E, seqs, "cpu", none).optimizer -
                                 sim::rank_memory(sharded.config(), E, 0, world.size() / E, seqs, "cpu", none).optimizer;
        EXPECT_EQ(drop, predicted);
      }
      world.barrier();
    }
  }
}

// Recomputing the attention and the experts in the backward (train.recompute: full) with tokens
// exchanged between ranks: the experts' rows of other ranks are recomputed span by span as the
// forward computed them, so every layout trains as keeping the activations does, to the bit.
TEST(TrainParallel, RecomputedActivationsMatchStoredToTheBit) {
  SharedDir dir;
  Comm& world = test::world();
  for (int E = 1; E <= world.size(); E *= 2) {
    if (world.size() % E) continue;
    SCOPED_TRACE("ranks " + std::to_string(world.size()) + ", expert_parallel " + std::to_string(E));
    Config cfg = tiny(dir, E);
    Engine stored(cfg, world);
    cfg.train.recompute = "full";
    Engine recomputed(cfg, world);
    expect_bit_identical_training(stored, recomputed, 3);
    EXPECT_LT(recomputed.backend().peak_bytes(), stored.backend().peak_bytes());
  }
}

// A checkpoint of a sharded optimizer resumes unsharded on other rank counts, and the other way.
TEST(TrainParallel, ShardedAndUnshardedCheckpointsResumeEachOther) {
  if (test::world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  SharedDir dir;
  const std::vector<float> reference = six_steps_on_one_rank(dir);
  for (const bool writer_sharded : {true, false}) {
    SCOPED_TRACE(writer_sharded ? "written sharded" : "written unsharded");
    // Expert-parallel 2: two replicas of each expert shard, so both kinds of block are sharded.
    expect_resumed_on_two_and_one(dir, tiny(dir, 2, "0", writer_sharded), !writer_sharded, reference);
  }
}

// A dataset of metrics.h5 on rank 0: its shape and its values, flattened.
struct Dataset {
  std::vector<int64_t> shape;
  std::vector<double> values;
  Dataset(const std::string& path, const std::string& name) : values(test::read_series(path, name)) {
    h5::Handle f = h5::open_file(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ);  // as read_series opens it
    shape = h5::shape(h5::open_dataset(f, name));
  }
  // Row `row` of a [rows, ranks] dataset.
  std::vector<double> ranks_of(size_t row) const {
    const size_t n = static_cast<size_t>(shape.at(1));
    return {values.begin() + row * n, values.begin() + (row + 1) * n};
  }
};

double sum_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }
double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

// train/rank/* of a dropless run on `ranks` ranks that logged 2 rows, against what the columns
// must add up to.
void expect_rank_columns(const Config& cfg, int ranks, const std::string& path) {
  const Dataset expert_rows(path, "train/rank/expert_rows"), received(path, "train/rank/tokens_received");
  const Dataset step_time(path, "train/rank/step_time_s");
  std::vector<Dataset> phases;
  for (const char* phase : {"compute", "dispatch", "combine", "allreduce"})
    phases.emplace_back(path, std::string("train/rank/time/") + phase);
  std::vector<const Dataset*> all = {&expert_rows, &received, &step_time};
  for (const Dataset& p : phases) all.push_back(&p);
  for (const Dataset* d : all) ASSERT_EQ(d->shape, (std::vector<int64_t>{2, ranks}));
  // Every step computes each of its tokens' top_k selections once, in each MoE layer.
  const double selections = static_cast<double>(cfg.train.batch_size) * cfg.model.seq_len * cfg.moe.top_k *
                            cfg.n_moe_layers();
  const std::vector<double> load = test::read_series(path, "experts/load");
  const std::vector<double> imbalance = test::read_series(path, "train/comm/recv_imbalance");
  const size_t experts = load.size() / 2;
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE("row " + std::to_string(i));
    const std::vector<double> rows_of = expert_rows.ranks_of(i), received_of = received.ranks_of(i);
    EXPECT_EQ(sum_of(rows_of), selections);
    EXPECT_EQ(sum_of(std::vector<double>(load.begin() + i * experts, load.begin() + (i + 1) * experts)), selections);
    EXPECT_NEAR(imbalance.at(i), max_of(rows_of) / (selections / ranks), 1e-12);
    EXPECT_EQ(sum_of(received_of) > 0, ranks > 1);  // tokens travel when the experts are spread
    for (int r = 0; r < ranks; ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      EXPECT_LE(received_of[r], rows_of[r]);  // a token arrives for one row or more
      double phase_sum = 0;
      for (const Dataset& p : phases) phase_sum += p.ranks_of(i)[r];
      EXPECT_NEAR(phase_sum, step_time.ranks_of(i)[r], 1e-9);  // compute is the rest of the step
    }
  }
}

// Each max-over-ranks dataset of metrics.h5 is the max over the columns of its train/rank/* one.
void expect_max_over_ranks(const std::string& path, const std::string& scalar, const std::string& per_rank) {
  const std::vector<double> max = test::read_series(path, scalar);
  const Dataset ranks(path, per_rank);
  ASSERT_EQ(ranks.shape.at(0), static_cast<int64_t>(max.size())) << per_rank;
  for (size_t i = 0; i < max.size(); ++i) EXPECT_EQ(max_of(ranks.ranks_of(i)), max[i]) << per_rank << " row " << i;
}

// `dsmoe train`'s metrics.h5 on the world: a column per rank in train/rank/*, whose max is the
// matching max-over-ranks dataset, and whose expert rows add up to the step's selections.
TEST(TrainParallel, MetricsHoldEveryRanksTimesAndRows) {
  SharedDir dir;
  Comm& world = test::world();
  const Config cfg = parse_config(test::tiny_yaml(dir.path + "/corpus.txt", dir.path + "/run"), "tiny.yaml",
                                  {"parallel.expert_parallel=0", "moe.capacity_factor=0", "train.micro_batches=2",
                                   "train.steps=3", "train.log_every=2"});
  run_training(cfg, world);
  if (world.rank() == 0) {
    const std::string path = cfg.out + "/metrics.h5";
    expect_rank_columns(cfg, world.size(), path);
    expect_max_over_ranks(path, "train/step_time_s", "train/rank/step_time_s");
    for (const char* phase : {"compute", "dispatch", "combine", "allreduce"})
      expect_max_over_ranks(path, std::string("train/time/") + phase, std::string("train/rank/time/") + phase);
  }
  world.barrier();
}

}  // namespace
}  // namespace dsmoe
