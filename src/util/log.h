// Progress and diagnostics. Only the process marked as the logging rank prints info lines;
// errors are printed by every rank, prefixed with the rank when there is more than one.
#pragma once
#include <string>

#include "util/check.h"

namespace dsmoe {

void set_log_rank(int rank, int world_size);
bool is_log_rank();
void log_line(const std::string& line);        // stdout, logging rank only, flushed
void log_error(const std::string& line);       // stderr, every rank

template <typename... Args>
void log_info(const Args&... args) {
  if (is_log_rank()) log_line(cat(args...));
}

}  // namespace dsmoe
