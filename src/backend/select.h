// Picks the backend of a run: `cpu`, `cuda`, or `auto` (CUDA when a GPU is present).
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"

namespace dsmoe {

// ranks_on_node shares the CPU cores; the GPU is chosen by the node-local rank
// (OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID). Throws naming `backend` when it cannot be had.
std::unique_ptr<Backend<float>> make_backend(const std::string& backend, int ranks_on_node,
                                             const std::string& precision = "fp32");

}  // namespace dsmoe
