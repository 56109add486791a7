// The token dispatcher: permutes (token, expert) pairs into rows grouped by expert, sends
// them to the rank of the expert-parallel group that holds the expert (all-to-all), and brings
// the results back in pair order. No math; the gates are applied by the MoE layer.
//
// Going out, a token's activation travels once per destination rank however many of its
// experts live there (with device-limited routing at most route_devices ranks), and the
// receiver copies it to each expert's rows; results come back once per (token, expert) pair.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "moe/experts.h"
#include "moe/placement.h"

namespace dsmoe {

struct DispatchStats {
  int64_t bytes_sent = 0;     // to other ranks, forward and backward
  int64_t rows_received = 0;  // rows this rank's experts computed
};

template <typename T>
class Dispatcher {
 public:
  // ep: the expert-parallel group (size 1: every expert is here and nothing is exchanged).
  Dispatcher(Backend<T>& be, Comm& ep, const ExpertPlacement& placement, int d);

  // sel, kept: [tokens, K] routing decisions of this rank's tokens. Exchanges the counts.
  void plan(const std::vector<int32_t>& sel, const std::vector<uint8_t>& kept, int tokens, int k);
  // The rows this rank computes, as they arrive: from each source rank in order, its rows for
  // each local expert (so an expert's rows are in global token order across its blocks).
  const std::vector<RowBlock>& blocks() const { return blocks_; }
  int rows() const { return rows_; }

  void dispatch(T* xe, const T* x);                  // x [tokens, d] -> xe [rows, d]
  void combine(T* y_pairs, const T* ye);             // ye [rows, d] -> y_pairs [tokens*K, d], 0 if dropped
  void combine_backward(T* dye, const T* dy_pairs);  // dy_pairs [tokens*K, d] -> dye [rows, d]
  void dispatch_backward(T* dx, const T* dxe);       // dx [tokens, d] += sum of its rows of dxe [rows, d]
  DispatchStats& stats() { return stats_; }
  // Rows sent to / received from each rank by the last plan: units (dispatch) and pairs (combine).
  const std::vector<int64_t>& unit_send_rows() const { return unit_send_count_; }
  const std::vector<int64_t>& unit_recv_rows() const { return unit_recv_count_; }
  const std::vector<int64_t>& pair_send_rows() const { return pair_send_count_; }
  const std::vector<int64_t>& pair_recv_rows() const { return pair_recv_count_; }

 private:
  void exchange(T* out, const T* in, const std::vector<int64_t>& out_rows, const std::vector<int64_t>& in_rows);
  template <typename I>
  void upload(Buf<I>& buf, const std::vector<I>& host);

  Backend<T>& be_;
  Comm& ep_;
  ExpertPlacement placement_;
  int d_, tokens_ = 0, k_ = 0, rows_ = 0, pair_rows_ = 0, units_ = 0, recv_units_ = 0;
  std::vector<RowBlock> blocks_;
  // Pairs, sorted by expert (hence by destination), token order within an expert: send row r
  // is pair send_pair[r] of token send_token[r]; pair_send[p] is its row (-1 if dropped).
  Buf<int32_t> send_token_, send_pair_, pair_send_;
  std::vector<int64_t> pair_send_count_, pair_recv_count_;
  // Units (one per token and destination rank), by destination then token: unit_token[u].
  Buf<int32_t> unit_token_;
  std::vector<int64_t> unit_send_count_, unit_recv_count_;
  // The rows that come back to each token (CSR over the buffer returned by dispatch_backward).
  Buf<int32_t> token_off_, token_idx_;
  // Receiver: expert row g copies received unit expand[g]; unit_off/unit_idx is its transpose.
  Buf<int32_t> expand_, unit_off_, unit_idx_;
  Buf<T> send_buf_, units_buf_;
  DispatchStats stats_;
};

}  // namespace dsmoe
