#include "backend/blas_select.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace dsmoe {

void select_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's (or our earlier) choice
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const char* core = openblas_get_corename();
  const bool generic = core != nullptr && (!std::strcmp(core, "Haswell") || !std::strcmp(core, "Zen"));
  if (!avx512 || !generic) return;
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  execv("/proc/self/exe", argv);  // on failure, carry on with the kernels we have
}

}  // namespace dsmoe
