#include "backend/select.h"

#include <omp.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "backend/cpu_backend.h"
#include "backend/cuda_loader.h"
#include "util/check.h"
#include "util/log.h"

namespace dsmoe {
namespace {

// Without the NVIDIA device nodes there is no GPU, and `auto` need not load the CUDA libraries.
bool gpu_device_nodes() {
  return std::filesystem::exists("/dev/nvidiactl") || std::filesystem::exists("/dev/nvidia0");
}

int local_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}

}  // namespace

std::unique_ptr<Backend<float>> make_backend(const std::string& backend, int ranks_on_node,
                                             const std::string& precision) {
  const bool cuda = backend == "cuda" || (backend == "auto" && gpu_device_nodes() && cuda_available());
  share_cpu_cores(ranks_on_node);  // host threads: the CPU backend's, or the router's beside a GPU
  if (cuda) {
    // mpirun binds each of 2 or fewer ranks to one core by default; the router then runs serially.
    if (omp_get_num_procs() == 1 && std::thread::hardware_concurrency() > 1)
      log_info("this rank may use 1 CPU core of ", std::thread::hardware_concurrency(),
               ": give it more (mpirun --bind-to none or --map-by slot:PE=N, srun --cpus-per-task=N)");
    return make_cuda_backend(local_rank(), precision == "bf16");
  }
  DSMOE_CHECK(backend != "cuda", "backend: cuda was asked for but is not available");
  DSMOE_CHECK(precision == "fp32", "precision ", precision, " needs the CUDA backend, and this run uses the CPU");
  return make_cpu_backend<float>();
}

}  // namespace dsmoe
