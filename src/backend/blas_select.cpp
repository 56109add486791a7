#include "backend/blas_select.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace dsmoe {

bool blas_threads_are_ours() {
  constexpr int kPthreads = 1;  // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP
  return openblas_get_parallel() == kPthreads && std::getenv("OPENBLAS_NUM_THREADS") == nullptr;
}

int blas_threads() { return openblas_get_num_threads(); }

std::string blas_description() {
  const char* core = openblas_get_corename();
  std::string out = std::string("OpenBLAS (") + (core ? core : "?") + " kernels, ";
  switch (openblas_get_parallel()) {
    case 0:
      return out + "sequential build)";
    case 2:
      return out + "OpenMP build): shares the threads above";
    default: {
      const char* wait = std::getenv("OMP_WAIT_POLICY");
      out += "pthread build): " + std::to_string(blas_threads()) + " thread(s)";
      if (!blas_threads_are_ours()) return out + " (OPENBLAS_NUM_THREADS)";
      return out + " between parallel regions, 1 inside" +
             (wait ? std::string(", OMP_WAIT_POLICY=") + wait : std::string());
    }
  }
}

void set_blas_environment(char** argv) {
  bool changed = false;
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {  // else the user's (or our earlier) choice
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const char* core = openblas_get_corename();
    const bool generic = core != nullptr && (!std::strcmp(core, "Haswell") || !std::strcmp(core, "Zen"));
    if (avx512 && generic) changed = setenv("OPENBLAS_CORETYPE", "SkylakeX", 1) == 0;
  }
  if (blas_threads_are_ours() && std::getenv("OMP_WAIT_POLICY") == nullptr)
    changed = setenv("OMP_WAIT_POLICY", "passive", 1) == 0 || changed;
  if (changed) execv("/proc/self/exe", argv);  // on failure, carry on as we are
}

void fit_blas_threads(int threads) {
  if (blas_threads_are_ours()) openblas_set_num_threads(threads > 0 ? threads : 1);
}

OneBlasThread::OneBlasThread() {
  if (!blas_threads_are_ours() || openblas_get_num_threads() <= 1) return;
  before_ = openblas_get_num_threads();
  openblas_set_num_threads(1);
}

OneBlasThread::~OneBlasThread() {
  if (before_ > 0) openblas_set_num_threads(before_);
}

}  // namespace dsmoe
