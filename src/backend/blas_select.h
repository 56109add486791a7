// OpenBLAS 0.3.21 (Debian 12) does not know recent AVX-512 CPUs such as AMD Zen 5 and falls
// back to its AVX2 (Haswell) kernels, which run sgemm at about 60% of the speed of its
// SkylakeX kernels on the same cores. OpenBLAS reads OPENBLAS_CORETYPE only when it loads, so
// the executable re-executes itself once with the variable set.
#pragma once

namespace dsmoe {

// Call first thing in main(). Returns only when no re-exec is needed (or it failed).
void select_blas_kernels(char** argv);

}  // namespace dsmoe
