#include "moe/dispatcher.h"

#include "util/check.h"

namespace dsmoe {
namespace {

template <typename T>
class LocalDispatcher final : public Dispatcher<T> {
 public:
  LocalDispatcher(Backend<T>& be, int n_experts, int max_tokens, int k, int d)
      : be_(be), n_experts_(n_experts), rows_per_expert_(n_experts),
        row_token_(be, (int64_t)max_tokens * k), row_pair_(be, (int64_t)max_tokens * k),
        pair_row_(be, (int64_t)max_tokens * k), ones_(be, (int64_t)max_tokens * k),
        pairs_(be, (int64_t)max_tokens * k * d) {
    be_.fill(ones_, T(1), ones_.size());
  }

  void plan(const std::vector<int32_t>& sel, const std::vector<uint8_t>& kept, int tokens, int k) override {
    DSMOE_ASSERT((int64_t)tokens * k <= row_token_.size());
    tokens_ = tokens;
    k_ = k;
    std::fill(rows_per_expert_.begin(), rows_per_expert_.end(), 0);
    for (size_t p = 0; p < sel.size(); ++p)
      if (kept[p]) rows_per_expert_[sel[p]]++;
    std::vector<int> next(n_experts_, 0);
    for (int e = 1; e < n_experts_; ++e) next[e] = next[e - 1] + rows_per_expert_[e - 1];
    rows_ = next.back() + rows_per_expert_.back();
    std::vector<int32_t> row_token(rows_), row_pair(rows_), pair_row(sel.size(), -1);
    for (size_t p = 0; p < sel.size(); ++p) {  // pairs in token order: stable within each expert
      if (!kept[p]) continue;
      int r = next[sel[p]]++;
      row_token[r] = static_cast<int32_t>(p / k);
      row_pair[r] = static_cast<int32_t>(p);
      pair_row[p] = r;
    }
    to_device(be_, row_token_.data(), row_token);
    to_device(be_, row_pair_.data(), row_pair);
    to_device(be_, pair_row_.data(), pair_row);
  }

  const std::vector<int>& expert_rows() const override { return rows_per_expert_; }
  int rows() const override { return rows_; }

  void dispatch(T* xe, const T* x, int d) override { be_.gather_rows(xe, x, row_token_, rows_, d); }
  void combine(T* y_pairs, const T* ye, int d) override { be_.gather_rows(y_pairs, ye, pair_row_, tokens_ * k_, d); }
  void combine_backward(T* dye, const T* dy_pairs, int d) override {
    be_.gather_rows(dye, dy_pairs, row_pair_, rows_, d);
  }
  void dispatch_backward(T* dx, const T* dxe, int d) override {
    be_.gather_rows(pairs_, dxe, pair_row_, tokens_ * k_, d);
    be_.weighted_sum_rows(dx, pairs_, ones_, tokens_, k_, d);
  }

 private:
  Backend<T>& be_;
  int n_experts_, tokens_ = 0, k_ = 0, rows_ = 0;
  std::vector<int> rows_per_expert_;
  Buf<int32_t> row_token_, row_pair_, pair_row_;
  Buf<T> ones_, pairs_;
};

}  // namespace

template <typename T>
std::unique_ptr<Dispatcher<T>> make_local_dispatcher(Backend<T>& be, int n_experts, int max_tokens, int k, int d) {
  return std::make_unique<LocalDispatcher<T>>(be, n_experts, max_tokens, k, d);
}

template std::unique_ptr<Dispatcher<float>> make_local_dispatcher(Backend<float>&, int, int, int, int);
template std::unique_ptr<Dispatcher<double>> make_local_dispatcher(Backend<double>&, int, int, int, int);

}  // namespace dsmoe
