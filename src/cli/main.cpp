#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "backend/blas_select.h"
#include "cli/commands.h"
#include "comm/comm.h"
#include "util/check.h"
#include "util/host_memory.h"
#include "util/log.h"

namespace {

const char* kUsage =
    "usage: dsmoe <command> [options]\n"
    "\n"
    "commands:\n"
    "  train CONFIG [--set key=value ...]     train (resumes from OUT/checkpoint.h5 if present)\n"
    "  eval --checkpoint CK [--data PATH]     validation loss of a checkpoint\n"
    "  generate --checkpoint CK --prompt TEXT sample text from a checkpoint\n"
    "  info CONFIG [--set ...]                parameters, FLOPs per token, memory estimate\n"
    "  data prepare [--out PATH] [--force]    prepare the default corpus (GCIDE)\n"
    "  bench CONFIG [--steps N --warmup W]    measure training throughput\n"
    "  sweep EXPERIMENT [--dry-run]           run (or list) the runs of an experiment file\n"
    "  analyze RUNS/EXPERIMENT                compare a sweep's variants over seeds (t intervals,\n"
    "                                         paired differences, verdicts); CSVs, summary.h5\n"
    "  submit EXPERIMENT --partition P ...   the runs as a Slurm job array (sbatch)\n"
    "  status RUNS/EXPERIMENT                 every run: done, running, pending, failed, stopped,\n"
    "                                         not started\n"
    "  simulate CONFIG --gpus G ...           predict step time, traffic and memory at scale\n"
    "\n"
    "`dsmoe <command> --help` describes each command.\n";

}  // namespace

int main(int argc, char** argv) {
  dsmoe::keep_freed_host_memory();
  dsmoe::select_blas_kernels(argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  int code = 2;
  try {
    if (cmd == "train") code = dsmoe::cmd_train(argc, argv);
    else if (cmd == "eval") code = dsmoe::cmd_eval(argc, argv);
    else if (cmd == "generate") code = dsmoe::cmd_generate(argc, argv);
    else if (cmd == "info") code = dsmoe::cmd_info(argc, argv);
    else if (cmd == "data") code = dsmoe::cmd_data(argc, argv);
    else if (cmd == "bench") code = dsmoe::cmd_bench(argc, argv);
    else if (cmd == "sweep") code = dsmoe::cmd_sweep(argc, argv);
    else if (cmd == "analyze") code = dsmoe::cmd_analyze(argc, argv);
    else if (cmd == "submit") code = dsmoe::cmd_submit(argc, argv);
    else if (cmd == "status") code = dsmoe::cmd_status(argc, argv);
    else if (cmd == "simulate") code = dsmoe::cmd_simulate(argc, argv);
    else std::fprintf(stderr, "dsmoe: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  } catch (const std::exception& e) {
    dsmoe::log_error(e.what());  // names the rank when there are several
    dsmoe::abort_job(1);
  }
  dsmoe::finalize_comm();
  return code;
}
