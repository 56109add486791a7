#include "backend/select.h"

#include <cstdlib>
#include <filesystem>

#include "backend/blas_select.h"
#include "backend/cpu_backend.h"
#include "backend/cuda_loader.h"
#include "backend/threads.h"
#include "util/check.h"
#include "util/host_info.h"
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

// What this node lacks for a GPU per rank, "" when nothing.
std::string gpu_shortfall(int ranks, int gpus) {
  if (gpus >= ranks) return "";
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return cat("node ", host_name(), " runs ", ranks, " rank(s) and sees ", gpus, " GPU(s)",
             visible ? cat(" (CUDA_VISIBLE_DEVICES=", visible, ")") : std::string());
}

}  // namespace

std::vector<std::string> visible_gpus() {
  std::vector<std::string> gpus;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string entry;
    for (const char* c = visible;; ++c) {
      if (*c == ',' || *c == '\0') {
        if (!entry.empty()) gpus.push_back(entry);
        entry.clear();
        if (*c == '\0') break;
      } else if (*c != ' ') {
        entry += *c;
      }
    }
    return gpus;
  }
  const int count = gpu_device_nodes() ? cuda_device_count() : 0;
  for (int g = 0; g < count; ++g) gpus.push_back(std::to_string(g));
  return gpus;
}

bool use_gpus(const std::string& backend, bool every_node_fits, bool any_gpu, const std::string& shortfall) {
  if (backend == "cpu") return false;
  if (every_node_fits) return true;
  DSMOE_CHECK(backend != "cuda", "backend: cuda needs a GPU per rank, but ",
              shortfall.empty() ? std::string("another node has fewer GPUs than ranks") : shortfall,
              ": run at most as many ranks per node as it has GPUs, or set backend: cpu");
  if (any_gpu)
    log_info("backend auto: every rank runs on the CPU, since ",
             shortfall.empty() ? std::string("a node has fewer GPUs than ranks") : shortfall);
  return false;
}

std::unique_ptr<Backend<float>> make_backend(const std::string& backend, Comm& world, const std::string& precision,
                                             ThreadPlan* threads) {
  std::unique_ptr<Comm> node = make_node_comm();
  ThreadPlan plan = plan_threads(*node);
  fit_blas_threads(plan.threads);
  plan.blas = blas_description();
  double over = plan.oversubscribed ? 1 : 0;
  world.allreduce_max(&over, 1);
  plan.any_node_oversubscribed = over > 0;
  if (threads) *threads = plan;
  const int gpus = backend != "cpu" && gpu_device_nodes() ? cuda_device_count() : 0;
  const std::string shortfall = gpu_shortfall(node->size(), gpus);
  double seen[2] = {shortfall.empty() ? 0.0 : 1.0, gpus > 0 ? 1.0 : 0.0};  // a node short of GPUs; a GPU
  world.allreduce_max(seen, 2);
  if (use_gpus(backend, seen[0] == 0, seen[1] > 0, shortfall))
    return make_cuda_backend(local_rank(), precision == "bf16");
  DSMOE_CHECK(precision == "fp32", "precision ", precision, " needs the CUDA backend, and this run uses the CPU");
  return make_cpu_backend<float>();
}

}  // namespace dsmoe
