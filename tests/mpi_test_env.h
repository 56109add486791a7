// The world communicator of an MPI test binary (see mpi_test_main.cpp). Tests assert with
// EXPECT_* around collectives: a rank that returned early would leave the others waiting.
#pragma once
#include "comm/comm.h"

namespace dsmoe::test {
Comm& world();
}  // namespace dsmoe::test
