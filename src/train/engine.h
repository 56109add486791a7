// One training engine: data, backend, model, optimizer and balance bias for this rank, with
// one optimizer step and one evaluation as its operations. `dsmoe train` drives it with
// logging, metrics and checkpoints; `dsmoe bench` drives it bare.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/threads.h"
#include "comm/comm.h"
#include "comm/groups.h"
#include "config/config.h"
#include "data/batches.h"
#include "data/tokens.h"
#include "io/checkpoint.h"
#include "io/metrics.h"
#include "model/model.h"
#include "train/grad_buckets.h"
#include "train/optimizer.h"
#include "util/test_hooks.h"

namespace dsmoe {

struct StepStats {
  double loss = 0, aux_loss = 0, lr = 0, grad_norm = 0;
  std::vector<double> load;     // [moe_layers * n_routed] tokens routed per expert this step
  std::vector<double> dropped;  // [moe_layers]
  double t_compute = 0, t_dispatch = 0, t_combine = 0, t_allreduce = 0, t_step = 0;  // max over ranks
  double t_route = 0;  // the routers' host work, part of t_compute (max over ranks)
  bool skipped = false;  // non-finite loss or gradient norm: no update was made
  double bytes_sent = 0;      // bytes the dispatchers sent to other ranks, mean over ranks
  double recv_imbalance = 1;  // own.expert_rows: max / mean over ranks
  RankStats own;              // this rank's own values, of which the times above are the max
};

// Each MoE layer's MaxVio this step (max load / mean load - 1, moe/router_math.h), as metrics.h5
// records it: [moe_layers].
std::vector<double> layer_max_violations(const StepStats& s, int n_routed);

class Engine {
 public:

  // Loads the data and builds the model (initialized from cfg.seed). cfg.model.vocab_size is
  // resolved from the data.
  Engine(Config cfg, Comm& comm);
  ~Engine();

  const Config& config() const { return cfg_; }
  Model<float>& model() { return *model_; }
  Backend<float>& backend() { return *be_; }
  ProcessGroups& groups() { return groups_; }
  int64_t step() const { return step_; }  // optimizer steps taken
  const ThreadPlan& threads() const { return threads_; }  // the host threads chosen
  const OptimizerShard& optimizer_shard() const { return opt_->shard(); }
  int64_t tokens_per_step() const { return (int64_t)cfg_.train.batch_size * cfg_.model.seq_len; }

  StepStats train_step();  // runs optimizer step number step() and advances it
  double evaluate();       // mean validation cross-entropy (docs/model.md, Data)
  // Throws, naming the keys, if the validation split holds fewer windows than evaluate() reads.
  // Training calls it before its first step; a benchmark, which never evaluates, does not.
  void check_evaluation_fits() const;
  // Whole evaluation batches (of train.batch_size sequences) the validation split holds.
  int64_t eval_batches_that_fit() const;

  void save_checkpoint(const std::string& path, const StepStats& last);
  void load_checkpoint(const std::string& path);  // also sets step()

 private:
  double micro_batch(int64_t step, int micro, bool training, StepStats* stats);
  double grad_norm();
  void gather_updated_params();
  std::vector<float> whole_moment(float* state);
  // This rank's tensors in the layout `global` of the whole model (rank 0 gets the experts of
  // the other ranks of expert-parallel group 0); empty on ranks that do not write.
  std::vector<float> gather_model(std::vector<float> local, const ParamTable& global);

  Config cfg_;
  Comm& comm_;
  ProcessGroups groups_;
  std::unique_ptr<Comm> nccl_world_;  // CUDA on several ranks: the world for tensors
  ThreadPlan threads_;
  std::unique_ptr<Backend<float>> be_;
  TokenData data_;
  Split split_;
  std::unique_ptr<TrainOrder> order_;
  std::unique_ptr<Model<float>> model_;
  std::unique_ptr<AdamW<float>> opt_;
  std::unique_ptr<GradSync> grad_sync_;  // started by the last micro-batch's backward
  int64_t step_ = 0;
  int local_seqs_ = 0;  // sequences of one micro-batch on this rank
  std::vector<int32_t> inputs_, targets_;
  test_hooks::RankStep fail_at_, stall_at_;  // util/test_hooks.h
  std::vector<int64_t> nan_steps_;  // test_hooks::nan_at()
};

}  // namespace dsmoe

namespace dsmoe {

// The resolved config stored in a checkpoint (for eval and generate).
Config config_from_checkpoint(const std::string& path);

}  // namespace dsmoe
