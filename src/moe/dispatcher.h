// The token dispatcher: permutes (token, expert) pairs into rows grouped by expert, sends
// them to the rank of the expert-parallel group that holds the expert (all-to-all), and brings
// the results back in pair order. No math; the gates are applied by the MoE layer.
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
  void dispatch_backward(T* dx, const T* dxe);       // dx [tokens, d] += pairs of dxe [rows, d]
  DispatchStats& stats() { return stats_; }
  // Rows sent to / received from each rank of the group by the last plan (exchanging groups).
  const std::vector<int64_t>& send_rows_per_rank() const { return send_per_rank_; }
  const std::vector<int64_t>& recv_rows_per_rank() const { return recv_per_rank_; }

 private:
  void exchange(T* out, const T* in, const std::vector<int64_t>& out_rows, const std::vector<int64_t>& in_rows);

  Backend<T>& be_;
  Comm& ep_;
  ExpertPlacement placement_;
  int d_, tokens_ = 0, k_ = 0, rows_ = 0, send_rows_ = 0;
  std::vector<RowBlock> blocks_;
  std::vector<int64_t> send_per_rank_, recv_per_rank_;
  // Row r of the send buffer is pair send_pair[r] of token send_token[r]; pair_send[p] is
  // its send row (-1 if dropped). Received rows are computed where they land.
  Buf<int32_t> send_token_, send_pair_, pair_send_;
  Buf<T> ones_, send_buf_, pairs_;
  DispatchStats stats_;
};

}  // namespace dsmoe
