#include "moe/experts.h"

namespace dsmoe {

template <typename T>
void swiglu_experts_gate_up(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                            Ptr<const T> x, Ptr<T> gu) {
  const int d = w.d, n = w.hidden;
  const int64_t wsz = (int64_t)n * d;
  std::vector<GemmArgs<T>> up;
  int64_t off = 0;
  for (const RowBlock& b : blocks) {
    if (b.rows > 0)
      up.push_back({false, true, b.rows, 2 * n, d, T(1), x + off * d, d, w.w_gate_up + b.expert * 2 * wsz, d, T(0),
                    gu + off * 2 * n, 2 * n});
    off += b.rows;
  }
  be.gemm_batch(up);
}

template <typename T>
void swiglu_experts_forward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                            Ptr<const T> x, const T* scale, Ptr<T> gu, Ptr<T> act, Ptr<T> y, const T* residual) {
  const int d = w.d, n = w.hidden;
  const int64_t wsz = (int64_t)n * d;
  std::vector<GemmArgs<T>> down;
  int64_t off = 0;
  for (const RowBlock& b : blocks) {
    if (b.rows > 0)
      down.push_back({false, true, b.rows, d, n, T(1), act + off * n, n, w.w_down + b.expert * wsz, n,
                      T(residual ? 1 : 0), y + off * d, d, false, residual ? residual + off * d : nullptr});
    off += b.rows;
  }
  swiglu_experts_gate_up(be, w, blocks, x, gu);
  be.swiglu_forward(act, gu, scale, static_cast<int>(off), n);
  be.gemm_batch(down);
}

template <typename T>
void swiglu_experts_backward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                             Ptr<const T> x, const T* scale, Ptr<const T> gu, Ptr<const T> act, Ptr<const T> dy,
                             T* dscale, Ptr<T> dgu, Ptr<T> dact, Ptr<T> dx, T dx_beta) {
  const int d = w.d, n = w.hidden;
  const int64_t wsz = (int64_t)n * d;
  std::vector<GemmArgs<T>> first, second;
  std::vector<char> written(w.groups, 0);  // an expert's later blocks add to its first's gradients
  int64_t off = 0;
  for (const RowBlock& b : blocks) {
    const int m = b.rows;
    const int64_t e = b.expert;
    if (m > 0) {
      const T gb = written[e] ? T(1) : w.g_beta;
      written[e] = 1;
      const Ptr<const T> dye = dy + off * d, dg = dgu + off * 2 * n, xe = x + off * d;
      first.push_back({false, false, m, n, d, T(1), dye, d, w.w_down + e * wsz, n, T(0), dact + off * n, n});
      first.push_back({true, false, d, n, m, T(1), dye, d, act + off * n, n, gb, w.g_down + e * wsz, n});
      second.push_back({false, false, m, d, 2 * n, T(1), dg, 2 * n, w.w_gate_up + e * 2 * wsz, d, dx_beta,
                        dx + off * d, d});
      second.push_back({true, false, 2 * n, d, m, T(1), dg, 2 * n, xe, d, gb, w.g_gate_up + e * 2 * wsz, d});
    }
    off += m;
  }
  if (w.g_beta == T(0))  // zeros for the experts without rows, a fill per run of them
    for (int e = 0, end = 0; e < w.groups; e = end + 1) {
      for (end = e; end < w.groups && !written[end];) ++end;
      if (end == e) continue;
      be.fill(w.g_gate_up + e * 2 * wsz, T(0), (end - e) * 2 * wsz);
      be.fill(w.g_down + e * wsz, T(0), (end - e) * wsz);
    }
  be.gemm_batch(first);
  be.swiglu_backward(dgu, dscale, dact, gu, scale, static_cast<int>(off), n);
  be.gemm_batch(second);
}

template void swiglu_experts_gate_up(Backend<float>&, const SwiGluWeights<float>&, const std::vector<RowBlock>&,
                                     Ptr<const float>, Ptr<float>);
template void swiglu_experts_gate_up(Backend<double>&, const SwiGluWeights<double>&, const std::vector<RowBlock>&,
                                     Ptr<const double>, Ptr<double>);
template void swiglu_experts_forward(Backend<float>&, const SwiGluWeights<float>&, const std::vector<RowBlock>&,
                                     Ptr<const float>, const float*, Ptr<float>, Ptr<float>, Ptr<float>,
                                     const float*);
template void swiglu_experts_forward(Backend<double>&, const SwiGluWeights<double>&, const std::vector<RowBlock>&,
                                     Ptr<const double>, const double*, Ptr<double>, Ptr<double>, Ptr<double>,
                                     const double*);
template void swiglu_experts_backward(Backend<float>&, const SwiGluWeights<float>&, const std::vector<RowBlock>&,
                                      Ptr<const float>, const float*, Ptr<const float>, Ptr<const float>,
                                      Ptr<const float>, float*, Ptr<float>, Ptr<float>, Ptr<float>, float);
template void swiglu_experts_backward(Backend<double>&, const SwiGluWeights<double>&, const std::vector<RowBlock>&,
                                      Ptr<const double>, const double*, Ptr<const double>, Ptr<const double>,
                                      Ptr<const double>, double*, Ptr<double>, Ptr<double>, Ptr<double>, double);

}  // namespace dsmoe
