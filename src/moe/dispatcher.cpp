#include "moe/dispatcher.h"

#include <algorithm>

#include "routing/sort_pairs.h"
#include "util/check.h"

namespace dsmoe {
namespace {

// CSR (offsets, indices) of `groups` lists from the group of each item, items in order; an
// item's index is its position plus `shift` past position `from`.
void build_csr(const std::vector<int32_t>& group_of, int groups, std::vector<int32_t>* off, std::vector<int32_t>* idx,
               int32_t from = 0, int32_t shift = 0) {
  off->assign(groups + 1, 0);
  for (int32_t g : group_of) (*off)[g + 1]++;
  for (int g = 0; g < groups; ++g) (*off)[g + 1] += (*off)[g];
  std::vector<int32_t> next(off->begin(), off->end() - 1);
  idx->resize(group_of.size());
  for (size_t i = 0; i < group_of.size(); ++i) {
    const int32_t at = static_cast<int32_t>(i);
    (*idx)[next[group_of[i]]++] = at >= from ? at + shift : at;
  }
}

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
  const int N = placement_.n_experts, E = ep_.size(), per = placement_.per_rank(), me = ep_.rank();
  const int64_t pairs = (int64_t)tokens * k;
  tokens_ = tokens;
  k_ = k;

  // This rank's kept pairs sorted by expert (so by destination), token order within an expert.
  std::vector<int32_t> count32(N), pair_send(pairs), row_token(pairs), hist((size_t)sort_chunks(pairs) * N);
  sort_pairs_on_host(sel.data(), kept.data(), pairs, k, N, count32.data(), pair_send.data(), row_token.data(),
                     hist.data());
  std::vector<int64_t> count(count32.begin(), count32.end()), expert_off(N + 1, 0);
  for (int e = 0; e < N; ++e) expert_off[e + 1] = expert_off[e] + count[e];
  auto dest_begin = [&](int dest) { return expert_off[dest * per]; };  // first send row to `dest`
  const int64_t self_begin = dest_begin(me);
  self_rows_ = static_cast<int>(dest_begin(me + 1) - self_begin);
  const std::vector<int32_t> self_token(row_token.begin() + self_begin, row_token.begin() + self_begin + self_rows_);

  // Units: one per (token, other destination) with a kept pair there, by destination then token.
  std::vector<std::vector<int32_t>> units_to(E);
  std::vector<int32_t> last_token(E, -1), unit_index(E > 1 ? pairs : 0, -1);  // per pair: its unit within the message
  for (int64_t p = 0; p < pairs && E > 1; ++p) {
    const int dest = kept[p] ? placement_.owner(sel[p]) : me;
    if (dest == me) continue;
    const int t = static_cast<int>(p / k);
    if (last_token[dest] != t) {
      last_token[dest] = t;
      units_to[dest].push_back(t);
    }
    unit_index[p] = static_cast<int32_t>(units_to[dest].size() - 1);
  }
  std::vector<int32_t> unit_token;
  unit_send_count_.assign(E, 0);
  for (int r = 0; r < E; ++r) {
    unit_send_count_[r] = static_cast<int64_t>(units_to[r].size());
    unit_token.insert(unit_token.end(), units_to[r].begin(), units_to[r].end());
  }
  units_ = static_cast<int>(unit_token.size());

  // Counts per (source rank, local expert), and units per source rank.
  std::vector<int64_t> recv(N);
  unit_recv_count_.assign(E, 0);
  Comm& host = ep_.host();
  host.alltoall(count.data(), recv.data(), per);
  host.alltoall(unit_send_count_.data(), unit_recv_count_.data(), 1);
  recv_units_ = static_cast<int>(sum(unit_recv_count_));
  unit_send_off_ = packed_offsets(unit_send_count_);
  unit_recv_off_ = packed_offsets(unit_recv_count_);
  blocks_.clear();
  own_span_ = RowSpan{};
  received_spans_.assign(2, RowSpan{});
  pair_send_count_.assign(E, 0);
  pair_recv_count_.assign(E, 0);
  int row = 0;
  for (int r = 0; r < E; ++r) {
    RowSpan& span = r == me ? own_span_ : received_spans_[r < me ? 0 : 1];
    if (span.blocks.empty()) span.first_row = row;
    for (int j = 0; j < per; ++j) {
      pair_send_count_[r] += count[r * per + j];
      pair_recv_count_[r] += recv[r * per + j];
      if (recv[r * per + j] > 0 || E == 1) {
        const RowBlock block{j, static_cast<int>(recv[r * per + j])};
        blocks_.push_back(block);
        span.blocks.push_back(block);
        row += block.rows;
      }
    }
  }
  rows_ = static_cast<int>(sum(pair_recv_count_));
  pair_recv_off_ = packed_offsets(pair_recv_count_);
  self_off_ = static_cast<int>(pair_recv_off_[me]);
  DSMOE_ASSERT(pair_recv_count_[me] == self_rows_);
  pair_send_count_[me] = pair_recv_count_[me] = 0;  // the own pairs stay here
  back_rows_ = static_cast<int>(sum(pair_send_count_));
  pair_back_off_ = packed_offsets(pair_send_count_);

  std::vector<int32_t> pair_row(pairs, -1);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pairs; ++p) {
    if (pair_send[p] < 0) continue;
    const int dest = placement_.owner(sel[p]);
    const int64_t in_block = pair_send[p] - dest_begin(dest);
    pair_row[p] = static_cast<int32_t>(dest == me ? self_off_ + in_block : rows_ + pair_back_off_[dest] + in_block);
  }
  upload(pair_row_, pair_row);
  upload(self_token_, self_token);
  // Each token's own rows, ascending (CSR over tokens): its own pairs' rows, sorted.
  std::vector<int32_t> off(tokens + 1, 0), idx(self_rows_);
  auto own_pair = [&](int64_t p) { return pair_send[p] >= 0 && placement_.owner(sel[p]) == me; };
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tokens; ++t)
    for (int j = 0; j < k; ++j) off[t + 1] += own_pair((int64_t)t * k + j);
  for (int t = 0; t < tokens; ++t) off[t + 1] += off[t];
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tokens; ++t) {
    int32_t* rows = idx.data() + off[t];  // (no element when the token has no own row)
    int n = 0;
    for (int j = 0; j < k; ++j) {
      const int64_t p = (int64_t)t * k + j;
      if (!own_pair(p)) continue;
      int at = n++;
      for (; at > 0 && rows[at - 1] > pair_row[p]; --at) rows[at] = rows[at - 1];
      rows[at] = pair_row[p];
    }
  }
  upload(self_tok_off_, off);
  upload(self_tok_idx_, idx);
  stats_.expert_rows += rows_;
  stats_.tokens_received += recv_units_;
  if (E == 1) return;

  upload(unit_token_, unit_token);
  build_csr(unit_token, tokens, &off, &idx);
  upload(unit_tok_off_, off);
  upload(unit_tok_idx_, idx);
  // For every pair sent, the index of its unit within the message, so the receiver knows which
  // unit feeds which expert row.
  std::vector<int32_t> meta, expand(rows_ - self_rows_);
  std::vector<int32_t> send_pair(expert_off[N]);
  for (int64_t p = 0; p < pairs; ++p)
    if (pair_send[p] >= 0) send_pair[pair_send[p]] = static_cast<int32_t>(p);
  for (int64_t r = 0; r < expert_off[N]; ++r)
    if (r < self_begin || r >= self_begin + self_rows_) meta.push_back(unit_index[send_pair[r]]);
  host.alltoallv(meta.data(), pair_send_count_, expand.data(), pair_recv_count_, sizeof(int32_t));
  int64_t i = 0, unit_base = 0;
  for (int r = 0; r < E; ++r) {
    for (int64_t n = 0; n < pair_recv_count_[r]; ++n, ++i) expand[i] += static_cast<int32_t>(unit_base);
    unit_base += unit_recv_count_[r];
  }
  upload(expand_, expand);
  build_csr(expand, recv_units_, &off, &idx, self_off_, self_rows_);
  upload(unit_off_, off);
  upload(unit_idx_, idx);
  send_buf_.ensure(be_, (int64_t)std::max(1, units_) * d_);
  units_buf_.ensure(be_, (int64_t)std::max(1, recv_units_) * d_);
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
  self_off_ = back_rows_ = units_ = recv_units_ = 0;
  for (std::vector<int64_t>* v : {&unit_send_count_, &unit_recv_count_, &pair_send_count_, &pair_recv_count_})
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
    be_.gather_rows(send, x, unit_token_, units_, d_);
    start_exchange(send, unit_send_count_, unit_send_off_, stored(be_, units_buf_.data()), unit_recv_count_,
                   unit_recv_off_, d_);
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
  const Ptr<T> units = stored(be_, units_buf_.data());
  be_.gather_rows(xe, units, expand_, self_off_, d_);
  be_.gather_rows(xe + (int64_t)after * d_, units, expand_.data() + self_off_, rows_ - after, d_);
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
  // The adjoint of dispatch: sum each unit's rows, send the units back, add them to their tokens.
  be_.sum_rows(units_buf_, dxe, unit_off_, unit_idx_, recv_units_, d_, false);
  exchange(units_buf_, unit_recv_count_, unit_recv_off_, send_buf_, unit_send_count_, unit_send_off_, d_);
  be_.sum_rows(dx, send_buf_, unit_tok_off_, unit_tok_idx_, tokens_, d_, true);
}

template class Dispatcher<float>;
template class Dispatcher<double>;

}  // namespace dsmoe
