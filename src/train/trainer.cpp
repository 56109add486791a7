#include "train/trainer.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <type_traits>

#include "io/checkpoint.h"
#include "io/metrics.h"
#include "model/flops.h"
#include "train/engine.h"
#include "train/loss_spikes.h"
#include "train/watchdog.h"
#include "train/stop_signal.h"
#include "util/host_info.h"
#include "util/log.h"
#include "util/timer.h"
#include "util/version.h"

namespace dsmoe {
namespace {

std::string human_duration(double s) {
  char buf[32];
  int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", (long)(t / 3600), (long)(t % 3600 / 60));
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", (long)(t / 60), (long)(t % 60));
  return buf;
}

void print_parameter_table(const Config& cfg) {
  ModelCount c = count_model(cfg);
  for (const std::string& line : parameter_table(c)) log_info(line);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", c.flops_per_token);
  log_info("training FLOPs per token: ", buf);
}

ExpertRow expert_row(const Config& cfg, int64_t step, const StepStats& st,
                     const std::vector<std::vector<float>>& bias) {
  ExpertRow row;
  row.step = step;
  row.load = st.load;
  row.dropped = st.dropped;
  row.max_violation = layer_max_violations(st, cfg.moe.n_routed);
  if (cfg.balance.bias_rate > 0)
    for (const auto& b : bias) row.bias.insert(row.bias.end(), b.begin(), b.end());
  return row;
}

// Every rank's own values of the step, in rank order, on rank 0 (empty on the others); every rank
// calls it. Only logged steps need them: one small gather then, none in the other steps.
std::vector<RankStats> gather_rank_stats(Comm& comm, const RankStats& own) {
  static_assert(std::is_trivially_copyable_v<RankStats>, "gathered as bytes");
  std::vector<RankStats> all(comm.rank() == 0 ? static_cast<size_t>(comm.size()) : 0);
  comm.gather(&own, sizeof own, all.data(), 0);
  return all;
}

}  // namespace

TrainSummary run_training(const Config& cfg_in, Comm& comm, const TrainOptions& opts) {
  Engine engine(cfg_in, comm);
  engine.check_evaluation_fits();  // every run evaluates at its last step: fail now, not then
  const Config& cfg = engine.config();
  const std::string out = cfg.out;
  std::filesystem::create_directories(out);
  const std::string ckpt = out + "/checkpoint.h5";

  bool resumed = false;
  const bool had_metrics = std::filesystem::exists(out + "/metrics.h5");
  if (std::filesystem::exists(ckpt)) {
    try {
      engine.load_checkpoint(ckpt);
    } catch (const Error& e) {
      throw Error(cat("cannot resume from ", ckpt, ": ", e.what(),
                      " (move it away or set a new `out` to start a fresh run)"));
    }
    resumed = true;
  }
  if (comm.rank() == 0) {
    std::ofstream f(out + "/config.yaml");
    f << to_yaml(cfg);
    DSMOE_CHECK(f.good(), out, "/config.yaml: cannot write");
  }

  const ModelCount counts = count_model(cfg);
  std::unique_ptr<MetricsWriter> metrics;
  const std::string device = device_description(engine.backend().name());
  if (comm.rank() == 0) {
    RunInfo info;
    info.config_yaml = to_yaml(cfg);
    info.params_total = counts.params_total;
    info.params_active = counts.params_active;
    info.flops_per_token = counts.flops_per_token;
    info.world_size = comm.size();
    info.backend = engine.backend().name();
    info.n_moe_layers = cfg.n_moe_layers();
    info.n_routed = cfg.moe.n_routed;
    info.with_bias = cfg.balance.bias_rate > 0;
    info.source_version = source_version();
    info.device = device;
    info.host = host_name();
    info.command = command_line();
    info.started = utc_now();
    info.from_step = resumed ? engine.step() : 0;
    metrics = std::make_unique<MetricsWriter>(out + "/metrics.h5", info, resumed ? engine.step() : -1);
  }

  log_info("dsmoe ", source_version(), " on ", host_name(), ", ", device);
  log_info("dsmoe train: ", cfg.name, " (", cfg.source, ") on ", comm.size(), " rank(s), backend ",
           engine.backend().name(), ", ", cfg.train.steps, " steps of ", engine.tokens_per_step(), " tokens");
  for (const std::string& line : thread_notes(engine.threads())) log_info(line);
  print_parameter_table(cfg);
  if (resumed) log_info("resuming from ", ckpt, " at step ", engine.step());
  else if (had_metrics)
    log_info("no checkpoint in ", out, ": starting from step 0 (the metrics of the earlier start are replaced)");

  TrainSummary summary;
  bool evaluated = false;
  const double t_start = now_seconds();
  const int64_t first_step = engine.step();
  StepStats st;
  int64_t consecutive_skips = 0, skipped_since_row = 0;
  LossSpikes spikes;
  Watchdog watchdog(opts.watchdog_s);
  while (engine.step() < cfg.train.steps) {
    watchdog.beat(cat("step ", engine.step() + 1));
    st = engine.train_step();
    const int64_t s = engine.step();
    if (st.skipped) {
      summary.skipped_steps++;
      skipped_since_row++;
      consecutive_skips++;
      log_info("step ", s, ": non-finite loss (", st.loss, ") or gradient norm (", st.grad_norm,
               "): update skipped (", consecutive_skips, " in a row)");
      DSMOE_CHECK(consecutive_skips <= opts.max_skipped_steps, consecutive_skips,
                  " steps in a row had a non-finite loss or gradient norm (--max-skipped-steps ", opts.max_skipped_steps,
                  "), at step ", s, "; the last checkpoint is ", ckpt);
    } else {
      consecutive_skips = 0;
      double z = 0;
      if (spikes.add(st.loss, &z)) log_info("step ", s, ": loss spike: ", st.loss, " (z-score ", z, ")");
    }
    summary.steps_run++;
    summary.final_loss = st.loss;
    double signal_seen = stop_signal();  // every rank stops at the same step, whichever got the signal
    comm.allreduce_max(&signal_seen, 1);
    const bool stop = (opts.stop_after > 0 && summary.steps_run == opts.stop_after) || signal_seen > 0;
    const bool last = s == cfg.train.steps;
    if (s % cfg.train.log_every == 0 || last) {
      const double elapsed = now_seconds() - t_start;
      const double per_step = elapsed / static_cast<double>(s - first_step);
      const double tok_s = engine.tokens_per_step() / st.t_step;
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %ld/%ld | loss %.4f | aux %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | eta %s", (long)s,
                    (long)cfg.train.steps, st.loss, st.aux_loss, st.lr, st.grad_norm, tok_s,
                    human_duration(per_step * static_cast<double>(cfg.train.steps - s)).c_str());
      log_info(line);
      std::vector<RankStats> ranks = gather_rank_stats(comm, st.own);
      if (metrics) {
        TrainRow row{s,           st.loss,        st.aux_loss,  st.lr,         st.grad_norm,
                     s * engine.tokens_per_step(), tok_s, st.t_step,    st.t_compute,  st.t_dispatch,
                     st.t_combine, st.t_allreduce,  st.bytes_sent, st.recv_imbalance,
                     skipped_since_row, std::move(ranks)};
        metrics->append_train(row);
        skipped_since_row = 0;
        if (cfg.n_moe_layers() > 0) metrics->append_experts(expert_row(cfg, s, st, engine.model().bias()));
      }
    }
    if ((cfg.train.eval_every > 0 && s % cfg.train.eval_every == 0) || last) {
      watchdog.beat(cat("the evaluation after step ", s));
      const double ev = engine.evaluate();
      summary.final_eval_loss = ev;
      evaluated = true;
      char line[96];
      std::snprintf(line, sizeof line, "eval step %ld | val loss %.4f", (long)s, ev);
      log_info(line);
      if (metrics) metrics->append_eval(s, ev);
    }
    if (metrics) metrics->flush();
    if ((cfg.train.checkpoint_every > 0 && s % cfg.train.checkpoint_every == 0) || last || stop)
    {
      watchdog.beat(cat("the checkpoint after step ", s));
      engine.save_checkpoint(ckpt, st);
      if (comm.rank() == 0 && cfg.train.keep_checkpoints > 0)
        keep_checkpoint(ckpt, s, cfg.train.keep_checkpoints);
    }
    if (stop && !last) {
      summary.stop_signal = static_cast<int>(signal_seen);
      log_info("stopping after ",
               signal_seen > 0 ? cat("signal ", summary.stop_signal) : cat(opts.stop_after, " steps (--stop-after)"),
               "; `dsmoe train` again resumes at step ", s);
      break;
    }
  }
  if (summary.steps_run == 0) {
    log_info("nothing to do: ", ckpt, " is already at step ", engine.step(), " of ", cfg.train.steps);
    return summary;
  }
  const double elapsed = now_seconds() - t_start;
  char line[256];
  std::snprintf(line, sizeof line, "done: %ld steps in %s (%.0f tok/s), final loss %.4f", (long)summary.steps_run,
                human_duration(elapsed).c_str(), summary.steps_run * engine.tokens_per_step() / elapsed,
                summary.final_loss);
  log_info(line, evaluated ? cat(", val loss ", summary.final_eval_loss) : std::string());
  log_info("metrics:    ", out, "/metrics.h5");
  log_info("checkpoint: ", ckpt);
  log_info("config:     ", out, "/config.yaml");
  return summary;
}

}  // namespace dsmoe
