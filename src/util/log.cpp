#include "util/log.h"

#include <cstdio>

namespace dsmoe {
namespace {
int g_rank = 0;
int g_world = 1;
}  // namespace

void set_log_rank(int rank, int world_size) {
  g_rank = rank;
  g_world = world_size;
}

bool is_log_rank() { return g_rank == 0; }

void log_line(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void log_error(const std::string& line) {
  if (g_world > 1)
    std::fprintf(stderr, "dsmoe: rank %d: %s\n", g_rank, line.c_str());
  else
    std::fprintf(stderr, "dsmoe: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace dsmoe
