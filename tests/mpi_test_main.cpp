// main() of the MPI tests: every rank runs every test; only rank 0 prints. ctest registers
// each binary once per rank count (`name.2ranks` runs `mpiexec -n 2 name`).
#include <gtest/gtest.h>

#include "backend/threads.h"
#include "comm/comm.h"
#include "mpi_test_env.h"

namespace dsmoe::test {
Comm* g_world = nullptr;
Comm& world() { return *g_world; }
}  // namespace dsmoe::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto world = dsmoe::make_world_comm();
  dsmoe::test::g_world = world.get();
  // The threads dsmoe itself runs: ranks x threads fit the node instead of each rank taking every core.
  dsmoe::plan_threads(*dsmoe::make_node_comm());
  if (world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  world.reset();
  dsmoe::finalize_comm();
  return rc;
}
