#include <algorithm>
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

// `dsmoe --help`: every command, its arguments and what it does.
std::string usage() {
  std::string out = "usage: dsmoe <command> [options]\n\ncommands:\n";
  for (const dsmoe::Command* c : dsmoe::commands()) {
    std::string line = std::string("  ") + c->name + " " + c->synopsis;
    line.resize(std::max<size_t>(line.size() + 1, 41), ' ');
    out += line + c->summary + "\n";
  }
  return out + "\n`dsmoe <command> --help` describes each command.\n";
}

// Parses the command's arguments, prints its usage where asked or needed, and runs it.
int run_command(const dsmoe::Command& c, int argc, char** argv) {
  const dsmoe::Args args(argc, argv, 2, c.options, c.flags);
  DSMOE_CHECK(c.takes_rest || args.rest().empty(), "dsmoe ", c.name, " takes no arguments after --");
  int code = 0;
  if (args.show_usage(c.well_formed(args), c.usage, &code)) return code;
  return c.run(args);
}

}  // namespace

int main(int argc, char** argv) {
  dsmoe::keep_freed_host_memory();
  dsmoe::set_blas_environment(argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(usage().c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  int code = 2;
  try {
    const auto& all = dsmoe::commands();
    const auto it = std::find_if(all.begin(), all.end(), [&](const dsmoe::Command* c) { return name == c->name; });
    if (it != all.end())
      code = run_command(**it, argc, argv);
    else
      std::fprintf(stderr, "dsmoe: unknown command '%s'\n\n%s", name.c_str(), usage().c_str());
  } catch (const std::exception& e) {
    dsmoe::log_error(e.what());  // names the rank when there are several
    dsmoe::abort_job(1);
  }
  dsmoe::finalize_comm();
  return code;
}
