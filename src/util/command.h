// Running a shell command and capturing its standard output (sbatch, squeue, sacct).
#pragma once
#include <string>

namespace dsmoe {

struct CommandResult {
  int exit_code = -1;  // -1 when it could not run or did not exit normally; 127: not found
  std::string output;  // standard output; standard error passes through to ours
};

CommandResult run_command(const std::string& shell_command);

}  // namespace dsmoe
