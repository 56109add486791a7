// The CPU backend: OpenBLAS for matrix products, OpenMP for everything else. Reductions
// split work by a fixed partition, so results are bit-identical run to run.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace dsmoe {

template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend();

}  // namespace dsmoe
