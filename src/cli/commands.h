// The subcommands of the dsmoe executable. Each returns the process exit code and throws
// dsmoe::Error for user-facing failures (main prints it and exits 1).
#pragma once

namespace dsmoe {

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_data(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_sweep(int argc, char** argv);
int cmd_analyze(int argc, char** argv);
int cmd_submit(int argc, char** argv);
int cmd_status(int argc, char** argv);
int cmd_simulate(int argc, char** argv);

}  // namespace dsmoe
