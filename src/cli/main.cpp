#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "backend/blas_select.h"
#include "cli/commands.h"
#include "util/check.h"
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
    "\n"
    "`dsmoe <command> --help` describes each command.\n";

}  // namespace

int main(int argc, char** argv) {
  dsmoe::select_blas_kernels(argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "train") return dsmoe::cmd_train(argc, argv);
    if (cmd == "eval") return dsmoe::cmd_eval(argc, argv);
    if (cmd == "generate") return dsmoe::cmd_generate(argc, argv);
    if (cmd == "info") return dsmoe::cmd_info(argc, argv);
    if (cmd == "data") return dsmoe::cmd_data(argc, argv);
    if (cmd == "bench") return dsmoe::cmd_bench(argc, argv);
    std::fprintf(stderr, "dsmoe: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    dsmoe::log_error(e.what());
    return 1;
  }
}
