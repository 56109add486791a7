#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "comm/comm.h"
#include "train/run_presence.h"
#include "train/stop_signal.h"
#include "train/trainer.h"
#include "util/check.h"

namespace dsmoe {
namespace {

const char* kUsage =
    "usage: dsmoe train CONFIG [--set key=value ...] [--stop-after N] [--max-skipped-steps K]\n"
    "                   [--watchdog SECONDS]\n"
    "Trains the model of CONFIG (the YAML keys: docs/config.md; the model: docs/model.md).\n"
    "Writes OUT/metrics.h5, OUT/checkpoint.h5 and OUT/config.yaml; if OUT/checkpoint.h5\n"
    "exists the run resumes from it and continues exactly as if it had not stopped.\n"
    "--stop-after N ends this invocation after N steps with a checkpoint (to fit a time slot).\n"
    "Ctrl-C (SIGINT), SIGUSR1 or SIGTERM does the same after the current step and exits with\n"
    "code 75 (requeue, docs/slurm.md); a second Ctrl-C within 5 s stops at once, losing the\n"
    "steps since the last checkpoint. While it trains, OUT/running names the process (dsmoe\n"
    "status reads it); an error is recorded in OUT/failed.\n"
    "A step with a non-finite loss or gradient norm is skipped (no update); more than K\n"
    "(default 10) in a row stop the run with an error. --watchdog S ends the job when a rank\n"
    "makes no progress for S seconds (a stalled or dead rank; default off).\n";

int run(const Args& args) {
  Config cfg = load_config(args.positional()[0], args.overrides());
  DSMOE_CHECK(!cfg.moe.force_balance, args.positional()[0], ": moe.force_balance ignores the router's choices, so the "
              "model would not learn to route; it is for dsmoe bench (--force-balance)");
  auto comm = make_world_comm();
  TrainOptions opts;
  opts.stop_after = args.get_int("stop-after", 0);
  DSMOE_CHECK(opts.stop_after >= 0, "--stop-after must be >= 0");
  opts.max_skipped_steps = args.get_int("max-skipped-steps", 10);
  DSMOE_CHECK(opts.max_skipped_steps >= 0, "--max-skipped-steps must be >= 0");
  opts.watchdog_s = args.get_double("watchdog", 0);
  DSMOE_CHECK(opts.watchdog_s >= 0, "--watchdog must be >= 0");
  StopSignals signals;
  RunPresence presence(cfg.out, comm->rank() == 0);
  try {
    return run_training(cfg, *comm, opts).stop_signal ? kRequeueExitCode : 0;
  } catch (const std::exception& e) {
    presence.failed(e.what());
    throw;
  }
}

}  // namespace

const Command kTrainCommand = {"train",
                               "CONFIG [--set key=value ...]",
                               "train (resumes from OUT/checkpoint.h5 if present)",
                               kUsage,
                               {"stop-after", "max-skipped-steps", "watchdog"},
                               {},
                               one_input,
                               run,
                               false};

}  // namespace dsmoe
