#include "comm/comm.h"

namespace dsmoe {

std::vector<int64_t> packed_offsets(const std::vector<int64_t>& rows, int64_t first) {
  std::vector<int64_t> off(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    off[r] = first;
    first += rows[r];
  }
  return off;
}

void Comm::alltoallv(const void* send, const std::vector<int64_t>& send_rows, void* recv,
                     const std::vector<int64_t>& recv_rows, int64_t row_bytes) {
  alltoallv(send, send_rows, packed_offsets(send_rows), recv, recv_rows, packed_offsets(recv_rows), row_bytes);
}

}  // namespace dsmoe
