// Picks the backend of a run, the same on every rank before any collective: `cpu`, `cuda` (a GPU
// per rank: every node must see at least as many GPUs as it has ranks, or every rank stops with
// the counts), or `auto` (CUDA where every node has a GPU per rank, else the CPU on every rank,
// and the run says why). Also sets each rank's host threads (backend/threads.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/threads.h"
#include "comm/comm.h"

namespace dsmoe {

// world: every rank of the job (collective). The GPU of a rank is its node-local rank's
// (OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID). Throws naming `backend` when it cannot be had.
// `threads`, where given, gets the host threads chosen (thread_notes says them).
std::unique_ptr<Backend<float>> make_backend(const std::string& backend, Comm& world,
                                             const std::string& precision = "fp32", ThreadPlan* threads = nullptr);

// The decision itself: whether the ranks use their GPUs, from the backend asked for, whether
// every node sees a GPU per rank and whether any GPU is seen; throws for `cuda` where a node falls
// short, with `shortfall` (what this rank's node lacks, or "" where it is another node).
bool use_gpus(const std::string& backend, bool every_node_fits, bool any_gpu, const std::string& shortfall);

// The GPUs a process started here may use, as CUDA_VISIBLE_DEVICES names them: its entries where
// it is set (none where it is empty), else 0 .. the device count - 1 (none without the NVIDIA
// device nodes or the CUDA backend).
std::vector<std::string> visible_gpus();

}  // namespace dsmoe
