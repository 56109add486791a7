#include "moe/dispatcher.h"

#include "util/check.h"

namespace dsmoe {
namespace {

// CSR (offsets, indices) of `groups` lists from the group of each item, items in order.
void build_csr(const std::vector<int32_t>& group_of, int groups, std::vector<int32_t>* off, std::vector<int32_t>* idx) {
  off->assign(groups + 1, 0);
  for (int32_t g : group_of) (*off)[g + 1]++;
  for (int g = 0; g < groups; ++g) (*off)[g + 1] += (*off)[g];
  std::vector<int32_t> next(off->begin(), off->end() - 1);
  idx->resize(group_of.size());
  for (size_t i = 0; i < group_of.size(); ++i) (*idx)[next[group_of[i]]++] = static_cast<int32_t>(i);
}

}  // namespace

template <typename T>
Dispatcher<T>::Dispatcher(Backend<T>& be, Comm& ep, const ExpertPlacement& placement, int d)
    : be_(be), ep_(ep), placement_(placement), d_(d), pair_send_count_(ep.size()), pair_recv_count_(ep.size()),
      unit_send_count_(ep.size()), unit_recv_count_(ep.size()) {
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
  const int64_t pairs = (int64_t)tokens * k;
  tokens_ = tokens;
  k_ = k;
  std::vector<int64_t> count(N, 0);
  for (int64_t p = 0; p < pairs; ++p)
    if (kept[p]) count[sel[p]]++;
  std::vector<int64_t> next(N, 0);
  for (int e = 1; e < N; ++e) next[e] = next[e - 1] + count[e - 1];
  pair_rows_ = static_cast<int>(next[N - 1] + count[N - 1]);
  std::vector<int32_t> send_token(pair_rows_), send_pair(pair_rows_), pair_send(pairs, -1);
  for (int64_t p = 0; p < pairs; ++p) {
    if (!kept[p]) continue;
    const int64_t r = next[sel[p]]++;
    send_token[r] = static_cast<int32_t>(p / k);
    send_pair[r] = static_cast<int32_t>(p);
    pair_send[p] = static_cast<int32_t>(r);
  }
  upload(send_token_, send_token);
  upload(send_pair_, send_pair);
  upload(pair_send_, pair_send);

  std::vector<int32_t> token_off, token_idx;
  blocks_.clear();
  if (E == 1) {
    for (int j = 0; j < per; ++j) blocks_.push_back({j, static_cast<int>(count[j])});
    rows_ = pair_rows_;
    build_csr(send_token, tokens, &token_off, &token_idx);  // rows back to their tokens
    upload(token_off_, token_off);
    upload(token_idx_, token_idx);
    stats_.rows_received += rows_;
    return;
  }

  // Units: one per (token, destination) with a kept pair there, by destination then token.
  std::vector<int32_t> unit_of(pairs, -1), unit_token, unit_dest_index;  // unit_of: per pair
  std::vector<std::vector<int32_t>> units_to(E);                          // tokens per destination
  std::vector<int32_t> last_token(E, -1), local_index(pairs, -1);
  for (int64_t p = 0; p < pairs; ++p) {
    if (!kept[p]) continue;
    const int dest = placement_.owner(sel[p]), t = static_cast<int>(p / k);
    if (last_token[dest] != t) {
      last_token[dest] = t;
      units_to[dest].push_back(t);
    }
    local_index[p] = static_cast<int32_t>(units_to[dest].size() - 1);
  }
  units_ = 0;
  for (int r = 0; r < E; ++r) {
    unit_send_count_[r] = static_cast<int64_t>(units_to[r].size());
    unit_token.insert(unit_token.end(), units_to[r].begin(), units_to[r].end());
    units_ += static_cast<int>(units_to[r].size());
  }
  upload(unit_token_, unit_token);
  build_csr(unit_token, tokens, &token_off, &token_idx);
  upload(token_off_, token_off);
  upload(token_idx_, token_idx);

  // Counts per (rank, local expert) and per rank; then, for every pair sent, the index of its
  // unit within the message, so the receiver knows which unit feeds which expert row.
  std::vector<int64_t> recv(N), units_recv(E);
  ep_.alltoall(count.data(), recv.data(), per);
  ep_.alltoall(unit_send_count_.data(), units_recv.data(), 1);
  rows_ = 0;
  recv_units_ = 0;
  for (int r = 0; r < E; ++r) {
    pair_send_count_[r] = pair_recv_count_[r] = 0;
    for (int j = 0; j < per; ++j) {
      pair_send_count_[r] += count[r * per + j];
      pair_recv_count_[r] += recv[r * per + j];
      if (recv[r * per + j] > 0) blocks_.push_back({j, static_cast<int>(recv[r * per + j])});
    }
    unit_recv_count_[r] = units_recv[r];
    rows_ += static_cast<int>(pair_recv_count_[r]);
    recv_units_ += static_cast<int>(units_recv[r]);
  }
  std::vector<int32_t> meta(pair_rows_), expand(rows_);
  for (int r = 0; r < pair_rows_; ++r) meta[r] = local_index[send_pair[r]];
  ep_.alltoallv(meta.data(), pair_send_count_, expand.data(), pair_recv_count_, sizeof(int32_t));
  int64_t row = 0, unit_base = 0;
  for (int r = 0; r < E; ++r) {
    for (int64_t i = 0; i < pair_recv_count_[r]; ++i, ++row) expand[row] += static_cast<int32_t>(unit_base);
    unit_base += unit_recv_count_[r];
  }
  std::vector<int32_t> unit_off, unit_idx;
  build_csr(expand, recv_units_, &unit_off, &unit_idx);
  upload(expand_, expand);
  upload(unit_off_, unit_off);
  upload(unit_idx_, unit_idx);
  send_buf_.ensure(be_, (int64_t)std::max(pair_rows_, units_) * d_);
  units_buf_.ensure(be_, (int64_t)std::max(1, recv_units_) * d_);
  stats_.rows_received += rows_;
}

template <typename T>
void Dispatcher<T>::exchange(T* out, const T* in, const std::vector<int64_t>& out_rows,
                             const std::vector<int64_t>& in_rows) {
  ep_.alltoallv(in, in_rows, out, out_rows, (int64_t)d_ * sizeof(T));
  for (int r = 0; r < ep_.size(); ++r)
    if (r != ep_.rank()) stats_.bytes_sent += in_rows[r] * d_ * (int64_t)sizeof(T);
}

template <typename T>
void Dispatcher<T>::dispatch(T* xe, const T* x) {
  if (ep_.size() == 1) return be_.gather_rows(xe, x, send_token_, rows_, d_);
  be_.gather_rows(send_buf_, x, unit_token_, units_, d_);
  exchange(units_buf_, send_buf_, unit_recv_count_, unit_send_count_);
  be_.gather_rows(xe, units_buf_, expand_, rows_, d_);
}

template <typename T>
void Dispatcher<T>::combine(T* y_pairs, const T* ye) {
  const T* back = ye;
  if (ep_.size() > 1) {
    exchange(send_buf_, ye, pair_send_count_, pair_recv_count_);
    back = send_buf_;
  }
  be_.gather_rows(y_pairs, back, pair_send_, tokens_ * k_, d_);
}

template <typename T>
void Dispatcher<T>::combine_backward(T* dye, const T* dy_pairs) {
  if (ep_.size() == 1) return be_.gather_rows(dye, dy_pairs, send_pair_, rows_, d_);
  be_.gather_rows(send_buf_, dy_pairs, send_pair_, pair_rows_, d_);
  exchange(dye, send_buf_, pair_recv_count_, pair_send_count_);
}

template <typename T>
void Dispatcher<T>::dispatch_backward(T* dx, const T* dxe) {
  const T* back = dxe;
  if (ep_.size() > 1) {  // the adjoint of dispatch: sum each unit's rows, send the units back
    be_.sum_rows(units_buf_, dxe, unit_off_, unit_idx_, recv_units_, d_, false);
    exchange(send_buf_, units_buf_, unit_send_count_, unit_recv_count_);
    back = send_buf_;
  }
  be_.sum_rows(dx, back, token_off_, token_idx_, tokens_, d_, true);
}

template class Dispatcher<float>;
template class Dispatcher<double>;

}  // namespace dsmoe
