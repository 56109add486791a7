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

void fit_blas_threads() {
  constexpr int kPthreads = 1;  // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP
  if (openblas_get_parallel() == kPthreads && std::getenv("OPENBLAS_NUM_THREADS") == nullptr)
    openblas_set_num_threads(1);
}

}  // namespace dsmoe
