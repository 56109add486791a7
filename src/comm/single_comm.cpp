#include <algorithm>

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
  void exscan_sum(int64_t* x, int64_t n) override { std::fill(x, x + n, 0); }
};

}  // namespace

std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }

}  // namespace dsmoe
