#include <algorithm>
#include <cstring>

#include "comm/comm.h"

namespace dsmoe {
namespace {

class SingleComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(double*, int64_t) override {}
  void allreduce_sum(float*, int64_t) override {}
  void allreduce_sum(int64_t*, int64_t) override {}
  void allreduce_max(double*, int64_t) override {}
  void exscan_sum(int64_t* x, int64_t n) override { std::fill(x, x + n, 0); }
  void alltoall(const int64_t* send, int64_t* recv, int64_t n) override { std::copy(send, send + n, recv); }
  using Comm::alltoallv;
  void alltoallv(const void* send, const std::vector<int64_t>& send_rows, const std::vector<int64_t>& send_offsets,
                 void* recv, const std::vector<int64_t>&, const std::vector<int64_t>& recv_offsets,
                 int64_t row_bytes) override {
    const char* from = static_cast<const char*>(send) + send_offsets[0] * row_bytes;
    char* to = static_cast<char*>(recv) + recv_offsets[0] * row_bytes;
    if (send_rows[0] > 0 && from != to) std::memmove(to, from, send_rows[0] * row_bytes);
  }
  void gather(const void* send, int64_t bytes, void* recv, int) override {
    if (bytes > 0 && send != recv) std::memcpy(recv, send, bytes);
  }
  void allgather_blocks(float*, const std::vector<int64_t>&, const std::vector<int64_t>&) override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return std::make_unique<SingleComm>(); }
};

}  // namespace

std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }

}  // namespace dsmoe
