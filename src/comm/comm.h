// The communicator the engine talks to: collectives over all ranks of the job. One
// implementation per transport (a single process now; MPI and NCCL plug in behind it).
#pragma once
#include <cstdint>
#include <memory>

namespace dsmoe {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void allreduce_sum(double* x, int64_t n) = 0;
  virtual void allreduce_sum(float* x, int64_t n) = 0;
  virtual void allreduce_sum(int64_t* x, int64_t n) = 0;
  // x[i] = sum of x[i] over the ranks before this one (0 on rank 0).
  virtual void exscan_sum(int64_t* x, int64_t n) = 0;
};

// The communicator of a job with one rank: every collective is the identity.
std::unique_ptr<Comm> make_single_comm();

}  // namespace dsmoe
