// The host libraries' settings that they read only when they load, so the executable re-executes
// itself once with them set (each only where the user has not set it):
// - OPENBLAS_CORETYPE=SkylakeX: OpenBLAS 0.3.21 (Debian 12) does not know recent AVX-512 CPUs
//   such as AMD Zen 5 and falls back to its AVX2 (Haswell) kernels, which run sgemm at about 60%
//   of the speed of its SkylakeX kernels on the same cores.
// - OMP_WAIT_POLICY=passive with a pthread OpenBLAS: its threads run the products between our
//   OpenMP regions (fit_blas_threads), where libgomp's workers would otherwise spin on the same
//   cores (docs/parallel.md, Host threads per rank, has the measurement).
#pragma once
#include <string>

namespace dsmoe {

// Call first thing in main(). Returns only when no re-exec is needed (or it failed).
void set_blas_environment(char** argv);

// A pthread OpenBLAS keeps a thread pool of its own beside OpenMP's. It gets the rank's `threads`
// for the products called outside parallel regions (unless OPENBLAS_NUM_THREADS says otherwise),
// and one thread inside them (OneBlasThread), where its threads would nest in OpenMP's and
// oversubscribe the cores. The OpenMP OpenBLAS, which the build prefers, shares OpenMP's threads
// and runs single-threaded inside a parallel region by itself.
void fit_blas_threads(int threads);

// Whether OpenBLAS's threads are ours to set (a pthread build, OPENBLAS_NUM_THREADS not set), and
// how many it runs a product on now.
bool blas_threads_are_ours();
int blas_threads();

// What the start-up line says of BLAS: the library, its kernels, its build and its threads.
std::string blas_description();

// While alive, a pthread OpenBLAS runs each product on one thread: around the parallel regions
// that call BLAS (the CPU attention's per-head products). Nothing for the other builds or where
// OPENBLAS_NUM_THREADS is set.
class OneBlasThread {
 public:
  OneBlasThread();
  ~OneBlasThread();
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  int before_ = 0;  // the threads to restore; 0: nothing changed
};

}  // namespace dsmoe
