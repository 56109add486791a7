// The communicator the engine talks to: collectives over a group of ranks. One implementation
// per transport: a single process, MPI, and NCCL (libdsmoe_cuda.so, src/backend/cuda_loader.h).
//
// Where the data lives: allreduce_sum(float*) and alltoallv move backend tensors (device memory
// when the backend is CUDA and the transport NCCL, ordered on the backend's stream); every other
// call moves host values. host() is the communicator of the same ranks for host buffers.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace dsmoe {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void allreduce_sum(double* x, int64_t n) = 0;
  virtual void allreduce_sum(float* x, int64_t n) = 0;  // backend tensor
  virtual void allreduce_sum(int64_t* x, int64_t n) = 0;
  virtual void allreduce_max(double* x, int64_t n) = 0;
  // x[i] = sum of x[i] over the ranks before this one (0 on rank 0).
  virtual void exscan_sum(int64_t* x, int64_t n) = 0;
  // Every rank sends `n` values to every rank: send [size * n] -> recv [size * n].
  virtual void alltoall(const int64_t* send, int64_t* recv, int64_t n) = 0;
  // Rows of `row_bytes` bytes of backend tensors: send_rows[r] rows starting at row
  // send_offsets[r] of `send` go to rank r; recv_rows[r] rows from rank r land at row
  // recv_offsets[r] of `recv`.
  virtual void alltoallv(const void* send, const std::vector<int64_t>& send_rows,
                         const std::vector<int64_t>& send_offsets, void* recv, const std::vector<int64_t>& recv_rows,
                         const std::vector<int64_t>& recv_offsets, int64_t row_bytes) = 0;
  // The same with each side packed in rank order.
  void alltoallv(const void* send, const std::vector<int64_t>& send_rows, void* recv,
                 const std::vector<int64_t>& recv_rows, int64_t row_bytes);
  // alltoallv that may still be in flight when it returns (NCCL: on a stream of its own), so
  // that backend work queued before wait_alltoallv() overlaps it; buffers stay untouched until
  // then. Elsewhere it completes at once.
  virtual void start_alltoallv(const void* send, const std::vector<int64_t>& send_rows,
                               const std::vector<int64_t>& send_offsets, void* recv,
                               const std::vector<int64_t>& recv_rows, const std::vector<int64_t>& recv_offsets,
                               int64_t row_bytes) {
    alltoallv(send, send_rows, send_offsets, recv, recv_rows, recv_offsets, row_bytes);
  }
  virtual void wait_alltoallv() {}
  // allreduce_sum of a backend tensor that may still be in flight when it returns (MPI:
  // nonblocking; NCCL: on the communication stream once the backend's work queued so far is
  // done), so that later work overlaps it; x is not touched until wait_allreduces(), which
  // completes every one started (in order: every rank starts the same ones in the same order).
  virtual void start_allreduce_sum(float* x, int64_t n) { allreduce_sum(x, n); }
  virtual void wait_allreduces() {}
  // Every rank's block of a backend tensor to every rank, in place: rank r's block is elements
  // [offsets[r], offsets[r] + counts[r]) of x.
  virtual void allgather_blocks(float* x, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets) = 0;
  // Rank `root` receives every rank's `bytes` bytes, in rank order.
  virtual void gather(const void* send, int64_t bytes, void* recv, int root) = 0;
  // Every rank gets rank `root`'s `bytes` bytes.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // A communicator of the ranks with the same color, ordered by key.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;
  // The same ranks for host buffers (itself unless tensors live on a device).
  virtual Comm& host() { return *this; }
};

// Row offsets of blocks of `rows[r]` rows packed in rank order, starting at row `first`.
std::vector<int64_t> packed_offsets(const std::vector<int64_t>& rows, int64_t first = 0);

// The communicator of a job with one rank: every collective is the identity.
std::unique_ptr<Comm> make_single_comm();

// MPI_COMM_WORLD when the process was started by an MPI launcher (mpiexec, srun), else a
// single-rank communicator. Initializes MPI on first use.
std::unique_ptr<Comm> make_world_comm();
// How many ranks of this job share this machine (1 without MPI).
int ranks_on_this_node();
// The ranks of this job on this machine, for host values (a single-rank communicator without
// MPI); make_world_comm() first.
std::unique_ptr<Comm> make_node_comm();
// Ends every rank of the job with `code` (MPI_Abort under MPI, exit otherwise).
[[noreturn]] void abort_job(int code);
// Finalizes MPI if it was initialized.
void finalize_comm();

}  // namespace dsmoe
