// Helpers shared by the tests: temporary directories, running the dsmoe binary, reading files.
#pragma once
#include <string>

#include "util/check.h"

namespace dsmoe::test {

// A fresh empty directory under the build's temp area, removed when the object dies.
struct TempDir {
  TempDir();
  ~TempDir();
  std::string path;
  std::string file(const std::string& name) const { return path + "/" + name; }
};

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs `DSMOE_BIN args` through the shell, capturing output.
RunResult run_dsmoe(const std::string& args);
// Runs a shell command and returns its standard output.
std::string run_command(const std::string& cmd);
// Runs a shell command; its exit code and standard output.
RunResult run_command_result(const std::string& cmd);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);

// The message of the dsmoe::Error that f() throws, or "(no error)".
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace dsmoe::test
