#include "train/engine.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <string>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda_loader.h"
#include "data/vocab.h"
#include "util/test_hooks.h"
#include "backend/select.h"
#include "model/layout.h"
#include "moe/router_math.h"
#include "util/check.h"
#include "util/rng.h"
#include "util/timer.h"

namespace dsmoe {

Engine::Engine(Config cfg, Comm& comm)
    : cfg_(std::move(cfg)), comm_(comm), groups_(comm, cfg_.parallel.expert_parallel) {
  data_ = load_tokens(cfg_.data.path);
  resolve_vocab(cfg_, data_);
  validate_config(cfg_, comm_.size());
  split_ = split_tokens(static_cast<int64_t>(data_.tokens.size()), cfg_.data.val_fraction, cfg_.model.seq_len);
  order_ = std::make_unique<TrainOrder>(split_.n_train, cfg_.model.seq_len, cfg_.train.batch_size,
                                        cfg_.data.shuffle, cfg_.seed);
  be_ = make_backend(cfg_.backend, comm_, cfg_.precision, &threads_);
  if (be_->name() == "cuda" && comm_.size() > 1) {  // tensors move through NCCL, host values through MPI
    nccl_world_ = make_nccl_comm(comm_);
    groups_.ep = make_nccl_comm(std::move(groups_.ep));
    groups_.dp = make_nccl_comm(std::move(groups_.dp));
  }
  local_seqs_ = cfg_.train.batch_size / cfg_.train.micro_batches / comm_.size();
  model_ = std::make_unique<Model<float>>(cfg_, *be_, comm_, local_seqs_, groups_.ep.get());
  model_->init_params(cfg_.seed);
  const ParamTable& table = model_->table();
  opt_ = std::make_unique<AdamW<float>>(
      *be_, table, cfg_.train,
      cfg_.parallel.shard_optimizer
          ? shard_over_replicas(table.sharded_begin(), table.size(), comm_.rank(), comm_.size(), groups_.dp->rank(),
                                groups_.dp->size())
          : whole_buffer(table.size()));
  const auto bucket_elems = static_cast<int64_t>(cfg_.parallel.grad_bucket_mb * (1 << 20) / sizeof(float));
  grad_sync_ = std::make_unique<GradSync>(plan_grad_buckets(table, model_->backward_stages(), bucket_elems),
                                          model_->grads(), nccl_world_ ? *nccl_world_ : comm_, *groups_.dp);
  inputs_.resize((size_t)local_seqs_ * cfg_.model.seq_len);
  targets_.resize(inputs_.size());
  fail_at_ = test_hooks::fail_at();
  stall_at_ = test_hooks::stall_at();
  nan_steps_ = test_hooks::nan_at();
}

Engine::~Engine() = default;

// Forward (and in training backward) of micro-batch `micro`; returns the global CE sum.
double Engine::micro_batch(int64_t step, int micro, bool training, StepStats* stats) {
  const int B = cfg_.train.batch_size, Bm = B / cfg_.train.micro_batches, T = cfg_.model.seq_len;
  const int64_t first = (int64_t)micro * Bm + (int64_t)comm_.rank() * local_seqs_;
  std::vector<int64_t> starts(local_seqs_);
  for (int i = 0; i < local_seqs_; ++i)
    starts[i] = training ? order_->start(step, first + i)
                         : eval_start(split_, T, (int64_t)step * B + first + i);
  gather_windows(data_.tokens.data(), starts, T, inputs_.data(), targets_.data());

  ForwardOpts opts;
  opts.training = training;
  opts.tokens_global = (int64_t)Bm * T;
  opts.token_offset = first * T - (int64_t)micro * Bm * T;
  opts.noise_key = hash_key(cfg_.seed, step, micro);
  opts.loss_scale = 1.0 / cfg_.train.micro_batches;
  ForwardResult r = model_->forward(inputs_.data(), targets_.data(), local_seqs_, opts);
  double ce = r.ce_sum;
  comm_.allreduce_sum(&ce, 1);
  if (!training) return ce;
  // The last micro-batch's backward starts the gradients' all-reduce as it finishes them.
  if (micro + 1 == cfg_.train.micro_batches)
    model_->backward([this](int stage) { grad_sync_->stage_done(stage); });
  else
    model_->backward();
  stats->aux_loss += r.aux_loss / cfg_.train.micro_batches;
  const int N = cfg_.moe.n_routed;
  for (size_t li = 0; li < model_->moe_layers().size(); ++li) {
    const Routing<float>& rt = model_->routing(static_cast<int>(li));
    for (int i = 0; i < N; ++i) stats->load[li * N + i] += rt.load[i];
    stats->dropped[li] += static_cast<double>(rt.dropped);
  }
  return ce;
}

StepStats Engine::train_step() {
  DSMOE_CHECK(!fail_at_.is(comm_.rank(), step_), "injected failure at step ", step_, " (DSMOE_FAIL_AT)");
  if (stall_at_.is(comm_.rank(), step_))
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // an injected stall (DSMOE_STALL_AT)
  const double t0 = now_seconds();
  const int64_t s = step_;
  const size_t n_moe = model_->moe_layers().size();
  const int N = cfg_.moe.n_routed;
  StepStats st;
  st.load.assign(n_moe * N, 0.0);
  st.dropped.assign(n_moe, 0.0);
  for (size_t li = 0; li < n_moe; ++li) {
    model_->moe_layer(static_cast<int>(li)).reset_times();
    model_->moe_layer(static_cast<int>(li)).dispatch_stats() = DispatchStats{};
  }

  model_->zero_grads();
  double ce = 0;
  for (int m = 0; m < cfg_.train.micro_batches; ++m) ce += micro_batch(s, m, true, &st);
  st.loss = ce / static_cast<double>(tokens_per_step());

  // On a GPU the backward is still running: wait for it here, so that its time counts as compute
  // and the all-reduce's is its own (the part of it the backward did not hide).
  be_->synchronize();
  const double t_ar = now_seconds();
  grad_sync_->finish();
  if (std::find(nan_steps_.begin(), nan_steps_.end(), s) != nan_steps_.end())
    be_->fill(model_->grads(), std::nanf(""), 1);  // a numerical fault, for tests (set on every rank)
  st.grad_norm = grad_norm();
  RankStats& own = st.own;
  own.t_allreduce = now_seconds() - t_ar;
  st.lr = learning_rate(cfg_.train, s);
  // The loss and the norm are global, so every rank skips the same steps: weights, AdamW state
  // and balance bias stay as they were; the data order moves on.
  st.skipped = !std::isfinite(st.loss) || !std::isfinite(st.grad_norm);
  if (!st.skipped) {
    opt_->update(model_->params(), model_->grads(), st.lr, clip_coefficient(st.grad_norm, cfg_.train.grad_clip),
                 s + 1);
    const double t_ag = now_seconds();
    gather_updated_params();
    own.t_allreduce += now_seconds() - t_ag;
  }

  // Auxiliary-loss-free balancing: move each bias toward the mean load.
  if (cfg_.balance.bias_rate > 0 && !st.skipped) model_->update_bias(st.load, cfg_.balance.bias_rate);
  for (size_t li = 0; li < n_moe; ++li) {
    MoeLayer<float>& layer = model_->moe_layer(static_cast<int>(li));
    own.t_dispatch += layer.times().dispatch;
    own.t_combine += layer.times().combine;
    st.t_route += layer.times().route;
    st.bytes_sent += static_cast<double>(layer.dispatch_stats().bytes_sent);
    own.expert_rows += static_cast<double>(layer.dispatch_stats().expert_rows);
    own.tokens_received += static_cast<double>(layer.dispatch_stats().tokens_received);
  }
  own.step_time_s = now_seconds() - t0;
  own.t_compute = own.step_time_s - own.t_dispatch - own.t_combine - own.t_allreduce;
  double maxed[7] = {own.step_time_s, own.t_compute, own.t_dispatch, own.t_combine, own.t_allreduce,
                     own.expert_rows, st.t_route};
  comm_.allreduce_max(maxed, 7);
  double summed[2] = {st.bytes_sent, own.expert_rows};
  comm_.allreduce_sum(summed, 2);
  st.t_step = maxed[0];
  st.t_compute = maxed[1];
  st.t_dispatch = maxed[2];
  st.t_combine = maxed[3];
  st.t_allreduce = maxed[4];
  st.t_route = maxed[6];
  st.bytes_sent = summed[0] / comm_.size();
  st.recv_imbalance = summed[1] > 0 ? maxed[5] / (summed[1] / comm_.size()) : 1.0;
  step_++;
  return st;
}

// A sharded optimizer updated this rank's blocks: every rank gets every block.
void Engine::gather_updated_params() {
  const OptimizerShard& sh = opt_->shard();
  if (!sh.sharded) return;
  float* p = model_->params();
  (nccl_world_ ? *nccl_world_ : comm_).allgather_blocks(p, sh.replicated.counts, sh.replicated.offsets);
  groups_.dp->allgather_blocks(p, sh.experts.counts, sh.experts.offsets);
  be_->written_by_collective(p, model_->table().size());
}

// One AdamW moment of every element of this rank's buffer (from every rank's shard: a collective).
std::vector<float> Engine::whole_moment(float* state) {
  const OptimizerShard& sh = opt_->shard();
  std::vector<float> mine = to_host(*be_, state, sh.state_size);
  if (!sh.sharded) return mine;
  std::vector<float> whole(static_cast<size_t>(model_->table().size()));
  place_shard_state(sh, mine, &whole);
  comm_.allgather_blocks(whole.data(), sh.replicated.counts, sh.replicated.offsets);
  groups_.dp->host().allgather_blocks(whole.data(), sh.experts.counts, sh.experts.offsets);
  return whole;
}

// The norm over all parameters of the whole model, each counted once.
double Engine::grad_norm() {
  const float* g = model_->grads();
  const int64_t experts = model_->table().sharded_begin(), end = model_->table().size();
  // Non-expert gradients are identical on every rank; each shard holds its own experts'.
  double sq[2] = {be_->sum_squares(g, experts), be_->sum_squares(g + experts, end - experts)};
  groups_.ep->allreduce_sum(&sq[1], 1);
  return std::sqrt(sq[0] + sq[1]);
}

double Engine::evaluate() {
  double ce = 0;
  for (int b = 0; b < cfg_.train.eval_batches; ++b)
    for (int m = 0; m < cfg_.train.micro_batches; ++m) ce += micro_batch(b, m, false, nullptr);
  return ce / (static_cast<double>(cfg_.train.eval_batches) * tokens_per_step());
}

std::vector<float> Engine::gather_model(std::vector<float> local, const ParamTable& global) {
  if (groups_.dp->rank() != 0) return {};  // expert-parallel group 0 holds one full copy
  Comm& ep = *groups_.ep;
  if (ep.size() == 1) return local;  // this rank's table is the global one
  std::vector<float> full(ep.rank() == 0 ? global.size() : 0);
  std::vector<float> mine, all;  // reused: fresh vectors of this size cost page faults
  for (const auto& t : model_->table().tensors()) {
    mine.resize(static_cast<size_t>(t.numel));
    copy_tensor_elements(t, local.data(), mine.data());
    const TensorInfo& g = global.get(t.name);
    if (t.expert_sharded) {  // the ranks' slices in rank order: the whole tensor
      all.resize(ep.rank() == 0 ? static_cast<size_t>(g.numel) : 0);
      ep.gather(mine.data(), t.numel * (int64_t)sizeof(float), ep.rank() == 0 ? all.data() : nullptr, 0);
      if (ep.rank() == 0) set_tensor_elements(g, all.data(), full.data());
    } else if (ep.rank() == 0) {
      set_tensor_elements(g, mine.data(), full.data());
    }
  }
  return full;
}

int64_t Engine::eval_batches_that_fit() const {
  return eval_windows(split_, cfg_.model.seq_len) / cfg_.train.batch_size;
}

void Engine::check_evaluation_fits() const {
  const int64_t eval_seqs = static_cast<int64_t>(cfg_.train.eval_batches) * cfg_.train.batch_size;
  DSMOE_CHECK(eval_seqs <= eval_windows(split_, cfg_.model.seq_len), cfg_.source,
              ": train.eval_batches x train.batch_size = ", eval_seqs, " evaluation sequences of ",
              cfg_.model.seq_len + 1, " tokens, but the validation split of ", data_.source, " (data.val_fraction ",
              cfg_.data.val_fraction, ": ", split_.n_val, " tokens) holds ", eval_windows(split_, cfg_.model.seq_len),
              "; lower train.eval_batches or raise data.val_fraction");
}

void Engine::save_checkpoint(const std::string& path, const StepStats& last) {
  const ParamTable global = build_param_table(cfg_, 0, cfg_.moe.n_routed);
  CheckpointState st;
  st.params = gather_model(model_->params_to_host(), global);
  st.m = gather_model(whole_moment(opt_->m()), global);
  st.v = gather_model(whole_moment(opt_->v()), global);
  st.optimizer_step = step_;
  st.bias = model_->bias();
  st.moe_layers = model_->moe_layers();
  st.meta.step = step_;
  st.meta.tokens_seen = step_ * tokens_per_step();
  st.meta.config_yaml = to_yaml(cfg_);
  st.meta.loss = last.loss;
  st.meta.aux_loss = last.aux_loss;
  st.meta.lr = last.lr;
  st.meta.grad_norm = last.grad_norm;
  if (comm_.rank() == 0) write_checkpoint(path, global, st);
  comm_.barrier();  // no rank goes on (or exits) before the checkpoint is in place
}

void Engine::load_checkpoint(const std::string& path) {
  CheckpointState st = read_checkpoint(path, model_->table(), model_->moe_layers(), cfg_.moe.n_routed);
  model_->params_from_host(st.params);
  to_device(*be_, opt_->m(), shard_state(opt_->shard(), st.m));
  to_device(*be_, opt_->v(), shard_state(opt_->shard(), st.v));
  model_->set_bias(st.bias);
  step_ = st.optimizer_step;
}

}  // namespace dsmoe

namespace dsmoe {

Config config_from_checkpoint(const std::string& path) {
  CheckpointMeta meta = read_checkpoint_meta(path);
  return parse_config(meta.config_yaml, path + " (stored config)");
}

std::vector<double> layer_max_violations(const StepStats& s, int n_routed) {
  std::vector<double> out;
  for (size_t at = 0; at + n_routed <= s.load.size(); at += n_routed)
    out.push_back(max_violation(std::vector<double>(s.load.begin() + at, s.load.begin() + at + n_routed)));
  return out;
}

}  // namespace dsmoe
