#include "moe/experts.h"

namespace dsmoe {

template <typename T>
void swiglu_experts_forward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                            Ptr<const T> x, const T* scale, Ptr<T> gu, Ptr<T> act, Ptr<T> y) {
  const int d = w.d, n = w.hidden;
  const int64_t wsz = (int64_t)n * d;
  std::vector<GemmArgs<T>> up, down;
  int64_t off = 0;
  for (const RowBlock& b : blocks) {
    const int m = b.rows;
    const int64_t e = b.expert;
    if (m > 0) {
      const Ptr<const T> xe = x + off * d;
      up.push_back({false, true, m, n, d, T(1), xe, d, w.w_gate + e * wsz, d, T(0), gu + off * 2 * n, 2 * n});
      up.push_back({false, true, m, n, d, T(1), xe, d, w.w_up + e * wsz, d, T(0), gu + off * 2 * n + n, 2 * n});
      down.push_back({false, true, m, d, n, T(1), act + off * n, n, w.w_down + e * wsz, n, T(0), y + off * d, d});
    }
    off += m;
  }
  be.gemm_batch(up);
  be.swiglu_forward(act, gu, scale, static_cast<int>(off), n);
  be.gemm_batch(down);
}

template <typename T>
void swiglu_experts_backward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                             Ptr<const T> x, const T* scale, Ptr<const T> gu, Ptr<const T> act, Ptr<const T> dy,
                             T* dscale, Ptr<T> dgu, Ptr<T> dact, Ptr<T> dx) {
  const int d = w.d, n = w.hidden;
  const int64_t wsz = (int64_t)n * d;
  std::vector<GemmArgs<T>> first, second;
  int64_t off = 0;
  for (const RowBlock& b : blocks) {
    const int m = b.rows;
    const int64_t e = b.expert;
    if (m > 0) {
      const Ptr<const T> dye = dy + off * d;
      first.push_back({false, false, m, n, d, T(1), dye, d, w.w_down + e * wsz, n, T(0), dact + off * n, n});
      first.push_back({true, false, d, n, m, T(1), dye, d, act + off * n, n, T(1), w.g_down + e * wsz, n});
      const Ptr<const T> dg = dgu + off * 2 * n, xe = x + off * d;
      second.push_back({false, false, m, d, n, T(1), dg, 2 * n, w.w_gate + e * wsz, d, T(0), dx + off * d, d});
      second.push_back({false, false, m, d, n, T(1), dg + n, 2 * n, w.w_up + e * wsz, d, T(1), dx + off * d, d});
      second.push_back({true, false, n, d, m, T(1), dg, 2 * n, xe, d, T(1), w.g_gate + e * wsz, d});
      second.push_back({true, false, n, d, m, T(1), dg + n, 2 * n, xe, d, T(1), w.g_up + e * wsz, d});
    }
    off += m;
  }
  be.gemm_batch(first);
  be.swiglu_backward(dgu, dscale, dact, gu, scale, static_cast<int>(off), n);
  be.gemm_batch(second);
}

template void swiglu_experts_forward(Backend<float>&, const SwiGluWeights<float>&, const std::vector<RowBlock>&,
                                     Ptr<const float>, const float*, Ptr<float>, Ptr<float>, Ptr<float>);
template void swiglu_experts_forward(Backend<double>&, const SwiGluWeights<double>&, const std::vector<RowBlock>&,
                                     Ptr<const double>, const double*, Ptr<double>, Ptr<double>, Ptr<double>);
template void swiglu_experts_backward(Backend<float>&, const SwiGluWeights<float>&, const std::vector<RowBlock>&,
                                      Ptr<const float>, const float*, Ptr<const float>, Ptr<const float>,
                                      Ptr<const float>, float*, Ptr<float>, Ptr<float>, Ptr<float>);
template void swiglu_experts_backward(Backend<double>&, const SwiGluWeights<double>&, const std::vector<RowBlock>&,
                                      Ptr<const double>, const double*, Ptr<const double>, Ptr<const double>,
                                      Ptr<const double>, double*, Ptr<double>, Ptr<double>, Ptr<double>);

}  // namespace dsmoe
