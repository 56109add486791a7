// Stopping `dsmoe train` cleanly on request: SIGUSR1 (Slurm's warning before the time limit,
// see jobs/run.sbatch), SIGTERM (preemption, scancel, `dsmoe sweep` stopping its runs) or SIGINT
// (Ctrl-C in a terminal) only set a flag; the training loop finishes its step, writes the
// checkpoint, flushes the metrics and exits with kRequeueExitCode. A second SIGINT within
// kSecondInterruptSeconds of the first ends the process at once (exit code 130), saying that
// the steps since the last checkpoint are lost.
#pragma once

namespace dsmoe {

// The exit code of a run stopped by a signal after checkpointing: "temporary failure, run me
// again" (EX_TEMPFAIL). jobs/run.sbatch requeues the job on it.
constexpr int kRequeueExitCode = 75;

// How soon a second Ctrl-C must follow the first to stop at once.
constexpr int kSecondInterruptSeconds = 5;

// While alive, SIGUSR1, SIGTERM and SIGINT set the stop flag instead of ending the process.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

// The signal that asked to stop, 0 if none.
int stop_signal();

}  // namespace dsmoe
