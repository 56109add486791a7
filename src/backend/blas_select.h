// OpenBLAS 0.3.21 (Debian 12) does not know recent AVX-512 CPUs such as AMD Zen 5 and falls
// back to its AVX2 (Haswell) kernels, which run sgemm at about 60% of the speed of its
// SkylakeX kernels on the same cores. OpenBLAS reads OPENBLAS_CORETYPE only when it loads, so
// the executable re-executes itself once with the variable set.
#pragma once

namespace dsmoe {

// Call first thing in main(). Returns only when no re-exec is needed (or it failed).
void select_blas_kernels(char** argv);

// A pthread OpenBLAS keeps a thread pool of its own beside OpenMP's: its threads would nest inside
// our parallel regions and oversubscribe the cores, so it is made single-threaded (unless
// OPENBLAS_NUM_THREADS says otherwise). The OpenMP OpenBLAS, which the build prefers, shares
// OpenMP's threads and runs single-threaded inside a parallel region by itself.
void fit_blas_threads();

}  // namespace dsmoe
