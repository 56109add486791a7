// The NCCL communicator: backend tensors (gradients, token rows) move between GPUs through NCCL
// on the backend's stream; host values go through the MPI communicator of the same ranks, which
// also bootstraps NCCL (rank 0 makes the unique id, MPI broadcasts it).
//
// NCCL reports failures it detects on its own threads (a peer's network connection gone, a
// remote error) only through ncclCommGetAsyncError, while this rank's host sits in a CUDA wait
// that would never end: a monitor thread polls it, and on an error names the rank, aborts the
// communicator and ends the process, so that the launcher ends the job (as the watchdog does).
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "comm/comm.h"
#include "kernels/cuda_check.cuh"

namespace dsmoe {
namespace {

// This process's rank in the whole job, as the launcher gives it ("?" when none does).
std::string job_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* r = std::getenv(v)) return r;
  return "?";
}

// The stream of every communicator of this process (created on first use, kept for the process's
// life). NCCL's kernels wait for their peers: two communicators' operations running at once could
// each hold a GPU the other's needs and wait forever ("Using multiple NCCL communicators
// concurrently" in NCCL's guide). On one stream they run one after another in the order the host
// issues them, which is the same on every rank; the backend's stream still runs beside them.
cudaStream_t communication_stream() {
  static cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

class NcclComm final : public Comm {
 public:
  // host: the MPI communicator of these ranks, owned when `owned` is given.
  NcclComm(Comm& host, std::unique_ptr<Comm> owned) : host_(host), owned_(std::move(owned)) {
    setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off (shared machines)
    ncclUniqueId id;
    if (host_.rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    host_.broadcast(&id, sizeof id, 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, host_.size(), id, host_.rank()));
    comm_stream_ = communication_stream();
    CUDA_CHECK(cudaEventCreateWithFlags(&queued_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming));
    monitor_ = std::thread([this] { monitor(); });
  }
  ~NcclComm() override {
    stop_ = true;
    monitor_.join();
    ncclCommDestroy(comm_);
    cudaEventDestroy(done_);
    cudaEventDestroy(reduced_);
    cudaEventDestroy(queued_);
  }

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  void allreduce_sum(float* x, int64_t n) override {
    if (n > 0) NCCL_CHECK(ncclAllReduce(x, x, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, stream_));
  }
  using Comm::alltoallv;
  void alltoallv(const void* send, const std::vector<int64_t>& send_rows, const std::vector<int64_t>& send_offsets,
                 void* recv, const std::vector<int64_t>& recv_rows, const std::vector<int64_t>& recv_offsets,
                 int64_t row_bytes) override {
    start_alltoallv(send, send_rows, send_offsets, recv, recv_rows, recv_offsets, row_bytes);
    wait_alltoallv();
  }
  // Grouped point-to-point, as nccl-tests' alltoall, on the communication stream once the work
  // queued so far on the backend's stream is done; the own block is a device copy.
  void start_alltoallv(const void* send, const std::vector<int64_t>& send_rows,
                       const std::vector<int64_t>& send_offsets, void* recv, const std::vector<int64_t>& recv_rows,
                       const std::vector<int64_t>& recv_offsets, int64_t row_bytes) override {
    const char* s = static_cast<const char*>(send);
    char* r = static_cast<char*>(recv);
    const int me = rank();
    CUDA_CHECK(cudaEventRecord(queued_, stream_));
    CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, queued_));
    if (send_rows[me] > 0)
      CUDA_CHECK(cudaMemcpyAsync(r + recv_offsets[me] * row_bytes, s + send_offsets[me] * row_bytes,
                                 send_rows[me] * row_bytes, cudaMemcpyDeviceToDevice, comm_stream_));
    NCCL_CHECK(ncclGroupStart());
    for (int p = 0; p < size(); ++p) {
      if (p == me) continue;
      if (send_rows[p] > 0)
        NCCL_CHECK(
            ncclSend(s + send_offsets[p] * row_bytes, send_rows[p] * row_bytes, ncclUint8, p, comm_, comm_stream_));
      if (recv_rows[p] > 0)
        NCCL_CHECK(
            ncclRecv(r + recv_offsets[p] * row_bytes, recv_rows[p] * row_bytes, ncclUint8, p, comm_, comm_stream_));
    }
    NCCL_CHECK(ncclGroupEnd());
    CUDA_CHECK(cudaEventRecord(done_, comm_stream_));
  }
  void wait_alltoallv() override { CUDA_CHECK(cudaStreamWaitEvent(stream_, done_)); }
  // On the communication stream too (after the backend's work queued so far), so that the
  // backend's stream goes on with the next layers' backward meanwhile.
  void start_allreduce_sum(float* x, int64_t n) override {
    if (n == 0) return;
    CUDA_CHECK(cudaEventRecord(queued_, stream_));
    CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, queued_));
    NCCL_CHECK(ncclAllReduce(x, x, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, comm_stream_));
    CUDA_CHECK(cudaEventRecord(reduced_, comm_stream_));
  }
  void wait_allreduces() override { CUDA_CHECK(cudaStreamWaitEvent(stream_, reduced_)); }
  // One broadcast per rank's block, grouped (blocks may differ in size, which ncclAllGather's
  // equal counts do not allow), on the backend's stream.
  void allgather_blocks(float* x, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets) override {
    NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < size(); ++r)
      if (counts[r] > 0)
        NCCL_CHECK(ncclBroadcast(x + offsets[r], x + offsets[r], static_cast<size_t>(counts[r]), ncclFloat, r, comm_,
                                 stream_));
    NCCL_CHECK(ncclGroupEnd());
  }

  // Host values.
  void allreduce_sum(double* x, int64_t n) override { host_.allreduce_sum(x, n); }
  void allreduce_sum(int64_t* x, int64_t n) override { host_.allreduce_sum(x, n); }
  void allreduce_max(double* x, int64_t n) override { host_.allreduce_max(x, n); }
  void exscan_sum(int64_t* x, int64_t n) override { host_.exscan_sum(x, n); }
  void alltoall(const int64_t* send, int64_t* recv, int64_t n) override { host_.alltoall(send, recv, n); }
  void gather(const void* send, int64_t bytes, void* recv, int root) override { host_.gather(send, bytes, recv, root); }
  void broadcast(void* data, int64_t bytes, int root) override { host_.broadcast(data, bytes, root); }
  void barrier() override { host_.barrier(); }
  std::unique_ptr<Comm> split(int color, int key) override {
    std::unique_ptr<Comm> sub = host_.split(color, key);
    Comm& ref = *sub;
    return std::make_unique<NcclComm>(ref, std::move(sub));
  }
  Comm& host() override { return host_; }

 private:
  void monitor() {
    while (!stop_) {
      ncclResult_t st = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &st) == ncclSuccess && st != ncclSuccess && st != ncclInProgress) {
        std::fprintf(stderr,
                     "dsmoe: rank %s: NCCL reported an error on the communicator of %d ranks (this rank is %d "
                     "there): %s: %s; ending the job\n",
                     job_rank().c_str(), size(), rank(), ncclGetErrorString(st), ncclGetLastError(comm_));
        std::fflush(stderr);
        ncclCommAbort(comm_);
        std::_Exit(1);  // MPI cannot be called from this thread; the launcher ends the other ranks
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  Comm& host_;
  std::unique_ptr<Comm> owned_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;  // the CUDA backend's (the default stream)
  cudaStream_t comm_stream_ = nullptr;  // communication_stream()
  cudaEvent_t queued_ = nullptr, done_ = nullptr;  // backend work before the exchange; the exchange
  cudaEvent_t reduced_ = nullptr;  // the last allreduce started (the stream runs them in order)
  std::atomic<bool> stop_{false};
  std::thread monitor_;
};

}  // namespace
}  // namespace dsmoe

// Entry point looked up by name (src/backend/cuda_loader.cpp): an NCCL communicator over the
// ranks of `host` (collective over them), taking ownership of `owned` (null: host outlives it).
extern "C" dsmoe::Comm* dsmoe_make_nccl_comm(dsmoe::Comm* host, dsmoe::Comm* owned, char* error, int error_len) {
  try {
    return new dsmoe::NcclComm(*host, std::unique_ptr<dsmoe::Comm>(owned));
  } catch (const std::exception& e) {
    std::strncpy(error, e.what(), error_len - 1);
    error[error_len - 1] = '\0';
    return nullptr;
  }
}
