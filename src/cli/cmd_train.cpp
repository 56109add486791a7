#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "comm/comm.h"
#include "train/trainer.h"

namespace dsmoe {

int cmd_train(int argc, char** argv) {
  Args args(argc, argv, 2, {}, {});
  if (args.help() || args.positional().size() != 1) {
    std::fputs(
        "usage: dsmoe train CONFIG [--set key=value ...]\n"
        "Trains the model of CONFIG (YAML, see shared/spec/CONFIG.md). Writes OUT/metrics.h5,\n"
        "OUT/checkpoint.h5 and OUT/config.yaml; if OUT/checkpoint.h5 exists the run resumes\n"
        "from it and continues exactly as if it had not stopped.\n",
        args.help() ? stdout : stderr);
    return args.help() ? 0 : 2;
  }
  Config cfg = load_config(args.positional()[0], args.overrides());
  auto comm = make_single_comm();
  run_training(cfg, *comm);
  return 0;
}

}  // namespace dsmoe
