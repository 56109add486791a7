// The token dispatcher: permutes (token, expert) pairs into rows grouped by expert, sends
// them to the rank of the expert-parallel group that holds the expert (all-to-all), and brings
// the results back. No math; the gates are applied by the experts. Where every row goes is the
// layout (moe/dispatch_layout.h, computed without communication); the dispatcher exchanges the
// counts the layout needs, then the rows.
//
// Going out, a token's activation travels once per destination rank however many of its
// experts live there (a token copy; with device-limited routing at most route_devices ranks),
// and the receiver copies it to each expert's rows; results come back once per (token, expert)
// pair. Pairs whose expert lives on this rank never go through the communicator: dispatch
// gathers their rows straight from x, and combine leaves their results where the experts wrote
// them.
// Combine does not unpermute either: pair_row() says where each pair's result lies, and the
// MoE layer's sum over a token's experts reads it there (the unpermute fused into the sum). The
// gates travel to the experts' rows and their gradients back (one value a pair), since the
// experts apply them.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "moe/dispatch_layout.h"
#include "moe/experts.h"
#include "moe/placement.h"

namespace dsmoe {

struct DispatchStats {
  int64_t bytes_sent = 0;       // to other ranks, forward and backward
  int64_t expert_rows = 0;      // (token, expert) rows this rank's experts computed, own tokens' too
  int64_t tokens_received = 0;  // token copies from other ranks (one per token and sending rank)
};

template <typename T>
class Dispatcher {
 public:
  // ep: the expert-parallel group (size 1: every expert is here and nothing is exchanged).
  Dispatcher(Backend<T>& be, Comm& ep, const ExpertPlacement& placement, int d);

  // sel, kept: [tokens, K] routing decisions of this rank's tokens. Exchanges the counts.
  void plan(const std::vector<int32_t>& sel, const std::vector<uint8_t>& kept, int tokens, int k);
  // The same where the choices are, for a group of one rank with every pair kept: only the
  // experts' row counts come to the host (they size the products).
  void plan_local(const int32_t* sel, int tokens, int k);
  bool local() const { return ep_.size() == 1; }
  // The rows this rank computes, as they arrive: from each source rank in order, its rows for
  // each local expert (so an expert's rows are in global token order across its blocks).
  const std::vector<RowBlock>& blocks() const { return blocks_; }
  int rows() const { return rows_; }
  // The same rows split by origin: this rank's own (ready after dispatch_start) and the received
  // ones before and after them (ready after dispatch_finish).
  const RowSpan& own_span() const { return own_span_; }
  const std::vector<RowSpan>& received_spans() const { return received_spans_; }
  // The combine buffer: this rank's expert rows [0, rows()), then the results of this rank's
  // pairs that other ranks computed, as they come back.
  int combine_rows() const { return rows_ + back_rows_; }
  // [tokens*K]: the row of the combine buffer that holds pair p's result, -1 if p was dropped.
  const int32_t* pair_row() const { return pair_row_.data(); }

  // xe and the combine buffer are stored as the backend stores activations (Backend::bf16_storage:
  // bf16 rows on the wire too), and so is dxe; x is read in its own storage; dx is in T.
  void dispatch(Ptr<T> xe, Ptr<const T> x);  // x [tokens, d] -> xe [rows, d]
  // dispatch in two halves, so that the own rows can be computed while the others travel: start
  // gathers the own rows and sends the rest; finish places what arrived. x must stay unchanged.
  void dispatch_start(Ptr<T> xe, Ptr<const T> x);
  void dispatch_finish(Ptr<T> xe);
  // The rows of the last dispatch again, into xe, from the same x and the received rows kept
  // since the exchange (no communication): the backward rebuilds xe instead of keeping it.
  void redispatch(Ptr<T> xe, Ptr<const T> x);
  void combine(Ptr<T> yc);            // yc [combine_rows, d]: [0, rows) written by the experts; fills the rest
  void combine_backward(Ptr<T> dyc);  // dyc [combine_rows, d]: the gradients of the pairs' rows -> dye = [0, rows)
  // The pairs' gates to the rows that compute them, as combine_backward moves rows:
  // gate [tokens*K] -> row_gate [combine_rows], of which [0, rows) is this rank's experts'.
  void dispatch_gates(T* row_gate, const T* gate);
  // Their gradients back, as combine moves rows: row_dgate [combine_rows], [0, rows) written by
  // the experts -> dgate [tokens*K] (0 for a dropped pair).
  void combine_gate_grads(T* dgate, T* row_dgate);
  void dispatch_backward(T* dx, Ptr<const T> dxe);  // dx [tokens, d] = sum of its rows of dxe [rows, d]
  DispatchStats& stats() { return stats_; }
  // Rows sent to / received from each rank (0 for this rank) by the last plan: token copies
  // (dispatch) and pairs (combine).
  const std::vector<int64_t>& copy_send_rows() const { return copy_send_count_; }
  const std::vector<int64_t>& copy_recv_rows() const { return copy_recv_count_; }
  const std::vector<int64_t>& pair_send_rows() const { return pair_send_count_; }
  const std::vector<int64_t>& pair_recv_rows() const { return pair_recv_count_; }

 private:
  // Sends rows of `width` elements (d unless said) of backend tensors and counts the bytes;
  // start_exchange's may still be in flight (Comm::start_alltoallv).
  void start_exchange(Ptr<const T> send, const std::vector<int64_t>& send_rows, const std::vector<int64_t>& send_off,
                      Ptr<T> recv, const std::vector<int64_t>& recv_rows, const std::vector<int64_t>& recv_off,
                      int width);
  void exchange(Ptr<const T> send, const std::vector<int64_t>& send_rows, const std::vector<int64_t>& send_off,
                Ptr<T> recv, const std::vector<int64_t>& recv_rows, const std::vector<int64_t>& recv_off,
                int width);
  // A combine buffer's pair rows of `width` elements between the ranks: this rank's experts'
  // results [0, rows) back to the pairs' owners (into the tail), or the owners' tail out to the
  // experts' rows.
  void to_owners(Ptr<T> buf, int width);
  void to_experts(Ptr<T> buf, int width);
  template <typename I>
  void upload(Buf<I>& buf, const std::vector<I>& host);
  void adopt(Layout& layout);         // the plan's layout: its counts here, its indices on the device
  void place_received(Ptr<T> xe);     // the received token copies into their rows of xe

  Backend<T>& be_;
  Comm& ep_;
  ExpertPlacement placement_;
  int d_, tokens_ = 0, k_ = 0, rows_ = 0, back_rows_ = 0, copies_sent_ = 0, copies_received_ = 0;
  // This rank's own pairs: rows [self_off_, self_off_ + self_rows_) of xe, row i from token self_token[i].
  int self_off_ = 0, self_rows_ = 0;
  std::vector<RowBlock> blocks_;
  RowSpan own_span_;
  std::vector<RowSpan> received_spans_;
  Buf<int32_t> self_token_, pair_row_;
  // Pair rows per rank: sent (this rank's pairs, computed there) and received (computed here);
  // where they lie in xe (recv) and in the combine buffer's tail (back).
  std::vector<int64_t> pair_send_count_, pair_recv_count_, pair_recv_off_, pair_back_off_;
  // Token copies per rank, by destination then token: copy_token[c].
  Buf<int32_t> copy_token_;
  std::vector<int64_t> copy_send_count_, copy_recv_count_, copy_send_off_, copy_recv_off_;
  // Gradients back to tokens (CSR over tokens): the returned copies, and the own rows of xe.
  Buf<int32_t> copy_tok_off_, copy_tok_idx_, self_tok_off_, self_tok_idx_;
  // Receiver: the received rows of xe, in order, are copy received_copy[i] (rows before the own
  // block, then after it); copy_row_off/copy_row_idx lists each copy's rows of xe.
  Buf<int32_t> received_copy_, copy_row_off_, copy_row_idx_;
  Buf<int32_t> counts_, sort_hist_;  // plan_local's
  // The token copies going out and coming in: as activations are stored forward, in T backward.
  Buf<T> send_buf_, copies_buf_;
  DispatchStats stats_;
};

}  // namespace dsmoe
