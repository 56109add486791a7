// Stopping `dsmoe train` cleanly on request: SIGUSR1 (Slurm's warning before the time limit,
// see jobs/run.sbatch) or SIGTERM (preemption, scancel) only set a flag; the training loop
// finishes its step, writes the checkpoint, flushes the metrics and exits with kRequeueExitCode.
#pragma once

namespace dsmoe {

// The exit code of a run stopped by a signal after checkpointing: "temporary failure, run me
// again" (EX_TEMPFAIL). jobs/run.sbatch requeues the job on it.
constexpr int kRequeueExitCode = 75;

// While alive, SIGUSR1 and SIGTERM set the stop flag instead of ending the process.
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
