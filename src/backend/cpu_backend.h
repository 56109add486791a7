// The CPU backend: OpenBLAS for matrix products, OpenMP for everything else. Reductions
// split work by a fixed partition, so results are bit-identical run to run.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace dsmoe {

// bf16_storage: activations that the model marks so (ActBuf) are stored in bf16, as the CUDA
// backend stores them under precision: bf16 (the products stay in T); for tests of what that
// storage changes (rows on the wire, rounding). Runs use fp32 storage (precision bf16 needs CUDA).
template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend(bool bf16_storage = false);

}  // namespace dsmoe
