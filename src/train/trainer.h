// `dsmoe train`: the training loop with progress, evaluation, metrics.h5, checkpoints and
// resume from the run's own checkpoint.
#pragma once
#include "comm/comm.h"
#include "config/config.h"

namespace dsmoe {

struct TrainSummary {
  int64_t steps_run = 0;  // steps taken by this invocation
  double final_loss = 0;
  double final_eval_loss = 0;
  int stop_signal = 0;  // the signal that stopped this invocation before train.steps, 0 if none
  int64_t skipped_steps = 0;  // steps of this invocation whose update was skipped
};

struct TrainOptions {
  // > 0: end this invocation after that many steps, with a checkpoint, so a later `dsmoe train`
  // of the same config continues where it stopped. A stop signal (stop_signal.h) does the same
  // after the step it arrived in.
  int64_t stop_after = 0;
  // More steps than this in a row with a non-finite loss or gradient norm (whose updates are
  // skipped) stop the run with an error.
  int64_t max_skipped_steps = 10;
  // > 0: seconds without progress after which the rank ends the job (watchdog.h).
  double watchdog_s = 0;
};

TrainSummary run_training(const Config& cfg, Comm& comm, const TrainOptions& opts = {});

}  // namespace dsmoe
