#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <string>

#include "comm/comm.h"
#include "util/check.h"
#include "util/log.h"

// MPI_CHECK: DSMOE_CHECK on an MPI return code, with MPI's own description of it.
#define MPI_CHECK(call)                                                                 \
  do {                                                                                  \
    int rc_ = (call);                                                                   \
    DSMOE_CHECK(rc_ == MPI_SUCCESS, "MPI error in ", #call, ": ", mpi_error_string(rc_)); \
  } while (0)

namespace dsmoe {
namespace {

std::string mpi_error_string(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return std::string(text, len);
}

int to_int(int64_t n, const char* what) {
  DSMOE_CHECK(n >= 0 && n <= INT_MAX, what, " count ", n, " exceeds MPI's int range");
  return static_cast<int>(n);
}

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(double* x, int64_t n) override { reduce(x, n, MPI_DOUBLE, MPI_SUM); }
  void allreduce_sum(float* x, int64_t n) override { reduce(x, n, MPI_FLOAT, MPI_SUM); }
  void allreduce_sum(int64_t* x, int64_t n) override { reduce(x, n, MPI_INT64_T, MPI_SUM); }
  void allreduce_max(double* x, int64_t n) override { reduce(x, n, MPI_DOUBLE, MPI_MAX); }
  void start_allreduce_sum(float* x, int64_t n) override {
    pending_.emplace_back();
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, x, to_int(n, "allreduce"), MPI_FLOAT, MPI_SUM, comm_, &pending_.back()));
    // MPI moves a nonblocking collective on only inside its calls (no progress thread by default).
    int done = 0;
    MPI_CHECK(MPI_Testall(static_cast<int>(pending_.size()), pending_.data(), &done, MPI_STATUSES_IGNORE));
  }
  void wait_allreduces() override {
    const int status = MPI_Waitall(static_cast<int>(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE);
    pending_.clear();
    MPI_CHECK(status);
  }
  void exscan_sum(int64_t* x, int64_t n) override {
    std::vector<int64_t> in(x, x + n);
    MPI_CHECK(MPI_Exscan(in.data(), x, to_int(n, "exscan"), MPI_INT64_T, MPI_SUM, comm_));
    if (rank_ == 0) std::fill(x, x + n, 0);  // MPI leaves rank 0's result undefined
  }
  void alltoall(const int64_t* send, int64_t* recv, int64_t n) override {
    MPI_CHECK(MPI_Alltoall(send, to_int(n, "alltoall"), MPI_INT64_T, recv, to_int(n, "alltoall"), MPI_INT64_T, comm_));
  }
  using Comm::alltoallv;
  void alltoallv(const void* send, const std::vector<int64_t>& send_rows, const std::vector<int64_t>& send_offsets,
                 void* recv, const std::vector<int64_t>& recv_rows, const std::vector<int64_t>& recv_offsets,
                 int64_t row_bytes) override {
    MPI_Datatype row;
    MPI_CHECK(MPI_Type_contiguous(to_int(row_bytes, "row bytes"), MPI_BYTE, &row));
    MPI_CHECK(MPI_Type_commit(&row));
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    for (int r = 0; r < size_; ++r) {
      sc[r] = to_int(send_rows[r], "alltoallv send");
      rc[r] = to_int(recv_rows[r], "alltoallv recv");
      sd[r] = to_int(send_offsets[r], "alltoallv displacement");
      rd[r] = to_int(recv_offsets[r], "alltoallv displacement");
    }
    const int status = MPI_Alltoallv(send, sc.data(), sd.data(), row, recv, rc.data(), rd.data(), row, comm_);
    MPI_Type_free(&row);
    MPI_CHECK(status);
  }
  void gather(const void* send, int64_t bytes, void* recv, int root) override {
    MPI_CHECK(MPI_Gather(send, to_int(bytes, "gather"), MPI_BYTE, recv, to_int(bytes, "gather"), MPI_BYTE, root, comm_));
  }
  void allgather_blocks(float* x, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets) override {
    std::vector<int> c(size_), d(size_);
    for (int r = 0; r < size_; ++r) {
      c[r] = to_int(counts[r], "allgather");
      d[r] = to_int(offsets[r], "allgather displacement");
    }
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, c.data(), d.data(), MPI_FLOAT, comm_));
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    MPI_CHECK(MPI_Bcast(data, to_int(bytes, "broadcast"), MPI_BYTE, root, comm_));
  }
  void barrier() override { MPI_CHECK(MPI_Barrier(comm_)); }
  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm sub;
    MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
    MPI_Comm_set_errhandler(sub, MPI_ERRORS_RETURN);
    return std::make_unique<MpiComm>(sub, true);
  }

 private:
  void reduce(void* x, int64_t n, MPI_Datatype type, MPI_Op op) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x, to_int(n, "allreduce"), type, op, comm_));
  }
  MPI_Comm comm_;
  bool owned_;
  std::vector<MPI_Request> pending_;  // allreduces started and not yet waited for
  int rank_ = 0, size_ = 1;
};

int g_ranks_on_node = 1;
MPI_Comm g_node = MPI_COMM_NULL;  // the ranks of this machine (freed by MPI_Finalize)

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

bool mpi_initialized() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

// Under Slurm the world must hold every task of the step: a launch that starts each task as a
// world of its own (srun without --mpi=pmix, say) would otherwise train that many separate copies.
void check_slurm_tasks(int world_size) {
  const char* tasks = std::getenv("SLURM_NTASKS");
  if (!tasks) return;
  DSMOE_CHECK(std::string(tasks) == std::to_string(world_size), "Slurm started ", tasks,
              " tasks (SLURM_NTASKS) but this process's MPI world has ", world_size,
              " rank(s): launch the ranks as one MPI job (`srun --mpi=pmix`, see jobs/run.sbatch)");
}

}  // namespace

std::unique_ptr<Comm> make_world_comm() {
  if (!launched_by_mpi()) {
    check_slurm_tasks(1);
    return make_single_comm();
  }
  if (!mpi_initialized()) MPI_CHECK(MPI_Init(nullptr, nullptr));
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  auto world = std::make_unique<MpiComm>(MPI_COMM_WORLD, false);
  check_slurm_tasks(world->size());
  set_log_rank(world->rank(), world->size());
  if (g_node == MPI_COMM_NULL) {
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &g_node));
    MPI_Comm_set_errhandler(g_node, MPI_ERRORS_RETURN);
  }
  MPI_CHECK(MPI_Comm_size(g_node, &g_ranks_on_node));
  return world;
}

int ranks_on_this_node() { return g_ranks_on_node; }

std::unique_ptr<Comm> make_node_comm() {
  if (g_node == MPI_COMM_NULL || !mpi_initialized()) return make_single_comm();
  return std::make_unique<MpiComm>(g_node, false);
}

void abort_job(int code) {
  int size = 1;
  if (mpi_initialized()) MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);  // ends every rank, so none waits forever
  finalize_comm();
  std::exit(code);
}

void finalize_comm() {
  if (mpi_initialized()) MPI_Finalize();
}

}  // namespace dsmoe
