// One error type and one check macro for the whole project. Backend-specific checks
// (CUDA_CHECK, NCCL_CHECK, MPI_CHECK) derive from DSMOE_CHECK by turning their status
// code into a condition and a message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dsmoe {

// Every user-facing failure is an Error; the CLI prints what() and exits non-zero.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream ss;
  (ss << ... << args);
  return ss.str();
}

}  // namespace dsmoe

#define DSMOE_CHECK(cond, ...)                                  \
  do {                                                          \
    if (!(cond)) throw ::dsmoe::Error(::dsmoe::cat(__VA_ARGS__)); \
  } while (0)

// Internal invariants: a failure is a bug in dsmoe, not bad input.
#define DSMOE_ASSERT(cond)                                                                 \
  DSMOE_CHECK(cond, "internal error: ", #cond, " failed at ", __FILE__, ":", __LINE__)
