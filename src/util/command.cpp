#include "util/command.h"

#include <sys/wait.h>

#include <cstdio>

namespace dsmoe {

CommandResult run_command(const std::string& shell_command) {
  CommandResult r;
  FILE* pipe = popen(shell_command.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) r.output.append(buf, n);
  const int status = pclose(pipe);
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

}  // namespace dsmoe
