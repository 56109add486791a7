// metrics.h5 (docs/metrics.md): extendible datasets appended by rank 0 and readable while the
// run goes on (SWMR); after a crash the file is valid up to the last flush.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsmoe {

struct RunInfo {
  std::string config_yaml;
  int64_t params_total = 0;
  int64_t params_active = 0;
  double flops_per_token = 0;
  int world_size = 1;
  std::string backend;
  int n_moe_layers = 0;
  int n_routed = 0;
  bool with_bias = false;  // bias balancing: /experts/bias exists
  // Provenance of this attempt (a start, or a resume from step from_step): the dsmoe build's
  // source version, rank 0's device and host, the command line and the start time (UTC).
  std::string source_version, device, host, command, started;
  int64_t from_step = 0;
};

// One rank's own values of a step: its column of the train/rank/* datasets.
struct RankStats {
  double step_time_s = 0;
  double t_compute = 0, t_dispatch = 0, t_combine = 0, t_allreduce = 0;
  double expert_rows = 0;      // (token, expert) rows this rank's experts computed
  double tokens_received = 0;  // token activations that came from other ranks (once per token and rank)
};

struct TrainRow {
  int64_t step = 0;  // optimizer steps completed (1-based: the row after step s has step s+1)
  double loss = 0, aux_loss = 0, lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // tokens seen so far
  double tokens_per_s = 0, step_time_s = 0;                              // step_time_s: max over ranks
  double t_compute = 0, t_dispatch = 0, t_combine = 0, t_allreduce = 0;  // max over ranks
  double bytes_sent = 0;      // bytes sent to other ranks, mean over ranks
  double recv_imbalance = 1;  // RankStats::expert_rows: max / mean over ranks
  int64_t skipped_steps = 0;  // steps since the previous row whose update was skipped (non-finite)
  std::vector<RankStats> ranks;  // [world_size], in rank order
};

struct ExpertRow {
  int64_t step = 0;
  std::vector<double> load;           // [n_moe_layers * n_routed] tokens per expert
  std::vector<double> max_violation;  // [n_moe_layers]
  std::vector<double> dropped;        // [n_moe_layers]
  std::vector<double> bias;           // [n_moe_layers * n_routed], only when with_bias
};

class MetricsWriter {
 public:
  // Creates `path`, or with `resume_after_step >= 0` opens the existing file and drops rows
  // whose step is greater than it (they are recomputed by the resumed run). All datasets
  // are created before SWMR writing starts. A file that cannot be resumed (missing, not
  // HDF5, other datasets or shapes) is replaced by a new one. The train/rank/* datasets have
  // a column per rank of the largest world size of the run: resumed on more ranks, the earlier
  // rows read NaN in the new columns; on fewer, the new rows do in the columns past them.
  MetricsWriter(const std::string& path, const RunInfo& info, int64_t resume_after_step = -1);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void append_train(const TrainRow& row);
  void append_eval(int64_t step, double loss);
  void append_experts(const ExpertRow& row);  // no-op without MoE layers (no /experts group)
  void flush();  // H5Fflush: everything appended so far survives a crash

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsmoe
