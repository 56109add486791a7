#include "moe/dispatcher.h"

#include <algorithm>

#include "routing/sort_pairs.h"
#include "util/check.h"

namespace dsmoe {
namespace {

int64_t sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

}  // namespace

template <typename T>
Dispatcher<T>::Dispatcher(Backend<T>& be, Comm& ep, const ExpertPlacement& placement, int d)
    : be_(be), ep_(ep), placement_(placement), d_(d) {
  DSMOE_ASSERT(ep.size() == placement.ep_size && ep.rank() == placement.ep_rank);
}

template <typename T>
template <typename I>
void Dispatcher<T>::upload(Buf<I>& buf, const std::vector<I>& host) {
  buf.ensure(be_, std::max<int64_t>(1, static_cast<int64_t>(host.size())));
  if (!host.empty()) to_device(be_, buf.data(), host);
}

template <typename T>
void Dispatcher<T>::plan(const std::vector<int32_t>& sel, const std::vector<uint8_t>& kept, int tokens, int k) {
  const int N = placement_.n_experts, E = ep_.size(), per = placement_.per_rank();
  tokens_ = tokens;
  k_ = k;
  const SendLayout sends = lay_out_sends(sel.data(), kept.data(), tokens, k, placement_);
  // Rows per (source rank, expert held here), and token copies per source rank.
  std::vector<int64_t> rows_from(N), copies_from(E, 0);
  Comm& host = ep_.host();
  host.alltoall(sends.expert_pairs.data(), rows_from.data(), per);
  host.alltoall(sends.copies_to.data(), copies_from.data(), 1);
  Layout layout = lay_out_rows(sends, rows_from, copies_from, tokens, k, placement_, sel.data());
  if (E > 1) {
    std::vector<int32_t> copy_of_received_row(layout.rows - layout.self_rows);
    host.alltoallv(sends.copy_of_row.data(), layout.pair_send_count, copy_of_received_row.data(),
                   layout.pair_recv_count, sizeof(int32_t));
    lay_out_received_copies(layout, std::move(copy_of_received_row));
  }
  adopt(layout);
}

template <typename T>
void Dispatcher<T>::adopt(Layout& l) {
  blocks_ = std::move(l.blocks);
  own_span_ = std::move(l.own_span);
  received_spans_ = std::move(l.received_spans);
  rows_ = l.rows;
  back_rows_ = l.back_rows;
  self_off_ = l.self_off;
  self_rows_ = l.self_rows;
  copies_sent_ = l.copies_sent;
  copies_received_ = l.copies_received;
  pair_send_count_ = std::move(l.pair_send_count);
  pair_recv_count_ = std::move(l.pair_recv_count);
  pair_recv_off_ = std::move(l.pair_recv_off);
  pair_back_off_ = std::move(l.pair_back_off);
  copy_send_count_ = std::move(l.copy_send_count);
  copy_recv_count_ = std::move(l.copy_recv_count);
  copy_send_off_ = std::move(l.copy_send_off);
  copy_recv_off_ = std::move(l.copy_recv_off);
  upload(pair_row_, l.pair_row);
  upload(self_token_, l.self_token);
  upload(self_tok_off_, l.self_tok_off);
  upload(self_tok_idx_, l.self_tok_idx);
  stats_.expert_rows += rows_;
  stats_.tokens_received += copies_received_;
  if (ep_.size() == 1) return;
  upload(copy_token_, l.copy_token);
  upload(copy_tok_off_, l.copy_tok_off);
  upload(copy_tok_idx_, l.copy_tok_idx);
  upload(received_copy_, l.received_copy);
  upload(copy_row_off_, l.copy_row_off);
  upload(copy_row_idx_, l.copy_row_idx);
  send_buf_.ensure(be_, (int64_t)std::max(1, copies_sent_) * d_);
  copies_buf_.ensure(be_, (int64_t)std::max(1, copies_received_) * d_);
}

template <typename T>
void Dispatcher<T>::plan_local(const int32_t* sel, int tokens, int k) {
  DSMOE_ASSERT(ep_.size() == 1);
  const int N = placement_.n_experts;
  const int64_t pairs = (int64_t)tokens * k;
  tokens_ = tokens;
  k_ = k;
  counts_.ensure(be_, N);
  sort_hist_.ensure(be_, std::max(1, sort_chunks(pairs)) * (int64_t)N);
  for (Buf<int32_t>* b : {&pair_row_, &self_token_, &self_tok_idx_}) b->ensure(be_, std::max<int64_t>(1, pairs));
  be_.sort_pairs(counts_, pair_row_, self_token_, self_tok_idx_, sort_hist_, sel, tokens, k, N);
  std::vector<int32_t> off(tokens + 1);  // every token has k rows
  for (int t = 0; t <= tokens; ++t) off[t] = t * k;
  upload(self_tok_off_, off);
  const std::vector<int32_t> count = to_host(be_, counts_.data(), N);  // waits for the sort
  blocks_.clear();
  for (int e = 0; e < N; ++e) blocks_.push_back({e, count[e]});
  own_span_ = RowSpan{0, blocks_};
  received_spans_.assign(2, RowSpan{});
  rows_ = self_rows_ = static_cast<int>(pairs);
  self_off_ = back_rows_ = copies_sent_ = copies_received_ = 0;
  for (std::vector<int64_t>* v : {&copy_send_count_, &copy_recv_count_, &pair_send_count_, &pair_recv_count_})
    v->assign(1, 0);
  stats_.expert_rows += rows_;
}

template <typename T>
void Dispatcher<T>::start_exchange(Ptr<const T> send, const std::vector<int64_t>& send_rows,
                                   const std::vector<int64_t>& send_off, Ptr<T> recv,
                                   const std::vector<int64_t>& recv_rows, const std::vector<int64_t>& recv_off,
                                   int width) {
  DSMOE_ASSERT(send.is_bf16() == recv.is_bf16());
  const int64_t row_bytes = width * (int64_t)send.element_bytes();
  ep_.start_alltoallv(send.raw(), send_rows, send_off, recv.raw(), recv_rows, recv_off, row_bytes);
  stats_.bytes_sent += sum(send_rows) * row_bytes;
}

template <typename T>
void Dispatcher<T>::exchange(Ptr<const T> send, const std::vector<int64_t>& send_rows,
                             const std::vector<int64_t>& send_off, Ptr<T> recv, const std::vector<int64_t>& recv_rows,
                             const std::vector<int64_t>& recv_off, int width) {
  start_exchange(send, send_rows, send_off, recv, recv_rows, recv_off, width);
  ep_.wait_alltoallv();
}

template <typename T>
void Dispatcher<T>::dispatch(Ptr<T> xe, Ptr<const T> x) {
  dispatch_start(xe, x);
  dispatch_finish(xe);
}

// The own rows are gathered after the exchange has started: on a GPU the gather then runs while
// the tokens travel (NCCL has a stream of its own), instead of before them.
template <typename T>
void Dispatcher<T>::dispatch_start(Ptr<T> xe, Ptr<const T> x) {
  if (ep_.size() > 1) {
    const Ptr<T> send = stored(be_, send_buf_.data());
    be_.gather_rows(send, x, copy_token_, copies_sent_, d_);
    start_exchange(send, copy_send_count_, copy_send_off_, stored(be_, copies_buf_.data()), copy_recv_count_,
                   copy_recv_off_, d_);
  }
  be_.gather_rows(xe + (int64_t)self_off_ * d_, x, self_token_, self_rows_, d_);
}

template <typename T>
void Dispatcher<T>::dispatch_finish(Ptr<T> xe) {
  if (ep_.size() == 1) return;
  ep_.wait_alltoallv();
  place_received(xe);
}

template <typename T>
void Dispatcher<T>::place_received(Ptr<T> xe) {
  const int after = self_off_ + self_rows_;
  const Ptr<T> copies = stored(be_, copies_buf_.data());
  be_.gather_rows(xe, copies, received_copy_, self_off_, d_);
  be_.gather_rows(xe + (int64_t)after * d_, copies, received_copy_.data() + self_off_, rows_ - after, d_);
}

template <typename T>
void Dispatcher<T>::redispatch(Ptr<T> xe, Ptr<const T> x) {
  be_.gather_rows(xe + (int64_t)self_off_ * d_, x, self_token_, self_rows_, d_);
  if (ep_.size() > 1) place_received(xe);
}

template <typename T>
void Dispatcher<T>::to_owners(Ptr<T> buf, int width) {
  if (ep_.size() == 1) return;
  exchange(buf, pair_recv_count_, pair_recv_off_, buf + (int64_t)rows_ * width, pair_send_count_, pair_back_off_,
           width);
}

template <typename T>
void Dispatcher<T>::to_experts(Ptr<T> buf, int width) {
  if (ep_.size() == 1) return;
  exchange(buf + (int64_t)rows_ * width, pair_send_count_, pair_back_off_, buf, pair_recv_count_, pair_recv_off_,
           width);
}

template <typename T>
void Dispatcher<T>::combine(Ptr<T> yc) {
  to_owners(yc, d_);
}

template <typename T>
void Dispatcher<T>::combine_backward(Ptr<T> dyc) {
  to_experts(dyc, d_);
}

// A gate is placed in its pair's row here (own pairs) or in the combine buffer's tail, which
// then travels as combine_backward's rows do.
template <typename T>
void Dispatcher<T>::dispatch_gates(T* row_gate, const T* gate) {
  be_.combine_rows_backward(row_gate, gate, pair_row_, tokens_ * k_, 1, 1);
  to_experts(row_gate, 1);
}

template <typename T>
void Dispatcher<T>::combine_gate_grads(T* dgate, T* row_dgate) {
  to_owners(row_dgate, 1);
  be_.gather_rows(dgate, row_dgate, pair_row_, tokens_ * k_, 1);
}

template <typename T>
void Dispatcher<T>::dispatch_backward(T* dx, Ptr<const T> dxe) {
  be_.sum_rows(dx, dxe, self_tok_off_, self_tok_idx_, tokens_, d_, false);  // every token written
  if (ep_.size() == 1) return;
  // The adjoint of dispatch: sum each token copy's rows, send the copies back, add them to their
  // tokens.
  be_.sum_rows(copies_buf_, dxe, copy_row_off_, copy_row_idx_, copies_received_, d_, false);
  exchange(copies_buf_, copy_recv_count_, copy_recv_off_, send_buf_, copy_send_count_, copy_send_off_, d_);
  be_.sum_rows(dx, send_buf_, copy_tok_off_, copy_tok_idx_, tokens_, d_, true);
}

template class Dispatcher<float>;
template class Dispatcher<double>;

}  // namespace dsmoe
