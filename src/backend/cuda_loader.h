// The CUDA backend lives in its own shared library (libdsmoe_cuda.so, beside the executable),
// opened only when a run asks for a GPU: CPU runs and tests never load the CUDA libraries,
// which add seconds to every process start.
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"
#include "comm/comm.h"

namespace dsmoe {

// Whether the library loads and sees a GPU; otherwise *why says what is missing.
bool cuda_available(std::string* why = nullptr);
// The GPUs this process sees (0 without the library).
int cuda_device_count();
// The backend on GPU `device`; throws an Error saying why when there is none.
std::unique_ptr<Backend<float>> make_cuda_backend(int device, bool bf16 = false);
// An NCCL communicator over the ranks of `host` (collective over them; the CUDA backend must
// exist on each rank). Host values still go through `host`, which must outlive the result.
std::unique_ptr<Comm> make_nccl_comm(Comm& host);
// The same over a communicator it takes over.
std::unique_ptr<Comm> make_nccl_comm(std::unique_ptr<Comm> host);

}  // namespace dsmoe
