#include "moe/dispatcher.h"

#include "util/check.h"

namespace dsmoe {

template <typename T>
Dispatcher<T>::Dispatcher(Backend<T>& be, Comm& ep, const ExpertPlacement& placement, int d)
    : be_(be), ep_(ep), placement_(placement), d_(d), send_per_rank_(ep.size()), recv_per_rank_(ep.size()) {
  DSMOE_ASSERT(ep.size() == placement.ep_size && ep.rank() == placement.ep_rank);
}

template <typename T>
void Dispatcher<T>::plan(const std::vector<int32_t>& sel, const std::vector<uint8_t>& kept, int tokens, int k) {
  const int N = placement_.n_experts, E = ep_.size(), per = placement_.per_rank();
  const int64_t pairs = (int64_t)tokens * k;
  tokens_ = tokens;
  k_ = k;
  // Send order: pairs sorted by expert (hence by destination), token order within an expert.
  std::vector<int64_t> count(N, 0);
  for (int64_t p = 0; p < pairs; ++p)
    if (kept[p]) count[sel[p]]++;
  std::vector<int64_t> next(N, 0);
  for (int e = 1; e < N; ++e) next[e] = next[e - 1] + count[e - 1];
  send_rows_ = static_cast<int>(next[N - 1] + count[N - 1]);
  std::vector<int32_t> send_token(send_rows_), send_pair(send_rows_), pair_send(pairs, -1);
  for (int64_t p = 0; p < pairs; ++p) {
    if (!kept[p]) continue;
    const int64_t r = next[sel[p]]++;
    send_token[r] = static_cast<int32_t>(p / k);
    send_pair[r] = static_cast<int32_t>(p);
    pair_send[p] = static_cast<int32_t>(r);
  }
  send_token_.ensure(be_, send_rows_);
  send_pair_.ensure(be_, send_rows_);
  pair_send_.ensure(be_, pairs);
  to_device(be_, send_token_.data(), send_token);
  to_device(be_, send_pair_.data(), send_pair);
  to_device(be_, pair_send_.data(), pair_send);
  if (ones_.size() < pairs) {
    ones_.reset(be_, pairs);
    be_.fill(ones_, T(1), pairs);
  }
  pairs_.ensure(be_, pairs * d_);

  blocks_.clear();
  if (E == 1) {
    for (int j = 0; j < per; ++j) blocks_.push_back({j, static_cast<int>(count[j])});
    rows_ = send_rows_;
    stats_.rows_received += rows_;
    return;
  }
  // Exchange per-(rank, local expert) counts; rows arrive grouped by source rank, then expert.
  std::vector<int64_t> recv(N);
  ep_.alltoall(count.data(), recv.data(), per);
  rows_ = 0;
  for (int r = 0; r < E; ++r) {
    send_per_rank_[r] = recv_per_rank_[r] = 0;
    for (int j = 0; j < per; ++j) {
      send_per_rank_[r] += count[r * per + j];
      recv_per_rank_[r] += recv[r * per + j];
      if (recv[r * per + j] > 0) blocks_.push_back({j, static_cast<int>(recv[r * per + j])});
    }
    rows_ += static_cast<int>(recv_per_rank_[r]);
  }
  send_buf_.ensure(be_, (int64_t)send_rows_ * d_);
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
  be_.gather_rows(send_buf_, x, send_token_, send_rows_, d_);
  exchange(xe, send_buf_, recv_per_rank_, send_per_rank_);
}

template <typename T>
void Dispatcher<T>::combine(T* y_pairs, const T* ye) {
  const T* back = ye;
  if (ep_.size() > 1) {
    exchange(send_buf_, ye, send_per_rank_, recv_per_rank_);
    back = send_buf_;
  }
  be_.gather_rows(y_pairs, back, pair_send_, tokens_ * k_, d_);
}

template <typename T>
void Dispatcher<T>::combine_backward(T* dye, const T* dy_pairs) {
  if (ep_.size() == 1) return be_.gather_rows(dye, dy_pairs, send_pair_, rows_, d_);
  be_.gather_rows(send_buf_, dy_pairs, send_pair_, send_rows_, d_);
  exchange(dye, send_buf_, recv_per_rank_, send_per_rank_);
}

template <typename T>
void Dispatcher<T>::dispatch_backward(T* dx, const T* dxe) {
  const T* back = dxe;
  if (ep_.size() > 1) {
    exchange(send_buf_, dxe, send_per_rank_, recv_per_rank_);
    back = send_buf_;
  }
  be_.gather_rows(pairs_, back, pair_send_, tokens_ * k_, d_);
  be_.weighted_sum_rows(dx, pairs_, ones_, tokens_, k_, d_);
}

template class Dispatcher<float>;
template class Dispatcher<double>;

}  // namespace dsmoe
